"""The host measures each round in a process of its own (profiler.targets.host_worker)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from lut.store import load_lut
from profiler.export import ExportCache, ExportItem
from profiler.protocol import JobSettings, ProtocolConfig, profile_ops
from profiler.runtimes import get_runtime
from profiler.targets.base import RunnerError, RunSpec
from profiler.targets.host import HostTarget
from profiler.targets.host_worker import cold_copies, last_level_cache_bytes
from search.space import get_space

SPACE = "fbnet-r32-w0.35"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    rt = get_runtime("onnxruntime")
    op = next(op for op in get_space(SPACE).unique_ops() if not op.is_identity)
    item = ExportItem.for_op(op)
    report = ExportCache(rt, tmp_path_factory.mktemp("exports")).ensure([item], progress=False)
    return rt, report.paths[item.key]


def test_each_round_measures_in_a_fresh_process(model: tuple) -> None:
    rt, path = model
    target = HostTarget()
    try:
        pids = []
        for _ in range(2):
            target.round_state()
            first = target.measure_detailed(rt, path, RunSpec(warmup=1, runs=3))
            second = target.measure_detailed(rt, path, RunSpec(warmup=1, runs=3))
            assert first.extra["pid"] == second.extra["pid"]  # one process for the whole round
            assert len(first.samples_us) == 3 and min(first.samples_us) > 0
            assert first.extra["load_us"] > 0 and first.extra["memory_kb"] >= 0
            pids.append(int(first.extra["pid"]))
        assert pids[0] != pids[1] and os.getpid() not in pids
    finally:
        target.close()
    with pytest.raises(ProcessLookupError):  # close() ended the last round's process
        os.kill(pids[1], 0)


def test_in_process_measurement_when_asked(model: tuple) -> None:
    rt, path = model
    target = HostTarget(process_per_round=False)
    target.round_state()
    m = target.measure_detailed(rt, path, RunSpec(warmup=1, runs=3))
    assert int(m.extra["pid"]) == os.getpid() and target.round_process == "one"


def test_a_crashed_or_hung_worker_fails_that_op_round_only(model: tuple) -> None:
    rt, path = model
    target = HostTarget()
    try:
        target.round_state()
        pid = int(target.measure_detailed(rt, path, RunSpec(warmup=1, runs=3)).extra["pid"])
        os.kill(pid, signal.SIGKILL)  # as if the runtime had crashed the process
        with pytest.raises(RunnerError, match=r"measuring process ended \(signal SIGKILL\)"):
            target.measure_detailed(rt, path, RunSpec(warmup=1, runs=3))
        again = target.measure_detailed(rt, path, RunSpec(warmup=1, runs=3))  # a new worker
        assert int(again.extra["pid"]) != pid
        # a run past its timeout is killed (in-process, a native call could not be interrupted)
        with pytest.raises(RunnerError, match=r"no result within 0\.5 s"):
            target.measure_detailed(rt, path, RunSpec(warmup=1, runs=10**7, timeout_s=0.5))
        with pytest.raises(RunnerError, match="failed to run missing"):  # the runtime's own error
            target.measure_detailed(rt, path.with_name("missing.onnx"), RunSpec(warmup=1, runs=3))
        assert len(target.measure_detailed(rt, path, RunSpec(warmup=1, runs=3)).samples_us) == 3
    finally:
        target.close()


def test_the_lut_records_how_rounds_were_run(tmp_path: Path) -> None:
    settings = JobSettings("onnxruntime", protocol=ProtocolConfig(rounds=2, warmup=1, runs=3), ops_limit=2,
                           out=tmp_path, cache_root=tmp_path / "exports", progress=False)  # fmt: skip
    result = profile_ops(HostTarget(), SPACE, settings)
    lut = load_lut(result.lut_dir)
    assert lut.meta["protocol"]["round_process"] == "fresh"
    assert lut.meta["settings"]["target"] == {"name": "host", "round_process": "fresh"}  # what a resume matches


def test_cold_copies_hold_a_networks_weights_or_exceed_twice_the_last_level_cache() -> None:
    assert cold_copies(1 << 20, 16 << 20) == 16  # 16 copies of 1 MiB hold 16 MiB
    assert cold_copies(7 << 20, 16 << 20) == 3 and cold_copies(40 << 20, 16 << 20) == 2  # at least two
    assert cold_copies(1 << 10, 16 << 20) == 64 and cold_copies(1 << 10, 16 << 20, most=8) == 8  # at most `most`
    assert cold_copies(1 << 20, 0, cache_bytes=8 << 20) == 16  # 0: twice the last-level cache
    assert cold_copies(1 << 20, 0) == cold_copies(1 << 20, 2 * last_level_cache_bytes())


def test_a_cold_measurement_cycles_the_copies_its_spec_asks_for(model: tuple) -> None:
    rt, path = model
    size = path.stat().st_size
    target = HostTarget()
    try:
        target.round_state()
        spec = RunSpec(warmup=1, runs=4, cache="cold", cold_bytes=3 * size)
        assert target.measure_detailed(rt, path, spec).extra["cold_copies"] == 3
        m = target.measure_detailed(rt, path, RunSpec(warmup=1, runs=4, cache="cold", cold_bytes=0))
        assert m.extra["cold_copies"] == cold_copies(size, 0) and len(m.samples_us) == 4
    finally:
        target.close()
    with pytest.raises(ValueError, match="cold_bytes"):
        RunSpec(cache="cold", cold_bytes=-1)
