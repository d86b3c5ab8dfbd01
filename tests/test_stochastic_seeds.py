"""The suite's seed machinery (tests/conftest.py): stochastic tests run once per seed, with the
global RNGs seeded by it; HWNAS_TEST_SEEDS and HWNAS_TEST_THREADS repeat them over seeds and thread
counts; a failure is listed with its seed, thread count and the command that repeats it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import parse_seeds

REPO = Path(__file__).resolve().parents[1]

DEMO = '''
import os
import random

import pytest
import torch


@pytest.mark.stochastic
def test_fails_at_seed_two(seed):
    assert random.random() == random.Random(seed).random()  # the global RNG is seeded with it
    assert seed != 2


@pytest.mark.stochastic(seeds=(5, 6))
def test_threads_and_default_seeds(seed):
    assert torch.get_num_threads() == int(os.environ.get("HWNAS_TEST_THREADS", torch.get_num_threads()))


def test_not_stochastic():
    assert random.random() == random.Random(0).random()
'''


def test_parse_seeds() -> None:
    assert parse_seeds("3") == [0, 1, 2] and parse_seeds("4:7") == [4, 5, 6]
    assert parse_seeds("3,7") == [3, 7] and parse_seeds("7,") == [7]
    with pytest.raises(pytest.UsageError, match="HWNAS_TEST_SEEDS"):
        parse_seeds("many")


def _run(tmp_path: Path, workers: str, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_demo.py").write_text(DEMO)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HWNAS_TEST_", "PYTEST_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-n", workers,
         "-q", "-rA", "--rootdir", str(tmp_path), str(tmp_path / "test_demo.py")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**clean, **env},
    )  # fmt: skip


@pytest.mark.slow
def test_seeds_repeat_and_a_failure_names_its_seed_and_threads(tmp_path: Path) -> None:
    default = _run(tmp_path, "0")
    assert default.returncode == 0, default.stdout[-3000:]
    assert "4 passed" in default.stdout  # seed 0, seeds 5 and 6 (the marker's), and the plain test
    assert "test_fails_at_seed_two[seed0]" in default.stdout and "[seed6]" in default.stdout

    # over 4 seeds with 1 thread, in two xdist workers: seed 2 fails and is listed with its repeat command
    repeated = _run(tmp_path, "2", HWNAS_TEST_SEEDS="4", HWNAS_TEST_THREADS="1")
    out = repeated.stdout
    assert repeated.returncode == 1, out[-3000:]
    assert "1 failed, 8 passed" in out
    assert "stochastic tests that failed (seed, torch threads)" in out
    assert "test_demo.py::test_fails_at_seed_two[seed2]  seed=2 torch_threads=1" in out
    assert "repeat: HWNAS_TEST_SEEDS=2:3 HWNAS_TEST_THREADS=1 bash scripts/test.sh -n 0" in out
    assert "[seed3]" in out and "seed=3" not in out

    bad = _run(tmp_path, "0", HWNAS_TEST_SEEDS="lots")
    assert bad.returncode != 0 and "HWNAS_TEST_SEEDS='lots'" in bad.stdout + bad.stderr
