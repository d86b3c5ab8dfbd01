"""Parameter and multiply-accumulate counts.

`macs` counts multiply-accumulates of convolutions and fully connected layers, the convention of
the FBNet and MobileNet papers ("FLOPs" there are MACs); BatchNorm, activations, adds and pooling
are not counted.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["count_params", "count_macs"]


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_macs(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one forward pass at `input_shape` (batch included), from the real output shapes."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(input_shape))
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return total
