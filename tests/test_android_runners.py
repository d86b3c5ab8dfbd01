"""Runner command lines and output parsers, on captured real output (tests/data/runners)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from android_harness.loopback.shims.benchmark_model import format_stats
from android_harness.runners import RUNNERS, RunnerOutputError, parse_output

DATA = Path(__file__).parent / "data" / "runners"


def test_benchmark_model_skips_warmup_and_op_profiling_lines():
    t = parse_output("benchmark_model", (DATA / "benchmark_model_op_profiling.txt").read_text())
    # the run's line, not the warm-up `count=1` nor `Timings (microseconds): count=50 ...`
    assert (t.count, t.avg_us, t.std_us) == (50, 2.95034e06, 109798.0)
    assert (t.min_us, t.max_us) == (2727568.0, 3189954.0)
    assert t.extra["init_us"] == 17187.0 and t.extra["warmup_count"] == 1.0
    assert t.samples_us == ()  # 50 runs: only statistics, no per-run values


def test_benchmark_model_info_prefix_and_percentiles():
    t = parse_output("benchmark_model", (DATA / "benchmark_model_info_prefix.txt").read_text())
    assert (t.count, t.avg_us, t.std_us) == (50, 1.24027e06, 2565.0)
    assert (t.extra["p5_us"], t.extra["median_us"], t.extra["p95_us"]) == (1238753, 1239807, 1247415)


def test_benchmark_model_android_excerpt():
    t = parse_output("benchmark_model", (DATA / "benchmark_model_android_nnapi.txt").read_text())
    assert (t.count, t.avg_us, t.min_us, t.max_us) == (50, 156669.0, 149738.0, 161935.0)


def test_benchmark_model_min_secs_count_smaller_than_warmup():
    # with --min_secs the timed count can be below the warm-up count: take position, not size
    text = ("count=12 first=10 curr=9 min=9 max=10 avg=9.5 std=0\n\n"
            "count=3 first=8 curr=7 min=7 max=8 avg=7.33333 std=0\n"
            "Inference timings in us: Init: 5, First inference: 10, Warmup (avg): 9.5, "
            "Inference (avg): 7.33333\n")
    assert parse_output("benchmark_model", text).count == 3


@pytest.mark.parametrize("cut", [0.3, 0.6, 0.75])
def test_benchmark_model_truncated_output_names_source_and_tail(cut):
    text = (DATA / "benchmark_model_op_profiling.txt").read_text()
    text = text[: text.index("Inference timings") - 1] if cut > 0.7 else text[: int(len(text) * cut * 0.1)]
    with pytest.raises(RunnerOutputError, match=r"k3_e6-op.*\n  last lines:"):
        parse_output("benchmark_model", text, source="k3_e6-op")


def test_executor_runner_iterations_are_samples():
    t = parse_output("executor_runner", (DATA / "executor_runner_iterations.txt").read_text())
    assert t.samples_us == pytest.approx((241944.288,))
    assert t.avg_us == pytest.approx(241944.288)


def test_executor_runner_summary_only():
    t = parse_output("executor_runner", (DATA / "executor_runner_add.txt").read_text())
    assert (t.count, t.samples_us) == (1, ())
    assert t.avg_us == pytest.approx(691.078)


def test_executor_runner_without_timing_is_an_error():
    with pytest.raises(RunnerOutputError, match="no 'Model executed successfully N time"):
        parse_output("executor_runner", (DATA / "executor_runner_old_no_timing.txt").read_text())


def test_executor_runner_logcat_format_and_stats():
    ms = [1.5, 1.25, 1.75, 1.0]
    lines = ["--------- beginning of main"]
    lines += [f"11-23 09:30:00.{i:03d}  4242  4242 I ExecuTorch: executor_runner.cpp:705] "
              f"Iteration {i + 1} of 4: {v:f} ms" for i, v in enumerate(ms)]
    lines.append("11-23 09:30:00.999  4242  4242 I ExecuTorch: executor_runner.cpp:714] "
                 f"Model executed successfully 4 time(s) in {sum(ms):f} ms.")
    t = parse_output("executor_runner", "\n".join(lines))
    us = [v * 1000 for v in ms]
    assert t.samples_us == pytest.approx(tuple(us))
    assert t.std_us == pytest.approx(statistics.pstdev(us))
    assert (t.min_us, t.max_us) == (1000.0, 1750.0)


def test_executor_runner_missing_iteration_is_an_error():
    text = ("I executorch:executor_runner.cpp:705] Iteration 1 of 3: 1.0 ms\n"
            "I executorch:executor_runner.cpp:705] Iteration 3 of 3: 1.0 ms\n"
            "I executorch:executor_runner.cpp:714] Model executed successfully 3 time(s) in 3.0 ms.\n")
    with pytest.raises(RunnerOutputError, match="do not number 1..3"):
        parse_output("executor_runner", text)


def test_shim_statistics_line_parses_back():
    values = [120.0, 100.0, 110.0, 90.0]
    line = format_stats(values)
    text = (f"{format_stats([130.0])}\n{line}\nInference timings in us: Init: 1, First inference: "
            f"130, Warmup (avg): 130, Inference (avg): {sum(values) / 4:g}\n")
    t = parse_output("benchmark_model", text)
    assert (t.count, t.avg_us, t.min_us, t.max_us) == (4, 105.0, 90.0, 120.0)
    assert t.std_us == round(statistics.pstdev(values))
    two = parse_output("benchmark_model", text.replace(line, format_stats([7.0, 9.0])).replace(
        "(avg): 105", "(avg): 8"))
    assert two.samples_us == (7.0, 9.0)


@pytest.mark.parametrize("name", sorted(RUNNERS))
def test_command_lines(name):
    argv = RUNNERS[name].command("/d/bin", "/d/m.x", threads=2, warmup=3, runs=4, xnnpack=True)
    assert argv[0] == "/d/bin" and any("/d/m.x" in a for a in argv)
    if name == "executor_runner":
        assert "--num_executions=7" in argv and "--cpu_threads=2" in argv
    else:
        assert {"--num_runs=4", "--warmup_runs=3", "--min_secs=0", "--num_threads=2",
                "--use_xnnpack=true"} <= set(argv)


def test_parse_cli_json():
    out = subprocess.run(
        [sys.executable, "-m", "android_harness", "parse", "--runner", "benchmark_model",
         str(DATA / "benchmark_model_info_prefix.txt"), "--json"],
        capture_output=True, text=True, check=True,
    ).stdout
    data = json.loads(out)
    assert data["avg_us"] == 1240270.0 and data["count"] == 50 and data["std_us"] == 2565.0
    bad = subprocess.run(
        [sys.executable, "-m", "android_harness", "parse", "--runner", "executor_runner",
         str(DATA / "executor_runner_old_no_timing.txt"), "--json"], capture_output=True, text=True)
    assert bad.returncode == 1 and "last lines" in bad.stderr


def test_android_harness_does_not_import_torch():
    code = ("import sys, android_harness, android_harness.doctor, android_harness.__main__, "
            "android_harness.loopback.session; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
