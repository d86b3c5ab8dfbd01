"""The target protocol: where timing happens.

A target is this machine's CPU (`host`) or a phone reached over adb (its serial). Both hand back
raw samples in microseconds; statistics are derived later from the samples, never stored alone.

The measurement protocol (warm-up, rounds, shuffling, overhead op, persistence) lives in
`profiler.protocol` and drives any target through these few calls:

    target.prepare(runtime, model_files)      # once per job: push files, check runners
    state = target.round_state(threshold)     # before each round: wait for cool-down on a phone,
                                              # return what is recorded with that round's samples
    samples_us = target.measure(runtime, model_file, spec)   # one op, `spec.runs` samples
    m = target.measure_detailed(runtime, model_file, spec)   # + load time, memory (`Measurement`)
    target.close()

`Measurement.extra` carries what the target knows besides the samples, under unit-named keys;
`load_us` and `memory_kb` are what every target reports (`load_extras`): the time to load and
initialise the model, and the memory the loaded model holds (`MEMORY_SEMANTICS` says what each
target's number is).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from android_harness.execute import Measurement
from profiler.runtimes.base import Runtime

__all__ = [
    "RunSpec", "Target", "TargetError", "DeviceLostError", "RunnerError", "Measurement",
    "MEMORY_SEMANTICS", "load_extras", "CACHE_STATES", "STOP", "JobStopped", "check_stop",
    "interruptible_sleep",
]  # fmt: skip

# Set when the user stops a run (Ctrl-C): every job of the process, each in its own thread, stops
# at its next op-round (or while it waits for a phone to cool), keeping what it measured.
STOP = threading.Event()

MEMORY_SEMANTICS = {
    "host": "growth of this process's resident memory over loading the model and its warm-up runs",
    "benchmark_model": "growth of the tool's peak resident memory from its start (its memory footprint delta)",
    "executor_runner": "the method's memory-planned buffers (activations; its log's planned buffer sizes)",
}


def load_extras(extra: dict[str, float], runner: str) -> dict[str, float]:
    """`load_us` and `memory_kb` from a measurement's extras (host or runner keys), where known."""
    out: dict[str, float] = {}
    load = extra.get("load_us", extra.get("init_us"))
    if load is not None:
        out["load_us"] = float(load)
    if "memory_kb" in extra:
        out["memory_kb"] = float(extra["memory_kb"])
    elif runner == "benchmark_model" and "mem_delta_mb" in extra:
        out["memory_kb"] = 1024.0 * float(extra["mem_delta_mb"])
    elif runner == "executor_runner" and "planned_memory_bytes" in extra:
        out["memory_kb"] = float(extra["planned_memory_bytes"]) / 1024.0
    return out


@dataclass(frozen=True)
class RunSpec:
    """How one op is invoked on a target."""

    threads: int = 1  # intra-op threads of the runtime; fixed so LUT rows are comparable
    warmup: int = 5  # invocations run and discarded before the timed ones
    runs: int = 20  # timed invocations per op per round (one sample each)
    core_mask: str | None = None  # taskset hex mask on phones; None = target's default
    timeout_s: float = 120.0  # a single op's run is abandoned (and marked failed) after this
    # Cache state of the timed invocations: "warm" runs one loaded model again and again (its
    # weights stay in cache); "cold" gives each invocation weights that are not in cache, as a
    # layer's are inside a network, while its input is warm (the host cycles loaded copies);
    # "replicas" times a model of `copies` copies of the op (`search.space.modules.Replicas`)
    # run again and again: every copy's weights are out of cache when it runs, its input in it.
    cache: str = "warm"
    copies: int = 1  # copies of the op one invocation runs: a sample is the invocation / copies
    # "cold" on the host: the loaded copies cycled hold together at least this many bytes (what a
    # network reads and writes between two uses of a layer's weights, `search.space.network_bytes`:
    # a job sets it per op); 0: twice the last-level cache (weights always from memory)
    cold_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # runtime-specific options

    def __post_init__(self) -> None:
        if self.cache not in CACHE_STATES:
            raise ValueError(f"cache must be one of {CACHE_STATES}, got {self.cache!r}")
        if self.cold_bytes < 0:
            raise ValueError(f"cold_bytes must be ≥ 0, got {self.cold_bytes}")
        if self.copies < 1 or (self.copies > 1 and self.cache != "replicas"):
            raise ValueError(f"copies={self.copies} needs cache='replicas' (and copies ≥ 1)")


CACHE_STATES = ("warm", "cold", "replicas")


class TargetError(RuntimeError):
    """A target could not do what was asked; the message says what the user can do."""


class DeviceLostError(TargetError):
    """The device went away mid-job. The job stops; what was measured is kept."""


class RunnerError(TargetError):
    """A runner crashed, timed out or printed output that does not parse, for one op.

    The job marks that op failed and goes on with the others.
    """


class JobStopped(TargetError):
    """The run was stopped (Ctrl-C); finished op-rounds are kept and the same command resumes."""


def check_stop() -> None:
    """Raise JobStopped once `STOP` is set."""
    if STOP.is_set():
        raise JobStopped("stopped (Ctrl-C): finished op-rounds are saved; run the same command again to resume")


def interruptible_sleep(seconds: float) -> None:
    """time.sleep that ends early, raising JobStopped, when `STOP` is set."""
    STOP.wait(seconds)
    check_stop()


@runtime_checkable
class Target(Protocol):
    name: str  # "host" or the adb serial
    cache_states: tuple[str, ...]  # RunSpec.cache values it can time with; the first is its plain default

    def fingerprint(self) -> dict[str, Any]:
        """Device identity for the LUT metadata; must contain a stable `device_id` slug."""
        ...

    def prepare(self, runtime: Runtime, model_files: list[Path]) -> None:
        """Make `model_files` runnable with `runtime` on the target (push them, check runners)."""
        ...

    def round_state(self) -> dict[str, Any]:
        """Called before each round. May block (cool-down); returns values recorded per round
        (e.g. temperature_c, cpu_freq_khz, governor). The host returns what it can read."""
        ...

    def measure(self, runtime: Runtime, model_file: Path, spec: RunSpec) -> list[float]:
        """Run one model file and return `spec.runs` latency samples in microseconds.

        Raises RunnerError for a failure of this op only and DeviceLostError when the device is
        gone.
        """
        ...

    def measure_detailed(
        self, runtime: Runtime, model_file: Path, spec: RunSpec, *, profile: bool = False
    ) -> Measurement:
        """`measure` plus what the target reports with the samples (`extra`: load_us, memory_kb,
        ...) and, with `profile`, its per-operator view of the run (`ops` rows or an `etdump`)."""
        ...

    def close(self) -> None: ...
