"""AdbTarget (profiler/targets/adb.py) on the loopback device, with both device runners."""

from __future__ import annotations

import pytest

from android_harness.loopback.session import loopback_session
from profiler.runtimes import get_runtime
from profiler.targets import get_target
from profiler.targets.base import DeviceLostError, RunnerError, RunSpec, TargetError
from search.space.ops import Op

pytestmark = pytest.mark.slow  # exports models and starts runtimes


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    with loopback_session(tmp_path_factory.mktemp("device")) as pair:
        yield pair


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    op = Op("k3_e1", 8, 8, 8, 8, 1)
    files = {}
    for name in ("tflite", "executorch"):
        rt = get_runtime(name)
        path = out / f"{op.key}{rt.suffix}"
        rt.export(op.build(), op.example_input(), path)
        files[name] = path
    return files


def _target(session, **options):
    server, daemon = session
    return get_target(daemon.serial, {"adb_port": server.port, "cooldown_poll_s": 0.1, **options})


@pytest.mark.parametrize("runtime", ["tflite", "executorch"])
def test_measure_returns_runs_samples(session, models, runtime):
    rt = get_runtime(runtime)
    target = _target(session)
    fp = target.fingerprint()
    assert fp["device_id"].startswith("hwnas-loopback-") and fp["core_mask"] == "f0"
    assert set(fp["runner_sha256"]) == {"benchmark_model", "executor_runner"}
    target.prepare(rt, [models[runtime]])
    state = target.round_state()
    assert state["temperature_c"] == 39.0 and state["cpu_freq_khz"] == 2457600
    assert state["governor"] == "schedutil"
    samples = target.measure(rt, models[runtime], RunSpec(warmup=1, runs=3))
    assert len(samples) == 3 and all(s > 0 for s in samples)
    _, daemon = session
    last = daemon.commands[-1] if runtime == "tflite" else daemon.commands[-2]
    assert last.startswith("timeout -s 9 120 taskset f0 /data/local/tmp/hwnas/")
    target.close()


def test_onnxruntime_is_refused(session, models):
    target = _target(session)
    with pytest.raises(TargetError, match="no phone runner"):
        target.prepare(get_runtime("onnxruntime"), [])


def test_crash_and_hang_are_runner_errors(session, models):
    server, daemon = session
    rt = get_runtime("tflite")
    target = _target(session)
    target.prepare(rt, [models["tflite"]])
    daemon.set_faults(crash_on=models["tflite"].stem)
    try:
        with pytest.raises(RunnerError, match=r"k3_e1-i8x8x8-o8-s1: benchmark_model exited with status 134"):
            target.measure(rt, models["tflite"], RunSpec(warmup=1, runs=2))
        daemon.set_faults(crash_on=None, hang_on=models["tflite"].stem)
        with pytest.raises(RunnerError, match="timed out after 2 s"):
            target.measure(rt, models["tflite"], RunSpec(warmup=1, runs=2, timeout_s=2))
    finally:
        daemon.set_faults(crash_on=None, hang_on=None)
    assert len(target.measure(rt, models["tflite"], RunSpec(warmup=1, runs=2))) == 2


def test_low_battery_refused_unless_forced(session, models):
    _, daemon = session
    battery = daemon.sandbox / "sys/class/power_supply/battery/capacity"
    battery.write_text("5\n")
    try:
        with pytest.raises(TargetError, match="battery at 5%"):
            _target(session).prepare(get_runtime("tflite"), [models["tflite"]])
        _target(session, force=True).prepare(get_runtime("tflite"), [models["tflite"]])
    finally:
        battery.write_text("87\n")


def test_disconnect_is_device_lost(tmp_path, models):
    with loopback_session(tmp_path / "dev") as (server, daemon):
        rt = get_runtime("tflite")
        target = get_target(daemon.serial, {"adb_port": server.port})
        target.prepare(rt, [models["tflite"]])
        daemon.set_faults(drop_after_commands=len(daemon.commands))
        with pytest.raises(DeviceLostError, match="disconnected"):
            target.measure(rt, models["tflite"], RunSpec(warmup=1, runs=2))
