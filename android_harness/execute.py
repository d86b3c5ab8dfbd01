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
  holds both runs (`first=`, `curr=`, or `curr=X(all same)` when both took the same µs). So one
  device command runs ceil(runs / 2) launches back to back (`&&`, pinned to the same cores): the
  first with the tool's time-based warm-up (`--warmup_min_secs=warmup_s`, at least `warmup`
  runs), the others with `warmup` runs each, 2 timed inferences per launch. The cores stay busy
  from the warm-up to the last timed run, so a governor that ramped up during the warm-up is still
  up; a command holds at most `CHAIN_LAUNCHES` launches (command line length), and each command
  starts with its own time-based warm-up.

Time-based warm-up (`RunOptions.warmup_s`, default 0.5 s, what `benchmark_model` does by default):
`executor_runner` has none, so its measurement starts with an untimed launch that runs the model
for about `warmup_s` (its executions estimated from the model's previous measurement, `hints`),
the log is cleared, and the timed launch follows in the same device command.

Each launch is `timeout -s 9 T taskset MASK BINARY FLAGS...` after `cd WORK_DIR`: run in the
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
           "SAMPLE_SEMANTICS", "INVOCATION_RUNS", "WARMUP_S", "invoke_chain"]

log = logging.getLogger(__name__)

SAMPLE_SEMANTICS = {
    "executor_runner": "one timed execution from an 'Iteration i of N' line; one invocation per "
    "measurement with --num_executions=warmup+runs, the first `warmup` iterations dropped. A "
    "0.6-1.2 build prints only its total: then one sample is one invocation's mean (total / "
    "(warmup+runs), its warm-up and first executions included), one invocation per sample",
    "benchmark_model": "one timed inference: ceil(runs/2) launches back to back in one device "
    "command, the first after the tool's time-based warm-up (--warmup_min_secs), each running "
    "--warmup_runs=warmup then --num_runs=2 (--min_secs=0) and contributing its first= and curr= "
    "values (or both copies of curr= when the line reads '(all same)')",
}
WARMUP_S = 0.5  # benchmark_model's default --warmup_min_secs: time for a governor to ramp up
CHAIN_LAUNCHES = 12  # launches per device command (keeps a command line under ~4 KiB)
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
    warmup_s: float = WARMUP_S  # time-based warm-up before the first timed run of a command


@dataclass(frozen=True)
class Measurement:
    """Samples of one model and what the runner reported with them."""

    samples_us: list[float]
    extra: dict[str, float] = field(default_factory=dict)  # median over invocations, unit-named
    ops: tuple[OperatorTiming, ...] = ()  # benchmark_model op-profiling rows, in run order
    etdump: bytes | None = None  # executor_runner ETDump of the timed invocation
    invocations: int = 0  # runner invocations that gave the samples
    runner_version: str | None = None  # what the runner printed as its runtime's version, if anything

    def write_etdump(self, path: Path) -> Path:
        if self.etdump is None:
            raise ValueError("this measurement has no ETDump (RunOptions.profile with executor_runner)")
        Path(path).write_bytes(self.etdump)
        return Path(path)


_TIMED_MARK = "hwnas-timed-launch"  # echoed between an untimed warm-up launch and the timed one


def invoke(
    device: Device, runner_name: str, binary: str, model: str, *, warmup: int, runs: int,
    options: RunOptions, label: str, profile: str | None = None, warm_executions: int = 0,
) -> RunnerTiming:
    """One invocation of a runner; RunnerFailed names `label` and shows the output tail.
    `warm_executions` > 0 (executor_runner) runs that many untimed executions in a launch of their
    own first, in the same device command; its log is cleared before the timed launch."""
    runner = get_runner(runner_name)
    argv = runner.command(binary, model, threads=options.threads, warmup=warmup, runs=runs,
                          xnnpack=options.xnnpack, profile=profile)
    line = f"cd {quote(posixpath.dirname(binary) or '/')} && "
    timeout_s = options.timeout_s + 30.0
    if warm_executions > 0:
        warm = runner.command(binary, model, threads=options.threads, warmup=0, runs=warm_executions,
                              xnnpack=options.xnnpack)
        line += _launch(binary, warm, options) + " && " + (
            "logcat -c && " if runner.log_tag else "") + f"echo {_TIMED_MARK} && "
        timeout_s += options.timeout_s
    line += _launch(binary, argv, options)
    if runner.log_tag:
        device.check("logcat -c")
    try:
        result = device.shell(line, timeout_s=timeout_s)
    except CommandTimeout as exc:
        raise RunnerFailed(f"{label}: {runner_name} did not answer within "
                           f"{options.timeout_s:g} s ({exc})") from exc
    text = result.output
    if warm_executions > 0 and _TIMED_MARK in result.stdout:  # the timed launch's output only
        text = result.stdout.split(_TIMED_MARK + "\n")[-1] + result.stderr
    if runner.log_tag:
        text = text + device.shell(f"logcat -d -s {runner.log_tag}").stdout
    if result.exit_code in _TIMEOUT_EXIT:
        raise RunnerFailed(f"{label}: {runner_name} timed out after {options.timeout_s:g} s "
                           f"(exit {result.exit_code})\n  last lines:\n{output_tail(text)}")
    if "unknown command line flag 'etdump_path'" in text:
        raise RunnerFailed(f"{label}: this executor_runner has no event tracer, so it cannot write "
                           "an ETDump: rebuild it with -DEXECUTORCH_BUILD_DEVTOOLS=ON "
                           "-DEXECUTORCH_ENABLE_EVENT_TRACER=ON (docs/phone.md)")
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


def _launch(binary: str, argv: list[str], options: RunOptions) -> str:
    line = " ".join(quote(a) for a in argv)
    if options.core_mask:
        line = f"taskset {quote(options.core_mask)} {line}"
    return f"timeout -s 9 {int(math.ceil(options.timeout_s))} {line}"


def _split_launches(text: str, n: int) -> list[str]:
    """The outputs of `n` benchmark_model launches run back to back: each starts with its
    `STARTING!` line (every build prints it first); else each ends after its summary line."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if "STARTING!" in line]
    if len(starts) == n:
        bounds = [*starts[1:], len(lines)]
        return ["".join(lines[a:b]) for a, b in zip(starts, bounds)]
    ends = [i + 1 for i, line in enumerate(lines) if "nference timings in us:" in line]
    if len(ends) != n:
        return [text]
    bounds = [0, *ends[:-1], len(lines)]
    return ["".join(lines[a:b]) for a, b in zip(bounds, bounds[1:])]


def invoke_chain(
    device: Device, runner_name: str, binary: str, model: str, launches: list[dict], *,
    options: RunOptions, label: str,
) -> list[RunnerTiming]:
    """Several benchmark_model launches (keyword sets of `Runner.command`) in one device command,
    back to back; a launch that fails stops the command (RunnerFailed with the output tail)."""
    runner = get_runner(runner_name)
    argvs = [runner.command(binary, model, threads=options.threads, xnnpack=options.xnnpack, **kw)
             for kw in launches]
    line = f"cd {quote(posixpath.dirname(binary) or '/')} && " + " && ".join(
        _launch(binary, argv, options) for argv in argvs)
    try:
        result = device.shell(line, timeout_s=len(argvs) * options.timeout_s + 30.0)
    except CommandTimeout as exc:
        raise RunnerFailed(f"{label}: {runner_name} did not answer within "
                           f"{len(argvs) * options.timeout_s:g} s ({exc})") from exc
    text = result.output
    if result.exit_code in _TIMEOUT_EXIT:
        raise RunnerFailed(f"{label}: {runner_name} timed out after {options.timeout_s:g} s "
                           f"(exit {result.exit_code})\n  last lines:\n{output_tail(text)}")
    if result.exit_code != 0:
        raise RunnerFailed(f"{label}: {runner_name} exited with status {result.exit_code}"
                           f"\n  last lines:\n{output_tail(text)}")
    chunks = _split_launches(text, len(argvs))
    if len(chunks) != len(argvs):
        raise RunnerFailed(f"{label}: {len(argvs)} {runner_name} launches printed {len(chunks)} reports "
                           f"(an unknown output format?)\n  last lines:\n{output_tail(text)}")
    timings = []
    for chunk in chunks:
        try:
            timings.append(runner.parse(chunk))
        except RunnerOutputError as exc:
            raise RunnerFailed(f"{label}: {runner_name} exited 0 but printed its report in a form this "
                               f"harness does not read ({exc})\n  last lines:\n{output_tail(chunk)}") from None
    return timings


def _median_extra(timings: list[RunnerTiming]) -> dict[str, float]:
    keys = dict.fromkeys(k for t in timings for k in t.extra)
    return {k: statistics.median([t.extra[k] for t in timings if k in t.extra]) for k in keys}


def warm_executions(options: RunOptions, estimate_us: float | None) -> int:
    """Untimed executor_runner executions that last about `options.warmup_s`: from the model's
    previous per-execution time (`estimate_us`), else as if it took 1 ms; at most 100 000."""
    if options.warmup_s <= 0:
        return 0
    return max(1, min(100_000, math.ceil(options.warmup_s * 1e6 / max(estimate_us or 1000.0, 1.0))))


def _executor_runner(device: Device, binary: str, model: str, options: RunOptions, label: str,
                     hints: dict | None = None) -> Measurement:
    remote = None
    if options.profile:
        folder = posixpath.join(posixpath.dirname(binary), _PROFILES)
        device.check(f"mkdir -p {quote(folder)}")
        remote = posixpath.join(folder, re.sub(r"[^\w.-]", "_", label) + ".etdump")
    hints = hints if hints is not None else {}
    warm = warm_executions(options, hints.get(model))
    timing = invoke(device, "executor_runner", binary, model, warmup=options.warmup,
                    runs=options.runs, options=options, label=label, profile=remote, warm_executions=warm)
    etdump = None
    if remote is not None:
        etdump = device.pull_bytes(remote)
        device.check(f"rm -rf {quote(remote)}")
    if timing.samples_us:
        samples = list(timing.samples_us[options.warmup:])
        if samples:
            hints[model] = statistics.median(samples)
        return Measurement(samples, {**timing.extra, "warm_executions": float(warm)},
                           etdump=etdump, invocations=1 + (warm > 0), runner_version=timing.version)
    # A 0.6-1.2 build prints only its total: one sample per launch, the launch's mean.
    launches = [timing]
    hints[model] = timing.avg_us
    while len(launches) < options.runs:
        launches.append(invoke(device, "executor_runner", binary, model, warmup=options.warmup,
                               runs=options.runs, options=options, label=label))
    return Measurement([t.avg_us for t in launches], _median_extra(launches), etdump=etdump,
                       invocations=len(launches), runner_version=timing.version)


def _benchmark_model(device: Device, binary: str, model: str, options: RunOptions, label: str,
                     hints: dict | None = None) -> Measurement:
    samples: list[float] = []
    timings: list[RunnerTiming] = []
    per_call = INVOCATION_RUNS["benchmark_model"]
    total = math.ceil(options.runs / per_call)
    for start in range(0, total, CHAIN_LAUNCHES):
        n = min(CHAIN_LAUNCHES, total - start)
        launches = [{"warmup": options.warmup, "runs": per_call, "warmup_s": options.warmup_s if i == 0 else 0.0}
                    for i in range(n)]
        for timing in invoke_chain(device, "benchmark_model", binary, model, launches, options=options, label=label):
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
    extra = _median_extra(timings)
    warm = timings[0].extra.get("warmup_count") if timings else None
    if warm is not None:  # runs the time-based warm-up of the first launch took
        extra["warmup_runs_first_launch"] = warm
    return Measurement(samples, extra, ops=ops, invocations=len(timings),
                       runner_version=next((t.version for t in timings if t.version), None))


_SAMPLERS = {
    "executor_runner": _executor_runner,
    "benchmark_model": _benchmark_model,
}


def measure_detailed(
    device: Device, runner_name: str, binary: str, model: str, options: RunOptions, *, label: str,
    hints: dict | None = None,
) -> Measurement:
    """`options.runs` samples in µs for one model, with the runner's extras (module docstring).
    `hints` (a dict the caller keeps across measurements) remembers each model's time per
    execution, so that executor_runner's untimed warm-up launch lasts about `options.warmup_s`."""
    get_runner(runner_name)  # unknown names fail here with the list of known runners
    result = _SAMPLERS[runner_name](device, binary, model, options, label, hints)
    if len(result.samples_us) < options.runs:
        raise RunnerFailed(f"{label}: got {len(result.samples_us)} samples, expected {options.runs}")
    if hints is not None and result.runner_version:
        hints[f"version:{runner_name}"] = result.runner_version
    return Measurement(result.samples_us[: options.runs], result.extra, result.ops, result.etdump,
                       result.invocations, result.runner_version)


def measure(
    device: Device, runner_name: str, binary: str, model: str, options: RunOptions, *, label: str
) -> list[float]:
    """`options.runs` samples in µs for one model (see the module docstring)."""
    return measure_detailed(device, runner_name, binary, model, options, label=label).samples_us
