"""Latency lookup tables: schema, the versioned store, statistics, `python -m lut`."""

from .schema import SAMPLE_COLUMNS, TABLE_COLUMNS
from .stats import STAT_COLUMNS, summarize
from .store import (
    SCHEMA_VERSION,
    Lut,
    LutCoverageError,
    LutError,
    list_luts,
    list_versions,
    load_lut,
    parse_runtime_dir_name,
    runtime_dir_name,
    write_lut,
)

__all__ = [
    "SCHEMA_VERSION", "SAMPLE_COLUMNS", "STAT_COLUMNS", "TABLE_COLUMNS", "Lut", "LutCoverageError",
    "LutError", "list_luts", "list_versions", "load_lut", "parse_runtime_dir_name",
    "runtime_dir_name", "summarize", "write_lut",
]  # fmt: skip
