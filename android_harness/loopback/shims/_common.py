"""What both runner shims share: device paths, flags, logcat, timing resolution, injected faults."""

from __future__ import annotations

import math
import os
import sys
import time
from datetime import datetime

__all__ = ["host_path", "parse_flags", "logcat", "apply_faults", "FlagError", "tool_us",
           "RUNNER_FORMS", "runner_form", "slow_first"]

# Older releases' output forms a shim can print instead of the current one (the loopback device's
# `runner_form` fault, $LOOPBACK_RUNNER_FORM): name -> (runner, the builds that print it).
RUNNER_FORMS = {
    "tf1.12": ("benchmark_model", "TensorFlow 1.12-1.13: 'Running benchmark for N iterations', "
                                  "'Average inference timings in us: Warmup: W, Init: I, no stats: A'"),
    "tf1.15": ("benchmark_model", "TensorFlow 1.14-1.15: 'Running benchmark for at least N iterations "
                                  "and at least S seconds ...', the same 'no stats:' line"),
    "tf2.0": ("benchmark_model", "TensorFlow 2.0: '... Warmup: W, Init: I, Inference: A'"),
    "et0.4": ("executor_runner", "ExecuTorch 0.4-0.5: only --model_path, one execution, "
                                 "'Model executed successfully.' without a time"),
    "et0.6": ("executor_runner", "ExecuTorch 0.6-1.2: 'Model executed successfully N time(s) in X ms.' "
                                 "only, no per-execution lines"),
}


def runner_form(runner: str) -> str | None:
    """The older form this runner prints on this device, or None for the current one."""
    form = os.environ.get("LOOPBACK_RUNNER_FORM") or None
    return form if form and RUNNER_FORMS.get(form, ("",))[0] == runner else None


def slow_first() -> list[float]:
    """[N, k]: the first N inferences of this launch take k times as long ($LOOPBACK_SLOW_FIRST)."""
    value = os.environ.get("LOOPBACK_SLOW_FIRST", "")
    if not value:
        return [0, 1.0]
    count, _, factor = value.partition(":")
    return [int(count), float(factor)]


def tool_us(value_us: float) -> int:
    """A host timing as the tools report it: whole µs, or rounded up to the loopback device's
    timing quantum ($LOOPBACK_TIMING_QUANTUM_US) so that tests meet equal runs deterministically."""
    quantum = int(os.environ.get("LOOPBACK_TIMING_QUANTUM_US", "0") or 0)
    if quantum > 0:
        return max(1, math.ceil(value_us / quantum)) * quantum
    return int(round(value_us))


class FlagError(ValueError):
    """A command-line flag the runner does not accept."""


def host_path(device_path: str) -> str:
    """The host file behind a device path; relative paths are relative to the process cwd."""
    root = os.environ.get("LOOPBACK_ROOT", "")
    if device_path.startswith("/") and root:
        return os.path.join(root, device_path.lstrip("/"))
    return device_path


def parse_flags(argv: list[str], known: dict[str, str], *, equals_only: bool) -> dict[str, str]:
    """`--name=value` (and, gflags style, `--name value` and bare `--bool`) into a dict."""
    values = dict(known)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-"):
            raise FlagError(f"unexpected argument '{arg}'")
        name, sep, value = arg.lstrip("-").partition("=")
        if name not in known:
            raise FlagError(f"unknown command line flag '{name}'")
        if not sep:
            if equals_only:
                raise FlagError(f"flag '{name}' needs a value: --{name}=VALUE")
            if known[name] in ("true", "false"):
                value = "true"
            elif i + 1 < len(argv):
                i += 1
                value = argv[i]
            else:
                raise FlagError(f"flag '{name}' is missing its argument")
        values[name] = value
        i += 1
    return values


def logcat(tag: str, level: str, message: str) -> None:
    """Append one line to the device log in `logcat -v threadtime` format."""
    path = os.environ.get("LOOPBACK_LOGCAT")
    if not path:
        print(message, file=sys.stderr)
        return
    stamp = datetime.now().strftime("%m-%d %H:%M:%S.%f")[:-3]
    pid = os.getpid()
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(f"{stamp} {pid:5d} {pid:5d} {level} {tag:<8}: {message}\n")


def apply_faults(model_path: str) -> None:
    """Crash, hang or print a report in an unknown format here when the loopback device was told
    to (for this model, or for every run: $LOOPBACK_RUNNER_FAULT)."""
    fault = os.environ.get("LOOPBACK_RUNNER_FAULT")
    if fault == "crash":
        sys.stdout.flush()
        os.abort()
    if fault == "unknown-format":  # a foreign build's report: exit 0, no line any parser knows
        print(f"model {os.path.basename(model_path)}: OK\nlatency: mean 0.42 ms over 2 runs")
        sys.stdout.flush()
        sys.exit(0)
    crash_on = os.environ.get("LOOPBACK_CRASH_ON")
    if crash_on and crash_on in model_path:
        sys.stdout.flush()
        os.abort()
    hang_on = os.environ.get("LOOPBACK_HANG_ON")
    if hang_on and hang_on in model_path:
        while True:
            time.sleep(3600)
