"""Search spaces: candidate blocks, macro-architectures, architectures as data, ops and costs.

Pure: nothing here reads files except `load_arch` on an explicit path, and nothing touches a
device.
"""

from .arch import (
    NAMED_ARCHS,
    Arch,
    ArchError,
    Network,
    arch_ops,
    build_model,
    get_arch,
    load_arch,
    named_archs_for,
    register_arch,
)
from .blocks import BLOCKS, FBNET_BLOCKS, PROXYLESS_BLOCKS, BlockSpec, block_spec, build_block
from .cost import count_macs, count_params
from .ops import Op, op_key, overhead_op, parse_op_key
from .spaces import SPACES, LayerShape, Space, get_space, list_spaces, register_space

__all__ = [
    "Arch", "ArchError", "BLOCKS", "BlockSpec", "FBNET_BLOCKS", "LayerShape", "NAMED_ARCHS",
    "Network", "Op", "PROXYLESS_BLOCKS", "SPACES", "Space", "arch_ops", "block_spec",
    "build_block", "build_model", "count_macs", "count_params", "get_arch", "get_space",
    "list_spaces", "load_arch", "named_archs_for", "op_key", "overhead_op", "parse_op_key", "register_arch",
    "register_space",
]  # fmt: skip
