"""The op job: plan, preflight, export, rounds, LUT version (the steps `profiler.protocol`
describes), under the device's lock.

    profile_ops(target, space, settings)     → ProfileResult (a new LUT version, or the reused one)
    preflight_job(target, space, settings)   → PreflightReport (the checks the job runs first, alone)
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from lut.files import atomic_write
from lut.store import INCOMPLETE_FILE, runtime_dir_name, write_lut
from profiler.export import ExportCache, ExportItem
from profiler.preflight import EXPORT_LOCK, PreflightError, PreflightReport, run_preflight
from profiler.protocol.config import IncompleteJobError, JobSettings, ProfileResult
from profiler.protocol.plan import plan_job
from profiler.protocol.rounds import run_rounds
from profiler.protocol.settings import job_record, lut_meta, up_to_date_version
from profiler.protocol.table import assemble
from profiler.protocol.workdir import PARTIAL_DIR, WorkDir
from profiler.targets.base import Target
from profiler.targets.lock import target_lock

__all__ = ["profile_ops", "preflight_job"]

log = logging.getLogger(__name__)


def preflight_job(target: Target, space_name: Any, settings: JobSettings) -> PreflightReport:
    """The preflight a job with these settings runs (under the device's lock), alone."""
    runtime = settings.make_runtime()
    plan = plan_job(target, space_name, settings)
    with target_lock(target, wait_s=settings.lock_wait_s, what=f"preflight {runtime.name}"):
        target.fingerprint()  # as the job does first: connects, locks the clocks
        return run_preflight(target, runtime, plan.spec, need_bytes=plan.models_bytes(runtime.dtype),
                             cache_root=settings.cache_root)  # fmt: skip


def profile_ops(target: Target, space_name: Any, settings: JobSettings) -> ProfileResult:
    """Build (or resume) the LUT of `space_name` on `target` as `settings` ask; see `profiler.protocol`.

    With `settings.skip_existing`, a latest version whose settings record (`settings_record`:
    space, runtime, exporters, protocol, the target's runner sha256, core mask, clock lock,
    temperature limit) equals this job's and without failed ops is returned as is
    (`reused=True`); a different one is measured again, with the differing fields logged. The job
    holds the device's lock (`profiler.targets.lock`) throughout; a busy device waits
    `settings.lock_wait_s`, then raises DeviceBusyError."""
    with target_lock(target, wait_s=settings.lock_wait_s, what=f"profile {space_name} with {settings.runtime}"):
        return _profile_ops(target, space_name, settings)


def _profile_ops(target: Target, space_name: Any, settings: JobSettings) -> ProfileResult:
    t0 = time.perf_counter()
    runtime = settings.make_runtime()
    plan = plan_job(target, space_name, settings)
    config, space, timed = plan.config, plan.space, plan.timed
    fp = target.fingerprint()
    device_id = fp["device_id"]
    rdir = runtime_dir_name(runtime.name, settings.threads, runtime.dtype)
    job = job_record(plan, runtime, settings, device_id)
    # before anything of the space is exported: a runner that cannot run here stops the job now
    # (a phone's; the host runs its runtimes in this process and has nothing to push)
    if hasattr(target, "preflight"):
        check = run_preflight(target, runtime, plan.spec, need_bytes=plan.models_bytes(runtime.dtype),
                              cache_root=settings.cache_root)  # fmt: skip
        if not check.ok:
            raise PreflightError(check.message())
        log.info("%s: preflight passed (%s; %.1f s)", target.name, ", ".join(c.name for c in check.checks),
                 check.elapsed_s)  # fmt: skip
    # what the target measures with (a phone: its runner's sha256 now that it is pushed, core mask,
    # clock lock, temperature limit): part of the settings a resume or a reuse must match
    job["target"] = target.settings(runtime) if hasattr(target, "settings") else {"name": target.name}
    runtime_dir = Path(settings.out) / device_id / space.name / rdir
    if settings.skip_existing and not settings.fresh:
        existing = up_to_date_version(runtime_dir, job, settings.ops_limit)
        if existing is not None:
            lut_dir, n_ops = existing
            log.info("%s is up to date (the same settings record); not measuring again", lut_dir)
            return ProfileResult(lut_dir=lut_dir, num_ops=n_ops, num_failed=0, skipped=0,
                                 elapsed_s=time.perf_counter() - t0, device_id=device_id, reused=True)  # fmt: skip
    work = WorkDir(runtime_dir / PARTIAL_DIR, job, fresh=settings.fresh)
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
    cache = ExportCache(runtime, settings.cache_root)
    with EXPORT_LOCK:  # the devices of one run export in turn (profiler.preflight.EXPORT_LOCK)
        report = cache.ensure(
            [ExportItem.for_op(op, plan.copies.get(op.key, 1)) for op in timed], workers=settings.export_workers,
            retry_failed=settings.retry_failed, progress=settings.progress,
        )  # fmt: skip
    log.info("exports: %d exported, %d cached, %d failed (%.1f s)",
             report.exported, report.cached, len(report.failed), report.elapsed_s)
    failures = {k: f"export: {m}" for k, m in report.failed.items()}
    files = {k: p for k, p in report.paths.items() if k not in failures}
    target.prepare(runtime, list(files.values()))
    # faults of an interrupted run count, unless --retry-failed asks for a fresh chance
    counts = {} if settings.retry_failed else work.fault_counts()
    remeasures = {} if settings.retry_failed else work.remeasure_counts()
    given_up = run_rounds(
        target, runtime, files, config, plan.spec,
        done=set(work.samples), round_states=work.states, on_state=work.add_state,
        on_samples=work.add_samples, on_failure=work.add_fault, failures=counts,
        on_remeasure=work.add_remeasure, remeasures=remeasures,
        specs=plan.specs, progress=settings.progress, desc=f"{device_id[:24]} {rdir}",
    )  # fmt: skip
    for k in sorted(given_up):
        if counts.get(k, 0) > config.retries:
            failures[k] = f"run: {work.last_error(k)}"
        else:
            reasons = [d["reason"] for d in work.remeasured if d["op_key"] == k]
            failures[k] = (f"run: measured in bad conditions {remeasures.get(k, 0)} times, more than the "
                           f"{getattr(target, 'max_remeasure', 0)} re-measurements allowed (last: {reasons[-1]})")

    if failures and not settings.allow_failed:
        raise _incomplete(work, failures, len(timed), target.name)
    table, samples = assemble(timed, plan.identity, work, failures, config.rounds)
    ovh = table.loc[table["op_key"] == plan.net_overhead.key, ["status", "median_us"]]
    fp = target.fingerprint()  # again: a phone's runner_sha256 is the pushed runner's now
    meta = lut_meta(
        job, plan, settings, runtime, target, fp,
        overhead_us=float(ovh["median_us"].iloc[0]) if (ovh["status"] == "ok").any() else None,
        failures=failures, remeasured=work.remeasured,
    )  # fmt: skip
    lut_dir = write_lut(settings.out, device_id=device_id, space=space.name, runtime_dir=rdir,
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


def _incomplete(work: WorkDir, failures: dict[str, str], num_ops: int, device: str) -> IncompleteJobError:
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
