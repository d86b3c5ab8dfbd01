"""Jobs on a loopback device with the faults real phones have (android_harness.loopback.Faults):
runners that print an older release's output, thermal zones that cannot be read, a governor
whose first runs are slow."""

from __future__ import annotations

import statistics
import subprocess
import sys

import pytest

from android_harness import Device
from android_harness.doctor import run_checks
from android_harness.loopback.shims._common import RUNNER_FORMS
from lut import load_lut
from profiler.api import profile_space
from profiler.preflight import PreflightError

pytestmark = pytest.mark.slow  # exports models and times them through the device runners

_FAST = dict(rounds=1, warmup=1, runs=3, progress=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("exports")


def _options(server):
    return {"adb_port": server.port, "cooldown_poll_s": 0.1}


def _profile(loopback, cache, out, runtime="tflite", **kw):
    server, daemon = loopback
    args = {**_FAST, **kw}
    return profile_space("fbnet", runtime, device=daemon.serial, ops_limit=2, out=out, cache_root=cache,
                         target_options=_options(server), **args)


@pytest.mark.parametrize(("runtime", "form"), [("tflite", "tf1.12"), ("tflite", "tf1.15"),
                                               ("tflite", "tf2.0"), ("executorch", "et0.6")])
def test_a_job_against_an_older_runner_form_writes_a_lut(loopback, cache, tmp_path, runtime, form):
    _, daemon = loopback
    daemon.set_faults(runner_form=form)
    try:
        result = _profile(loopback, cache, tmp_path, runtime)
    finally:
        daemon.set_faults(runner_form=None)
    assert result.num_failed == 0 and result.num_ops >= 1
    lut = load_lut(result.lut_dir)
    assert (lut.table["status"] == "ok").all()
    per_op = lut.samples.groupby("op_key")["latency_us"]
    assert (per_op.count() == _FAST["runs"]).all() and (lut.samples["latency_us"] > 0).all()
    runner = "benchmark_model" if runtime == "tflite" else "executor_runner"
    assert RUNNER_FORMS[form][0] == runner
    if form == "et0.6":  # no per-execution lines: one launch per sample, its mean
        assert "0.6-1.2 build" in lut.meta["device"]["sample_semantics"][runner]
        launches = [c for c in daemon.commands if "--model_path=" in c and "k3_e1-i8x8x8" not in c]
        assert len(launches) >= result.num_ops * _FAST["runs"]
    else:  # the shim printed the old summary line
        assert not any("--print_output" in c for c in daemon.commands)


def test_an_executorch_0_4_runner_stops_the_job_at_its_preflight(loopback, cache, tmp_path):
    _, daemon = loopback
    daemon.set_faults(runner_form="et0.4")
    try:
        with pytest.raises(PreflightError, match=r"(?s)run executor_runner.*ExecuTorch 0.4-0.5 build.*0.6 or newer"):
            _profile(loopback, cache, tmp_path, "executorch")
    finally:
        daemon.set_faults(runner_form=None)
    assert not any(tmp_path.rglob("meta.json"))


def test_unreadable_thermal_zones_record_temperature_as_missing(loopback, cache, tmp_path):
    server, daemon = loopback
    daemon.set_faults(thermal_unreadable=True)
    try:
        checks = {c.name: c for c in run_checks(Device.connect(server, daemon.serial),
                                                work_dir="/data/local/tmp/hwnas")}
        result = _profile(loopback, cache, tmp_path, rounds=2)
    finally:
        daemon.set_faults(thermal_unreadable=False)
    assert not checks["temperature"].ok and checks["temperature"].detail == "no readable thermal zone"
    assert result.num_failed == 0
    lut = load_lut(result.lut_dir)
    assert lut.samples["temperature_c"].isna().all() and len(lut.samples) > 0
    assert (lut.samples["latency_us"] > 0).all()


def test_slow_first_runs_are_dropped_by_the_warm_up(loopback, cache, tmp_path):
    # The first 3 inferences of every launch take 30x as long. With a warm-up of 3 the LUT stays
    # near the fast values; with none (the control) every benchmark_model sample is slow.
    _, daemon = loopback

    def medians(out, warmup, **faults):
        daemon.set_faults(**faults)
        try:
            result = _profile(loopback, cache, out, warmup=warmup, runs=4)
        finally:
            daemon.set_faults(slow_first_runs=0, slow_factor=1.0)
        assert result.num_failed == 0
        return load_lut(result.lut_dir).samples.groupby("op_key")["latency_us"].median()

    fast = medians(tmp_path / "fast", 3)
    warmed = medians(tmp_path / "warmed", 3, slow_first_runs=3, slow_factor=30.0)
    cold = medians(tmp_path / "cold", 0, slow_first_runs=3, slow_factor=30.0)
    ratio_warmed = statistics.median((warmed / fast).tolist())
    ratio_cold = statistics.median((cold / fast).tolist())
    print(f"median LUT value / fast: warmed {ratio_warmed:.2f}, without warm-up {ratio_cold:.2f}")
    assert ratio_warmed < 3.0 and ratio_cold > 10.0


@pytest.mark.parametrize(("flags", "error"), [
    (["--runner-form", "tf9.9"], "invalid choice: 'tf9.9'"),
    (["--slow-first-runs", "3", "x"], "not a number: 'x'"),
    (["--slow-first-runs", "3"], "expected 2 arguments"),
])
def test_loopback_start_refuses_bad_fault_flags(flags, error):
    out = subprocess.run([sys.executable, "-m", "android_harness", "loopback", "start", *flags],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and error in out.stderr
