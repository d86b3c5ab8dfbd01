"""Device runner binaries: their command lines and parsers for their real output.

Two runners, one registry (`RUNNERS`):

- `benchmark_model` (TFLite/LiteRT benchmark tool). Its last timing line has had three forms
  (`SUMMARY_FORMS`): `Average inference timings in us: Warmup: W, Init: I, no stats: A` (TF
  1.12-1.15), `... Warmup: W, Init: I, Inference: A` (TF 2.0) and `Inference timings in us:
  Init: I, First inference: F, Warmup (avg): W, Inference (avg): A` (TF 2.1+, LiteRT); the
  statistics lines before it have not changed. Its log has a warm-up statistics line
  (`count=… curr=…`) before the timed one, with `--min_secs` > 0 the timed count may differ from
  `--num_runs`, and with op profiling later `Timings (microseconds): count=…` lines that are not
  the run's. The timed line is the last statistics line before `Inference timings in us:`; it has
  any of the four forms `tflite_stats` describes (`count=0`, `count=1 curr=`, `count=N
  curr=X(all same)`, the full line), with or without percentiles. The tool prints no per-run
  timings, but `count=2 first= curr=` holds both runs and an `(all same)` line all of them, so
  `execute` asks for 2 timed runs per invocation and `parse` returns them as samples.
  `extra` holds `init_us`, `first_inference_us`, `warmup_avg_us`, `p5_us`/`median_us`/`p95_us`,
  `warmup_count`, `model_size_mb` and the memory it reports: `mem_delta_init_mb` and
  `mem_delta_mb` (growth of the process's peak RSS since the tool started, after init and at the
  end) and, with `--report_peak_memory_footprint`, `peak_memory_mb`. With
  `--enable_op_profiling=true`, `ops` holds the `Run Order` table (`tflite_stats.OperatorTiming`).
- `executor_runner` (ExecuTorch). It has no warm-up flag. Releases 1.3+ log `Iteration i of N: X ms`
  per execution (raw samples), 0.6+ `Model executed successfully N time(s) in X ms.` (a 0.6-1.2
  build prints only that total: `samples_us` is empty and `avg_us` is X / N); 0.4-0.5 builds run
  once and print `Model executed successfully.` without a time, and are refused by name. On
  Android its log goes to logcat under the tag `ExecuTorch`. `extra` holds `total_us`, `init_us`
  (`Model loaded in X ms`: program parse + method load, memory planning and delegate init),
  `planned_memory_bytes` and `planned_buffers` (`Setting up [CPU ]planned buffer I, size N.`).
  Built with ExecuTorch's event tracer (devtools), it takes `--etdump_path=PATH` and writes an
  ETDump of every execution there (`profile=PATH`); other builds refuse the flag.

Parsers are pure: text in, `RunnerTiming` out, `RunnerOutputError` on malformed or truncated text
or on a report in none of the known forms (an unknown format: the message says so, and
`parse_output` adds the output's tail).

    parse_output("benchmark_model", text).avg_us  ->  249684.0
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from .tflite_stats import NUM, OperatorTiming, OpProfileError, Stat, parse_op_profile, parse_stat_line

__all__ = [
    "RunnerTiming",
    "RunnerOutputError",
    "RunnerBuildError",
    "Runner",
    "SummaryForm",
    "SUMMARY_FORMS",
    "BenchmarkModel",
    "ExecutorRunner",
    "RUNNERS",
    "get_runner",
    "parse_output",
    "output_tail",
    "runner_version",
]


class RunnerOutputError(ValueError):
    """A runner's output does not contain a complete, consistent timing report."""


class RunnerBuildError(RunnerOutputError):
    """The output shows a build of the runner that cannot be timed (the message names it)."""


@dataclass(frozen=True)
class RunnerTiming:
    """Latencies parsed from one runner invocation, in microseconds."""

    avg_us: float  # NaN when the runner timed no runs (count=0)
    count: int | None = None
    std_us: float | None = None
    min_us: float | None = None
    max_us: float | None = None
    samples_us: tuple[float, ...] = ()  # individual timed runs, in order, where the output has them
    extra: dict[str, float] = field(default_factory=dict)  # unit-named: init_us, mem_delta_mb, ...
    ops: tuple[OperatorTiming, ...] = ()  # op-profiling rows in run order (benchmark_model)
    version: str | None = None  # the runtime version the build printed, where it prints one

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items()
                if v is not None and k not in ("extra", "ops")}
        data["samples_us"] = list(self.samples_us)
        data.update(self.extra)
        if self.ops:
            data["ops"] = [op.to_json() for op in self.ops]
        return data


# Released benchmark_model and executor_runner builds print no version; builds that link a version
# print (custom runners, `TfLiteVersion()` / ExecuTorch release banners) say "<runtime> version: X".
_VERSION = re.compile(r"\b(?:TensorFlow Lite|TFLite|TfLite|LiteRT|ExecuTorch)\b[ \w]{0,20}?\bversion\b\s*[:=]?\s*"
                      r"v?(\d+\.\d+[\w.+-]*)", re.I)


def runner_version(text: str) -> str | None:
    """The runtime version a runner's output states ("... TFLite version: 2.16.1"), else None."""
    match = _VERSION.search(text)
    return match.group(1) if match else None


def output_tail(text: str, lines: int = 15) -> str:
    """The last lines of a runner's output, for error messages."""
    kept = text.rstrip().splitlines()[-lines:]
    return "\n".join("    " + line for line in kept) if kept else "    <no output>"


class Runner(Protocol):
    name: str
    log_tag: str | None  # logcat tag its log goes to on Android, or None for stdout/stderr
    profile_kind: str  # what `profile=` adds: "op_tables" (printed) or "etdump" (a file)

    def command(
        self, binary: str, model: str, *, threads: int, warmup: int, runs: int, xnnpack: bool,
        profile: str | None = None, warmup_s: float = 0.0,
    ) -> list[str]:
        """argv for one invocation that runs `warmup` untimed (and for at least `warmup_s`
        seconds, where the runner has a time-based warm-up) then `runs` timed inferences; with
        `profile`, per-operator profiling too (a device path for file outputs)."""
        ...

    def parse(self, text: str) -> RunnerTiming: ...


# ---- benchmark_model -------------------------------------------------------------------------
# The summary line the tool's BenchmarkLoggingListener prints last, in the forms released builds
# have printed (tensorflow/lite/tools/benchmark/benchmark_model.cc across versions); each maps its
# numbers to init, first inference, warm-up avg and inference avg (the ones it prints).
@dataclass(frozen=True)
class SummaryForm:
    name: str
    builds: str  # the builds that print it
    pattern: re.Pattern[str]
    fields: tuple[str, ...]  # the pattern's groups, in order: init, first, warmup, inference


SUMMARY_FORMS = (
    SummaryForm(
        "inference-avg", "TensorFlow 2.1+ and LiteRT",
        re.compile(rf"Inference timings in us: Init: ({NUM}), First inference: ({NUM}), "
                   rf"Warmup \(avg\): ({NUM}), Inference \(avg\): ({NUM})"),
        ("init", "first", "warmup", "inference")),
    SummaryForm(
        "average-inference", "TensorFlow 2.0",
        re.compile(rf"Average inference timings in us: Warmup: ({NUM}), Init: ({NUM}), "
                   rf"Inference: ({NUM})"),
        ("warmup", "init", "inference")),
    SummaryForm(
        "no-stats", "TensorFlow 1.12 to 1.15",
        re.compile(rf"Average inference timings in us: Warmup: ({NUM}), Init: ({NUM}), "
                   rf"no stats: ({NUM})"),
        ("warmup", "init", "inference")),
)


def _summary(lines: list[str]) -> tuple[int, SummaryForm, dict[str, float]] | None:
    """The last summary line: its index, its form and its numbers by field."""
    for i in range(len(lines) - 1, -1, -1):
        for form in SUMMARY_FORMS:
            match = form.pattern.search(lines[i])
            if match:
                return i, form, dict(zip(form.fields, (float(v) for v in match.groups())))
    return None


# Memory lines, all in MB. Both init=/overall= forms are the growth of the process's peak RSS
# (ru_maxrss on Linux and Android) since the tool started: TF 2.x builds print it as "Peak memory
# footprint", LiteRT-era builds as "Memory footprint delta from the start of the tool".
_MEMORY = {
    re.compile(rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) "
               rf"\(MB\): init=({NUM}) overall=({NUM})"): ("mem_delta_init_mb", "mem_delta_mb"),
    re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({NUM})"):
        ("peak_memory_mb",),
    re.compile(rf"The input model file size \(MB\): ({NUM})"): ("model_size_mb",),
}


def _stat_lines(lines: list[str]) -> list[Stat]:
    """Statistics lines of the benchmark itself (not op-profiling `Timings`/`Memory` lines)."""
    stats = []
    for line in lines:
        if "Timings (microseconds)" in line or "Memory (bytes)" in line:
            continue
        stat = parse_stat_line(line)
        if stat is not None:
            stats.append(stat)
    return stats


def _memory_extra(text: str) -> dict[str, float]:
    extra: dict[str, float] = {}
    for pattern, names in _MEMORY.items():
        match = pattern.search(text)
        if match:
            extra.update({name: float(value) for name, value in zip(names, match.groups())})
    return extra


@dataclass(frozen=True)
class BenchmarkModel:
    name: str = "benchmark_model"
    log_tag: str | None = None
    profile_kind: str = "op_tables"
    max_secs: float = 150.0  # the tool's own cap on one timed phase

    def command(
        self, binary: str, model: str, *, threads: int, warmup: int, runs: int, xnnpack: bool,
        profile: str | None = None, warmup_s: float = 0.0,
    ) -> list[str]:
        # --min_secs 0: the timed count is exactly --num_runs. --warmup_min_secs: the tool's
        # time-based warm-up (its default is 0.5 s), at least --warmup_runs runs either way.
        argv = [
            binary,
            f"--graph={model}",
            f"--num_threads={threads}",
            f"--warmup_runs={warmup}",
            f"--warmup_min_secs={warmup_s:g}",
            f"--num_runs={runs}",
            "--min_secs=0",
            f"--max_secs={self.max_secs:g}",
            f"--use_xnnpack={'true' if xnnpack else 'false'}",
        ]
        if profile is not None:  # tables on stdout, after the timings
            argv.append("--enable_op_profiling=true")
        return argv

    def parse(self, text: str) -> RunnerTiming:
        lines = text.splitlines()
        found = _summary(lines)
        if found is None:
            raise RunnerOutputError(
                "benchmark_model output has none of the summary lines its builds print "
                "('Inference timings in us: Init: ...' since TensorFlow 2.1, 'Average inference "
                "timings in us: Warmup: ..., Init: ..., Inference: ...' in 2.0, '..., no stats: ...' "
                "in 1.12-1.15): an unknown output format, or the run crashed or was cut short"
            )
        summary_at, form, numbers = found
        run_avg = numbers["inference"]
        stats = _stat_lines(lines[:summary_at])
        if not stats:
            raise RunnerOutputError("benchmark_model output has no 'count=' statistics line")
        run = stats[-1]  # the timed phase's line is the last one before the summary
        if not run.complete:
            raise RunnerOutputError(f"benchmark_model statistics line is incomplete: {run}")
        avg = run.mean
        if avg is not None and run_avg > 0 and not math.isclose(avg, run_avg, rel_tol=1e-3, abs_tol=1.0):
            raise RunnerOutputError(
                f"timed statistics avg={avg:g} disagrees with the summary's inference average "
                f"{run_avg:g} ({form.name} form)"
            )
        extra = {"init_us": numbers["init"], "warmup_avg_us": numbers["warmup"]}
        if "first" in numbers:
            extra["first_inference_us"] = numbers["first"]
        elif len(stats) > 1 and (stats[-2].first is not None or stats[-2].samples):
            # older forms: the first inference is the warm-up line's first run
            warm = stats[-2]
            extra["first_inference_us"] = warm.first if warm.first is not None else warm.samples[0]
        for key in ("p5", "median", "p95"):
            if getattr(run, key) is not None:
                extra[f"{key}_us"] = getattr(run, key)
        if len(stats) > 1:
            extra["warmup_count"] = float(stats[-2].count)
        extra.update(_memory_extra(text))
        try:
            ops = parse_op_profile(text)
        except OpProfileError as exc:
            raise RunnerOutputError(f"benchmark_model op profiling: {exc}") from None
        same = run.count >= 1 and (run.all_same or run.count == 1)
        return RunnerTiming(
            avg_us=math.nan if avg is None else avg,
            count=run.count,
            std_us=0.0 if same else run.std,
            min_us=run.curr if same else run.min,
            max_us=run.curr if same else run.max,
            samples_us=run.samples,
            extra=extra,
            ops=ops,
            version=runner_version(text),
        )


# ---- executor_runner -------------------------------------------------------------------------
_ITER = re.compile(rf"Iteration (\d+) of (\d+): ({NUM}) ms")
_DONE = re.compile(rf"Model executed successfully (\d+) time\(s\) in ({NUM}) ms")
_UNTIMED = re.compile(r"Model executed successfully\.\s*$", re.MULTILINE)  # 0.4-0.5
_NO_EXECUTIONS_FLAG = re.compile(r"unknown command line flag 'num_executions'")
_LOADED = re.compile(rf"Model loaded in ({NUM}) ms")
_PLANNED = re.compile(r"Setting up (?:CPU |device )?planned buffer (\d+), size (\d+)")
_FAILED = re.compile(r"(Execution of method .* failed.*|In function .*assert failed.*|"
                     r"Loading of method .* failed.*|ERROR: unknown command line flag '\w+'.*)")


@dataclass(frozen=True)
class ExecutorRunner:
    name: str = "executor_runner"
    log_tag: str | None = "ExecuTorch"
    profile_kind: str = "etdump"

    def command(
        self, binary: str, model: str, *, threads: int, warmup: int, runs: int, xnnpack: bool,
        profile: str | None = None, warmup_s: float = 0.0,
    ) -> list[str]:
        # No warm-up flag (warmup_s: the caller runs an untimed launch first): run warmup + runs
        # executions; the caller drops the first `warmup`.
        # XNNPACK is a property of the build (EXECUTORCH_BUILD_XNNPACK) and of the .pte.
        # Only flags every build since 0.6 has (`--print_output` came in 1.3: not passed).
        argv = [
            binary,
            f"--model_path={model}",
            f"--num_executions={warmup + runs}",
            f"--cpu_threads={threads}",
        ]
        if profile is not None:  # needs a build with the event tracer (see the module docstring)
            argv.append(f"--etdump_path={profile}")
        return argv

    def parse(self, text: str) -> RunnerTiming:
        failed = _FAILED.search(text)
        done = _DONE.search(text)
        if done is None and (_UNTIMED.search(text) or _NO_EXECUTIONS_FLAG.search(text)):
            raise RunnerBuildError(
                "this executor_runner is an ExecuTorch 0.4-0.5 build: it runs the model once and "
                "prints no time ('Model executed successfully.'; no --num_executions flag), so it "
                "cannot be timed; build release 0.6 or newer (1.3 or newer prints every execution)"
            )
        if done is None:
            reason = failed.group(1) if failed else "the run crashed or the output is truncated"
            raise RunnerOutputError(
                f"executor_runner output has no 'Model executed successfully N time(s)' line: {reason}"
            )
        count, total_ms = int(done.group(1)), float(done.group(2))
        extra = {"total_us": total_ms * 1000.0}
        loaded = _LOADED.search(text)
        if loaded:
            extra["init_us"] = float(loaded.group(1)) * 1000.0
        planned = {int(i): int(size) for i, size in _PLANNED.findall(text)}
        if planned:
            extra["planned_memory_bytes"] = float(sum(planned.values()))
            extra["planned_buffers"] = float(len(planned))
        iterations = [(int(i), int(n), float(ms)) for i, n, ms in _ITER.findall(text)]
        samples: tuple[float, ...] = ()
        if iterations:
            if [i for i, _, _ in iterations] != list(range(1, count + 1)) or any(
                n != count for _, n, _ in iterations
            ):
                raise RunnerOutputError(
                    f"executor_runner printed {len(iterations)} 'Iteration i of N' lines that do "
                    f"not number 1..{count}: the log is incomplete or mixes several runs"
                )
            samples = tuple(ms * 1000.0 for _, _, ms in iterations)
        if samples:
            return RunnerTiming(
                avg_us=statistics.fmean(samples),
                count=count,
                std_us=statistics.pstdev(samples),
                min_us=min(samples),
                max_us=max(samples),
                samples_us=samples,
                extra=extra,
                version=runner_version(text),
            )
        if count < 1:
            raise RunnerOutputError("executor_runner reports 0 executions")
        return RunnerTiming(avg_us=total_ms * 1000.0 / count, count=count, extra=extra, version=runner_version(text))


RUNNERS: dict[str, Runner] = {r.name: r for r in (BenchmarkModel(), ExecutorRunner())}


def get_runner(name: str) -> Runner:
    try:
        return RUNNERS[name]
    except KeyError:
        raise ValueError(f"unknown runner {name!r}; known: {', '.join(sorted(RUNNERS))}") from None


def parse_output(runner: str, text: str, *, source: str = "output") -> RunnerTiming:
    """Parse `text` with the named runner's parser; errors name `source` and show the tail."""
    try:
        return get_runner(runner).parse(text)
    except RunnerOutputError as exc:
        raise type(exc)(f"{source}: {exc}\n  last lines:\n{output_tail(text)}") from None
