"""`python -m search.sweep`: one search per target, a front whose latencies follow the targets, the
random reference trained as the points' archs are, a re-run that keeps finished points, and bad
input refused before any search starts."""

from __future__ import annotations

import csv

import pytest

from lut.store import load_lut
from search.latency import LatencyModel
from search.sweep import dominated, main, parse_values


def test_parse_values_and_dominance() -> None:
    assert parse_values("4,6,8", "--targets-ms") == [4.0, 6.0, 8.0]
    for bad in ("4,x", "0,2", "3,3", ""):
        with pytest.raises(ValueError, match="--targets-ms"):
            parse_values(bad, "--targets-ms")
    # (latency, accuracy): b is slower and no better than a; c is slower and better
    assert dominated([1.0, 2.0, 3.0], [0.5, 0.5, 0.7]) == [False, True, False]
    assert dominated([1.0, 1.0], [0.5, 0.5]) == [False, False]  # equal points dominate neither


@pytest.mark.parametrize("argv, message", [
    (["--targets-ms", "4,x"], "comma-separated numbers"),
    (["--targets-ms", "4,6", "--target-latency-ms", "5"], "--target-latency-ms is what this sweep sets"),
    (["--targets-ms", "4,6", "--no-such-flag"], "--no-such-flag"),
    (["--betas", "0.5", "--strategy", "nope"], "not valid"),
])  # fmt: skip
def test_bad_input_exits_2_with_one_message_and_runs_nothing(argv, message, tmp_path, capsys) -> None:
    assert main(["--lut", "x", "--out", str(tmp_path / "s"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1
    assert not (tmp_path / "s").exists()


def test_one_sweep_flag_at_a_time(tmp_path) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--lut", "x", "--out", str(tmp_path), "--targets-ms", "4", "--betas", "1"])
    assert e.value.code == 2


@pytest.mark.slow
@pytest.mark.stochastic(seeds=(0,))
def test_three_targets_give_a_front_that_follows_the_targets(tmp_path, write_synthetic_lut, seed: int) -> None:
    lut_dir = write_synthetic_lut(tmp_path / "luts", "fbnet")
    lat = LatencyModel.from_lut(load_lut(lut_dir))
    lo, hi = lat.min_max_us()
    mid = lat.uniform_expected_us()
    targets = [(lo + f * (mid - lo)) / 1000 for f in (0.15, 0.5, 0.95)]  # ms, well apart
    out = tmp_path / "sweep"
    argv = ["--lut", str(lut_dir), "--out", str(out), "--targets-ms", ",".join(f"{t:.4f}" for t in targets),
            "--jobs", "2", "--random", "1",
            # search.run's flags, passed to every point: random search towards the target, scored on
            # a one-shot supernet, on a few digits
            "--strategy", "random", "--fitness", "oneshot", "--cycles", "3", "--epochs", "1", "--warmup-epochs", "0",
            "--eval-batches", "1", "--recalib-batches", "1", "--subset", "48", "--batch-size", "16",
            "--train-epochs", "1", "--seed", str(seed)]  # fmt: skip
    assert main(argv) == 0
    with (out / "pareto.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [float(r["target_ms"]) for r in rows] == pytest.approx(targets, rel=1e-3)
    found = [float(r["predicted_latency_ms"]) for r in rows]
    assert found[0] < found[1] < found[2]  # the latencies follow the targets
    for r in rows:
        assert r["dominated"] in ("True", "False") and r["arch_id"].startswith("arch-fbnet-")
        assert 0.0 <= float(r["trained_test_accuracy"]) <= 1.0
    with (out / "random.csv").open() as f:
        reference = list(csv.DictReader(f))
    assert len(reference) == 3  # one per point, of the point's latency within a few per cent
    for ref, r in zip(reference, rows):
        assert abs(float(ref["predicted_latency_ms"]) / float(r["predicted_latency_ms"]) - 1) < 0.1
    assert (out / "pareto.png").stat().st_size > 0
    # a re-run finds every point and reference finished and runs nothing again
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("arch.json")}
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("arch.json")} == stamps
