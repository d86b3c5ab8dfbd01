"""Candidate blocks and fixed ops of the search spaces, in one registry.

Block names are a short grammar (timm-style) decoded into plain data (`BlockSpec`) before any
module is built:

    k3_e6       FBNet inverted-residual block, kernel 3, expansion 6, group 1, ReLU
    k5_e1_g2    same with group-2 1×1 convs and a channel shuffle, kernel 5, expansion 1
    skip        FBNet skip (identity, or 1×1 conv+BN+ReLU where the shape changes)
    mb_k7_e3    ProxylessNAS MBConv, kernel 7, expansion 3, ReLU6
    zero        ProxylessNAS "zero" op: the layer is left out (identity residual only)
    conv3x3_relu, conv1x1_relu6, ...   fixed stem/head convs (conv+BN+act)
    pool_fc     global average pool + fully connected classifier
    overhead    one ReLU over the input: the cheapest real op of a shape, timed beside the ops to
                measure the per-invocation overhead of a runtime at that input shape

Every block is built by one factory signature `(c_in, c_out, stride) -> nn.Module`
(mobile-vision's convention), so the profiler, the supernet and `build_model` never need to know
which kind a block is.

FBNet block (Wu et al., CVPR 2019, https://arxiv.org/abs/1812.03443, Fig. 3 and Table 2):
1×1 group conv (ReLU) → channel shuffle if g > 1 → k×k depthwise conv (stride s, ReLU) →
1×1 group conv (no activation), BatchNorm after each conv, residual add when input and output
shapes match. As in the reference implementation (maskrcnn-benchmark `IRFBlock`, also what
HW-NAS-Bench measured), the first 1×1 conv is present at expansion 1 too.

FBNet `skip` where a layer changes channels or stride: the reference implementation's `Identity`
module becomes a 1×1 conv (stride s) + BN + ReLU whenever c_in != c_out or stride != 1, and a true
identity otherwise. We do the same, so `skip` is a valid choice at every layer.

ProxylessNAS MBConv (Cai et al., ICLR 2019, https://arxiv.org/abs/1812.00332): 1×1 expand conv
(ReLU6, omitted at expansion 1) → k×k depthwise (ReLU6) → 1×1 linear conv, BN after each conv,
residual when shapes match. Its `zero` op contributes nothing: the layer's output is its input,
so it is only allowed where shapes match.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

__all__ = [
    "BlockSpec",
    "BLOCKS",
    "block_spec",
    "build_block",
    "register_block",
    "ChannelShuffle",
    "FBNetBlock",
    "MBConv",
    "Identity",
    "Zero",
    "ConvBNAct",
    "PoolFC",
    "Overhead",
]


@dataclass(frozen=True)
class BlockSpec:
    """A block name decoded into plain data.

    kind: "ir" (FBNet inverted residual), "mb" (ProxylessNAS MBConv), "skip", "zero",
    "conv" (fixed conv+BN+act), "pool_fc" (fixed classifier).
    """

    name: str
    kind: str
    kernel: int = 1  # spatial kernel size of the main conv (depthwise for ir/mb)
    expansion: int = 1  # hidden channels = c_in * expansion
    groups: int = 1  # groups of both 1×1 convs (ir only)
    act: str = "relu"  # "relu" or "relu6"

    @property
    def searchable(self) -> bool:
        return self.kind in ("ir", "mb", "skip", "zero")


_ACTS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
}


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) → BatchNorm2d → optional activation."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        *,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        act: str | None = "relu",
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        if act is not None:
            layers.append(_ACTS[act]())
        super().__init__(*layers)


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle: (N, g·c, H, W) → interleave the g groups."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.groups
        return x.reshape(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)


class FBNetBlock(nn.Module):
    """FBNet candidate block (paper Fig. 3): pw-group conv → shuffle → dw conv → pw-group conv."""

    def __init__(
        self, c_in: int, c_out: int, stride: int, *, kernel: int, expansion: int, groups: int
    ) -> None:
        super().__init__()
        mid = c_in * expansion
        for c in (c_in, mid, c_out):
            if c % groups:
                raise ValueError(f"{c} channels cannot be split into {groups} groups")
        self.pw = ConvBNAct(c_in, mid, kernel=1, groups=groups, act="relu")
        self.shuffle = ChannelShuffle(groups) if groups > 1 else nn.Identity()
        self.dw = ConvBNAct(mid, mid, kernel=kernel, stride=stride, groups=mid, act="relu")
        self.pwl = ConvBNAct(mid, c_out, kernel=1, groups=groups, act=None)
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pwl(self.dw(self.shuffle(self.pw(x))))
        return x + y if self.use_residual else y


class MBConv(nn.Module):
    """ProxylessNAS mobile inverted bottleneck: expand (ReLU6) → dw (ReLU6) → linear pw."""

    def __init__(self, c_in: int, c_out: int, stride: int, *, kernel: int, expansion: int) -> None:
        super().__init__()
        mid = c_in * expansion
        self.expand = (
            ConvBNAct(c_in, mid, kernel=1, act="relu6") if expansion != 1 else nn.Identity()
        )
        self.dw = ConvBNAct(mid, mid, kernel=kernel, stride=stride, groups=mid, act="relu6")
        self.pwl = ConvBNAct(mid, c_out, kernel=1, act=None)
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pwl(self.dw(self.expand(x)))
        return x + y if self.use_residual else y


class Identity(nn.Module):
    """FBNet `skip`: identity, or 1×1 conv (stride s) + BN + ReLU where the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv = (
            ConvBNAct(c_in, c_out, kernel=1, stride=stride, act="relu")
            if c_in != c_out or stride != 1
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.conv is None else self.conv(x)


class Zero(nn.Module):
    """ProxylessNAS `zero` op: the layer is dropped, its residual passes the input through."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        if c_in != c_out or stride != 1:
            raise ValueError(
                f"'zero' needs matching shapes (got c_in={c_in}, c_out={c_out}, stride={stride}); "
                "it is not a candidate where a layer changes channels or stride"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Overhead(nn.Module):
    """A single ReLU: measures what invoking a model of this input shape costs on its own."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        if c_in != c_out or stride != 1:
            raise ValueError("the overhead op keeps its input shape (c_in == c_out, stride 1)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


class PoolFC(nn.Module):
    """Global average pool → flatten → Linear(c_in, c_out)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.fc = nn.Linear(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


def _build(spec: BlockSpec, c_in: int, c_out: int, stride: int) -> nn.Module:
    if spec.kind == "ir":
        return FBNetBlock(
            c_in, c_out, stride, kernel=spec.kernel, expansion=spec.expansion, groups=spec.groups
        )
    if spec.kind == "mb":
        return MBConv(c_in, c_out, stride, kernel=spec.kernel, expansion=spec.expansion)
    if spec.kind == "skip":
        return Identity(c_in, c_out, stride)
    if spec.kind == "zero":
        return Zero(c_in, c_out, stride)
    if spec.kind == "conv":
        return ConvBNAct(c_in, c_out, kernel=spec.kernel, stride=stride, act=spec.act)
    if spec.kind == "pool_fc":
        return PoolFC(c_in, c_out, stride)
    if spec.kind == "overhead":
        return Overhead(c_in, c_out, stride)
    raise ValueError(f"unknown block kind {spec.kind!r}")  # unreachable for registered specs


BLOCKS: dict[str, BlockSpec] = {}


def register_block(spec: BlockSpec) -> BlockSpec:
    """Add a block to the registry; a duplicate name is an error."""
    if spec.name in BLOCKS:
        raise ValueError(f"block {spec.name!r} is already registered")
    BLOCKS[spec.name] = spec
    return spec


def block_spec(name: str) -> BlockSpec:
    """Look a block name up; an unknown name lists the known ones."""
    try:
        return BLOCKS[name]
    except KeyError:
        raise ValueError(f"unknown block {name!r}; known blocks: {', '.join(BLOCKS)}") from None


def build_block(name: str, c_in: int, c_out: int, stride: int) -> nn.Module:
    """The one factory: block name + shape → `nn.Module`."""
    return _build(block_spec(name), c_in, c_out, stride)


_IR_NAME = re.compile(r"^k(?P<k>\d+)_e(?P<e>\d+)(?:_g(?P<g>\d+))?$")
_MB_NAME = re.compile(r"^mb_k(?P<k>\d+)_e(?P<e>\d+)$")


def _decode(name: str) -> BlockSpec:
    """Decode a name of the grammar above: 'k5_e1_g2' → BlockSpec(kind='ir', 5, 1, 2)."""
    if m := _IR_NAME.match(name):
        return BlockSpec(name, "ir", int(m["k"]), int(m["e"]), int(m["g"] or 1), "relu")
    if m := _MB_NAME.match(name):
        return BlockSpec(name, "mb", int(m["k"]), int(m["e"]), 1, "relu6")
    raise ValueError(f"cannot decode block name {name!r}")


# FBNet Table 2, in the paper's order (also HW-NAS-Bench's block index order).
FBNET_BLOCKS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
# ProxylessNAS mobile candidates: MBConv k{3,5,7} × e{3,6} + zero.
PROXYLESS_BLOCKS = ("mb_k3_e3", "mb_k3_e6", "mb_k5_e3", "mb_k5_e6", "mb_k7_e3", "mb_k7_e6", "zero")

for _name in FBNET_BLOCKS[:-1] + PROXYLESS_BLOCKS[:-1] + ("mb_k3_e1",):
    register_block(_decode(_name))
register_block(BlockSpec("skip", "skip"))
register_block(BlockSpec("zero", "zero"))
for _k in (1, 3):
    for _act in ("relu", "relu6"):
        register_block(BlockSpec(f"conv{_k}x{_k}_{_act}", "conv", kernel=_k, act=_act))
register_block(BlockSpec("pool_fc", "pool_fc"))
register_block(BlockSpec("overhead", "overhead"))
