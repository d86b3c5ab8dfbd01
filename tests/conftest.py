"""Shared test setup: deterministic seeds and a private export cache per test session."""

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
