"""`python -m search.space info --space fbnet [--arch fbnet_c | --arch-file a.json] [--json]`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

import pandas as pd

from hwnas.flags import add_verbose, run_main

from .arch import Arch, ArchError, get_arch, load_arch
from .cost import arch_macs, arch_params
from .spaces import get_space, list_spaces


def space_info(space_name: str, arch: Arch | None = None) -> dict[str, Any]:
    """Everything `info` prints, as data."""
    space = get_space(space_name)
    layers = space.layers()
    info: dict[str, Any] = {
        "space": space.name,
        "space_hash": space.hash(),
        "resolution": space.resolution,
        "width_mult": space.width_mult,
        "num_layers": len(layers),
        "num_candidates": len(space.candidates_all),
        "candidates": list(space.candidates_all),
        "num_unique_ops": len(space.unique_ops()),
        "layers": [
            {
                "layer": layer.index,
                "stage": layer.stage,
                "c_in": layer.c_in,
                "c_out": layer.c_out,
                "h": layer.h,
                "w": layer.w,
                "stride": layer.stride,
                "candidates": len(space.candidates(layer)),
            }
            for layer in layers
        ],
    }
    if arch is not None:
        arch.validate(space)
        info["arch"] = arch.name
        info["blocks"] = list(arch.blocks)
        info["head_channels"] = arch.head_channels or space.default_head
        info["params"] = arch_params(arch, space)
        info["macs"] = arch_macs(arch, space)
        for row, block in zip(info["layers"], arch.blocks):
            row["block"] = block
    return info


def _print_info(info: dict[str, Any]) -> None:
    print(
        f"space {info['space']}  ({info['resolution']}×{info['resolution']}, width "
        f"{info['width_mult']:g}, hash {info['space_hash']})"
    )
    print(pd.DataFrame(info["layers"]).to_string(index=False))
    print(
        f"{info['num_layers']} searchable layers × {info['num_candidates']} candidates "
        f"({', '.join(info['candidates'])}); {info['num_unique_ops']} unique ops incl. fixed ops"
    )
    if "params" in info:
        print(
            f"arch {info['arch'] or '(unnamed)'}: head {info['head_channels']}, "
            f"params {info['params']:,} ({info['params'] / 1e6:.2f} M), "
            f"macs {info['macs']:,} ({info['macs'] / 1e6:.1f} M)"
        )


def _cmd_info(args: argparse.Namespace) -> int:
    arch = None
    if args.arch:
        arch = get_arch(args.arch)
    elif args.arch_file:
        arch = load_arch(args.arch_file)
    space = args.space or (arch.space if arch else "fbnet")
    if arch is not None and arch.space != get_space(space).name:
        raise ArchError(f"arch {arch.name or ''} belongs to space {arch.space!r}, not {space!r}")
    info = space_info(space, arch)
    if args.json:
        print(json.dumps(info))
    else:
        _print_info(info)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m search.space", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("info", help="layer table, unique ops, params/macs of an arch")
    p.add_argument("--space", help=f"space name ({', '.join(list_spaces())}; e.g. fbnet-r96-w0.35)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--arch", help="a named arch, e.g. fbnet_c")
    g.add_argument("--arch-file", help="an arch JSON file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_verbose(p)
    p.set_defaults(func=_cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        return args.func(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run_main(main))
