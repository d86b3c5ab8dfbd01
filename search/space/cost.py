"""Parameter and multiply-accumulate counts of ops and architectures, from the block registry.

`macs` counts multiply-accumulates of convolutions and fully connected layers, the convention of
the FBNet and MobileNet papers ("FLOPs" there are MACs); BatchNorm, activations, adds and pooling
are not counted. Each block's count lives in its registry entry (`BlockSpec.macs/params`); this
module only sums them, so a new block kind cannot silently count 0.

    arch_macs(get_arch("fbnet_c"))     ->  385.0e6
"""

from __future__ import annotations

from .arch import Arch, arch_ops
from .spaces import Space

__all__ = ["arch_macs", "arch_params"]


def arch_macs(arch: Arch, space: Space | None = None) -> int:
    """MACs of one forward pass of `arch` at its space's resolution (batch 1)."""
    return sum(op.macs for op in arch_ops(arch, space))


def arch_params(arch: Arch, space: Space | None = None) -> int:
    """Trainable parameters of `arch` (with its space's 1000-class classifier)."""
    return sum(op.params for op in arch_ops(arch, space))
