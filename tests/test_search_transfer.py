"""search.transfer: the exact latency-optimal arch at a MACs floor, and its transfer penalty."""

from __future__ import annotations

import random
from pathlib import Path

from lut.compare import layer_matrix
from search.space import get_space
from search.transfer import body_macs, transfer_analysis

SPACE = "fbnet-r32-w0.25"  # the synthetic_lut default


def test_transfer_pick_is_optimal_and_penalty_nonnegative(tmp_path: Path, synthetic_lut) -> None:
    a = synthetic_lut(tmp_path, "devA", seed=1)
    b = synthetic_lut(tmp_path, "devB", seed=2, scale={"k3_e6": 5.0, "skip": 10.0, "k5_e1": 0.2})
    space = get_space(SPACE)
    tr = transfer_analysis(a, b, space, floors=(0.5,))
    f = tr["floors"][0]
    assert f["feasible"] and f["penalty_on_b_pct"] >= 0 and f["penalty_on_a_pct"] >= 0
    assert f["pick_b_macs"] >= f["macs_floor"] and f["pick_a_macs"] >= f["macs_floor"]
    # no random arch meeting the floor beats B's pick on B (the DP is exact up to MAC binning)
    lat_b, macs = layer_matrix(b, space), body_macs(space)
    rng = random.Random(0)
    checked = 0
    for _ in range(3000):
        blocks = [rng.choice(list(m)) for m in macs]
        if sum(m[x] for m, x in zip(macs, blocks)) >= f["macs_floor"]:
            checked += 1
            assert sum(l[x] for l, x in zip(lat_b, blocks)) >= f["pick_b_on_b_us"] * (1 - 1e-3)
    assert checked > 100


def test_identical_luts_transfer_at_no_cost(tmp_path: Path, synthetic_lut) -> None:
    a = synthetic_lut(tmp_path, seed=0)
    b = synthetic_lut(tmp_path, seed=0)
    tr = transfer_analysis(a, b)
    assert all(f["feasible"] and abs(f["penalty_on_b_pct"]) < 1e-6 for f in tr["floors"])
