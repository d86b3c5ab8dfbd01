"""The profiler's library entry points (used by the CLI, search and validation).

    profile_space("fbnet", "tflite")                      → ProfileResult (a new LUT version)
    profile_space("fbnet", settings=JobSettings("tflite", threads=2))        (the same job object)
    preflight_space("fbnet", "tflite", "SERIAL")          → PreflightReport (the job's checks alone)
    measure_archs([get_arch("fbnet_c")], "executorch")    → {"fbnet_c": [µs, ...]}
    measure_archs_detailed([...], "executorch", per_layer=True)
                                                          → {"fbnet_c": ArchMeasurement(samples_us,
                                                             load_us, memory_kb, layers)}
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from lut.stats import summarize
from profiler.export import ExportCache, ExportItem
from profiler.layers import LayerAlignmentError, operators_of, split_layers
from profiler.preflight import PreflightReport
from profiler.protocol.config import JobSettings, ProfileResult, ProtocolConfig
from profiler.protocol.job import preflight_job, profile_ops
from profiler.protocol.rounds import run_rounds
from profiler.runtimes import get_runtime
from profiler.shapes import ShapeSpace
from profiler.targets import RunSpec, get_target
from profiler.targets.base import RunnerError, TargetError
from profiler.targets.lock import target_lock
from search.space import Arch, Op, arch_ops

__all__ = ["profile_space", "preflight_space", "measure_archs", "measure_archs_detailed", "ArchMeasurement",
           "JobSettings", "ProfileResult", "ProtocolConfig"]

log = logging.getLogger(__name__)

_DEFAULTS = ProtocolConfig()


def profile_space(
    space: "str | ShapeSpace",
    runtime: str | None = None,
    device: str = "host",
    *,
    settings: JobSettings | None = None,
    target_options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> ProfileResult:
    """Measure every op of `space` on `device` with `runtime` and write a new LUT version.

    The job is `settings` (a `JobSettings`), or one built from `runtime` and `kwargs`: its fields
    (threads, dtype, layout, out, ops_limit, cache_root, fresh, ...) and the protocol's (rounds,
    warmup, runs, seed, cache); kwargs given with `settings` change those fields. Resumes an
    interrupted job with the same settings (see `profiler.protocol`). Ops that fail leave the job
    incomplete (IncompleteJobError, no version) unless `allow_failed`."""
    settings = _job_settings(runtime, settings, kwargs)
    settings.make_runtime()  # an unknown runtime, dtype or layout fails before the device is touched
    target = get_target(device, target_options, lock_wait_s=settings.lock_wait_s,
                        what=f"profile {space} with {settings.runtime}")  # fmt: skip
    try:
        return profile_ops(target, space, settings)
    finally:
        target.close()


def preflight_space(
    space: "str | ShapeSpace",
    runtime: str | None = None,
    device: str = "host",
    *,
    settings: JobSettings | None = None,
    target_options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> PreflightReport:
    """The checks `profile_space` with the same arguments runs before it exports anything."""
    settings = _job_settings(runtime, settings, kwargs)
    settings.make_runtime()  # an unknown runtime, dtype or layout fails before the device is touched
    target = get_target(device, target_options, lock_wait_s=settings.lock_wait_s,
                        what=f"preflight {settings.runtime}")  # fmt: skip
    try:
        return preflight_job(target, space, settings)
    finally:
        target.close()


def _job_settings(runtime: str | None, settings: JobSettings | None, kwargs: dict[str, Any]) -> JobSettings:
    """`settings` (changed by `kwargs`), or the settings `runtime` and `kwargs` name."""
    if settings is None:
        if runtime is None:
            raise TypeError("name a runtime, or pass settings=JobSettings(...)")
        return JobSettings.from_kwargs(runtime, **kwargs)
    if runtime is not None and runtime != settings.runtime:
        raise ValueError(f"runtime {runtime!r} differs from settings.runtime {settings.runtime!r}; name one")
    return settings.updated(**kwargs) if kwargs else settings


@dataclass
class ArchMeasurement:
    """An arch timed end to end: raw samples, load time and memory (medians over rounds, NaN
    where the target does not report them), and with `per_layer` its layers in context."""

    samples_us: list[float] = field(default_factory=list)
    rounds_us: dict[int, list[float]] = field(default_factory=dict)  # the same samples by round (its process)
    load_us: float = math.nan
    memory_kb: float = math.nan
    layers: list[dict[str, Any]] | None = None  # {layer, op_key, median_us, num_operators}
    layers_error: str | None = None  # why the layers could not be told apart, if so
    # the operator profiler's resolution: each layer's time is a sum of operator times rounded to it
    layers_resolution_us: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {**summarize(self.samples_us), "samples_us": self.samples_us, "load_us": self.load_us,
             "memory_kb": self.memory_kb}  # fmt: skip
        if self.layers is not None or self.layers_error is not None:
            d["layers"] = self.layers
            d["layers_resolution_us"] = self.layers_resolution_us
            if self.layers_error:
                d["layers_error"] = self.layers_error
        return d


def measure_archs(archs: Sequence[Arch], runtime: str, device: str = "host", **kwargs: Any) -> dict[str, list[float]]:
    """`measure_archs_detailed` without the extras: raw µs samples per arch label."""
    return {k: m.samples_us for k, m in measure_archs_detailed(archs, runtime, device, **kwargs).items()}


def measure_archs_detailed(
    archs: Sequence[Arch],
    runtime: str,
    device: str = "host",
    *,
    threads: int = 1,
    rounds: int = 5,
    warmup: int = _DEFAULTS.warmup,
    runs: int = _DEFAULTS.runs,
    dtype: str = "fp32",
    layout: str | None = None,
    target_options: dict[str, Any] | None = None,
    seed: int = 0,
    core_mask: str | None = None,
    cache_root: str | Path | None = None,
    progress: bool = False,
    lock_wait_s: float = 0.0,
    per_layer: bool = False,
    ops: Sequence[Op] = (),
    op_cache: str | Mapping[str, str] = "warm",
    op_copies: dict[str, int] | None = None,
    op_cold_bytes: int | Mapping[str, int] = 0,
) -> dict[str, ArchMeasurement]:
    """Export each arch whole (cached like ops) and time it end to end in shuffled rounds.

    Keyed by `Arch.label` (the name, else the arch id); samples are rounds × runs per arch. With
    `per_layer`, each arch and each of its ops is also profiled once (`profiler.layers`) to time
    every layer inside the network. `ops` are timed in the same rounds, as a LUT times them
    (cache state `op_cache`, or op key → state for a "mixed" LUT's ops; `op_copies` per op for
    "replicas", `op_cold_bytes` for "cold": `RunSpec.cold_bytes`, or per op), and keyed by their op key
    (validation re-times LUT ops this way)."""
    op_copies = op_copies or {}
    names: dict[str, str] = {}
    items: dict[str, ExportItem] = {}
    for arch in archs:
        arch.validate()
        name = arch.label
        item = ExportItem.for_arch(arch)
        if name in names and names[name] != item.key:
            raise ValueError(f"two different archs are both named {name!r}; give them distinct names")
        names[name] = item.key
        items[item.key] = item
    timed_ops = {op.key: ExportItem.for_op(op, op_copies.get(op.key, 1)) for op in ops if not op.is_identity}
    rt = get_runtime(runtime, dtype, layout)
    cache = ExportCache(rt, cache_root)
    report = cache.ensure([*items.values(), *timed_ops.values()], progress=progress)
    # per layer: each layer's own op file, whose operators cut the network's into layers
    layer_ops = {op.key: ExportItem.for_op(op) for arch in archs for op in arch_ops(arch) if not op.is_identity}
    layer_files = cache.ensure(list(layer_ops.values()), progress=progress) if per_layer else None
    failed = {**report.failed, **(layer_files.failed if layer_files else {})}
    if failed:
        raise TargetError(f"could not export for {runtime}: {failed}")
    config = ProtocolConfig(rounds=rounds, warmup=warmup, runs=runs, seed=seed)
    spec = RunSpec(threads=threads, warmup=warmup, runs=runs, core_mask=core_mask)
    what = f"time {len(items)} arch(s) with {runtime}"
    target = get_target(device, target_options, lock_wait_s=lock_wait_s, what=what)
    timed = [*items, *timed_ops]
    out: dict[str, ArchMeasurement] = {k: ArchMeasurement() for k in timed}
    extras: dict[str, list[dict[str, float]]] = {k: [] for k in timed}
    op_spec = RunSpec(threads=threads, warmup=warmup, runs=runs, core_mask=core_mask)
    cold_of = (lambda k: op_cold_bytes.get(k, 0)) if isinstance(op_cold_bytes, Mapping) else (lambda k: op_cold_bytes)
    op_state = (lambda k: op_cache.get(k, "warm")) if isinstance(op_cache, Mapping) else (lambda k: op_cache)
    errors: dict[str, str] = {}

    def on_samples(key: str, r: int, s: list[float], extra: dict[str, float]) -> None:
        out[key].samples_us.extend(s)
        out[key].rounds_us.setdefault(r, []).extend(s)
        extras[key].append(extra)

    with target_lock(target, wait_s=lock_wait_s, what=what):
        try:
            target.prepare(rt, list(report.paths.values()) + (list(layer_files.paths.values()) if layer_files else []))
            given_up = run_rounds(
                target, rt, {k: report.paths[k] for k in timed}, config, spec,
                on_samples=on_samples, on_failure=lambda k, _r, m: errors.__setitem__(k, m),
                specs={k: replace(op_spec, cache=op_state(k), copies=op_copies.get(k, 1), cold_bytes=cold_of(k))
                       for k in timed_ops},  # fmt: skip
                progress=progress, desc=f"archs {runtime}",
            )  # fmt: skip
            if given_up:
                raise TargetError(f"arch measurement failed on {device}: { {k: errors[k] for k in sorted(given_up)} }")
            if layer_files is not None:
                _time_layers(target, rt, spec, archs, {**layer_files.paths, **{k: report.paths[k] for k in items}}, out)
        finally:
            target.close()
    for key, m in out.items():
        for col in ("load_us", "memory_kb"):
            vals = [e[col] for e in extras[key] if col in e]
            setattr(m, col, float(statistics.median(vals)) if vals else math.nan)
    return {**{name: out[key] for name, key in names.items()}, **{k: out[k] for k in timed_ops}}


def _time_layers(target, rt, spec: RunSpec, archs: Sequence[Arch], paths: dict[str, Path],
                 out: dict[str, ArchMeasurement]) -> None:  # fmt: skip
    """Profile each arch and its ops once; cut each arch's operators into its layers."""
    op_ops: dict[str, list] = {}
    for arch in archs:
        ops = arch_ops(arch)
        try:
            for op in ops:
                if not op.is_identity and op.key not in op_ops:
                    op_ops[op.key] = operators_of(target.measure_detailed(rt, paths[op.key], spec, profile=True))
            net = operators_of(target.measure_detailed(rt, paths[arch.id], spec, profile=True))
            out[arch.id].layers = split_layers(net, [op_ops.get(op.key, []) for op in ops], [op.key for op in ops])
            out[arch.id].layers_resolution_us = rt.info.op_profile_resolution_us
        except (LayerAlignmentError, RunnerError) as e:
            log.warning("%s: per-layer times unavailable: %s", arch.label, e)
            out[arch.id].layers, out[arch.id].layers_error = None, str(e)
