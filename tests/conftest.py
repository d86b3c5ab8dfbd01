"""Shared test setup: deterministic seeds, private export cache and state dirs, the loopback device."""

from __future__ import annotations

import os
import random

import pytest

# --- stochastic tests ------------------------------------------------------------------------------
# A test whose verdict depends on a random draw (a search, a training) is marked
# `@pytest.mark.stochastic` and takes a `seed` argument: it runs once per seed, with the global
# RNGs (random, numpy, torch) seeded by it, and passes its seed on to whatever it runs. By default
# a stochastic test runs at its marker's `seeds` (default (0,)); two variables repeat it:
#   HWNAS_TEST_SEEDS=N          seeds 0 … N−1 (also START:STOP, or a comma list "3,7")
#   HWNAS_TEST_THREADS=T        torch intra-op threads for stochastic tests (default: as the test
#                               module sets them); another count reduces in another order, which
#                               stands in for another CPU's rounding
# Every failure of a stochastic test is listed at the end of the run with its seed and thread count,
# and the command that repeats it.
SEEDS_ENV, THREADS_ENV = "HWNAS_TEST_SEEDS", "HWNAS_TEST_THREADS"


def parse_seeds(text: str) -> list[int]:
    """"10" → 0 … 9; "4:7" → 4, 5, 6; "3,7" (or "7,") → 3, 7."""
    text = text.strip()
    try:
        if "," in text:
            return [int(s) for s in text.split(",") if s.strip()]
        if ":" in text:
            start, stop = (int(s) for s in text.split(":", 1))
            return list(range(start, stop))
        return list(range(int(text)))
    except ValueError:
        raise pytest.UsageError(f"{SEEDS_ENV}={text!r}: give a count (10), a range (4:7) or a list (3,7)") from None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "stochastic(seeds=(0,)): the verdict depends on a random draw; runs once per seed "
        f"(${SEEDS_ENV} repeats it over more, ${THREADS_ENV} sets torch's threads)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:  # the loopback device runs behind the adb server: `-m "not adb"` leaves them out
        if "loopback" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.adb)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("stochastic")
    if marker is None:
        return
    if "seed" not in metafunc.fixturenames:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: a stochastic test takes a `seed` argument")
    env = os.environ.get(SEEDS_ENV)
    seeds = parse_seeds(env) if env else list(marker.kwargs.get("seeds", (0,)))
    metafunc.parametrize("seed", seeds, ids=[f"seed{s}" for s in seeds])


def _stochastic_threads() -> int | None:
    value = os.environ.get(THREADS_ENV)
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise pytest.UsageError(f"{THREADS_ENV}={value!r}: give a positive thread count")
    return int(value)


@pytest.fixture(autouse=True)
def _seed(request: pytest.FixtureRequest):
    import torch

    stochastic = request.node.get_closest_marker("stochastic") is not None
    seed = int(request.node.callspec.params["seed"]) if stochastic else 0  # parametrized above
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # numpy is a dependency; this only guards odd environments
        pass
    torch.manual_seed(seed)
    if not stochastic:
        yield
        return
    before, threads = torch.get_num_threads(), _stochastic_threads()
    if threads is not None:  # after any module-scoped thread setting (higher scopes are set up first)
        torch.set_num_threads(threads)
    request.node.user_properties += [("seed", seed), ("torch_threads", torch.get_num_threads())]
    yield
    torch.set_num_threads(before)


_FAILED_SEEDS: list[tuple[str, int, int | None]] = []  # (node id, seed, torch threads)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    props = dict(report.user_properties)
    if report.failed and "seed" in props:  # on the controller too: xdist sends user_properties along
        _FAILED_SEEDS.append((report.nodeid, props["seed"], props.get("torch_threads")))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _FAILED_SEEDS:
        return
    tr = terminalreporter
    tr.section("stochastic tests that failed (seed, torch threads)", sep="=", red=True)
    for nodeid, seed, threads in sorted(set(_FAILED_SEEDS)):
        tr.line(f"{nodeid}  seed={seed} torch_threads={threads}")
        tr.line(f"    repeat: {SEEDS_ENV}={seed}:{seed + 1} {THREADS_ENV}={threads} bash scripts/test.sh -n 0 '{nodeid}'")


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Exports made by tests never land in (or come from) the user's cache.
    os.environ["HWNAS_CACHE"] = str(tmp_path_factory.mktemp("hwnas-cache"))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # pytest-xdist: the workers of one run share one export cache (exports are written
        # atomically, so a model is exported once), and share out the cores, CLIs they start included
        shared = tmp_path_factory.getbasetemp().parent / "hwnas-cache"
        shared.mkdir(exist_ok=True)
        os.environ["HWNAS_CACHE"] = str(shared)
        import torch

        share = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
        torch.set_num_threads(share)
        os.environ["OMP_NUM_THREADS"] = str(share)
    # device locks of this test session only: a test run does not wait for (or block) real jobs
    os.environ["HWNAS_LOCK_DIR"] = str(tmp_path_factory.mktemp("hwnas-locks"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module: on two shared cores it avoids spin-wait contention."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- synthetic LUTs (written through the store; provenance "synthetic") -------------------------
SYNTH_SPACE = "fbnet-r32-w0.25"  # 22 layers, tiny shapes


def _base_us(op) -> float:
    """A deterministic latency growing with shape, expansion and kernel; groups and skip cheaper."""
    from search.space import block_spec

    spec = block_spec(op.block)
    factor = spec.expansion * (1.0 + 0.1 * spec.kernel) * (0.8 if spec.groups > 1 else 1.0)
    factor *= 0.3 if spec.kind == "skip" else 1.0
    return 5.0 + factor * op.h * op.w * (op.c_in + op.c_out) / 200.0


def _macs_latency_us(op, macs_per_us: float = 1e4, per_op_us: float = 1.0) -> float:
    """`per_op_us` + the op's MACs at `macs_per_us` (1e4 = 10 GMAC/s)."""
    return per_op_us + op.macs / macs_per_us


def _synthetic_lut_dir(
    root,
    device_id: str = "synthA",
    *,
    space: str = SYNTH_SPACE,
    latency_us=_base_us,
    scale: dict[str, float] | None = None,
    overhead_us: float = 3.0,
    seed: int = 0,
    noise: float = 0.01,
    samples_per_op: int = 5,
    runtime: str = "executorch",
):
    """Write a LUT whose op latency is `latency_us(op) · scale[block]` plus `overhead_us` (with
    `samples_per_op` samples at `noise` relative noise; 0 makes the median exact) through
    `lut.store.write_lut`; returns its version dir."""
    import numpy as np
    import pandas as pd

    from lut.stats import summarize
    from lut.store import write_lut
    from search.space import get_space, overhead_op

    rng = np.random.default_rng(seed)
    scale = scale or {}
    sp = get_space(space)
    rows, samples = [], []
    ops = sp.unique_ops()
    ovh = {overhead_op(op).key: overhead_op(op) for op in ops if not op.is_identity}
    for op in list(ops) + list(ovh.values()):
        shape = {"op_key": op.key, "block": op.block, "c_in": op.c_in, "h": op.h, "w": op.w,
                 "c_out": op.c_out, "stride": op.stride}  # fmt: skip
        if op.is_identity:
            zeros = {c: 0.0 for c in ("median_us", "mean_us", "std_us", "min_us", "p10_us", "p90_us")}
            rows.append({**shape, "status": "identity", **zeros, "n": 0, "error": ""})
            continue
        true_us = overhead_us if op.block == "overhead" else latency_us(op) * scale.get(op.block, 1.0) + overhead_us
        xs = true_us * (1.0 + noise * rng.standard_normal(samples_per_op))
        samples += [{"op_key": op.key, "round": i, "sample": 0, "latency_us": x} for i, x in enumerate(xs)]
        rows.append({**shape, "status": "ok", **summarize(xs), "error": ""})
    meta = {
        "device": {"device_id": device_id, "target": "host"},
        "runtime": {"name": runtime, "version": "test", "delegate": None, "threads": 1,
                    "core_mask": None, "dtype": "fp32"},  # fmt: skip
        "space": {"name": sp.name, "hash": sp.hash()},
        "overhead_us": overhead_us,
        "failed_ops": {},
        "exporters": {},
        "protocol": {"synthetic": True},
        "provenance": "synthetic",
    }
    return write_lut(root, device_id=device_id, space=sp.name, runtime_dir=f"{runtime}-t1",
                     table=pd.DataFrame(rows), samples=pd.DataFrame(samples), meta=meta)  # fmt: skip


@pytest.fixture(scope="session")
def synthetic_lut():
    """`synthetic_lut(root, device_id="synthA", *, space=, latency_us=, scale=, overhead_us=3,
    seed=, noise=0.01, runtime="executorch") -> Lut` (see `_synthetic_lut_dir`)."""
    from lut.store import load_lut

    return lambda root, *args, **kw: load_lut(_synthetic_lut_dir(root, *args, **kw))


@pytest.fixture(scope="session")
def write_synthetic_lut():
    """`write_synthetic_lut(root, space, latency_us=macs_latency_us, *, device_id="synthetic",
    runtime="synthetic", overhead_us=0.0) -> Path`: exact medians (no noise), MACs-based latency."""

    def write(root, space, latency_us=_macs_latency_us, *, device_id="synthetic", runtime="synthetic",
              overhead_us=0.0):  # fmt: skip
        return _synthetic_lut_dir(root, device_id, space=space, latency_us=latency_us, overhead_us=overhead_us,
                                  noise=0.0, samples_per_op=3, runtime=runtime)  # fmt: skip

    return write


@pytest.fixture(scope="session")
def macs_latency_us():
    return _macs_latency_us


@pytest.fixture(scope="session", autouse=True)
def _private_state(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Clock locks a test leaves to restore never land in (or come from) the user's state dir.
    os.environ["HWNAS_STATE_DIR"] = str(tmp_path_factory.mktemp("hwnas-state"))


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory):
    """(AdbServer, LoopbackDaemon): a private adb server with a loopback device, one per module."""
    from android_harness.loopback.session import loopback_session

    with loopback_session(tmp_path_factory.mktemp("device")) as pair:
        yield pair


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """runtime name -> an exported k3_e1 block at 32x32x32 (for every runtime with a phone runner).
    Each of its operators takes µs (the smallest, the depthwise conv, 295 k MACs): operator
    profiles come in whole µs, and at 8x8x8 every operator read 0."""
    from profiler.runtimes import RUNTIMES, get_runtime
    from search.space.modules import build_op
    from search.space.ops import Op

    out = tmp_path_factory.mktemp("models")
    op = Op("k3_e1", 32, 32, 32, 32, 1)
    files = {}
    for name, info in RUNTIMES.items():
        if info.runner is None:
            continue
        rt = get_runtime(name)
        path = out / f"{op.key}{rt.suffix}"
        rt.export(build_op(op), op.example_input(), path)
        files[name] = path
    return files


@pytest.fixture
def tiny_space(monkeypatch: pytest.MonkeyPatch) -> str:
    """A two-layer FBNet-style space with four of FBNet's candidates (≈ 10 ops, 16 archs from
    all-skip to all-k5_e6), so a real profile is quick; unregistered after the test (monkeypatch
    restores the registry). Its smallest op, pool + fc, still takes several µs: per-layer times
    come in whole µs (the operator profilers' resolution)."""
    from search.space import SPACES, Space, get_space

    base = get_space("fbnet")

    def _tiny() -> Space:
        return Space(family="tinyval", stem_channels=8, stem_block=base.stem_block,
                     stages=((16, 1, 1), (32, 1, 2)), head_channels=256,
                     head_block=base.head_block, candidates_all=("k3_e1", "k3_e1_g2", "k5_e6", "skip"),
                     resolution=64, defaults=(64, 1.0), num_classes=100)  # fmt: skip

    monkeypatch.setitem(SPACES, "tinyval", _tiny)
    return "tinyval"


# --- a small network -------------------------------------------------------------------------------
# FBNet-space blocks with five computing layers and identity skips elsewhere: quick to train and export.
SMALL_BLOCKS = (
    "k3_e1",
    "k3_e3", "skip", "skip", "skip",
    "k5_e1_g2", "skip", "skip", "skip",
    "k3_e6", "skip", "skip", "skip",
    "skip", "skip", "skip", "skip",
    "k5_e3", "skip", "skip", "skip",
    "k3_e1",
)  # fmt: skip


@pytest.fixture(scope="session")
def small_arch():
    """`Arch("fbnet", SMALL_BLOCKS, name="small")`."""
    from search.space import Arch

    return Arch("fbnet", SMALL_BLOCKS, name="small")
