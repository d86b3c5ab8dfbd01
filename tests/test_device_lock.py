"""One measurement per device at a time: the device lock and the host's competition check."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from profiler.targets.lock import DeviceBusyError, device_lock

HOLD = (
    "import sys, time; from profiler.targets.lock import device_lock\n"
    "with device_lock(sys.argv[1], what='profile fbnet with tflite'):\n"
    "    print('held', flush=True); time.sleep(float(sys.argv[2]))\n"
)


def _holder(device: str, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, device, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_job_on_the_same_device_stops_naming_the_holder() -> None:
    proc = _holder("host", 30)
    try:
        with pytest.raises(DeviceBusyError) as e, device_lock("host"):
            pass
        msg = str(e.value)
        assert f"pid {proc.pid}" in msg and "profile fbnet with tflite" in msg and "--wait-lock" in msg
        with device_lock("R58M12ABCDE"):  # another device is free
            pass
    finally:
        proc.kill()
        proc.wait()
    with device_lock("host"):  # the kernel dropped the dead holder's lock
        pass


def test_waiting_for_the_lock_and_reentrancy() -> None:
    proc = _holder("host", 1.5)
    t0 = time.monotonic()
    with device_lock("host", wait_s=20, poll_s=0.1):
        assert time.monotonic() - t0 >= 0.5  # it waited for the holder to finish
        with device_lock("host"):  # re-entrant in the holding process
            pass
    proc.wait()


def test_profiler_cli_refuses_a_busy_device(tmp_path: Path) -> None:
    proc = _holder("host", 60)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "profiler.run", "--device", "host", "--space", "fbnet-r32-w0.25",
             "--runtime", "onnxruntime", "--ops-limit", "1", "--out", str(tmp_path), "--json", "--no-progress"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        proc.kill()
        proc.wait()
    assert out.returncode == 1 and "is busy" in out.stdout and f"pid {proc.pid}" in out.stdout
    assert not (tmp_path / "host").exists() and not any(tmp_path.rglob("v1"))  # nothing measured


def test_host_round_state_reports_competing_processes(caplog: pytest.LogCaptureFixture) -> None:
    from profiler.targets.host import HostTarget

    target = HostTarget()
    target.round_state()
    burner = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<3: pass"])
    try:
        time.sleep(1.5)
        state = target.round_state()
    finally:
        burner.kill()
        burner.wait()
    assert state["others_cores"] >= 0.5  # the busy loop used most of a core
    assert "other processes used" in caplog.text
