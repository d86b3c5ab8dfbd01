"""The text TFLite's statistics code writes: `Stat` lines and op-profiling tables, parsed and formatted.

`benchmark_model` prints every timing through TensorFlow's `tsl::Stat<int64_t>::OutputToStream`
(third_party/xla/xla/tsl/util/stats_calculator.h; LiteRT builds use `StatWithPercentiles`, which
appends ` p5= median= p95=`). A statistics line has one of four forms, all in integer µs:

    count=0                                               no runs
    count=1 curr=3512391                                  one run
    count=2 curr=120(all same)                            every run took the same µs
    count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

`avg` is a C++ double in iostream's default format (6 significant digits, so `2.95034e+06`);
`std` is the population standard deviation truncated to an integer. Samples follow from the form
where it determines them: `count=1` and `(all same)` give `count` copies of `curr`, `count=2`
gives `first` and `curr`; a longer line gives statistics only.

With `--enable_op_profiling=true` it also prints `StatsCalculator` tables (profile_summarizer.cc):
"Operator-wise Profiling Info for Regular Benchmark Runs:", then a `Run Order` table with one row
per operator. Recent builds have the columns `[node type] [first] [avg ms] [%] [cdf%] [mem KB]
[times called] [Name]`; older ones also `[start]`. Operators that the XNNPACK delegate runs are
listed as its internal operators: node type `Convolution (NHWC, F32) IGEMM`, name
`Delegate/Convolution (NHWC, F32) IGEMM:0`; other nodes as `CONV_2D` with the names of their
output tensors, `[MobilenetV1/Conv2d_0/Relu6]:0`.

    parse_stat_line("count=2 curr=120(all same) p5=120 median=120 p95=120").samples  -> (120.0, 120.0)
    format_stat([120, 120])        -> "count=2 curr=120(all same) p5=120 median=120 p95=120"
    parse_op_profile(text)         -> (OperatorTiming(node_type="Convolution (NHWC, F32) GEMM", ...), ...)
    format_op_profile(runs)        -> the tables benchmark_model prints for these per-run events

Formatting exists for the loopback device's `benchmark_model`, so that what it prints is what the
real tool prints for the same numbers; parse(format(x)) round-trips.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Sequence

__all__ = [
    "Stat",
    "OperatorTiming",
    "OP_PROFILE_HEADER",
    "parse_stat_line",
    "format_stat",
    "cpp_double",
    "parse_op_profile",
    "format_op_profile",
]

NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf"
OP_PROFILE_HEADER = "Operator-wise Profiling Info for Regular Benchmark Runs:"
_NODE_TYPE_WIDTH = 40  # kNodeTypeWidth in stats_calculator.cc
_TOP_BY_TIME = 10  # StatSummarizerOptions::time_limit


def _number(text: str) -> float:
    return float(text.replace("-nan", "nan"))


def cpp_double(value: float) -> str:
    """A double as `std::ostream << value` writes it by default (%g, 6 significant digits)."""
    if math.isnan(value):
        return "nan"
    return format(value, "g")


@dataclass(frozen=True)
class Stat:
    """One `count=...` statistics line (µs)."""

    count: int
    curr: float | None = None
    first: float | None = None
    min: float | None = None
    max: float | None = None
    avg: float | None = None
    std: float | None = None
    p5: float | None = None
    median: float | None = None
    p95: float | None = None
    all_same: bool = False  # "(all same)": every one of `count` values equals `curr`

    @property
    def samples(self) -> tuple[float, ...]:
        """The individual values, where the form of the line determines them."""
        if self.count == 0:
            return ()
        if (self.all_same or self.count == 1) and self.curr is not None:
            return (self.curr,) * self.count
        if self.count == 2 and self.first is not None and self.curr is not None:
            return (self.first, self.curr)
        return ()

    @property
    def mean(self) -> float | None:
        """avg= where printed; `curr` where every value equals it; None for count=0."""
        if self.avg is not None:
            return self.avg
        if self.count >= 1 and (self.all_same or self.count == 1):
            return self.curr
        return None

    @property
    def complete(self) -> bool:
        """True when the line is one of the four forms `Stat::OutputToStream` writes."""
        if self.count == 0:
            return self.curr is None and self.avg is None
        if self.count == 1 or self.all_same:
            return self.curr is not None
        return None not in (self.first, self.curr, self.min, self.max, self.avg, self.std)


_STAT = re.compile(r"\bcount=(\d+)(.*)$")
_FIELD = re.compile(rf"\b(first|curr|min|max|avg|std|p5|median|p95)=({NUM})")


def parse_stat_line(line: str) -> Stat | None:
    """The `count=` statistics on `line` (after any log prefix), or None when it has none."""
    match = _STAT.search(line)
    if match is None:
        return None
    rest = match.group(2)
    all_same = "(all same)" in rest
    fields = {key: _number(value) for key, value in _FIELD.findall(rest.replace("(all same)", " "))}
    return Stat(count=int(match.group(1)), all_same=all_same, **fields)


def _percentile(ordered: Sequence[int], pct: int) -> int:
    # StatWithPercentiles::percentile: nth_element at size * pct / 100 (integer division);
    # an empty list gives quiet_NaN of int, which is 0.
    if not ordered:
        return 0
    return ordered[-1] if pct == 100 else ordered[len(ordered) * pct // 100]


def format_stat(values_us: Sequence[int], *, percentiles: bool = True) -> str:
    """`Stat<int64_t>::OutputToStream` (with `StatWithPercentiles`' suffix when `percentiles`)."""
    values = [int(v) for v in values_us]
    n = len(values)
    if n == 0:
        text = "count=0"
    elif min(values) == max(values):
        text = f"count={n} curr={values[-1]}" + ("(all same)" if n > 1 else "")
    else:
        avg = sum(values) / n
        # variance() and std_deviation() return the int64 ValueType: both truncate.
        variance = int(sum(float(v) * v for v in values) / n - avg * avg)
        std = int(math.sqrt(variance))
        text = (f"count={n} first={values[0]} curr={values[-1]} min={min(values)} "
                f"max={max(values)} avg={cpp_double(avg)} std={std}")
    if percentiles:
        ordered = sorted(values)
        text += (f" p5={_percentile(ordered, 5)} median={_percentile(ordered, 50)} "
                 f"p95={_percentile(ordered, 95)}")
    return text


# ---- op-profiling tables ---------------------------------------------------------------------
@dataclass(frozen=True)
class OperatorTiming:
    """One row of the op-profiling `Run Order` table, in µs (the tool prints ms, 3 decimals)."""

    node_type: str  # "CONV_2D", or an XNNPACK operator such as "Convolution (NHWC, F32) GEMM"
    name: str  # "[output tensor names]:node index", or "Delegate/<operator>:<index>"
    first_us: float  # the operator's time in the first profiled run
    avg_us: float  # its mean time per call over the profiled runs
    percent: float  # share of the run total
    cdf_percent: float
    times_called: int  # calls per run
    mem_kb: float = 0.0
    start_us: float | None = None  # older builds: offset from the start of the run

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


_COLUMNS = {
    "node type": "node_type",
    "start": "start_us",
    "first": "first_us",
    "avg ms": "avg_us",
    "%": "percent",
    "cdf%": "cdf_percent",
    "mem KB": "mem_kb",
    "times called": "times_called",
    "Name": "name",
}


class OpProfileError(ValueError):
    """The op-profiling table is malformed or truncated."""


def _row(labels: list[str], line: str) -> OperatorTiming:
    parts = line.split("\t")
    while parts and not parts[0].strip():  # the leading tab of every field (and any indent)
        parts.pop(0)
    if len(parts) < len(labels):
        raise OpProfileError(f"op-profiling row has {len(parts)} of {len(labels)} columns: {line!r}")
    # Only the last column (the name) may itself contain tabs.
    parts = parts[: len(labels) - 1] + ["\t".join(parts[len(labels) - 1 :])]
    values: dict[str, Any] = {}
    for label, raw in zip(labels, parts):
        key = _COLUMNS[label]
        text = raw.strip()
        try:
            if key in ("node_type", "name"):
                values[key] = text
            elif key == "times_called":
                values[key] = int(text)
            elif key.endswith("_us"):
                values[key] = round(float(text) * 1000.0, 3)
            else:
                values[key] = float(text.rstrip("%"))
        except ValueError:
            raise OpProfileError(f"op-profiling row has {text!r} in its [{label}] column: {line!r}") from None
    return OperatorTiming(**values)


def parse_op_profile(text: str) -> tuple[OperatorTiming, ...]:
    """Rows of the `Run Order` table under "Operator-wise Profiling Info for Regular Benchmark
    Runs"; () when the output has no such section. Raises OpProfileError when it is cut short."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if OP_PROFILE_HEADER in line), None)
    if start is None:
        return ()
    order = next((i for i in range(start + 1, len(lines)) if "= Run Order =" in lines[i]), None)
    if order is None or order + 1 >= len(lines):
        raise OpProfileError("op-profiling section has no 'Run Order' table")
    labels = re.findall(r"\[([^\]]+)\]", lines[order + 1])
    unknown = [label for label in labels if label not in _COLUMNS]
    if not labels or unknown or "Name" not in labels or "avg ms" not in labels:
        raise OpProfileError(f"unrecognised op-profiling header: {lines[order + 1]!r}")
    rows = []
    for line in lines[order + 2 :]:
        if not line.strip() or line.lstrip().startswith("="):
            return tuple(rows)
        rows.append(_row(labels, line))
    raise OpProfileError("op-profiling 'Run Order' table is cut short (no blank line after it)")


# StatsCalculator::HeaderString / ColumnString / GetStatsByNodeType, default (not CSV) format.
def _field(value: Any, width: int) -> str:
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return "\t" + text.rjust(width)


def _table(title: str, details: list[dict[str, Any]], run_total_sum: int, num_runs: int) -> str:
    out = [f"============================== {title} =============================="]
    out.append(_field("[node type]", _NODE_TYPE_WIDTH) + _field("[first]", 9) + _field("[avg ms]", 9)
               + _field("[%]", 8) + _field("[cdf%]", 8) + _field("[mem KB]", 10)
               + _field("[times called]", 9) + "\t[Name]")
    cumulative = 0.0
    for d in details:
        elapsed = d["elapsed"]
        cumulative += sum(elapsed)
        percent = sum(elapsed) * 100.0 / run_total_sum if run_total_sum else math.nan
        cdf = cumulative * 100.0 / run_total_sum if run_total_sum else math.nan
        out.append(_field(d["type"], _NODE_TYPE_WIDTH) + _field(elapsed[0] / 1000.0, 9)
                   + _field(sum(elapsed) / len(elapsed) / 1000.0, 9)
                   + _field(percent, 7) + "%" + _field(cdf, 7) + "%" + _field(0.0, 10)
                   + _field(d["times_called"] // num_runs, 9) + "\t" + d["name"])
    return "\n".join(out) + "\n\n"


def _by_type(details: list[dict[str, Any]], num_runs: int) -> str:
    count: dict[str, int] = {}
    time_us: dict[str, int] = {}
    called: dict[str, int] = {}
    for d in details:
        count[d["type"]] = count.get(d["type"], 0) + 1
        time_us[d["type"]] = time_us.get(d["type"], 0) + sum(d["elapsed"]) // num_runs
        called[d["type"]] = called.get(d["type"], 0) + d["times_called"] // num_runs
    total = sum(time_us.values())
    out = [f"Number of nodes executed: {len(details)}",
           "============================== Summary by node type ==============================",
           _field("[Node type]", _NODE_TYPE_WIDTH) + _field("[count]", 9) + _field("[avg ms]", 10)
           + _field("[avg %]", 11) + _field("[cdf %]", 11) + _field("[mem KB]", 10)
           + _field("[times called]", 10)]
    cdf = 0.0
    for node_type in sorted(time_us, key=lambda t: (time_us[t], t), reverse=True):
        percent = time_us[node_type] * 100.0 / total if total else math.nan
        cdf += percent
        out.append(_field(node_type, _NODE_TYPE_WIDTH) + _field(count[node_type], 9)
                   + _field(time_us[node_type] / 1000.0, 10) + _field(percent, 10) + "%"
                   + _field(cdf, 10) + "%" + _field(0.0, 10) + _field(called[node_type], 9))
    return "\n".join(out) + "\n\n"


def format_op_profile(runs: Sequence[Sequence[tuple[str, str, int]]]) -> str:
    """The run tables benchmark_model prints after OP_PROFILE_HEADER for these profiled runs.

    `runs` holds one list per regular run of its operator events in execution order, each
    (name, node_type, elapsed µs) as `ProfileSummarizer` names them."""
    details: dict[str, dict[str, Any]] = {}
    run_totals: list[int] = []
    for events in runs:
        for node_num, (name, node_type, elapsed) in enumerate(events):
            d = details.setdefault(name, {"name": name, "type": node_type, "run_order": node_num,
                                          "elapsed": [], "times_called": 0})
            d["elapsed"].append(int(elapsed))
            d["times_called"] += 1
        run_totals.append(sum(int(e) for _, _, e in events))
    num_runs = max(len(run_totals), 1)
    ordered = sorted(details.values(), key=lambda d: d["run_order"])
    by_time = sorted(ordered, key=lambda d: -sum(d["elapsed"]) / len(d["elapsed"]))[:_TOP_BY_TIME]
    text = _table("Run Order", ordered, sum(run_totals), num_runs)
    text += _table("Top by Computation Time", by_time, sum(run_totals), num_runs)
    text += _by_type(ordered, num_runs)
    text += (f"Timings (microseconds): {format_stat(run_totals, percentiles=False)}\n"
             f"Memory (bytes): count=0\n{len(details)} nodes observed\n\n")
    return text
