"""Search spaces as data: a fixed macro-architecture plus candidate blocks per searchable layer.

A space is named by `Space.name`, which `get_space` parses back, so LUTs, archs and CLIs only ever
carry the string:

    "fbnet"                    FBNet (CVPR 2019) Table 1 at 224×224, width 1.0
    "fbnet-r96-w0.35"          same macro-architecture at 96×96, channels × 0.35
    "proxyless_mobile"         ProxylessNAS mobile space at 224×224
    "proxyless_mobile-r128"    ... at 128×128

Channel widths under a width multiplier are rounded up to a multiple of 8; at 0.35 this gives the
published FBNet-96-0.35 widths (8, 16, 16, 24, 40, 72, 128).

FBNet macro-architecture (Table 1), per stage (channels f, layers n, first stride s):
    stem 3×3 conv 16 s2 → (16,1,1) (24,4,2) (32,4,2) (64,4,2) (112,4,1) (184,4,2) (352,1,1)
    → 1×1 conv 1984 → avgpool → fc 1000                        22 searchable layers

ProxylessNAS mobile (Cai et al. 2019, their `proxyless_mobile` supernet):
    stem 3×3 conv 32 s2 → fixed MBConv k3 e1 16 → (24,4,2) (40,4,2) (80,4,2) (96,4,1) (192,4,2)
    (320,1,1) → 1×1 conv 1280 → avgpool → fc 1000                21 searchable layers
    `zero` is a candidate only where a layer keeps its shape (not in a stage's first layer).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Callable

from .blocks import FBNET_BLOCKS, PROXYLESS_BLOCKS
from .ops import Op

__all__ = ["LayerShape", "Space", "SPACES", "get_space", "register_space", "list_spaces"]


@dataclass(frozen=True)
class LayerShape:
    """One searchable layer: its input shape and what it must produce."""

    index: int  # 0-based position among the searchable layers
    stage: int  # 1-based stage of Table 1
    c_in: int
    c_out: int
    h: int  # input height
    w: int  # input width
    stride: int

    def op(self, block: str) -> Op:
        return Op(block, self.c_in, self.h, self.w, self.c_out, self.stride)


def round_channels(c: float, divisor: int = 8) -> int:
    """Round a scaled width up to a multiple of `divisor`: 16 × 0.35 = 5.6 → 8."""
    return max(divisor, int(math.ceil(c / divisor) * divisor))


def _out(size: int, stride: int) -> int:
    return (size + stride - 1) // stride


@dataclass(frozen=True)
class Space:
    """A macro-architecture with searchable layers. Pure data; no I/O."""

    family: str  # registry key: "fbnet", "proxyless_mobile"
    stem_channels: int  # before width scaling
    stem_block: str  # registered conv block of the stem (3×3, stride 2)
    stages: tuple[tuple[int, int, int], ...]  # (channels, layers, first stride), before scaling
    head_channels: int  # 1×1 conv before pooling, before scaling
    head_block: str
    candidates_all: tuple[str, ...]  # candidate blocks, in the canonical (LUT column) order
    shape_preserving_only: frozenset[str] = frozenset()  # blocks allowed only where shapes match
    pre_block: tuple[str, int] | None = None  # fixed first block (block, channels), if any
    resolution: int = 224
    width_mult: float = 1.0
    num_classes: int = 1000
    defaults: tuple[int, float] = (224, 1.0)  # (resolution, width) the plain family name means
    extra_heads: tuple[int, ...] = field(default=(), compare=False)  # head widths of named archs

    # --- naming -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        parts = [self.family]
        if self.resolution != self.defaults[0]:
            parts.append(f"r{self.resolution}")
        if self.width_mult != self.defaults[1]:
            parts.append(f"w{self.width_mult:g}")
        return "-".join(parts)

    def hash(self) -> str:
        """Content hash of everything that shapes the ops; part of the LUT metadata."""
        d = asdict(self)
        d.pop("extra_heads")
        d["shape_preserving_only"] = sorted(d["shape_preserving_only"])
        blob = json.dumps(d, sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    # --- shapes -----------------------------------------------------------------------------
    def ch(self, c: int) -> int:
        return round_channels(c * self.width_mult)

    @property
    def default_head(self) -> int:
        return self.ch(self.head_channels)

    def layers(self) -> list[LayerShape]:
        """Every searchable layer with its input shape, in network order."""
        h = _out(self.resolution, 2)
        c = self.ch(self.stem_channels)
        if self.pre_block is not None:
            c = self.ch(self.pre_block[1])
        out: list[LayerShape] = []
        for stage, (f, n, s) in enumerate(self.stages, start=1):
            for i in range(n):
                stride = s if i == 0 else 1
                c_out = self.ch(f)
                out.append(LayerShape(len(out), stage, c, c_out, h, h, stride))
                c, h = c_out, _out(h, stride)
        return out

    @property
    def num_layers(self) -> int:
        return sum(n for _, n, _ in self.stages)

    def candidates(self, layer: LayerShape) -> tuple[str, ...]:
        """Blocks allowed at `layer` (all of them, except shape-preserving-only ones where the
        layer changes shape)."""
        keeps_shape = layer.c_in == layer.c_out and layer.stride == 1
        return tuple(
            b for b in self.candidates_all if keeps_shape or b not in self.shape_preserving_only
        )

    def _last(self) -> tuple[int, int]:
        last = self.layers()[-1]
        return last.c_out, _out(last.h, last.stride)

    def fixed_ops(self, head_channels: int | None = None) -> dict[str, Op]:
        """The ops every network of the space runs: role → op (stem, pre, head, classifier)."""
        head = head_channels or self.default_head
        r = self.resolution
        stem_c = self.ch(self.stem_channels)
        ops = {"stem": Op(self.stem_block, 3, r, r, stem_c, 2)}
        h = _out(r, 2)
        if self.pre_block is not None:
            block, c = self.pre_block
            ops["pre"] = Op(block, stem_c, h, h, self.ch(c), 1)
        c_last, h_last = self._last()
        ops["head"] = Op(self.head_block, c_last, h_last, h_last, head, 1)
        ops["classifier"] = Op("pool_fc", head, h_last, h_last, self.num_classes, 1)
        return ops

    def head_widths(self) -> tuple[int, ...]:
        """Head widths a LUT of this space must cover: the default plus the named archs' own."""
        return tuple(dict.fromkeys((self.default_head, *self.extra_heads)))

    def unique_ops(self) -> list[Op]:
        """Every (block, layer shape) once, plus the fixed ops: what a LUT must contain."""
        seen: dict[str, Op] = {}
        for layer in self.layers():
            for block in self.candidates(layer):
                op = layer.op(block)
                seen.setdefault(op.key, op)
        for head in self.head_widths():
            for op in self.fixed_ops(head).values():
                seen.setdefault(op.key, op)
        return list(seen.values())


SPACES: dict[str, Callable[[], Space]] = {}


def register_space(family: str) -> Callable[[Callable[[], Space]], Callable[[], Space]]:
    def deco(fn: Callable[[], Space]) -> Callable[[], Space]:
        if family in SPACES:
            raise ValueError(f"space {family!r} is already registered")
        SPACES[family] = fn
        return fn

    return deco


@register_space("fbnet")
def _fbnet() -> Space:
    return Space(
        family="fbnet",
        stem_channels=16,
        stem_block="conv3x3_relu",
        stages=((16, 1, 1), (24, 4, 2), (32, 4, 2), (64, 4, 2), (112, 4, 1), (184, 4, 2), (352, 1, 1)),
        head_channels=1984,
        head_block="conv1x1_relu",
        candidates_all=FBNET_BLOCKS,
    )


@register_space("proxyless_mobile")
def _proxyless_mobile() -> Space:
    return Space(
        family="proxyless_mobile",
        stem_channels=32,
        stem_block="conv3x3_relu6",
        pre_block=("mb_k3_e1", 16),
        stages=((24, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1)),
        head_channels=1280,
        head_block="conv1x1_relu6",
        candidates_all=PROXYLESS_BLOCKS,
        shape_preserving_only=frozenset({"zero"}),
    )


_NAME = re.compile(r"^(?P<family>[a-z0-9_]+)(?:-r(?P<res>\d+))?(?:-w(?P<width>[0-9.]+))?$")


# Head widths of the named archs of each space (space name -> widths, in registration order):
# `arch.register_arch` adds them, so that a space built by name has the fixed ops of every named
# arch's head. Kept here, filled from there, so that this module does not import `arch`.
NAMED_HEAD_WIDTHS: dict[str, list[int]] = {}


def register_head_width(space_name: str, channels: int) -> None:
    """A named arch of `space_name` ends in a head of `channels` (its LUT must time that head)."""
    NAMED_HEAD_WIDTHS.setdefault(space_name, []).append(channels)


def list_spaces() -> list[str]:
    return list(SPACES)


def get_space(name: str) -> Space:
    """Parse a space name ('fbnet', 'fbnet-r96-w0.35') into a `Space`."""
    m = _NAME.match(name)
    if m is None or m["family"] not in SPACES:
        raise ValueError(
            f"unknown search space {name!r}; known spaces: {', '.join(SPACES)} "
            "(optionally suffixed -r<resolution> and/or -w<width multiplier>, e.g. fbnet-r96-w0.35)"
        )
    space = SPACES[m["family"]]()
    res = int(m["res"]) if m["res"] else space.resolution
    width = float(m["width"]) if m["width"] else space.width_mult
    if res < 32 or width <= 0:
        raise ValueError(f"space {name!r}: resolution must be ≥ 32 and width multiplier > 0")
    space = Space(**{**_fields(space), "resolution": res, "width_mult": width})
    heads = tuple(NAMED_HEAD_WIDTHS.get(space.name, ()))
    return Space(**{**_fields(space), "extra_heads": heads})


def _fields(space: Space) -> dict:
    return {f: getattr(space, f) for f in space.__dataclass_fields__}
