"""Sampled shapes: a family's blocks at configurations drawn over resolutions and widths.

A LUT answers for the shapes it measured. To predict the ops of spaces nobody profiled (another
input resolution, another width multiplier), `lut fit` trains a regressor per block kind on
measured ops; this module says which ops to measure for that. A `ShapeSpace` is a measurement job's
space (it has a name, a hash and `unique_ops`, like `search.space.Space`), so a sampled LUT is
measured, resumed, versioned and stored exactly like any space's:

    python -m profiler.run --device host --runtime executorch --sample-shapes 16
        → luts/<device>/shapes-fbnet/executorch-t1/v1/    (no search picks this space)

Sampling. Draw i (i = 0 … n−1) picks a resolution r and a width multiplier w log-uniformly from
`ShapeRanges` (sizes and channel counts scale by ratios: 96→128 px is as large a step as
240→320) and one searchable layer of the family's macro-architecture at (r, w); the draw times
every candidate block at that layer (identity ones excepted: they compute nothing), and the fixed
ops (stem, fixed first block, head conv, classifier) of the network at (r, w), with a head width
drawn from the family's default and its named archs' heads. Drawing whole layers, not
independent channel counts and sizes, keeps the shapes the family really has (a wide layer is a
small one, stride 2 only where a stage starts) while covering every resolution and width of the
ranges; all blocks of a draw share its input shape, so they also share one overhead op.

Layers are dealt, not drawn: draw i takes slot i mod S of a fixed shuffled list of S slots that
holds each stage's first layer twice (where stride and channels change) and every other layer
once, so every layer is sampled, the first stage's wide-and-narrow ones included, once per S
draws (FBNet: 29). Draws come from `random.Random(f"{seed}:{family}:{i}")` and the slot list
from the seed and family alone: the first n draws of a job with 2n are the n draws of a job with
n, so a larger job measures a superset (and its LUT can be fitted on together with the smaller
one's).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from search.space import Op, Space, get_space

__all__ = ["ShapeRanges", "ShapeSpace", "SHAPES_PREFIX", "shape_space"]

SHAPES_PREFIX = "shapes-"  # a sampled space is named "shapes-<family>"


@dataclass(frozen=True)
class ShapeRanges:
    """What a draw may pick; defaults cover the spaces we ship at 96–320 px and widths 0.35–1.5."""

    resolution: tuple[int, int] = (96, 320)  # input size, inclusive, drawn log-uniformly
    width: tuple[float, float] = (0.35, 1.5)  # width multiplier, drawn log-uniformly, 2 decimals

    def __post_init__(self) -> None:
        (r0, r1), (w0, w1) = self.resolution, self.width
        if not (32 <= r0 <= r1) or not (0 < w0 <= w1):
            raise ValueError(f"need 32 ≤ resolution min ≤ max and 0 < width min ≤ max; got {self.resolution}, {self.width}")


@dataclass(frozen=True)
class ShapeSpace:
    """n sampled configurations of a family's blocks (see the module docstring)."""

    family: str = "fbnet"  # a registered space family whose blocks are sampled
    n: int = 16  # draws; each times every candidate block at one layer, and the fixed ops (≈ 15 models)
    seed: int = 0
    ranges: ShapeRanges = field(default_factory=ShapeRanges)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"--sample-shapes must be ≥ 1, got {self.n}")
        base = get_space(self.family)  # an unknown family fails here with the known ones
        if base.family != self.family:
            raise ValueError(f"sample shapes of a family ({self.family!r} is a sized space); e.g. fbnet")

    def __str__(self) -> str:
        return self.name

    @property
    def name(self) -> str:
        return f"{SHAPES_PREFIX}{self.family}"

    def describe(self) -> dict[str, Any]:
        """What a LUT's meta records about the sampling (beside the space name and hash)."""
        return {"sampled": {"family": self.family, "n": self.n, "seed": self.seed, **asdict(self.ranges)}}

    def hash(self) -> str:
        base = get_space(self.family)
        blob = json.dumps({"family_hash": base.hash(), **self.describe()}, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # --- draws ----------------------------------------------------------------------------------
    def draw(self, i: int) -> tuple[Space, int, int]:
        """Draw i: (the family at the drawn resolution and width, layer index, head width)."""
        rng = random.Random(f"{self.seed}:{self.family}:{i}")
        (r0, r1), (w0, w1) = self.ranges.resolution, self.ranges.width
        res = min(r1, max(r0, round(math.exp(rng.uniform(math.log(r0), math.log(r1))))))
        width = min(w1, max(w0, round(math.exp(rng.uniform(math.log(w0), math.log(w1))), 2)))
        base = get_space(self.family)
        space = replace(base, resolution=res, width_mult=width, extra_heads=())
        slots = self._layer_slots()
        layer = slots[i % len(slots)]
        heads = sorted({base.head_channels, *base.extra_heads})
        head = space.ch(rng.choice(heads))
        return space, layer, head

    def _layer_slots(self) -> list[int]:
        """The shuffled layer slots draws are dealt from: each stage's first layer twice, the
        others once (the layer structure is the family's at any resolution and width)."""
        layers = get_space(self.family).layers()
        firsts = [l.index for l in layers if l.index == 0 or l.stage != layers[l.index - 1].stage]
        slots = sorted(firsts * 2 + [l.index for l in layers if l.index not in firsts])
        random.Random(f"{self.seed}:{self.family}:layers").shuffle(slots)
        return slots

    def draw_ops(self, i: int) -> list[Op]:
        """The ops draw i times: every non-identity candidate at its layer, then the fixed ops."""
        space, index, head = self.draw(i)
        layer = space.layers()[index]
        ops = [layer.op(b) for b in space.candidates(layer)]
        ops += list(space.fixed_ops(head).values())
        return [op for op in ops if not op.is_identity]

    def unique_ops(self) -> list[Op]:
        seen: dict[str, Op] = {}
        for i in range(self.n):
            for op in self.draw_ops(i):
                seen.setdefault(op.key, op)
        return list(seen.values())

    def op_networks(self) -> dict[str, Space]:
        """Op key → the network it was drawn from (the family at that draw's resolution and width;
        an op two draws share: the first), whose footprint its cold copies take
        (`profiler.protocol.plan`)."""
        seen: dict[str, Space] = {}
        for i in range(self.n):
            space = self.draw(i)[0]
            for op in self.draw_ops(i):
                seen.setdefault(op.key, space)
        return seen

    def fixed_ops(self) -> dict[str, Op]:
        """The network-input op a job's once-per-network overhead is measured at: the stem of the
        first draw (a sampled LUT predicts no network, but a job records that overhead)."""
        space, _, head = self.draw(0)
        return {"stem": space.fixed_ops(head)["stem"]}


def shape_space(family: str, n: int, seed: int = 0) -> ShapeSpace:
    """The sampled space of `family` with `n` draws (the CLI's `--sample-shapes N`)."""
    return ShapeSpace(family=family, n=n, seed=seed)
