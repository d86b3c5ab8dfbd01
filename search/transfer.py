"""Architecture-level transfer between two LUTs at equal compute: an exact, accuracy-free search.

For a MACs floor F, the *pick* of a LUT is the architecture of the space with the lowest
predicted latency among those with at least F MACs (a knapsack over layers, solved exactly by
dynamic programming). How much slower A's pick is on B than B's own pick says how much a search
that targets the wrong device costs, before any accuracy is involved; `search.crossdevice` does the
same with real searches and trained accuracy.

    transfer_analysis(lut_a, lut_b)   -> {"floors": [{"pick_a": [...], "penalty_on_b_pct": 7.3, ...}]}
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lut.compare import layer_matrix
from lut.store import Lut
from search.space import Space, get_space

__all__ = ["DEFAULT_MACS_FLOORS", "body_macs", "min_latency_arch", "transfer_analysis"]

# MACs floors of the transfer analysis, as fractions of the way from the space's cheapest to its
# most expensive architecture (in MACs).
DEFAULT_MACS_FLOORS = (0.25, 0.5, 0.75)


def body_macs(space: Space) -> list[dict[str, int]]:
    """Per searchable layer: candidate block → MACs (the block registry's count)."""
    return [{blk: layer.op(blk).macs for blk in space.candidates(layer)} for layer in space.layers()]


def min_latency_arch(
    lat: list[dict[str, float]], macs: list[dict[str, int]], floor: int, bins: int = 2000
) -> tuple[list[str], float] | None:
    """Blocks minimizing Σ latency subject to Σ MACs ≥ floor (dynamic programming over layers).

    The state is the MACs reached so far, floored to bins of (max body MACs / bins) and capped
    at the floor. Since binned sums never exceed true sums, every arch found truly meets the
    floor; it is optimal among archs that meet it in binned MACs.
    """
    total_max = sum(max(m.values()) for m in macs)
    step = max(1, math.ceil(total_max / bins))
    need = math.ceil(floor / step)
    dp = np.full(need + 1, np.inf)
    dp[0] = 0.0
    back: list[tuple[list[str], np.ndarray, np.ndarray]] = []  # per layer: blocks, choice, source
    for lat_l, macs_l in zip(lat, macs):
        blocks = [b for b, t in lat_l.items() if math.isfinite(t)]
        new = np.full(need + 1, np.inf)
        choice = np.full(need + 1, -1)
        source = np.full(need + 1, -1)
        for j, blk in enumerate(blocks):
            m = min(macs_l[blk] // step, need)
            cand = np.full(need + 1, np.inf)
            src = np.full(need + 1, -1)
            cand[m:need] = dp[: need - m] + lat_l[blk]  # not yet at the floor
            src[m:need] = np.arange(need - m)
            tail = need - m + int(np.argmin(dp[need - m :]))  # every state that reaches the floor
            cand[need], src[need] = dp[tail] + lat_l[blk], tail
            better = cand < new
            new[better], choice[better], source[better] = cand[better], j, src[better]
        back.append((blocks, choice, source))
        dp = new
    if not math.isfinite(dp[need]):
        return None
    picked, state = [], need
    for blocks, choice, source in reversed(back):
        picked.append(blocks[choice[state]])
        state = source[state]
    return picked[::-1], float(dp[need])


def transfer_analysis(
    a: Lut, b: Lut, space: Space | None = None, floors: tuple[float, ...] = DEFAULT_MACS_FLOORS
) -> dict[str, Any]:
    """How much slower A's fastest architecture is on B than B's own, at equal compute.

    Definition (accuracy-proxy free): for a MACs floor F, the pick of a LUT is the architecture
    of the space with the lowest predicted latency among those with at least F MACs (body layers
    only; the fixed stem/head/classifier are the same for every arch and left out of both sums).
    F runs over `floors`, fractions of the way from the body's minimum to its maximum MACs.
    `penalty_on_b_pct` = 100 · (lat_B(pick_A) / lat_B(pick_B) − 1), and symmetrically on A.
    """
    space = space or get_space(a.space)
    lat_a, lat_b = layer_matrix(a, space), layer_matrix(b, space)
    macs = body_macs(space)
    lo, hi = sum(min(m.values()) for m in macs), sum(max(m.values()) for m in macs)
    results = []
    for frac in floors:
        floor = int(lo + frac * (hi - lo))
        pa, pb = min_latency_arch(lat_a, macs, floor), min_latency_arch(lat_b, macs, floor)
        if pa is None or pb is None:
            results.append({"floor_frac": frac, "macs_floor": floor, "feasible": False})
            continue
        blocks_a, blocks_b = pa[0], pb[0]
        a_on_b = sum(lat_b[i][blk] for i, blk in enumerate(blocks_a))
        b_on_a = sum(lat_a[i][blk] for i, blk in enumerate(blocks_b))
        results.append(
            {
                "floor_frac": frac,
                "macs_floor": floor,
                "feasible": True,
                "pick_a": blocks_a,
                "pick_b": blocks_b,
                "pick_a_macs": sum(macs[i][blk] for i, blk in enumerate(blocks_a)),
                "pick_b_macs": sum(macs[i][blk] for i, blk in enumerate(blocks_b)),
                "same_pick": blocks_a == blocks_b,
                "pick_a_on_a_us": pa[1],
                "pick_b_on_b_us": pb[1],
                "pick_a_on_b_us": a_on_b,
                "pick_b_on_a_us": b_on_a,
                "penalty_on_b_pct": 100.0 * (a_on_b / pb[1] - 1.0),
                "penalty_on_a_pct": 100.0 * (b_on_a / pa[1] - 1.0),
            }
        )
    return {
        "definition": (
            "pick_X = argmin over archs of the body latency predicted by LUT X subject to body "
            "MACs >= macs_floor; macs_floor = min + floor_frac*(max - min) of the body MACs; "
            "penalty_on_b_pct = 100*(lat_B(pick_A)/lat_B(pick_B) - 1)"
        ),
        "body_macs_range": [lo, hi],
        "floors": results,
    }


