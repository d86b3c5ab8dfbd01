"""End to end: profile FBNet ops on the loopback device through the real adb server into a LUT."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lut import load_lut
from profiler.api import profile_space
from profiler.protocol.config import IncompleteJobError
from profiler.targets.base import DeviceLostError
from search.space import Arch, arch_ops

pytestmark = pytest.mark.slow  # exports models and times them through both device runners

_FAST = dict(rounds=1, warmup=1, runs=2, progress=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("exports")


def _options(server):
    return {"adb_port": server.port, "cooldown_poll_s": 0.1}


@pytest.mark.parametrize("runtime", ["tflite", "executorch"])
def test_profile_space_writes_lut_with_fingerprint(loopback, cache, tmp_path, runtime):
    server, daemon = loopback
    result = profile_space("fbnet", runtime, device=daemon.serial, ops_limit=3, out=tmp_path,
                           cache_root=cache, target_options=_options(server), **_FAST)
    assert result.num_ops >= 1 and result.num_failed == 0
    lut = load_lut(result.lut_dir)
    device = lut.meta["device"]
    assert device["device_id"] == result.device_id and device["model"] == "Loopback"
    assert device["cpu_clusters"][-1]["max_freq_khz"] == 2457600
    assert runtime in json.dumps(lut.meta) and device["sample_semantics"]
    assert device["clock_lock"]["locked"] and device["clock_lock"]["freq_khz"] == {"4": 2457600}
    assert lut.samples["clocks_locked"].all() and (lut.samples["locked_freq_khz"] == 2457600).all()
    assert (daemon.sandbox / "sys/devices/system/cpu/cpu4/cpufreq/scaling_governor").read_text() == "schedutil\n"
    assert daemon.unsupported == []


def test_overhead_op_with_all_same_runs_succeeds(loopback, cache, tmp_path):
    # Integer µs make both runs of a tiny op often equal, and benchmark_model then prints
    # `count=2 curr=X(all same)`: here every run is rounded to 20 ms so every op meets that form.
    server, daemon = loopback
    daemon.set_knobs(timing_quantum_us=20_000)
    try:
        result = profile_space("fbnet", "tflite", device=daemon.serial, ops_limit=2, out=tmp_path,
                               cache_root=cache, target_options=_options(server), **_FAST)
    finally:
        daemon.set_knobs(timing_quantum_us=0)
    assert result.num_failed == 0
    lut = load_lut(result.lut_dir)
    overhead = lut.table[lut.table["block"] == "overhead"]
    assert len(overhead) >= 1 and (overhead["status"] == "ok").all()
    assert (lut.samples["latency_us"] % 20_000 == 0).all()
    assert lut.meta["overhead_us"] is not None


def test_disconnect_mid_job_then_resume_keeps_every_sample(loopback, cache, tmp_path):
    server, daemon = loopback
    kw = dict(device=daemon.serial, ops_limit=4, out=tmp_path, cache_root=cache,
              target_options=_options(server), **{**_FAST, "rounds": 2})
    # enough commands for setup, the preflight and part of the ops, then the cable is "pulled"
    daemon.set_faults(drop_after_commands=len(daemon.commands) + 38)  # into round 2 of 2
    with pytest.raises(DeviceLostError, match="reconnect it and run the same command again"):
        profile_space("fbnet", "tflite", **kw)
    partial = next(tmp_path.rglob(".partial"))
    saved = pd.read_csv(partial / "samples.csv")
    assert len(saved) > 0  # some op-rounds were measured before the disconnect
    daemon.replug()
    result = profile_space("fbnet", "tflite", **kw)
    assert result.skipped == len(saved) // _FAST["runs"] and result.num_failed == 0
    assert not partial.exists()
    lut = load_lut(result.lut_dir)
    merged = lut.samples.merge(saved, on=["op_key", "round", "sample"], suffixes=("", "_before"))
    assert len(merged) == len(saved)  # every sample measured before the disconnect is in the LUT ...
    assert (merged["latency_us"] - merged["latency_us_before"]).abs().max() < 1e-6  # ... unchanged
    assert len(lut.samples) == (lut.table["status"] == "ok").sum() * 2 * _FAST["runs"]


def test_runner_crash_marks_one_op_failed(loopback, cache, tmp_path):
    server, daemon = loopback
    kw = dict(device=daemon.serial, ops_limit=3, out=tmp_path, cache_root=cache, target_options=_options(server),
              **_FAST)  # fmt: skip
    daemon.set_faults(crash_on="k3_e1-i16")  # not the preflight's k3_e1-i8x8x8 model
    try:
        with pytest.raises(IncompleteJobError, match=r"1 of \d+ ops failed") as info:
            profile_space("fbnet", "tflite", **kw)
        assert not list(tmp_path.rglob("meta.json"))  # no LUT from a job with a failed op ...
        commands = len(daemon.commands)
        result = profile_space("fbnet", "tflite", allow_failed=True, **kw)  # ... unless gaps are allowed
    finally:
        daemon.set_faults(crash_on=None)
    assert info.value.num_failed == result.num_failed and result.skipped > 0
    runs = [c for c in daemon.commands[commands:] if "--graph=" in c]
    assert runs and not any("k3_e1-i16" in c for c in runs)  # the failed op was not run again
    lut = load_lut(result.lut_dir)
    failed = lut.table[lut.table["status"] == "failed"]
    assert result.num_failed == len(failed) >= 1
    assert all(key.startswith("k3_e1-") and "exited with status 134" in error
               for key, error in zip(failed.index, failed["error"]))
    assert result.num_ops > result.num_failed


@pytest.mark.slow
def test_validate_a_phone_lut_end_to_end(loopback, cache, tmp_path, tiny_space, capsys):
    """A small space profiled on the (loopback) phone, then validated on it with the same adb and
    runner options as profiler.run: end-to-end archs and re-timed ops through the runner."""
    from profiler.validate import main as validate_main

    server, daemon = loopback
    result = profile_space(tiny_space, "tflite", device=daemon.serial, out=tmp_path, cache_root=cache,
                           target_options=_options(server), rounds=1, warmup=1, runs=2, progress=False)  # fmt: skip
    lut = load_lut(result.lut_dir)
    assert result.num_failed == 0 and lut.provenance == "loopback" and lut.meta["protocol"]["cache"] == "mixed"
    # the default on a phone: the classifier (its weights stream) and its overhead op as replicas
    assert lut.meta["protocol"]["op_cache"] == {"overhead-i256x16x16-o256-s1": "replicas", "pool_fc-i256x16x16-o100-s1": "replicas"}
    assert lut.meta["protocol"]["copies"]["pool_fc-i256x16x16-o100-s1"] > 1
    assert lut.meta["runtime"]["op_profile_resolution_us"] == 1.0  # XNNPACK's operator timings: whole µs
    rc = validate_main([str(result.lut_dir), "--device", daemon.serial, "--adb-port", str(server.port),
                        "--archs", "3", "--rounds", "2", "--drift-ops", "2", "--per-layer", "--json"])  # fmt: skip
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["config"]["device"] == daemon.serial and report["num_archs"] == 3
    assert all(a["measured_us"] > 0 for a in report["archs"]) and len(report["drift"]["ops"]) == 3
    # layer by layer (benchmark_model --enable_op_profiling through the runner): LUT value vs in context
    archs = {a["name"]: a["blocks"] for a in report["archs"]}
    assert set(report["layers"]) == {"random_000", "random_001", "random_002"}
    for name, entry in report["layers"].items():
        assert "error" not in entry and entry["resolution_us"] == 1.0, entry
        keys = [op.key for op in arch_ops(Arch(tiny_space, tuple(archs[name])))]
        assert [r["op_key"] for r in entry["layers"]] == keys
        for row in entry["layers"]:
            assert row["lut_us"] == lut.op_latency_us(row["op_key"]) and row["in_context_us"] >= 0
    assert (result.lut_dir / "validation.json").is_file() and daemon.unsupported == []
