"""The loopback device: its shell interpreter, and its adb daemon through the real adb server."""

from __future__ import annotations

import stat

import pytest

from android_harness.adb import Device
from android_harness.loopback.device import LoopbackConfig, build_sandbox
from android_harness.loopback.session import loopback_session
from android_harness.loopback.shell import Shell


@pytest.fixture()
def shell(tmp_path):
    config = LoopbackConfig()
    build_sandbox(config, tmp_path)
    return Shell(tmp_path, props=config.props, cpu_count=8)


def test_shell_operators_status_and_variables(shell):
    r = shell.run("false && echo no; echo $?; true || echo no2; echo 'a  b' \"c $?\"")
    assert r.stdout == b"1\na  b c 0\n" and r.exit_code == 0
    assert shell.run("nosuchcmd").exit_code == 127
    assert shell.run("ls | grep x").exit_code == 2  # pipes are refused, not faked


def test_shell_files_globs_redirections(shell):
    assert shell.run("mkdir -p /data/local/tmp/w && cd /data/local/tmp/w && echo hi > f.txt").exit_code == 0
    assert shell.run("cat /data/local/tmp/w/f.txt").stdout == b"hi\n"
    r = shell.run("cat /data/local/tmp/w/missing 2>/dev/null; echo $?")
    assert r.stdout == b"1\n" and r.stderr == b""
    r = shell.run("grep -H . /sys/class/thermal/thermal_zone*/type")
    assert r.stdout.decode().splitlines()[0] == "/sys/class/thermal/thermal_zone0/type:cpu-0-0-usr"
    assert shell.run("rm -rf /data/local/tmp/w && ls /data/local/tmp/w").exit_code == 1
    assert shell.run("cat /../../etc/passwd").exit_code == 1  # cannot climb out of the sandbox


def test_shell_runs_sandbox_executables_with_taskset_and_timeout(shell, tmp_path):
    script = tmp_path / "data/local/tmp/s.sh"
    script.write_text("#!/bin/sh\necho ran \"$@\"; sleep 5\n")
    assert shell.run("/data/local/tmp/s.sh").exit_code == 126  # not executable yet
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    r = shell.run("timeout -s 9 1 taskset f0 /data/local/tmp/s.sh x")
    assert r.exit_code == 124 and r.stdout == b"ran x\n"
    assert shell.run("taskset 100 /data/local/tmp/s.sh").exit_code == 1  # cpu 8 does not exist


def test_shell_device_state_commands(shell):
    assert "[ro.product.model]: [Loopback]" in shell.run("getprop").stdout.decode()
    assert shell.run("getprop ro.product.manufacturer").stdout == b"hwnas\n"
    assert b"level: 87" in shell.run("dumpsys battery").stdout
    assert shell.run("df -k /data/local/tmp").stdout.decode().splitlines()[1].split()[3].isdigit()
    shell.run("logcat -c")
    shell.logcat_file.write_text("11-23 09:00:00.000   1   1 I ExecuTorch: x\n"
                                 "11-23 09:00:00.000   1   1 I other   : y\n")
    assert shell.run("logcat -d -s ExecuTorch").stdout.decode().splitlines()[1:] == [
        "11-23 09:00:00.000   1   1 I ExecuTorch: x"]


def test_daemon_through_real_adb_server(tmp_path):
    with loopback_session(tmp_path / "dev") as (server, daemon):
        device = Device.connect(server, daemon.serial)
        r = device.shell("getprop ro.product.model; ls /nope")
        assert (r.exit_code, r.stdout, r.stderr) == (1, "Loopback\n", "ls: /nope: No such file or directory\n")
        assert device.shell("exit_code_test_missing_cmd").exit_code == 127
        # sync: SEND / STAT / RECV / LIST of a file larger than one adb packet
        payload = bytes(range(256)) * 4000
        (tmp_path / "blob").write_bytes(payload)
        device.push(tmp_path / "blob", "/data/local/tmp/blob", mode=0o600)
        mode, size = device.stat("/data/local/tmp/blob")
        assert size == len(payload) and stat.S_IMODE(mode) == 0o600
        assert device.stat("/data/local/tmp/none") is None
        assert (tmp_path / "dev/data/local/tmp/blob").read_bytes() == payload
        assert device._dev.sync.read_bytes("/data/local/tmp/blob") == payload
        names = [f.path for f in device._dev.sync.list("/data/local/tmp")]
        assert "blob" in names and "hwnas" in names
        assert daemon.commands[0] == "getprop ro.product.model; ls /nope"
