"""`hwnas`: one command over the project's tools.

    hwnas profile  ...        python -m profiler.run       (a device's LUT, or archs end to end)
    hwnas lut ...             python -m lut                (list, show, validate, predict, compare, ...)
    hwnas search ...          python -m search.run         (a device-targeted search on a LUT)
    hwnas train ...           python -m search.train       (train, export and time a found arch)
    hwnas crossdevice ...     python -m search.crossdevice (search on N LUTs, every arch on every LUT)
    hwnas sweep ...           python -m search.sweep       (one search per target, β or λ: a Pareto front)
    hwnas deploy ...          python -m profiler.deploy    (export a trained network, time a model file)
    hwnas space ...           python -m search.space       (layers, ops and costs of a space or arch)
    hwnas devices ...         python -m android_harness devices
    hwnas doctor ...          python -m android_harness doctor
    hwnas android ...         python -m android_harness    (also: loopback, parse)
    hwnas list spaces|blocks|strategies|runtimes|formats [--json]

Every subcommand passes its arguments to that module's `main(argv)`, so `hwnas profile --help`
lists the profiler's options and `python -m …` keeps working the same. `hwnas list` reads the
registries (spaces, blocks, strategies, runtimes, LUT formats).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import dataclass
from typing import Any, Callable

from hwnas.flags import add_verbose, run_main


@dataclass(frozen=True)
class Command:
    module: str  # its main(argv) runs the command
    help: str
    prefix: tuple[str, ...] = ()  # arguments put before the user's (a subcommand of the module)


COMMANDS: dict[str, Command] = {
    "profile": Command("profiler.run", "measure a device's LUT, or archs end to end (python -m profiler.run)"),
    "lut": Command("lut.__main__", "inspect, validate, compare, import and export LUTs (python -m lut)"),
    "search": Command("search.run", "device-targeted architecture search on a LUT (python -m search.run)"),
    "train": Command("search.train", "train, export and time a found arch (python -m search.train)"),
    "crossdevice": Command("search.crossdevice", "search on several LUTs, every arch on every LUT "
                           "(python -m search.crossdevice)"),  # fmt: skip
    "sweep": Command("search.sweep", "one search per latency target, β or λ, and the accuracy-latency front "
                     "(python -m search.sweep)"),  # fmt: skip
    "deploy": Command("profiler.deploy", "export a trained network, time a model file (python -m profiler.deploy)"),
    "space": Command("search.space.__main__", "layers, ops and costs of a space or arch (python -m search.space)"),
    "devices": Command("android_harness.__main__", "attached phones and what to do about each", ("devices",)),
    "doctor": Command("android_harness.__main__", "check a phone is ready to profile", ("doctor",)),
    "android": Command("android_harness.__main__", "the adb harness: devices, doctor, parse, loopback "
                       "(python -m android_harness)"),  # fmt: skip
}


# --- hwnas list ---------------------------------------------------------------------------------
def _spaces() -> list[dict[str, Any]]:
    from search.space import get_space, list_spaces

    rows = []
    for name in list_spaces():
        s = get_space(name)
        rows.append({"name": name, "resolution": s.resolution, "width_mult": s.width_mult,
                     "layers": len(s.layers()), "candidates": list(s.candidates_all)})  # fmt: skip
    return rows


def _blocks() -> list[dict[str, Any]]:
    from search.space import BLOCKS

    return [{"name": n, "kind": b.kind, "kernel": b.kernel, "expansion": b.expansion, "groups": b.groups}
            for n, b in BLOCKS.items()]  # fmt: skip


def _strategies() -> list[dict[str, Any]]:
    from search.strategies import STRATEGIES

    return [{"name": n, "class": f"{c.__module__}.{c.__qualname__}"} for n, c in sorted(STRATEGIES.items())]


def _runtimes() -> list[dict[str, Any]]:
    from profiler.runtimes import RUNTIMES

    return [{"name": n, "format": i.suffix.lstrip("."), "dtypes": list(i.dtypes), "delegate": i.delegate,
             "phone_runner": i.runner} for n, i in RUNTIMES.items()]  # fmt: skip


def _formats() -> list[dict[str, Any]]:
    from lut.formats import FORMATS

    return [{"name": n, "suffixes": list(f.suffixes), "import": True, "export": bool(f.can_export)}
            for n, f in sorted(FORMATS.items())]  # fmt: skip


REGISTRIES: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "spaces": _spaces,
    "blocks": _blocks,
    "strategies": _strategies,
    "runtimes": _runtimes,
    "formats": _formats,
}


def _format_row(row: dict[str, Any]) -> str:
    rest = "  ".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                     for k, v in row.items() if k != "name")  # fmt: skip
    return f"{row['name']:<16} {rest}".rstrip()


def list_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hwnas list", description="What the registries hold.")
    p.add_argument("registry", choices=list(REGISTRIES), help="which registry to list")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    add_verbose(p)
    return p


def list_main(argv: list[str] | None = None) -> int:
    args = list_parser().parse_args(argv)
    rows = REGISTRIES[args.registry]()
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(_format_row(row))
    return 0


# --- dispatch -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: its help lists the subcommands (each parses its own arguments)."""
    p = argparse.ArgumentParser(
        prog="hwnas",
        description="Profile neural-network blocks into per-device latency LUTs and search networks "
        "against them. Each command takes the options of the module it names (`hwnas COMMAND --help`); "
        "`python -m MODULE` runs the same.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, cmd in COMMANDS.items():
        sub.add_parser(name, help=cmd.help, add_help=False)
    sub.add_parser("list", help="list spaces, blocks, strategies, runtimes or formats", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help(sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name == "list":
        return list_main(rest)
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r} (choose from {', '.join([*COMMANDS, 'list'])})")
    cmd = COMMANDS[name]
    return importlib.import_module(cmd.module).main([*cmd.prefix, *rest])


def console() -> int:
    """The `hwnas` console script."""
    return run_main(main)
