"""HW-NAS-Bench FBNet-space per-block latency tables (import only).

Columns (see tests/data/reference/README.md): device, dataset, input_res, layer_index, stage, block,
latency_ms, H_in, W_in, Cin, Cout, stride, expansion, kernel, group, lut_key.

Mapping to our ops:
- searchable rows (layer_index 0–21): block names k3_e1 … skip are ours, at the row's shape;
  layers of equal shape share an op (their published values are equal, which is checked);
- `stem` → the space's stem conv, `head_conv` → its 1×1 head conv at the row's width;
- `avgpool` + `fc` → our single `pool_fc` op (their latencies are summed).

Datasets: `ImageNet` rows are the 224×224 space "fbnet". `cifar100` rows are 32×32 with HW-NAS-
Bench's CIFAR strides (stem stride 1, head 1504, fc 100); they are imported only if every row's
shape matches an op of our space at that resolution ("fbnet-r32"), and skipped with a note
otherwise. Published skip rows are measured values and kept as such, also where our `skip` is
an identity.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from lut.formats.base import ImportedLut, file_source, imported_runtime, op_row, register_format, rows_to_table
from lut.store import Lut, LutError
from search.space import FBNET_BLOCKS, Op, get_space
from search.space.spaces import Space

__all__ = ["HwNasBench", "RUNTIMES"]

CITATION = (
    "Li et al. HW-NAS-Bench: Hardware-Aware Neural Architecture Search Benchmark. ICLR 2021 "
    "(v1.0 FBNet-space per-block lookup tables)"
)
# Runtime names by HW-NAS-Bench device where our data's README states it; others are recorded as
# "hwnasbench" (the published numbers, backend not stated in our copy of the data).
RUNTIMES = {"pixel3": "tflite"}
_COLUMNS = ("device", "dataset", "input_res", "layer_index", "block", "latency_ms",
            "H_in", "W_in", "Cin", "Cout", "stride")  # fmt: skip
_REL_TOL = 1e-9  # equal-shape layers must publish the same value


def _space_name(input_res: int) -> str:
    return "fbnet" if input_res == 224 else f"fbnet-r{input_res}"


def _row_op(row: pd.Series, space: Space, head: int) -> tuple[str, Op]:
    """(role, op) of one CSV row; role is "body", "stem", "head" or "pool_fc"."""
    h, w, c_in, c_out = int(row["H_in"]), int(row["W_in"]), int(row["Cin"]), int(row["Cout"])
    li = str(row["layer_index"])
    if li == "stem":
        return "stem", Op(space.stem_block, c_in, h, w, c_out, int(row["stride"]))
    if li == "head_conv":
        return "head", Op(space.head_block, c_in, h, w, c_out, 1)
    if li in ("avgpool", "fc"):
        return "pool_fc", Op("pool_fc", head, 0, 0, 0, 1)  # completed by the caller
    if row["block"] not in FBNET_BLOCKS:
        raise LutError(f"HW-NAS-Bench row {row['lut_key']}: unknown block {row['block']!r}")
    return "body", Op(str(row["block"]), c_in, h, w, c_out, int(row["stride"]))


def _import_group(g: pd.DataFrame, space: Space) -> tuple[dict[str, dict], list[str]]:
    """Rows of one (device, dataset) → op rows of `space`; raises LutError on any mismatch."""
    wanted = {op.key for op in space.unique_ops()}
    head_rows = g[g["layer_index"] == "head_conv"]
    if len(head_rows) != 1:
        raise LutError(f"expected one head_conv row, found {len(head_rows)}")
    head = int(head_rows.iloc[0]["Cout"])
    rows: dict[str, dict[str, Any]] = {}
    pool_fc_ms, pool_h = 0.0, None
    for _, row in g.iterrows():
        role, op = _row_op(row, space, head)
        ms = float(row["latency_ms"])
        if role == "pool_fc":
            pool_fc_ms += ms
            if row["layer_index"] == "avgpool":
                pool_h = (int(row["H_in"]), int(row["W_in"]))
            continue
        if op.key not in wanted:
            raise LutError(f"row {row['lut_key']} → {op.key}, not an op of {space.name}")
        if op.key in rows:
            prev = rows[op.key]["mean_us"]
            if not math.isclose(prev, 1000.0 * ms, rel_tol=_REL_TOL):
                raise LutError(f"layers sharing {op.key} publish different values")
            continue
        rows[op.key] = op_row(op, mean_us=1000.0 * ms)
    if pool_h is None:
        raise LutError("no avgpool row")
    fc = g[g["layer_index"] == "fc"]
    num_classes = int(fc.iloc[0]["Cout"]) if len(fc) else -1
    op = Op("pool_fc", head, pool_h[0], pool_h[1], num_classes, 1)
    if op.key not in wanted:
        raise LutError(f"avgpool+fc → {op.key}, not an op of {space.name}")
    rows[op.key] = op_row(op, mean_us=1000.0 * pool_fc_ms)
    return rows, [f"pool_fc = avgpool + fc ({op.key})"]


@register_format
class HwNasBench:
    name = "hwnasbench"
    suffixes = (".csv",)
    can_export = False

    def read(
        self,
        path: Path,
        *,
        device_id: str | None = None,
        runtime_dir: str | None = None,
        citation: str = CITATION,
        **_: Any,
    ) -> list[ImportedLut]:
        try:
            df = pd.read_csv(path, dtype={"layer_index": str})
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise LutError(f"{path}: not a readable CSV ({e})") from None
        missing = [c for c in _COLUMNS if c not in df.columns]
        if missing:
            raise LutError(f"{path}: not an HW-NAS-Bench table, lacks {', '.join(missing)}")
        source = file_source(path, self.name, citation)
        out, skipped = [], []
        for (device, dataset, res), g in df.groupby(["device", "dataset", "input_res"], sort=True):
            space = get_space(_space_name(int(res)))
            try:
                rows, notes = _import_group(g, space)
            except LutError as e:
                skipped.append(f"{device}/{dataset}: shapes do not match space {space.name} ({e})")
                continue
            missing_ops = [
                op.key for op in space.unique_ops() if op.key not in rows and not op.is_identity
            ]
            if missing_ops:
                notes.append(f"not published (LUT will not cover them): {', '.join(missing_ops)}")
            dev = device_id or f"{device}-hwnasbench"
            rt = RUNTIMES.get(str(device), "hwnasbench")
            meta = {
                "device": {"device_id": dev, "hwnasbench_device": str(device)},
                "runtime": imported_runtime(rt),
                "space": {"name": space.name, "hash": space.hash()},
                "overhead_us": 0.0,
                "source": {
                    **source,
                    "dataset": str(dataset),
                    "samples": "one row per op holding the published latency; no raw samples. "
                    "median/mean/min/p10/p90 = the published value, std_us 0, n 1",
                    "threads": "not published; the t1 of the runtime dir is nominal",
                },
            }
            out.append(
                ImportedLut(
                    dev, space.name, runtime_dir or f"{rt}-t1", rows_to_table(rows),
                    meta, notes,
                )  # fmt: skip
            )
        if not out:
            raise LutError(f"{path}: no dataset of the file maps to our spaces: {'; '.join(skipped)}")
        for imp in out:
            imp.notes.extend(skipped)
        return out

    def write(self, lut: Lut, path: Path) -> None:
        raise LutError("HW-NAS-Bench tables are import only; export to flat_csv or proxyless_yaml")
