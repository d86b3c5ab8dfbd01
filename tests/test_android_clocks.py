"""Locked CPU clocks on the (rooted) loopback device: locked during a job, restored after a normal
end, an exception, Ctrl-C, and a disconnect followed by a reconnection."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from android_harness.loopback.session import loopback_session
from profiler.api import profile_space
from profiler.runtimes import get_runtime
from profiler.targets import get_target
from profiler.targets.adb import AdbTarget
from profiler.targets.base import TargetError

BIG = "sys/devices/system/cpu/cpu{cpu}/cpufreq/{name}"


def _sysfs(daemon, cpu: int, name: str) -> str:
    return (daemon.sandbox / BIG.format(cpu=cpu, name=name)).read_text().strip()


def _policy(daemon, cpu: int = 4) -> tuple[str, str, str, str]:
    return tuple(_sysfs(daemon, cpu, n) for n in ("scaling_governor", "scaling_min_freq",
                                                  "scaling_max_freq", "scaling_cur_freq"))


def _options(loopback, state_dir: Path, **more):
    server, _ = loopback
    return {"adb_port": server.port, "cooldown_poll_s": 0.1, "clock_state_dir": str(state_dir), **more}


@pytest.fixture()
def before(loopback):
    """The big cluster with limits of its own, as a user might have left them."""
    _, daemon = loopback
    for cpu in (4, 5, 6, 7):
        (daemon.sandbox / BIG.format(cpu=cpu, name="scaling_min_freq")).write_text("608200\n")
        (daemon.sandbox / BIG.format(cpu=cpu, name="scaling_max_freq")).write_text("2149300\n")
        (daemon.sandbox / BIG.format(cpu=cpu, name="scaling_cur_freq")).write_text("2149300\n")
    return _policy(daemon)


def test_locked_during_the_job_and_restored_after(loopback, before, tmp_path):
    _, daemon = loopback
    target = get_target(daemon.serial, _options(loopback, tmp_path, lock_freq_khz=1_500_000))
    fp = target.fingerprint()
    lock = fp["clock_lock"]
    assert (lock["mode"], lock["locked"], lock["method"], lock["governor"]) == ("auto", True, "userspace", "userspace")
    assert lock["freq_khz"] == {"4": 1224600}  # rounded down to an available frequency
    assert [_policy(daemon, c)[0] for c in (4, 7, 0)] == ["userspace", "userspace", "schedutil"]
    state = target.round_state()
    assert (state["clocks_locked"], state["locked_freq_khz"], state["cpu_freq_khz"]) == (True, 1224600, 1224600)
    assert (tmp_path / f"{target.lock_key}.json").is_file()  # named by the phone, not by its serial
    target.close()
    assert _policy(daemon) == before and _policy(daemon, 7) == before
    assert _sysfs(daemon, 4, "scaling_setspeed") == "<unsupported>"
    assert not list(tmp_path.iterdir())  # nothing left to restore


def test_without_userspace_min_equals_max_under_performance(loopback, before, tmp_path):
    _, daemon = loopback
    for cpu in (4, 5, 6, 7):
        (daemon.sandbox / BIG.format(cpu=cpu, name="scaling_available_governors")).write_text(
            "schedutil performance powersave\n")
    try:
        target = get_target(daemon.serial, _options(loopback, tmp_path))
        lock = target.fingerprint()["clock_lock"]
        assert (lock["method"], lock["governor"], lock["freq_khz"]) == ("performance", "performance", {"4": 2457600})
        assert _policy(daemon) == ("performance", "2457600", "2457600", "2457600")
        target.close()
        assert _policy(daemon) == before
    finally:
        for cpu in (4, 5, 6, 7):
            (daemon.sandbox / BIG.format(cpu=cpu, name="scaling_available_governors")).write_text(
                "schedutil performance powersave userspace\n")


def test_not_rooted_records_not_locked_or_refuses(loopback, before, tmp_path):
    _, daemon = loopback
    daemon.set_knobs(rooted=False)
    try:
        target = get_target(daemon.serial, _options(loopback, tmp_path))
        lock = target.fingerprint()["clock_lock"]
        assert lock["locked"] is False and "not rooted" in lock["reason"]
        assert target.round_state()["clocks_locked"] is False
        target.close()
        off = get_target(daemon.serial, _options(loopback, tmp_path, lock_clocks="off"))
        assert off.fingerprint()["clock_lock"]["reason"] == "--lock-clocks off"
        strict = get_target(daemon.serial, _options(loopback, tmp_path, lock_clocks="require"))
        with pytest.raises(TargetError, match="not rooted"):
            strict.prepare(get_runtime("tflite"), [])
    finally:
        daemon.set_knobs(rooted=True)
    assert _policy(daemon) == before


@pytest.mark.slow
def test_restored_after_an_exception_and_after_ctrl_c(loopback, before, tmp_path, monkeypatch):
    _, daemon = loopback
    options = _options(loopback, tmp_path / "state")
    kw = dict(device=daemon.serial, ops_limit=2, out=tmp_path / "luts", cache_root=tmp_path / "cache",
              target_options=options, rounds=1, warmup=1, runs=2, progress=False)
    seen = []

    def interrupted(self, runtime, model_file, spec, **kw):
        seen.append(_policy(daemon)[0])  # the clocks while the job measures
        raise KeyboardInterrupt

    monkeypatch.setattr(AdbTarget, "measure_detailed", interrupted)  # what the round loop calls
    with pytest.raises(KeyboardInterrupt):
        profile_space("fbnet", "tflite", **kw)
    assert seen == ["userspace"] and _policy(daemon) == before
    monkeypatch.undo()
    partial = next((tmp_path / "luts").rglob(".partial"))
    job = partial / "job.json"
    job.write_text(job.read_text().replace('"rounds": 1', '"rounds": 7'))  # settings now differ
    with pytest.raises(ValueError, match="--fresh"):  # JobError, raised after the lock was taken
        profile_space("fbnet", "tflite", **kw)
    assert _policy(daemon) == before and not list((tmp_path / "state").iterdir())


@pytest.mark.adb
def test_disconnect_restores_at_the_next_connection(tmp_path, caplog):
    with loopback_session(tmp_path / "dev") as (server, daemon):
        pair = (server, daemon)
        before = _policy(daemon)
        target = get_target(daemon.serial, _options(pair, tmp_path / "state"))
        assert target.fingerprint()["clock_lock"]["locked"]
        daemon.unplug()  # the cable goes before the job could restore
        target.close()
        assert _policy(daemon)[0] == "userspace"
        assert len(list((tmp_path / "state").iterdir())) == 1
        daemon.replug()
        with caplog.at_level(logging.WARNING, logger="android_harness.clocks"):
            again = get_target(daemon.serial, _options(pair, tmp_path / "state", lock_clocks="off"))
        assert _policy(daemon) == before
        assert "restored the CPU clocks an interrupted job left locked" in caplog.text
        assert not list((tmp_path / "state").iterdir())
        again.close()
