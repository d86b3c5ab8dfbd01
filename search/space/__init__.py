"""Search spaces: candidate blocks, macro-architectures, architectures as data, ops and costs.

Pure: nothing here writes files or touches a device; `load_arch` reads an explicit path. Block
names, spaces, ops, archs and their costs are plain data and import no torch (the LUT package
relies on that); the `nn.Module`s (`build_block`, `build_op`, `build_model`, `Network`, the block classes in
`search.space.modules`) are imported from here on first use.
"""

from importlib import import_module
from typing import Any

from .arch import (
    NAMED_ARCHS,
    Arch,
    ArchError,
    arch_ops,
    get_arch,
    load_arch,
    named_archs_for,
    register_arch,
)
from .blocks import BLOCKS, FBNET_BLOCKS, PROXYLESS_BLOCKS, BlockSpec, block_spec, register_block
from .cost import PRIVATE_CACHE_BYTES, STREAMED_REUSE, arch_macs, arch_params, network_bytes, streamed_ops
from .ops import Op, op_key, overhead_op, parse_op_key
from .spaces import SPACES, LayerShape, Space, get_space, list_spaces, proxy_space, reduced_strides, register_space

_TORCH_NAMES = {"Network", "build_block", "build_model", "build_op", "count_params"}  # from .modules

__all__ = [
    "Arch", "ArchError", "BLOCKS", "BlockSpec", "FBNET_BLOCKS", "LayerShape", "NAMED_ARCHS",
    "Network", "Op", "PRIVATE_CACHE_BYTES", "PROXYLESS_BLOCKS", "SPACES", "STREAMED_REUSE", "Space", "arch_macs", "arch_ops", "arch_params",
    "block_spec", "build_block", "build_model", "build_op", "count_params", "get_arch", "get_space",
    "list_spaces", "load_arch", "named_archs_for", "network_bytes", "op_key", "overhead_op", "parse_op_key",
    "proxy_space", "reduced_strides", "register_arch", "register_block", "register_space", "streamed_ops",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        return getattr(import_module(".modules", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
