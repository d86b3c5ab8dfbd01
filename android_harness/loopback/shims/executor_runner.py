"""`executor_runner` (ExecuTorch, XNNPACK build) on the loopback device.

Same gflags command line (`--model_path`, `--num_executions`, `--cpu_threads`, ...) and the same
ET_LOG text as the real runner built for Android: the log goes to logcat under the tag
`ExecuTorch` (including one `Iteration i of N: X ms` line per execution and `Model executed
successfully N time(s) in X ms.`); stdout carries only the printed outputs. Times are measured by
the loopback runtime worker with `executorch.runtime`.
"""

from __future__ import annotations

import os
import sys

from android_harness.loopback.shims._common import (
    FlagError,
    apply_faults,
    host_path,
    logcat,
    parse_flags,
)
from android_harness.loopback.worker import request

__all__ = ["main"]

_FLAGS = {
    "model_path": "model.pte",
    "data_path": "",
    "inputs": "",
    "output_file": "",
    "print_output": "summary",
    "num_executions": "1",
    "method_name": "",
    "cpu_threads": "-1",
}
# (source line, message) pairs follow the layout of the runner's source.
_LINES = {"loaded": 166, "method": 175, "threads": 137, "load": 564, "iter": 705, "done": 714,
          "outputs": 720}


def _et_log(level: str, where: str, message: str) -> None:
    logcat("ExecuTorch", level, f"executor_runner.cpp:{_LINES[where]}] {message}")


def main(argv: list[str]) -> int:
    try:
        flags = parse_flags(argv, _FLAGS, equals_only=False)
    except FlagError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    threads = int(flags["cpu_threads"])
    _et_log("I", "threads", f"Resetting threadpool with num threads = {max(threads, 1)}")
    path = host_path(flags["model_path"])
    if not os.path.isfile(path):
        _et_log("E", "loaded", f"Model file {flags['model_path']} could not be opened.")
        print(f"F 00:00:00.000000 executorch:executor_runner.cpp:{_LINES['loaded']}] "
              f"In function main(), assert failed: Error opening model file", file=sys.stderr)
        os.abort()
    _et_log("I", "loaded", f"Model file {flags['model_path']} is loaded.")
    method = flags["method_name"] or "forward"
    _et_log("I", "method", f"Using method {method}")
    apply_faults(flags["model_path"])
    runs = int(flags["num_executions"])
    reply = request({"runtime": "executorch", "model": os.path.abspath(path),
                     "threads": threads, "warmup": 0, "runs": runs, "min_s": 0.0, "max_s": 0.0})
    if not reply.get("ok"):
        _et_log("E", "iter", f"Execution of method {method} failed: {reply.get('error')}")
        os.abort()
    _et_log("I", "load", f"Model loaded in {reply['init_us'] / 1000:f} ms.")
    for i, value in enumerate(reply["runs_us"], start=1):
        _et_log("I", "iter", f"Iteration {i} of {runs}: {value / 1000:f} ms")
    total_ms = sum(reply["runs_us"]) / 1000
    _et_log("I", "done", f"Model executed successfully {runs} time(s) in {total_ms:f} ms.")
    _et_log("I", "outputs", "1 outputs: ")
    if flags["print_output"] != "none":
        print("OutputX 0: tensor(sizes=[...], [...])")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
