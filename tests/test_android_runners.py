"""Runner command lines and output parsers, on captured real output (tests/data/runners)."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from android_harness.runners import RUNNERS, RunnerOutputError, parse_output
from android_harness.tflite_stats import (
    OP_PROFILE_HEADER,
    format_op_profile,
    format_stat,
    parse_op_profile,
    parse_stat_line,
)

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


def test_executor_runner_0_4_build_without_timing_is_named():
    # ExecuTorch 0.4-0.5: one execution, no time printed, no --num_executions flag
    with pytest.raises(RunnerOutputError, match="ExecuTorch 0.4-0.5 build.*0.6 or newer"):
        parse_output("executor_runner", (DATA / "executor_runner_old_no_timing.txt").read_text())
    with pytest.raises(RunnerOutputError, match="ExecuTorch 0.4-0.5 build"):
        parse_output("executor_runner", "ERROR: unknown command line flag 'num_executions'\n")


def test_executor_runner_unknown_output_is_named_with_its_tail():
    with pytest.raises(RunnerOutputError, match=r"(?s)no .Model executed successfully N time.*\n  last lines:\n.*mean 0.42"):
        parse_output("executor_runner", "model m.pte: OK\nlatency: mean 0.42 ms over 2 runs\n")


# ---- benchmark_model forms of older releases (tests/data/runners/SOURCES.md) -------------------
@pytest.mark.parametrize(("name", "count", "avg", "std", "init", "first", "warmup_avg"), [
    ("benchmark_model_tf112_no_stats.txt", 50, 137722.0, 896.0, 4452.0, 146161.0, 146161.0),
    ("benchmark_model_tf114_no_stats_op_profiling.txt", 50, 115062.0, 7678.0, 1892.0, 91810.0, 86184.3),
    ("benchmark_model_tf115_no_stats_max_secs.txt", 50, 747733.0, 293.0, 21039.0, 751932.0, 751932.0),
    ("benchmark_model_phone_no_stats_count100.txt", 100, 80670.2, 871.0, 47967.0, None, 83496.6),
])
def test_benchmark_model_no_stats_forms(name, count, avg, std, init, first, warmup_avg):
    t = parse_output("benchmark_model", (DATA / name).read_text())
    assert (t.count, t.avg_us, t.std_us) == (count, avg, std)
    assert t.samples_us == ()  # more than 2 runs: statistics only
    assert t.extra["init_us"] == init and t.extra["warmup_avg_us"] == warmup_avg
    assert t.extra.get("first_inference_us") == first  # the warm-up line's first run, where printed
    assert t.ops == ()  # pre-2.x op tables have no 'Operator-wise Profiling Info' header


def test_benchmark_model_no_stats_two_runs_are_samples():
    # what the harness's --num_runs=2 gives from a TF 1.x build: both runs as samples
    text = ("Running benchmark for 3 iterations \ncount=3 first=900 curr=700 min=700 max=900 avg=800 std=81\n\n"
            "Running benchmark for 2 iterations \ncount=2 first=705 curr=699 min=699 max=705 avg=702 std=3\n\n"
            "Average inference timings in us: Warmup: 800, Init: 5000, no stats: 702\n")
    t = parse_output("benchmark_model", text)
    assert (t.samples_us, t.avg_us, t.extra["warmup_count"]) == ((705.0, 699.0), 702.0, 3.0)


def test_benchmark_model_tf20_summary_is_read_but_an_excerpt_without_its_run_line_is_refused():
    text = (DATA / "benchmark_model_tf20_inference_excerpt.txt").read_text()
    with pytest.raises(RunnerOutputError, match="no 'count=' statistics line"):
        parse_output("benchmark_model", text)  # only the op tables' Timings line: not the run's
    whole = text.replace("Number of nodes executed", "count=50 first=79449 curr=81350 min=77385 "
                         "max=88213 avg=79760.9 std=1929\n\nNumber of nodes executed")
    t = parse_output("benchmark_model", whole)
    assert (t.count, t.avg_us, t.extra["init_us"], t.extra["warmup_avg_us"]) == (50, 79760.9, 38467.0, 83235.0)


def test_benchmark_model_summary_disagreeing_with_its_line_is_refused():
    text = (DATA / "benchmark_model_tf112_no_stats.txt").read_text().replace("no stats: 137722", "no stats: 99")
    with pytest.raises(RunnerOutputError, match="disagrees.*no-stats form"):
        parse_output("benchmark_model", text)


@pytest.mark.parametrize("text", ["", "Segmentation fault\n", "STARTING!\nLoaded model m.tflite\n",
                                  "model m.tflite: OK\nlatency: mean 0.42 ms over 2 runs\n"])
def test_benchmark_model_unknown_format_is_named_with_its_tail(text):
    with pytest.raises(RunnerOutputError, match=r"unknown output format.*\n  last lines:"):
        parse_output("benchmark_model", text)


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


# ---- every form of Stat::OutputToStream ------------------------------------------------------
@pytest.mark.parametrize(("line", "count", "samples", "mean"), [
    ("count=0", 0, (), None),
    ("count=0 p5=0 median=0 p95=0", 0, (), None),
    ("count=1 curr=3512391", 1, (3512391.0,), 3512391.0),
    ("INFO: count=1 curr=1357602 p5=1357602 median=1357602 p95=1357602", 1, (1357602.0,), 1357602.0),
    ("count=2 curr=120(all same)", 2, (120.0, 120.0), 120.0),
    ("count=3 curr=7(all same) p5=7 median=7 p95=7", 3, (7.0, 7.0, 7.0), 7.0),
    ("count=2 first=6449 curr=6510 min=6449 max=6510 avg=6479.5 std=30", 2, (6449.0, 6510.0), 6479.5),
    ("count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798",
     50, (), 2.95034e06),
    ("count=50 first=1249964 curr=1240143 min=1238588 max=1252566 avg=1.24027e+06 std=2565 "
     "p5=1238753 median=1239807 p95=1247415", 50, (), 1.24027e06),
])
def test_stat_line_forms(line, count, samples, mean):
    stat = parse_stat_line(line)
    assert stat.complete and (stat.count, stat.samples, stat.mean) == (count, samples, mean)


@pytest.mark.parametrize("values", [[], [130], [120, 120], [9, 9, 9, 9], [7, 9], [120, 100, 110, 90],
                                    list(range(1000, 1050))])
def test_format_stat_matches_the_tool_and_parses_back(values):
    line = format_stat(values)
    stat = parse_stat_line(line)
    assert stat.count == len(values)
    if len(values) == 2 or len(set(values)) <= 1:
        assert stat.samples == tuple(float(v) for v in values)
    if len(set(values)) > 1:  # independent computation: int64 truncation of the population std
        assert stat.std == int(statistics.pstdev(values))
        assert stat.avg == float(f"{statistics.fmean(values):g}")
        assert (stat.first, stat.curr, stat.min, stat.max) == (values[0], values[-1], min(values), max(values))
    # StatWithPercentiles: the value at index size * pct / 100 of the sorted list, 0 when empty
    assert stat.median == (sorted(values)[len(values) // 2] if values else 0)
    assert stat.p95 == (sorted(values)[len(values) * 95 // 100] if values else 0)


def test_stat_line_incomplete_is_refused():
    text = "count=5 curr=3\nInference timings in us: Init: 1, First inference: 3, Warmup (avg): 3, Inference (avg): 3\n"
    with pytest.raises(RunnerOutputError, match="incomplete"):
        parse_output("benchmark_model", text)


def _with_timed_line(path: Path, line: str) -> str:
    """A captured log whose timed statistics line is replaced (and the summary made to agree)."""
    text = path.read_text()
    lines = text.splitlines()
    summary = next(i for i, l in enumerate(lines) if "Inference timings in us" in l)
    timed = max(i for i in range(summary) if "count=" in lines[i])
    mean = parse_stat_line(line).mean
    lines[timed] = "INFO: " + line
    head, _, _ = lines[summary].rpartition("Inference (avg): ")
    lines[summary] = head + f"Inference (avg): {mean if mean is not None else 0:g}"
    return "\n".join(lines) + "\n"


def test_benchmark_model_count2_real_output():
    # Arm TC2 documentation: --num_runs=1 --min_secs=0.01 ran 2 timed inferences
    t = parse_output("benchmark_model", (DATA / "benchmark_model_count2_tc2.txt").read_text())
    assert (t.count, t.samples_us, t.avg_us) == (2, (6449.0, 6510.0), 6479.5)
    assert (t.min_us, t.max_us, t.std_us) == (6449.0, 6510.0, 30.0)
    assert t.extra["warmup_count"] == 70 and t.extra["init_us"] == 16599.0


def test_benchmark_model_all_same_timed_line():
    text = _with_timed_line(DATA / "benchmark_model_count2_tc2.txt", format_stat([6449, 6449]))
    assert "curr=6449(all same) p5=6449" in text
    t = parse_output("benchmark_model", text)
    assert (t.count, t.samples_us, t.avg_us) == (2, (6449.0, 6449.0), 6449.0)
    assert (t.min_us, t.max_us, t.std_us) == (6449.0, 6449.0, 0.0)


def test_benchmark_model_no_timed_runs():
    t = parse_output("benchmark_model", _with_timed_line(DATA / "benchmark_model_count2_tc2.txt", "count=0"))
    assert t.count == 0 and t.samples_us == () and math.isnan(t.avg_us)


def test_benchmark_model_memory_and_init_extras():
    new = parse_output("benchmark_model", (DATA / "benchmark_model_count2_tc2.txt").read_text())
    assert (new.extra["mem_delta_init_mb"], new.extra["mem_delta_mb"]) == (8.45312, 10.5898)
    assert new.extra["model_size_mb"] == 1.86664
    old = parse_output("benchmark_model", (DATA / "benchmark_model_android_cpu_tf24.txt").read_text())
    assert (old.extra["mem_delta_init_mb"], old.extra["mem_delta_mb"]) == (4.92969, 138.809)
    assert old.extra["init_us"] == 16242.0 and "peak_memory_mb" not in old.extra
    monitored = (DATA / "benchmark_model_count2_tc2.txt").read_text() + (
        "INFO: Overall peak memory footprint (MB) via periodic monitoring: 12.5\n")
    assert parse_output("benchmark_model", monitored).extra["peak_memory_mb"] == 12.5


# ---- op profiling ------------------------------------------------------------------------------
def test_op_profiling_xnnpack_internal_operators():
    t = parse_output("benchmark_model", (DATA / "benchmark_model_xnnpack_op_profiling_tc2.txt").read_text())
    assert (t.count, t.avg_us) == (67, 7454.97)  # the run's line, not the tables' Timings line
    assert len(t.ops) == 115
    first = t.ops[0]
    assert (first.node_type, first.name) == ("Convolution (NHWC, QU8) IGEMM", "Delegate/Convolution (NHWC, QU8) IGEMM:0")
    assert (first.first_us, first.avg_us, first.percent, first.times_called) == (267.0, 278.0, 3.783, 1)
    assert first.start_us is None  # recent builds have no [start] column
    last = t.ops[-1]
    assert last.node_type == "TFLite_Detection_PostProcess" and last.name.endswith("]:114")
    assert last.cdf_percent == 100.0
    assert sum(op.node_type.startswith("Convolution") for op in t.ops) == 88
    assert t.to_json()["ops"][0]["name"] == first.name


def test_op_profiling_older_layout_with_start_column():
    ops = parse_op_profile((DATA / "benchmark_model_op_profiling.txt").read_text())
    assert [op.node_type for op in ops] == ["CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "SOFTMAX"]
    assert (ops[1].start_us, ops[1].first_us, ops[1].avg_us) == (61033.0, 53628.0, 49870.0)
    assert ops[1].name == "[MobilenetV1/MobilenetV1/Conv2d_1_depthwise/Relu6]:1"


def test_op_profiling_cut_short_is_an_error():
    text = (DATA / "benchmark_model_xnnpack_op_profiling_tc2.txt").read_text()
    cut = text[: text.index("Delegate/Add (ND, QU8):9")]
    with pytest.raises(RunnerOutputError, match="op profiling"):
        parse_output("benchmark_model", cut)
    assert parse_op_profile(text.replace(OP_PROFILE_HEADER, "Something else")) == ()


def test_format_op_profile_parses_back():
    runs = [[("Delegate/Convolution (NHWC, F32) GEMM:0", "Convolution (NHWC, F32) GEMM", e1),
             ("Delegate/Add (ND):1", "Add (ND)", e2),
             ("[y]:4", "SOFTMAX", e3)] for e1, e2, e3 in [(40, 3, 10), (44, 5, 10), (42, 4, 13)]]
    text = format_op_profile(runs)
    assert "Timings (microseconds): count=3 first=53 curr=59" in text and "3 nodes observed" in text
    ops = parse_op_profile(f"INFO: {OP_PROFILE_HEADER}\n{text}\n")
    assert [op.name for op in ops] == ["Delegate/Convolution (NHWC, F32) GEMM:0", "Delegate/Add (ND):1", "[y]:4"]
    total = sum(e for run in runs for _, _, e in run)
    for op, column in zip(ops, zip(*runs)):
        elapsed = [e for _, _, e in column]
        assert op.first_us == elapsed[0] and op.avg_us == pytest.approx(statistics.fmean(elapsed), abs=0.5)
        assert op.percent == pytest.approx(100 * sum(elapsed) / total, abs=1e-3)
        assert op.times_called == 1
    assert ops[-1].cdf_percent == 100.0


# ---- executor_runner extras ---------------------------------------------------------------------
def test_executor_runner_load_time_and_planned_memory():
    t = parse_output("executor_runner", (DATA / "executor_runner_planned_buffer.txt").read_text())
    assert t.extra["init_us"] == pytest.approx(29490.0)
    assert (t.extra["planned_memory_bytes"], t.extra["planned_buffers"]) == (9936896.0, 1.0)
    old = parse_output("executor_runner", (DATA / "executor_runner_add.txt").read_text())
    assert old.extra["planned_memory_bytes"] == 48.0 and "init_us" not in old.extra
    it = parse_output("executor_runner", (DATA / "executor_runner_iterations.txt").read_text())
    assert it.extra["init_us"] == pytest.approx(4463268.273)


def test_executor_runner_without_event_tracer_names_the_flag():
    text = "ERROR: unknown command line flag 'etdump_path'\n"
    with pytest.raises(RunnerOutputError, match="unknown command line flag 'etdump_path'"):
        parse_output("executor_runner", text)


@pytest.mark.parametrize("name", sorted(RUNNERS))
def test_command_lines(name):
    argv = RUNNERS[name].command("/d/bin", "/d/m.x", threads=2, warmup=3, runs=4, xnnpack=True)
    assert argv[0] == "/d/bin" and any("/d/m.x" in a for a in argv)
    profiled = RUNNERS[name].command("/d/bin", "/d/m.x", threads=2, warmup=3, runs=4, xnnpack=True,
                                     profile="/d/p.etdump")
    if name == "executor_runner":
        assert "--num_executions=7" in argv and "--cpu_threads=2" in argv
        assert profiled == [*argv, "--etdump_path=/d/p.etdump"]
    else:
        assert {"--num_runs=4", "--warmup_runs=3", "--min_secs=0", "--num_threads=2",
                "--use_xnnpack=true"} <= set(argv)
        assert profiled == [*argv, "--enable_op_profiling=true"]


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


@pytest.mark.parametrize("path", sorted(DATA.glob("*.txt")), ids=lambda p: p.stem)
def test_cut_or_damaged_output_is_an_error_never_a_crash(path):
    # every fixture cut after each line, cut inside each line and with each line dropped, read by
    # both parsers: a RunnerTiming or a RunnerOutputError, nothing else
    lines = path.read_text().splitlines(keepends=True)
    variants = []
    for i in range(len(lines) + 1):
        variants.append("".join(lines[:i]))
        variants.append("".join(lines[:i] + lines[i + 1:]))
        if i < len(lines):
            variants.append("".join(lines[:i]) + lines[i][: len(lines[i]) // 2])
    for runner in sorted(RUNNERS):
        for text in variants:
            try:
                parse_output(runner, text)
            except RunnerOutputError:
                pass
