"""Flat CSV: one row per op, with the LUT's identity on every row so that files concatenate.

Columns: device_id, space, runtime, runtime_dir, threads, dtype, lut_version, op_key, then the
store's table columns (block, c_in, h, w, c_out, stride, status, median_us, mean_us, std_us,
min_us, p10_us, p90_us, n, error) and `latency_us`, what the LUT adds for the op
(`Lut.op_latency_us`: the per-invocation overhead handled as the LUT predicts). Overhead rows
(block "overhead") are kept, so the file holds everything needed to rebuild the LUT.

Importing groups rows by (device_id, space, runtime_dir) and writes one LUT per group.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from lut.formats.base import ROW_COLUMNS, ImportedLut, file_source, imported_runtime, register_format
from lut.schema import EXTRA_COLUMNS
from lut.store import Lut, LutError
from search.space import get_space

__all__ = ["FlatCsv"]

ID_COLUMNS = ["device_id", "space", "runtime", "runtime_dir", "threads", "dtype", "lut_version"]


@register_format
class FlatCsv:
    name = "flat_csv"
    suffixes = (".csv",)
    can_export = True

    def read(self, path: Path, *, citation: str = "", **_: Any) -> list[ImportedLut]:
        try:
            df = pd.read_csv(path, dtype={"op_key": str, "error": str})
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise LutError(f"{path}: not a readable CSV ({e})") from None
        missing = [c for c in ("device_id", "space", "runtime_dir", "op_key", *ROW_COLUMNS)
                   if c not in df.columns and c != "error" and c not in EXTRA_COLUMNS]  # fmt: skip
        if missing:
            raise LutError(f"{path}: flat CSV lacks columns {', '.join(missing)}")
        if "error" not in df.columns:
            df["error"] = ""
        df = df.assign(**{c: float("nan") for c in EXTRA_COLUMNS if c not in df.columns})
        df["error"] = df["error"].fillna("").astype(str)
        out = []
        for (device_id, space, runtime_dir), g in df.groupby(
            ["device_id", "space", "runtime_dir"], sort=True
        ):
            sp = get_space(str(space))
            table = g.set_index("op_key")[ROW_COLUMNS].sort_index()
            first = g.iloc[0]
            threads = first.get("threads")
            meta = {
                "device": {"device_id": str(device_id)},
                "runtime": {
                    **imported_runtime(str(first.get("runtime", ""))),
                    "threads": int(threads) if pd.notna(threads) else None,
                    "dtype": str(first.get("dtype", "fp32")),
                },
                "space": {"name": sp.name, "hash": sp.hash()},
                "source": {
                    **file_source(path, self.name, citation),
                    "lut_version": _int_or_none(first.get("lut_version")),
                    "samples": "one row per op holding the mean; no raw samples",
                },
            }
            out.append(ImportedLut(str(device_id), sp.name, str(runtime_dir), table, meta, []))
        if not out:
            raise LutError(f"{path}: no rows")
        return out

    def write(self, lut: Lut, path: Path) -> None:
        rt = lut.meta.get("runtime", {})
        table = lut.table[ROW_COLUMNS].copy()
        latency = []
        for key in table.index:
            if table.at[key, "block"] == "overhead" or table.at[key, "status"] == "failed":
                latency.append(math.nan)
            else:
                latency.append(float(lut.op_latency_us(key)))
        table["latency_us"] = latency
        ids = {
            "device_id": lut.device_id,
            "space": lut.space,
            "runtime": rt.get("name"),
            "runtime_dir": lut.runtime_dir,
            "threads": rt.get("threads"),
            "dtype": rt.get("dtype"),
            "lut_version": lut.version,
        }
        flat = table.reset_index().rename(columns={table.index.name or "index": "op_key"})
        for i, (k, v) in enumerate(ids.items()):
            flat.insert(i, k, v)
        flat.to_csv(path, index=False)


def _int_or_none(v: Any) -> int | None:
    return int(v) if v is not None and pd.notna(v) else None
