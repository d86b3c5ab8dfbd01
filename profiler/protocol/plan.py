"""What a job times and in which cache state (pure: touches neither the target nor files).

    plan_ops(space)          the space's unique ops minus identities, plus one overhead op per
                             input shape and one at the network input
    replica_counts(...)      copies per invocation for the "replicas" cache state
    streamed_ops(...)        the ops whose weights stream inside a network ("mixed" times them cold)
    op_cache_states(...)     under "mixed", op key → the state it is timed in
    plan_job(target, space, settings)
                             all of it for one job on one target: a `JobPlan`
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from profiler.preflight import models_bytes
from profiler.protocol.config import JobError, JobSettings, ProtocolConfig
from profiler.targets.base import RunSpec, Target
from search.space import PRIVATE_CACHE_BYTES, STREAMED_REUSE, Op, get_space, network_bytes, overhead_op, streamed_ops

__all__ = [
    "plan_ops", "replica_counts", "streamed_ops", "op_cache_states", "JobPlan", "plan_job",
    "REPLICA_BUDGET_BYTES", "REPLICA_MAX", "STREAMED_REUSE", "PRIVATE_CACHE_BYTES",
]  # fmt: skip


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
    # op key → `RunSpec.cold_bytes` of the ops timed cold, where they differ between ops (a sampled
    # space's draws each have their own network); else {} and `config.cold_bytes` holds the value
    op_cold_bytes: dict[str, int] = field(default_factory=dict)

    def models_bytes(self, dtype: str) -> int:
        return models_bytes(self.timed, self.copies, dtype)


def plan_job(target: Target, space_name: Any, settings: JobSettings) -> JobPlan:
    """The plan of a job with `settings` on `target` (pure: touches neither the target nor files)."""
    config, dtype = settings.protocol, settings.dtype
    states = getattr(target, "cache_states", ("warm",))
    cold_state = next((s for s in ("cold", "replicas") if s in states), None)
    if config.cache is not None and config.cache not in states and not (config.cache == "mixed" and cold_state):
        raise JobError(
            f"{target.name} cannot time ops with {config.cache} caches (it can: {', '.join(states)}); "
            f"use --cache {states[0]}"
        )
    config = replace(config, cache=config.cache or ("mixed" if cold_state else states[0]))
    space = get_space(space_name) if isinstance(space_name, str) else space_name
    timed, identity, net_overhead = plan_ops(space, settings.ops_limit)
    read = getattr(target, "private_cache_bytes", None)  # a phone's L2 from its sysfs, where listed
    private = int(read) if read else PRIVATE_CACHE_BYTES
    source = getattr(target, "private_cache_source", "sysfs") if read else "default"
    per_op = op_cache_states(timed, net_overhead, config.cache, cold_state or "warm", dtype,
                             private_cache_bytes=private)
    config, per_op_cold = _cold_bytes(config, space, timed, dtype, cold_state)
    spec = RunSpec(threads=settings.threads, warmup=config.warmup, runs=config.runs, core_mask=settings.core_mask,
                   cache="warm" if per_op else config.cache, cold_bytes=config.cold_bytes or 0)  # fmt: skip
    copies = replica_counts(timed, net_overhead, dtype) if config.cache == "replicas" else {}
    if per_op:  # "mixed": copies for the ops timed as replicas (a phone's cold state)
        copies = {k: n for k, n in replica_counts(timed, net_overhead, dtype).items()
                  if per_op[k] == "replicas"}  # fmt: skip
    specs = {op.key: replace(spec, cache=per_op.get(op.key, spec.cache), copies=copies.get(op.key, 1),
                             cold_bytes=per_op_cold.get(op.key, spec.cold_bytes)) for op in timed}  # fmt: skip
    op_cold_bytes = {k: b for k, b in per_op_cold.items() if specs[k].cache == "cold"}  # what the record lists
    return JobPlan(config, space, timed, identity, net_overhead, per_op, spec, copies, specs, cold_state,
                   private, source, op_cold_bytes)


def _cold_bytes(config: ProtocolConfig, space: Any, timed: Sequence[Op], dtype: str,
                cold_state: str | None) -> tuple[ProtocolConfig, dict[str, int]]:
    """Resolve `config.cold_bytes` None (where the job times ops cold) to what a network of the
    op's space reads and writes in one pass (`search.space.network_bytes`): one
    value for a space, recorded in the config; per op for a sampled space (each draw its own
    network), returned as op key → bytes with the config's left None."""
    times_cold = config.cache == "cold" or (config.cache == "mixed" and cold_state == "cold")
    if config.cold_bytes is not None or not times_cold:
        return config, {}
    per_el = 1 if dtype == "int8" else 4
    networks = space.op_networks() if hasattr(space, "op_networks") else None
    if networks is None:
        return replace(config, cold_bytes=network_bytes(space, per_el)), {}
    by_shape: dict[tuple[int, int, int], Any] = {}  # an overhead op: the network of an op of its shape
    for op in timed:
        if op.key in networks:
            by_shape.setdefault((op.c_in, op.h, op.w), networks[op.key])
    sizes: dict[str, int] = {}
    by_space: dict[int, int] = {}
    for op in timed:
        net = networks.get(op.key) or by_shape.get((op.c_in, op.h, op.w)) or next(iter(networks.values()))
        sizes[op.key] = by_space.setdefault(id(net), network_bytes(net, per_el))
    return config, sizes
