"""Every runtime (and dtype) exports a small block and runs it on the host."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from profiler.runtimes import RUNTIMES, ExportError, Runtime, Session, get_runtime, list_runtimes, run_host
from search.space import Op, build_op

CONFIGS = [(name, dtype) for name, info in RUNTIMES.items() for dtype in info.dtypes]
OP = Op("k3_e1_g2", 8, 8, 8, 16, 2)  # group conv + channel shuffle + stride: a non-trivial block


def test_registry() -> None:
    assert list_runtimes() == ["executorch", "tflite", "onnxruntime"]
    with pytest.raises(ValueError, match="known runtimes"):
        get_runtime("tensorrt")
    with pytest.raises(ValueError, match="does not support dtype 'int8'"):
        get_runtime("tflite", "int8")


@pytest.mark.slow
@pytest.mark.parametrize(("name", "dtype"), CONFIGS)
def test_export_and_run_on_host(name: str, dtype: str, tmp_path: Path) -> None:
    rt = get_runtime(name, dtype)
    assert isinstance(rt, Runtime)
    assert rt.runner == {"executorch": "executor_runner", "tflite": "benchmark_model", "onnxruntime": None}[name]
    assert set(rt.versions()) >= {"torch"}
    torch.manual_seed(0)
    module, x = build_op(OP), OP.example_input()
    path = tmp_path / f"op{rt.suffix}"
    rt.export(module, x, path)
    assert path.stat().st_size > 0
    samples = run_host(rt, path, threads=1, warmup=2, runs=4)
    assert len(samples) == 4 and all(s > 0 for s in samples)
    with torch.no_grad():
        ref = module(x).numpy()
    session = rt.open(path, threads=1)
    assert isinstance(session, Session)
    out = session.infer(x.numpy())
    assert out.shape == ref.shape
    if dtype == "fp32":
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)
    else:  # int8 PTQ on random calibration data: close, not equal
        assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.9


@pytest.mark.slow
def test_tflite_uses_the_xnnpack_delegate(tmp_path: Path) -> None:
    rt = get_runtime("tflite")
    path = tmp_path / "op.tflite"
    rt.export(build_op(OP), OP.example_input(), path)
    assert rt.delegated_nodes(path) > 0


class _DataDependent(nn.Module):
    """Control flow on tensor values: no graph exporter can capture it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x - 1


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNTIMES))
def test_export_failure_carries_the_exporter_message(name: str, tmp_path: Path) -> None:
    rt = get_runtime(name)
    path = tmp_path / f"bad{rt.suffix}"
    with pytest.raises(ExportError) as e:
        rt.export(_DataDependent(), torch.randn(1, 4, 4, 4), path)
    cause = e.value.__cause__  # the exporter's own exception, kept as the cause
    assert cause is not None and str(cause)
    assert str(e.value) == f"{type(cause).__name__}: {cause}"  # its type and its whole message


def test_executorch_native_log_held_back_unless_the_load_fails(capfd: pytest.CaptureFixture[str]) -> None:
    import os

    from profiler.runtimes.executorch import _native_stderr_quiet

    with _native_stderr_quiet():
        os.write(2, b"[cpuinfo_utils.cpp:87] Failed to open midr file\n")
    assert "midr" not in capfd.readouterr().err
    with pytest.raises(RuntimeError, match="load failed"), _native_stderr_quiet():
        os.write(2, b"[method.cpp:42] missing operator\n")
        raise RuntimeError("load failed")
    assert "missing operator" in capfd.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(("name", "dtype"), CONFIGS)
def test_overhead_op_is_one_native_op_that_samples_its_input(name: str, dtype: str, tmp_path: Path) -> None:
    """The overhead op is an invocation with no pass over its input: on the XNNPACK runtimes one
    delegated op (no layout conversion, no portable kernel) whose output is 2×2 pixels of the
    input, at any input shape; on onnxruntime, whose convs convert their input's layout, a ReLU."""
    from profiler.export import ExportItem

    rt = get_runtime(name, dtype)
    assert rt.info.overhead == ("relu" if name == "onnxruntime" else "sampler")
    for c, h, w in [(16, 56, 56), (184, 7, 7)]:
        op = Op("overhead", c, h, w, c, 1)
        module, x = ExportItem.for_op(op).build(rt.info.overhead)
        path = tmp_path / f"{op.key}{rt.suffix}"
        rt.export(module, x, path)
        out = rt.open(path, threads=1).infer(x.numpy())
        ref = x.relu() if name == "onnxruntime" else x[:, :, :: (h + 1) // 2, :: (w + 1) // 2]
        assert out.shape == tuple(ref.shape)
        if dtype == "fp32":
            np.testing.assert_allclose(out, ref.numpy(), rtol=1e-6)
        if name == "executorch":
            from executorch.exir._serialize._program import deserialize_pte_binary

            pte = deserialize_pte_binary(path.read_bytes())
            plan = getattr(pte, "program", pte).execution_plan[0]
            assert len(plan.delegates) == 1 and not plan.operators  # all of it in XNNPACK
        elif name == "tflite":
            from ai_edge_litert.interpreter import Interpreter, OpResolverType

            interp = Interpreter(model_path=str(path),
                                 experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            assert [o["op_name"] for o in interp._get_ops_details()] == ["DEPTHWISE_CONV_2D"]
