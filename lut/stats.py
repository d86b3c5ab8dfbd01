"""Statistics derived from raw latency samples.

A LUT stores raw samples; every statistic in `table.csv` is derived from them here, so one
function decides what "median" or "p10" means:

    summarize([10.0, 12.0, 11.0])
    -> {"median_us": 11.0, "mean_us": 11.0, "std_us": 1.0, "min_us": 10.0,
        "p10_us": 10.2, "p90_us": 11.8, "n": 3}

Percentiles use linear interpolation between order statistics (numpy's default, "type 7");
`std_us` is the sample standard deviation (ddof=1), 0.0 for a single sample.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["STAT_COLUMNS", "summarize", "summarize_frame"]

# Columns `summarize` returns, in table.csv order.
STAT_COLUMNS = ("median_us", "mean_us", "std_us", "min_us", "p10_us", "p90_us", "n")


def summarize(samples_us: Sequence[float]) -> dict[str, float | int]:
    """median/mean/std/min/p10/p90 (µs) and n of one op's samples."""
    x = np.asarray(samples_us, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("summarize needs a non-empty 1-D sequence of latency samples (µs)")
    if not np.all(np.isfinite(x)):
        raise ValueError("latency samples must be finite numbers; got NaN or inf")
    p10, p50, p90 = np.percentile(x, [10, 50, 90])
    return {
        "median_us": float(p50),
        "mean_us": float(x.mean()),
        "std_us": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "min_us": float(x.min()),
        "p10_us": float(p10),
        "p90_us": float(p90),
        "n": int(x.size),
    }


def summarize_frame(samples: pd.DataFrame, by: str = "op_key") -> pd.DataFrame:
    """`summarize` per group of a samples frame (columns `by`, `latency_us`); index = `by`."""
    rows = {key: summarize(g["latency_us"].to_numpy()) for key, g in samples.groupby(by, sort=True)}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(STAT_COLUMNS))
