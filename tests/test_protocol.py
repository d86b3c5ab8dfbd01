"""The resumable measurement job on the host: interruption, resume, export cache, failures."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from lut import LutError, list_luts, list_versions, load_lut
from profiler.api import measure_archs
from profiler.export import ExportCache
from profiler.protocol import (
    IncompleteJobError,
    JobError,
    JobSettings,
    ProtocolConfig,
    op_cache_states,
    plan_ops,
    profile_ops,
    streamed_ops,
)
from profiler.runtimes import get_runtime
from profiler.targets import RunSpec, get_target
from profiler.targets.base import RunnerError
from profiler.targets.host import HostTarget
from search.space import Arch, Op, get_space, network_bytes, overhead_op, parse_op_key

SPACE = "fbnet-r32-w0.35"  # tiny shapes
CONFIG = ProtocolConfig(rounds=2, warmup=1, runs=3, seed=0)
OPS_LIMIT = 3


class InterruptingHost(HostTarget):
    """The real host target, interrupted (as by Ctrl-C) after `stop_after` measurements."""

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__()
        self.stop_after = stop_after
        self.calls: list[str] = []

    def measure_detailed(self, runtime, model_file: Path, spec: RunSpec, **kw):
        if self.stop_after is not None and len(self.calls) == self.stop_after:
            raise KeyboardInterrupt
        self.calls.append(Path(model_file).stem)
        return super().measure_detailed(runtime, model_file, spec, **kw)


class FlakyHost(HostTarget):
    """The real host target whose runner faults on op `key` the first `faults` times."""

    def __init__(self, key: str, faults: int) -> None:
        super().__init__()
        self.key, self.faults, self.calls = key, faults, []

    def measure_detailed(self, runtime, model_file: Path, spec: RunSpec, **kw):
        stem = Path(model_file).stem
        self.calls.append(stem)
        if stem == self.key and self.calls.count(stem) <= self.faults:
            raise RunnerError(f"runner crashed (signal 11) on {stem}")
        return super().measure_detailed(runtime, model_file, spec, **kw)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")


def test_plan_ops_skips_identities_and_adds_one_overhead_per_shape() -> None:
    timed, identity, net = plan_ops("fbnet")
    space_ops = get_space("fbnet").unique_ops()
    assert {op.key for op in identity} == {op.key for op in space_ops if op.is_identity}
    assert len(identity) > 0 and not any(op.is_identity for op in timed)
    overheads = [op for op in timed if op.block == "overhead"]
    assert {op.key for op in overheads} == {overhead_op(op).key for op in space_ops if not op.is_identity}
    assert net.key == "overhead-i3x224x224-o3-s1" and net in timed


def test_job_settings_from_flat_keywords_fill_the_protocol() -> None:
    settings = JobSettings.from_kwargs("tflite", threads=2, rounds=3, seed=7, cache="warm", ops_limit=4)
    assert settings == JobSettings("tflite", threads=2, ops_limit=4,
                                   protocol=ProtocolConfig(rounds=3, seed=7, cache="warm"))  # fmt: skip
    assert settings.updated(runs=5).protocol == ProtocolConfig(rounds=3, runs=5, seed=7, cache="warm")
    with pytest.raises(TypeError, match="unknown job settings: thread"):
        JobSettings.from_kwargs("tflite", thread=2)
    with pytest.raises(ValueError, match="does not support dtype 'int8'"):
        JobSettings("tflite", dtype="int8").make_runtime()


def test_profile_space_takes_a_runtime_or_settings_not_two_different_ones(tmp_path: Path) -> None:
    from profiler.api import preflight_space

    with pytest.raises(ValueError, match="differs from settings.runtime"):
        preflight_space(SPACE, "tflite", settings=JobSettings("onnxruntime"))
    with pytest.raises(TypeError, match="name a runtime"):
        preflight_space(SPACE)


@pytest.mark.slow
def test_resume_after_interruption_remeasures_nothing_done(tmp_path: Path, cache: Path) -> None:
    kw = dict(out=tmp_path, protocol=CONFIG, ops_limit=OPS_LIMIT, cache_root=cache, progress=False)
    first = InterruptingHost(stop_after=4)
    with pytest.raises(KeyboardInterrupt):
        profile_ops(first, SPACE, JobSettings("onnxruntime", **kw))
    device = first.fingerprint()["device_id"]
    partial = tmp_path / device / SPACE / "onnxruntime-t1" / ".partial"
    saved = pd.read_csv(partial / "samples.csv")
    assert len(saved) == 4 * CONFIG.runs  # every finished op-round is on disk
    # a crash mid-write leaves a torn line: it must be dropped, not parsed
    with open(partial / "samples.csv", "a") as f:
        f.write(f"{first.calls[0]},1,0,12")

    second = InterruptingHost()
    result = profile_ops(second, SPACE, JobSettings("onnxruntime", **kw))
    n_timed = len(plan_ops(SPACE, OPS_LIMIT)[0])
    assert result.skipped == 4 and result.exported == 0
    assert len(second.calls) == n_timed * CONFIG.rounds - 4
    assert not partial.exists()
    lut = load_lut(result.lut_dir)
    assert lut.meta["counts"]["samples"] == n_timed * CONFIG.rounds * CONFIG.runs
    merged = lut.samples.merge(saved, on=["op_key", "round", "sample"], suffixes=("", "_first"))
    assert len(merged) == len(saved)  # the first run's samples are kept as they were
    assert (merged["latency_us"] - merged["latency_us_first"]).abs().max() < 1e-6
    assert (lut.table["status"] == "ok").all() and (lut.table["n"] == CONFIG.rounds * CONFIG.runs).all()
    assert "load_avg_1m" in lut.samples.columns
    assert lut.meta["overhead_us"] == lut.table.loc["overhead-i3x32x32-o3-s1", "median_us"]


@pytest.mark.slow
def test_changed_settings_do_not_silently_resume(tmp_path: Path, cache: Path) -> None:
    kw = dict(out=tmp_path, ops_limit=OPS_LIMIT, cache_root=cache, progress=False)
    with pytest.raises(KeyboardInterrupt):
        profile_ops(InterruptingHost(stop_after=1), SPACE, JobSettings("onnxruntime", protocol=CONFIG, **kw))
    other = ProtocolConfig(rounds=3, warmup=1, runs=3)
    with pytest.raises(JobError, match="--fresh"):
        profile_ops(HostTarget(), SPACE, JobSettings("onnxruntime", protocol=other, **kw))
    result = profile_ops(HostTarget(), SPACE, JobSettings("onnxruntime", protocol=other, fresh=True, **kw))
    assert result.skipped == 0 and result.num_failed == 0


@pytest.mark.slow
def test_failed_export_is_recorded_and_the_job_goes_on(tmp_path: Path, cache: Path) -> None:
    rt = get_runtime("onnxruntime")
    kw = dict(out=tmp_path, protocol=CONFIG, ops_limit=OPS_LIMIT, cache_root=cache, progress=False)
    ok = profile_ops(HostTarget(), SPACE, JobSettings("onnxruntime", **kw))  # fills the cache
    victim = sorted(load_lut(ok.lut_dir).table.index)[0]
    ec = ExportCache(rt, cache)
    ec.path(victim).unlink()  # as if its export had failed: the marker is what a failure leaves
    (ec.dir / f"{victim}.failed.txt").write_text("ExportError: unsupported operator foo")
    # a job with a failed op publishes nothing: it stays incomplete, and says how many failed
    with pytest.raises(IncompleteJobError, match="1 of .* ops failed .*--retry-failed.*--allow-failed") as info:
        profile_ops(HostTarget(), SPACE, JobSettings("onnxruntime", **kw))
    assert info.value.num_failed == 1 and list_versions(ok.lut_dir.parent) == [1]
    assert load_lut(ok.lut_dir.parent).path == ok.lut_dir  # what others read by default is unchanged
    job = [r for r in list_luts(tmp_path) if r["version"] is None]
    assert [(r["status"], r["failed"]) for r in job] == [("incomplete", 1)]
    # --allow-failed publishes it with the gap marked, without measuring anything again
    res = profile_ops(HostTarget(), SPACE, JobSettings("onnxruntime", allow_failed=True, **kw))
    lut = load_lut(res.lut_dir)
    assert res.num_failed == 1 and res.exported == 0 and res.skipped > 0  # not retried without retry_failed
    assert lut.table.loc[victim, "status"] == "failed"
    assert "unsupported operator foo" in lut.table.loc[victim, "error"]
    assert victim in lut.meta["failed_ops"]
    assert lut.meta["parent"] == int(ok.lut_dir.name[1:])
    assert (lut.table.drop(index=victim)["status"] == "ok").all()
    assert [r["status"] for r in list_luts(tmp_path)] == ["complete", "gaps allowed"]
    res = profile_ops(HostTarget(), SPACE, JobSettings("onnxruntime", retry_failed=True, **kw))
    assert res.num_failed == 0 and res.exported == 1


@pytest.mark.slow
def test_retry_failed_completes_an_incomplete_job(tmp_path: Path, cache: Path) -> None:
    kw = dict(out=tmp_path, protocol=CONFIG, ops_limit=OPS_LIMIT, cache_root=cache, progress=False)
    victim = sorted(op.key for op in plan_ops(SPACE, OPS_LIMIT)[0])[1]
    broken = FlakyHost(victim, faults=99)
    with pytest.raises(IncompleteJobError) as info:
        profile_ops(broken, SPACE, JobSettings("onnxruntime", **kw))
    assert info.value.num_failed == 1 and info.value.work_dir.is_dir()
    runtime_dir = info.value.work_dir.parent
    with pytest.raises(LutError, match="incomplete measurement job .*1 of .* ops failed"):
        load_lut(runtime_dir)  # nothing to pick by default
    fixed = FlakyHost(victim, faults=0)
    res = profile_ops(fixed, SPACE, JobSettings("onnxruntime", retry_failed=True, **kw))
    assert res.num_failed == 0 and set(fixed.calls) == {victim}  # only the failed op was measured again
    assert res.lut_dir.name == "v1" and not info.value.work_dir.exists()
    assert (load_lut(runtime_dir).table["status"] == "ok").all()


@pytest.mark.slow
def test_measure_archs_end_to_end(cache: Path) -> None:
    space = get_space(SPACE)
    arch = Arch(SPACE, tuple(space.candidates(layer)[0] for layer in space.layers()))
    named = Arch(SPACE, tuple(space.candidates(layer)[-1] for layer in space.layers()), name="all_last")
    out = measure_archs([arch, named], "onnxruntime", rounds=2, runs=3, warmup=1, cache_root=cache)
    assert set(out) == {"all_last", arch.id}
    assert all(len(s) == 6 and min(s) > 0 for s in out.values())


def test_get_target_host() -> None:
    t = get_target("host")
    fp = t.fingerprint()
    assert fp["device_id"].startswith("host-") and fp["device_id"] == HostTarget().fingerprint()["device_id"]
    assert fp["logical_cores"] >= 1 and fp["python"]


def test_graph_fingerprint_follows_what_a_module_computes() -> None:
    """The export cache key changes with a block's configuration or its forward code, not with
    its docstrings or comments."""
    from torch import nn

    from profiler.export import _forward_code, graph_fingerprint
    from search.space import Op, build_op

    op = Op("k3_e6", 8, 8, 8, 16, 2)
    fp = graph_fingerprint(build_op(op), op.example_input())
    assert fp == graph_fingerprint(build_op(op), op.example_input())
    assert fp != graph_fingerprint(build_op(Op("k5_e6", 8, 8, 8, 16, 2)), op.example_input())

    class A(nn.Module):
        def forward(self, x):
            """Doubles."""
            return x * 2  # a comment

    class B(nn.Module):
        def forward(self, x):
            return x * 2

    class C(nn.Module):
        def forward(self, x):
            return x * 3

    assert _forward_code(A) == _forward_code(B) != _forward_code(C)


@pytest.mark.slow
def test_export_cache_reexports_only_a_changed_graph(tmp_path: Path) -> None:
    from profiler.export import ExportItem

    rt = get_runtime("onnxruntime")
    ec = ExportCache(rt, tmp_path)
    items = [ExportItem.for_op(op) for op in get_space(SPACE).unique_ops()[:2]]
    assert ec.ensure(items, progress=False, workers=1).exported == 2
    assert ec.ensure(items, progress=False, workers=1).exported == 0
    graph = ec.dir / f"{items[0].key}.graph"
    graph.write_text("0" * 16)  # as if the block's definition had changed since the export
    again = ec.ensure(items, progress=False, workers=1)
    assert (again.exported, again.cached) == (1, 1) and graph.read_text() != "0" * 16


@pytest.mark.slow
def test_a_runner_fault_costs_one_op_round(tmp_path: Path, cache: Path) -> None:
    kw = dict(out=tmp_path, protocol=CONFIG, ops_limit=OPS_LIMIT, cache_root=cache, progress=False)
    victim = sorted(op.key for op in plan_ops(SPACE, OPS_LIMIT)[0])[1]
    flaky = FlakyHost(victim, faults=1)
    res = profile_ops(flaky, SPACE, JobSettings("onnxruntime", **kw))
    lut = load_lut(res.lut_dir)
    assert res.num_failed == 0 and lut.table.loc[victim, "status"] == "ok"
    assert lut.table.loc[victim, "n"] == CONFIG.rounds * CONFIG.runs  # the faulty op-round was measured again
    assert flaky.calls.count(victim) == CONFIG.rounds + 1
    # an op that faults every time is given up after retries + 1 faults, and named
    broken = FlakyHost(victim, faults=99)
    res = profile_ops(broken, SPACE, JobSettings("onnxruntime", allow_failed=True, **kw))
    lut = load_lut(res.lut_dir)
    assert res.num_failed == 1 and lut.table.loc[victim, "status"] == "failed"
    assert broken.calls.count(victim) == CONFIG.retries + 1
    assert "signal 11" in lut.table.loc[victim, "error"] and list(lut.meta["failed_ops"]) == [victim]
    assert (lut.table.drop(index=victim)["status"] == "ok").all()


def test_replica_counts_share_a_shape_and_spare_the_network_input() -> None:
    from profiler.protocol.plan import REPLICA_MAX, replica_counts

    timed, _, net = plan_ops("fbnet")
    counts = replica_counts(timed, net)
    assert set(counts) == {op.key for op in timed}
    by_shape: dict = {}
    for op in timed:
        by_shape.setdefault((op.c_in, op.h, op.w), set()).add(counts[op.key])
    assert all(len(v) == 1 for v in by_shape.values())  # an op and its overhead op: the same copies
    assert by_shape[(3, 224, 224)] == {1}  # the stem's shape: its overhead op is the network's
    assert all(2 <= n <= REPLICA_MAX for shape, (n,) in ((s, tuple(v)) for s, v in by_shape.items()) if shape != (3, 224, 224))


@pytest.mark.slow
def test_replicas_time_each_copy_of_an_op(tmp_path: Path, cache: Path) -> None:
    """cache="replicas": ops exported as copies that read one input; a sample is an invocation
    divided by its copies, and the LUT records the copies."""
    import torch

    from profiler.export import ExportItem
    from search.space.modules import Replicas

    op = Op("k3_e1", 8, 8, 8, 8, 1)
    rep = Replicas(op, 3).eval()
    x = op.example_input()
    outs = rep(x)
    assert len(outs) == 3 and all(o.shape == (1, 8, 8, 8) for o in outs) and not torch.equal(outs[0], outs[1])
    config = ProtocolConfig(rounds=1, warmup=1, runs=3, cache="replicas")
    settings = JobSettings("onnxruntime", out=tmp_path, protocol=config, ops_limit=2, cache_root=cache, progress=False)
    res = profile_ops(HostTarget(), SPACE, settings)
    lut = load_lut(res.lut_dir)
    assert res.num_failed == 0 and lut.meta["protocol"]["cache"] == "replicas"
    copies = lut.meta["protocol"]["copies"]
    assert copies and all(n > 1 for n in copies.values())
    item = ExportItem.for_op(next(o for o in plan_ops(SPACE, 2)[0] if o.key in copies), 2)
    assert item.file_stem.endswith("-x2")


def test_mixed_cache_picks_the_ops_whose_weights_stream() -> None:
    """"mixed": ops that use each weight fewer than STREAMED_REUSE times (FBNet's batch-1
    classifier), or whose weights exceed a core's private cache and their activations (the 7x7
    stages' expanded blocks, the head conv), and the overhead ops subtracted only from such ops are
    timed cold, every other warm; a target that cannot cycle copies times as replicas only the
    input shapes whose every op streams."""
    timed, _, net = plan_ops("fbnet")
    cold = streamed_ops(timed, net)
    heads = {"pool_fc-i1504x7x7-o1000-s1", "pool_fc-i1984x7x7-o1000-s1", "overhead-i1504x7x7-o1504-s1",
             "overhead-i1984x7x7-o1984-s1", "conv1x1_relu-i352x7x7-o1504-s1", "conv1x1_relu-i352x7x7-o1984-s1",
             "overhead-i352x7x7-o352-s1"}  # fmt: skip
    big = {op.key for op in timed if op.block != "overhead" and op.params * 4 > max(512 << 10, op.activations * 4)}
    assert big and all(op.h <= 14 and op.block not in ("k3_e1", "k5_e1") for op in map(parse_op_key, big))
    assert cold == heads | big
    assert "k5_e6-i184x7x7-o184-s1" in cold and "k5_e1-i184x7x7-o184-s1" not in cold  # 1.75 MB vs 0.29 MB of weights
    assert "k5_e6-i112x14x14-o112-s1" not in cold  # 0.68 MB of weights, 1.23 MB of activations
    # the shapes whose ops do not all stream keep a warm overhead op, and the stem's is always warm
    assert "overhead-i184x7x7-o184-s1" not in cold and "overhead-i3x224x224-o3-s1" not in cold
    states = op_cache_states(timed, net, "mixed", "replicas")
    assert set(states) == {op.key for op in timed}
    assert {k for k, v in states.items() if v == "replicas"} == heads and set(states.values()) == {"warm", "replicas"}
    assert {k for k, v in op_cache_states(timed, net, "mixed", "cold").items() if v == "cold"} == cold
    assert op_cache_states(timed, net, "warm", "cold") == {}


class RecordingHost(HostTarget):
    """The real host target, recording the cache state each model file is timed in."""

    def __init__(self) -> None:
        super().__init__()
        self.states: dict[str, set[str]] = {}
        self.cold_bytes: set[int] = set()

    def measure_detailed(self, runtime, model_file: Path, spec: RunSpec, **kw):
        self.states.setdefault(Path(model_file).stem, set()).add(spec.cache)
        self.cold_bytes.add(spec.cold_bytes)
        return super().measure_detailed(runtime, model_file, spec, **kw)


@pytest.mark.slow
def test_mixed_cache_times_the_classifier_cold_and_the_rest_warm(
    tmp_path: Path, tiny_space: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = RecordingHost()
    config = ProtocolConfig(rounds=1, warmup=1, runs=2, cache="mixed")
    # the session's export cache: the LUT-accuracy benchmark test exports the same ops
    kw = dict(out=tmp_path, protocol=config, progress=False, skip_existing=True)
    res = profile_ops(host, tiny_space, JobSettings("onnxruntime", **kw))
    lut = load_lut(res.lut_dir)
    assert res.num_failed == 0 and lut.meta["protocol"]["cache"] == "mixed"
    cold = {"pool_fc-i256x16x16-o100-s1", "overhead-i256x16x16-o256-s1"}
    assert lut.meta["protocol"]["op_cache"] == dict.fromkeys(sorted(cold), "cold")
    assert {k for k, v in host.states.items() if v == {"cold"}} == cold
    assert all(v == {"warm"} for k, v in host.states.items() if k not in cold)
    assert len(host.states) == len(lut.table[lut.table["status"] == "ok"])
    # cold copies hold about a network's weights, and the LUT says so
    footprint = network_bytes(get_space(tiny_space))  # a pass's weights and activations
    assert host.cold_bytes == {footprint} and lut.meta["protocol"]["cold_bytes"] == footprint
    assert f"{footprint / (1 << 20):.1f} MiB" in lut.meta["protocol"]["cache_state"]
    # the per-op states are part of the job: the same rule reuses the LUT, another one measures again
    assert profile_ops(FailingHost(), tiny_space, JobSettings("onnxruntime", **kw)).reused
    import search.space.cost as rule

    reuse = rule.STREAMED_REUSE
    monkeypatch.setattr(rule, "STREAMED_REUSE", 0)
    again = profile_ops(FailingHost(), tiny_space, JobSettings("onnxruntime", allow_failed=True, **kw))
    assert not again.reused and again.lut_dir.name == "v2" and again.num_failed >= again.num_ops
    assert load_lut(again.lut_dir).meta["protocol"]["op_cache"] == {}
    monkeypatch.setattr(rule, "STREAMED_REUSE", reuse)
    llc = JobSettings("onnxruntime", allow_failed=True, **{**kw, "protocol": replace(config, cold_bytes=0)})
    other = profile_ops(FailingHost(), tiny_space, llc)  # cold copies beyond twice the LLC: another protocol
    assert not other.reused and load_lut(other.lut_dir).meta["protocol"]["cold_bytes"] == 0


class FailingHost(HostTarget):
    """A host whose runner always fails: what a job measures fails at once."""

    def measure_detailed(self, runtime, model_file: Path, spec: RunSpec, **kw):
        raise RunnerError("no runner here")


def test_cold_copies_take_the_footprint_of_the_network_each_op_comes_from() -> None:
    """A cold op's copies hold what a network of its space reads and writes in one pass (what passes
    through the caches between two uses of a layer's weights): one value for a space (recorded in
    the protocol), per draw for a sampled space; a target without the cold state (a phone times
    replicas) leaves it unset."""
    from profiler.protocol.plan import plan_job
    from profiler.shapes import shape_space

    space = get_space("fbnet")
    mib = network_bytes(space) / (1 << 20)
    assert 36 < mib < 42 and 9 < network_bytes(get_space("fbnet-r128-w0.5")) / (1 << 20) < 12
    assert network_bytes(space, 1) * 4 == pytest.approx(network_bytes(space), abs=4)  # int8: a byte per element
    plan = plan_job(HostTarget(), "fbnet", JobSettings("onnxruntime"))
    assert plan.config.cold_bytes == network_bytes(space) and plan.op_cold_bytes == {}
    cold = {k for k, st in plan.per_op.items() if st == "cold"}
    assert cold and {plan.specs[k].cold_bytes for k in cold} == {network_bytes(space)}
    assert plan_job(HostTarget(), "fbnet", JobSettings("onnxruntime", protocol=ProtocolConfig(cold_bytes=0))
                    ).config.cold_bytes == 0  # fmt: skip
    sampled = shape_space("fbnet", 6)
    plan = plan_job(HostTarget(), sampled, JobSettings("onnxruntime"))
    nets = sampled.op_networks()
    assert plan.config.cold_bytes is None and plan.op_cold_bytes
    assert set(plan.op_cold_bytes) == {k for k, st in plan.per_op.items() if st == "cold"}
    for key, size in plan.op_cold_bytes.items():
        assert plan.specs[key].cold_bytes == size
        if key in nets:
            assert size == network_bytes(nets[key])
    assert len(set(plan.op_cold_bytes.values())) > 1  # draws of other widths and resolutions

    class Phone(HostTarget):
        cache_states = ("warm", "replicas")

    assert plan_job(Phone(), "fbnet", JobSettings("tflite")).config.cold_bytes is None
