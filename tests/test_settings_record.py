"""One settings record per job (job.json, meta.json): a resume or --skip-existing under other
settings (a rebuilt runner, another temperature limit) names the differing fields."""

from __future__ import annotations

import logging

import pytest

from android_harness.files import sha256_file
from lut import load_lut
from profiler.api import profile_space
from profiler.protocol.config import IncompleteJobError, JobError
from profiler.protocol.settings import settings_diff

_FAST = dict(rounds=1, warmup=1, runs=2, progress=False, ops_limit=2)


def test_settings_diff_names_dotted_fields():
    old = {"target": {"max_temp_c": 45.0, "runner_sha256": "a" * 64}, "ops": ["x"]}
    new = {"target": {"max_temp_c": 50.0, "runner_sha256": "a" * 64}, "ops": ["x"]}
    assert settings_diff(old, new) == ["target.max_temp_c: 45.0 → 50.0"]
    assert settings_diff(old, old) == []
    assert settings_diff({"a": 1}, {"b": 1}) == ["a: 1 → null", "b: null → 1"]


def test_a_resume_with_a_rebuilt_runner_is_refused(loopback, tmp_path):
    server, daemon = loopback
    rebuilt = tmp_path / "benchmark_model"
    rebuilt.write_bytes((daemon.sandbox / "data/local/tmp/hwnas/benchmark_model").read_bytes() + b"# rebuilt\n")
    kw = dict(device=daemon.serial, out=tmp_path / "luts", cache_root=tmp_path / "exports", **_FAST)
    options = {"adb_port": server.port, "cooldown_poll_s": 0.1}
    daemon.set_faults(crash_on="k3_e1-i16")  # the first job ends incomplete: its work dir waits
    try:
        with pytest.raises(IncompleteJobError):
            profile_space("fbnet", "tflite", target_options=options, **kw)
    finally:
        daemon.set_faults(crash_on=None)
    again = {**options, "runners": {"benchmark_model": str(rebuilt)}}
    with pytest.raises(JobError, match=r"target\.runner_sha256: \w+\.\.\. → \w+\.\.\..*--fresh"):
        profile_space("fbnet", "tflite", target_options=again, retry_failed=True, **kw)
    result = profile_space("fbnet", "tflite", target_options=again, fresh=True, **kw)
    meta = load_lut(result.lut_dir).meta
    digest = sha256_file(rebuilt)
    assert meta["settings"]["target"]["runner_sha256"] == digest  # the pushed runner's, not the old one
    assert meta["device"]["runner_sha256"]["benchmark_model"] == digest
    assert meta["settings"]["target"]["max_temp_c"] == 45.0 and meta["settings"]["target"]["clock_lock"] == "auto"


def test_skip_existing_compares_the_whole_record(loopback, tmp_path, caplog):
    server, daemon = loopback
    kw = dict(device=daemon.serial, out=tmp_path / "luts", cache_root=tmp_path / "exports", skip_existing=True,
              **_FAST)  # fmt: skip
    options = {"adb_port": server.port, "cooldown_poll_s": 0.1}
    first = profile_space("fbnet", "tflite", target_options=options, **kw)
    assert not first.reused
    assert profile_space("fbnet", "tflite", target_options=options, **kw).reused
    with caplog.at_level(logging.INFO, logger="profiler.protocol.settings"):
        hotter = profile_space("fbnet", "tflite", target_options={**options, "max_temp_c": 50.0}, **kw)
    assert not hotter.reused and hotter.lut_dir.name == "v2"
    assert "target.max_temp_c: 45.0 → 50.0" in caplog.text
