"""A finished job's LUT table and samples frame, derived from what its work dir holds: one row
per op (statistics over all its rounds' samples, `lut.stats.summarize`; load time and memory as
medians over its op-rounds), a failed row for an op that failed or misses a round, a zero row per
identity op; the samples joined with the target's state in their round."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lut.schema import EXTRA_COLUMNS, TABLE_COLUMNS
from lut.stats import STAT_COLUMNS, summarize
from profiler.protocol.workdir import WorkDir
from search.space import Op

__all__ = ["assemble"]


def _median_extras(work: WorkDir, key: str, rounds: int) -> dict[str, float]:
    """load_us / memory_kb of an op: the median over its op-rounds (NaN where not reported)."""
    out = {}
    for col in EXTRA_COLUMNS:
        vals = [work.extras.get((key, r), {}).get(col) for r in range(rounds)]
        vals = [float(v) for v in vals if v is not None]
        out[col] = round(float(np.median(vals)), 3) if vals else math.nan
    return out


def assemble(
    timed: list[Op], identity: list[Op], work: WorkDir, failures: dict[str, str], rounds: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The LUT table and samples frame from what the work dir holds."""
    rows = []
    sample_rows = []
    for op in timed:
        base = {"op_key": op.key, "block": op.block, "c_in": op.c_in, "h": op.h, "w": op.w,
                "c_out": op.c_out, "stride": op.stride}  # fmt: skip
        per_round = [work.samples.get((op.key, r)) for r in range(rounds)]
        if op.key in failures or any(s is None for s in per_round):
            msg = failures.get(op.key, "not measured in every round")
            rows.append({**base, "status": "failed", **{c: None for c in STAT_COLUMNS}, "n": 0, "error": msg})
            continue
        values = [v for s in per_round for v in s]  # type: ignore[union-attr]
        # rounded to the ns the timer resolves, as table.csv stores them (meta must agree)
        stats = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in summarize(values).items()}
        rows.append({**base, "status": "ok", **stats, "error": "", **_median_extras(work, op.key, rounds)})
        for r, s in enumerate(per_round):
            for i, v in enumerate(s):  # type: ignore[arg-type]
                sample_rows.append((op.key, r, i, v))
    for op in identity:
        rows.append({"op_key": op.key, "block": op.block, "c_in": op.c_in, "h": op.h, "w": op.w,
                     "c_out": op.c_out, "stride": op.stride, "status": "identity",
                     **{c: 0.0 for c in STAT_COLUMNS}, "n": 0, "error": ""})  # fmt: skip
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS)).sort_values("op_key").reset_index(drop=True)
    samples = pd.DataFrame(sample_rows, columns=["op_key", "round", "sample", "latency_us"])
    if work.states:
        states = pd.DataFrame([{"round": r, **s} for r, s in work.states.items()])
        samples = samples.merge(states, on="round", how="left")
    return table, samples
