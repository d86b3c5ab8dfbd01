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
Architecture-level transfer (how an arch picked with A's LUT fares on B) is a search over the
space, so it lives with the searches: `python -m search.crossdevice` (and `search.transfer`).
- `drift`: per-op relative change summary and the metadata fields that differ; the headline when
  A and B are versions of the same device and runtime.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from lut.schema import EXTRA_COLUMNS
from lut.store import Lut, LutError
from search.space import get_space, parse_op_key
from search.space.spaces import Space

__all__ = [
    "Comparison",
    "compare_luts",
    "op_ratio_table",
    "block_flips",
    "best_blocks",
    "layer_matrix",
    "drift_summary",
    "net_latencies_us",
]

logger = logging.getLogger(__name__)

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
    drift: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a_id,
            "b": self.b_id,
            "kind": self.kind,
            **self.summary,
            "flips": self.flips,
            "best_blocks": self.best_blocks,
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
                **{f"{side}_{col}": float(t.at[k, col]) for side, t in (("a", ta), ("b", tb)) for col in EXTRA_COLUMNS},
            }
        )
    extra_cols = [f"{side}_{col}" for side in ("a", "b") for col in EXTRA_COLUMNS]
    df = pd.DataFrame(rows, columns=["op_key", "block", "c_in", "h", "w", "c_out", "stride",
                                     "a_us", "b_us", "ratio", *extra_cols])  # fmt: skip
    df["log2_ratio"] = np.log2(df["ratio"]) if len(df) else []
    df["rank_a"] = df["a_us"].rank(method="min").astype(int) if len(df) else []
    df["rank_b"] = df["b_us"].rank(method="min").astype(int) if len(df) else []
    return df.set_index("op_key"), left_out


def layer_matrix(lut: Lut, space: Space) -> list[dict[str, float]]:
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
    for layer, ma, mb in zip(space.layers(), layer_matrix(a, space), layer_matrix(b, space)):
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
    for layer, ma, mb in zip(space.layers(), layer_matrix(a, space), layer_matrix(b, space)):
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


def compare_luts(a: Lut, b: Lut) -> Comparison:
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
    for col in EXTRA_COLUMNS:  # load time and memory, where both LUTs recorded them
        both = ops[[f"a_{col}", f"b_{col}"]].dropna()
        both = both[(both > 0).all(axis=1)]
        summary[f"{col}_geomean_ratio"] = (
            float(np.exp(np.log(both[f"b_{col}"] / both[f"a_{col}"]).mean())) if len(both) else None
        )
        summary[f"{col}_ops_compared"] = int(len(both))
    flips = block_flips(a, b, space)
    summary["num_flips"] = len(flips)
    return Comparison(
        a_id=lut_id(a),
        b_id=lut_id(b),
        kind=_kind(a, b),
        ops=ops,
        summary=summary,
        flips=flips,
        best_blocks=best_blocks(a, b, space),
        drift=drift_summary(ops, a, b),
    )
