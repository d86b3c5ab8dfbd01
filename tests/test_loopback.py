"""The loopback device: its shell, its cpufreq sysfs, its runner-shim table, and its adb daemon
through the real adb server."""

from __future__ import annotations

import stat

import pytest

from android_harness.adb import Device
from android_harness.loopback.device import RUNNER_SHIMS, LoopbackConfig, build_sandbox
from android_harness.loopback.session import loopback_session
from android_harness.loopback.shell import Shell
from android_harness.runners import RUNNERS

CPU4 = "/sys/devices/system/cpu/cpu4/cpufreq"


@pytest.fixture()
def shell(tmp_path):
    config = LoopbackConfig()
    build_sandbox(config, tmp_path)
    return Shell(tmp_path, props=config.props, cpu_count=8, rooted=True)


def _out(shell: Shell, line: str) -> str:
    result = shell.run(line)
    assert result.exit_code == 0, result.stderr
    return result.stdout.decode()


def test_every_runner_has_a_shim_and_every_runtime_runner_is_known():
    import importlib

    from profiler.runtimes import RUNTIMES

    assert set(RUNNER_SHIMS) == set(RUNNERS)
    for module in RUNNER_SHIMS.values():
        assert callable(importlib.import_module(module).main)
    assert {i.runner for i in RUNTIMES.values() if i.runner} <= set(RUNNERS)


def test_shell_sequences_and_what_it_refuses(shell):
    assert _out(shell, "echo a && echo b; echo c") == "a\nb\nc\n"
    r = shell.run("cat /nope && echo no; echo yes")
    assert (r.exit_code, r.stdout, r.stderr) == (0, b"yes\n", b"cat: /nope: No such file or directory\n")
    r = shell.run("ls /data")  # not a form the harness sends: a missing command, as on a phone
    assert (r.exit_code, r.stderr) == (127, b"/system/bin/sh: ls: not found\n")
    assert shell.run("rm -r /data/local/tmp").exit_code == 2  # known command, unserved form
    assert shell.unsupported == ["rm -r /data/local/tmp"]
    assert shell.run("getprop | cat").exit_code == 2  # no pipes
    assert shell.run("echo 'unterminated").exit_code == 2


def test_shell_files_globs_and_redirections(shell):
    assert _out(shell, "mkdir -p /data/local/tmp/w && cd /data/local/tmp/w && echo hi > f.txt") == ""
    assert _out(shell, "cat /data/local/tmp/w/f.txt") == "hi\n"
    assert shell.run("test -d /data/local/tmp/w").exit_code == 0
    assert shell.run("test -d /data/local/tmp/w/f.txt").exit_code == 1
    r = shell.run("sha256sum /data/local/tmp/w/f.txt /data/local/tmp/w/none 2>/dev/null")
    assert r.exit_code == 1 and r.stderr == b""
    assert r.stdout.decode().split() == [
        "98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4", "/data/local/tmp/w/f.txt"]
    lines = _out(shell, "grep -H . /sys/class/thermal/thermal_zone*/type").splitlines()
    assert lines[0] == "/sys/class/thermal/thermal_zone0/type:cpu-0-0-usr" and len(lines) == 3
    assert shell.run("grep -H . /sys/class/nothing*/x").exit_code == 2
    assert _out(shell, "chmod 755 /data/local/tmp/w/f.txt && rm -rf /data/local/tmp/w") == ""
    assert shell.run("test -d /data/local/tmp/w").exit_code == 1
    assert shell.run("cat /../../etc/passwd").exit_code == 1  # cannot climb out of the sandbox


def test_sysfs_writes_need_root(shell):
    r = shell.run(f"echo performance > {CPU4}/scaling_governor")
    assert r.exit_code == 1 and b"Permission denied" in r.stderr
    assert _out(shell, "id").startswith("uid=2000(shell)")
    assert _out(shell, "su -c id").startswith("uid=0(root)")
    assert _out(shell, "su 0 sh -c id").startswith("uid=0(root)")
    assert _out(shell, f"su -c 'echo performance > {CPU4}/scaling_governor'") == ""
    assert _out(shell, f"cat {CPU4}/scaling_governor") == "performance\n"
    unrooted = Shell(shell.sandbox, rooted=False)
    r = unrooted.run("su -c id")
    assert (r.exit_code, r.stderr) == (127, b"/system/bin/sh: su: not found\n")


def test_cpufreq_follows_governor_and_limits(shell):
    def read(cpu, name):
        return _out(shell, f"cat /sys/devices/system/cpu/cpu{cpu}/cpufreq/{name}").strip()

    available = [int(f) for f in read(4, "scaling_available_frequencies").split()]
    assert available[-1] == 2457600 and read(4, "scaling_setspeed") == "<unsupported>"
    r = shell.run(f"su -c 'echo 1224600 > {CPU4}/scaling_setspeed'")  # only under userspace
    assert r.exit_code == 1 and b"Invalid argument" in r.stderr
    assert shell.run(f"su -c 'echo turbo > {CPU4}/scaling_governor'").exit_code == 1
    _out(shell, f"su -c 'echo userspace > {CPU4}/scaling_governor && echo 1224600 > {CPU4}/scaling_setspeed'")
    assert [read(c, "scaling_cur_freq") for c in (4, 7, 0)] == ["1224600", "1224600", "1900800"]
    assert read(7, "scaling_governor") == "userspace"  # the whole policy, not one CPU
    _out(shell, f"su -c 'echo schedutil > {CPU4}/scaling_governor; echo 1532900 > {CPU4}/scaling_max_freq'")
    assert read(5, "scaling_cur_freq") == "1532900" and read(5, "scaling_setspeed") == "<unsupported>"
    _out(shell, f"su -c 'echo 1532900 > {CPU4}/scaling_min_freq && echo performance > {CPU4}/scaling_governor'")
    assert read(6, "scaling_cur_freq") == "1532900"
    _out(shell, f"su -c 'echo 300000 > {CPU4}/scaling_min_freq && echo 9999999 > {CPU4}/scaling_max_freq'")
    assert (read(4, "scaling_max_freq"), read(4, "scaling_cur_freq")) == ("2457600", "2457600")
    assert shell.run(f"su -c 'echo 1 > {CPU4}/cpuinfo_max_freq'").exit_code == 1


def test_shell_runs_sandbox_executables_with_taskset_and_timeout(shell, tmp_path):
    script = tmp_path / "data/local/tmp/s.sh"
    script.write_text("#!/bin/sh\necho ran \"$@\" in $(pwd); sleep 5\n")
    assert shell.run("/data/local/tmp/s.sh").exit_code == 126  # not executable yet
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    r = shell.run("cd /data/local/tmp && timeout -s 9 1 taskset f0 /data/local/tmp/s.sh x")
    assert r.exit_code == 124 and r.stdout == f"ran x in {tmp_path / 'data/local/tmp'}\n".encode()
    assert shell.run("taskset 100 /data/local/tmp/s.sh").exit_code == 1  # cpu 8 does not exist
    assert shell.run("timeout 1 /data/local/tmp/s.sh").exit_code == 2  # the harness sends -s 9


def test_shell_device_state_commands(shell):
    assert "[ro.product.model]: [Loopback]" in _out(shell, "getprop")
    assert _out(shell, "getprop ro.product.manufacturer") == "hwnas\n"
    assert "level: 87" in _out(shell, "dumpsys battery")
    assert _out(shell, "df -k /data/local/tmp").splitlines()[1].split()[3].isdigit()
    _out(shell, "logcat -c")
    shell.logcat_file.write_text("11-23 09:00:00.000   1   1 I ExecuTorch: x\n"
                                 "11-23 09:00:00.000   1   1 I other   : y\n")
    assert _out(shell, "logcat -d -s ExecuTorch").splitlines()[1:] == [
        "11-23 09:00:00.000   1   1 I ExecuTorch: x"]


@pytest.mark.adb
def test_daemon_through_real_adb_server(tmp_path):
    with loopback_session(tmp_path / "dev") as (server, daemon):
        device = Device.connect(server, daemon.serial)
        r = device.shell("getprop ro.product.model; cat /nope")
        assert (r.exit_code, r.stdout, r.stderr) == (1, "Loopback\n", "cat: /nope: No such file or directory\n")
        assert device.shell("exit_code_test_missing_cmd").exit_code == 127
        assert device.shell("su -c id").stdout.startswith("uid=0(root)")
        daemon.set_knobs(rooted=False)
        assert device.shell("su -c id").exit_code == 127
        # sync: SEND / STAT / RECV / LIST of a file larger than one adb packet
        payload = bytes(range(256)) * 4000
        (tmp_path / "blob").write_bytes(payload)
        device.push(tmp_path / "blob", "/data/local/tmp/blob", mode=0o600)
        mode, size = device.stat("/data/local/tmp/blob")
        assert size == len(payload) and stat.S_IMODE(mode) == 0o600
        assert device.stat("/data/local/tmp/none") is None
        assert (tmp_path / "dev/data/local/tmp/blob").read_bytes() == payload
        assert device.pull_bytes("/data/local/tmp/blob") == payload
        names = [f.path for f in device._dev.sync.list("/data/local/tmp")]
        assert "blob" in names and "hwnas" in names
        assert daemon.commands[0] == "getprop ro.product.model; cat /nope"
        assert daemon.unsupported == []


def test_unreadable_thermal_zones_are_permission_denied(tmp_path):
    from android_harness.device_state import _THERMAL_CMD, cpu_temperature_c, parse_thermal

    config = LoopbackConfig()
    build_sandbox(config, tmp_path)
    readable = Shell(tmp_path, props=config.props).run(_THERMAL_CMD)
    assert cpu_temperature_c(parse_thermal(readable.stdout.decode())) == 39.0
    denied = Shell(tmp_path, props=config.props, thermal_readable=False)
    result = denied.run(_THERMAL_CMD)
    assert result.exit_code == 2 and b"thermal_zone0/temp: Permission denied" in result.stderr
    assert b"thermal_zone0/type:cpu-0-0-usr" in result.stdout  # the zones' types still read
    assert cpu_temperature_c(parse_thermal(result.stdout.decode())) is None
    assert denied.run("cat /sys/class/thermal/thermal_zone1/temp").exit_code == 1


@pytest.mark.parametrize(("changes", "message"), [
    ({"runner_form": "tf9.9"}, "runner_form must be one of tf1.12"),
    ({"slow_first_runs": -1}, "slow_first_runs must be >= 0"),
    ({"slow_first_runs": 2, "slow_factor": 0.5}, "slow_factor >= 1"),
])
def test_fault_settings_are_checked(changes, message):
    from android_harness.loopback import Faults

    with pytest.raises(ValueError, match=message):
        Faults(**changes)
    assert Faults(runner_form="et0.6", slow_first_runs=3, slow_factor=4).env() == {
        "LOOPBACK_RUNNER_FORM": "et0.6", "LOOPBACK_SLOW_FIRST": "3:4"}
