"""Running a runner binary on a device and turning its output into latency samples.

One sample is one timed inference, in microseconds:

- `executor_runner`: one invocation with `--num_executions warmup+runs`; its per-iteration lines
  are the samples, the first `warmup` are dropped. A 0.6-1.2 build prints no per-iteration lines,
  only `Model executed successfully N time(s) in X ms.`: a launch's executions cannot be told
  apart, so each launch gives one sample, its mean X / N, and `runs` launches give the samples.
  That mean includes the launch's warm-up and first (cold) executions: it is biased up by their
  excess over the warm time divided by N ((first - warm) / N when only the first is slow); the
  harness accepts that rather than refusing these builds, and
  `SAMPLE_SEMANTICS` says so in every LUT it measures.
- `benchmark_model`: it prints statistics, not runs, but with `--num_runs=2` its statistics line
  holds both runs (`first=`, `curr=`, or `curr=X(all same)` when both took the same µs). So each
  invocation runs `warmup` untimed then 2 timed inferences, and ceil(runs / 2) invocations give
  the samples.

Each invocation is `cd WORK_DIR && timeout -s 9 T taskset MASK BINARY FLAGS...`: run in the
runner's folder (where a devtools `executor_runner` writes its default `model.etdump`), pinned to
the core mask, killed after the per-run timeout.

`measure_detailed` also returns what the runners report besides latency (`Measurement.extra`:
init time, memory; the median over the invocations of each value) and, with
`RunOptions.profile`, per-operator data:

- `benchmark_model`: one more invocation with `--enable_op_profiling=true` (its samples are not
  used: the profiler's own overhead is in them) whose `Run Order` table becomes `Measurement.ops`.
- `executor_runner`: the timed invocation gets `--etdump_path=WORK_DIR/profiles/<label>.etdump`
  (a devtools build traces every execution whether or not it writes the file, so the samples are
  the same); the file is pulled back as `Measurement.etdump` (bytes; `executorch.devtools`
  reads them) and removed from the device.
"""

from __future__ import annotations

import logging
import math
import posixpath
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .adb import CommandTimeout, Device, quote
from .runners import RunnerBuildError, RunnerOutputError, RunnerTiming, get_runner, output_tail
from .tflite_stats import OperatorTiming

__all__ = ["RunOptions", "RunnerFailed", "Measurement", "invoke", "measure", "measure_detailed",
           "SAMPLE_SEMANTICS", "INVOCATION_RUNS"]

log = logging.getLogger(__name__)

SAMPLE_SEMANTICS = {
    "executor_runner": "one timed execution from an 'Iteration i of N' line; one invocation per "
    "measurement with --num_executions=warmup+runs, the first `warmup` iterations dropped. A "
    "0.6-1.2 build prints only its total: then one sample is one invocation's mean (total / "
    "(warmup+runs), its warm-up and first executions included), one invocation per sample",
    "benchmark_model": "one timed inference: each invocation runs --warmup_runs=warmup then "
    "--num_runs=2 (--min_secs=0) and contributes its first= and curr= values (or both copies of "
    "curr= when the line reads '(all same)')",
}
# timed runs one invocation asks for, where a runner's flags fix it (else RunOptions.runs)
INVOCATION_RUNS = {"benchmark_model": 2}
_TIMEOUT_EXIT = (124, 137)  # toybox timeout, or the shell reporting SIGKILL
_PROFILES = "profiles"  # folder of the runner's work dir for ETDumps in flight


class RunnerFailed(RuntimeError):
    """One invocation crashed, timed out or printed output that does not parse."""


@dataclass(frozen=True)
class RunOptions:
    threads: int = 1  # runtime threads
    warmup: int = 5  # untimed inferences before the timed ones
    runs: int = 20  # samples wanted
    core_mask: str | None = None  # taskset hex mask; None runs unpinned
    timeout_s: float = 120.0  # per invocation
    xnnpack: bool = True  # benchmark_model --use_xnnpack
    profile: bool = False  # per-operator data too: op tables (benchmark_model) or an ETDump


@dataclass(frozen=True)
class Measurement:
    """Samples of one model and what the runner reported with them."""

    samples_us: list[float]
    extra: dict[str, float] = field(default_factory=dict)  # median over invocations, unit-named
    ops: tuple[OperatorTiming, ...] = ()  # benchmark_model op-profiling rows, in run order
    etdump: bytes | None = None  # executor_runner ETDump of the timed invocation
    invocations: int = 0  # runner invocations that gave the samples

    def write_etdump(self, path: Path) -> Path:
        if self.etdump is None:
            raise ValueError("this measurement has no ETDump (RunOptions.profile with executor_runner)")
        Path(path).write_bytes(self.etdump)
        return Path(path)


def invoke(
    device: Device, runner_name: str, binary: str, model: str, *, warmup: int, runs: int,
    options: RunOptions, label: str, profile: str | None = None,
) -> RunnerTiming:
    """One invocation of a runner; RunnerFailed names `label` and shows the output tail."""
    runner = get_runner(runner_name)
    argv = runner.command(binary, model, threads=options.threads, warmup=warmup, runs=runs,
                          xnnpack=options.xnnpack, profile=profile)
    line = " ".join(quote(a) for a in argv)
    if options.core_mask:
        line = f"taskset {quote(options.core_mask)} {line}"
    line = f"cd {quote(posixpath.dirname(binary) or '/')} && timeout -s 9 {int(math.ceil(options.timeout_s))} {line}"
    if runner.log_tag:
        device.check("logcat -c")
    try:
        result = device.shell(line, timeout_s=options.timeout_s + 30.0)
    except CommandTimeout as exc:
        raise RunnerFailed(f"{label}: {runner_name} did not answer within "
                           f"{options.timeout_s:g} s ({exc})") from exc
    text = result.output
    if runner.log_tag:
        text = result.output + device.shell(f"logcat -d -s {runner.log_tag}").stdout
    if result.exit_code in _TIMEOUT_EXIT:
        raise RunnerFailed(f"{label}: {runner_name} timed out after {options.timeout_s:g} s "
                           f"(exit {result.exit_code})\n  last lines:\n{output_tail(text)}")
    if "unknown command line flag 'etdump_path'" in text:
        raise RunnerFailed(f"{label}: this executor_runner has no event tracer, so it cannot write "
                           "an ETDump: rebuild it with -DEXECUTORCH_BUILD_DEVTOOLS=ON "
                           "-DEXECUTORCH_ENABLE_EVENT_TRACER=ON (android_harness/README.md)")
    if result.exit_code != 0:
        try:
            runner.parse(text)
        except RunnerBuildError as exc:  # a build that refused our flags and says which it is
            raise RunnerFailed(f"{label}: {exc}\n  last lines:\n{output_tail(text)}") from None
        except RunnerOutputError:
            pass
        raise RunnerFailed(f"{label}: {runner_name} exited with status {result.exit_code}"
                           f"\n  last lines:\n{output_tail(text)}")
    try:
        return runner.parse(text)
    except RunnerOutputError as exc:  # it exited 0: an output form the parser does not know
        raise RunnerFailed(f"{label}: {runner_name} exited 0 but printed its report in a form this harness "
                           f"does not read ({exc})\n  last lines:\n{output_tail(text)}") from None


def _median_extra(timings: list[RunnerTiming]) -> dict[str, float]:
    keys = dict.fromkeys(k for t in timings for k in t.extra)
    return {k: statistics.median([t.extra[k] for t in timings if k in t.extra]) for k in keys}


def _executor_runner(device: Device, binary: str, model: str, options: RunOptions, label: str) -> Measurement:
    remote = None
    if options.profile:
        folder = posixpath.join(posixpath.dirname(binary), _PROFILES)
        device.check(f"mkdir -p {quote(folder)}")
        remote = posixpath.join(folder, re.sub(r"[^\w.-]", "_", label) + ".etdump")
    timing = invoke(device, "executor_runner", binary, model, warmup=options.warmup,
                    runs=options.runs, options=options, label=label, profile=remote)
    etdump = None
    if remote is not None:
        etdump = device.pull_bytes(remote)
        device.check(f"rm -rf {quote(remote)}")
    if timing.samples_us:
        return Measurement(list(timing.samples_us[options.warmup:]), dict(timing.extra),
                           etdump=etdump, invocations=1)
    # A 0.6-1.2 build prints only its total: one sample per launch, the launch's mean.
    launches = [timing]
    while len(launches) < options.runs:
        launches.append(invoke(device, "executor_runner", binary, model, warmup=options.warmup,
                               runs=options.runs, options=options, label=label))
    return Measurement([t.avg_us for t in launches], _median_extra(launches), etdump=etdump,
                       invocations=len(launches))


def _benchmark_model(device: Device, binary: str, model: str, options: RunOptions, label: str) -> Measurement:
    samples: list[float] = []
    timings = []
    per_call = INVOCATION_RUNS["benchmark_model"]
    for _ in range(math.ceil(options.runs / per_call)):
        timing = invoke(device, "benchmark_model", binary, model, warmup=options.warmup, runs=per_call,
                        options=options, label=label)
        if len(timing.samples_us) != per_call:
            raise RunnerFailed(f"{label}: benchmark_model ran {timing.count} timed runs, "
                               "expected 2 (--num_runs=2 --min_secs=0)")
        samples.extend(timing.samples_us)
        timings.append(timing)
    ops: tuple[OperatorTiming, ...] = ()
    if options.profile:
        profiled = invoke(device, "benchmark_model", binary, model, warmup=options.warmup,
                          runs=max(options.runs, 1), options=options, label=label, profile="")
        if not profiled.ops:
            raise RunnerFailed(f"{label}: benchmark_model printed no op-profiling table with "
                               "--enable_op_profiling=true")
        ops = profiled.ops
    return Measurement(samples, _median_extra(timings), ops=ops, invocations=len(timings))


_SAMPLERS = {
    "executor_runner": _executor_runner,
    "benchmark_model": _benchmark_model,
}


def measure_detailed(
    device: Device, runner_name: str, binary: str, model: str, options: RunOptions, *, label: str
) -> Measurement:
    """`options.runs` samples in µs for one model, with the runner's extras (module docstring)."""
    get_runner(runner_name)  # unknown names fail here with the list of known runners
    result = _SAMPLERS[runner_name](device, binary, model, options, label)
    if len(result.samples_us) < options.runs:
        raise RunnerFailed(f"{label}: got {len(result.samples_us)} samples, expected {options.runs}")
    return Measurement(result.samples_us[: options.runs], result.extra, result.ops, result.etdump,
                       result.invocations)


def measure(
    device: Device, runner_name: str, binary: str, model: str, options: RunOptions, *, label: str
) -> list[float]:
    """`options.runs` samples in µs for one model (see the module docstring)."""
    return measure_detailed(device, runner_name, binary, model, options, label=label).samples_us
