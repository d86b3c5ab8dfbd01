"""The target protocol: where timing happens.

A target is this machine's CPU (`host`) or a phone reached over adb (its serial). Both hand back
raw samples in microseconds; statistics are derived later from the samples, never stored alone.

The measurement protocol (warm-up, rounds, shuffling, overhead op, persistence) lives in
`profiler.protocol` and drives any target through these few calls:

    target.prepare(runtime, model_files)      # once per job: push files, check runners
    state = target.round_state(threshold)     # before each round: wait for cool-down on a phone,
                                              # return what is recorded with that round's samples
    samples_us = target.measure(runtime, model_file, spec)   # one op, `spec.runs` samples
    target.close()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from profiler.runtimes.base import Runtime

__all__ = ["RunSpec", "Target", "TargetError", "DeviceLostError", "RunnerError"]


@dataclass(frozen=True)
class RunSpec:
    """How one op is invoked on a target."""

    threads: int = 1  # intra-op threads of the runtime; fixed so LUT rows are comparable
    warmup: int = 5  # invocations run and discarded before the timed ones
    runs: int = 20  # timed invocations per op per round (one sample each)
    core_mask: str | None = None  # taskset hex mask on phones; None = target's default
    timeout_s: float = 120.0  # a single op's run is abandoned (and marked failed) after this
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # runtime-specific options


class TargetError(RuntimeError):
    """A target could not do what was asked; the message says what the user can do."""


class DeviceLostError(TargetError):
    """The device went away mid-job. The job stops; what was measured is kept."""


class RunnerError(TargetError):
    """A runner crashed, timed out or printed output that does not parse, for one op.

    The job marks that op failed and goes on with the others.
    """


@runtime_checkable
class Target(Protocol):
    name: str  # "host" or the adb serial

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

    def close(self) -> None: ...
