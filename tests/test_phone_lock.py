"""One lock per phone, keyed by its identity and taken before anything touches it: while a job
holds locked clocks on the loopback device, every other command on that phone (by any serial)
is refused and the clocks stay locked."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from profiler.targets.adb import AdbTarget
from profiler.targets.lock import DeviceBusyError, lock_key_of

REPO = Path(__file__).resolve().parents[1]
GOVERNOR = "sys/devices/system/cpu/cpu4/cpufreq/scaling_governor"


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


def test_a_second_command_cannot_touch_a_phone_a_job_holds(loopback, tiny_models):
    server, daemon = loopback
    governor = daemon.sandbox / GOVERNOR
    job = AdbTarget(daemon.serial, adb_port=server.port, cooldown_poll_s=0.1)
    try:
        assert job.fingerprint()["clock_lock"]["locked"] and governor.read_text() == "userspace\n"
        # the same phone under another serial: adb connects it as a second transport
        other = f"localhost:{daemon.port}"
        assert lock_key_of(other, {"adb_port": server.port}) == job.lock_key == job.fingerprint()["device_id"]
        port = ["--adb-port", str(server.port)]
        profile = _cli("profiler.run", "--device", other, "--runtime", "tflite", "--preflight", *port)
        assert profile.returncode == 1 and "is busy" in profile.stdout + profile.stderr, profile.stderr[-2000:]
        measure = _cli("profiler.deploy", "measure", "--model", str(tiny_models["tflite"]), "--device",
                       daemon.serial, *port)  # what search.train --measure runs
        assert measure.returncode == 1 and "is busy" in measure.stdout, measure.stdout[-2000:]
        assert f"pid {os.getpid()}" in measure.stdout  # the message names the holder
        # another thread of this process is another job too
        errors: list[BaseException] = []

        def second() -> None:
            try:
                AdbTarget(other, adb_port=server.port).close()
            except DeviceBusyError as exc:
                errors.append(exc)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(60)
        assert len(errors) == 1
        assert governor.read_text() == "userspace\n"  # nobody restored the running job's clocks
        assert job.round_state()["clocks_locked"]
    finally:
        job.close()
        server.client().disconnect(f"localhost:{daemon.port}")
    assert governor.read_text() == "schedutil\n"  # the job restored them as it ended ...
    AdbTarget(daemon.serial, adb_port=server.port).close()  # ... and released the phone


def test_waiting_for_the_phone(loopback):
    server, daemon = loopback
    held = threading.Event()

    def job() -> None:  # another job, in another thread: holds the phone for a moment
        target = AdbTarget(daemon.serial, adb_port=server.port)
        held.set()
        time.sleep(1.5)
        target.close()

    thread = threading.Thread(target=job)
    thread.start()
    assert held.wait(60)
    t0 = time.monotonic()
    AdbTarget(daemon.serial, adb_port=server.port, lock_wait_s=30).close()  # waits for it
    assert time.monotonic() - t0 > 0.5
    thread.join(60)
