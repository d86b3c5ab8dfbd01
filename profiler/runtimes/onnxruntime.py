"""ONNX Runtime: `torch.onnx.export` (the torch.export-based exporter) → `.onnx`.

On the host, `.onnx` files run in an `onnxruntime.InferenceSession` on the CPU execution provider
with `intra_op_num_threads` = threads, `inter_op_num_threads` = 1 and sequential execution. There
is no phone runner for this runtime.

int8 uses onnxruntime's own static post-training quantization: `quant_pre_process`, then
`quantize_static` (QDQ format, per-channel int8 weights in reduced range, uint8 activations)
calibrated on the `calibration` inputs given to `export` (a trained network's own data), else on
random inputs.
"""

from __future__ import annotations

import logging
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from . import RUNTIMES
from .base import ExportError, RuntimeBase

log = logging.getLogger(__name__)
# torch's ONNX registry warns once per process that torchvision ops are unavailable; they are
# not used by any block here.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)

CALIBRATION_BATCHES = 8  # random inputs the int8 calibration reader yields


class OnnxRuntime(RuntimeBase):
    info = RUNTIMES["onnxruntime"]
    runner_modules = ("onnxruntime",)

    def versions(self) -> dict[str, str]:
        return {
            "torch": version("torch"),
            "onnx": version("onnx"),
            "onnxscript": version("onnxscript"),
            "onnxruntime": version("onnxruntime"),
        }

    def export(self, module: nn.Module, example_input: torch.Tensor, path: Path,
               calibration: Sequence[torch.Tensor] | None = None) -> None:  # fmt: skip
        path = Path(path)
        try:
            if self.dtype == "fp32":
                self._export_fp32(module, example_input, path)
            else:
                with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
                    fp32 = Path(tmp) / "fp32.onnx"
                    self._export_fp32(module, example_input, fp32)
                    self._quantize(fp32, path, Path(tmp), tuple(example_input.shape), calibration)
        except Exception as e:  # the exporters raise many unrelated types; report any of them
            raise ExportError(f"{type(e).__name__}: {e}") from e

    @staticmethod
    def _export_fp32(module: nn.Module, example_input: torch.Tensor, path: Path) -> None:
        with torch.no_grad():
            torch.onnx.export(
                module.eval(),
                (example_input,),
                str(path),
                dynamo=True,
                external_data=False,  # one self-contained file per op
                input_names=["x"],
                output_names=["y"],
                verbose=False,
            )

    @staticmethod
    def _quantize(fp32: Path, out: Path, tmp: Path, shape: tuple[int, ...],
                  calibration: Sequence[torch.Tensor] | None = None) -> None:  # fmt: skip
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        class _RandomReader(CalibrationDataReader):
            def __init__(self) -> None:
                rng = np.random.default_rng(0)
                xs = [x.numpy().astype(np.float32) for x in calibration or []] or [
                    rng.standard_normal(shape).astype(np.float32) for _ in range(CALIBRATION_BATCHES)
                ]
                self._it = iter([{"x": x} for x in xs])

            def get_next(self):
                return next(self._it, None)

        pre = tmp / "pre.onnx"
        quant_pre_process(str(fp32), str(pre))
        quantize_static(
            str(pre),
            str(out),
            _RandomReader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            # 7-bit weights: x86 CPUs without VNNI run U8S8 with an instruction that saturates
            # (onnxruntime's quantization docs); without it a network's int8 outputs are noise there
            reduce_range=True,
        )

    def _session(self, path: Path, threads: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3  # errors only
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def open(self, path: Path, *, threads: int, seed: int = 0) -> "OnnxSession":
        return OnnxSession(self._session(path, threads), seed)


class OnnxSession:
    """An InferenceSession with its input and output bound once through an `IOBinding`, so
    `run()` copies nothing in or out (`InferenceSession.run` would, on every call)."""

    def __init__(self, sess, seed: int) -> None:
        self._sess = sess
        inp = sess.get_inputs()[0]
        self._x = np.random.default_rng(seed).standard_normal(inp.shape).astype(np.float32)
        self._bind(self._x)

    def _bind(self, x: np.ndarray) -> None:
        self._binding = self._sess.io_binding()
        self._binding.bind_cpu_input(self._sess.get_inputs()[0].name, x)
        names = [o.name for o in self._sess.get_outputs()]
        for name in names:
            self._binding.bind_output(name, "cpu")
        self._sess.run_with_iobinding(self._binding)  # the first run allocates the outputs ...
        for name, value in zip(names, self._binding.get_outputs()):
            self._binding.bind_ortvalue_output(name, value)  # ... kept from now on

    def run(self) -> None:
        self._sess.run_with_iobinding(self._binding)

    def refresh_input(self) -> None:
        np.multiply(self._x, 1.0, out=self._x)  # the bound input, re-written in place: warm after

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self._sess.run(None, {self._sess.get_inputs()[0].name: np.ascontiguousarray(x, dtype=np.float32)})[0]
