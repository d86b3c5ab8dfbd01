"""Phone timing: a time-based warm-up per device command and many samples per command, the phone's
power state in every round, op-rounds taken too hot re-measured (and counted in the LUT)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from android_harness import Device
from android_harness.device_state import (
    parse_battery,
    parse_battery_sysfs,
    parse_screen,
    read_battery,
    read_screen,
)
from android_harness.execute import _split_launches
from android_harness.runners import parse_output
from lut import load_lut
from profiler.api import profile_space
from profiler.protocol.config import IncompleteJobError
from profiler.runtimes import get_runtime
from profiler.targets import get_target
from profiler.targets.base import RunSpec

DATA = Path(__file__).parent / "data" / "runners"


def test_power_state_parsers():
    dumpsys = ("Current Battery Service state:\n  AC powered: false\n  USB powered: true\n"
               "  Wireless powered: false\n  status: 2\n  level: 64\n  temperature: 312\n")
    assert parse_battery(dumpsys) == parse_battery(dumpsys)  # frozen dataclass
    b = parse_battery(dumpsys)
    assert (b.level_pct, b.temperature_c, b.charging, b.source) == (64, 31.2, True, "dumpsys")
    b = parse_battery(dumpsys.replace("USB powered: true", "USB powered: false").replace("status: 2", "status: 3"))
    assert b.charging is False
    assert parse_battery("Can't find service: battery\n").level_pct is None
    sysfs = ("/sys/class/power_supply/battery/capacity:91\n/sys/class/power_supply/battery/temp:287\n"
             "/sys/class/power_supply/battery/status:Discharging\n/sys/class/power_supply/usb/online:0\n")
    b = parse_battery_sysfs(sysfs)
    assert (b.level_pct, b.temperature_c, b.charging, b.source) == (91, 28.7, False, "sysfs")
    assert parse_battery_sysfs(sysfs.replace("usb/online:0", "usb/online:1")).charging is True
    assert parse_screen("Power Manager State:\n  mWakefulness=Asleep\n") is False
    assert parse_screen("  mWakefulness=Awake\n") is True
    assert parse_screen("Display Power: state=ON\n") is True and parse_screen("nothing") is None


def test_back_to_back_launches_split_into_their_reports():
    one, two = (DATA / "benchmark_model_count2_tc2.txt").read_text(), (DATA / "benchmark_model_info_prefix.txt").read_text()
    chunks = _split_launches(one + two, 2)
    assert len(chunks) == 2
    assert [parse_output("benchmark_model", c).avg_us for c in chunks] == [
        parse_output("benchmark_model", one).avg_us, parse_output("benchmark_model", two).avg_us]
    assert _split_launches(one, 2) == [one]  # a launch missing: one chunk, the caller refuses it


@pytest.mark.slow
def test_power_state_from_dumpsys_or_sysfs(loopback):
    server, daemon = loopback
    device = Device.connect(server, daemon.serial)
    battery, screen = read_battery(device), read_screen(device)
    assert (battery.level_pct, battery.temperature_c, battery.charging, battery.source) == (87, 30.0, False, "dumpsys")
    assert screen == (False, "dumpsys")
    sandbox = daemon.sandbox / "sys/class"
    (sandbox / "power_supply/battery/status").write_text("Charging\n")
    (sandbox / "power_supply/usb/online").write_text("1\n")
    (sandbox / "backlight/panel0-backlight/brightness").write_text("128\n")
    daemon.set_faults(no_dumpsys=True)  # a build that hides the services: sysfs answers
    try:
        battery, screen = read_battery(device), read_screen(device)
        target = get_target(daemon.serial, {"adb_port": server.port, "lock_clocks": "off"})
        try:
            state = target.round_state()
        finally:
            target.close()
    finally:
        daemon.set_faults(no_dumpsys=False)
        (sandbox / "power_supply/battery/status").write_text("Discharging\n")
        (sandbox / "power_supply/usb/online").write_text("0\n")
        (sandbox / "backlight/panel0-backlight/brightness").write_text("0\n")
    assert (battery.level_pct, battery.temperature_c, battery.charging, battery.source) == (87, 30.0, True, "sysfs")
    assert screen == (True, "sysfs")
    assert state["battery_temp_c"] == 30.0 and state["charging"] is True and state["screen_on"] is True
    assert state["power_source"] == "battery:sysfs,screen:sysfs"
    assert daemon.unsupported == []


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["tflite", "executorch"])
def test_one_device_command_per_measurement_with_a_time_based_warm_up(loopback, tiny_models, runtime):
    server, daemon = loopback
    rt = get_runtime(runtime)
    target = get_target(daemon.serial, {"adb_port": server.port, "lock_clocks": "off", "warmup_s": 0.2})
    try:
        target.prepare(rt, [tiny_models[runtime]])
        before = len(daemon.commands)
        t0 = time.perf_counter()
        m = target.measure_detailed(rt, tiny_models[runtime], RunSpec(warmup=1, runs=6))
        elapsed = time.perf_counter() - t0
        runs = [c for c in daemon.commands[before:] if "--graph=" in c or "--model_path=" in c]
        again = target.measure_detailed(rt, tiny_models[runtime], RunSpec(warmup=1, runs=6))
    finally:
        target.close()
    assert len(m.samples_us) == 6 and min(m.samples_us) > 0 and len(again.samples_us) == 6
    assert len(runs) == 1  # one device command, its warm-up included
    if runtime == "tflite":  # 3 launches of 2 timed runs; the first warms up for 0.2 s
        assert elapsed >= 0.2
        assert runs[0].count("--graph=") == 3 and m.invocations == 3
        assert runs[0].count("--warmup_min_secs=0.2") == 1 and runs[0].count("--warmup_min_secs=0 ") == 2
        assert m.extra["warmup_runs_first_launch"] >= 1
    else:  # an untimed launch sized from the estimate, the log cleared, then the timed launch
        assert runs[0].count("--model_path=") == 2 and "logcat -c" in runs[0]
        assert m.extra["warm_executions"] == 200  # no estimate yet: as if 1 ms per execution
        # the second measurement sizes its warm-up from the first one's time per execution
        assert again.extra["warm_executions"] == pytest.approx(0.2e6 / sorted(m.samples_us)[3], rel=0.3)


@pytest.mark.slow
def test_op_rounds_taken_too_hot_are_measured_again_and_counted(loopback, tmp_path, tiny_space):
    server, daemon = loopback
    zone = daemon.sandbox / "sys/class/thermal/thermal_zone1/temp"
    options = {"adb_port": server.port, "cooldown_poll_s": 0.05, "cooldown_timeout_s": 0.3, "max_remeasure": 2,
               "warmup_s": 0.0}  # fmt: skip
    kw = {"device": daemon.serial, "out": tmp_path, "ops_limit": 2, "rounds": 1, "warmup": 1, "runs": 2, "progress": False}
    zone.write_text("52000\n")  # above the 45 °C limit for good: every op-round is dropped
    try:
        with pytest.raises(IncompleteJobError, match="measured in bad conditions 3 times") as info:
            profile_space(tiny_space, "tflite", target_options=options, **kw)
    finally:
        zone.write_text("39000\n")
    assert "52.0 °C, above the 45 °C limit" in str(info.value)

    # hot for its first op-rounds only: those are measured again once it has cooled
    zone.write_text("52000\n")
    dropped = next(tmp_path.rglob(".partial")) / "remeasured.jsonl"
    first = len(dropped.read_text().splitlines())
    cooled = threading.Event()

    def cool_after_two() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not cooled.is_set():
            if len(dropped.read_text().splitlines()) >= first + 2:  # two more op-rounds dropped
                zone.write_text("39000\n")
                cooled.set()
            time.sleep(0.02)

    watcher = threading.Thread(target=cool_after_two)
    watcher.start()
    try:
        result = profile_space(tiny_space, "tflite", target_options=options, retry_failed=True, **kw)
    finally:
        cooled.set()
        watcher.join()
        zone.write_text("39000\n")
    lut = load_lut(result.lut_dir)
    remeasured = lut.meta["remeasured"]
    assert result.num_failed == 0 and remeasured["limit_per_op"] == 2
    assert remeasured["op_rounds"] >= first + 2 and sum(remeasured["by_op"].values()) == remeasured["op_rounds"]
    assert any("above the 45 °C limit" in r for r in remeasured["reasons"])
    assert lut.meta["settings"]["target"]["max_remeasure"] == 2


def test_cache_sizes_from_sysfs_and_the_mixed_rule():
    from android_harness.device_state import parse_caches, private_cache_bytes
    from profiler.protocol.plan import PRIVATE_CACHE_BYTES, plan_ops, streamed_ops

    text = "".join(f"/sys/devices/system/cpu/cpu4/cache/index{i}/{name}:{value}\n" for i, files in enumerate([
        {"level": 1, "type": "Data", "size": "64K", "shared_cpu_list": "4"},
        {"level": 2, "type": "Unified", "size": "2048K", "shared_cpu_list": "4-7"},
        {"level": 3, "type": "Unified", "size": "4M", "shared_cpu_list": "0-7"},
    ]) for name, value in files.items())
    caches = parse_caches(text)
    assert [c["size_bytes"] for c in caches[4]] == [64 << 10, 2 << 20, 4 << 20]
    assert private_cache_bytes(caches, 4) == 2 << 20 and private_cache_bytes(caches, 0) is None
    timed, _, net = plan_ops("fbnet")
    default = streamed_ops(timed, net)
    assert streamed_ops(timed, net, private_cache_bytes=PRIVATE_CACHE_BYTES) == default
    small, large = streamed_ops(timed, net, private_cache_bytes=64 << 10), streamed_ops(timed, net, private_cache_bytes=8 << 20)
    assert large < default < small  # a smaller L2 streams more ops' weights


@pytest.mark.slow
def test_the_phones_own_l2_sets_the_mixed_rule(loopback):
    from profiler.protocol.config import JobSettings
    from profiler.protocol.plan import PRIVATE_CACHE_BYTES, plan_job

    server, daemon = loopback
    sizes = [daemon.sandbox / f"sys/devices/system/cpu/cpu{c}/cache/index2/size" for c in range(8)]

    def plan():
        target = get_target(daemon.serial, {"adb_port": server.port, "lock_clocks": "off"})
        try:
            fp = target.fingerprint()
            return fp, plan_job(target, "fbnet", JobSettings("tflite"))
        finally:
            target.close()

    fp, default = plan()
    assert default.private_cache_bytes == PRIVATE_CACHE_BYTES == 512 << 10 and "sysfs" in default.private_cache_source
    assert {c["level"] for c in fp["cpu_caches"]["4"]} == {1, 2, 3} and fp["private_cache_bytes"] == 512 << 10
    for f in sizes:
        f.write_text("64K\n")
    try:
        _, small = plan()
    finally:
        for f in sizes:
            f.write_text("512K\n")
    assert small.private_cache_bytes == 64 << 10
    def cold(p):
        return {k for k, v in p.per_op.items() if v != "warm"}

    assert cold(small) > cold(default)


def test_runner_version_where_the_build_prints_one():
    from android_harness.runners import runner_version

    text = (DATA / "benchmark_model_count2_tc2.txt").read_text()
    assert parse_output("benchmark_model", text).version is None  # released builds print none
    # a build that links and prints its runtime's version (e.g. a custom runner calling TfLiteVersion())
    assert parse_output("benchmark_model", "INFO: Using TFLite version: 2.16.1\n" + text).version == "2.16.1"
    assert runner_version("I 00:00:00.000 executor_runner.cpp:80] ExecuTorch version: 0.7.0") == "0.7.0"
    assert runner_version("Min runs duration (seconds): [0]") is None


@pytest.mark.slow
def test_conditions_of_an_op_round_hot_or_below_the_locked_clock(loopback):
    server, daemon = loopback
    target = get_target(daemon.serial, {"adb_port": server.port, "max_temp_c": 45.0})
    cur = daemon.sandbox / "sys/devices/system/cpu/cpu5/cpufreq/scaling_cur_freq"
    zone = daemon.sandbox / "sys/class/thermal/thermal_zone1/temp"
    try:
        assert target.fingerprint()["clock_lock"]["locked"]  # the loopback device is rooted: clocks locked
        assert target.op_conditions() is None
        locked = cur.read_text()
        cur.write_text("1200000\n")  # the kernel throttled a measured core
        throttled = target.op_conditions()
        cur.write_text(locked)
        zone.write_text("47500\n")
        hot = target.op_conditions()
    finally:
        zone.write_text("39000\n")
        target.close()
    assert throttled == "cpu5 at 1200000 kHz, below its locked 2457600 kHz (throttled)"
    assert hot == "CPU at 47.5 °C, above the 45 °C limit (--max-temp-c)"
