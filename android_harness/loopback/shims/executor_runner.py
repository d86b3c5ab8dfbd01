"""`executor_runner` (ExecuTorch release 1.5, XNNPACK build) on the loopback device.

Same gflags command line (`--model_path`, `--num_executions`, `--cpu_threads`, ...) and the same
ET_LOG text as the runner built for Android: the log goes to logcat under the tag `ExecuTorch`
(`Setting up CPU planned buffer I, size N.`, `Model loaded in X ms.`, one `Iteration i of N: X ms`
line per execution, `Model executed successfully N time(s) in X ms.`); stdout carries only the
printed outputs. Times are measured by the loopback runtime worker with `executorch.runtime`.

With the device's `event_tracer` knob ($LOOPBACK_EVENT_TRACER) it is a devtools build
(`-DEXECUTORCH_BUILD_DEVTOOLS=ON -DEXECUTORCH_ENABLE_EVENT_TRACER=ON`): it takes
`--etdump_path` (default `model.etdump` in the working directory, as in the source) and writes a
real ETDump of every execution there (`session.write_etdump`), aborting when it cannot open the
file. Without it, `--etdump_path` is an unknown flag, as in the README's build.

With the device's `runner_form` fault it is an older release (`_common.RUNNER_FORMS`): `et0.4`
(0.4-0.5) knows only `--model_path`, runs once and logs `Model executed successfully.`; `et0.6`
(0.6-1.2) knows `--model_path`, `--num_executions` and `--cpu_threads` (built without the event
tracer here), logs `Setting up planned buffer I, size N.` and only the total `Model executed
successfully N time(s) in X ms.`, with the source lines of release 0.6.
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
    runner_form,
    slow_first,
    tool_us,
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
# Source lines of the ET_LOG calls in examples/portable/executor_runner/executor_runner.cpp (1.5).
_LINES = {"threads": 340, "loaded": 476, "method": 486, "planned": 556, "load": 624, "iter": 779,
          "done": 789, "outputs": 798, "etdump": 261, "etdump_failed": 253}


# The same ET_LOG calls in the v0.4.0 and v0.6.0 sources.
_OLD_LINES = {
    "et0.4": {"loaded": 82, "method": 91, "planned": 138, "method_loaded": 161, "inputs": 171,
              "done": 180, "outputs": 184, "iter": 175},  # iter: the failed-execution check
    "et0.6": {"threads": 142, "loaded": 166, "method": 175, "planned": 226, "method_loaded": 251,
              "done": 284, "outputs": 293, "iter": 276},
}
_FORM = runner_form("executor_runner")


def _et_log(level: str, where: str, message: str) -> None:
    lines = _OLD_LINES[_FORM] if _FORM else _LINES
    logcat("ExecuTorch", level, f"executor_runner.cpp:{lines[where]}] {message}")


def _abort(where: str, message: str) -> None:
    _et_log("F", where, message)
    sys.stdout.flush()
    os.abort()


def main(argv: list[str]) -> int:
    tracer = os.environ.get("LOOPBACK_EVENT_TRACER") == "1"
    known = {**_FLAGS, "etdump_path": "model.etdump"} if tracer else _FLAGS
    if _FORM == "et0.4":
        known = {"model_path": "model.pte"}
    elif _FORM == "et0.6":
        known = {k: v for k, v in known.items()
                 if k in ("model_path", "num_executions", "cpu_threads")}
    try:
        flags = parse_flags(argv, known, equals_only=False)
    except FlagError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    threads = int(flags.get("cpu_threads", "-1"))
    if _FORM != "et0.4":
        _et_log("I", "threads", f"Resetting threadpool with num threads = {max(threads, 1)}")
    path = host_path(flags["model_path"])
    if not os.path.isfile(path):
        _abort("loaded", "In function main(), assert failed (file_loader.ok()): "
                         "FileDataLoader::from() failed: 0x22")
    _et_log("I", "loaded", f"Model file {flags['model_path']} is loaded.")
    method = flags.get("method_name") or "forward"
    _et_log("I", "method", f"Using method {method}")
    apply_faults(flags["model_path"])
    runs = int(flags.get("num_executions", "1"))
    etdump = os.path.abspath(host_path(flags["etdump_path"])) if tracer and "etdump_path" in flags else None
    reply = request({"runner": "executor_runner", "model": os.path.abspath(path), "threads": threads,
                     "slow_first": slow_first(),
                     "warmup": 0, "runs": runs, "min_s": 0.0, "max_s": 0.0,
                     "etdump_path": etdump if etdump and os.path.isdir(os.path.dirname(etdump)) else None})
    if not reply.get("ok"):
        _abort("iter", f"In function main(), assert failed (status == Error::Ok): Execution of method "
                       f"{method} failed: {reply.get('error')}")
    for i, size in enumerate(reply.get("planned_buffers", [])):
        kind = "" if _FORM else "CPU "
        _et_log("I", "planned", f"Setting up {kind}planned buffer {i}, size {size}.")
    times_us = [tool_us(v) for v in reply["runs_us"]]
    if _FORM:
        _et_log("I", "method_loaded", "Method loaded.")
        if _FORM == "et0.4":  # a Debug message from 0.6 on
            _et_log("I", "inputs", "Inputs prepared.")
        if _FORM == "et0.4":
            _et_log("I", "done", "Model executed successfully.")
        else:
            _et_log("I", "done", f"Model executed successfully {runs} time(s) in "
                                 f"{sum(times_us) / 1000:f} ms.")
        _et_log("I", "outputs", "1 outputs: ")
        print("Output 0: tensor(sizes=[...], [...])")
        return 0
    _et_log("I", "load", f"Model loaded in {tool_us(reply['init_us']) / 1000:f} ms.")
    for i, value in enumerate(times_us, start=1):
        _et_log("I", "iter", f"Iteration {i} of {runs}: {value / 1000:f} ms")
    _et_log("I", "done", f"Model executed successfully {runs} time(s) in {sum(times_us) / 1000:f} ms.")
    _et_log("I", "outputs", "1 outputs: ")
    if flags["print_output"] != "none":
        print("OutputX 0: tensor(sizes=[...], [...])")
    if tracer:
        if not (etdump and os.path.isfile(etdump)):
            _et_log("E", "etdump_failed", f"Failed to open ETDump file at {flags['etdump_path']}.")
            _abort("etdump", "In function main(), assert failed (status == Error::Ok): "
                             "Failed to save ETDump file.")
        _et_log("I", "etdump", f"ETDump written to file '{flags['etdump_path']}'.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
