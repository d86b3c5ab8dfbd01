"""The benchmarks run and print their tables (tiny settings; no timing is asserted)."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from bench import lut_repeatability, search_memory, search_step

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _rows(out: str) -> dict[str, list[float]]:
    """Case name → numbers of each table row printed after the header."""
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^(\S.*?)\s{2,}([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(nan|[\d.]+)$", line)
        if m:
            rows[m[1].strip()] = [float(v) for v in m.groups()[1:]]
    return rows


def test_search_step_bench_compares_supernet_steps_with_the_sampled_network(capsys) -> None:
    assert search_step.main(["--steps", "1", "--batch", "4"]) in (0, None)
    rows = _rows(capsys.readouterr().out)
    assert rows["standalone (sampled arch)"][1] == 1.0  # the baseline's own ratio
    all_paths = next(v for k, v in rows.items() if "all paths" in k)
    one_hot = next(v for k, v in rows.items() if "one-hot" in k)
    assert all_paths[2] > one_hot[2]  # 9 paths keep more activations than 1


def test_search_memory_bench_has_every_strategy_and_proxyless_matches_the_sampled_network(capsys) -> None:
    assert search_memory.main(["--steps", "1", "--batch", "4"]) == 0
    rows = _rows(capsys.readouterr().out)
    for case in ("fbnet weight step (τ=5)", "proxyless weight step (1 path)", "darts α step, second order"):
        assert case in rows
    # the weight step runs exactly the stand-alone network's paths: the same activations
    assert rows["proxyless weight step (1 path)"][3] == pytest.approx(1.0, abs=0.01)


def test_repeatability_compares_only_ops_ok_in_both_builds() -> None:
    a = pd.DataFrame({"status": ["ok", "ok", "failed"], "median_us": [100.0, 50.0, None]}, index=["x", "y", "z"])
    b = pd.DataFrame({"status": ["ok", "failed", "ok"], "median_us": [110.0, None, 7.0]}, index=["x", "y", "z"])
    d = lut_repeatability.compare(a, b)
    assert list(d.index) == ["x"] and d.loc["x", "rel"] == pytest.approx(10 / 105)


@pytest.mark.slow
def test_lut_accuracy_bench_profiles_and_validates_each_protocol(tmp_path, tiny_space, capsys) -> None:
    from bench import lut_accuracy

    rc = lut_accuracy.main(["--runtimes", "onnxruntime", "--protocols", "nchw:warm,nchw:cold", "--space", tiny_space,
                            "--archs", "4", "--rounds", "2", "--profile-rounds", "2", "--out", str(tmp_path), "--json"])
    assert rc == 0
    rows = __import__("json").loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["protocol"] for r in rows] == ["nchw:warm", "nchw:cold"]
    for r in rows:
        assert r["num_archs"] == 4 and r["raw_mape"] >= 0 and -1 <= r["raw_spearman"] <= 1
        assert r["raw_mape"] >= abs(r["raw_mean_error_pct"])  # |mean error| ≤ mean |error|
    luts = sorted(p.parent for p in tmp_path.rglob("meta.json"))
    caches = [__import__("json").loads((d / "meta.json").read_text())["protocol"]["cache"] for d in luts]
    assert caches == ["warm", "cold"]
