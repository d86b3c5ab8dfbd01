"""The command-line vocabulary: one flag per idea, the same in every command.

    | idea                                   | flag                                  |
    |----------------------------------------|---------------------------------------|
    | where to measure                       | --device host|SERIAL|SERIAL@HOST:PORT |
    | torch device for training and search   | --torch-device cpu|cuda               |
    | LUT store root                         | --luts-root                           |
    | a command's own output folder          | --out                                 |
    | runtime (also for exports)             | --runtime executorch|tflite|onnxruntime|
    | lists                                  | comma-separated                       |
    | progress                               | on at a terminal, --no-progress       |
    | verbosity                              | -v/--verbose                          |

Each `add_*` function adds one idea's flag to a parser, with the names an older release used as
hidden aliases (`help=argparse.SUPPRESS`) that parse to the same destination. Values are checked
when the arguments are parsed, so a wrong one exits with status 2 and one message.

Standard library only: every package's CLI imports this module, so it imports none of them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

# idea -> the flag that says it (tests walk every parser against this table)
VOCABULARY: dict[str, str] = {
    "device": "--device",
    "torch_device": "--torch-device",
    "luts_root": "--luts-root",
    "out": "--out",
    "runtime": "--runtime",
    "progress": "--no-progress",
    "verbose": "--verbose",
}
RUNTIME_NAMES = ("executorch", "tflite", "onnxruntime")  # profiler.runtimes registers these
RUNTIME_ALIASES = {"onnx": "onnxruntime"}  # older value names, still accepted
DEFAULT_RUNTIME = "executorch"  # what scripts/setup.sh profiles with
TORCH_DEVICES = ("cpu", "cuda")
DEVICE_METAVAR = "host|SERIAL|SERIAL@HOST:PORT"
DEFAULT_LUTS_ROOT = "luts"


def hidden_alias(p: argparse.ArgumentParser | Any, *flags: str, dest: str, **kw: Any) -> None:
    """An older name of a flag: it parses to `dest` and is left out of --help."""
    p.add_argument(*flags, dest=dest, help=argparse.SUPPRESS, **kw)


# --- lists --------------------------------------------------------------------------------------
def split_list(text: str) -> list[str]:
    """'a,b,,c ' -> ['a', 'b', 'c']."""
    return [v.strip() for v in text.split(",") if v.strip()]


def comma_list(item: Callable[[str], Any] = str, choices: Iterable[Any] | None = None) -> Callable[[str], list]:
    """An argparse `type` for a one-shot comma-separated list: '1,2' -> [1, 2]."""
    allowed = None if choices is None else list(choices)

    def parse(text: str) -> list:
        values = [item(v) for v in split_list(text)]
        if not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
        for v in values:
            if allowed is not None and v not in allowed:
                raise argparse.ArgumentTypeError(
                    f"invalid choice {v!r} (choose from {', '.join(map(str, allowed))})"
                )
        return values

    parse.__name__ = "comma-separated list"
    return parse


class ListAction(argparse.Action):
    """A list flag: comma-separated values, and the flag may be repeated (`--x a,b --x c`);
    with `nargs="+"` the older space-separated form (`--x a b`) parses too. Each value goes
    through `item` (the `type`) and `choices` after splitting."""

    def __init__(self, option_strings: Sequence[str], dest: str, item: Callable[[str], Any] = str,
                 choices: Iterable[Any] | None = None, **kw: Any) -> None:  # fmt: skip
        self.item = item
        self.allowed = None if choices is None else list(choices)
        if self.allowed is not None and kw.get("metavar") is None:
            kw["metavar"] = "{" + ",".join(map(str, self.allowed)) + "}[,...]"
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:  # fmt: skip
        texts = values if isinstance(values, list) else [values]
        current = getattr(namespace, self.dest, None)
        out = [] if current is None or current is self.default else list(current)
        for text in texts:
            for v in split_list(text):
                try:
                    value = self.item(v)
                except (ValueError, argparse.ArgumentTypeError) as e:
                    parser.error(f"argument {option_string}: {e}")
                if self.allowed is not None and value not in self.allowed:
                    parser.error(f"argument {option_string}: invalid choice {v!r} "
                                 f"(choose from {', '.join(map(str, self.allowed))})")  # fmt: skip
                out.append(value)
        if not out:
            parser.error(f"argument {option_string}: expected a comma-separated list")
        setattr(namespace, self.dest, out)


# --- one idea, one flag -------------------------------------------------------------------------
def add_device(p: Any, *, help: str, multiple: bool = False, required: bool = False,
               default: Any = None, old: Sequence[str] = (), dest: str = "device",
               metavar: str = DEVICE_METAVAR) -> None:  # fmt: skip
    """`--device`: where to measure ('host', an adb serial, or SERIAL@HOST:PORT of an adb
    server elsewhere). `multiple`: a list (comma-separated or repeated)."""
    kw: dict[str, Any] = dict(required=required, default=default)
    if multiple:
        kw.update(action=ListAction, metavar=metavar + "[,...]")
    else:
        kw.update(metavar=metavar)
    p.add_argument("--device", dest=dest, help=help, **kw)
    for flag in old:  # the same default object: a list flag given first under an old name replaces it
        hidden_alias(p, flag, dest=dest, **{k: v for k, v in kw.items() if k not in ("required", "metavar")})


def add_torch_device(p: Any, *, default: str = "cpu", old: Sequence[str] = ("--device-train",)) -> None:
    """`--torch-device cpu|cuda`: where torch trains and searches."""
    p.add_argument("--torch-device", dest="torch_device", default=default, choices=TORCH_DEVICES,
                   help=f"torch device for training and search (default {default})")  # fmt: skip
    for flag in old:
        hidden_alias(p, flag, dest="torch_device", choices=TORCH_DEVICES)


def add_luts_root(p: Any, *, default: str = DEFAULT_LUTS_ROOT, old: Sequence[str] = ("--root",),
                  help: str | None = None) -> None:  # fmt: skip
    """`--luts-root DIR`: the root of the LUT store."""
    p.add_argument("--luts-root", dest="luts_root", default=default, metavar="DIR",
                   help=help or f"LUT store root (default {default})")  # fmt: skip
    for flag in old:
        hidden_alias(p, flag, dest="luts_root")


def add_out(p: Any, *, help: str, required: bool = False, default: str | None = None) -> None:
    """`--out PATH`: what the command itself writes (never the LUT store)."""
    p.add_argument("--out", dest="out", required=required, default=default, metavar="PATH", help=help)


def runtime_name(text: str) -> str:
    """A runtime value as given -> its name ('onnx' -> 'onnxruntime')."""
    return RUNTIME_ALIASES.get(text, text)


def add_runtime(p: Any, *, help: str, choices: Iterable[str] = RUNTIME_NAMES, default: Any = None,
                required: bool = False, multiple: bool = False, flag: str = "--runtime",
                dest: str = "runtime", old: Sequence[str] = (), spaced: bool = False,
                convert: Callable[[str], str] = runtime_name) -> None:  # fmt: skip
    """`--runtime executorch|tflite|onnxruntime` (also for exports); 'onnx' is accepted for
    'onnxruntime' (`convert` maps a value as given to a runtime name). `multiple`: a list
    (comma-separated or repeated); `spaced`: the older space-separated form parses too."""
    choices = list(choices)
    if multiple:
        kw: dict[str, Any] = dict(action=ListAction, item=convert, choices=choices)
        if spaced:
            kw["nargs"] = "+"
    else:
        kw = dict(type=convert, choices=choices)
    p.add_argument(flag, dest=dest, default=default, required=required, help=help, **kw)
    for alias in old:  # the same default object: a list flag given first under an old name replaces it
        hidden_alias(p, alias, dest=dest, default=default, **kw)


def progress_default() -> bool:
    """Progress bars are on when stderr is a terminal."""
    try:
        return os.isatty(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # a replaced stderr (tests) has no descriptor
        return False


def add_progress(p: Any) -> None:
    """`--no-progress` (dest `progress`): progress bars are on at a terminal, off otherwise;
    the older opt-in `--progress` forces them on."""
    p.add_argument("--no-progress", dest="progress", action="store_false", default=progress_default(),
                   help="no progress bars (default: shown when stderr is a terminal)")  # fmt: skip
    hidden_alias(p, "--progress", dest="progress", action="store_true")


def add_verbose(p: Any, *, nested: bool = False) -> None:
    """`-v/--verbose`: debug logging. `nested`: on a subcommand whose parent has it too (its
    default then leaves the parent's value alone)."""
    p.add_argument("-v", "--verbose", dest="verbose", action="store_true",
                   default=argparse.SUPPRESS if nested else False, help="debug logging")  # fmt: skip


# --- running a command --------------------------------------------------------------------------
def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """`main(argv)`, ending quietly when stdout is a closed pipe (`… | head`)."""
    try:
        status = main(argv)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that flush is quiet too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
