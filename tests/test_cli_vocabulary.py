"""Every command-line parser speaks the vocabulary of `hwnas.flags`.

The parsers are taken from each CLI module as its `main` builds them (its `parse_args` is
intercepted), so a new command is covered by adding its module to `CLI_MODULES`.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from hwnas.flags import RUNTIME_NAMES, VOCABULARY, ListAction

# Every module with a command line: "module" (its main(argv) builds the parser) or
# "module:function" (a function that returns it).
CLI_MODULES = [
    "profiler.run",
    "profiler.deploy",
    "profiler.validate",
    "lut.__main__",
    "search.run",
    "search.train",
    "search.crossdevice",
    "search.sweep",
    "search.space.__main__",
    "android_harness.__main__",
    "hwnas.cli:list_parser",
    "bench.cache_states",
    "bench.data_loader",
    "bench.lut_accuracy",
    "bench.lut_build_time",
    "bench.lut_repeatability",
    "bench.overhead_op",
    "bench.predictor_accuracy",
    "bench.search_memory",
    "bench.search_quality",
    "bench.search_steering",
    "bench.search_step",
    "bench.train_recipe",
]

# Names that other commands (or older releases) used for an idea of the vocabulary: none may be
# visible in --help; where they still parse, they are hidden aliases.
OTHER_NAMES = {
    "luts_root": {"--root", "--lut-root", "--lut-store", "--store"},
    "torch_device": {"--device-train", "--train-device", "--cuda"},
    "device": {"--serial", "--measure", "--target"},
    "runtime": {"--runtimes", "--backend"},
    "progress": {"--progress", "--show-progress", "--quiet"},
    "verbose": {"--debug"},
}


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def parser_of(spec: str) -> argparse.ArgumentParser:
    module, _, function = spec.partition(":")
    mod = importlib.import_module(module)
    if function:
        return getattr(mod, function)()

    def capture(self: argparse.ArgumentParser, *args: object, **kw: object) -> None:
        raise _Captured(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, "parse_known_args", capture)
        mp.setattr(argparse.ArgumentParser, "parse_args", capture)
        try:
            mod.main([])
        except _Captured as c:
            return c.parser
    raise AssertionError(f"{module}.main([]) parsed no arguments")


def walk(parser: argparse.ArgumentParser, path: str = "", inherited: frozenset = frozenset()) -> Iterator:
    """(path, parser, option strings of its ancestors) for the parser and every subcommand."""
    yield path or parser.prog, parser, inherited
    own = inherited | {o for a in parser._actions for o in a.option_strings}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if sub.add_help or sub._actions:  # not a pass-through to another module's parser
                    yield from walk(sub, f"{path or parser.prog} {name}", own)


def _has_subcommands(parser: argparse.ArgumentParser) -> bool:
    return any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)


def _visible(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.help != argparse.SUPPRESS
            and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]  # fmt: skip


@pytest.fixture(scope="module")
def parsers() -> dict[str, argparse.ArgumentParser]:
    return {spec: parser_of(spec) for spec in CLI_MODULES}


def vocabulary_problems(top: argparse.ArgumentParser) -> list[str]:
    problems = []
    for path, parser, inherited in walk(top):
        options = {o for a in parser._actions for o in a.option_strings}
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if action.help is None:
                problems.append(f"{path}: {'/'.join(action.option_strings) or action.dest} has no help")
        for action in _visible(parser):
            shown = set(action.option_strings)
            for idea, names in OTHER_NAMES.items():
                if shown & names:
                    problems.append(f"{path}: {sorted(shown & names)} is visible; the vocabulary says "
                                    f"{VOCABULARY[idea]}")  # fmt: skip
            if action.dest in ("luts_root", "torch_device") and VOCABULARY[action.dest] not in shown:
                problems.append(f"{path}: {action.dest} is {sorted(shown)}, not {VOCABULARY[action.dest]}")
            if "--device" in shown and action.choices and set(action.choices) & {"cpu", "cuda"}:
                problems.append(f"{path}: --device is where to measure; the torch device is --torch-device")
            if "--out" in shown and action.dest != "out":
                problems.append(f"{path}: --out is the command's own output, here it sets {action.dest}")
            if shown & {"--runtime", "--export"} and action.choices is not None:
                if not set(action.choices) <= set(RUNTIME_NAMES):
                    problems.append(f"{path}: {sorted(shown)} choices {action.choices} outside {RUNTIME_NAMES}")
            allowed = getattr(action, "allowed", None)  # a list flag checks its items itself
            if shown & {"--runtime", "--export"} and allowed is not None and not set(allowed) <= set(RUNTIME_NAMES):
                problems.append(f"{path}: {sorted(shown)} choices {allowed} outside {RUNTIME_NAMES}")
            if "--no-progress" in shown and (action.dest != "progress" or "--progress" not in options):
                problems.append(f"{path}: --no-progress sets dest 'progress' and keeps --progress as an alias")
            if action.option_strings and action.nargs in ("+", "*") and not isinstance(action, ListAction):
                problems.append(f"{path}: {sorted(shown)} takes a space-separated list; lists are comma-separated")
            if isinstance(action, argparse._StoreTrueAction) and action.dest == "progress":
                problems.append(f"{path}: progress is on at a terminal, so the visible flag is --no-progress")
        if not _has_subcommands(parser) and not {"-v", "--verbose"} <= (options | inherited):
            problems.append(f"{path}: no -v/--verbose")
    return problems


@pytest.mark.parametrize("spec", CLI_MODULES)
def test_parser_follows_the_vocabulary(spec: str, parsers: dict) -> None:
    problems = vocabulary_problems(parsers[spec])
    assert not problems, "\n".join(problems)


def test_a_parser_off_the_vocabulary_is_caught() -> None:
    p = argparse.ArgumentParser(prog="off")
    sub = p.add_subparsers(dest="command")
    s = sub.add_parser("run", help="a subcommand")
    s.add_argument("--root", help="LUT store root")
    s.add_argument("--device", choices=["cpu", "cuda"], help="torch device")
    s.add_argument("--progress", action="store_true", help="progress bars")
    s.add_argument("--out", dest="luts_root", help="LUT store root")
    s.add_argument("--runtime", choices=["executorch", "onnx"], help="runtime")
    s.add_argument("--json", action="store_true")
    s.add_argument("--seeds", nargs="+", type=int, help="seeds")
    problems = "\n".join(vocabulary_problems(p))
    for expected in ("['--root'] is visible", "--device is where to measure", "['--progress'] is visible",
                     "--out is the command's own output", "choices ['executorch', 'onnx']", "--json has no help",
                     "no -v/--verbose", "luts_root is ['--out'], not --luts-root", "['--seeds'] takes a space-separated"):  # fmt: skip
        assert expected in problems, expected


# (module, argv, dest, value): older names and list forms still parse, to the new destination
ALIASES = [
    ("profiler.run", ["--root", "X"], "luts_root", "X"),
    ("profiler.run", ["--out", "X"], "luts_root", "X"),
    ("profiler.run", ["--progress"], "progress", True),
    ("profiler.run", ["--no-progress"], "progress", False),
    ("profiler.run", [], "runtime", "executorch"),
    ("profiler.run", ["--runtime", "onnx"], "runtime", "onnxruntime"),
    ("profiler.run", ["--device", "a", "--device", "b,c"], "device", ["a", "b", "c"]),
    ("profiler.run", ["--arch", "fbnet_a,fbnet_b"], "arch", ["fbnet_a", "fbnet_b"]),
    ("profiler.validate", ["L", "--root", "X"], "luts_root", "X"),
    ("profiler.deploy", ["export", "--arch", "a", "--weights", "w", "--runtime", "onnx", "--out", "o"],
     "runtime", "onnxruntime"),
    ("profiler.deploy", ["check", "--runtime", "pte", "--runtime", "onnx,tflite"], "runtime",
     ["executorch", "onnxruntime", "tflite"]),
    ("profiler.deploy", ["measure", "--model", "m.pte", "--progress"], "progress", True),
    ("lut.__main__", ["list", "--root", "X"], "luts_root", "X"),
    ("lut.__main__", ["predict", "L", "--arch", "a", "--arch", "b,c"], "arch", ["a", "b", "c"]),
    ("search.run", ["--out", "o", "--device-train", "cuda"], "torch_device", "cuda"),
    ("search.run", ["--out", "o", "--progress"], "progress", True),
    ("search.run", ["--out", "o", "--runtime", "onnx"], "runtime", "onnxruntime"),
    ("search.train", ["--arch", "a", "--device-train", "cpu"], "torch_device", "cpu"),
    ("search.train", ["--arch", "a", "--measure", "host"], "measure", "host"),
    ("search.train", ["--arch", "a", "--device", "SERIAL"], "measure", "SERIAL"),
    ("search.train", ["--arch", "a", "--export", "onnx", "--export", "tflite,executorch"], "export",
     ["onnxruntime", "tflite", "executorch"]),
    ("search.crossdevice", ["--lut", "a,b", "--out", "o", "--serial", "d=s"], "serial", ["d=s"]),
    ("search.crossdevice", ["--lut", "a", "--lut", "b", "--out", "o"], "lut", ["a", "b"]),
    ("android_harness.__main__", ["-v", "devices"], "verbose", True),
    ("android_harness.__main__", ["doctor", "--device", "S", "-v"], "verbose", True),
    ("android_harness.__main__", ["--adb-port", "5038", "devices"], "adb_port", 5038),
    ("android_harness.__main__", ["devices", "--adb-port", "5038"], "adb_port", 5038),
    ("bench.lut_accuracy", ["--runtimes", "executorch", "onnx", "--root", "X"], "runtimes",
     ["executorch", "onnxruntime"]),
    ("bench.lut_accuracy", ["--root", "X"], "luts_root", "X"),
    ("bench.overhead_op", ["--runtime", "executorch,tflite"], "runtimes", ["executorch", "tflite"]),
    ("bench.search_step", ["--device", "cpu"], "torch_device", "cpu"),
]  # fmt: skip


@pytest.mark.parametrize(("module", "argv", "dest", "value"), ALIASES)
def test_old_names_parse_to_the_new_dest(module: str, argv: list, dest: str, value: object, parsers: dict) -> None:
    assert getattr(parsers[module].parse_args(argv), dest) == value


@pytest.mark.parametrize(("module", "argv"), [
    ("profiler.run", ["--runtime", "tensorrt"]),
    ("profiler.run", ["--device", "host", "--runtime", "onnx,tflite"]),
    ("search.train", ["--arch", "a", "--export", "tensorrt"]),
    ("search.run", ["--out", "o", "--torch-device", "tpu"]),
    ("bench.lut_accuracy", ["--runtime", "executorch,nope"]),
    ("lut.__main__", ["plot", "L"]),
])  # fmt: skip
def test_wrong_input_exits_2_with_one_message(module: str, argv: list, parsers: dict, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        parsers[module].parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1, err


def test_closed_pipe_ends_quietly() -> None:
    code = ("from hwnas.flags import run_main\n"
            "def main(argv):\n    for i in range(200000):\n        print(i)\n    return 0\n"
            "raise SystemExit(run_main(main))")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.read(10)
    proc.stdout.close()  # the reader goes away, as `| head` does
    assert proc.wait(timeout=60) == 0
    assert proc.stderr.read() == b""
