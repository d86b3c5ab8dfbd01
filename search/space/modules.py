"""The `nn.Module`s of the registered blocks, and the networks built from ops.

One factory signature builds every block: `build_block(name, c_in, c_out, stride)` (mobile-vision's
convention), so the profiler, the supernet and `build_model` never need to know which kind a
block is. `BUILDERS` maps each block kind of `search.space.blocks` to its module; what a kind
means (and its cost) is documented there.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .arch import Arch, arch_ops
from .blocks import BLOCK_KINDS, BlockSpec, block_spec
from .ops import Op
from .spaces import get_space

__all__ = [
    "BUILDERS",
    "build_block",
    "build_model",
    "Network",
    "Replicas",
    "ChannelShuffle",
    "ConvBNAct",
    "FBNetBlock",
    "MBConv",
    "Skip",
    "Zero",
    "PoolFC",
    "Overhead",
    "count_params",
]

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

    def zero_init_last(self) -> None:
        """With a residual: the last BN's γ = 0, so the block starts as the identity (timm's
        `zero_init_last`; `search.recipe.init_weights` calls it)."""
        if self.use_residual:
            nn.init.zeros_(self.pwl[1].weight)

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

    def zero_init_last(self) -> None:
        """With a residual: the last BN's γ = 0, so the block starts as the identity (timm's
        `zero_init_last`; `search.recipe.init_weights` calls it)."""
        if self.use_residual:
            nn.init.zeros_(self.pwl[1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pwl(self.dw(self.expand(x)))
        return x + y if self.use_residual else y


class Skip(nn.Module):
    """FBNet `skip`: the identity, or a 1×1 conv (stride s) + BN + ReLU where the shape changes
    (`self.conv` is None exactly when the block is the identity)."""

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
    """What invoking a model of this input shape costs, with no pass over the input: a 1×1
    depthwise conv that samples 2×2 pixels of it (stride ⌈h/2⌉ × ⌈w/2⌉). Both XNNPACK delegates run
    it as one native op on the input as it is bound (ExecuTorch, and TFLite's DEPTHWISE_CONV_2D on
    a channel-last input), in about the same time at every input shape. A ReLU would also charge
    an elementwise pass over the input (tens of µs at 16×112×112), which the latency model would
    then subtract from every op of that shape although no block pays it inside a network.

    `form="relu"` is that ReLU: the cheaper invocation where a conv first converts its input's
    layout (onnxruntime's CPU provider converts it to its blocked layout; `RuntimeInfo.overhead`).

    The sampler's weights are a fixed buffer of ones, not parameters of any network: it counts its
    4·c MACs and no parameters (`search.space.blocks`)."""

    FORMS = ("sampler", "relu")

    def __init__(self, c_in: int, c_out: int, stride: int = 1, *, form: str = "sampler") -> None:
        super().__init__()
        if c_in != c_out or stride != 1:
            raise ValueError("the overhead op keeps its input shape (c_in == c_out, stride 1)")
        if form not in self.FORMS:
            raise ValueError(f"unknown overhead op form {form!r}; known: {self.FORMS}")
        self.form = form
        if form == "sampler":
            self.register_buffer("weight", torch.ones(c_in, 1, 1, 1))

    def extra_repr(self) -> str:
        return self.form

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "relu":
            return torch.relu(x)
        h, w = x.shape[-2], x.shape[-1]
        return F.conv2d(x, self.weight, stride=((h + 1) // 2, (w + 1) // 2), groups=x.shape[1])


class PoolFC(nn.Module):
    """Global average pool → flatten → Linear(c_in, c_out).

    The pool is an average pool over the whole feature map: on a channels-last input both
    exporters lower it to one native pooling op (XNNPACK's Average Pooling, TFLite's
    AVERAGE_POOL_2D) that reads the channel-last tensor as it is; `mean(dim=(2, 3))` would cost a
    portable kernel plus a layout copy in ExecuTorch and an input TRANSPOSE in litert-torch."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.fc = nn.Linear(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.avg_pool2d(x, (x.shape[-2], x.shape[-1])).flatten(1))


# block kind → builder(spec, c_in, c_out, stride)
BUILDERS: dict[str, Callable[[BlockSpec, int, int, int], nn.Module]] = {
    "ir": lambda s, ci, co, st: FBNetBlock(ci, co, st, kernel=s.kernel, expansion=s.expansion, groups=s.groups),
    "mb": lambda s, ci, co, st: MBConv(ci, co, st, kernel=s.kernel, expansion=s.expansion),
    "skip": lambda s, ci, co, st: Skip(ci, co, st),
    "zero": lambda s, ci, co, st: Zero(ci, co, st),
    "conv": lambda s, ci, co, st: ConvBNAct(ci, co, kernel=s.kernel, stride=st, act=s.act),
    "pool_fc": lambda s, ci, co, st: PoolFC(ci, co, st),
    "overhead": lambda s, ci, co, st: Overhead(ci, co, st),
}  # fmt: skip
assert set(BUILDERS) == set(BLOCK_KINDS), "every block kind needs a builder"


def build_block(name: str, c_in: int, c_out: int, stride: int) -> nn.Module:
    """The one factory: block name + shape → `nn.Module`."""
    spec = block_spec(name)
    return BUILDERS[spec.kind](spec, c_in, c_out, stride)


def build_op(op: Op) -> nn.Module:
    """A fresh module for an op, in eval mode."""
    return build_block(op.block, op.c_in, op.c_out, op.stride).eval()


class Replicas(nn.Module):
    """`copies` independent instances of one op (their own weights), all reading the same input,
    each writing its own output: one invocation runs the op `copies` times with weights that the
    previous copy did not leave in cache, its input in cache after the first copy. The profiler
    times it to give a phone's runner binaries the cold weights a layer has inside a network."""

    def __init__(self, op: Op, copies: int, build: Callable[[Op], nn.Module] | None = None) -> None:
        super().__init__()
        if copies < 1:
            raise ValueError(f"copies must be ≥ 1, got {copies}")
        build = build or (lambda o: build_block(o.block, o.c_in, o.c_out, o.stride))
        self.copies = nn.ModuleList(build(op) for _ in range(copies))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(m(x) for m in self.copies)


class Network(nn.Module):
    """stem → [fixed first block] → searchable layers → head conv → pool + fc.

    `ops[i]` is the i-th op of `arch_ops(arch)`: module paths `ops.<i>.…` name the layer."""

    def __init__(self, ops: list[Op]) -> None:
        super().__init__()
        self.ops = nn.ModuleList(build_block(op.block, op.c_in, op.c_out, op.stride) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.ops:
            x = m(x)
        return x


def build_model(arch: Arch, num_classes: int | None = None) -> Network:
    """`Arch` → a runnable `nn.Module` (training mode, as nn.Modules start), with a classifier of
    `num_classes` outputs (default: the space's, 1000)."""
    space = get_space(arch.space)
    if num_classes is not None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be ≥ 1, got {num_classes}")
        space = replace(space, num_classes=num_classes)
    return Network(arch_ops(arch, space))


def count_params(module: nn.Module) -> int:
    """Trainable parameters of a built module (the blocks' `params` counts these by formula)."""
    return sum(p.numel() for p in module.parameters())
