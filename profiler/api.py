"""The profiler's library entry points (used by the CLI, search and validation).

    profile_space("fbnet", "tflite")                      → ProfileResult (a new LUT version)
    measure_archs([get_arch("fbnet_c")], "executorch")    → {"fbnet_c": [µs, ...]}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from profiler.export import ExportCache, ExportItem
from profiler.protocol import ProfileResult, ProtocolConfig, profile_ops, run_rounds
from profiler.runtimes import get_runtime
from profiler.targets import RunSpec, get_target
from profiler.targets.base import TargetError
from profiler.targets.lock import device_lock
from search.space import Arch

__all__ = ["profile_space", "measure_archs", "ProfileResult", "ProtocolConfig"]

log = logging.getLogger(__name__)

_DEFAULTS = ProtocolConfig()


def profile_space(
    space: str,
    runtime: str,
    device: str = "host",
    *,
    threads: int = 1,
    rounds: int = _DEFAULTS.rounds,
    warmup: int = _DEFAULTS.warmup,
    runs: int = _DEFAULTS.runs,
    out: str | Path = "luts",
    ops_limit: int | None = None,
    dtype: str = "fp32",
    layout: str | None = None,
    target_options: dict[str, Any] | None = None,
    seed: int = 0,
    progress: bool = True,
    core_mask: str | None = None,
    cache_root: str | Path | None = None,
    export_workers: int | None = None,
    retry_failed: bool = False,
    fresh: bool = False,
    skip_existing: bool = False,
    lock_wait_s: float = 0.0,
) -> ProfileResult:
    """Measure every op of `space` on `device` with `runtime` and write a new LUT version.

    Resumes an interrupted job with the same settings (see `profiler.protocol`)."""
    rt = get_runtime(runtime, dtype, layout)
    config = ProtocolConfig(rounds=rounds, warmup=warmup, runs=runs, seed=seed)
    target = get_target(device, target_options)
    try:
        return profile_ops(
            target, rt, space, out=out, threads=threads, core_mask=core_mask, config=config,
            ops_limit=ops_limit, cache_root=cache_root, export_workers=export_workers,
            retry_failed=retry_failed, fresh=fresh, progress=progress, skip_existing=skip_existing,
            lock_wait_s=lock_wait_s,
        )  # fmt: skip
    finally:
        target.close()


def measure_archs(
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
) -> dict[str, list[float]]:
    """Export each arch whole (cached like ops) and time it end to end in shuffled rounds.

    Returns raw µs samples per arch (rounds × runs each), keyed by `Arch.label` (the name, else
    the arch id)."""
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
    rt = get_runtime(runtime, dtype, layout)
    report = ExportCache(rt, cache_root).ensure(list(items.values()), progress=progress)
    if report.failed:
        failed = {n: report.failed[k] for n, k in names.items() if k in report.failed}
        raise TargetError(f"could not export arch(s) for {runtime}: {failed}")
    config = ProtocolConfig(rounds=rounds, warmup=warmup, runs=runs, seed=seed)
    spec = RunSpec(threads=threads, warmup=warmup, runs=runs, core_mask=core_mask)
    target = get_target(device, target_options)
    samples: dict[str, list[float]] = {k: [] for k in items}
    errors: dict[str, str] = {}
    with device_lock(target.name, wait_s=lock_wait_s, what=f"time {len(items)} arch(s) with {runtime}"):
        try:
            target.prepare(rt, list(report.paths.values()))
            given_up = run_rounds(
                target, rt, report.paths, config, spec,
                on_samples=lambda k, _r, s: samples[k].extend(s),
                on_failure=lambda k, _r, m: errors.__setitem__(k, m),
                progress=progress, desc=f"archs {runtime}",
            )  # fmt: skip
        finally:
            target.close()
    if given_up:
        raise TargetError(f"arch measurement failed on {device}: { {k: errors[k] for k in sorted(given_up)} }")
    return {name: samples[key] for name, key in names.items()}
