"""LiteRT (TFLite): litert-torch converts the module → `.tflite`.

On the host, `.tflite` files run in `ai_edge_litert.interpreter.Interpreter(num_threads=...)`,
whose default op resolver applies the XNNPACK delegate to fp32 models (`delegated_nodes` counts
the DELEGATE nodes it produced, so tests can check it); on a phone, in `benchmark_model`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .base import ExportError

log = logging.getLogger(__name__)


class TFLiteRuntime:
    name = "tflite"
    suffix = ".tflite"
    runner = "benchmark_model"
    delegate = "xnnpack"

    def __init__(self, dtype: str = "fp32") -> None:
        if dtype != "fp32":
            raise ValueError("the tflite runtime exports fp32 only; use executorch or onnxruntime for int8")
        self.dtype = dtype

    def versions(self) -> dict[str, str]:
        return {
            "torch": version("torch"),
            "litert-torch": version("litert-torch"),
            "ai-edge-litert": version("ai-edge-litert"),
        }

    @property
    def runtime_version(self) -> str:
        return version("ai-edge-litert")

    def export(self, module: nn.Module, example_input: torch.Tensor, path: Path) -> None:
        import litert_torch

        try:
            # litert-torch prints conversion progress on stdout; keep stdout for CLI output.
            with contextlib.redirect_stdout(sys.stderr), torch.no_grad():
                edge_model = litert_torch.convert(module.eval(), (example_input,))
                edge_model.export(str(path))
        except Exception as e:  # the converter raises many unrelated types; report any of them
            raise ExportError(f"{type(e).__name__}: {e}") from e

    def _interpreter(self, path: Path, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(path), num_threads=threads)
        interp.allocate_tensors()
        return interp

    def run_host(self, path: Path, *, threads: int, warmup: int, runs: int) -> list[float]:
        from . import time_invocations

        interp = self._interpreter(path, threads)
        for d in interp.get_input_details():
            rng = np.random.default_rng(0)
            interp.set_tensor(d["index"], rng.standard_normal(d["shape"]).astype(d["dtype"]))
        return time_invocations(interp.invoke, warmup=warmup, runs=runs)

    def infer(self, path: Path, x: torch.Tensor, *, threads: int = 1) -> np.ndarray:
        interp = self._interpreter(path, threads)
        interp.set_tensor(interp.get_input_details()[0]["index"], x.numpy())
        interp.invoke()
        return interp.get_tensor(interp.get_output_details()[0]["index"])

    def delegated_nodes(self, path: Path, threads: int = 1) -> int:
        """Number of DELEGATE nodes after the interpreter applied its default delegates."""
        interp = self._interpreter(path, threads)
        return sum(op["op_name"] == "DELEGATE" for op in interp._get_ops_details())
