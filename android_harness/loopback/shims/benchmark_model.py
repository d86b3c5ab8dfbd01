"""`benchmark_model` (TFLite/LiteRT benchmark tool) on the loopback device.

Same `--flag=value` command line and the log a LiteRT-era build writes (`INFO: ` prefixes):
parameter echo, model size, `Initialized session in X ms.`, the warm-up and the timed statistics
lines (`tflite_stats.format_stat`: integer µs with percentiles, so `count=2 curr=X(all same)`
when both runs round to the same µs), `Inference timings in us: ...`, the memory note and
`Memory footprint delta from the start of the tool (MB): init= overall=`, and with
`--enable_op_profiling=true` the op-profiling tables (`tflite_stats.format_op_profile`) of host
per-operator timings (LiteRT's profiler through `TFLiteSession.profile_ops`). Times are measured
by the loopback runtime worker.

With the device's `runner_form` fault it prints an older release's log instead
(`_common.RUNNER_FORMS`): no `INFO: ` prefixes, no percentiles, no memory lines, no op tables
(those builds ignore flags they do not know, `--enable_op_profiling` included); `tf1.12` runs
exactly the counts (`Running benchmark for N iterations `, no time bounds), `tf1.15` and `tf2.0`
the count and time bounds; the last line is `Average inference timings in us: Warmup: W, Init:
I, no stats: A` (`tf1.*`) or `..., Inference: A` (`tf2.0`), as benchmark_model.cc printed them.
"""

from __future__ import annotations

import os
import sys

from android_harness.loopback.shims._common import (
    FlagError,
    apply_faults,
    host_path,
    parse_flags,
    runner_form,
    slow_first,
    tool_us,
)
from android_harness.loopback.worker import request
from android_harness.tflite_stats import OP_PROFILE_HEADER, cpp_double, format_op_profile, format_stat

__all__ = ["main"]

_FLAGS = {
    "graph": "",
    "num_threads": "-1",
    "num_runs": "50",
    "min_secs": "1",
    "max_secs": "150",
    "warmup_runs": "1",
    "warmup_min_secs": "0.5",
    "run_delay": "-1",
    "use_xnnpack": "",
    "enable_op_profiling": "false",
    "verbose": "false",
    "report_peak_memory_footprint": "false",
}
# LogParams() order and labels; only flags given on the command line are echoed (not --verbose).
_ECHO = (
    ("num_runs", "Min num runs"),
    ("min_secs", "Min runs duration (seconds)"),
    ("max_secs", "Max runs duration (seconds)"),
    ("num_threads", "Num threads"),
    ("warmup_runs", "Min warmup runs"),
    ("warmup_min_secs", "Min warmup runs duration (seconds)"),
    ("report_peak_memory_footprint", "Report the peak memory footprint"),
    ("graph", "Graph"),
    ("enable_op_profiling", "Enable op profiling"),
    ("use_xnnpack", "Use xnnpack"),
)


_FORM = runner_form("benchmark_model")
_OLD_ECHO = (  # LogParams() of the 1.x/2.0 tools: every parameter, given or not
    ("num_runs", "Min num runs"),
    ("min_secs", "Min runs duration (seconds)"),
    ("max_secs", "Max runs duration (seconds)"),
    ("run_delay", "Inter-run delay (seconds)"),
    ("num_threads", "Num threads"),
    ("warmup_runs", "Min warmup runs"),
    ("warmup_min_secs", "Min warmup runs duration (seconds)"),
    ("graph", "Graph"),
)


def _log(text: str = "") -> None:
    print(text if _FORM else f"INFO: {text}")


def _param(name: str, value: str) -> str:
    if value in ("true", "false"):
        return str(int(value == "true"))
    try:
        return cpp_double(float(value)) if "secs" in name else value
    except ValueError:
        return value


def _avg(values: list[int]) -> str:
    # Stat::avg() of no values is quiet_NaN of int64_t, i.e. 0
    return cpp_double(sum(values) / len(values)) if values else "0"


def _phase(count: str, min_secs: str, max_secs: str, values: list[int]) -> None:
    if _FORM == "tf1.12":
        _log(f"Running benchmark for {count} iterations ")
    else:
        _log(f"Running benchmark for at least {count} iterations and at least "
             f"{cpp_double(float(min_secs))} seconds but terminate if exceeding "
             f"{cpp_double(float(max_secs))} seconds.")
    _log(format_stat(values, percentiles=_FORM is None))
    print()  # the tool logs the line with std::endl


def _old_report(flags: dict[str, str], init_us: int, warm: list[int], runs: list[int]) -> None:
    _log(f"Initialized session in {cpp_double(init_us / 1e3)}ms")
    _phase(flags["warmup_runs"], flags["warmup_min_secs"], flags["max_secs"], warm)
    _phase(flags["num_runs"], flags["min_secs"], flags["max_secs"], runs)
    label = "Inference" if _FORM == "tf2.0" else "no stats"
    _log(f"Average inference timings in us: Warmup: {_avg(warm)}, Init: {init_us}, "
         f"{label}: {_avg(runs)}")


def main(argv: list[str]) -> int:
    try:
        flags = parse_flags(argv, _FLAGS, equals_only=True)
    except FlagError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    given = {arg.lstrip("-").partition("=")[0] for arg in argv}
    _log("STARTING!")
    if _FORM:
        for name, label in _OLD_ECHO:
            _log(f"{label}: [{_param(name, flags[name])}]")
    else:
        _log("Log parameter values verbosely: [0]")
        for name, label in _ECHO:
            if name in given:
                _log(f"{label}: [{_param(name, flags[name])}]")
    if not flags["graph"]:
        print("ERROR: Please specify the name of your TF Lite input file with --graph", file=sys.stderr)
        return 1
    path = host_path(flags["graph"])
    if not os.path.isfile(path):
        print(f"ERROR: Could not open '{flags['graph']}'.", file=sys.stderr)
        print(f"ERROR: Failed to mmap model {flags['graph']}", file=sys.stderr)
        return 1
    _log(f"Loaded model {flags['graph']}")
    sys.stdout.flush()
    apply_faults(flags["graph"])
    threads = int(flags["num_threads"])
    profile = flags["enable_op_profiling"] == "true" and _FORM is None
    if _FORM:
        _log("resolved reporter")
    timed = _FORM != "tf1.12"  # 1.12/1.13 ran exactly the counts
    reply = request({
        "slow_first": slow_first(),
        "runner": "benchmark_model",
        "model": os.path.abspath(path),
        "threads": threads if threads > 0 else 1,
        "warmup": int(flags["warmup_runs"]),
        "warmup_min_s": float(flags["warmup_min_secs"]) if timed else 0.0,
        "runs": int(flags["num_runs"]),
        "min_s": float(flags["min_secs"]) if timed else 0.0,
        "max_s": float(flags["max_secs"]),
        "xnnpack": flags["use_xnnpack"] != "false",
        "profile_ops": profile,
    })
    if not reply.get("ok"):
        print(f"ERROR: {reply.get('error')}", file=sys.stderr)
        print("ERROR: Benchmarking failed.", file=sys.stderr)
        return 1
    init_us = int(reply["init_us"])
    warm = [tool_us(v) for v in reply["warmup_us"]]
    runs = [tool_us(v) for v in reply["runs_us"]]
    if _FORM:
        _old_report(flags, init_us, warm, runs)
        return 0
    _log(f"The input model file size (MB): {cpp_double(os.path.getsize(path) / 1e6)}")
    _log(f"Initialized session in {cpp_double(init_us / 1e3)}ms.")
    _phase(flags["warmup_runs"], flags["warmup_min_secs"], flags["max_secs"], warm)
    _phase(flags["num_runs"], flags["min_secs"], flags["max_secs"], runs)
    _log(f"Inference timings in us: Init: {init_us}, First inference: {warm[0] if warm else 0}, "
         f"Warmup (avg): {_avg(warm)}, Inference (avg): {_avg(runs)}")
    _log("Note: as the benchmark tool itself affects memory footprint, the following is only "
         "APPROXIMATE to the actual memory footprint of the model at runtime. Take the "
         "information at your discretion.")
    start = reply["rss_start_kb"]
    _log("Memory footprint delta from the start of the tool (MB): "
         f"init={cpp_double(max(reply['rss_init_kb'] - start, 0) / 1024.0)} "
         f"overall={cpp_double(max(reply['rss_end_kb'] - start, 0) / 1024.0)}")
    if flags["report_peak_memory_footprint"] == "true":
        peak = max(reply["rss_start_kb"], reply["rss_init_kb"], reply["rss_end_kb"])
        _log(f"Overall peak memory footprint (MB) via periodic monitoring: {cpp_double(peak / 1024.0)}")
    if profile and reply.get("ops"):
        _log(OP_PROFILE_HEADER)
        print(format_op_profile([[(name, kind, us) for name, kind, us in run] for run in reply["ops"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
