"""Latency model: a LUT becomes a `[layers × blocks]` tensor in µs that search can differentiate.

    model = LatencyModel.load("luts/pixel7/fbnet/executorch-t1")   # or an id, or a version dir
    model.predict_us(arch)                       # == lut.predict_us([op.key for op in arch_ops(arch)])
    model.predict_batch_us(idx)                  # idx: LongTensor [N, layers] of block columns
    model.expected_us(masks)                     # Σ_l Σ_i m[l,i]·LUT[l,i] + fixed, differentiable

Columns follow the space's canonical candidate order (`Space.candidates_all`). A block that is
not a candidate at a layer (ProxylessNAS `zero` where a stage changes shape) is +inf in `table_us`
and False in `allowed`; strategies mask those entries out of their logits (−inf), so relaxed masks
put exactly zero weight there and `expected_us` uses the finite table (`table_finite_us`, 0 at
disallowed entries) to avoid 0·inf.

Latency of a network = Σ op latencies (each overhead-subtracted by the LUT) + the invocation
overhead once, exactly as `Lut.predict_us` computes it; `base_us` holds the fixed ops (stem, head,
classifier, …) plus that overhead, so `predict = base_us + Σ_l table_us[l, block_l]`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from search.space import Arch, Op, Space, arch_ops, get_space

if TYPE_CHECKING:  # the store is imported lazily so that search imports without lut
    from lut.store import Lut

__all__ = [
    "LatencyModel",
    "LatencyModelError",
    "resolve_lut",
    "check_proxy_space",
    "analytic_macs",
    "macs_latency_us",
    "write_synthetic_lut",
]

log = logging.getLogger(__name__)


class LatencyModelError(ValueError):
    """A LUT cannot serve as a latency model for the requested space."""


def resolve_lut(
    lut: str | Path | None = None,
    *,
    device_id: str | None = None,
    space: str | None = None,
    runtime: str | None = None,
    threads: int = 1,
    root: str | Path = "luts",
) -> "Lut":
    """Load a LUT from a path/id, or from device id + space + runtime (latest version)."""
    from lut.store import load_lut, runtime_dir_name

    if lut is not None:
        return load_lut(str(lut), root=root)
    if not (device_id and space and runtime):
        raise LatencyModelError(
            "name a LUT: either --lut PATH_OR_ID, or --device-id, --space and --runtime "
            "(the latest version of luts/<device_id>/<space>/<runtime>-t<threads>/ is used)"
        )
    return load_lut(f"{device_id}/{space}/{runtime_dir_name(runtime, threads)}", root=root)


def check_proxy_space(target: Space, proxy: Space) -> None:
    """The proxy must be the same family with the same layers and candidates per layer."""
    t_layers, p_layers = target.layers(), proxy.layers()
    if target.family != proxy.family or len(t_layers) != len(p_layers):
        raise LatencyModelError(
            f"proxy space {proxy.name!r} does not match the LUT space {target.name!r}: "
            f"{len(p_layers)} vs {len(t_layers)} searchable layers; use a proxy of the same "
            f"family, e.g. {target.family}-r32-w0.25"
        )
    for t, p in zip(t_layers, p_layers):
        if target.candidates(t) != proxy.candidates(p) or t.stride != p.stride:
            raise LatencyModelError(
                f"layer {t.index}: proxy {proxy.name!r} allows {proxy.candidates(p)} with stride "
                f"{p.stride}, the LUT space {target.name!r} {target.candidates(t)} with stride "
                f"{t.stride}; the proxy must keep the candidate lists and strides"
            )


@dataclass
class LatencyModel:
    """A LUT as tensors over one space. Pure: built from a loaded `Lut`, no file access."""

    space: Space  # the LUT's space (fixes the shapes the latencies belong to)
    table_us: torch.Tensor  # [layers, blocks] float64, overhead-subtracted op latency, +inf = n/a
    allowed: torch.Tensor  # [layers, blocks] bool: block is a candidate at that layer
    fixed_us: float  # Σ fixed ops (stem, pre, head, classifier) at the default head width
    overhead_us: float  # per-invocation overhead, added once per network
    lut: Any = field(default=None, repr=False)  # the `Lut` it came from (for other head widths)
    lut_info: dict[str, Any] = field(default_factory=dict)  # device id, runtime, version, hash
    correction: dict[str, Any] | None = None  # the validated correction folded in, if any

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def from_lut(cls, lut: "Lut", space: Space | str | None = None) -> "LatencyModel":
        """Check coverage of the space and build the tensors."""
        if not isinstance(space, Space):
            space = get_space(space or _lut_space_name(lut))
        _check_space_hash(lut, space)
        layers = space.layers()
        fixed = list(space.fixed_ops().values())
        needed = [layer.op(b).key for layer in layers for b in space.candidates(layer)]
        needed += [op.key for op in fixed]
        lut.check_coverage(needed)  # LutCoverageError listing every missing op
        cols = space.candidates_all
        table = torch.full((len(layers), len(cols)), math.inf, dtype=torch.float64)
        allowed = torch.zeros((len(layers), len(cols)), dtype=torch.bool)
        for layer in layers:
            for block in space.candidates(layer):
                j = cols.index(block)
                table[layer.index, j] = lut.op_latency_us(layer.op(block).key)
                allowed[layer.index, j] = True
        fixed_keys = [op.key for op in fixed]
        fixed_us = sum(lut.op_latency_us(k) for k in fixed_keys)
        # Whatever input shape the store attributes the overhead to, predict_us adds it once.
        overhead_us = float(lut.predict_us(fixed_keys)) - fixed_us
        return cls(space, table, allowed, float(fixed_us), overhead_us, lut, _lut_info(lut))

    def with_correction(self, name: str, coef: dict[str, float]) -> "LatencyModel":
        """Fold a correction of the additive sum (`lut.validate.CORRECTIONS`: a·Σ + c·computing ops
        + b) into the tensors. It is linear in the block choice, so every prediction (one arch, a
        batch, a relaxed mask) stays a table sum and stays differentiable."""
        a, c, b = _coefficients(coef)
        computing = torch.zeros_like(self.table_us)
        for layer in self.space.layers():
            for block in self.space.candidates(layer):
                computing[layer.index, self.blocks.index(block)] = float(not layer.op(block).is_identity)
        n_fixed = sum(not op.is_identity for op in self.space.fixed_ops().values())
        return replace(
            self,
            table_us=torch.where(self.allowed, a * self.table_us + c * computing, self.table_us),
            fixed_us=a * self.fixed_us + c * n_fixed,
            overhead_us=a * self.overhead_us + b,
            correction={"name": name, "coef": dict(coef)},
        )

    def with_validated_correction(self) -> "LatencyModel":
        """The LUT's own validated correction (`lut validate --correction ...` stored it in
        validation.json) folded in; unchanged when the LUT was never validated or the validation
        kept the plain additive sum."""
        from lut.validate import read_validation

        if self.lut is None or not getattr(self.lut, "path", None):
            return self
        report = read_validation(self.lut.path)
        name = (report or {}).get("prediction_model", "additive")
        if name == "additive":
            return self
        try:
            coef = report["corrections"][name]["coef"]
        except (KeyError, TypeError):
            raise LatencyModelError(
                f"{self.lut.path}/validation.json names correction {name!r} but has no coefficients for it; "
                "re-run `python -m lut validate`"
            ) from None
        log.info("latency: using %s's validated %s correction %s", self.lut_info.get("id"), name, coef)
        return self.with_correction(name, coef)

    @classmethod
    def load(cls, lut: str | Path, *, root: str | Path = "luts") -> "LatencyModel":
        """`from_lut(resolve_lut(lut, root=root))`: a version dir, runtime dir or LUT id."""
        return cls.from_lut(resolve_lut(lut, root=root))

    # --- indexing ----------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return self.table_us.shape[0]

    @property
    def blocks(self) -> tuple[str, ...]:
        return self.space.candidates_all

    @property
    def base_us(self) -> float:
        """Fixed ops + overhead: the latency of a network whose searchable layers cost 0."""
        return self.fixed_us + self.overhead_us

    @property
    def table_finite_us(self) -> torch.Tensor:
        """`table_us` with 0 where a block is not allowed (those get zero mask weight)."""
        return torch.where(self.allowed, self.table_us, torch.zeros_like(self.table_us))

    def indices(self, blocks: tuple[str, ...] | list[str]) -> torch.Tensor:
        """Block names → column indices (LongTensor [layers])."""
        if len(blocks) != self.num_layers:
            raise LatencyModelError(
                f"{len(blocks)} blocks given, the space {self.space.name!r} has "
                f"{self.num_layers} searchable layers"
            )
        return torch.tensor([self.blocks.index(b) for b in blocks], dtype=torch.long)

    def arch(self, idx: torch.Tensor | list[int], **kw: Any) -> Arch:
        """Column indices → an `Arch` of the LUT's space (validated)."""
        blocks = tuple(self.blocks[int(i)] for i in idx)
        return Arch(self.space.name, blocks, **kw).validate(self.space)

    # --- prediction --------------------------------------------------------------------------
    def predict_us(self, arch: Arch | tuple[str, ...] | list[str]) -> float:
        """Predicted latency of one arch; equals `Lut.predict_us` of its op keys."""
        if isinstance(arch, Arch):
            if arch.head_channels not in (None, self.space.default_head):
                # A named arch with its own head width: sum its ops through the LUT itself.
                ops = arch_ops(arch, self.space)
                raw = float(self.lut.predict_us([op.key for op in ops]))
                if self.correction is None:
                    return raw
                a, c, b = _coefficients(self.correction["coef"])
                return a * raw + c * sum(not op.is_identity for op in ops) + b
            blocks = arch.blocks
        else:
            blocks = tuple(arch)
        return float(self.predict_batch_us(self.indices(blocks)[None])[0])

    def predict_batch_us(self, idx: torch.Tensor) -> torch.Tensor:
        """Vectorized: LongTensor [N, layers] of block columns → float64 [N] µs (inf = invalid)."""
        if idx.ndim != 2 or idx.shape[1] != self.num_layers:
            raise LatencyModelError(
                f"expected indices of shape [N, {self.num_layers}], got {tuple(idx.shape)}"
            )
        rows = torch.arange(self.num_layers).expand_as(idx)
        return self.table_us[rows, idx.cpu()].sum(dim=1) + self.base_us

    def expected_us(self, masks: torch.Tensor) -> torch.Tensor:
        """Σ_l Σ_i m[l,i]·LUT[l,i] + fixed ops + overhead; differentiable in `masks` ([L,B] or
        [N,L,B]); masks must be zero where a block is not allowed."""
        table = self.table_finite_us.to(device=masks.device, dtype=masks.dtype)
        return (masks * table).sum(dim=(-2, -1)) + self.base_us

    def min_max_us(self) -> tuple[float, float]:
        """Fastest and slowest network the space allows."""
        lo = self.table_us.min(dim=1).values.sum().item()
        hi = self.table_finite_us.max(dim=1).values.sum().item()
        return lo + self.base_us, hi + self.base_us

    def sample_uniform(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """N archs with each layer's block drawn uniformly among its candidates: [N, layers]."""
        probs = self.allowed.double().expand(n, -1, -1).reshape(n * self.num_layers, -1)
        return torch.multinomial(probs, 1, generator=generator).view(n, self.num_layers)


def _lut_space_name(lut: "Lut") -> str:
    s = lut.space
    return s if isinstance(s, str) else s["name"]


def _check_space_hash(lut: "Lut", space: Space) -> None:
    meta_space = (lut.meta or {}).get("space") or {}
    lut_name = meta_space.get("name", _lut_space_name(lut))
    if lut_name != space.name:
        raise LatencyModelError(
            f"the LUT was measured for space {lut_name!r}, not {space.name!r}; profile that space "
            "or search the LUT's own space"
        )
    lut_hash = meta_space.get("hash")
    if lut_hash and lut_hash != space.hash():
        raise LatencyModelError(
            f"the LUT's space hash {lut_hash} differs from {space.name!r} as defined now "
            f"({space.hash()}): the blocks or shapes changed since it was measured; re-profile"
        )


def _coefficients(coef: dict[str, float]) -> tuple[float, float, float]:
    """(a, c, b) of a·predicted_us + c·num_ops + b from a correction's coefficient dict."""
    unknown = set(coef) - {"predicted_us", "num_ops", "1"}
    if unknown:
        raise LatencyModelError(f"unknown correction features {sorted(unknown)}")
    return float(coef.get("predicted_us", 1.0)), float(coef.get("num_ops", 0.0)), float(coef.get("1", 0.0))


def _lut_info(lut: "Lut") -> dict[str, Any]:
    meta = lut.meta or {}
    runtime = meta.get("runtime") or {}
    return {
        "device_id": lut.device_id,
        "space": _lut_space_name(lut),
        "runtime": runtime.get("name"),
        "threads": runtime.get("threads"),
        "dtype": runtime.get("dtype"),
        "version": lut.version,
        "content_hash": meta.get("content_hash"),
        "id": getattr(lut, "id", None),
        "path": str(getattr(lut, "path", "") or ""),
    }


# --- synthetic LUTs: tests, benchmarks and dry runs without a measured device ----------------------
def analytic_macs(op: Op) -> int:
    """Multiply-accumulates of one op from its block spec and shape (convs and fc only)."""
    from search.space import block_spec

    spec = block_spec(op.block)
    ho, wo = -(-op.h // op.stride), -(-op.w // op.stride)
    if spec.kind in ("ir", "mb"):
        mid = op.c_in * spec.expansion
        g = spec.groups
        expand = 0 if spec.kind == "mb" and spec.expansion == 1 else op.h * op.w * op.c_in * mid // g
        return expand + ho * wo * mid * spec.kernel**2 + ho * wo * mid * op.c_out // g
    if spec.kind == "skip":
        return 0 if op.is_identity else ho * wo * op.c_in * op.c_out
    if spec.kind == "conv":
        return ho * wo * op.c_in * op.c_out * spec.kernel**2
    if spec.kind == "pool_fc":
        return op.c_in * op.c_out
    return 0


def macs_latency_us(op: Op, macs_per_us: float = 1e4, per_op_us: float = 1.0) -> float:
    """A synthetic latency: `per_op_us` + MACs at `macs_per_us` (1e4 = 10 GMAC/s)."""
    return per_op_us + analytic_macs(op) / macs_per_us


def write_synthetic_lut(
    root: str | Path,
    space: str,
    latency_us: Callable[[Op], float] = macs_latency_us,
    *,
    device_id: str = "synthetic",
    runtime: str = "synthetic",
    overhead_us: float = 0.0,
) -> Path:
    """Write a LUT of `space` whose op latencies come from `latency_us(op)` (plus `overhead_us`
    per invocation, stored as overhead rows) through `lut.store.write_lut`; returns its dir.
    Three samples per op at ±2 % around the value, so the median is exactly the value."""
    import pandas as pd

    from lut.stats import summarize
    from lut.store import runtime_dir_name, write_lut
    from search.space import overhead_op

    sp = get_space(space)
    rows, samples = [], []

    def add(op: Op, value_us: float | None) -> None:
        shape = {"c_in": op.c_in, "h": op.h, "w": op.w, "c_out": op.c_out, "stride": op.stride}
        if value_us is None:
            stats = {"median_us": 0.0, "mean_us": 0.0, "std_us": 0.0, "min_us": 0.0,
                     "p10_us": 0.0, "p90_us": 0.0, "n": 0}  # fmt: skip
            rows.append({"op_key": op.key, "block": op.block, **shape, "status": "identity",
                         **stats, "error": ""})  # fmt: skip
            return
        values = [value_us * 0.98, value_us, value_us * 1.02]
        rows.append({"op_key": op.key, "block": op.block, **shape, "status": "ok",
                     **summarize(values), "error": ""})  # fmt: skip
        samples.extend({"op_key": op.key, "round": 0, "sample": i, "latency_us": v}
                       for i, v in enumerate(values))  # fmt: skip

    shapes: dict[str, Op] = {}
    for op in sp.unique_ops():
        if op.is_identity:
            add(op, None)
            continue
        add(op, float(latency_us(op)) + overhead_us)
        ovh = overhead_op(op)
        shapes.setdefault(ovh.key, ovh)
    for ovh in shapes.values():
        add(ovh, overhead_us)
    meta = {
        "device": {"device_id": device_id, "synthetic": True},
        "runtime": {"name": runtime, "version": "synthetic", "delegate": None, "threads": 1,
                    "core_mask": None, "dtype": "fp32"},  # fmt: skip
        "space": {"name": sp.name, "hash": sp.hash()},
        "exporters": {},
        "protocol": {"synthetic": True},
        "overhead_us": overhead_us,
        "failed_ops": [],
    }
    return write_lut(
        root,
        device_id=device_id,
        space=sp.name,
        runtime_dir=runtime_dir_name(runtime, 1),
        table=pd.DataFrame(rows),
        samples=pd.DataFrame(samples),
        meta=meta,
    )
