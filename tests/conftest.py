"""Shared test setup: deterministic seeds, private export cache and state dirs, the loopback device."""

from __future__ import annotations

import os
import random

import pytest


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    try:
        import numpy as np

        np.random.seed(0)
    except ImportError:  # numpy is a dependency; this only guards odd environments
        pass
    import torch

    torch.manual_seed(0)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Exports made by tests never land in (or come from) the user's cache.
    os.environ.setdefault("HWNAS_CACHE", str(tmp_path_factory.mktemp("hwnas-cache")))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module: on two shared cores it avoids spin-wait contention."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session", autouse=True)
def _private_state(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Clock locks a test leaves to restore never land in (or come from) the user's state dir.
    os.environ.setdefault("HWNAS_STATE_DIR", str(tmp_path_factory.mktemp("hwnas-state")))


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory):
    """(AdbServer, LoopbackDaemon): a private adb server with a loopback device, one per module."""
    from android_harness.loopback.session import loopback_session

    with loopback_session(tmp_path_factory.mktemp("device")) as pair:
        yield pair


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """runtime name -> an exported k3_e1 block at 8x8x8 (for every runtime with a phone runner)."""
    from profiler.runtimes import RUNTIMES, get_runtime
    from search.space.ops import Op

    out = tmp_path_factory.mktemp("models")
    op = Op("k3_e1", 8, 8, 8, 8, 1)
    files = {}
    for name, info in RUNTIMES.items():
        if info.runner is None:
            continue
        rt = get_runtime(name)
        path = out / f"{op.key}{rt.suffix}"
        rt.export(op.build(), op.example_input(), path)
        files[name] = path
    return files
