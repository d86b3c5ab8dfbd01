"""Search spaces as data: a fixed macro-architecture plus candidate blocks per searchable layer.

A space is named by `Space.name`, which `get_space` parses back, so LUTs, archs and CLIs only ever
carry the string:

    "fbnet"                    FBNet (CVPR 2019) Table 1 at 224×224, width 1.0
    "fbnet-r96-w0.35"          same macro-architecture at 96×96, channels × 0.35
    "proxyless_mobile"         ProxylessNAS mobile space at 224×224
    "proxyless_mobile-r128"    ... at 128×128
    "fbnet-r32-w0.25-f16-s21211111"   a proxy: every stem/stage width at least 16 channels
                               (`-f`), strides (stem, stage 1, …) 2,1,2,1,1,1,1,1 (`-s`)

Proxies (`proxy_space`) keep the macro-architecture's layers and candidates but may lower
strides and raise narrow widths: the reduced-stride schedule (`reduced_strides`) keeps a stride-2
only while the feature map after it stays at least as large as the largest candidate kernel, so
that at 32×32 every searchable layer's input is ≥ 5×5 (FBNet) or ≥ 7×7 (ProxylessNAS) and a 5×5
depthwise conv computes something a 3×3 cannot (at 2×2 or 1×1 inputs they compute the same
function class). As on CIFAR, where MobileNetV2-style networks drop the early stride-2s of their
ImageNet form (the stem and the first stage run at stride 1), the schedule trades the LUT's
downsampling for a map the kernels can see. The width floor gives every group of a grouped 1×1
conv (g = 2 at expansion 1) at least floor / 2 channels: at width 0.25 FBNet's first stages have
8 channels, 4 per group, too few to learn from (`PROXY_CHANNEL_FLOOR`).

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
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

from .blocks import FBNET_BLOCKS, PROXYLESS_BLOCKS, block_spec
from .ops import Op

__all__ = [
    "LayerShape", "Space", "SPACES", "get_space", "register_space", "list_spaces", "reduced_strides",
    "proxy_space", "PROXY_RESOLUTION", "PROXY_WIDTH", "PROXY_CHANNEL_FLOOR",
]  # fmt: skip


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
    # (stem, stage 1, …, stage n) strides overriding the published ones; () = as published
    strides: tuple[int, ...] = ()
    channel_floor: int = 0  # stem / pre / stage widths are at least this many channels (0: none)

    # --- naming -----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        parts = [self.family]
        if self.resolution != self.defaults[0]:
            parts.append(f"r{self.resolution}")
        if self.width_mult != self.defaults[1]:
            parts.append(f"w{self.width_mult:g}")
        if self.channel_floor:
            parts.append(f"f{self.channel_floor}")
        if self.strides and self.strides != self.published_strides:
            parts.append("s" + "".join(str(s) for s in self.strides))
        return "-".join(parts)

    def hash(self) -> str:
        """Content hash of everything that shapes the ops; part of the LUT metadata."""
        d = asdict(self)
        d.pop("extra_heads")
        for key, default in (("strides", ()), ("channel_floor", 0)):  # absent: the hash of before
            if d[key] == default or (key == "strides" and tuple(d[key]) == self.published_strides):
                d.pop(key)
        d["shape_preserving_only"] = sorted(d["shape_preserving_only"])
        blob = json.dumps(d, sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    # --- shapes -----------------------------------------------------------------------------
    def ch(self, c: int) -> int:
        return max(self.channel_floor, round_channels(c * self.width_mult))

    @property
    def published_strides(self) -> tuple[int, ...]:
        """(stem, stage 1, …, stage n) first-layer strides of the macro-architecture as published."""
        return (2, *(s for _, _, s in self.stages))

    @property
    def stride_schedule(self) -> tuple[int, ...]:
        """(stem, stage 1, …) strides this space runs: `strides`, else the published ones."""
        return self.strides or self.published_strides

    @property
    def max_kernel(self) -> int:
        """The largest spatial kernel among the candidate blocks."""
        return max(block_spec(b).kernel for b in self.candidates_all)

    @property
    def default_head(self) -> int:
        return self.ch(self.head_channels)

    def layers(self) -> list[LayerShape]:
        """Every searchable layer with its input shape, in network order."""
        schedule = self.stride_schedule
        h = _out(self.resolution, schedule[0])
        c = self.ch(self.stem_channels)
        if self.pre_block is not None:
            c = self.ch(self.pre_block[1])
        out: list[LayerShape] = []
        for stage, ((f, n, _), s) in enumerate(zip(self.stages, schedule[1:]), start=1):
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
        layer changes shape in the published macro-architecture: a proxy whose width rounding,
        width floor or lowered stride makes the shapes match keeps the LUT's candidates)."""
        keeps_shape = layer.c_in == layer.c_out and layer.stride == 1
        if keeps_shape and (self.strides or self.channel_floor or self.width_mult != self.defaults[1]):
            published = replace(self, strides=(), channel_floor=0, width_mult=self.defaults[1]).layers()[layer.index]
            keeps_shape = published.c_in == published.c_out and published.stride == 1
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
        stem_s = self.stride_schedule[0]
        ops = {"stem": Op(self.stem_block, 3, r, r, stem_c, stem_s)}
        h = _out(r, stem_s)
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


_NAME = re.compile(
    r"^(?P<family>[a-z0-9_]+)(?:-r(?P<res>\d+))?(?:-w(?P<width>[0-9.]+))?(?:-f(?P<floor>\d+))?(?:-s(?P<strides>[12]+))?$"
)


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
            "(optionally suffixed -r<resolution>, -w<width multiplier>, -f<channel floor>, "
            "-s<stem and stage strides>, e.g. fbnet-r96-w0.35)"
        )
    space = SPACES[m["family"]]()
    res = int(m["res"]) if m["res"] else space.resolution
    width = float(m["width"]) if m["width"] else space.width_mult
    floor = int(m["floor"]) if m["floor"] else 0
    strides = tuple(int(c) for c in m["strides"]) if m["strides"] else ()
    if res < 32 or width <= 0:
        raise ValueError(f"space {name!r}: resolution must be ≥ 32 and width multiplier > 0")
    if strides and len(strides) != len(space.stages) + 1:
        raise ValueError(
            f"space {name!r}: -s lists the stem's stride and one per stage, {len(space.stages) + 1} digits "
            f"(as published: -s{''.join(map(str, space.published_strides))})"
        )
    space = Space(**{**_fields(space), "resolution": res, "width_mult": width, "channel_floor": floor,
                     "strides": strides if strides != space.published_strides else ()})  # fmt: skip
    heads = tuple(NAMED_HEAD_WIDTHS.get(space.name, ()))
    return Space(**{**_fields(space), "extra_heads": heads})


# The default proxy the search trains on (see the module docstring): 32×32 inputs, width 0.25, every
# stem / stage width at least 16 channels (8 per group of a g = 2 conv), reduced strides
PROXY_RESOLUTION = 32
PROXY_WIDTH = 0.25
PROXY_CHANNEL_FLOOR = 16


def reduced_strides(space: Space) -> tuple[int, ...]:
    """(stem, stage 1, …) strides that keep every searchable layer's input at least as large as the
    space's largest kernel: each published stride-2, in network order, stays while the map after
    it is still ≥ that kernel, and becomes 1 otherwise.

    fbnet at 32 (kernels ≤ 5): published 2,1,2,2,2,1,2,1 → 2,1,2,1,1,1,1,1 (layer inputs 16, 8)
    proxyless_mobile at 32 (≤ 7): 2,2,2,2,1,2,1 → 2,2,1,1,1,1,1 (16, 8)"""
    k = space.max_kernel
    h, out = space.resolution, []
    for s in space.published_strides:
        s = s if s > 1 and _out(h, s) >= k else 1
        out.append(s)
        h = _out(h, s)
    return tuple(out)


def proxy_space(
    target: Space,
    resolution: int = PROXY_RESOLUTION,
    width: float = PROXY_WIDTH,
    channel_floor: int = PROXY_CHANNEL_FLOOR,
    reduce_strides: bool = True,
) -> Space:
    """The space a search trains on for `target` (its family's layers and candidates): at
    `resolution` and `width`, with the width floor and, by default, the reduced-stride schedule.
    `python -m search.space info --space NAME` shows each layer's input size."""
    base = replace(target, resolution=resolution, width_mult=width, channel_floor=channel_floor, strides=())
    if reduce_strides:
        strides = reduced_strides(base)
        base = replace(base, strides=strides if strides != base.published_strides else ())
    return get_space(base.name)


def _fields(space: Space) -> dict:
    return {f: getattr(space, f) for f in space.__dataclass_fields__}
