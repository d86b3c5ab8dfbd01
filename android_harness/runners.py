"""Device runner binaries: their command lines and parsers for their real output.

Two runners, one registry (`RUNNERS`):

- `benchmark_model` (TFLite/LiteRT benchmark tool). Its log has a warm-up statistics line
  (`count=… curr=…`) before the timed one, with `--min_secs` > 0 the timed count may differ from
  `--num_runs`, and with op profiling later `Timings (microseconds): count=…` lines that are not
  the run's. The timed line is the last statistics line before `Inference timings in us:`.
  It prints no per-run timings, but a statistics line with count=2 holds both runs (`first=`,
  `curr=`), so `sample_command` asks for exactly 2 timed runs and `parse` returns them as samples.
- `executor_runner` (ExecuTorch). It has no warm-up flag; recent builds log `Iteration i of N: X ms`
  per execution (raw samples) and always `Model executed successfully N time(s) in X ms.`. On
  Android its log goes to logcat under the tag `ExecuTorch`.

Parsers are pure: text in, `RunnerTiming` out, `RunnerOutputError` on malformed or truncated text.

    parse_output("benchmark_model", text).avg_us  ->  249684.0
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

__all__ = [
    "RunnerTiming",
    "RunnerOutputError",
    "Runner",
    "BenchmarkModel",
    "ExecutorRunner",
    "RUNNERS",
    "get_runner",
    "parse_output",
    "output_tail",
]

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


class RunnerOutputError(ValueError):
    """A runner's output does not contain a complete, consistent timing report."""


@dataclass(frozen=True)
class RunnerTiming:
    """Latencies parsed from one runner invocation, in microseconds."""

    avg_us: float
    count: int | None = None
    std_us: float | None = None
    min_us: float | None = None
    max_us: float | None = None
    samples_us: tuple[float, ...] = ()  # individual timed runs, in order, where the output has them
    extra: dict[str, float] = field(default_factory=dict)  # e.g. init_us, warmup_avg_us

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if v is not None and k != "extra"}
        data["samples_us"] = list(self.samples_us)
        data.update(self.extra)
        return data


def output_tail(text: str, lines: int = 15) -> str:
    """The last lines of a runner's output, for error messages."""
    kept = text.rstrip().splitlines()[-lines:]
    return "\n".join("    " + line for line in kept) if kept else "    <no output>"


class Runner(Protocol):
    name: str
    log_tag: str | None  # logcat tag its log goes to on Android, or None for stdout/stderr

    def command(
        self, binary: str, model: str, *, threads: int, warmup: int, runs: int, xnnpack: bool
    ) -> list[str]:
        """argv for one invocation that runs `warmup` untimed then `runs` timed inferences."""
        ...

    def parse(self, text: str) -> RunnerTiming: ...


# ---- benchmark_model -------------------------------------------------------------------------
_STATS = re.compile(rf"\bcount=(\d+)((?:\s+\w+={_NUM})*)")
_SUMMARY = re.compile(
    rf"Inference timings in us: Init: ({_NUM}), First inference: ({_NUM}), "
    rf"Warmup \(avg\): ({_NUM}), Inference \(avg\): ({_NUM})"
)


def _stats_fields(line: str) -> dict[str, float] | None:
    """key=value fields of a statistics line; None for op-profiling/memory lines."""
    if "Timings (microseconds)" in line or "Memory (bytes)" in line:
        return None
    match = _STATS.search(line)
    if not match:
        return None
    fields = {"count": float(match.group(1))}
    for key, value in re.findall(rf"(\w+)=({_NUM})", match.group(2)):
        fields[key] = float(value)
    return fields


@dataclass(frozen=True)
class BenchmarkModel:
    name: str = "benchmark_model"
    log_tag: str | None = None
    max_secs: float = 150.0  # the tool's own cap on one timed phase

    def command(
        self, binary: str, model: str, *, threads: int, warmup: int, runs: int, xnnpack: bool
    ) -> list[str]:
        # --min_secs/--warmup_min_secs 0: the counts are exactly --num_runs/--warmup_runs.
        return [
            binary,
            f"--graph={model}",
            f"--num_threads={threads}",
            f"--warmup_runs={warmup}",
            "--warmup_min_secs=0",
            f"--num_runs={runs}",
            "--min_secs=0",
            f"--max_secs={self.max_secs:g}",
            f"--use_xnnpack={'true' if xnnpack else 'false'}",
        ]

    def parse(self, text: str) -> RunnerTiming:
        lines = text.splitlines()
        summary_at = next((i for i, l in enumerate(lines) if _SUMMARY.search(l)), None)
        if summary_at is None:
            raise RunnerOutputError(
                "benchmark_model output has no 'Inference timings in us' line: the run crashed "
                "or the output is truncated"
            )
        init, first, warm_avg, run_avg = (float(v) for v in _SUMMARY.search(lines[summary_at]).groups())
        stats = [f for f in (_stats_fields(l) for l in lines[:summary_at]) if f is not None]
        if not stats:
            raise RunnerOutputError("benchmark_model output has no 'count=' statistics line")
        run = stats[-1]
        if "avg" not in run and int(run["count"]) != 1:
            raise RunnerOutputError(f"benchmark_model statistics line is incomplete: {run}")
        count = int(run["count"])
        avg = run.get("avg", run.get("curr"))
        if avg is None:
            raise RunnerOutputError("benchmark_model statistics line has neither avg= nor curr=")
        if run_avg > 0 and not math.isclose(avg, run_avg, rel_tol=1e-3, abs_tol=1.0):
            raise RunnerOutputError(
                f"timed statistics avg={avg:g} disagrees with 'Inference (avg): {run_avg:g}'"
            )
        if count == 1:
            samples: tuple[float, ...] = (run["curr"],)
        elif count == 2 and "first" in run and "curr" in run:
            samples = (run["first"], run["curr"])
        else:
            samples = ()
        extra = {"init_us": init, "first_inference_us": first, "warmup_avg_us": warm_avg}
        for key in ("p5", "median", "p95"):
            if key in run:
                extra[f"{key}_us"] = run[key]
        if len(stats) > 1:
            extra["warmup_count"] = stats[-2]["count"]
        return RunnerTiming(
            avg_us=avg,
            count=count,
            std_us=run.get("std", 0.0 if count == 1 else None),
            min_us=run.get("min", run.get("curr") if count == 1 else None),
            max_us=run.get("max", run.get("curr") if count == 1 else None),
            samples_us=samples,
            extra=extra,
        )


# ---- executor_runner -------------------------------------------------------------------------
_ITER = re.compile(rf"Iteration (\d+) of (\d+): ({_NUM}) ms")
_DONE = re.compile(rf"Model executed successfully (\d+) time\(s\) in ({_NUM}) ms")
_FAILED = re.compile(r"(Execution of method .* failed.*|In function .*assert failed.*|Loading of method .* failed.*)")


@dataclass(frozen=True)
class ExecutorRunner:
    name: str = "executor_runner"
    log_tag: str | None = "ExecuTorch"

    def command(
        self, binary: str, model: str, *, threads: int, warmup: int, runs: int, xnnpack: bool
    ) -> list[str]:
        # No warm-up flag: run warmup + runs executions; the caller drops the first `warmup`.
        # XNNPACK is a property of the build (EXECUTORCH_BUILD_XNNPACK) and of the .pte.
        return [
            binary,
            f"--model_path={model}",
            f"--num_executions={warmup + runs}",
            f"--cpu_threads={threads}",
            "--print_output=none",
        ]

    def parse(self, text: str) -> RunnerTiming:
        failed = _FAILED.search(text)
        done = _DONE.search(text)
        if done is None:
            reason = failed.group(1) if failed else "the run crashed or the output is truncated"
            raise RunnerOutputError(
                f"executor_runner output has no 'Model executed successfully N time(s)' line: {reason}"
            )
        count, total_ms = int(done.group(1)), float(done.group(2))
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
                extra={"total_us": total_ms * 1000.0},
            )
        if count < 1:
            raise RunnerOutputError("executor_runner reports 0 executions")
        return RunnerTiming(avg_us=total_ms * 1000.0 / count, count=count,
                            extra={"total_us": total_ms * 1000.0})


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
        raise RunnerOutputError(f"{source}: {exc}\n  last lines:\n{output_tail(text)}") from None
