"""Other LUT formats: a registry of importers/exporters, one module per format.

    FORMATS["proxyless_yaml"]  ProxylessNAS / once-for-all YAML latency table (import, export)
    FORMATS["flat_csv"]        one row per op with device, space and runtime columns (both)
    FORMATS["hwnasbench"]      HW-NAS-Bench FBNet-space per-block CSV (import only)

A format reads a file into `ImportedLut`s (table rows in the store's columns, keyed by our op
keys, plus metadata that records the source) and, where it can, writes a stored `Lut`. The store
writes what an importer returns (`import_file`), so an imported LUT is an ordinary versioned LUT
whose `meta["source"]` says where its numbers came from.

Adding a format is adding one module here with a class registered by `@register_format`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lut.formats.base import (
    FORMATS,
    ROW_COLUMNS,
    ImportedLut,
    LutFormat,
    file_source,
    get_format,
    imported_runtime,
    op_row,
    published_samples,
    register_format,
    rows_to_table,
)
from lut.store import Lut, LutError, write_lut

__all__ = [
    "FORMATS",
    "ImportedLut",
    "LutFormat",
    "register_format",
    "get_format",
    "import_file",
    "export_lut",
    "op_row",
    "file_source",
    "imported_runtime",
    "rows_to_table",
    "ROW_COLUMNS",
]

logger = logging.getLogger(__name__)


def import_file(
    path: str | Path, fmt: str, root: str | Path, **options: Any
) -> list[Path]:
    """Read `path` with format `fmt` and write each LUT it holds into the store at `root`."""
    path = Path(path)
    if not path.is_file():
        raise LutError(f"cannot import {path}: no such file")
    written = []
    for imp in get_format(fmt).read(path, **options):
        for note in imp.notes:
            logger.info("%s: %s", path.name, note)
        meta = {**imp.meta, "import_notes": imp.notes, "provenance": "imported"}
        written.append(
            write_lut(
                root,
                device_id=imp.device_id,
                space=imp.space,
                runtime_dir=imp.runtime_dir,
                table=imp.table,
                samples=published_samples(imp.table),
                meta=meta,
            )
        )
    return written


def export_lut(lut: Lut, fmt: str, path: str | Path) -> Path:
    """Write a stored LUT to `path` in format `fmt`."""
    f = get_format(fmt)
    if not f.can_export:
        raise LutError(f"format {fmt!r} is import only; export to one of "
                       f"{', '.join(n for n, g in FORMATS.items() if g.can_export)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f.write(lut, path)
    return path


# Registration happens on import of each format module.
from lut.formats import flat_csv, hwnasbench, proxyless_yaml  # noqa: E402,F401
