"""The benchmarks run and print their tables (tiny settings; no timing is asserted)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from bench import lut_repeatability, search_memory, search_quality, search_steering, search_step

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
    assert search_step.main(["--steps", "1", "--batch", "4", "--torch-device", "cpu"]) in (0, None)
    out = capsys.readouterr().out
    rows = _rows(out)
    all_paths = next(k for k in rows if "all paths" in k)
    one_hot = next(k for k in rows if "one-hot" in k)
    assert "[9.0 paths]" in all_paths and "[1.0 paths]" in one_hot  # what each supernet row ran
    # activations relative to the sampled network: 9 paths keep several times those of one path
    assert rows[all_paths][3] > 3 * rows[one_hot][3]
    rates = dict(re.findall(r"^(\S.*?)\s{2,}[\d.]+\s+(\d+)$", out, re.M))
    assert set(rates) == set(search_step.STRATEGY_STEPS) and all(int(r) > 0 for r in rates.values())


def test_search_step_bench_imports_torch_and_search_only() -> None:
    """What a bare GPU machine (torch and this repository) can run: no LUT store, runtime or pandas."""
    code = ("import sys, bench.search_step; "
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")  # fmt: skip
    mods = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert "search" in mods and "torch" in mods
    assert not mods & {"executorch", "ai_edge_litert", "litert_torch", "onnx", "onnxruntime", "pandas", "lut",
                       "profiler", "android_harness", "adbutils", "sklearn", "matplotlib", "PIL"}  # fmt: skip


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

    rc = lut_accuracy.main(["--runtimes", "onnxruntime", "--protocols", "nchw:warm,nchw:mixed:one+llc", "--space",
                            tiny_space, "--archs", "4", "--rounds", "2", "--profile-rounds", "2", "--out", str(tmp_path),
                            "--json"])  # fmt: skip
    assert rc == 0
    rows = __import__("json").loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [r["protocol"] for r in rows] == ["nchw:warm", "nchw:mixed:one+llc"]
    for r in rows:
        assert r["num_archs"] == 4 and r["raw_mape"] >= 0 and -1 <= r["raw_spearman"] <= 1
        assert r["raw_mape"] >= abs(r["raw_mean_error_pct"])  # |mean error| ≤ mean |error|
        # every op re-timed beside the archs (the default --drift-ops all): the sum of those, scored
        assert r["same_mape"] >= abs(r["same_mean_error_pct"]) and -1 <= r["same_spearman"] <= 1
    luts = sorted(p.parent for p in tmp_path.rglob("meta.json"))
    protocols = [__import__("json").loads((d / "meta.json").read_text())["protocol"] for d in luts]
    assert [p["cache"] for p in protocols] == ["warm", "mixed"]
    # `:one` times all rounds in one process; the default, each round in a fresh one
    assert [p["round_process"] for p in protocols] == ["fresh", "one"]
    # `:llc` cycles cold copies beyond twice the last-level cache; the default, about a network's weights
    from search.space import get_space, network_bytes

    assert [p["cold_bytes"] for p in protocols] == [None, 0]  # warm: no op timed cold
    assert network_bytes(get_space(tiny_space)) > 0
    # mixed: the classifier (one use per weight) and its overhead op cold, the rest warm
    assert sorted(protocols[1]["op_cache"]) == ["overhead-i256x16x16-o256-s1", "pool_fc-i256x16x16-o100-s1"]
    assert set(protocols[1]["op_cache"].values()) == {"cold"} and "op_cache" not in protocols[0]


def test_lut_accuracy_bench_rejects_an_unknown_protocol_option(tmp_path, capsys) -> None:
    from bench import lut_accuracy

    with pytest.raises(SystemExit) as e:
        lut_accuracy.main(["--runtimes", "onnxruntime", "--protocols", "nhwc:mixed:once", "--out", str(tmp_path)])
    assert e.value.code == 2 and "unknown protocol option 'once'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing profiled


@pytest.mark.slow
def test_lut_accuracy_bench_repeats_and_judges_only_quiet_runs(tmp_path, tiny_space, capsys) -> None:
    from bench import lut_accuracy

    rc = lut_accuracy.main(["--runtimes", "onnxruntime", "--protocols", "nchw:warm", "--space", tiny_space,
                            "--archs", "3", "--rounds", "2", "--profile-rounds", "1", "--drift-ops", "2",
                            "--repeats", "2", "--out", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and len(sorted(tmp_path.rglob("meta.json"))) == 2  # two builds, each validated
    lines = [ln for ln in out.splitlines() if ln.startswith("onnxruntime")]
    assert len(lines) == 2 and all(ln.endswith(("meets goal", "misses goal", "not quiet")) for ln in lines)
    assert "over 2 repeats" in out and "quiet " in out and "met the goal" in out
    rows = []
    for r in range(2):
        rows.append({"runtime": "onnxruntime", "protocol": "nchw:warm", "raw_mape": 3.0 + r, "raw_mean_error_pct": -r,
                     "raw_spearman": 0.97 - r / 10, "quiet": r == 0, "meets_goal": True if r == 0 else None})
    (s,) = lut_accuracy.spread(rows)
    assert (s["raw_mape_min"], s["raw_mape_max"], s["bias_min"], s["spearman_min"]) == (3.0, 4.0, -1, 0.87)
    assert (s["repeats"], s["quiet"], s["met"]) == (2, 1, 1)


@pytest.fixture(scope="module")
def small_lut(tmp_path_factory, synthetic_lut) -> str:
    return str(synthetic_lut(tmp_path_factory.mktemp("luts"), "benchdev").path)


@pytest.mark.slow
def test_search_steering_bench_prints_each_knob_and_its_verdicts(small_lut, capsys) -> None:
    argv = ["--lut", small_lut, "--strategies", "fbnet,random", "--betas", "0,30", "--lambdas", "0,10",
            "--target-fracs", "0.5", "--epochs", "1", "--subset", "48", "--json"]  # fmt: skip
    assert search_steering.main(argv) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    knobs = {(r["strategy"], r["knob"], r["value"]) for r in result["rows"]}
    assert {("fbnet", "beta", 0.0), ("fbnet", "beta", 30.0), ("random", "lambda", 10.0)} <= knobs
    assert {(v["strategy"], v["knob"]) for v in result["verdicts"]} == {
        ("fbnet", "beta"), ("fbnet", "target_ms"), ("random", "lambda"), ("random", "target_ms")}
    assert "monotone" in out


@pytest.mark.slow
def test_search_quality_bench_compares_the_found_arch_with_random_archs_of_its_latency(small_lut, capsys) -> None:
    argv = ["--lut", small_lut, "--seeds", "0", "--k", "2", "--train-epochs", "1", "--subset", "48",
            "--epochs", "1", "--json"]  # fmt: skip
    assert search_quality.main(argv) == 0
    out = capsys.readouterr().out
    (row,) = json.loads(out.strip().splitlines()[-1])["digits"]
    assert all(abs(ms / row["fbnet_ms"] - 1) <= 0.05 for ms in row["random_ms"])  # equal latency ±5 %
    # "best of K" is the random arch a random search would keep: the best on the validation split
    best = max(row["randoms"], key=lambda r: r["val_accuracy"])
    assert (row["best_random_val"], row["best_random_test"]) == (best["val_accuracy"], best["test_accuracy"])
    assert row["mean_random_test"] == pytest.approx(sum(r["test_accuracy"] for r in row["randoms"]) / 2)
    assert "mean ± std over 1 seeds" in out


@pytest.mark.slow
def test_overhead_op_bench_times_both_overhead_ops_and_the_archs(tiny_space, capsys) -> None:
    from bench import overhead_op

    assert overhead_op.main(["--runtimes", "onnxruntime", "--space", tiny_space, "--archs", "2",
                             "--rounds", "1", "--runs", "3"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    shapes = re.findall(r"^  (\d+x\d+x\d+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    archs = re.findall(r"^  (random_\d+)\s+([\d.]+)\s+(-?[\d.]+)\s+(-?[\d.]+)$", out, re.M)
    assert shapes and all(float(relu) > 0 and float(sampler) > 0 for _, relu, sampler in shapes)
    assert len(archs) == 2 and all(float(e2e) > 0 for _, e2e, _, _ in archs)


@pytest.mark.slow
def test_cache_states_bench_puts_each_layer_beside_its_warm_and_cold_times(tiny_space, capsys, monkeypatch) -> None:
    from bench import cache_states
    from lut.validate import random_archs
    from search.space import arch_ops, get_space, named_archs_for

    seen, measure = [], cache_states.measure
    monkeypatch.setattr(cache_states, "measure", lambda *a, **k: seen.append(measure(*a, **k)) or seen[-1])
    assert cache_states.main(["--runtimes", "executorch", "--space", tiny_space, "--archs", "1", "--rounds", "1",
                              "--runs", "3", "--layers"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "executorch: per input resolution" in out and "follow cold %" in out and "executorch: per layer" in out
    (df,) = seen
    archs = named_archs_for(tiny_space) + random_archs(get_space(tiny_space), 1, 0)
    assert list(df.op_key) == [op.key for a in archs for op in arch_ops(a) if not op.is_identity]
    assert set(df.follows) <= {"warm", "cold"} and set(df.mixed) <= {"warm", "cold"}
    assert (df[["alone_us", "ctx_us"]] > 0).all().all() and df[["warm_us", "cold_us"]].notna().all().all()
    table = cache_states.summary(df, "resolution")
    assert table.loc["all", "layers"] == len(df)
    assert table.loc["all", "Σ ctx µs"] == pytest.approx(df.ctx_us.sum())


def test_data_loader_bench_counts_the_whole_process_tree_and_streams_a_folder(tmp_path) -> None:
    from bench.data_loader import loader_rate, make_image_folder, peak_memory

    # a parent that holds almost nothing and a child that holds 200 MB: the tree's peak has both
    child = "b = bytearray(200 * 2**20); import time; time.sleep(1.5)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}], check=True)"
    mem = peak_memory([sys.executable, "-c", parent])
    assert mem["peak_rss_mb"] > 200 and mem["peak_pss_mb"] > 180
    folder = make_image_folder(tmp_path / "f", 24, 3, size=40)
    assert len(list(folder.rglob("*.jpg"))) == 24
    assert make_image_folder(tmp_path / "f", 24, 3, size=40) == folder  # complete: kept as is
    assert loader_rate(folder, 16, workers=1, batch_size=8) > 0
