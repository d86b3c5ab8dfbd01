"""Ops: one block at one input shape, and their keys.

An op key is the LUT row key and the export file stem. `op_key` makes it and `parse_op_key`
reads it back; nothing else formats one.

    op_key("k3_e6", c_in=16, h=112, w=112, c_out=24, stride=2)  ->  "k3_e6-i16x112x112-o24-s2"
    parse_op_key("k3_e6-i16x112x112-o24-s2")  ->  Op("k3_e6", 16, 112, 112, 24, 2)

Keys sort by block, then shape, and contain only [A-Za-z0-9_x-], so they are safe file names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .blocks import block_spec

if TYPE_CHECKING:  # torch is imported only by the method that makes a tensor
    import torch

__all__ = ["Op", "op_key", "parse_op_key", "overhead_op"]

_KEY = re.compile(
    r"^(?P<block>[A-Za-z0-9_]+)-i(?P<c_in>\d+)x(?P<h>\d+)x(?P<w>\d+)-o(?P<c_out>\d+)-s(?P<stride>\d+)$"
)


def op_key(block: str, *, c_in: int, h: int, w: int, c_out: int, stride: int) -> str:
    """The one place an op key is formatted."""
    return f"{block}-i{c_in}x{h}x{w}-o{c_out}-s{stride}"


@dataclass(frozen=True, order=True)
class Op:
    """A block at an input shape (batch 1, NCHW)."""

    block: str
    c_in: int
    h: int
    w: int
    c_out: int
    stride: int

    def __post_init__(self) -> None:
        block_spec(self.block)  # unknown names fail here, with the list of known ones

    @property
    def key(self) -> str:
        return op_key(
            self.block, c_in=self.c_in, h=self.h, w=self.w, c_out=self.c_out, stride=self.stride
        )

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.c_in, self.h, self.w)

    @property
    def output_shape(self) -> tuple[int, ...]:
        if block_spec(self.block).kind == "pool_fc":
            return (1, self.c_out)
        return (1, self.c_out, _out_size(self.h, self.stride), _out_size(self.w, self.stride))

    @property
    def is_identity(self) -> bool:
        """True for ops that compute nothing (skip/zero at matching shapes): latency ~ 0."""
        return block_spec(self.block).is_identity(self.c_in, self.c_out, self.stride)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one forward pass (the block registry's count)."""
        return block_spec(self.block).macs(self.c_in, self.h, self.w, self.c_out, self.stride)

    @property
    def activations(self) -> int:
        """Activation elements one forward pass touches (input, intermediates, output)."""
        return block_spec(self.block).activations(self.c_in, self.h, self.w, self.c_out, self.stride)

    @property
    def params(self) -> int:
        """Trainable parameters (the block registry's count)."""
        return block_spec(self.block).params(self.c_in, self.c_out, self.stride)

    def example_input(self, seed: int = 0) -> "torch.Tensor":
        import torch

        g = torch.Generator().manual_seed(seed)
        return torch.randn(self.input_shape, generator=g)


def overhead_op(op: Op) -> Op:
    """The trivial op with the same input shape as `op`, timed to measure invocation overhead."""
    return Op("overhead", op.c_in, op.h, op.w, op.c_in, 1)


def parse_op_key(key: str) -> Op:
    """Inverse of `op_key`; a malformed key is a ValueError naming it."""
    m = _KEY.match(key)
    if m is None:
        raise ValueError(
            f"malformed op key {key!r}; expected BLOCK-i<C>x<H>x<W>-o<C>-s<S>, "
            "e.g. 'k3_e6-i16x112x112-o24-s2'"
        )
    return Op(
        m["block"],
        int(m["c_in"]),
        int(m["h"]),
        int(m["w"]),
        int(m["c_out"]),
        int(m["stride"]),
    )


def _out_size(size: int, stride: int) -> int:
    # Convs here use padding k//2 with odd k, so the output is ceil(size / stride).
    return (size + stride - 1) // stride
