"""What every LUT format module shares: the registry, the imported-LUT record and row helpers.

The format modules (`flat_csv`, `hwnasbench`, `proxyless_yaml`) import this module and register
themselves in `FORMATS`; `lut.formats` imports them all and re-exports these names.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from lut.schema import TABLE_COLUMNS
from lut.stats import STAT_COLUMNS, summarize
from lut.store import Lut, LutError
from search.space import Op

logger = logging.getLogger(__name__)

# The store's table columns without op_key (the index of the frames built here).
ROW_COLUMNS = [c for c in TABLE_COLUMNS if c != "op_key"]


@dataclass(frozen=True)
class ImportedLut:
    """One LUT read from a foreign file, ready for `write_lut`."""

    device_id: str
    space: str
    runtime_dir: str
    table: pd.DataFrame  # indexed by op key, ROW_COLUMNS
    meta: dict[str, Any]  # device, runtime, space, source, overhead_us ...
    notes: list[str] = field(default_factory=list)  # what was skipped or assumed, and why


@runtime_checkable
class LutFormat(Protocol):
    name: str  # registry key, the `--format` value
    suffixes: tuple[str, ...]  # file suffixes it reads/writes, first = default for export
    can_export: bool

    def read(self, path: Path, **options: Any) -> list[ImportedLut]:
        """Parse `path` into LUTs; unknown or unmappable entries are skipped with a note."""
        ...

    def write(self, lut: Lut, path: Path) -> None:
        """Write `lut` to `path` in this format (formats with can_export=False raise LutError)."""
        ...


FORMATS: dict[str, LutFormat] = {}


def register_format(cls: type) -> type:
    """Class decorator: instantiate and register a format under `cls.name`."""
    fmt = cls()
    if fmt.name in FORMATS:
        raise ValueError(f"LUT format {fmt.name!r} is already registered")
    FORMATS[fmt.name] = fmt
    return cls


def get_format(name: str) -> LutFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise LutError(f"unknown LUT format {name!r}; known formats: {', '.join(FORMATS)}") from None


def op_row(op: Op, *, mean_us: float, status: str = "ok") -> dict[str, Any]:
    """A table row for a published value, of which only the mean is known.

    The statistics are those of the one sample an imported LUT stores (the published mean): n 1,
    std 0, median/min/p10/p90 = the mean, so the row and its samples agree. What the source
    published about its own measurement (its run count, its spread) goes to the LUT's metadata
    (`published_stats`). Identity rows have all statistics 0 and n 0.
    """
    if status == "identity":
        stats: dict[str, Any] = {c: 0.0 for c in STAT_COLUMNS}
        stats["n"] = 0
    else:
        stats = summarize([mean_us])
    shape = {"c_in": op.c_in, "h": op.h, "w": op.w, "c_out": op.c_out, "stride": op.stride}
    return {"block": op.block, **shape, "status": status, **stats, "error": ""}


def rows_to_table(rows: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """op key → row dicts → a table in the store's columns, sorted by key."""
    df = pd.DataFrame.from_dict(rows, orient="index", columns=ROW_COLUMNS)
    df.index.name = "op_key"
    return df.sort_index()


def imported_runtime(name: str) -> dict[str, Any]:
    """`meta["runtime"]` of an imported LUT: only the runtime's name is known."""
    return {"name": name, "version": None, "delegate": None, "threads": None,
            "core_mask": None, "dtype": "fp32"}  # fmt: skip


def file_source(path: Path, fmt: str, citation: str) -> dict[str, Any]:
    """`meta["source"]` of an imported LUT: format, file name, sha256 and citation."""
    return {
        "format": fmt,
        "file": path.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "citation": citation,
    }


def published_samples(table: pd.DataFrame) -> pd.DataFrame:
    """Imported LUTs have no raw samples: one row per op holding the published mean."""
    ok = table[table["status"] == "ok"]
    return pd.DataFrame(
        {"op_key": ok.index, "round": 0, "sample": 0, "latency_us": ok["mean_us"].astype(float).values}
    )
