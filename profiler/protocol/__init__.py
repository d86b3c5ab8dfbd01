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

Modules (each imports only those above it; this package's namespace is the public API):

    config     ProtocolConfig, JobSettings (one object for a whole job), ProfileResult, errors
    plan       the ops a job times, their cache states and copies, its run specs (pure)
    settings   the settings record (job.json, meta.json's `settings`), its diff, meta.json
    workdir    the persistent work dir (.partial/): append-only, fsynced, resumable
    rounds     the round loop, shared with whole-arch measurements
    table      the LUT table and samples frame from a work dir
    job        profile_ops and preflight_job: the steps above under the device's lock
"""

from profiler.preflight import PreflightError
from profiler.protocol.config import (
    PROTOCOL_CACHE_STATES,
    IncompleteJobError,
    JobError,
    JobSettings,
    ProfileResult,
    ProtocolConfig,
)
from profiler.protocol.job import preflight_job, profile_ops
from profiler.protocol.plan import JobPlan, op_cache_states, plan_job, plan_ops, replica_counts, streamed_ops
from profiler.protocol.rounds import run_rounds
from profiler.protocol.settings import OVERHEAD_OPS, settings_diff, settings_record

__all__ = [
    "ProtocolConfig", "JobSettings", "ProfileResult", "JobError", "IncompleteJobError", "PROTOCOL_CACHE_STATES",
    "OVERHEAD_OPS", "plan_ops", "replica_counts", "streamed_ops", "op_cache_states", "run_rounds", "profile_ops",
    "plan_job", "preflight_job", "JobPlan", "PreflightError", "settings_record", "settings_diff",
]  # fmt: skip
