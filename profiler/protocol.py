"""The measurement protocol: export, then R shuffled rounds over all ops, persisted as it goes.

    1. plan: the space's unique ops (first `ops_limit` of them), minus identity ops (not timed:
       they compute nothing and exporters elide them), plus one overhead op per distinct input
       shape and one at the network input (`search.space.overhead_op`).
    1b. preflight (`profiler.preflight`, phones): the runner's ABI, free space, and one run of
       the runner on a tiny op with the job's flags; a failure stops the job before any op of
       the space is exported (PreflightError names the check and the fix).
    2. export everything through the cache (`profiler.export`); failures become failed rows.
    3. rounds: round r visits every pending op once, in the order `Random(seed + r)` shuffles the
       sorted keys to, after `target.round_state()` (cool-down on phones; recorded per round).
       Each op-round runs `warmup` untimed and `runs` timed invocations; its samples are appended
       to the job's work dir and fsynced before the next op starts.
    4. the table is derived from the samples (`lut.stats`), and `lut.store.write_lut` writes the
       next LUT version; the work dir is removed. A job with failed ops (export or run) writes
       no version unless `allow_failed`: it keeps its work dir as incomplete (`incomplete.json`
       names the failed ops; `lut list` shows it) and raises IncompleteJobError with the count;
       re-running with `retry_failed` measures only the failed ops and completes it.

Work dir: `<out>/<device_id>/<space>/<runtime_dir>/.partial/` with job.json (the settings record
and the op list; a re-run must match them field for field, else it stops naming the fields),
samples.csv (op_key, round, sample, latency_us), rounds.jsonl (state per round) and failed.jsonl
(one record per faulty op-round). A crash or Ctrl-C loses at most the op-round in flight;
re-running the same command skips every op-round already on disk. A runner fault costs one
op-round: it is measured again after the last round, and the op is marked failed only after
`retries + 1` faults (`--retry-failed` gives ops that failed to run a fresh chance).
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from lut.files import append_durable, atomic_write
from lut.schema import EXTRA_COLUMNS, TABLE_COLUMNS
from lut.stats import STAT_COLUMNS, summarize
from lut.store import (
    INCOMPLETE_DIR,
    INCOMPLETE_FILE,
    LutError,
    list_versions,
    load_lut,
    provenance_of,
    runtime_dir_name,
    write_lut,
)
from profiler.export import ExportCache, ExportItem
from profiler.preflight import EXPORT_LOCK, PreflightError, PreflightReport, models_bytes, run_preflight
from profiler.runtimes import Runtime
from profiler.targets.base import (
    CACHE_STATES,
    MEMORY_SEMANTICS,
    RunnerError,
    RunSpec,
    Target,
    check_stop,
    load_extras,
)
from profiler.targets.lock import target_lock
from search.space import Op, get_space, overhead_op

__all__ = [
    "ProtocolConfig", "ProfileResult", "JobError", "IncompleteJobError", "PROTOCOL_CACHE_STATES", "plan_ops",
    "streamed_ops",
    "op_cache_states", "run_rounds", "profile_ops", "plan_job", "preflight_job", "JobPlan", "PreflightError",
    "settings_record", "settings_diff",
]

log = logging.getLogger(__name__)

PARTIAL_DIR = INCOMPLETE_DIR  # the work dir of a job in progress, interrupted or incomplete
PROTOCOL_CACHE_STATES = (*CACHE_STATES, "mixed")  # "mixed": a state per op (see `streamed_ops`)


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

    def __post_init__(self) -> None:
        if self.cache not in (None, *PROTOCOL_CACHE_STATES):
            raise ValueError(f"cache must be one of {PROTOCOL_CACHE_STATES}, got {self.cache!r}")
        if self.rounds < 1 or self.runs < 1 or self.warmup < 0 or self.retries < 0:
            raise ValueError(
                f"need rounds ≥ 1, runs ≥ 1, warmup ≥ 0, retries ≥ 0; got {self.rounds}, {self.runs}, "
                f"{self.warmup}, {self.retries}"
            )


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


# What the overhead ops are (`search.space.modules.Overhead`, per `RuntimeInfo.overhead`); part of
# a job's settings, so a LUT whose overhead ops were another model is neither resumed nor reused.
OVERHEAD_OPS = {
    "sampler": "a 1×1 depthwise conv sampling 2×2 pixels of the input (an invocation with no pass over "
               "it) at each op's input shape, timed in the same rounds",
    "relu": "one ReLU at each op's input shape, timed in the same rounds",
}  # fmt: skip


def plan_ops(space_name: Any, ops_limit: int | None = None) -> tuple[list[Op], list[Op], Op]:
    """(ops to time incl. overhead ops, identity ops, the network-input overhead op). The space is
    a name, or an object with `name`, `hash()`, `unique_ops()` and `fixed_ops()` (a sampled
    `profiler.shapes.ShapeSpace`)."""
    space = get_space(space_name) if isinstance(space_name, str) else space_name
    ops = space.unique_ops()
    if ops_limit is not None:
        if ops_limit < 1:
            raise JobError(f"--ops-limit must be ≥ 1, got {ops_limit}")
        ops = ops[:ops_limit]
    identity = [op for op in ops if op.is_identity]
    timed = [op for op in ops if not op.is_identity]
    net_overhead = overhead_op(space.fixed_ops()["stem"])
    overheads = {o.key: o for o in [net_overhead, *(overhead_op(op) for op in timed)]}
    timed_keys = {op.key for op in timed}
    return timed + [o for k, o in overheads.items() if k not in timed_keys], identity, net_overhead


# Replicas (cache state "replicas"): every op of an input shape, and that shape's overhead op, is
# exported as the same number of copies, so that what an invocation pays once (dispatch, runtime
# entry) cancels exactly when the overhead op is subtracted. The copies of a shape together hold at
# least REPLICA_BUDGET_BYTES of its largest op's weights (phone last-level caches are 2–8 MiB), at
# most REPLICA_MAX copies; the network's input shape (the stem's) has one copy, because its
# overhead op is also the once-per-network overhead.
REPLICA_BUDGET_BYTES = 16 << 20
REPLICA_MAX = 8


def replica_counts(timed: list[Op], net_overhead: Op, dtype: str = "fp32") -> dict[str, int]:
    """op key → copies per invocation, for every timed op (overhead ops included)."""
    bytes_per_param = 1 if dtype == "int8" else 4
    largest: dict[tuple[int, int, int], int] = {}
    for op in timed:
        shape = (op.c_in, op.h, op.w)
        largest[shape] = max(largest.get(shape, 0), op.params * bytes_per_param)
    counts = {}
    for op in timed:
        shape = (op.c_in, op.h, op.w)
        if shape == (net_overhead.c_in, net_overhead.h, net_overhead.w):
            counts[op.key] = 1
        else:
            counts[op.key] = max(2, min(REPLICA_MAX, -(-REPLICA_BUDGET_BYTES // max(1, largest[shape]))))
    return counts


# Mixed cache state ("mixed"). Inside a network a layer finds its input in cache (the previous
# layer just wrote it) and its weights out of it (a network's weights exceed a last-level cache).
# Whether the cold weights cost time depends on how the op uses them:
#   - a batch-1 fully connected layer (the classifier) uses each weight about once: it is bound by
#     where its weights come from (on this project's host the head's `pool_fc` runs ~4x its warm
#     time inside networks, and as fast as its cold time);
#   - a convolution whose weights fit in a core's private cache (L2) reads them from far memory
#     once per invocation and reuses them from there: warm and in-network times agree;
#   - a convolution whose weights fit in no private cache and outweigh its activations (the 7x7
#     stages' expanded blocks and the head conv: 1-3 MB of weights over 0.1-0.5 MB of
#     activations) re-reads them from the shared cache in a warm loop but from memory inside a
#     network, where per layer they ran 1.1-1.25x their warm and 0.9-1.05x their cold time.
# Timing every op cold over-charges the others: their intermediate and output buffers are cold
# too, unlike the memory a network's planner reuses. So "mixed" times cold the ops that use each
# weight fewer than STREAMED_REUSE times or whose weights exceed both PRIVATE_CACHE_BYTES and
# their activations, warm the rest, and an input shape's overhead op cold when every op it is
# subtracted from is.
STREAMED_REUSE = 8
PRIVATE_CACHE_BYTES = 512 << 10  # a core's L2 on this project's host and on big phone cores


def streamed_ops(timed: Sequence[Op], net_overhead: Op, *, whole_shapes: bool = False, dtype: str = "fp32",
                 private_cache_bytes: int = PRIVATE_CACHE_BYTES) -> set[str]:
    """Keys of the ops (overhead ops included) that "mixed" times cold: weights used < STREAMED_REUSE
    times per invocation (MACs per parameter), or more weight bytes than PRIVATE_CACHE_BYTES and
    than activation bytes (`private_cache_bytes`: a phone's own L2, read from its sysfs); and the
    overhead ops whose every op is such. `whole_shapes` keeps only
    the input shapes whose every op streams (replicas share the overhead op of their shape)."""
    bytes_per_el = 1 if dtype == "int8" else 4
    real = [op for op in timed if op.block != "overhead"]
    cold = {
        op.key for op in real
        if op.params > 0 and (
            op.macs < STREAMED_REUSE * op.params
            or op.params * bytes_per_el > max(private_cache_bytes, op.activations * bytes_per_el)
        )
    }  # fmt: skip
    shape = {op.key: (op.c_in, op.h, op.w) for op in timed}
    users: dict[tuple[int, int, int], list[str]] = {}
    for op in real:
        users.setdefault(shape[op.key], []).append(op.key)
    net_shape = (net_overhead.c_in, net_overhead.h, net_overhead.w)
    for ovh in (op for op in timed if op.block == "overhead"):
        keys = users.get(shape[ovh.key], [])
        if shape[ovh.key] != net_shape and keys and all(k in cold for k in keys):
            cold.add(ovh.key)
    if whole_shapes:
        cold = {k for k in cold if all(u in cold for u in users.get(shape[k], []))}
    return cold


def op_cache_states(timed: Sequence[Op], net_overhead: Op, cache: str, cold_state: str, dtype: str = "fp32",
                    private_cache_bytes: int = PRIVATE_CACHE_BYTES) -> dict[str, str]:
    """Under "mixed", op key → the state each timed op is timed in: `cold_state` ("cold", or
    "replicas" where the target cannot cycle copies) for the streamed ops, "warm" for the others;
    {} under any other cache state (every op in that one). Replicas divide an invocation, its
    overhead included, by their copies, so they are used only for input shapes whose every op
    streams (with the shape's overhead op replicated alike)."""
    if cache != "mixed":
        return {}
    cold = streamed_ops(timed, net_overhead, whole_shapes=cold_state == "replicas", dtype=dtype,
                        private_cache_bytes=private_cache_bytes)
    return {op.key: (cold_state if op.key in cold else "warm") for op in timed}


# --- the round loop (shared by op jobs and whole-arch measurements) -----------------------------
def run_rounds(
    target: Target,
    runtime: Runtime,
    files: dict[str, Path],
    config: ProtocolConfig,
    spec: RunSpec,
    *,
    done: set[tuple[str, int]] = frozenset(),  # type: ignore[assignment]
    round_states: dict[int, dict[str, Any]] | None = None,
    on_state: Callable[[int, dict[str, Any]], None] | None = None,
    on_samples: Callable[[str, int, list[float], dict[str, float]], None] | None = None,
    on_failure: Callable[[str, int, str], None] | None = None,
    failures: dict[str, int] | None = None,
    on_remeasure: Callable[[str, int, str], None] | None = None,
    remeasures: dict[str, int] | None = None,
    specs: dict[str, RunSpec] | None = None,
    progress: bool = True,
    desc: str = "measure",
) -> set[str]:
    """Measure every (key, round) not in `done`; report through the callbacks.

    A fault (the runner crashed, timed out, printed nothing usable) costs that op-round only: the
    op goes on in the next rounds, and its missing op-round is measured again after the last
    round. An op is given up after `config.retries + 1` faults (`failures` holds each key's fault
    count so far, e.g. from an interrupted job, and is updated). `specs` overrides `spec` for some
    keys (e.g. ops timed cold among networks timed warm). Returns the keys given up."""
    keys = sorted(files)
    failures = failures if failures is not None else {}
    remeasures = remeasures if remeasures is not None else {}
    # a phone checks the conditions of each op-round (`op_conditions`: too hot, below its locked
    # clock) and allows `max_remeasure` re-measurements of an op before it fails
    conditions = getattr(target, "op_conditions", None)
    limit = int(getattr(target, "max_remeasure", 0))
    round_states = round_states if round_states is not None else {}
    done = set(done)
    bar = tqdm(total=len(keys) * config.rounds, initial=len(done), desc=desc, unit="op", disable=not progress)

    def given_up(key: str) -> bool:
        return failures.get(key, 0) > config.retries or (conditions is not None and remeasures.get(key, 0) > limit)

    def attempt(key: str, r: int) -> None:
        check_stop()  # Ctrl-C: stop between op-rounds (what is on disk stays)
        key_spec = (specs or {}).get(key, spec)
        try:
            m = target.measure_detailed(runtime, files[key], key_spec)
            samples = [v / key_spec.copies for v in m.samples_us]  # one sample per copy of the op
            if len(samples) != key_spec.runs or min(samples) <= 0:
                raise RunnerError(
                    f"target returned {len(samples)} samples (expected {key_spec.runs}) or non-positive ones"
                )
        except RunnerError as e:
            failures[key] = failures.get(key, 0) + 1
            later = "giving up on it" if given_up(key) else "measuring that op-round again later"
            log.warning("op %s failed in round %d (fault %d): %s; %s", key, r + 1, failures[key], e, later)
            if on_failure is not None:
                on_failure(key, r, str(e))
            if given_up(key):
                bar.update(sum((key, q) not in done for q in range(config.rounds)))
            return
        reason = conditions() if conditions is not None else None
        if reason:  # taken too hot or throttled: its samples are dropped and it is measured again later
            remeasures[key] = remeasures.get(key, 0) + 1
            later = "giving up on it" if given_up(key) else "measuring that op-round again after a cool-down"
            log.warning("op %s, round %d: %s (%d of %d re-measurements); %s", key, r + 1, reason,
                        remeasures[key], limit, later)  # fmt: skip
            if on_remeasure is not None:
                on_remeasure(key, r, reason)
            if given_up(key):
                bar.update(sum((key, q) not in done for q in range(config.rounds)))
            return
        done.add((key, r))
        if on_samples is not None:
            on_samples(key, r, samples, load_extras(m.extra, runtime.runner if target.name != "host" else "host"))
        bar.update()

    try:
        for r in range(config.rounds):
            order = list(keys)
            if config.shuffle:
                random.Random(config.seed + r).shuffle(order)
            pending = [k for k in order if (k, r) not in done and not given_up(k)]
            if not pending:
                continue
            if r not in round_states:
                round_states[r] = target.round_state()
                if on_state is not None:
                    on_state(r, round_states[r])
            bar.set_postfix(round=f"{r + 1}/{config.rounds}")
            for key in pending:
                if not given_up(key):  # it may have failed too often earlier in this round
                    attempt(key, r)
        # retry passes: each missing op-round of an op not given up, in round order
        while missing := [(k, r) for r in range(config.rounds) for k in keys if (k, r) not in done and not given_up(k)]:
            bar.set_postfix(round="retry")
            if hasattr(target, "cool_down"):  # re-measured op-rounds wait for the phone to cool first
                target.cool_down()
            for key, r in missing:
                if not given_up(key):
                    attempt(key, r)
    finally:
        bar.close()
    return {k for k in keys if given_up(k)}


# --- the persistent work dir --------------------------------------------------------------------
class _WorkDir:
    """Append-only, fsynced record of a job in progress."""

    def __init__(self, path: Path, job: dict[str, Any], *, fresh: bool) -> None:
        self.path = path
        self.samples_file = path / "samples.csv"
        self.rounds_file = path / "rounds.jsonl"
        self.failed_file = path / "failed.jsonl"
        self.extras_file = path / "extras.jsonl"
        self.remeasured_file = path / "remeasured.jsonl"
        job_file = path / "job.json"
        if fresh and path.exists():
            shutil.rmtree(path)
        if job_file.is_file():
            old = json.loads(job_file.read_text())
            diff = settings_diff(old, job)
            if diff:
                raise JobError(
                    f"an interrupted job with different settings is waiting in {path}: {'; '.join(diff)}. "
                    "Its samples were taken under its own settings and are not merged with others: re-run "
                    "with the same settings to resume it, or pass --fresh to discard it"
                )
        else:
            path.mkdir(parents=True, exist_ok=True)
            atomic_write(job_file, json.dumps(job, indent=2, sort_keys=True))
        self.samples = self._load_samples()
        self.states = {int(d.pop("round")): d for d in _read_jsonl(self.rounds_file)}
        self.faults = _read_jsonl(self.failed_file)  # one record per fault: op_key, round, error
        self.extras = {(d.pop("op_key"), int(d.pop("round"))): d for d in _read_jsonl(self.extras_file)}
        self.remeasured = _read_jsonl(self.remeasured_file)  # op_key, round, reason: one per dropped op-round

    def _load_samples(self) -> dict[tuple[str, int], list[float]]:
        """Complete op-rounds on disk; a torn last line or a partial op-round is dropped and the
        file rewritten without it."""
        out: dict[tuple[str, int], list[float]] = {}
        if not self.samples_file.is_file():
            self.samples_file.write_text("op_key,round,sample,latency_us\n")
            return out
        lines = self.samples_file.read_text().split("\n")
        torn = lines[-1] != ""  # the file always ends with "\n" after a complete write
        groups: dict[tuple[str, int], list[tuple[int, float]]] = {}
        for line in lines[1:-1]:
            parts = line.split(",")
            if len(parts) != 4:
                continue
            try:
                groups.setdefault((parts[0], int(parts[1])), []).append((int(parts[2]), float(parts[3])))
            except ValueError:
                continue
        runs = json.loads((self.path / "job.json").read_text())["protocol"]["runs"]
        for k, rows in groups.items():
            if [i for i, _ in rows] == list(range(runs)):
                out[k] = [v for _, v in rows]
        if torn or sum(len(v) for v in groups.values()) != len(out) * runs:
            log.warning("dropping an incomplete op-round from %s (interrupted mid-write)", self.samples_file)
            body = "".join(_sample_lines(k, r, v) for (k, r), v in out.items())
            atomic_write(self.samples_file, "op_key,round,sample,latency_us\n" + body)
        return out

    def add_samples(self, key: str, r: int, samples: list[float], extra: dict[str, float] | None = None) -> None:
        if extra:  # before the samples: an op-round on disk always has its extras
            append_durable(self.extras_file, json.dumps({"op_key": key, "round": r, **extra}) + "\n")
            self.extras[(key, r)] = dict(extra)
        append_durable(self.samples_file, _sample_lines(key, r, samples))
        self.samples[(key, r)] = samples

    def add_state(self, r: int, state: dict[str, Any]) -> None:
        append_durable(self.rounds_file, json.dumps({"round": r, **state}) + "\n")
        self.states[r] = state

    def add_fault(self, key: str, r: int, error: str) -> None:
        record = {"op_key": key, "round": r, "error": error}
        append_durable(self.failed_file, json.dumps(record) + "\n")
        self.faults.append(record)

    def add_remeasure(self, key: str, r: int, reason: str) -> None:
        record = {"op_key": key, "round": r, "reason": reason}
        append_durable(self.remeasured_file, json.dumps(record) + "\n")
        self.remeasured.append(record)

    def remeasure_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self.remeasured:
            counts[d["op_key"]] = counts.get(d["op_key"], 0) + 1
        return counts

    def fault_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self.faults:
            counts[d["op_key"]] = counts.get(d["op_key"], 0) + 1
        return counts

    def last_error(self, key: str) -> str:
        errors = [d["error"] for d in self.faults if d["op_key"] == key]
        return errors[-1] if errors else ""


def _sample_lines(key: str, r: int, samples: Sequence[float]) -> str:
    return "".join(f"{key},{r},{i},{v:.3f}\n" for i, v in enumerate(samples))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line from an interrupted write
            continue
    return out


# --- the op job ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobPlan:
    """What a job times and how: the ops, their cache states and copies, the run specs."""

    config: ProtocolConfig  # with its cache state resolved for the target
    space: Any  # search.space.Space
    timed: list[Op]  # ops to time, overhead ops included
    identity: list[Op]
    net_overhead: Op
    per_op: dict[str, str]  # "mixed": op key → cache state; else {}
    spec: RunSpec  # the job's plain run spec (the flags every invocation uses)
    copies: dict[str, int]  # op key → copies of the op per invocation (replicas)
    specs: dict[str, RunSpec]  # op key → its run spec
    cold_state: str | None
    private_cache_bytes: int = PRIVATE_CACHE_BYTES  # what the `mixed` rule took as a core's L2
    private_cache_source: str = "default"  # "default", or where the target read it (a phone's sysfs)

    def models_bytes(self, dtype: str) -> int:
        return models_bytes(self.timed, self.copies, dtype)


def plan_job(
    target: Target, runtime: Runtime, space_name: str, config: ProtocolConfig, *, threads: int,
    core_mask: str | None, ops_limit: int | None,
) -> JobPlan:  # fmt: skip
    """The plan of a job on `target` (pure: touches neither the target nor files)."""
    states = getattr(target, "cache_states", ("warm",))
    cold_state = next((s for s in ("cold", "replicas") if s in states), None)
    if config.cache is not None and config.cache not in states and not (config.cache == "mixed" and cold_state):
        raise JobError(
            f"{target.name} cannot time ops with {config.cache} caches (it can: {', '.join(states)}); "
            f"use --cache {states[0]}"
        )
    config = replace(config, cache=config.cache or ("mixed" if cold_state else states[0]))
    space = get_space(space_name) if isinstance(space_name, str) else space_name
    timed, identity, net_overhead = plan_ops(space, ops_limit)
    read = getattr(target, "private_cache_bytes", None)  # a phone's L2 from its sysfs, where listed
    private = int(read) if read else PRIVATE_CACHE_BYTES
    source = getattr(target, "private_cache_source", "sysfs") if read else "default"
    per_op = op_cache_states(timed, net_overhead, config.cache, cold_state or "warm", runtime.dtype,
                             private_cache_bytes=private)
    spec = RunSpec(threads=threads, warmup=config.warmup, runs=config.runs, core_mask=core_mask,
                   cache="warm" if per_op else config.cache)  # fmt: skip
    copies = replica_counts(timed, net_overhead, runtime.dtype) if config.cache == "replicas" else {}
    if per_op:  # "mixed": copies for the ops timed as replicas (a phone's cold state)
        copies = {k: n for k, n in replica_counts(timed, net_overhead, runtime.dtype).items()
                  if per_op[k] == "replicas"}  # fmt: skip
    specs = {op.key: replace(spec, cache=per_op.get(op.key, spec.cache), copies=copies.get(op.key, 1)) for op in timed}
    return JobPlan(config, space, timed, identity, net_overhead, per_op, spec, copies, specs, cold_state,
                   private, source)


def preflight_job(
    target: Target, runtime: Runtime, space_name: str, *, threads: int = 1, core_mask: str | None = None,
    config: ProtocolConfig = ProtocolConfig(), ops_limit: int | None = None,
    cache_root: str | Path | None = None, lock_wait_s: float = 0.0,
) -> PreflightReport:  # fmt: skip
    """The preflight a job with these settings runs (under the device's lock), alone."""
    plan = plan_job(target, runtime, space_name, config, threads=threads, core_mask=core_mask, ops_limit=ops_limit)
    with target_lock(target, wait_s=lock_wait_s, what=f"preflight {runtime.name}"):
        target.fingerprint()  # as the job does first: connects, locks the clocks
        return run_preflight(target, runtime, plan.spec, need_bytes=plan.models_bytes(runtime.dtype),
                             cache_root=cache_root)  # fmt: skip


def profile_ops(
    target: Target,
    runtime: Runtime,
    space_name: str,
    *,
    out: str | Path = "luts",
    threads: int = 1,
    core_mask: str | None = None,
    config: ProtocolConfig = ProtocolConfig(),
    ops_limit: int | None = None,
    cache_root: str | Path | None = None,
    export_workers: int | None = None,
    retry_failed: bool = False,
    fresh: bool = False,
    progress: bool = True,
    skip_existing: bool = False,
    lock_wait_s: float = 0.0,
    allow_failed: bool = False,
) -> ProfileResult:
    """Build (or resume) the LUT of `space_name` on `target` with `runtime`; see module doc.

    With `skip_existing`, a latest version whose settings record (`settings_record`: space,
    runtime, exporters, protocol, the target's runner sha256, core mask, clock lock, temperature
    limit) equals this job's and without failed ops is returned as is (`reused=True`); a
    different one is measured again, with the differing fields logged. The job holds the
    device's lock (`profiler.targets.lock`) throughout; a busy device waits `lock_wait_s`, then
    raises DeviceBusyError."""
    kwargs = dict(out=out, threads=threads, core_mask=core_mask, config=config, ops_limit=ops_limit,
                  cache_root=cache_root, export_workers=export_workers, retry_failed=retry_failed,
                  fresh=fresh, progress=progress, skip_existing=skip_existing, allow_failed=allow_failed)  # fmt: skip
    with target_lock(target, wait_s=lock_wait_s, what=f"profile {space_name} with {runtime.name}"):
        return _profile_ops(target, runtime, space_name, **kwargs)


def _profile_ops(
    target: Target,
    runtime: Runtime,
    space_name: str,
    *,
    out: str | Path,
    threads: int,
    core_mask: str | None,
    config: ProtocolConfig,
    ops_limit: int | None,
    cache_root: str | Path | None,
    export_workers: int | None,
    retry_failed: bool,
    fresh: bool,
    progress: bool,
    skip_existing: bool,
    allow_failed: bool,
) -> ProfileResult:
    t0 = time.perf_counter()
    plan = plan_job(target, runtime, space_name, config, threads=threads, core_mask=core_mask, ops_limit=ops_limit)
    config, space, timed, identity, net_overhead = plan.config, plan.space, plan.timed, plan.identity, plan.net_overhead
    per_op, spec, copies, specs, cold_state = plan.per_op, plan.spec, plan.copies, plan.specs, plan.cold_state
    fp = target.fingerprint()
    device_id = fp["device_id"]
    rdir = runtime_dir_name(runtime.name, threads, runtime.dtype)
    job = {
        "device_id": device_id,
        "space": {"name": space.name, "hash": space.hash()},
        "runtime": {"name": runtime.name, "dtype": runtime.dtype, "layout": runtime.layout, "threads": threads,
                    "core_mask": core_mask},
        "exporters": runtime.versions(),
        # the per-op states too: a LUT of another `mixed` rule is neither resumed nor reused
        "protocol": {**asdict(config), "overhead_op": OVERHEAD_OPS[runtime.info.overhead],
                     **({"op_cache": _non_warm(per_op)} if per_op else {}),
                     # a phone's own L2 (the host keeps the fixed value, and its records their form)
                     **({"private_cache_bytes": plan.private_cache_bytes}
                        if per_op and plan.private_cache_source != "default" else {})},
        "ops": sorted(op.key for op in timed),
    }
    # before anything of the space is exported: a runner that cannot run here stops the job now
    # (a phone's; the host runs its runtimes in this process and has nothing to push)
    if hasattr(target, "preflight"):
        check = run_preflight(target, runtime, spec, need_bytes=plan.models_bytes(runtime.dtype), cache_root=cache_root)
        if not check.ok:
            raise PreflightError(check.message())
        log.info("%s: preflight passed (%s; %.1f s)", target.name, ", ".join(c.name for c in check.checks),
                 check.elapsed_s)  # fmt: skip
    # what the target measures with (a phone: its runner's sha256 now that it is pushed, core mask,
    # clock lock, temperature limit): part of the settings a resume or a reuse must match
    job["target"] = target.settings(runtime) if hasattr(target, "settings") else {"name": target.name}
    if skip_existing and not fresh:
        existing = _up_to_date_version(Path(out) / device_id / space.name / rdir, job, ops_limit)
        if existing is not None:
            lut_dir, n_ops = existing
            log.info("%s is up to date (the same settings record); not measuring again", lut_dir)
            return ProfileResult(lut_dir=lut_dir, num_ops=n_ops, num_failed=0, skipped=0,
                                 elapsed_s=time.perf_counter() - t0, device_id=device_id, reused=True)  # fmt: skip
    work = _WorkDir(Path(out) / device_id / space.name / rdir / PARTIAL_DIR, job, fresh=fresh)
    (work.path / INCOMPLETE_FILE).unlink(missing_ok=True)  # running again: no longer a finished incomplete job
    skipped = len(work.samples)
    if skipped:
        complete = sum(all((op.key, r) in work.samples for r in range(config.rounds)) for op in timed)
        log.info(
            "resuming %s: skipping %d of %d op-rounds already measured (%d of %d ops complete)",
            work.path, skipped, len(timed) * config.rounds, complete, len(timed),
        )  # fmt: skip

    if hasattr(target, "keep_models"):  # until the LUT is written, a stop leaves the models on the phone
        target.keep_models = True
    cache = ExportCache(runtime, cache_root)
    with EXPORT_LOCK:  # the devices of one run export in turn (profiler.preflight.EXPORT_LOCK)
        report = cache.ensure(
            [ExportItem.for_op(op, copies.get(op.key, 1)) for op in timed], workers=export_workers,
            retry_failed=retry_failed, progress=progress,
        )  # fmt: skip
    log.info("exports: %d exported, %d cached, %d failed (%.1f s)",
             report.exported, report.cached, len(report.failed), report.elapsed_s)
    failures = {k: f"export: {m}" for k, m in report.failed.items()}
    files = {k: p for k, p in report.paths.items() if k not in failures}
    target.prepare(runtime, list(files.values()))
    # faults of an interrupted run count, unless --retry-failed asks for a fresh chance
    counts = {} if retry_failed else work.fault_counts()
    remeasures = {} if retry_failed else work.remeasure_counts()
    given_up = run_rounds(
        target, runtime, files, config, spec,
        done=set(work.samples), round_states=work.states, on_state=work.add_state,
        on_samples=work.add_samples, on_failure=work.add_fault, failures=counts,
        on_remeasure=work.add_remeasure, remeasures=remeasures,
        specs=specs, progress=progress, desc=f"{device_id[:24]} {rdir}",
    )  # fmt: skip
    for k in sorted(given_up):
        if counts.get(k, 0) > config.retries:
            failures[k] = f"run: {work.last_error(k)}"
        else:
            reasons = [d["reason"] for d in work.remeasured if d["op_key"] == k]
            failures[k] = (f"run: measured in bad conditions {remeasures.get(k, 0)} times, more than the "
                           f"{getattr(target, 'max_remeasure', 0)} re-measurements allowed (last: {reasons[-1]})")

    if failures and not allow_failed:
        raise _incomplete(work, failures, len(timed), target.name)
    table, samples = _assemble(timed, identity, work, failures, config.rounds)
    ovh = table.loc[table["op_key"] == net_overhead.key, ["status", "median_us"]]
    fp = target.fingerprint()  # again: a phone's runner_sha256 is the pushed runner's now
    meta = {
        "settings": settings_record(job),  # what resume and --skip-existing compare, whole
        "device": {**fp, "memory_semantics": MEMORY_SEMANTICS["host" if target.name == "host" else runtime.runner]},
        "runtime": {
            "name": runtime.name,
            # on a phone the runner's: the version it printed (None where it prints none; its sha256 is
            # in `settings.target`); the host's Python runtime package otherwise
            "version": runtime.runtime_version if target.name == "host" else job["target"].get("runner_version"),
            **({} if target.name == "host" else {"host_package_version": runtime.runtime_version}),
            "delegate": runtime.delegate,
            "threads": threads,
            "core_mask": core_mask or fp.get("core_mask"),  # phones report the mask they pin to
            "dtype": runtime.dtype,
            "layout": runtime.layout,  # I/O layout of every exported op (profiler.runtimes.base)
            "runner": runtime.runner if target.name != "host" else "python",
            # per-layer (operator-profile) times are multiples of this; the LUT's own values are not
            "op_profile_resolution_us": runtime.info.op_profile_resolution_us,
        },
        "exporters": runtime.versions(),
        "space": {"name": space.name, "hash": space.hash(), "ops_limit": ops_limit,
                  **(space.describe() if hasattr(space, "describe") else {})},
        "protocol": {
            **asdict(config),
            "order": "sorted op keys shuffled per round with random.Random(seed + round)",
            "warmup_scope": "per op, every round",
            "timer": "time.perf_counter_ns around each invocation" if target.name == "host" else "runner",
            **({"round_process": target.round_process} if hasattr(target, "round_process") else {}),
            "overhead_op": OVERHEAD_OPS[runtime.info.overhead],
            "cache_state": {
                "cold": "each invocation runs one of several loaded copies of the op (their weights together "
                        "exceed twice the last-level cache), its input written just before: weights out of "
                        "cache, input in cache",
                "warm": "one loaded copy run again and again: weights and input in cache",
                "replicas": "a model of `copies` copies of the op reading one input, run again and again; a "
                            "sample is an invocation divided by its copies",
                "mixed": f"ops that use each weight fewer than {STREAMED_REUSE} times per invocation (MACs per "
                         f"parameter: a batch-1 fully connected layer), or whose weights exceed both "
                         f"{plan.private_cache_bytes >> 10} KiB (a core's L2: {plan.private_cache_source}) and "
                         f"their activations, timed {cold_state} (`op_cache`), "
                         "as their weights stream inside a network; the other ops warm",
            }[config.cache],
            "copies": {k: n for k, n in sorted(copies.items()) if n > 1},
            "private_cache_bytes": plan.private_cache_bytes,
            "private_cache_source": plan.private_cache_source,
            **({"op_cache": _non_warm(per_op)} if per_op else {}),
        },
        "overhead_us": float(ovh["median_us"].iloc[0]) if (ovh["status"] == "ok").any() else None,
        "failed_ops": dict(sorted(failures.items())),
        # op-rounds whose samples were dropped and measured again: taken above the temperature
        # limit or below the locked clock (the phone's `op_conditions`)
        "remeasured": {"op_rounds": len(work.remeasured), "limit_per_op": getattr(target, "max_remeasure", None),
                       "by_op": {k: n for k, n in sorted(work.remeasure_counts().items())},
                       "reasons": sorted({d["reason"].split(" (")[0] for d in work.remeasured})[:10]},
        "provenance": provenance_of({"device": fp}),  # measured, or loopback for the dry-run device
    }
    lut_dir = write_lut(out, device_id=device_id, space=space.name, runtime_dir=rdir,
                        table=table, samples=samples, meta=meta)  # fmt: skip
    shutil.rmtree(work.path, ignore_errors=True)
    if hasattr(target, "keep_models"):  # the job is complete: nothing to resume
        target.keep_models = False
    n_space_ops = int((table["block"] != "overhead").sum())
    return ProfileResult(
        lut_dir=lut_dir, num_ops=n_space_ops, num_failed=len(failures),
        elapsed_s=time.perf_counter() - t0, skipped=skipped, exported=report.exported,
        device_id=device_id,
    )  # fmt: skip


def _incomplete(work: _WorkDir, failures: dict[str, str], num_ops: int, device: str) -> IncompleteJobError:
    """Keep the job as incomplete (its work dir, with `incomplete.json` saying why) and say so."""
    record = {"num_failed": len(failures), "num_ops": num_ops, "failed_ops": dict(sorted(failures.items())),
              "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    atomic_write(work.path / INCOMPLETE_FILE, json.dumps(record, indent=2, sort_keys=True))
    shown = "; ".join(f"{k}: {m.splitlines()[0][:160]}" for k, m in list(record["failed_ops"].items())[:3])
    return IncompleteJobError(
        f"{len(failures)} of {num_ops} ops failed (overhead ops counted) on {device} "
        f"({shown}{' ...' if len(failures) > 3 else ''}). "
        f"No LUT version was written: the job is kept as incomplete in {work.path} (`python -m lut list` shows "
        "it). Re-run the same command with --retry-failed to measure the failed ops again (finished ops are "
        "not measured again), or with --allow-failed to publish a LUT without them.",
        num_failed=len(failures), work_dir=work.path,
    )  # fmt: skip


SETTINGS_KEYS = ("space", "runtime", "exporters", "protocol", "target")


def settings_record(job: dict[str, Any]) -> dict[str, Any]:
    """The settings that make two measurements comparable (job.json holds them with the op list;
    meta.json under `settings`): space, runtime (threads, core mask, ...), exporter versions,
    protocol, and the target's own (`AdbTarget.settings`: runner sha256 after the push, core
    mask, clock-lock mode, temperature limit and cool-down)."""
    return {k: job.get(k) for k in SETTINGS_KEYS}


def settings_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The fields that differ, dotted, with both values: ["target.max_temp_c: 45.0 → 50.0"]."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in settings_diff(old.get(k), new.get(k), f"{prefix}{k}.")]  # fmt: skip
    if old == new:
        return []

    def short(v: Any) -> str:
        text = json.dumps(v) if not isinstance(v, str) else v
        return text if len(text) <= 40 else text[:37] + "..."

    return [f"{prefix.rstrip('.')}: {short(old)} → {short(new)}"]


def _non_warm(per_op: dict[str, str]) -> dict[str, str]:
    return {k: st for k, st in sorted(per_op.items()) if st != "warm"}


def _up_to_date_version(runtime_dir: Path, job: dict[str, Any], ops_limit: int | None) -> tuple[Path, int] | None:
    """(latest version dir, its space-op count) when it was measured as `job` asks and is complete."""
    versions = list_versions(runtime_dir)
    if not versions or (runtime_dir / PARTIAL_DIR).exists():
        return None  # nothing yet, or an interrupted job to resume
    try:
        lut = load_lut(runtime_dir / f"v{versions[-1]}")
    except LutError as e:
        log.warning("latest LUT under %s is unreadable (%s); measuring again", runtime_dir, e)
        return None
    meta, rt = lut.meta, job["runtime"]
    if "settings" in meta:  # the record, compared whole
        diff = settings_diff(meta["settings"], settings_record(job))
        if diff:
            log.info("not reusing %s: its settings differ (%s); measuring again", lut.path, "; ".join(diff))
            return None
        if meta["space"].get("ops_limit") != ops_limit or meta.get("failed_ops"):
            return None
        return lut.path, int((lut.table["block"] != "overhead").sum())
    same = (  # LUTs written before the settings record
        meta["space"].get("hash") == job["space"]["hash"]
        and meta["space"].get("ops_limit") == ops_limit
        and meta.get("exporters") == job["exporters"]
        and all(meta["protocol"].get(k) == v for k, v in job["protocol"].items())
        and meta["runtime"].get("threads") == rt["threads"]
        and meta["runtime"].get("dtype") == rt["dtype"]
        and meta["runtime"].get("layout", "nchw") == rt["layout"]
        and (rt["core_mask"] is None or meta["runtime"].get("core_mask") == rt["core_mask"])
        and not meta.get("failed_ops")
    )
    if not same:
        return None
    return lut.path, int((lut.table["block"] != "overhead").sum())


def _median_extras(work: _WorkDir, key: str, rounds: int) -> dict[str, float]:
    """load_us / memory_kb of an op: the median over its op-rounds (NaN where not reported)."""
    out = {}
    for col in EXTRA_COLUMNS:
        vals = [work.extras.get((key, r), {}).get(col) for r in range(rounds)]
        vals = [float(v) for v in vals if v is not None]
        out[col] = round(float(np.median(vals)), 3) if vals else math.nan
    return out


def _assemble(
    timed: list[Op], identity: list[Op], work: _WorkDir, failures: dict[str, str], rounds: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The LUT table and samples frame from what the work dir holds."""
    rows = []
    sample_rows = []
    for op in timed:
        base = {"op_key": op.key, "block": op.block, "c_in": op.c_in, "h": op.h, "w": op.w,
                "c_out": op.c_out, "stride": op.stride}  # fmt: skip
        per_round = [work.samples.get((op.key, r)) for r in range(rounds)]
        if op.key in failures or any(s is None for s in per_round):
            msg = failures.get(op.key, "not measured in every round")
            rows.append({**base, "status": "failed", **{c: None for c in STAT_COLUMNS}, "n": 0, "error": msg})
            continue
        values = [v for s in per_round for v in s]  # type: ignore[union-attr]
        # rounded to the ns the timer resolves, as table.csv stores them (meta must agree)
        stats = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in summarize(values).items()}
        rows.append({**base, "status": "ok", **stats, "error": "", **_median_extras(work, op.key, rounds)})
        for r, s in enumerate(per_round):
            for i, v in enumerate(s):  # type: ignore[arg-type]
                sample_rows.append((op.key, r, i, v))
    for op in identity:
        rows.append({"op_key": op.key, "block": op.block, "c_in": op.c_in, "h": op.h, "w": op.w,
                     "c_out": op.c_out, "stride": op.stride, "status": "identity",
                     **{c: 0.0 for c in STAT_COLUMNS}, "n": 0, "error": ""})  # fmt: skip
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS)).sort_values("op_key").reset_index(drop=True)
    samples = pd.DataFrame(sample_rows, columns=["op_key", "round", "sample", "latency_us"])
    if work.states:
        states = pd.DataFrame([{"round": r, **s} for r, s in work.states.items()])
        samples = samples.merge(states, on="round", how="left")
    return table, samples
