"""android_harness against the loopback device, through the real adb server and adbutils."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from android_harness import Device, DeviceGoneError, WorkDir, fingerprint, list_devices
from android_harness.device_state import core_mask, wait_for_cooldown
from android_harness.doctor import run_checks
from android_harness.loopback.session import loopback_session


@pytest.fixture()
def device(loopback):
    server, daemon = loopback
    return Device.connect(server, daemon.serial)


def test_devices_lists_identity(loopback):
    server, daemon = loopback
    [info] = [i for i in list_devices(server) if i.serial == daemon.serial]
    assert (info.state, info.model, info.android) == ("device", "Loopback", "14")
    out = subprocess.run(
        [sys.executable, "-m", "android_harness", "--adb-port", str(server.port), "devices", "--json"],
        capture_output=True, text=True, check=True).stdout
    assert json.loads(out)[0]["serial"] == daemon.serial


def test_fingerprint_clusters_and_stable_id(device):
    fp = fingerprint(device)
    assert fp["manufacturer"] == "hwnas" and fp["model"] == "Loopback"
    assert [c["cpus"] for c in fp["cpu_clusters"]] == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert fp["cpu_clusters"][-1]["max_freq_khz"] == 2457600
    assert fp["kernel"].startswith("Linux version")
    assert fp["device_id"] == fingerprint(device)["device_id"]
    assert fp["device_id"].startswith("hwnas-loopback-")
    assert core_mask(fp["cpu_clusters"][-1]["cpus"]) == "f0"


def test_push_skips_files_with_same_checksum(device, tmp_path):
    files = []
    for i in range(3):
        path = tmp_path / f"m{i}.bin"
        path.write_bytes(bytes([i]) * (1000 + i))
        files.append(path)
    work = WorkDir(device, "/data/local/tmp/hwnas-test")
    first = work.push(files, subdir="models")
    assert len(first.pushed) == 3 and not first.skipped
    files[1].write_bytes(b"changed")
    second = work.push(files, subdir="models")
    assert second.pushed == ("/data/local/tmp/hwnas-test/models/m1.bin",)
    assert len(second.skipped) == 2
    work.remove("models")
    assert device.stat("/data/local/tmp/hwnas-test/models") is None
    with pytest.raises(ValueError):
        WorkDir(device, "/sdcard/x")


def test_doctor_reports_and_fixes(loopback, device):
    server, daemon = loopback
    checks = {c.name: c for c in run_checks(device, work_dir="/data/local/tmp/hwnas")}
    assert checks["runner benchmark_model"].ok and checks["runner executor_runner"].ok
    assert checks["battery"].ok and checks["temperature"].ok and checks["free space"].ok
    assert checks["clock lock"].detail.startswith("rooted (`su -c`)")
    battery = daemon.sandbox / "sys/class/power_supply/battery/capacity"
    battery.write_text("9\n")
    try:
        checks = {c.name: c for c in run_checks(device, work_dir="/data/local/tmp/nowhere")}
        assert not checks["battery"].ok and "charge" in checks["battery"].fix
        assert not checks["runner executor_runner"].ok and "--runner" in checks["runner executor_runner"].fix
    finally:
        battery.write_text("87\n")


def test_cooldown_waits_until_below_threshold(loopback, device):
    _, daemon = loopback
    zone = daemon.sandbox / "sys/class/thermal/thermal_zone1/temp"
    zone.write_text("52000\n")
    threading.Timer(0.6, lambda: zone.write_text("39000\n")).start()
    t0 = time.monotonic()
    temp = wait_for_cooldown(device, 45.0, poll_s=0.2, timeout_s=30)
    assert temp == 39.0 and time.monotonic() - t0 >= 0.5


@pytest.mark.adb
def test_disconnect_raises_device_gone_then_reconnects(tmp_path):
    with loopback_session(tmp_path / "dev") as (server, daemon):
        device = Device.connect(server, daemon.serial)
        daemon.set_faults(drop_after_commands=len(daemon.commands) + 1)
        assert device.shell("echo one").stdout == "one\n"
        with pytest.raises(DeviceGoneError, match="reconnect it and run the same command again"):
            device.shell("echo two")
        daemon.replug()
        again = Device.connect(server, daemon.serial)
        assert again.shell("echo three").stdout == "three\n"
