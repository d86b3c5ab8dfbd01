"""The preflight of a measurement job: what must work before the space is exported.

    report = run_preflight(target, runtime, spec, need_bytes=models_bytes(ops, copies, "fp32"))
    if not report.ok:
        raise PreflightError(report.message())

It exports one tiny op (`PREFLIGHT_OP`, not an op of any space, so the space's exports are not
started) and asks the target to check itself with it. A phone (`AdbTarget.preflight`) checks the
runner's ABI against the phone's userspace, the free space in its work dir for the runner and the
job's models (`models_bytes`, margin added there), then pushes the runner and runs it once on the
tiny op with the job's own flags and parses its output (`android_harness.preflight`). A job on
the host skips it (its runtimes run in this process: nothing to push, no binary to start);
`--preflight` there runs the tiny op once through the runtime. The job holds the device's lock throughout
(`profiler.protocol.job.profile_ops`); `python -m profiler.run --preflight` runs this alone.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from android_harness.preflight import Check
from profiler.export import ExportCache, ExportItem
from profiler.runtimes import Runtime
from profiler.targets.base import RunSpec, Target, TargetError
from search.space import Op

__all__ = ["PREFLIGHT_OP", "PreflightReport", "PreflightError", "models_bytes", "run_preflight", "EXPORT_LOCK"]

# Exports of one process, one at a time: the exporters keep global state (torch.export's module
# hierarchy), so the jobs of several devices measured in parallel threads take turns; the second
# finds in the export cache what the first exported.
EXPORT_LOCK = threading.Lock()

PREFLIGHT_OP = Op("k3_e1", 8, 8, 8, 8, 1)  # 8x8x8 in and out: exports and runs in well under a second
MODEL_FILE_BYTES = 64 << 10  # a model file's size besides its weights (graph, delegate data), at most


class PreflightError(TargetError):
    """A check before the job failed; the message names the check, what was found and the fix."""


@dataclass(frozen=True)
class PreflightReport:
    device: str
    runtime: str
    checks: tuple[Check, ...]
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def message(self) -> str:
        """One message: the first failed check, what was found, the fix."""
        bad = next((c for c in self.checks if not c.ok), None)
        if bad is None:
            return f"preflight on {self.device} passed ({len(self.checks)} checks, {self.elapsed_s:.1f} s)"
        return (f"preflight on {self.device} ({self.runtime}) failed at check '{bad.name}': {bad.detail}"
                + (f"\n  fix: {bad.fix}" if bad.fix else "")
                + "\n  nothing was exported or measured; fix it and run the same command again "
                  "(`--preflight` runs the checks alone)")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        checks = [{"name": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix} for c in self.checks]
        return {"device": self.device, "runtime": self.runtime, "ok": self.ok, "elapsed_s": round(self.elapsed_s, 2),
                "checks": checks}  # fmt: skip


def models_bytes(ops: Sequence[Op], copies: dict[str, int], dtype: str = "fp32") -> int:
    """What a job's model files take on the device: each op's weights times its copies plus a
    file's own size (`MODEL_FILE_BYTES`). The caller adds the margin."""
    per_param = 1 if dtype == "int8" else 4
    return sum(op.params * per_param * copies.get(op.key, 1) + MODEL_FILE_BYTES for op in ops)


def run_preflight(
    target: Target, runtime: Runtime, spec: RunSpec, *, need_bytes: int, cache_root: str | Path | None = None
) -> PreflightReport:
    """Export `PREFLIGHT_OP` and let the target check itself with it (module docstring)."""
    t0 = time.perf_counter()
    with EXPORT_LOCK:
        report = ExportCache(runtime, cache_root).ensure([ExportItem.for_op(PREFLIGHT_OP)], progress=False)
    key = PREFLIGHT_OP.key
    if key in report.failed:
        checks = [Check("export", False, f"the one-op model {key} did not export for {runtime.name}: "
                        f"{report.failed[key]}", "check the runtime's packages (pip install -r requirements.lock)")]
    elif hasattr(target, "preflight"):
        checks = list(target.preflight(runtime, report.paths[key], spec, need_bytes))
    else:
        checks = [_run_once(target, runtime, report.paths[key], spec)]
    return PreflightReport(target.name, runtime.name, tuple(checks), time.perf_counter() - t0)


def _run_once(target: Target, runtime: Runtime, path: Path, spec: RunSpec) -> Check:
    """A target without its own preflight (the host): one short measurement of the tiny op."""
    try:
        target.prepare(runtime, [path])
        samples = target.measure(runtime, path, replace(spec, runs=min(spec.runs, 2)))
    except TargetError as exc:
        return Check(f"run {runtime.name}", False, str(exc), "see the message; the runtime's host session failed")
    return Check(f"run {runtime.name}", True, f"{path.name}: {len(samples)} samples, median "
                 f"{sorted(samples)[len(samples) // 2]:.1f} µs")
