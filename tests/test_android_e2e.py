"""End to end: profile FBNet ops on the loopback device through the real adb server into a LUT."""

from __future__ import annotations

import json

import pytest

from android_harness.loopback.session import loopback_session
from profiler.api import profile_space
from profiler.targets.base import DeviceLostError

pytestmark = pytest.mark.slow  # exports models and times them through both device runners

_FAST = dict(rounds=1, warmup=1, runs=2, progress=False)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    with loopback_session(tmp_path_factory.mktemp("device")) as pair:
        yield pair


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("exports")


def _options(server):
    return {"adb_port": server.port, "cooldown_poll_s": 0.1}


@pytest.mark.parametrize("runtime", ["tflite", "executorch"])
def test_profile_space_writes_lut_with_fingerprint(session, cache, tmp_path, runtime):
    server, daemon = session
    result = profile_space("fbnet", runtime, device=daemon.serial, ops_limit=3, out=tmp_path,
                           cache_root=cache, target_options=_options(server), **_FAST)
    assert result.num_ops >= 1 and result.num_failed == 0
    meta = json.loads((result.lut_dir / "meta.json").read_text())
    device = meta["device"]
    assert device["device_id"] == result.device_id and device["model"] == "Loopback"
    assert device["cpu_clusters"][-1]["max_freq_khz"] == 2457600
    assert runtime in json.dumps(meta) and device["sample_semantics"]


def test_disconnect_mid_job_then_resume(session, cache, tmp_path):
    server, daemon = session
    # enough commands for setup and part of the ops, then the cable is "pulled"
    daemon.set_faults(drop_after_commands=len(daemon.commands) + 16)
    with pytest.raises(DeviceLostError, match="reconnect it and run the same command again"):
        profile_space("fbnet", "tflite", device=daemon.serial, ops_limit=4, out=tmp_path,
                      cache_root=cache, target_options=_options(server), **_FAST)
    daemon.replug()
    result = profile_space("fbnet", "tflite", device=daemon.serial, ops_limit=4, out=tmp_path,
                           cache_root=cache, target_options=_options(server), **_FAST)
    assert result.skipped > 0 and result.num_failed == 0


def test_runner_crash_marks_one_op_failed(session, cache, tmp_path):
    server, daemon = session
    daemon.set_faults(crash_on="k3_e1-")
    try:
        result = profile_space("fbnet", "tflite", device=daemon.serial, ops_limit=3,
                               out=tmp_path, cache_root=cache, target_options=_options(server),
                               **_FAST)
    finally:
        daemon.set_faults(crash_on=None)
    assert result.num_failed >= 1 and result.num_ops > result.num_failed
