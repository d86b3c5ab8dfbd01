"""bench.process_draw: the round factor and the validations of 2k rounds, against numbers worked
out by hand; and the bench end to end on a real (tiny) LUT."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench import process_draw
from lut.validate import random_archs
from profiler.validate import ALL_OPS, drift_sample
from search.space import arch_ops, get_space

D = 0.05  # ln of the draw injected into the networks: e^{+D} in even rounds, e^{-D} in odd ones


@pytest.fixture(scope="module")
def drawn(tmp_path_factory, synthetic_lut) -> tuple:
    """A LUT, four of its space's archs and all its ops "measured" in four rounds: every op at its
    LUT median, every network at its LUT sum times e^{±D} (a draw that moves networks, not ops)."""
    lut = synthetic_lut(tmp_path_factory.mktemp("luts"), noise=0.0)
    space = get_space(lut.space)
    archs = random_archs(space, 4, 0)
    ops = drift_sample(lut, ALL_OPS, 0)
    per_round = {op.key: {r: [float(lut.table.at[op.key, "median_us"])] for r in range(4)} for op in ops}
    for arch in archs:
        total = lut.predict_us([op.key for op in arch_ops(arch, space)])
        per_round[arch.label] = {r: [total * math.exp(D if r % 2 == 0 else -D)] for r in range(4)}
    return lut, archs, ops, per_round


def test_the_round_factor_is_each_rounds_move_against_the_median_over_rounds(drawn) -> None:
    _lut, archs, ops, per_round = drawn
    nets = process_draw.round_factors(per_round, [a.label for a in archs])
    assert nets == pytest.approx([100 * D, -100 * D, 100 * D, -100 * D])
    assert process_draw.round_factors(per_round, [op.key for op in ops]) == pytest.approx([0.0] * 4, abs=1e-9)


def test_validations_of_2k_rounds_give_the_noise_floor_and_bias_worked_out_by_hand(drawn) -> None:
    lut, archs, ops, per_round = drawn
    one = process_draw.splits(lut, archs, ops, per_round, 1, consecutive=True)
    # halves of one round each, one after the other: rounds (0|1), (1|2), (2|3), always e^{+D} against e^{-D}
    assert one["splits"] == 3
    assert one["noise_median"] == pytest.approx(200 * math.tanh(D)) and one["quiet_share"] == 0.0
    # the networks' pooled median over e^{±D} is cosh(D) times their sum; the ops did not move
    assert one["bias_mean"] == pytest.approx(100 * (1 / math.cosh(D) - 1)) and one["bias_sd"] == pytest.approx(0, abs=1e-9)
    two = process_draw.splits(lut, archs, ops, per_round, 2, consecutive=True)
    assert two["splits"] == 1 and two["noise_median"] == pytest.approx(0, abs=1e-9) and two["quiet_share"] == 1.0
    drawn_ = process_draw.splits(lut, archs, ops, per_round, 1, consecutive=False, num=50, seed=3)
    # random pairs of rounds: same parity (noise 0) or not (200·tanh D); both occur over 50 draws
    assert drawn_["splits"] == 50 and 0.0 < drawn_["quiet_share"] < 1.0
    assert drawn_["noise_p90"] == pytest.approx(200 * math.tanh(D))


def test_rounds_too_few_for_the_halves_asked_are_refused(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        process_draw.main(["some-lut", "--rounds", "4", "--halves", "3"])
    assert e.value.code == 2 and "rounds ≥ 2 × the smallest of --halves" in capsys.readouterr().err


@pytest.mark.slow
def test_the_bench_times_a_luts_archs_and_ops_round_by_round(tmp_path, tiny_space, capsys) -> None:
    from profiler.api import profile_space

    res = profile_space(tiny_space, "onnxruntime", out=tmp_path, rounds=1, progress=False)
    rc = process_draw.main([str(res.lut_dir), "--rounds", "4", "--runs", "2", "--archs", "2", "--halves", "1,2",
                            "--json"])  # fmt: skip
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["rounds"] == 4 and out["num_archs"] >= 2 and out["num_ops"] > 0 and out["seconds_per_round"] > 0
    rf = out["round_factor"]
    assert len(rf["networks"]) == len(rf["ops"]) == 4 and np.isfinite(rf["networks_sd"])
    assert [(h["k"], h["consecutive"], h["splits"]) for h in out["halves"]][:2] == [(1, True, 3), (1, False, 200)]
    for h in out["halves"]:
        assert h["noise_median"] >= 0 and 0.0 <= h["quiet_share"] <= 1.0
        assert h["bias_mean"] is not None  # every op of the LUT was re-timed in the rounds
    assert process_draw.main([str(res.lut_dir), "--rounds", "2", "--runs", "1", "--archs", "2", "--halves", "1"]) == 0
    text = capsys.readouterr().out
    assert "round factor" in text and "one by one" in text and "random" in text
    assert process_draw.main([str(res.lut_dir), "--rounds", "2", "--archs", "1", "--halves", "1"]) == 2
    assert "scoring needs ≥ 2" in capsys.readouterr().err
