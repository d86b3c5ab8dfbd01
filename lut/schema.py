"""The LUT file schema: what `table.csv`, `samples.csv.gz` and `meta.json` contain.

A LUT version directory holds

    table.csv        one row per op, sorted by op_key (TABLE_COLUMNS)
    samples.csv.gz   raw samples: op_key, round, sample, latency_us (+ per-round target state,
                     e.g. temperature_c, cpu_freq_khz, load_avg_1m)
    meta.json        identity and provenance (META_KEYS); written by `lut.store.write_lut`
    validation.json  added once the LUT is validated end to end

Row status: "ok" (measured), "failed" (export or run failed; `error` says why, stats empty),
"identity" (computes nothing, never exported or timed: stats 0, n 0). Rows with block "overhead"
are the per-invocation overhead ops, one per distinct input shape.

Bump `SCHEMA_VERSION` in `lut.store` whenever a reader of the previous version would misread a
file of the new one.
"""

from __future__ import annotations

import math

import pandas as pd

from .stats import STAT_COLUMNS

__all__ = [
    "TABLE_COLUMNS",
    "EXTRA_COLUMNS",
    "SAMPLE_COLUMNS",
    "SHAPE_COLUMNS",
    "STATUSES",
    "META_KEYS",
    "RUNTIME_KEYS",
    "SchemaError",
    "check_table",
    "check_samples",
    "check_meta",
]

SHAPE_COLUMNS = ("c_in", "h", "w", "c_out", "stride")
# Per op, the median over its op-rounds of what the target reports with the samples: the time to
# load and initialise the op's model (µs) and the memory it holds (KiB; what that memory is per
# target: meta.json's `device.memory_semantics`). Optional: LUTs written before they were
# recorded, and imported ones, have none (read as NaN).
EXTRA_COLUMNS = ("load_us", "memory_kb")
TABLE_COLUMNS = ("op_key", "block", *SHAPE_COLUMNS, "status", *STAT_COLUMNS, "error", *EXTRA_COLUMNS)
SAMPLE_COLUMNS = ("op_key", "round", "sample", "latency_us")
STATUSES = ("ok", "failed", "identity")
META_KEYS = (
    "schema_version",
    "version",
    "parent",
    "content_hash",
    "created_at",
    "tool_version",
    "device",
    "runtime",
    "exporters",
    "space",
    "protocol",
    "overhead_us",
    "failed_ops",
)
RUNTIME_KEYS = ("name", "version", "delegate", "threads", "core_mask", "dtype")


class SchemaError(ValueError):
    """A frame or metadata dict does not follow the schema; the message says which part."""


def check_table(table: pd.DataFrame) -> pd.DataFrame:
    """Validate and normalize a table (columns, dtypes, statuses); returns it sorted by op_key
    with a plain RangeIndex and the columns in TABLE_COLUMNS order."""
    if table.index.name == "op_key":
        table = table.reset_index()
    table = table.assign(**{c: math.nan for c in EXTRA_COLUMNS if c not in table.columns})
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise SchemaError(f"table lacks columns {missing}; expected {list(TABLE_COLUMNS)}")
    t = table.loc[:, list(TABLE_COLUMNS)].copy()
    if t["op_key"].isna().any() or t["op_key"].duplicated().any():
        dup = t.loc[t["op_key"].duplicated(), "op_key"].tolist()
        raise SchemaError(f"op_key must be unique and non-empty; duplicated: {dup[:5]}")
    bad = sorted(set(t["status"].astype(str)) - set(STATUSES))
    if bad:
        raise SchemaError(f"unknown status values {bad}; allowed: {list(STATUSES)}")
    try:
        for c in SHAPE_COLUMNS:
            t[c] = pd.to_numeric(t[c], errors="raise").astype("int64")
        for c in (*STAT_COLUMNS, *EXTRA_COLUMNS):
            t[c] = pd.to_numeric(t[c], errors="raise").astype("float64")
        t["n"] = t["n"].fillna(0).astype("int64")
    except (ValueError, TypeError) as e:
        raise SchemaError(f"non-numeric shape or statistic value: {e}") from None
    t["op_key"] = t["op_key"].astype(str)
    t["block"] = t["block"].astype(str)
    t["status"] = t["status"].astype(str)
    t["error"] = t["error"].fillna("").astype(str)
    ok = t["status"] == "ok"
    stats_ok = t.loc[ok, list(STAT_COLUMNS)]
    if stats_ok.isna().any().any() or (t.loc[ok, "n"] <= 0).any():
        bad_keys = t.loc[ok & (stats_ok.isna().any(axis=1) | (t["n"] <= 0)), "op_key"].tolist()
        raise SchemaError(f"rows with status 'ok' need statistics and n > 0: {bad_keys[:5]}")
    if (t.loc[ok, "median_us"] < 0).any():
        raise SchemaError("negative latencies in rows with status 'ok'")
    return t.sort_values("op_key", kind="stable").reset_index(drop=True)


def check_samples(samples: pd.DataFrame) -> pd.DataFrame:
    """Validate a samples frame: the SAMPLE_COLUMNS are present and latency_us is finite."""
    missing = [c for c in SAMPLE_COLUMNS if c not in samples.columns]
    if missing:
        raise SchemaError(f"samples lack columns {missing}; expected at least {list(SAMPLE_COLUMNS)}")
    lat = pd.to_numeric(samples["latency_us"], errors="coerce")
    if lat.isna().any() or not lat.map(math.isfinite).all():
        raise SchemaError("samples have missing or non-numeric latency_us values")
    return samples


def check_meta(meta: dict) -> dict:
    """Validate the keys of a meta.json dict (values are checked by their readers)."""
    if not isinstance(meta, dict):
        raise SchemaError("meta.json must hold a JSON object")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise SchemaError(f"meta.json lacks keys {missing}")
    if not isinstance(meta["device"], dict) or "device_id" not in meta["device"]:
        raise SchemaError("meta.json 'device' must be an object with a 'device_id'")
    if not isinstance(meta["runtime"], dict):
        raise SchemaError("meta.json 'runtime' must be an object")
    missing_rt = [k for k in RUNTIME_KEYS if k not in meta["runtime"]]
    if missing_rt:
        raise SchemaError(f"meta.json 'runtime' lacks keys {missing_rt}")
    return meta
