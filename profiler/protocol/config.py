"""What a measurement job is asked to do, and what it answers: the protocol's parameters
(`ProtocolConfig`), the job's whole settings (`JobSettings`: the runtime, its threads and core
mask, the protocol, where files go and how existing work is treated), its result
(`ProfileResult`) and its errors (`JobError`, `IncompleteJobError`).

    JobSettings("tflite", threads=2, protocol=ProtocolConfig(rounds=3))
    JobSettings.from_kwargs("tflite", threads=2, rounds=3)        the same, from flat keywords
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from profiler.runtimes import Runtime, get_runtime
from profiler.targets.base import CACHE_STATES

__all__ = ["PROTOCOL_CACHE_STATES", "ProtocolConfig", "JobSettings", "ProfileResult", "JobError", "IncompleteJobError"]

PROTOCOL_CACHE_STATES = (*CACHE_STATES, "mixed")  # "mixed": a state per op (see `profiler.protocol.plan`)


@dataclass(frozen=True)
class ProtocolConfig:
    """How ops are timed. Defaults: see bench/lut_repeatability.py for the noise they give."""

    rounds: int = 5  # rounds over all ops; each visits every op once, shuffled
    warmup: int = 5  # untimed invocations before an op's timed ones, in every round
    runs: int = 20  # timed invocations per op per round (one sample each)
    seed: int = 0  # round r is shuffled with random.Random(seed + r)
    shuffle: bool = True  # False keeps the sorted key order (for debugging only)
    retries: int = 1  # faults an op may have (each re-measured later) before it is marked failed
    # "cold": each timed invocation finds the op's weights out of cache and its input in cache, as
    # a layer inside a network does (host: cycling loaded copies, see profiler.targets.host);
    # "warm": one loaded copy run again and again (weights and input both in cache);
    # "mixed": cold for the ops whose weights are streamed (`streamed_ops`), warm for the others;
    # None: "mixed" where the target can time cold ops (the host cycles copies, a phone's runners
    # time replicas), else the target's first `cache_states` (see `bench.lut_accuracy` and the
    # docs/results.md for the protocols side by side)
    cache: str | None = None
    # a cold op's loaded copies together hold this many bytes (host; `RunSpec.cold_bytes`), so that
    # its weights come from where a network's would; None: what a network of the op's space reads and
    # writes in one pass (`search.space.network_bytes`; a job records the value);
    # 0: twice the last-level cache (always from memory, the rule before)
    cold_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.cache not in (None, *PROTOCOL_CACHE_STATES):
            raise ValueError(f"cache must be one of {PROTOCOL_CACHE_STATES}, got {self.cache!r}")
        if self.rounds < 1 or self.runs < 1 or self.warmup < 0 or self.retries < 0 or (self.cold_bytes or 0) < 0:
            raise ValueError(
                f"need rounds ≥ 1, runs ≥ 1, warmup ≥ 0, retries ≥ 0, cold_bytes ≥ 0; got {self.rounds}, "
                f"{self.runs}, {self.warmup}, {self.retries}, {self.cold_bytes}"
            )


_PROTOCOL_FIELDS = frozenset(f.name for f in fields(ProtocolConfig))


@dataclass(frozen=True)
class JobSettings:
    """Everything that defines a profiling job besides its space and its device (and the device's
    options): what is measured with, how, where its files go, and how existing work is treated.
    One object from the CLI or `profiler.api.profile_space` down to `profile_ops`, `plan_job` and
    `preflight_job`. What of it makes two LUTs comparable is recorded as the settings record
    (`profiler.protocol.settings`), not this object: the output folder or a progress bar are not."""

    runtime: str  # runtime name (`profiler.runtimes.RUNTIMES`): executorch, tflite, onnxruntime
    dtype: str = "fp32"  # what the exported models compute in: fp32, or int8 where the runtime has it
    layout: str | None = None  # I/O layout of exported ops ("nhwc"/"nchw"); None: the runtime's own
    threads: int = 1  # threads per invocation (fixed: part of the LUT's runtime dir name)
    core_mask: str | None = None  # phones: the cores to pin to (hex); None: the big cluster
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)  # rounds, warm-up, runs, seed, cache
    ops_limit: int | None = None  # only the first N unique ops of the space (quick tries)
    out: str | Path = "luts"  # the LUT store's root
    cache_root: str | Path | None = None  # the export cache; None: `profiler.export`'s default
    export_workers: int | None = None  # parallel exporters; None: the export cache's default
    lock_wait_s: float = 0.0  # how long to wait for a device another job holds (then DeviceBusyError)
    retry_failed: bool = False  # give ops that failed to export or run a fresh chance
    fresh: bool = False  # discard an interrupted job's work dir instead of resuming it
    skip_existing: bool = False  # return the latest version as is when its settings record matches
    allow_failed: bool = False  # publish a LUT version without the ops that failed
    progress: bool = True  # progress bars

    @classmethod
    def from_kwargs(cls, runtime: str, **kwargs: Any) -> JobSettings:
        """The settings from flat keywords: JobSettings' fields, and ProtocolConfig's (rounds,
        warmup, runs, seed, cache, ...) for its `protocol`."""
        return cls(runtime).updated(**kwargs)

    def updated(self, **kwargs: Any) -> JobSettings:
        """A copy with some fields changed; ProtocolConfig's fields change `protocol`."""
        own = {f.name for f in fields(self)}
        unknown = sorted(set(kwargs) - own - _PROTOCOL_FIELDS)
        if unknown:
            raise TypeError(f"unknown job settings: {', '.join(unknown)} (known: {', '.join(sorted(own | _PROTOCOL_FIELDS))})")
        protocol = {k: kwargs.pop(k) for k in list(kwargs) if k in _PROTOCOL_FIELDS}
        if protocol:
            kwargs["protocol"] = replace(kwargs.get("protocol", self.protocol), **protocol)
        return replace(self, **kwargs)

    def make_runtime(self) -> Runtime:
        """The runtime these settings export and time with (ValueError: unknown runtime, dtype or layout)."""
        return get_runtime(self.runtime, self.dtype, self.layout)


@dataclass(frozen=True)
class ProfileResult:
    lut_dir: Path  # the LUT version written
    num_ops: int  # space ops in the LUT (overhead rows not counted)
    num_failed: int  # ops that failed to export or run
    elapsed_s: float
    skipped: int  # op-rounds found on disk from an interrupted run and not measured again
    exported: int = 0  # models exported by this run (0 when the cache had them all)
    device_id: str = ""
    reused: bool = False  # an up-to-date LUT version existed and nothing was measured

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lut_dir"] = str(self.lut_dir)
        d["elapsed_s"] = round(self.elapsed_s, 2)
        return d


class JobError(ValueError):
    """A measurement job cannot start as asked; the message says what to do."""


class IncompleteJobError(JobError):
    """Ops failed and gaps were not allowed: no LUT version was written, the job's work dir is
    kept (incomplete), and `--retry-failed` or `--allow-failed` finishes it."""

    def __init__(self, message: str, *, num_failed: int, work_dir: Path) -> None:
        super().__init__(message)
        self.num_failed = num_failed
        self.work_dir = work_dir
