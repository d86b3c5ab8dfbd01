"""Phones on several hosts: `--device SERIAL@HOST:PORT` through another adb server, several devices
of one job in parallel (one lock and one LUT each), Ctrl-C stopping them all; models kept on a
phone across a resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from android_harness import AdbError, device_address
from android_harness.loopback.session import loopback_session
from lut import load_lut


def test_device_address_forms():
    server, serial = device_address("R58M12ABCDE@lab-pc:5037")
    assert (server.host, server.port, serial) == ("lab-pc", 5037, "R58M12ABCDE")
    server, serial = device_address("192.168.1.7:5555@[::1]:5038")  # adb over Wi-Fi, seen from that host
    assert (server.host, server.port, serial) == ("::1", 5038, "192.168.1.7:5555")
    server, serial = device_address("R58M12ABCDE", "buildbox", 5040)  # a plain serial: --adb-host/--adb-port
    assert (server.host, server.port, serial) == ("buildbox", 5040, "R58M12ABCDE")
    for bad in ("@lab-pc:5037", "R58@lab-pc", "R58@:5037", "R58@lab-pc:0"):
        with pytest.raises(AdbError, match="SERIAL@HOST:PORT"):
            device_address(bad)


@pytest.mark.parametrize(("argv", "error"), [
    (["--device", "R58@lab-pc"], "give SERIAL@HOST:PORT"),
    (["--device", "R58@lab-pc:5037", "--warmup-secs", "-1"], "give 0 to 60 seconds"),
])
def test_profiler_run_refuses_a_malformed_device_or_warm_up(argv, error, capsys):
    from profiler.run import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--runtime", "tflite", *argv])
    assert exit_info.value.code == 2 and error in capsys.readouterr().err


@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    """Two adb servers on two loopback ports, a loopback device attached to each."""
    with loopback_session(tmp_path_factory.mktemp("host-a")) as a, \
            loopback_session(tmp_path_factory.mktemp("host-b")) as b:
        yield [a, b]


def _addresses(two_hosts) -> list[str]:
    return [f"{daemon.serial}@127.0.0.1:{server.port}" for server, daemon in two_hosts]


@pytest.mark.slow
def test_two_hosts_devices_profile_in_one_job(two_hosts, tmp_path, capsys):
    from profiler.run import main

    devices = _addresses(two_hosts)
    argv = ["--runtime", "tflite", "--space", "fbnet", "--ops-limit", "2", "--rounds", "1", "--warmup", "1",
            "--runs", "2", "--out", str(tmp_path), "--no-progress", "--json"]  # fmt: skip
    for d in devices:
        argv += ["--device", d]
    assert main(argv) == 0  # no --adb-port: each device names its own server
    results = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["device"] for r in results] == devices
    assert len({r["device_id"] for r in results}) == 2 and all(r["num_failed"] == 0 for r in results)
    luts = [load_lut(r["lut_dir"]) for r in results]
    assert {lut.meta["device"]["adb_server"] for lut in luts} == {f"127.0.0.1:{s.port}" for s, _ in two_hosts}
    for (_, daemon), lut in zip(two_hosts, luts):
        assert lut.meta["device"]["serial"] == daemon.serial and lut.provenance == "loopback"
        assert any("--graph=" in c for c in daemon.commands)  # each phone ran its own job


@pytest.mark.slow
def test_ctrl_c_stops_every_device_and_keeps_what_was_measured(two_hosts, tmp_path):
    devices = _addresses(two_hosts)
    cmd = [sys.executable, "-m", "profiler.run", "--runtime", "tflite", "--space", "fbnet", "--ops-limit", "2",
           "--rounds", "6", "--warmup", "1", "--runs", "10", "--out", str(tmp_path), "--no-progress"]  # fmt: skip
    for d in devices:
        cmd += ["--device", d]
    # a suite started in the background by a shell without job control runs with SIGINT ignored, and a
    # child inherits that: give the job the default disposition, as a terminal's Ctrl-C finds it
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            partial = list(tmp_path.glob("*/fbnet/*/.partial/samples.csv"))
            if len(partial) == 2 and all(len(p.read_text().splitlines()) > 1 for p in partial):
                break  # both phones are measuring
            time.sleep(0.5)
        assert proc.poll() is None, proc.stderr.read()
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        stopped_s = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    print(f"both jobs stopped {stopped_s:.1f} s after Ctrl-C")
    assert proc.returncode == 130, err
    assert stopped_s < 20, f"took {stopped_s:.1f} s to stop"  # the op-round in flight, then the clean-up
    assert "re-run the same command" in err
    assert not list(tmp_path.rglob("meta.json"))  # nothing published ...
    for server, daemon in two_hosts:  # ... everything measured kept, each phone left as it was found
        rows = [p for p in tmp_path.glob("*/fbnet/*/.partial/samples.csv")]
        assert len(rows) == 2 and all(len(p.read_text().splitlines()) > 1 for p in rows)
        governor = daemon.sandbox / "sys/devices/system/cpu/cpu4/cpufreq/scaling_governor"
        assert governor.read_text() == "schedutil\n"  # clocks restored
        assert list((daemon.sandbox / "data/local/tmp/hwnas/models").glob("*.tflite"))  # kept for the resume


@pytest.mark.slow
def test_models_stay_on_the_phone_across_a_resume(loopback, tmp_path, tiny_space):
    from profiler.api import profile_space
    from profiler.protocol.config import IncompleteJobError

    server, daemon = loopback
    kw = {"device": daemon.serial, "out": tmp_path, "rounds": 1, "warmup": 1, "runs": 2, "progress": False,
          "target_options": {"adb_port": server.port, "warmup_s": 0.0}}  # fmt: skip
    models = daemon.sandbox / "data/local/tmp/hwnas/models"
    daemon.set_faults(crash_on="k5_e6")
    try:
        with pytest.raises(IncompleteJobError):
            profile_space(tiny_space, "tflite", **kw)
    finally:
        daemon.set_faults(crash_on=None)
    kept = sorted(p.name for p in models.glob("*.tflite"))
    assert any(name.startswith("k5_e6-") for name in kept)  # named by op and content, left for the resume
    pushed = len(daemon.pushes)
    result = profile_space(tiny_space, "tflite", retry_failed=True, **kw)
    assert result.num_failed == 0
    assert [p for p in daemon.pushes[pushed:] if "/models/" in p] == []  # the resume pushed no model again
    assert not models.exists()  # the job is complete: its models are removed
