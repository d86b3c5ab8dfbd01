"""`benchmark_model` (TFLite/LiteRT benchmark tool) on the loopback device.

Same `--flag=value` command line and same log text as the real tool: parameter echo, a warm-up
statistics line, the timed statistics line, `Inference timings in us: ...`, memory note. Times
are measured by the loopback runtime worker with `ai_edge_litert`.
"""

from __future__ import annotations

import math
import os
import statistics
import sys

from android_harness.loopback.shims._common import FlagError, apply_faults, host_path, parse_flags
from android_harness.loopback.worker import request

__all__ = ["main", "format_stats"]

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


def _log(text: str) -> None:
    print(f"INFO: {text}")


def _pct(values: list[float], q: float) -> int:
    ordered = sorted(values)
    return int(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))])


def format_stats(values_us: list[float]) -> str:
    """The tool's `Stat::OutputToStream` line for a list of integer-µs timings."""
    ints = [int(v) for v in values_us]
    tail = f"p5={_pct(ints, .05)} median={_pct(ints, .5)} p95={_pct(ints, .95)}"
    if len(ints) == 1:
        return f"count=1 curr={ints[0]} {tail}"
    avg = sum(ints) / len(ints)
    std = int(round(statistics.pstdev(ints)))
    return (
        f"count={len(ints)} first={ints[0]} curr={ints[-1]} min={min(ints)} max={max(ints)} "
        f"avg={avg:g} std={std} {tail}"
    )


def main(argv: list[str]) -> int:
    try:
        flags = parse_flags(argv, _FLAGS, equals_only=True)
    except FlagError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    _log("STARTING!")
    _log("Log parameter values verbosely: [0]")
    _log(f"Min num runs: [{flags['num_runs']}]")
    _log(f"Min runs duration (seconds): [{flags['min_secs']}]")
    _log(f"Max runs duration (seconds): [{flags['max_secs']}]")
    _log(f"Num threads: [{flags['num_threads']}]")
    _log(f"Min warmup runs: [{flags['warmup_runs']}]")
    _log(f"Min warmup runs duration (seconds): [{flags['warmup_min_secs']}]")
    _log(f"Graph: [{flags['graph']}]")
    if flags["use_xnnpack"]:
        _log(f"Use xnnpack: [{1 if flags['use_xnnpack'] == 'true' else 0}]")
    if not flags["graph"]:
        print("ERROR: Please specify the name of your TF Lite input file with --graph",
              file=sys.stderr)
        return 1
    path = host_path(flags["graph"])
    if not os.path.isfile(path):
        print(f"ERROR: Could not open '{flags['graph']}'.", file=sys.stderr)
        print(f"ERROR: Failed to mmap model {flags['graph']}", file=sys.stderr)
        return 1
    _log(f"Loaded model {flags['graph']}")
    _log(f"The input model file size (MB): {os.path.getsize(path) / 1e6:g}")
    sys.stdout.flush()
    apply_faults(flags["graph"])
    threads = int(flags["num_threads"])
    reply = request({
        "runtime": "tflite",
        "model": os.path.abspath(path),
        "threads": threads if threads > 0 else 1,
        "warmup": int(flags["warmup_runs"]),
        "warmup_min_s": float(flags["warmup_min_secs"]),
        "runs": int(flags["num_runs"]),
        "min_s": float(flags["min_secs"]),
        "max_s": float(flags["max_secs"]),
        "xnnpack": flags["use_xnnpack"] != "false",
    })
    if not reply.get("ok"):
        print(f"ERROR: {reply.get('error')}", file=sys.stderr)
        print("ERROR: Benchmarking failed.", file=sys.stderr)
        return 1
    init_us, warm, runs = reply["init_us"], reply["warmup_us"], reply["runs_us"]
    _log(f"Initialized session in {init_us / 1000:g}ms.")
    _log(f"Running benchmark for at least {flags['warmup_runs']} iterations and at least "
         f"{flags['warmup_min_secs']} seconds but terminate if exceeding {flags['max_secs']} seconds.")
    if warm:
        _log(format_stats(warm))
    print()
    _log(f"Running benchmark for at least {flags['num_runs']} iterations and at least "
         f"{flags['min_secs']} seconds but terminate if exceeding {flags['max_secs']} seconds.")
    if runs:
        _log(format_stats(runs))
    print()
    first = int(warm[0]) if warm else (int(runs[0]) if runs else 0)
    warm_avg = sum(int(v) for v in warm) / len(warm) if warm else -1
    run_avg = sum(int(v) for v in runs) / len(runs) if runs else -1
    _log(f"Inference timings in us: Init: {int(init_us)}, First inference: {first}, "
         f"Warmup (avg): {warm_avg:g}, Inference (avg): {run_avg:g}")
    _log("Note: as the benchmark tool itself affects memory footprint, the following is only "
         "APPROXIMATE to the actual memory footprint of the model at runtime. Take the "
         "information at your discretion.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
