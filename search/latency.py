"""Latency model: a LUT becomes a `[layers × blocks]` tensor in µs that search can differentiate.

    model = LatencyModel.load("luts/pixel7/fbnet/executorch-t1")   # or an id, or a version dir
    model.predict_us(arch)                       # the LUT's prediction of one arch
    model.predict_batch_us(idx)                  # idx: LongTensor [N, layers] of block columns
    model.expected_us(masks)                     # Σ_l Σ_i m[l,i]·LUT[l,i] + fixed, differentiable
    model.with_validated_correction()            # the same with the LUT's validated correction
    LatencyModel.for_space(lut, "fbnet-r160-w0.75")  # another resolution/width: ops the LUT lacks
                                                 # from its predictor (`lut fit`); predicted_ops(arch)
    model.sample_near(n, target_us)              # random archs whose latencies centre on a target

Without a correction, `predict_us(arch)` equals `Lut.predict_us` of the arch's op keys (the
additive sum); with one (`lut.correction.Correction`, folded in per op, so every prediction stays
a table sum and stays differentiable) it equals `correction.predict_us(lut, keys)`, which is what
`python -m lut predict` prints.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lut.correction import Correction, validated_correction
from lut.predictor import PredictedLut, predicted_lut
from lut.store import Lut, load_lut, runtime_dir_name
from search.space import Arch, Space, arch_ops, get_space

__all__ = [
    "LatencyModel",
    "LatencyModelError",
    "resolve_lut",
    "check_proxy_space",
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
) -> Lut:
    """Load a LUT from a path/id, or from device id + space + runtime (latest version)."""
    if lut is not None:
        return load_lut(str(lut), root=root)
    if not (device_id and space and runtime):
        raise LatencyModelError(
            "name a LUT: either --lut PATH_OR_ID, or --device-id, --space and --runtime "
            "(the latest version of luts/<device_id>/<space>/<runtime>-t<threads>/ is used)"
        )
    return load_lut(f"{device_id}/{space}/{runtime_dir_name(runtime, threads)}", root=root)


def check_proxy_space(target: Space, proxy: Space) -> None:
    """The proxy must be the same family with the same layers and candidates per layer; it may
    run a layer at stride 1 where the LUT's has 2 (a reduced-stride proxy), never the reverse."""
    t_layers, p_layers = target.layers(), proxy.layers()
    if target.family != proxy.family or len(t_layers) != len(p_layers):
        raise LatencyModelError(
            f"proxy space {proxy.name!r} does not match the LUT space {target.name!r}: "
            f"{len(p_layers)} vs {len(t_layers)} searchable layers; use a proxy of the same "
            f"family, e.g. {target.family}-r32-w0.25"
        )
    for t, p in zip(t_layers, p_layers):
        if target.candidates(t) != proxy.candidates(p) or p.stride > t.stride:
            raise LatencyModelError(
                f"layer {t.index}: proxy {proxy.name!r} allows {proxy.candidates(p)} with stride "
                f"{p.stride}, the LUT space {target.name!r} {target.candidates(t)} with stride "
                f"{t.stride}; the proxy must keep the candidate lists and no stride may grow"
            )


@dataclass
class LatencyModel:
    """A LUT as tensors over one space. Pure: built from a loaded `Lut`, no file access."""

    space: Space  # the LUT's space (fixes the shapes the latencies belong to)
    table_us: torch.Tensor  # [layers, blocks] float64, µs each op adds, +inf = n/a
    allowed: torch.Tensor  # [layers, blocks] bool: block is a candidate at that layer
    fixed_us: float  # Σ fixed ops (stem, pre, head, classifier) at the default head width
    overhead_us: float  # what a network adds once (the per-invocation overhead, corrected)
    lut: Any = field(default=None, repr=False)  # the `Lut` it came from (for other head widths)
    lut_info: dict[str, Any] = field(default_factory=dict)  # device id, runtime, version, hash
    correction: Correction | None = None  # the correction folded in, if any

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def from_lut(
        cls, lut: Lut, space: Space | str | None = None, correction: Correction | None = None
    ) -> "LatencyModel":
        """Check coverage of the space and build the tensors: each (layer, block) entry is what
        that op adds to a network's prediction (`Lut.op_latency_us`, or `correction.op_us`)."""
        if not isinstance(space, Space):
            space = get_space(space or _lut_space_name(lut))
        _check_space_hash(lut, space)
        layers = space.layers()
        fixed = list(space.fixed_ops().values())
        needed = [layer.op(b).key for layer in layers for b in space.candidates(layer)]
        needed += [op.key for op in fixed]
        lut.check_coverage(needed)  # LutCoverageError listing every missing op
        op_us = lut.op_latency_us if correction is None else (lambda k: correction.op_us(lut, k))
        cols = space.candidates_all
        table = torch.full((len(layers), len(cols)), math.inf, dtype=torch.float64)
        allowed = torch.zeros((len(layers), len(cols)), dtype=torch.bool)
        for layer in layers:
            for block in space.candidates(layer):
                j = cols.index(block)
                table[layer.index, j] = op_us(layer.op(block).key)
                allowed[layer.index, j] = True
        fixed_keys = [op.key for op in fixed]
        fixed_us = float(sum(op_us(k) for k in fixed_keys))
        if correction is None:  # whatever input shape the store attributes it to, added once
            once_us = float(lut.predict_us(fixed_keys)) - float(sum(lut.op_latency_us(k) for k in fixed_keys))
        else:
            once_us = correction.once_us(lut, fixed_keys[0])
        return cls(space, table, allowed, fixed_us, once_us, lut, _lut_info(lut), correction)

    def with_correction(self, correction: Correction | None) -> "LatencyModel":
        """The same LUT with `correction` folded in (None: the plain additive sum)."""
        return LatencyModel.from_lut(self.lut, self.space, correction)

    def with_validated_correction(self) -> "LatencyModel":
        """The LUT's own validated correction (`lut validate --correction ...` stored it in
        validation.json) folded in; unchanged when the LUT was never validated or the validation
        kept the plain additive sum."""
        if self.lut is None or not getattr(self.lut, "path", None):
            return self
        corr = validated_correction(self.lut)
        if corr is None:
            return self
        log.info("latency: using %s's validated %s correction %s", self.lut_info.get("id"), corr.name, dict(corr.coef))
        return self.with_correction(corr)

    @property
    def correction_info(self) -> dict[str, Any] | None:
        """The folded-in correction as JSON (arch.json records it), or None."""
        return None if self.correction is None else self.correction.to_dict()

    @classmethod
    def for_space(cls, lut: Lut, space: str | None = None) -> LatencyModel:
        """`from_lut` for `space` (default: the LUT's own): a space the LUT does not cover is
        filled in by the predictor `lut fit` stored beside it (`lut.predictor.predicted_lut`;
        the raw additive sum, no correction); without one the coverage error stands."""
        if space is None or space == _lut_space_name(lut):
            return cls.from_lut(lut)
        return cls.from_lut(predicted_lut(lut, space))

    def predicted_ops(self, arch: Arch | tuple[str, ...] | list[str]) -> int:
        """How many of an arch's ops come from a predictor rather than a measurement (0 for a
        measured LUT)."""
        if not isinstance(self.lut, PredictedLut):
            return 0
        if not isinstance(arch, Arch):
            arch = Arch(self.space.name, tuple(arch))
        return self.lut.predicted_ops([op.key for op in arch_ops(arch, self.space)])

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
        """Predicted latency of one arch: `Lut.predict_us` of its op keys, or with the folded-in
        correction `correction.predict_us(lut, keys)` (see the module docstring)."""
        if isinstance(arch, Arch):
            if arch.head_channels not in (None, self.space.default_head):
                # A named arch with its own head width: sum its ops through the LUT itself.
                keys = [op.key for op in arch_ops(arch, self.space)]
                if self.correction is None:
                    return float(self.lut.predict_us(keys))
                return float(self.correction.predict_us(self.lut, keys))
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

    def uniform_expected_us(self) -> float:
        """Expected latency when every layer's block is drawn uniformly among its candidates."""
        return float(self.expected_us(self.allowed.double() / self.allowed.sum(dim=1, keepdim=True)))

    def span_us(self, fraction: float) -> float:
        """The latency `fraction` of the way from the fastest arch (0) to the uniform expectation
        (1): a budget that means the same on any LUT, whatever its scale."""
        fastest = self.min_max_us()[0]
        return fastest + fraction * (self.uniform_expected_us() - fastest)

    def min_max_us(self) -> tuple[float, float]:
        """Fastest and slowest network the space allows."""
        lo = self.table_us.min(dim=1).values.sum().item()
        hi = self.table_finite_us.max(dim=1).values.sum().item()
        return lo + self.base_us, hi + self.base_us

    def sample_uniform(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """N archs with each layer's block drawn uniformly among its candidates: [N, layers]."""
        probs = self.allowed.double().expand(n, -1, -1).reshape(n * self.num_layers, -1)
        return torch.multinomial(probs, 1, generator=generator).view(n, self.num_layers)

    def tilted_probs(self, target_us: float) -> torch.Tensor:
        """Layer-wise block probabilities p[l, i] ∝ exp(−s · LUT[l, i]) over the allowed blocks,
        with s (bisection; s = 0 is uniform) such that the expected latency is `target_us`
        (clamped to the space's range): the maximum-entropy distribution of that mean."""
        table, scale = self.table_finite_us, float(self.table_finite_us[self.allowed].abs().mean())

        def probs(s: float) -> torch.Tensor:
            logits = (-s / scale * table).masked_fill(~self.allowed, -math.inf)
            return torch.softmax(logits, dim=-1)

        lo, hi = -60.0, 60.0  # expected latency falls as s rises
        for _ in range(100):
            mid = (lo + hi) / 2
            if float(self.expected_us(probs(mid))) > target_us:
                lo = mid
            else:
                hi = mid
        return probs((lo + hi) / 2)

    def sample_near(self, n: int, target_us: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """N archs drawn layer-wise from `tilted_probs(target_us)`: [N, layers]. Their latencies
        are a sum of independent layers, so they concentrate around the target."""
        probs = self.tilted_probs(target_us).expand(n, -1, -1).reshape(n * self.num_layers, -1)
        return torch.multinomial(probs, 1, generator=generator).view(n, self.num_layers)


def _lut_space_name(lut: Lut) -> str:
    s = lut.space
    return s if isinstance(s, str) else s["name"]


def _check_space_hash(lut: Lut, space: Space) -> None:
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


def _lut_info(lut: Lut) -> dict[str, Any]:
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
        **({"predicted_from": meta["predicted_from"]} if "predicted_from" in meta else {}),
    }
