"""Compare two LUTs of the same space: per op, per layer, and at the architecture level.

A and B may differ by device, by runtime, or be two versions of one LUT (drift after an OS or
runtime update). Everything here is computed from the tables; nothing is measured.

What `compare_luts(a, b)` returns (`Comparison.to_dict()` is the JSON of `lut compare --json`):

- `ops`: one row per op present in both LUTs with a positive latency in both (identity ops and
  ops that failed in either LUT are left out and counted). `ratio` = B / A of the net op latency
  (`Lut.op_latency_us`, i.e. with the per-invocation overhead already handled as the LUT predicts).
- `geomean_ratio`: geometric mean of `ratio` over those ops: how much slower B is than A.
- `spearman`, `kendall`: rank correlation of the op latencies under A and B.
- `flips`: per searchable layer, the pairs of candidate blocks whose latency order differs
  between A and B (x faster than y on A, slower on B), largest disagreement first.
- `best_blocks`: per layer, the fastest computing block (identity candidates left out: they cost
  nothing on every device) under A and under B, and what A's choice costs on B.
- `transfer`: architecture-level transfer, see `transfer_analysis`.
- `drift`: per-op relative change summary and the metadata fields that differ; the headline when
  A and B are versions of the same device and runtime.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from lut.store import Lut, LutError
from search.space import Op, count_macs, get_space, parse_op_key
from search.space.spaces import Space

__all__ = [
    "Comparison",
    "compare_luts",
    "op_ratio_table",
    "block_flips",
    "best_blocks",
    "transfer_analysis",
    "drift_summary",
    "net_latencies_us",
    "DEFAULT_MACS_FLOORS",
]

logger = logging.getLogger(__name__)

# MACs floors of the transfer analysis, as fractions of the way from the space's cheapest to its
# most expensive architecture (in MACs).
DEFAULT_MACS_FLOORS = (0.25, 0.5, 0.75)
# Ops whose latency changed by more than this (relative) are listed in the drift summary.
DRIFT_THRESHOLD = 0.05
# Meta fields whose difference explains drift: compared between A and B and listed when different.
_META_FIELDS = ("device", "runtime", "exporters", "protocol", "tool_version")


@dataclass(frozen=True)
class Comparison:
    """The result of `compare_luts`; `ops` is the per-op table written as CSV."""

    a_id: str
    b_id: str
    kind: str  # "device", "runtime", "device+runtime", "version" (same device and runtime) or "same"
    ops: pd.DataFrame
    summary: dict[str, Any]
    flips: list[dict[str, Any]] = field(default_factory=list)
    best_blocks: list[dict[str, Any]] = field(default_factory=list)
    transfer: dict[str, Any] = field(default_factory=dict)
    drift: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a_id,
            "b": self.b_id,
            "kind": self.kind,
            **self.summary,
            "flips": self.flips,
            "best_blocks": self.best_blocks,
            "transfer": self.transfer,
            "drift": self.drift,
        }


def lut_id(lut: Lut) -> str:
    """`device/space/runtime_dir/vK`, the LUT's identity in reports."""
    return lut.id


def net_latencies_us(lut: Lut, keys: list[str] | None = None) -> pd.Series:
    """op key → the latency the LUT adds for that op (µs); NaN where the op failed or is absent."""
    table = lut.table
    keys = [k for k in table.index if table.at[k, "block"] != "overhead"] if keys is None else keys
    out = {}
    for key in keys:
        if key not in table.index or table.at[key, "status"] == "failed":
            out[key] = math.nan
            continue
        out[key] = float(lut.op_latency_us(key))
    return pd.Series(out, dtype=float, name="latency_us")


def op_ratio_table(a: Lut, b: Lut) -> tuple[pd.DataFrame, dict[str, int]]:
    """Per-op table of A and B latencies and their ratio B/A, and counts of ops left out."""
    ta, tb = a.table, b.table
    keys = sorted(
        k
        for k in set(ta.index) & set(tb.index)
        if ta.at[k, "block"] != "overhead"
    )
    la, lb = net_latencies_us(a, keys), net_latencies_us(b, keys)
    usable = [k for k in keys if la[k] > 0 and lb[k] > 0]
    left_out = {
        "only_in_a": len(set(ta.index) - set(tb.index)),
        "only_in_b": len(set(tb.index) - set(ta.index)),
        "not_positive_or_failed": len(keys) - len(usable),
    }
    rows = []
    for k in usable:
        op = parse_op_key(k)
        rows.append(
            {
                "op_key": k,
                "block": op.block,
                "c_in": op.c_in,
                "h": op.h,
                "w": op.w,
                "c_out": op.c_out,
                "stride": op.stride,
                "a_us": la[k],
                "b_us": lb[k],
                "ratio": lb[k] / la[k],
            }
        )
    df = pd.DataFrame(rows, columns=["op_key", "block", "c_in", "h", "w", "c_out", "stride",
                                     "a_us", "b_us", "ratio"])  # fmt: skip
    df["log2_ratio"] = np.log2(df["ratio"]) if len(df) else []
    df["rank_a"] = df["a_us"].rank(method="min").astype(int) if len(df) else []
    df["rank_b"] = df["b_us"].rank(method="min").astype(int) if len(df) else []
    return df.set_index("op_key"), left_out


def _layer_matrix(lut: Lut, space: Space) -> list[dict[str, float]]:
    """Per searchable layer: candidate block → net latency (NaN where missing or failed)."""
    rows = []
    for layer in space.layers():
        ops = {b: layer.op(b) for b in space.candidates(layer)}
        lat = net_latencies_us(lut, [o.key for o in ops.values()])
        rows.append({b: float(lat[o.key]) for b, o in ops.items()})
    return rows


def block_flips(a: Lut, b: Lut, space: Space) -> list[dict[str, Any]]:
    """Pairs of candidates at a layer that A and B order differently, largest disagreement first.

    The disagreement of a flip is |log(a_x/a_y) - log(b_x/b_y)|. Identity candidates (no compute)
    and ops missing in either LUT are left out.
    """
    flips = []
    for layer, ma, mb in zip(space.layers(), _layer_matrix(a, space), _layer_matrix(b, space)):
        blocks = [
            blk
            for blk in ma
            if not layer.op(blk).is_identity and ma[blk] > 0 and mb.get(blk, math.nan) > 0
        ]
        for x, y in combinations(blocks, 2):
            da, db = ma[x] - ma[y], mb[x] - mb[y]
            if da * db < 0:
                flips.append(
                    {
                        "layer": layer.index,
                        "faster_on_a": x if da < 0 else y,
                        "faster_on_b": x if db < 0 else y,
                        "a_us": {x: ma[x], y: ma[y]},
                        "b_us": {x: mb[x], y: mb[y]},
                        "disagreement": abs(math.log(ma[x] / ma[y]) - math.log(mb[x] / mb[y])),
                    }
                )
    flips.sort(key=lambda f: -f["disagreement"])
    return flips


def best_blocks(a: Lut, b: Lut, space: Space) -> list[dict[str, Any]]:
    """Per layer: the fastest computing candidate under A and under B (identity ops left out)."""
    out = []
    for layer, ma, mb in zip(space.layers(), _layer_matrix(a, space), _layer_matrix(b, space)):
        real = [blk for blk in ma if not layer.op(blk).is_identity]
        sa = {blk: ma[blk] for blk in real if ma[blk] > 0}
        sb = {blk: mb[blk] for blk in real if mb.get(blk, math.nan) > 0}
        if not sa or not sb:
            continue
        best_a, best_b = min(sa, key=sa.get), min(sb, key=sb.get)
        cost = sb.get(best_a, math.nan) / sb[best_b] - 1.0
        out.append(
            {
                "layer": layer.index,
                "best_a": best_a,
                "best_b": best_b,
                "same": best_a == best_b,
                "a_pick_slowdown_on_b_pct": 100.0 * cost,
            }
        )
    return out


@lru_cache(maxsize=4096)
def _op_macs(op: Op) -> int:
    if op.is_identity:
        return 0
    return count_macs(op.build(), op.input_shape)


def _body_macs(space: Space) -> list[dict[str, int]]:
    """Per searchable layer: candidate block → MACs (one forward pass per op, on one thread:
    these tiny passes are ~10× slower when torch spreads them over busy cores)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [
            {blk: _op_macs(layer.op(blk)) for blk in space.candidates(layer)}
            for layer in space.layers()
        ]
    finally:
        torch.set_num_threads(prev)


def _min_latency_arch(
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
    a: Lut, b: Lut, space: Space, floors: tuple[float, ...] = DEFAULT_MACS_FLOORS
) -> dict[str, Any]:
    """How much slower A's fastest architecture is on B than B's own, at equal compute.

    Definition (accuracy-proxy free): for a MACs floor F, the pick of a LUT is the architecture
    of the space with the lowest predicted latency among those with at least F MACs (body layers
    only; the fixed stem/head/classifier are the same for every arch and left out of both sums).
    F runs over `floors`, fractions of the way from the body's minimum to its maximum MACs.
    `penalty_on_b_pct` = 100 · (lat_B(pick_A) / lat_B(pick_B) − 1), and symmetrically on A.
    """
    lat_a, lat_b = _layer_matrix(a, space), _layer_matrix(b, space)
    macs = _body_macs(space)
    lo, hi = sum(min(m.values()) for m in macs), sum(max(m.values()) for m in macs)
    results = []
    for frac in floors:
        floor = int(lo + frac * (hi - lo))
        pa, pb = _min_latency_arch(lat_a, macs, floor), _min_latency_arch(lat_b, macs, floor)
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


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def drift_summary(ops: pd.DataFrame, a: Lut, b: Lut, top: int = 10) -> dict[str, Any]:
    """Relative per-op change B vs A, and the metadata fields that differ."""
    change = ops["ratio"] - 1.0 if len(ops) else pd.Series(dtype=float)
    moved = change[change.abs() > DRIFT_THRESHOLD].sort_values(key=abs, ascending=False)
    fa = {k: v for f in _META_FIELDS for k, v in _flatten(a.meta.get(f, {}), f).items()}
    fb = {k: v for f in _META_FIELDS for k, v in _flatten(b.meta.get(f, {}), f).items()}
    meta_diff = {
        k: {"a": fa.get(k), "b": fb.get(k)}
        for k in sorted(set(fa) | set(fb))
        if fa.get(k) != fb.get(k)
    }
    return {
        "median_change_pct": 100.0 * float(change.median()) if len(change) else math.nan,
        "median_abs_change_pct": 100.0 * float(change.abs().median()) if len(change) else math.nan,
        "max_abs_change_pct": 100.0 * float(change.abs().max()) if len(change) else math.nan,
        "threshold_pct": 100.0 * DRIFT_THRESHOLD,
        "ops_changed": int(len(moved)),
        "ops_compared": int(len(change)),
        "top_changes": [
            {"op_key": k, "change_pct": 100.0 * float(v)} for k, v in moved.head(top).items()
        ],
        "meta_diff": meta_diff,
    }


def _kind(a: Lut, b: Lut) -> str:
    ra, rb = a.meta.get("runtime", {}), b.meta.get("runtime", {})
    same_rt = all(ra.get(k) == rb.get(k) for k in ("name", "threads", "dtype"))
    same_dev = a.device_id == b.device_id
    if same_dev and same_rt:
        return "same" if a.version == b.version else "version"
    if same_dev:
        return "runtime"
    return "device" if same_rt else "device+runtime"


def compare_luts(
    a: Lut, b: Lut, *, floors: tuple[float, ...] = DEFAULT_MACS_FLOORS
) -> Comparison:
    """Compare LUTs A and B over their common space (see the module docstring)."""
    if a.space != b.space:
        raise LutError(
            f"cannot compare LUTs of different spaces ({a.space!r} vs {b.space!r}); "
            "compare two LUTs of the same space"
        )
    space = get_space(a.space)
    ops, left_out = op_ratio_table(a, b)
    if len(ops) < 2:
        raise LutError(
            f"LUTs {lut_id(a)} and {lut_id(b)} have {len(ops)} ops with a positive latency in "
            "both; nothing to compare (are both LUTs profiled, not failed?)"
        )
    rho = stats.spearmanr(ops["a_us"], ops["b_us"]).statistic
    tau = stats.kendalltau(ops["a_us"], ops["b_us"]).statistic
    summary = {
        "space": a.space,
        "num_ops": int(len(ops)),
        "left_out": left_out,
        "geomean_ratio": float(np.exp(np.log(ops["ratio"]).mean())),
        "ratio_min": float(ops["ratio"].min()),
        "ratio_max": float(ops["ratio"].max()),
        "spearman": float(rho),
        "kendall": float(tau),
    }
    flips = block_flips(a, b, space)
    summary["num_flips"] = len(flips)
    transfer = transfer_analysis(a, b, space, floors)
    return Comparison(
        a_id=lut_id(a),
        b_id=lut_id(b),
        kind=_kind(a, b),
        ops=ops,
        summary=summary,
        flips=flips,
        best_blocks=best_blocks(a, b, space),
        transfer=transfer,
        drift=drift_summary(ops, a, b),
    )
