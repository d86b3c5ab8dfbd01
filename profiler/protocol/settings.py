"""What a job records about how it measured, and how two records compare.

    job_record(...)          job.json: the device id, the settings record's fields and the op list
    settings_record(job)     the settings that make two measurements comparable (meta.json's
                             `settings`; its hash is part of `meta_hash`)
    settings_diff(old, new)  the fields that differ, dotted: ["target.max_temp_c: 45.0 → 50.0"]
    lut_meta(...)            a finished job's meta.json (`lut.store.write_lut` adds the rest)
    up_to_date_version(...)  the latest LUT version measured as a job asks, if complete

The record's format is the one existing LUTs and interrupted jobs were written with: a resume and
`--skip-existing` compare it whole, so a change here measures every LUT again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lut.store import INCOMPLETE_DIR, LutError, list_versions, load_lut, provenance_of
from profiler.protocol.config import JobSettings
from profiler.protocol.plan import STREAMED_REUSE, JobPlan
from profiler.runtimes import Runtime
from profiler.targets.base import MEMORY_SEMANTICS, Target

__all__ = ["OVERHEAD_OPS", "SETTINGS_KEYS", "job_record", "settings_record", "settings_diff", "lut_meta",
           "up_to_date_version"]

log = logging.getLogger(__name__)

# What the overhead ops are (`search.space.modules.Overhead`, per `RuntimeInfo.overhead`); part of
# a job's settings, so a LUT whose overhead ops were another model is neither resumed nor reused.
OVERHEAD_OPS = {
    "sampler": "a 1×1 depthwise conv sampling 2×2 pixels of the input (an invocation with no pass over "
               "it) at each op's input shape, timed in the same rounds",
    "relu": "one ReLU at each op's input shape, timed in the same rounds",
}  # fmt: skip

SETTINGS_KEYS = ("space", "runtime", "exporters", "protocol", "target")


def job_record(plan: JobPlan, runtime: Runtime, settings: JobSettings, device_id: str) -> dict[str, Any]:
    """job.json, less its `target` (`target.settings(runtime)`, known once the runner is pushed)."""
    space, per_op = plan.space, plan.per_op
    return {
        "device_id": device_id,
        "space": {"name": space.name, "hash": space.hash()},
        "runtime": {"name": runtime.name, "dtype": runtime.dtype, "layout": runtime.layout, "threads": settings.threads,
                    "core_mask": settings.core_mask},
        "exporters": runtime.versions(),
        # the per-op states too: a LUT of another `mixed` rule is neither resumed nor reused
        "protocol": {**asdict(plan.config), "overhead_op": OVERHEAD_OPS[runtime.info.overhead],
                     **({"op_cache": non_warm(per_op)} if per_op else {}),
                     **({"op_cold_bytes": dict(sorted(plan.op_cold_bytes.items()))} if plan.op_cold_bytes else {}),
                     # a phone's own L2 (the host keeps the fixed value, and its records their form)
                     **({"private_cache_bytes": plan.private_cache_bytes}
                        if per_op and plan.private_cache_source != "default" else {})},
        "ops": sorted(op.key for op in plan.timed),
    }


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


def _cold_weights(cold_bytes: int | None) -> str:
    """Where a cold invocation's weights are, for the settings record's words."""
    if cold_bytes == 0:
        return "out of cache (the copies' weights together exceed twice the last-level cache)"
    held = (f"{cold_bytes / (1 << 20):.1f} MiB" if cold_bytes else "per op (`op_cold_bytes`)")
    return (f"where a network's are (the copies together hold {held}, what a network of the space reads and writes "
            "in one pass: from the last-level cache where it holds that, else from memory)")


def non_warm(per_op: dict[str, str]) -> dict[str, str]:
    """The per-op cache states as recorded: the ops not timed warm."""
    return {k: st for k, st in sorted(per_op.items()) if st != "warm"}


def lut_meta(
    job: dict[str, Any], plan: JobPlan, settings: JobSettings, runtime: Runtime, target: Target,
    fp: dict[str, Any], *, overhead_us: float | None, failures: dict[str, str], remeasured: list[dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    """meta.json of a finished job: its settings record whole, and how it measured in words.
    `fp` is the target's fingerprint after the job (a phone's runner_sha256 is the pushed
    runner's); `remeasured` the work dir's dropped op-rounds."""
    config, per_op, copies = plan.config, plan.per_op, plan.copies
    by_op: dict[str, int] = {}
    for d in remeasured:
        by_op[d["op_key"]] = by_op.get(d["op_key"], 0) + 1
    return {
        "settings": settings_record(job),  # what resume and --skip-existing compare, whole
        "device": {**fp, "memory_semantics": MEMORY_SEMANTICS["host" if target.name == "host" else runtime.runner]},
        "runtime": {
            "name": runtime.name,
            # on a phone the runner's: the version it printed (None where it prints none; its sha256 is
            # in `settings.target`); the host's Python runtime package otherwise
            "version": runtime.runtime_version if target.name == "host" else job["target"].get("runner_version"),
            **({} if target.name == "host" else {"host_package_version": runtime.runtime_version}),
            "delegate": runtime.delegate,
            "threads": settings.threads,
            "core_mask": settings.core_mask or fp.get("core_mask"),  # phones report the mask they pin to
            "dtype": runtime.dtype,
            "layout": runtime.layout,  # I/O layout of every exported op (profiler.runtimes.base)
            "runner": runtime.runner if target.name != "host" else "python",
            # per-layer (operator-profile) times are multiples of this; the LUT's own values are not
            "op_profile_resolution_us": runtime.info.op_profile_resolution_us,
        },
        "exporters": runtime.versions(),
        "space": {"name": plan.space.name, "hash": plan.space.hash(), "ops_limit": settings.ops_limit,
                  **(plan.space.describe() if hasattr(plan.space, "describe") else {})},
        "protocol": {
            **asdict(config),
            "order": "sorted op keys shuffled per round with random.Random(seed + round)",
            "warmup_scope": "per op, every round",
            "timer": "time.perf_counter_ns around each invocation" if target.name == "host" else "runner",
            **({"round_process": target.round_process} if hasattr(target, "round_process") else {}),
            "overhead_op": OVERHEAD_OPS[runtime.info.overhead],
            "cache_state": {
                "cold": "each invocation runs one of several loaded copies of the op, its input written just "
                        f"before: input in cache, weights {_cold_weights(config.cold_bytes)}",
                "warm": "one loaded copy run again and again: weights and input in cache",
                "replicas": "a model of `copies` copies of the op reading one input, run again and again; a "
                            "sample is an invocation divided by its copies",
                "mixed": f"ops that use each weight fewer than {STREAMED_REUSE} times per invocation (MACs per "
                         f"parameter: a batch-1 fully connected layer), or whose weights exceed both "
                         f"{plan.private_cache_bytes >> 10} KiB (a core's L2: {plan.private_cache_source}) and "
                         f"their activations, timed {plan.cold_state} (`op_cache`"
                         + (f"; cold: weights {_cold_weights(config.cold_bytes)}" if plan.cold_state == "cold" else "")
                         + "), as their weights stream inside a network; the other ops warm",
            }[config.cache],
            "copies": {k: n for k, n in sorted(copies.items()) if n > 1},
            "private_cache_bytes": plan.private_cache_bytes,
            "private_cache_source": plan.private_cache_source,
            **({"op_cache": non_warm(per_op)} if per_op else {}),
            **({"op_cold_bytes": dict(sorted(plan.op_cold_bytes.items()))} if plan.op_cold_bytes else {}),
        },
        "overhead_us": overhead_us,
        "failed_ops": dict(sorted(failures.items())),
        # op-rounds whose samples were dropped and measured again: taken above the temperature
        # limit or below the locked clock (the phone's `op_conditions`)
        "remeasured": {"op_rounds": len(remeasured), "limit_per_op": getattr(target, "max_remeasure", None),
                       "by_op": dict(sorted(by_op.items())),
                       "reasons": sorted({d["reason"].split(" (")[0] for d in remeasured})[:10]},
        "provenance": provenance_of({"device": fp}),  # measured, or loopback for the dry-run device
    }


def up_to_date_version(runtime_dir: Path, job: dict[str, Any], ops_limit: int | None) -> tuple[Path, int] | None:
    """(latest version dir, its space-op count) when it was measured as `job` asks and is complete."""
    versions = list_versions(runtime_dir)
    if not versions or (runtime_dir / INCOMPLETE_DIR).exists():
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
