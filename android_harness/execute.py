"""Running a runner binary on a device and turning its output into latency samples.

One sample is one timed inference, in microseconds:

- `executor_runner`: one invocation with `--num_executions warmup+runs`; its per-iteration lines
  are the samples, the first `warmup` are dropped.
- `benchmark_model`: it prints statistics, not runs, but with `--num_runs=2` its statistics line
  holds both runs (`first=`, `curr=`). So each invocation runs `warmup` untimed then 2 timed
  inferences, and ceil(runs / 2) invocations give the samples.

Each invocation is `timeout -s 9 T taskset MASK BINARY FLAGS...`: pinned to the core mask, killed
after the per-run timeout.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from .adb import CommandTimeout, Device, quote
from .runners import RunnerOutputError, RunnerTiming, get_runner, output_tail

__all__ = ["RunOptions", "RunnerFailed", "invoke", "measure", "SAMPLE_SEMANTICS"]

log = logging.getLogger(__name__)

SAMPLE_SEMANTICS = {
    "executor_runner": "one timed execution from an 'Iteration i of N' line; one invocation per "
    "measurement with --num_executions=warmup+runs, the first `warmup` iterations dropped",
    "benchmark_model": "one timed inference: each invocation runs --warmup_runs=warmup then "
    "--num_runs=2 (--min_secs=0) and contributes its first= and curr= values",
}
_TIMEOUT_EXIT = (124, 137)  # toybox timeout, or the shell reporting SIGKILL


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


def invoke(
    device: Device, runner_name: str, binary: str, model: str, *, warmup: int, runs: int,
    options: RunOptions, label: str,
) -> RunnerTiming:
    """One invocation of a runner; RunnerFailed names `label` and shows the output tail."""
    runner = get_runner(runner_name)
    argv = runner.command(binary, model, threads=options.threads, warmup=warmup, runs=runs,
                          xnnpack=options.xnnpack)
    line = " ".join(quote(a) for a in argv)
    if options.core_mask:
        line = f"taskset {quote(options.core_mask)} {line}"
    line = f"timeout -s 9 {int(math.ceil(options.timeout_s))} {line}"
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
    if result.exit_code != 0:
        raise RunnerFailed(f"{label}: {runner_name} exited with status {result.exit_code}"
                           f"\n  last lines:\n{output_tail(text)}")
    try:
        return runner.parse(text)
    except RunnerOutputError as exc:
        raise RunnerFailed(f"{label}: {exc}\n  last lines:\n{output_tail(text)}") from None


def _executor_runner_samples(
    device: Device, binary: str, model: str, options: RunOptions, label: str
) -> list[float]:
    timing = invoke(device, "executor_runner", binary, model, warmup=options.warmup,
                    runs=options.runs, options=options, label=label)
    if not timing.samples_us:
        raise RunnerFailed(f"{label}: this executor_runner build prints no 'Iteration i of N' "
                           "lines; build a recent ExecuTorch (see android_harness/README.md)")
    return list(timing.samples_us[options.warmup:])


def _benchmark_model_samples(
    device: Device, binary: str, model: str, options: RunOptions, label: str
) -> list[float]:
    samples: list[float] = []
    for _ in range(math.ceil(options.runs / 2)):
        timing = invoke(device, "benchmark_model", binary, model, warmup=options.warmup, runs=2,
                        options=options, label=label)
        if len(timing.samples_us) != 2:
            raise RunnerFailed(f"{label}: benchmark_model ran {timing.count} timed runs, "
                               "expected 2 (--num_runs=2 --min_secs=0)")
        samples.extend(timing.samples_us)
    return samples


_SAMPLERS = {
    "executor_runner": _executor_runner_samples,
    "benchmark_model": _benchmark_model_samples,
}


def measure(
    device: Device, runner_name: str, binary: str, model: str, options: RunOptions, *, label: str
) -> list[float]:
    """`options.runs` samples in µs for one model (see the module docstring)."""
    get_runner(runner_name)  # unknown names fail here with the list of known runners
    samples = _SAMPLERS[runner_name](device, binary, model, options, label)
    if len(samples) < options.runs:
        raise RunnerFailed(f"{label}: got {len(samples)} samples, expected {options.runs}")
    return samples[: options.runs]
