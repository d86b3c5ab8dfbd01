"""Parameter and multiply-accumulate counts of ops and architectures, from the block registry.

`macs` counts multiply-accumulates of convolutions and fully connected layers, the convention of
the FBNet and MobileNet papers ("FLOPs" there are MACs); BatchNorm, activations, adds and pooling
are not counted. Each block's count lives in its registry entry (`BlockSpec.macs/params`); this
module only sums them, so a new block kind cannot silently count 0.

    arch_macs(get_arch("fbnet_c"))     ->  385.0e6
"""

from __future__ import annotations

from typing import Callable

from .arch import Arch, arch_ops
from .ops import Op
from .spaces import LayerShape, Space

__all__ = ["arch_macs", "arch_params", "network_bytes"]


def arch_macs(arch: Arch, space: Space | None = None) -> int:
    """MACs of one forward pass of `arch` at its space's resolution (batch 1)."""
    return sum(op.macs for op in arch_ops(arch, space))


def arch_params(arch: Arch, space: Space | None = None) -> int:
    """Trainable parameters of `arch` (with its space's 1000-class classifier)."""
    return sum(op.params for op in arch_ops(arch, space))


def network_bytes(space: Space, bytes_per_el: int = 4) -> int:
    """What a network of `space` reads and writes in one forward pass, for an average arch (each
    layer's candidates' mean, the fixed ops at the default head): every weight and every layer's
    activations (input, intermediates and output), i.e. what passes through the caches between two
    uses of one layer's weights, with no credit for a memory plan's reuse of buffers. FBNet fp32:
    ≈ 39 MiB at 224 px and width 1.0, 22 MiB at 160 px and width 0.75, 10 MiB at 128 px and width
    0.5."""

    def mean(layer: LayerShape, of: Callable[[Op], int]) -> float:
        blocks = space.candidates(layer)
        return sum(of(layer.op(b)) for b in blocks) / len(blocks)

    fixed = list(space.fixed_ops().values())
    total = sum(mean(layer, lambda op: op.params + op.activations) for layer in space.layers())
    total += sum(op.params + op.activations for op in fixed)
    return round(total * bytes_per_el)
