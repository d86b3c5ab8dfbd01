"""Host per-operator profiling of .tflite models (LiteRT's profiler through its C API) and the
ExecuTorch planned-memory sizes the loopback executor_runner prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiler.runtimes import get_runtime
from search.space import Op, build_op

pytestmark = pytest.mark.slow  # exports models

# pointwise, depthwise, pointwise and the residual add; each conv ≥ 110 k MACs, so well above the
# profiler's whole-µs resolution (at 8×8×8 every operator read 0 µs on a fast core)
OP = Op("k3_e3", 16, 16, 16, 16, 1)


@pytest.fixture(scope="module")
def tflite_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("op") / "op.tflite"
    get_runtime("tflite").export(build_op(OP), OP.example_input(), path)
    return path


def test_profile_ops_lists_xnnpack_operators_in_execution_order(tflite_model: Path) -> None:
    session = get_runtime("tflite").open(tflite_model, threads=1)
    rows = session.profile_ops(runs=3)
    assert rows and all(len(r.elapsed_us) == 3 and min(r.elapsed_us) >= 0 for r in rows)
    assert all(r.delegated and r.name == f"Delegate/{r.node_type}:{r.index}" for r in rows)
    assert [r.index for r in rows] == list(range(len(rows)))  # the delegate's execution order
    kinds = [r.node_type for r in rows]
    assert any(k.startswith("Convolution (NHWC, F32)") for k in kinds)  # the depthwise conv
    assert sum(k.startswith(("Fully Connected (NC, F32)", "Convolution (NHWC, F32) GEMM")) for k in kinds) == 2
    assert any(k.startswith("Add") for k in kinds)  # the residual
    convs = [r for r in rows if r.node_type.startswith(("Convolution", "Fully Connected"))]
    assert len(convs) == 3 and all(max(r.elapsed_us) >= 1 for r in convs), rows  # whole µs, none under 1
    session.run()  # the session's own interpreter is untouched


def test_profile_ops_without_xnnpack_names_tflite_nodes(tflite_model: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    session = get_runtime("tflite").open(tflite_model, threads=1, xnnpack=False)
    rows = session.profile_ops(runs=2)
    plain = Interpreter(model_path=str(tflite_model),
                        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    ops = plain._get_ops_details()
    assert [(r.index, r.node_type) for r in rows] == [(op["index"], op["op_name"]) for op in ops]
    names = {t["index"]: t["name"] for t in plain.get_tensor_details()}
    assert rows[-1].name == f"[{names[int(ops[-1]['outputs'][0])]}]:{ops[-1]['index']}"
    assert not any(r.delegated for r in rows)


def test_executorch_planned_buffer_sizes(tmp_path: Path) -> None:
    rt = get_runtime("executorch")
    path = tmp_path / "op.pte"
    rt.export(build_op(OP), OP.example_input(), path)
    sizes = rt.planned_buffer_sizes(path)
    # one CPU buffer that holds at least the memory-planned input and output (16x16x16 fp32 each)
    assert len(sizes) == 1 and sizes[0] >= 2 * 16 * 16 * 16 * 4
