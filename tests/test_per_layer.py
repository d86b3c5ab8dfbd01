"""In-context per-layer timing: a network's operators cut into its layers (profiler.layers)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from android_harness.execute import Measurement
from android_harness.tflite_stats import OperatorTiming
from profiler.layers import LayerAlignmentError, Operator, operators_of, split_layers
from profiler.runtimes import runtime_info
from search.space import arch_ops


def _ops(*types: str, us: float = 10.0) -> list[Operator]:
    return [Operator(t, (us, us + 2.0)) for t in types]


def test_split_layers_by_each_layers_own_operators() -> None:
    conv, dw, fc, add = "Convolution (NHWC, F32) IGEMM", "Convolution (NHWC, F32) DWConv", "Fully Connected (NC, F32) GEMM", "Add (ND)"
    layers = [_ops(conv), _ops(fc, dw, fc, add), [], _ops(fc)]
    network = [*_ops(conv, us=5.0), *_ops(fc, dw, fc, add, us=20.0), *_ops(fc, us=7.0)]
    rows = split_layers(network, layers, ["stem", "k3_e6", "skip", "head"])
    assert [r["num_operators"] for r in rows] == [1, 4, 0, 1]
    assert [r["median_us"] for r in rows] == [6.0, 84.0, 0.0, 8.0]  # per-run sums, median of runs
    with pytest.raises(LayerAlignmentError, match=r"layer 1 \(k3_e6\)"):
        split_layers(network, [_ops(conv), _ops(fc, fc), [], _ops(fc)], ["stem", "k3_e6", "skip", "head"])
    with pytest.raises(LayerAlignmentError, match="after its last layer"):
        split_layers(network + _ops(add), layers, ["stem", "k3_e6", "skip", "head"])


def test_layout_conversions_at_a_layers_boundary_are_told_apart() -> None:
    """Seen with ExecuTorch on FBNet's g2 blocks: the op alone ends with a Transpose that the
    network does not run; and a network may convert between layers where no op alone does."""
    conv, dw, fc, tr, rs = ("Convolution (NHWC, F32) IGEMM", "Convolution (NHWC, F32) DWConv",
                            "Fully Connected (NC, F32) GEMM", "Transpose (ND, X32)", "Static Reshape (NC)")  # fmt: skip
    g2_alone = _ops(conv, tr, rs, tr, rs, tr, dw, conv, tr)
    network = [*_ops(conv, tr, rs, tr, rs, tr, dw, conv, us=10.0), *_ops(fc, fc, us=5.0)]
    rows = split_layers(network, [g2_alone, _ops(fc, fc)], ["k5_e1_g2", "head"])
    assert [r["num_operators"] for r in rows] == [8, 2] and rows[1]["median_us"] == 2 * 6.0
    assert rows[0]["alone_only"] == [tr] and rows[1]["alone_only"] == []
    # Transposes that no layer runs alone: the network's own, before a layer and after the last
    network = [*_ops(conv, us=10.0), *_ops(tr, us=3.0), *_ops(fc, fc, us=5.0), *_ops(tr, us=4.0)]
    rows = split_layers(network, [_ops(conv), _ops(fc, fc)], ["stem", "head"])
    assert [r["num_operators"] for r in rows] == [1, 2] and rows[1]["median_us"] == 2 * 6.0
    assert rows[0]["between_us"] == 0.0 and rows[1]["between_us"] == 4.0 + 5.0  # medians of (3, 5), (4, 6)
    with pytest.raises(LayerAlignmentError, match="after its last layer"):  # only layout ops are excused
        split_layers([*network, *_ops(fc)], [_ops(conv), _ops(fc, fc)], ["stem", "head"])


def test_operators_of_an_op_table_strip_the_index() -> None:
    rows = (OperatorTiming("Convolution (NHWC, F32) IGEMM #3", "Delegate/x:0", 12.0, 10.0, 50.0, 50.0, 1),)
    (op,) = operators_of(Measurement([1.0], ops=rows))
    assert op.node_type == "Convolution (NHWC, F32) IGEMM" and op.median_us == 10.0
    with pytest.raises(LayerAlignmentError, match="profile=True"):
        operators_of(Measurement([1.0]))


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["executorch", "tflite"])
def test_per_layer_times_of_a_real_network(runtime: str, small_arch, tmp_path) -> None:
    """`profiler.run --arch A --per-layer` on the host: every layer of a small FBNet arch (five
    computing layers, identity skips between them) gets its in-context time (ETDump / LiteRT op
    profiling), identity layers none. Operator times come in whole µs, so the arch's smallest layer
    (the 1×1 conv `skip` at 14×14, 1.4 M MACs, 13–14 µs on a 2-core EPYC) is far above that
    resolution; at 96×96 and width 0.35 the same layer has 35 k MACs and read 0 µs, and at 224×224
    and width 0.5 (351 k MACs) 3 µs."""
    arch = small_arch
    arch_file = tmp_path / "small.json"
    arch_file.write_text(arch.to_json())
    out = subprocess.run(
        [sys.executable, "-m", "profiler.run", "--device", "host", "--runtime", runtime, "--arch", str(arch_file),
         "--per-layer", "--rounds", "2", "--runs", "5", "--json", "--no-progress", "--cache-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])["archs"][arch.name]
    layers = res["layers"]
    ops = arch_ops(arch)
    assert [r["op_key"] for r in layers] == [op.key for op in ops]
    resolution = res["layers_resolution_us"]
    assert resolution == runtime_info(runtime).op_profile_resolution_us == 1.0
    for row, op in zip(layers, ops):
        assert (row["num_operators"] == 0) == op.is_identity
        if op.is_identity:
            assert row["median_us"] == 0
        else:
            assert row["median_us"] >= 4 * resolution, row
    assert res["load_us"] > 0 and res["memory_kb"] > 0
