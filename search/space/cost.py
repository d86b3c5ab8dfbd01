"""Parameter and multiply-accumulate counts of ops and architectures, from the block registry;
what a network's pass reads and writes; which ops stream their weights inside a network.

`macs` counts multiply-accumulates of convolutions and fully connected layers, the convention of
the FBNet and MobileNet papers ("FLOPs" there are MACs); BatchNorm, activations, adds and pooling
are not counted. Each block's count lives in its registry entry (`BlockSpec.macs/params`); this
module only sums them, so a new block kind cannot silently count 0.

    arch_macs(get_arch("fbnet_c"))     ->  385.0e6
"""

from __future__ import annotations

from typing import Callable, Sequence

from .arch import Arch, arch_ops
from .ops import Op
from .spaces import LayerShape, Space

__all__ = ["arch_macs", "arch_params", "network_bytes", "streamed_ops", "STREAMED_REUSE", "PRIVATE_CACHE_BYTES"]


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


# Mixed cache state ("mixed"). Inside a network a layer finds its input in cache (the previous
# layer just wrote it) and its weights out of it (a network's weights exceed a last-level cache).
# Whether the cold weights cost time depends on how the op uses them:
#   - a batch-1 fully connected layer (the classifier) uses each weight about once: it is bound by
#     where its weights come from (on this project's host the head's `pool_fc` runs ~4x its warm
#     time inside networks, and as fast as its cold time);
#   - a convolution whose weights fit in a core's private cache (L2) reads them from far memory
#     once per invocation and reuses them from there: warm and in-network times agree;
#   - a convolution whose weights fit in no private cache and outweigh its activations (the 7x7
#     stages' expanded blocks and the head conv: 1-3 MB of weights over 0.1-0.5 MB of
#     activations) re-reads them from the shared cache in a warm loop but from memory inside a
#     network, where per layer they ran 1.1-1.25x their warm and 0.9-1.05x their cold time.
# Timing every op cold over-charges the others: their intermediate and output buffers are cold
# too, unlike the memory a network's planner reuses. So "mixed" times cold the ops that use each
# weight fewer than STREAMED_REUSE times or whose weights exceed both PRIVATE_CACHE_BYTES and
# their activations, warm the rest, and an input shape's overhead op cold when every op it is
# subtracted from is. The rule is a property of shapes, kept here beside the op counts it reads: the
# profiler plans a job by it, and a latency predictor (`lut.predictor`) tells by it which ops of a
# space nobody measured a job would have timed cold.
STREAMED_REUSE = 8
PRIVATE_CACHE_BYTES = 512 << 10  # a core's L2 on this project's host and on big phone cores


def streamed_ops(timed: Sequence[Op], net_overhead: Op, *, whole_shapes: bool = False, dtype: str = "fp32",
                 private_cache_bytes: int = PRIVATE_CACHE_BYTES) -> set[str]:
    """Keys of the ops (overhead ops included) that "mixed" times cold: weights used < STREAMED_REUSE
    times per invocation (MACs per parameter), or more weight bytes than PRIVATE_CACHE_BYTES and
    than activation bytes (`private_cache_bytes`: a phone's own L2, read from its sysfs); and the
    overhead ops whose every op is such. `whole_shapes` keeps only
    the input shapes whose every op streams (replicas share the overhead op of their shape)."""
    bytes_per_el = 1 if dtype == "int8" else 4
    real = [op for op in timed if op.block != "overhead"]
    cold = {
        op.key for op in real
        if op.params > 0 and (
            op.macs < STREAMED_REUSE * op.params
            or op.params * bytes_per_el > max(private_cache_bytes, op.activations * bytes_per_el)
        )
    }  # fmt: skip
    shape = {op.key: (op.c_in, op.h, op.w) for op in timed}
    users: dict[tuple[int, int, int], list[str]] = {}
    for op in real:
        users.setdefault(shape[op.key], []).append(op.key)
    net_shape = (net_overhead.c_in, net_overhead.h, net_overhead.w)
    for ovh in (op for op in timed if op.block == "overhead"):
        keys = users.get(shape[ovh.key], [])
        if shape[ovh.key] != net_shape and keys and all(k in cold for k in keys):
            cold.add(ovh.key)
    if whole_shapes:
        cold = {k for k in cold if all(u in cold for u in users.get(shape[k], []))}
    return cold
