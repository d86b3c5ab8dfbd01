"""AdbTarget (profiler/targets/adb.py) on the loopback device, with both device runners."""

from __future__ import annotations

import argparse

import pytest

from android_harness import Device
from android_harness.loopback.session import loopback_session
from android_harness.runners import parse_output
from profiler.runtimes import get_runtime
from profiler.targets import get_target
from profiler.targets.adb import adb_options, add_adb_arguments
from profiler.targets.base import DeviceLostError, RunnerError, RunSpec, TargetError

pytestmark = pytest.mark.slow  # exports models and starts runtimes


def _target(loopback, **options):
    server, daemon = loopback
    return get_target(daemon.serial, {"adb_port": server.port, "cooldown_poll_s": 0.1,
                                      "lock_clocks": "off", **options})


@pytest.mark.parametrize("runtime", ["tflite", "executorch"])
def test_measure_returns_runs_samples(loopback, tiny_models, runtime):
    rt = get_runtime(runtime)
    target = _target(loopback)
    fp = target.fingerprint()
    assert fp["device_id"].startswith("hwnas-loopback-") and fp["core_mask"] == "f0"
    assert set(fp["runner_sha256"]) == {"benchmark_model", "executor_runner"}
    target.prepare(rt, [tiny_models[runtime]])
    state = target.round_state()
    assert state["temperature_c"] == 39.0 and state["cpu_freq_khz"] == 2457600
    assert state["governor"] == "schedutil" and state["clocks_locked"] is False
    samples = target.measure(rt, tiny_models[runtime], RunSpec(warmup=1, runs=3))
    assert len(samples) == 3 and all(s > 0 for s in samples)
    _, daemon = loopback
    last = daemon.commands[-1] if runtime == "tflite" else daemon.commands[-2]
    assert last.startswith("cd /data/local/tmp/hwnas && timeout -s 9 120 taskset f0 /data/local/tmp/hwnas/")
    target.close()


def test_benchmark_model_extras_and_op_profile(loopback, tiny_models):
    rt = get_runtime("tflite")
    target = _target(loopback)
    target.prepare(rt, [tiny_models["tflite"]])
    m = target.measure_detailed(rt, tiny_models["tflite"], RunSpec(warmup=1, runs=4), profile=True)
    assert len(m.samples_us) == 4 and m.invocations == 2
    assert m.extra["init_us"] > 0 and m.extra["mem_delta_mb"] >= m.extra["mem_delta_init_mb"] >= 0
    assert m.extra["model_size_mb"] > 0 and m.etdump is None
    assert m.ops and all(op.name.startswith("Delegate/") and op.times_called == 1 for op in m.ops)
    assert any(op.node_type.startswith("Convolution (NHWC, F32)") for op in m.ops)
    assert m.ops[-1].cdf_percent == pytest.approx(100.0)
    _, daemon = loopback
    assert daemon.commands[-1].endswith("--enable_op_profiling=true")
    target.close()


def test_executor_runner_extras_and_etdump(loopback, tiny_models):
    from executorch.devtools.etdump.serialize import deserialize_from_etdump_flatcc

    _, daemon = loopback
    rt = get_runtime("executorch")
    target = _target(loopback)
    target.prepare(rt, [tiny_models["executorch"]])
    with pytest.raises(RunnerError, match="no event tracer.*EXECUTORCH_ENABLE_EVENT_TRACER"):
        target.measure_detailed(rt, tiny_models["executorch"], RunSpec(warmup=1, runs=2), profile=True)
    daemon.set_knobs(event_tracer=True)  # a devtools build
    try:
        m = target.measure_detailed(rt, tiny_models["executorch"], RunSpec(warmup=1, runs=2), profile=True)
    finally:
        daemon.set_knobs(event_tracer=False)
    assert len(m.samples_us) == 2 and m.extra["init_us"] > 0
    assert m.extra["planned_memory_bytes"] >= 2 * 32 * 32 * 32 * 4 and m.extra["planned_buffers"] == 1
    etdump = deserialize_from_etdump_flatcc(m.etdump)  # as the profiler side will read it
    executions = [e for run in etdump.run_data for e in run.events
                  if e.profile_event and e.profile_event.name == "Method::execute"]
    assert len(executions) == 1 + 2  # every execution of the invocation: warm-up and timed
    assert not (daemon.sandbox / "data/local/tmp/hwnas/profiles" / f"{tiny_models['executorch'].stem}.etdump").exists()
    target.close()


def test_all_same_runs_are_two_equal_samples(loopback, tiny_models):
    server, daemon = loopback
    rt = get_runtime("tflite")
    target = _target(loopback)
    target.prepare(rt, [tiny_models["tflite"]])
    daemon.set_knobs(timing_quantum_us=50_000)  # every run rounds up to 50 ms
    try:
        samples = target.measure(rt, tiny_models["tflite"], RunSpec(warmup=1, runs=4))
        text = Device.connect(server, daemon.serial).shell(
            "/data/local/tmp/hwnas/benchmark_model --graph="
            f"{target._remote[tiny_models['tflite']]} --num_runs=2 --min_secs=0 --warmup_runs=1 --warmup_min_secs=0").stdout
    finally:
        daemon.set_knobs(timing_quantum_us=0)
    assert samples == [50_000.0] * 4
    assert "INFO: count=2 curr=50000(all same) p5=50000 median=50000 p95=50000" in text
    assert parse_output("benchmark_model", text).samples_us == (50_000.0, 50_000.0)
    target.close()


def test_onnxruntime_is_refused(loopback):
    target = _target(loopback)
    with pytest.raises(TargetError, match="no phone runner"):
        target.prepare(get_runtime("onnxruntime"), [])


def test_crash_and_hang_are_runner_errors(loopback, tiny_models):
    _, daemon = loopback
    rt = get_runtime("tflite")
    target = _target(loopback)
    target.prepare(rt, [tiny_models["tflite"]])
    daemon.set_faults(crash_on=tiny_models["tflite"].stem)
    try:
        with pytest.raises(RunnerError, match=r"k3_e1-i32x32x32-o32-s1: benchmark_model exited with status 134"):
            target.measure(rt, tiny_models["tflite"], RunSpec(warmup=1, runs=2))
        daemon.set_faults(crash_on=None, hang_on=tiny_models["tflite"].stem)
        with pytest.raises(RunnerError, match="timed out after 2 s"):
            target.measure(rt, tiny_models["tflite"], RunSpec(warmup=1, runs=2, timeout_s=2))
    finally:
        daemon.set_faults(crash_on=None, hang_on=None)
    assert len(target.measure(rt, tiny_models["tflite"], RunSpec(warmup=1, runs=2))) == 2
    assert daemon.unsupported == []  # every command the harness sent is a form the device serves


def test_low_battery_refused_unless_forced(loopback, tiny_models):
    _, daemon = loopback
    battery = daemon.sandbox / "sys/class/power_supply/battery/capacity"
    battery.write_text("5\n")
    try:
        with pytest.raises(TargetError, match="battery at 5%"):
            _target(loopback).prepare(get_runtime("tflite"), [tiny_models["tflite"]])
        _target(loopback, force=True).prepare(get_runtime("tflite"), [tiny_models["tflite"]])
    finally:
        battery.write_text("87\n")


@pytest.mark.adb
def test_disconnect_is_device_lost(tmp_path, tiny_models):
    with loopback_session(tmp_path / "dev") as (server, daemon):
        rt = get_runtime("tflite")
        target = get_target(daemon.serial, {"adb_port": server.port, "lock_clocks": "off"})
        target.prepare(rt, [tiny_models["tflite"]])
        daemon.set_faults(drop_after_commands=len(daemon.commands))
        with pytest.raises(DeviceLostError, match="disconnected"):
            target.measure(rt, tiny_models["tflite"], RunSpec(warmup=1, runs=2))


def test_cli_options_reach_the_target():
    parser = argparse.ArgumentParser()
    add_adb_arguments(parser)
    args = parser.parse_args(["--lock-clocks", "require", "--lock-freq-khz", "1500000", "--runner",
                              "benchmark_model=/tmp/bm"])
    options = adb_options(args)
    assert (options["lock_clocks"], options["lock_freq_khz"]) == ("require", 1500000)
    assert options["runners"] == {"benchmark_model": "/tmp/bm"}
    assert adb_options(parser.parse_args([]))["lock_clocks"] == "auto"
    with pytest.raises(SystemExit):
        parser.parse_args(["--lock-clocks", "sometimes"])
