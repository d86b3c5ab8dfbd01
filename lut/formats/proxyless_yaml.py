"""ProxylessNAS / once-for-all YAML latency tables.

One mapping per op, latencies in milliseconds:

    expanded_conv-input:56x56x24-output:28x28x40-expand:6-kernel:5-stride:2-idskip:0:
      count: 156        # timed runs
      mean: 5.6088      # ms
      var: 0.0878       # ms²

Op names of the ProxylessNAS mobile space and our ops:

    Conv           stem 3×3 conv (the space's stem block)      input:224x224x3-output:112x112x32
    expanded_conv  MBConv = our `mb_k{kernel}_e{expand}`; idskip:1 = residual (shapes match)
    Conv_1         1×1 head conv (the space's head block)
    Logits         global pool + fc = our `pool_fc`             input:7x7x1280-output:1000

Blocks that ProxylessNAS has no name for (FBNet `k3_e1_g2`, `skip`, ...) are written with our
block name as the op name and `-stride:s` (e.g. `k3_e1_g2-input:56x56x24-output:28x28x32-stride:2`);
the importer reads those back. Identity ops (`zero`, `skip` at matching shapes) are not written:
ProxylessNAS counts them as 0, and the importer adds them back as identity rows.

Exported values are what our LUT adds per op (`Lut.op_latency_us`); the per-invocation overhead
that our prediction adds once per network is folded into the `Conv` entry, so that the plain sum
ProxylessNAS computes equals `Lut.predict_us`. The header comment says so.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from lut.formats.base import ImportedLut, file_source, imported_runtime, op_row, register_format, rows_to_table
from lut.store import Lut, LutError
from search.space import Op, block_spec, get_space, parse_op_key
from search.space.spaces import Space

__all__ = ["ProxylessYaml", "yaml_key", "parse_yaml_key"]

CITATION = (
    "Cai, Zhu, Han. ProxylessNAS: Direct Neural Architecture Search on Target Task and "
    "Hardware. ICLR 2019 (mobile latency table, Google Pixel 1, TFLite)"
)
_ROLE_NAMES = {"stem": "Conv", "head": "Conv_1", "classifier": "Logits"}


def _hwc(h: int, w: int, c: int) -> str:
    return f"{h}x{w}x{c}"


def yaml_key(op: Op, role: str | None = None) -> str:
    """Our op → its ProxylessNAS key. `role` ("stem", "head", "classifier") picks the fixed names.

    yaml_key(Op("mb_k5_e6", 24, 56, 56, 40, 2))
      -> "expanded_conv-input:56x56x24-output:28x28x40-expand:6-kernel:5-stride:2-idskip:0"
    """
    out_h, out_w = op.output_shape[-2:] if len(op.output_shape) == 4 else (0, 0)
    inp = f"input:{_hwc(op.h, op.w, op.c_in)}"
    if role == "classifier":
        return f"Logits-{inp}-output:{op.c_out}"
    outp = f"output:{_hwc(out_h, out_w, op.c_out)}"
    if role in _ROLE_NAMES:
        return f"{_ROLE_NAMES[role]}-{inp}-{outp}"
    spec = block_spec(op.block)
    if spec.kind == "mb":
        idskip = int(op.c_in == op.c_out and op.stride == 1)
        return (f"expanded_conv-{inp}-{outp}-expand:{spec.expansion}-kernel:{spec.kernel}"
                f"-stride:{op.stride}-idskip:{idskip}")  # fmt: skip
    return f"{op.block}-{inp}-{outp}-stride:{op.stride}"


def parse_yaml_key(key: str) -> dict[str, Any]:
    """A ProxylessNAS key → {"op": name, "input": (h, w, c), "output": (h, w, c) or (c,), ...}.

    parse_yaml_key("Logits-input:7x7x1280-output:1000")
      -> {"op": "Logits", "input": (7, 7, 1280), "output": (1000,)}
    """
    name, *fields = key.split("-")
    out: dict[str, Any] = {"op": name}
    for f in fields:
        k, sep, v = f.partition(":")
        if not sep:
            raise ValueError(f"malformed ProxylessNAS latency key {key!r}: field {f!r} has no ':'")
        out[k] = tuple(int(x) for x in v.split("x")) if k in ("input", "output") else int(v)
    if "input" not in out or "output" not in out:
        raise ValueError(f"malformed ProxylessNAS latency key {key!r}: needs input: and output:")
    return out


def _op_for(entry: dict[str, Any], space: Space) -> tuple[Op | None, str]:
    """The op of our space an entry stands for, or None and the reason."""
    h, w, c_in = entry["input"]
    name = entry["op"]
    if name == "Logits":
        op = space.fixed_ops(c_in)["classifier"]
        want = Op("pool_fc", c_in, h, w, entry["output"][0], 1)
        return (op, "") if op == want else (None, f"classifier {want} is not {op}")
    oh, _ow, c_out = entry["output"]
    stride = entry.get("stride", max(1, h // oh))
    if name == "Conv":
        op = space.fixed_ops()["stem"]
        want = Op(op.block, c_in, h, w, c_out, stride)
        return (op, "") if op == want else (None, f"stem {want} does not match ours {op}")
    if name == "Conv_1":
        op = space.fixed_ops(c_out)["head"]
        want = Op(op.block, c_in, h, w, c_out, stride)
        return (op, "") if op == want else (None, f"head {want} does not match ours {op}")
    block = f"mb_k{entry.get('kernel')}_e{entry.get('expand')}" if name == "expanded_conv" else name
    try:
        op = Op(block, c_in, h, w, c_out, stride)
    except ValueError:
        return None, f"no block {block!r} in our registry"
    if name == "expanded_conv" and entry.get("idskip", 0) != int(c_in == c_out and stride == 1):
        return None, f"idskip {entry.get('idskip')} contradicts the shapes of {op.key}"
    return op, ""


def _space_from_entries(entries: dict[str, dict[str, Any]]) -> str:
    """proxyless_mobile at the stem's input resolution."""
    stems = [e for e in entries.values() if e["op"] == "Conv"]
    if not stems:
        raise LutError("the YAML table has no 'Conv' (stem) entry; pass the space explicitly")
    res = stems[0]["input"][0]
    return "proxyless_mobile" if res == 224 else f"proxyless_mobile-r{res}"


@register_format
class ProxylessYaml:
    name = "proxyless_yaml"
    suffixes = (".yaml", ".yml")
    can_export = True

    def read(
        self,
        path: Path,
        *,
        space: str | None = None,
        device_id: str = "pixel1-proxylessnas",
        runtime_dir: str = "tflite-t1",
        runtime: str = "tflite",
        citation: str = CITATION,
        **_: Any,
    ) -> list[ImportedLut]:
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise LutError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(raw, dict) or not raw:
            raise LutError(f"{path}: expected a mapping of latency keys to {{count, mean, var}}")
        entries = {}
        for key, val in raw.items():
            try:
                entries[key] = parse_yaml_key(str(key))
            except ValueError as e:
                raise LutError(f"{path}: {e}") from None
            if not isinstance(val, dict) or "mean" not in val:
                raise LutError(f"{path}: entry {key!r} has no 'mean' (ms)")
        sp = get_space(space or _space_from_entries(entries))
        wanted = {op.key for op in sp.unique_ops()}
        rows, notes, published = {}, [], {}
        for key, entry in entries.items():
            op, why = _op_for(entry, sp)
            if op is None or op.key not in wanted:
                notes.append(f"skipped {key}: {why or f'{op.key} is not an op of {sp.name}'}")
                continue
            val = raw[key]
            var = float(val["var"]) if val.get("var") is not None else math.nan
            rows[op.key] = op_row(op, mean_us=1000.0 * float(val["mean"]))
            published[op.key] = {
                "n": int(val.get("count", 1)),
                "std_us": 1000.0 * math.sqrt(var) if var >= 0 else None,
            }
        identity = [op for op in sp.unique_ops() if op.is_identity and op.key not in rows]
        for op in identity:
            rows[op.key] = op_row(op, mean_us=0.0, status="identity")
        if identity:
            notes.append(f"added {len(identity)} identity ops (zero/skip at matching shapes) at 0 µs")
        if not rows:
            raise LutError(f"{path}: no entry maps to an op of space {sp.name!r}")
        meta = {
            "device": {"device_id": device_id},
            "runtime": imported_runtime(runtime),
            "space": {"name": sp.name, "hash": sp.hash()},
            "overhead_us": 0.0,
            "published_stats": published,
            "source": {
                **file_source(path, self.name, citation),
                "samples": "one sample per op: the published mean (n 1); the source's own run count "
                "and spread are in published_stats",
                "threads": "not published; the t1 of the runtime dir is nominal",
            },
        }
        return [ImportedLut(device_id, sp.name, runtime_dir, rows_to_table(rows), meta, notes)]

    def write(self, lut: Lut, path: Path) -> None:
        space = get_space(lut.space)
        roles = {}
        for head in space.head_widths():
            for role, op in space.fixed_ops(head).items():
                roles[op.key] = role
        table = lut.table
        stem_key = space.fixed_ops()["stem"].key
        out: dict[str, dict[str, Any]] = {}
        for key in table.index:
            row = table.loc[key]
            if row["block"] == "overhead" or row["status"] in ("failed", "identity"):
                continue
            op = parse_op_key(key)
            role = roles.get(key)
            # the stem carries the once-per-network overhead, so the YAML sums to predict_us
            value_us = lut.predict_us([key]) if key == stem_key else lut.op_latency_us(key)
            # an imported LUT passes the source's own count and spread through; a measured one
            # gives its samples' count and spread
            pub = (lut.meta.get("published_stats") or {}).get(key) or {}
            std_us = pub.get("std_us", float(row["std_us"]))
            std_ms = (std_us if std_us is not None else math.nan) / 1000.0
            out[yaml_key(op, role if role != "pre" else None)] = {
                "count": int(pub.get("n", row["n"])),
                "mean": float(value_us) / 1000.0,
                "var": std_ms * std_ms if math.isfinite(std_ms) else None,
            }
        header = (
            f"# Latency table exported from LUT {lut.device_id}/{lut.space} v{lut.version} "
            f"({lut.meta.get('runtime', {}).get('name')}).\n"
            "# mean: ms per op with the per-invocation overhead subtracted; the Conv (stem) entry\n"
            "# also carries the overhead once, so summing a network's entries gives the LUT's\n"
            "# prediction. var: ms^2 of the raw op samples.\n"
        )
        path.write_text(header + yaml.safe_dump(out, sort_keys=True))
