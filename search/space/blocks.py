"""Candidate blocks and fixed ops of the search spaces, in one registry, as plain data.

Block names are a short grammar (timm-style) decoded into plain data (`BlockSpec`) before any
module is built (`search.space.modules.build_block` builds them):

    k3_e6       FBNet inverted-residual block, kernel 3, expansion 6, group 1, ReLU
    k5_e1_g2    same with group-2 1×1 convs and a channel shuffle, kernel 5, expansion 1
    skip        FBNet skip (identity, or 1×1 conv+BN+ReLU where the shape changes)
    mb_k7_e3    ProxylessNAS MBConv, kernel 7, expansion 3, ReLU6
    zero        ProxylessNAS "zero" op: the layer is left out (identity residual only)
    conv3x3_relu, conv1x1_relu6, ...   fixed stem/head convs (conv+BN+act)
    pool_fc     global average pool + fully connected classifier
    overhead    a 1×1 depthwise conv sampling 2×2 pixels of the input: an invocation at that input
                shape with no pass over it, timed beside the ops to measure a runtime's
                per-invocation overhead there

A registry entry also carries the block's cost: `spec.macs(...)` and `spec.params(...)` at a
shape, counted from the block's definition (checked against torch's FlopCounterMode and the
built module's parameters in the tests). Nothing here imports torch, so the LUT package can use
block names and costs without it.

FBNet block (Wu et al., CVPR 2019, https://arxiv.org/abs/1812.03443, Fig. 3 and Table 2):
1×1 group conv (ReLU) → channel shuffle if g > 1 → k×k depthwise conv (stride s, ReLU) →
1×1 group conv (no activation), BatchNorm after each conv, residual add when input and output
shapes match. As in the reference implementation (maskrcnn-benchmark `IRFBlock`, also what
HW-NAS-Bench measured), the first 1×1 conv is present at expansion 1 too.

FBNet `skip` where a layer changes channels or stride: the reference implementation's `Identity`
module becomes a 1×1 conv (stride s) + BN + ReLU whenever c_in != c_out or stride != 1, and a true
identity otherwise. We do the same (`modules.Skip`), so `skip` is a valid choice at every layer.

ProxylessNAS MBConv (Cai et al., ICLR 2019, https://arxiv.org/abs/1812.00332): 1×1 expand conv
(ReLU6, omitted at expansion 1) → k×k depthwise (ReLU6) → 1×1 linear conv, BN after each conv,
residual when shapes match. Its `zero` op contributes nothing: the layer's output is its input,
so it is only allowed where shapes match.

MACs count multiply-accumulates of convolutions and fully connected layers (the FBNet and
MobileNet papers' "FLOPs"); BatchNorm, activations, adds, shuffles and pooling are not counted.
Params count trainable parameters (conv weights, BN weight and bias, fc weight and bias).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "BlockSpec",
    "BLOCKS",
    "BLOCK_KINDS",
    "FBNET_BLOCKS",
    "PROXYLESS_BLOCKS",
    "block_spec",
    "register_block",
]

# Every kind a BlockSpec may have; `modules.build_block` has a builder for each (a test checks).
BLOCK_KINDS = ("ir", "mb", "skip", "zero", "conv", "pool_fc", "overhead")


def _out(size: int, stride: int) -> int:
    # Convs here use padding k//2 with odd k, so the output is ceil(size / stride).
    return (size + stride - 1) // stride


@dataclass(frozen=True)
class BlockSpec:
    """A block name decoded into plain data.

    kind: "ir" (FBNet inverted residual), "mb" (ProxylessNAS MBConv), "skip", "zero",
    "conv" (fixed conv+BN+act), "pool_fc" (fixed classifier), "overhead" (an invocation, no work).
    """

    name: str
    kind: str
    kernel: int = 1  # spatial kernel size of the main conv (depthwise for ir/mb)
    expansion: int = 1  # hidden channels = c_in * expansion
    groups: int = 1  # groups of both 1×1 convs (ir only)
    act: str = "relu"  # "relu" or "relu6"

    def __post_init__(self) -> None:
        if self.kind not in BLOCK_KINDS:
            raise ValueError(f"block {self.name!r}: unknown kind {self.kind!r}; known: {BLOCK_KINDS}")

    @property
    def searchable(self) -> bool:
        return self.kind in ("ir", "mb", "skip", "zero")

    def is_identity(self, c_in: int, c_out: int, stride: int) -> bool:
        """True where the block computes nothing at this shape (skip/zero keeping the shape)."""
        return self.kind in ("skip", "zero") and c_in == c_out and stride == 1

    # --- cost ------------------------------------------------------------------------------------
    def _convs(self, c_in: int, c_out: int, stride: int) -> list[tuple[int, int, int, int, int]]:
        """The block's convolutions as (c_in, c_out, kernel, groups, stride), in order."""
        mid = c_in * self.expansion
        if self.kind == "ir":
            g = self.groups
            return [(c_in, mid, 1, g, 1), (mid, mid, self.kernel, mid, stride), (mid, c_out, 1, g, 1)]
        if self.kind == "mb":
            expand = [] if self.expansion == 1 else [(c_in, mid, 1, 1, 1)]
            return expand + [(mid, mid, self.kernel, mid, stride), (mid, c_out, 1, 1, 1)]
        if self.kind == "skip":
            return [] if self.is_identity(c_in, c_out, stride) else [(c_in, c_out, 1, 1, stride)]
        if self.kind == "conv":
            return [(c_in, c_out, self.kernel, 1, stride)]
        return []  # zero; overhead and pool_fc are counted apart

    def macs(self, c_in: int, h: int, w: int, c_out: int, stride: int) -> int:
        """Multiply-accumulates of one forward pass at input (1, c_in, h, w)."""
        total = 0
        for ci, co, k, g, s in self._convs(c_in, c_out, stride):
            h, w = _out(h, s), _out(w, s)
            total += h * w * co * (ci // g) * k * k
        if self.kind == "pool_fc":
            total += c_in * c_out
        if self.kind == "overhead":  # one sampled output per 2×2 block of the input, per channel
            total += c_in * _out(h, (h + 1) // 2) * _out(w, (w + 1) // 2)
        return total

    def activations(self, c_in: int, h: int, w: int, c_out: int, stride: int) -> int:
        """Activation elements one forward pass touches: its input, each conv's output (a block's
        intermediates) and, for the classifier, the pooled vector and the logits."""
        total = c_in * h * w
        for _ci, co, _k, _g, s in self._convs(c_in, c_out, stride):
            h, w = _out(h, s), _out(w, s)
            total += co * h * w
        if self.kind == "pool_fc":
            total += c_in + c_out
        return total

    def params(self, c_in: int, c_out: int, stride: int) -> int:
        """Trainable parameters: conv weights (no bias), BN weight + bias, fc weight + bias."""
        total = sum(co * (ci // g) * k * k + 2 * co for ci, co, k, g, _ in self._convs(c_in, c_out, stride))
        if self.kind == "pool_fc":
            total += c_in * c_out + c_out
        return total


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
