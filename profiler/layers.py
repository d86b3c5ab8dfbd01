"""In-context per-layer timing: what each layer of a network takes *inside* the network.

A runtime's operator profile of a whole network (ExecuTorch's ETDump, read with
`executorch.devtools.Inspector`; LiteRT's XNNPACK operator timings on the host; benchmark_model's
`--enable_op_profiling` table on a phone) lists the delegate's operators in execution order —
`Convolution (NHWC, F32) IGEMM`, `Fully Connected (NC, F32) GEMM`, `Add (ND)`, … — with no link
back to the PyTorch module they came from. Each layer's own export (the LUT's op file) has the
same operators, so profiling every op file once gives each layer's operator sequence, and the
network's sequence is cut into layers by walking it in order (`split_layers`). A layer's
in-context time is the sum of its operators' times, per profiled run; the median over runs is
reported beside the LUT's isolated value of the same op, so a user sees which layers break
additivity and by how much.

    ops = operators_of(measurement)              # [Operator(node_type, runs_us), ...]
    layers = split_layers(net_ops, [ops_of_each_layer...], op_keys)
"""

from __future__ import annotations

import re
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from android_harness.execute import Measurement

__all__ = ["Operator", "LayerAlignmentError", "is_layout_operator", "operators_of", "run_totals", "split_layers"]

# ETDump events that are not operators: the delegate/method wrappers and the per-call marker of
# portable kernels (whose own event, `native_call_<op>`, is the operator).
_NOT_OPERATORS = {"DELEGATE_CALL", "Method::execute", "OPERATOR_CALL", "Method::init", "Program::load_method"}
_INDEX = re.compile(r"\s+#\d+$")
_LAYOUT = re.compile(r"^(Transpose|Copy|Convert)\b")


class LayerAlignmentError(ValueError):
    """The network's operators do not follow its layers' operators in order."""


@dataclass(frozen=True)
class Operator:
    """One operator of a profiled model, in execution order, with its time in each profiled run."""

    node_type: str  # "Convolution (NHWC, F32) IGEMM" (no "#N" index)
    runs_us: tuple[float, ...]

    @property
    def median_us(self) -> float:
        return statistics.median(self.runs_us)


def operators_of(m: Measurement) -> list[Operator]:
    """The operators of a `measure_detailed(..., profile=True)` measurement, in execution order."""
    if m.etdump is not None:
        return _etdump_operators(m.etdump)
    if m.ops:  # op tables give each operator's mean per call, not per run: one value per run
        return [Operator(_INDEX.sub("", o.node_type), (float(o.avg_us) * max(1, o.times_called),)) for o in m.ops]
    raise LayerAlignmentError("the measurement has no operator profile (measure with profile=True)")


def run_totals(ops: Sequence[Operator], runs: int | None = None) -> list[float]:
    """Per profiled run, the time of `ops` together (the first `runs` runs; default: all that
    every one of them has); [0.0] for no operators."""
    if not ops:
        return [0.0]
    runs = min(len(o.runs_us) for o in ops) if runs is None else runs
    return [sum(o.runs_us[r] for o in ops) for r in range(runs)]


def _etdump_operators(etdump: bytes) -> list[Operator]:
    from executorch.devtools import Inspector

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.etdump"
        path.write_bytes(etdump)
        inspector = Inspector(etdump_path=str(path))
    ops = []
    for block in inspector.event_blocks:
        if block.name != "Execute":
            continue
        for event in block.events:
            if event.name in _NOT_OPERATORS or not event.perf_data:
                continue
            ops.append(Operator(_INDEX.sub("", event.name), tuple(1000.0 * v for v in event.perf_data.raw)))
    return ops


def is_layout_operator(node_type: str) -> bool:
    """A layout conversion (`Transpose (ND, X32)`, `Copy (NC, X32)`, `Convert …`): what an op
    exported alone may run at its boundaries and a network may not, or the reverse."""
    return bool(_LAYOUT.match(node_type))


def _boundary_trims(want: list[str]) -> list[tuple[int, int]]:
    """(leading, trailing) layout operators of `want` to leave out, fewest first."""
    lead = next((i for i, t in enumerate(want) if not is_layout_operator(t)), len(want))
    trail = next((i for i, t in enumerate(reversed(want)) if not is_layout_operator(t)), len(want))
    trims = [(a, b) for a in range(lead + 1) for b in range(trail + 1) if a + b <= len(want)]
    return sorted(trims, key=lambda t: (t[0] + t[1], t))


def _match_layer(network: Sequence[Operator], pos: int, want: list[str]) -> tuple[int, int, int] | None:
    """(between, leading, trailing): the fewest network layout operators skipped at `pos`, then the
    fewest boundary layout operators of `want` left out, for which the network runs `want` there."""
    between = 0
    while True:
        for a, b in _boundary_trims(want):
            core = want[a : len(want) - b]
            if [o.node_type for o in network[pos + between : pos + between + len(core)]] == core:
                return between, a, b
        if pos + between >= len(network) or not is_layout_operator(network[pos + between].node_type):
            return None
        between += 1


def split_layers(
    network: Sequence[Operator], layers: Sequence[Sequence[Operator]], keys: Sequence[str]
) -> list[dict[str, Any]]:
    """Cut the network's operators into `layers` (each layer's own operator sequence, in network
    order; `keys` name them). Returns one row per layer: {layer, op_key, median_us,
    num_operators, alone_only, between_us}; identity layers (no operators) take 0 µs.

    Layout conversions are where an op alone and a network part ways: a layer's leading or
    trailing Transpose/Copy that the network does not run there is left out of the match and
    named in `alone_only` (the LUT pays it, the network does not); layout operators the network
    runs before a layer that no layer runs alone are timed in `between_us` of that layer (after
    the last layer: of the last), not in its `median_us`. Any other difference raises
    LayerAlignmentError naming the first layer whose operators the network does not run there."""
    pos, rows = 0, []
    runs = min((len(o.runs_us) for o in network), default=0)

    for i, (layer_ops, key) in enumerate(zip(layers, keys)):
        want = [o.node_type for o in layer_ops]
        match = _match_layer(network, pos, want) if want else (0, 0, 0)
        if match is None:
            raise LayerAlignmentError(
                f"layer {i} ({key}): the network runs {[o.node_type for o in network[pos : pos + len(want)]]} "
                f"where the op alone runs {want}; the exporter fused or reordered across layers here"
            )
        between, a, b = match
        got = network[pos + between : pos + between + len(want) - a - b]
        rows.append({"layer": i, "op_key": key, "median_us": statistics.median(run_totals(got, runs)),
                     "num_operators": len(got), "alone_only": want[:a] + want[len(want) - b :],
                     "between_us": statistics.median(run_totals(network[pos : pos + between], runs)) if between
                     else 0.0})  # fmt: skip
        pos += between + len(got)
    extra = network[pos:]
    if extra and rows and all(is_layout_operator(o.node_type) for o in extra):
        rows[-1]["between_us"] += statistics.median(run_totals(extra, runs))
    elif extra:
        names = [o.node_type for o in extra]
        raise LayerAlignmentError(f"the network runs {len(extra)} operators after its last layer: {names[:5]}")
    return rows
