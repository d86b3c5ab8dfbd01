"""lut.validate (scoring) and profiler.validate (the driver): metrics, corrections, arch sampling,
and one real end-to-end validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from lut.correction import CORRECTIONS, fit_correction, read_validation
from lut.store import Lut, LutError, load_lut
from lut.validate import error_metrics, evaluate, noise_floor_pct, random_archs, write_validation
from profiler.validate import ValidationConfig, validate_lut
from search.space import Arch, arch_ops, get_space, parse_op_key

SPACE = "fbnet-r32-w0.25"  # the synthetic_lut default


def test_error_metrics_by_hand() -> None:
    pred, meas = [110.0, 90.0, 300.0, 400.0], [100.0, 100.0, 200.0, 400.0]
    m = error_metrics(pred, meas)
    assert m["mape"] == pytest.approx((10 + 10 + 50 + 0) / 4)
    assert m["max_ape"] == pytest.approx(50.0)
    # ranks: pred (2,1,3,4) vs meas (1.5,1.5,3,4): one tie
    assert m["spearman"] == pytest.approx(np.corrcoef([2, 1, 3, 4], [1.5, 1.5, 3, 4])[0, 1])
    assert -1 <= m["kendall"] <= 1 and m["n"] == 4
    with pytest.raises(ValueError, match="positive"):
        error_metrics([1.0, 2.0], [0.0, 1.0])


def test_noise_floor_by_hand() -> None:
    # relative differences 2/101, 0, 10/105 → median 2/101
    assert noise_floor_pct([100.0, 50.0, 100.0], [102.0, 50.0, 110.0]) == pytest.approx(100 * 2 / 101)


def test_random_archs_seeded_valid_and_uniform() -> None:
    space = get_space(SPACE)
    a = random_archs(space, 200, seed=3)
    assert a == random_archs(space, 200, seed=3) and a != random_archs(space, 200, seed=4)
    for arch in a[:20]:
        arch.validate(space)
    assert a[0].name == "random_000"
    layer0 = space.layers()[0]
    counts = {b: sum(x.blocks[0] == b for x in a) for b in space.candidates(layer0)}
    assert min(counts.values()) > 200 / len(counts) / 3  # every candidate drawn, roughly evenly


def _records(scale: float, offset_us: float, n_train: int = 10, n_hold: int = 12, seed: int = 0) -> list[dict]:
    """Archs whose measured latency is scale·pred + offset (±0.5% noise), halves ±0.2%."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_train + n_hold):
        pred = float(rng.uniform(1000, 5000))
        meas = (scale * pred + offset_us) * (1 + 0.005 * rng.standard_normal())
        rows.append({"name": f"a{i}", "split": "train" if i < n_train else "holdout",
                     "predicted_us": pred, "num_ops": float(rng.integers(20, 26)),
                     "measured_us": meas, "half_us": [meas * 0.998, meas * 1.002]})  # fmt: skip
    return rows


def test_fit_correction_recovers_affine_model() -> None:
    rows = _records(1.2, 300.0)
    train = [r for r in rows if r["split"] == "train"]
    corr = fit_correction("affine", train, [r["measured_us"] for r in train])
    assert corr.coef["predicted_us"] == pytest.approx(1.2, rel=0.03)
    assert corr.coef["1"] == pytest.approx(300.0, abs=120.0)
    with pytest.raises(ValueError, match="unknown correction"):
        fit_correction("magic", train, [1.0] * len(train))


def test_evaluate_additive_when_accurate() -> None:
    rep = evaluate(_records(1.0, 0.0), correction="auto")
    assert rep["prediction_model"] == "additive" and rep["evaluated_on"] == "all"
    assert rep["mape"] < 1.5 and rep["meets_goal"]
    assert rep["noise_floor"] == pytest.approx(0.4, abs=1e-6)  # 2·0.2% / 1.0


def test_evaluate_correction_is_scored_on_holdout_only() -> None:
    records = _records(1.25, 200.0)
    rep = evaluate(records, correction="auto")
    assert rep["additive"]["mape"] > 20  # the plain sum is ~25% low
    assert rep["prediction_model"] in CORRECTIONS and rep["evaluated_on"] == "holdout"
    chosen = rep["corrections"][rep["prediction_model"]]
    assert rep["mape"] == chosen["holdout"]["mape"] != chosen["train"]["mape"]
    assert chosen["holdout"]["n"] == 12 and chosen["train"]["n"] == 10
    assert rep["mape"] < 2.0
    # an explicit choice is honoured, and "none" keeps the additive numbers
    assert evaluate(records, correction="none")["mape"] == rep["additive"]["mape"]
    assert evaluate(records, correction="per_op")["prediction_model"] == "per_op"


def test_validation_json_round_trip_and_phone_needs_serial(tmp_path: Path, synthetic_lut) -> None:
    lut = synthetic_lut(tmp_path, "pixel9-abc")
    lut.meta["device"].pop("target")
    with pytest.raises(LutError, match="--device"):
        validate_lut(lut, ValidationConfig(num_archs=2, rounds=2))
    rep = {**evaluate(_records(1.0, 0.0)), "num_archs": 22, "archs": []}
    path = write_validation(lut, rep)
    assert path.name == "validation.json" and read_validation(lut.path)["mape"] == rep["mape"]


@pytest.mark.slow
def test_validate_real_host_lut(tmp_path: Path, capsys: pytest.CaptureFixture, tiny_space: str) -> None:
    """Profile a tiny space on the host with onnxruntime, then validate it end to end; the stored
    report agrees with an independent recomputation from its own per-arch records."""
    from profiler.api import profile_space
    from profiler.validate import main as validate_main

    space = tiny_space
    res = profile_space(space, "onnxruntime", out=tmp_path, rounds=2, runs=5, warmup=2, progress=False)
    rc = validate_main([str(res.lut_dir), "--archs", "8", "--rounds", "3", "--drift-ops", "all", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["num_archs"] == 8  # no named archs in this space
    assert out["config"]["device"] == "host" and out["config"]["runtime"] == "onnxruntime"
    stored = read_validation(load_lut(res.lut_dir).path)
    assert stored["mape"] == out["mape"] and len(stored["archs"]) == 8
    recs = stored["archs"]
    pred = np.array([a["predicted_us"] for a in recs])
    meas = np.array([a["measured_us"] for a in recs])
    assert (meas > 0).all() and (pred > 0).all()
    assert out["mape"] == pytest.approx(float(np.mean(100 * np.abs(pred - meas) / meas)))
    assert out["spearman"] == pytest.approx(stats.spearmanr(pred, meas).statistic)
    halves = np.array([a["half_us"] for a in recs])
    assert out["noise_floor"] == pytest.approx(
        float(np.median(100 * np.abs(halves[:, 0] - halves[:, 1]) / halves.mean(axis=1)))
    )
    lut = load_lut(res.lut_dir)
    for a in recs:  # the prediction is the LUT's additive sum of the arch's ops
        arch = Arch(space, tuple(a["blocks"]))
        assert a["predicted_us"] == pytest.approx(lut.predict_us([op.key for op in arch_ops(arch)]))
    # archs from all-skip to all-k5_e6 span a wide range: a LUT that adds up ranks them right
    assert out["spearman"] > 0.6
    # every op of the LUT re-timed in the same rounds: how far the host moved since the LUT ...
    drift = out["drift"]
    ok = lut.table.index[lut.table["status"] == "ok"]
    assert sorted(r["op_key"] for r in drift["ops"]) == sorted(ok) and "overhead-i3x64x64-o3-s1" in set(ok)
    for row in drift["ops"]:
        assert row["lut_us"] == lut.table.at[row["op_key"], "median_us"] and row["now_us"] > 0
        assert row["change_pct"] == pytest.approx(100 * (row["now_us"] / row["lut_us"] - 1))
    # ... and the additive sum of those re-timings, scored against the archs timed beside them
    table = lut.table.copy()
    for row in drift["ops"]:
        table.at[row["op_key"], "median_us"] = row["now_us"]
    retimed = Lut(lut.path, lut.meta, table)
    same = [retimed.predict_us([op.key for op in arch_ops(Arch(space, tuple(a["blocks"])))]) for a in recs]
    assert [a["same_rounds_us"] for a in recs] == pytest.approx(same)
    assert out["same_rounds"]["mape"] == pytest.approx(float(np.mean(100 * np.abs(np.array(same) - meas) / meas)))
    assert out["same_rounds"]["spearman"] == pytest.approx(stats.spearmanr(same, meas).statistic)


def test_lut_validate_runs_the_profiler_driver() -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "lut", "validate", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--correction" in out.stdout and "profiler.validate" in out.stdout


def test_drift_leaves_out_overhead_ops_timed_as_another_model(tmp_path, synthetic_lut, caplog) -> None:
    """A LUT timed with another overhead op (a ReLU, before) is validated with today's: its
    overhead rows are another model's, so they are no measure of drift."""
    from profiler.protocol.settings import OVERHEAD_OPS
    from profiler.validate import drift_report

    lut = synthetic_lut(tmp_path)  # an ExecuTorch LUT whose protocol names no overhead op: another model
    ok = [k for k in lut.table.index if lut.table.at[k, "status"] == "ok"]
    ops = [parse_op_key(k) for k in ok]
    halves = [{k: [2.0 * lut.table.at[k, "median_us"]] for k in ok}] * 2  # everything twice as slow
    with caplog.at_level("WARNING"):
        drift = drift_report(lut, ops, halves)
    assert "another overhead op" in caplog.text
    assert {r["op_key"] for r in drift["ops"]} == {k for k in ok if not k.startswith("overhead-")}
    assert drift["median_change_pct"] == pytest.approx(100.0)
    same = Lut(lut.path, {**lut.meta, "protocol": {"overhead_op": OVERHEAD_OPS["sampler"]}}, lut.table)
    assert {r["op_key"] for r in drift_report(same, ops, halves)["ops"]} == set(ok)


def test_a_verdict_only_from_a_quiet_run() -> None:
    from lut.validate import QUIET_DRIFT_PCT, QUIET_NOISE_PCT, verdict, verdict_line

    assert verdict(4.9, 0.96, QUIET_NOISE_PCT, -QUIET_DRIFT_PCT)["meets_goal"] is True
    assert verdict(5.1, 0.99, 1.0, 0.0)["meets_goal"] is False and verdict(2.0, 0.94, 1.0, 0.0)["meets_goal"] is False
    loud = verdict(2.0, 0.99, 6.5, 3.0)
    assert loud["quiet"] is False and loud["meets_goal"] is None
    assert loud["not_quiet"] == ["noise floor 6.50 % > 4 % (by 2.50 points)", "drift +3.00 % beyond ±2 % (by 1.00 points)"]
    assert verdict(2.0, 0.99, 1.0, None)["meets_goal"] is None  # no drift measured: nothing says it was quiet
    assert verdict_line(loud).startswith("no verdict: the run was not quiet enough to judge (noise floor 6.50 %")
    assert verdict_line(verdict(3.0, 0.97, 1.0, 0.5)).startswith("verdict: meets the goal")
