"""LiteRT (TFLite): litert-torch converts the module → `.tflite`.

On the host, `.tflite` files run in `ai_edge_litert.interpreter.Interpreter(num_threads=...)`,
whose default op resolver applies the XNNPACK delegate to fp32 models (`delegated_nodes` counts
the DELEGATE nodes it produced, so tests can check it; `open(..., xnnpack=False)` runs the
builtin kernels alone); on a phone, in `benchmark_model`.

`session.profile_ops(runs)` times every operator in context, as `benchmark_model
--enable_op_profiling=true` does on a phone: LiteRT's own profiler, reached through the C API of
the `libLiteRt.so` that ai-edge-litert ships (`litert_profiler.py`), since its Python API has none.
"""

from __future__ import annotations

import contextlib
import io
import logging
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import RUNTIMES
from .base import ExportError, RuntimeBase, native_stderr_quiet
from .litert_profiler import OperatorProfile, profile_tflite

log = logging.getLogger(__name__)


class TFLiteRuntime(RuntimeBase):
    info = RUNTIMES["tflite"]
    runner_modules = ("ai_edge_litert.interpreter",)

    def versions(self) -> dict[str, str]:
        return {
            "torch": version("torch"),
            "litert-torch": version("litert-torch"),
            "ai-edge-litert": version("ai-edge-litert"),
        }

    def export(self, module: nn.Module, example_input: torch.Tensor, path: Path) -> None:
        """With layout "nhwc", 4-D inputs and outputs are channel-last (`to_channel_last_io`), so
        the converter needs no TRANSPOSE at the boundaries (`boundary_transposes` counts them)."""
        module = module.eval()
        try:
            if self.layout == "nhwc" and example_input.dim() == 4:
                import litert_torch

                with torch.no_grad():
                    out = module(example_input)
                outs = out if isinstance(out, tuple) else (out,)
                module = litert_torch.to_channel_last_io(
                    module, args=[0], outputs=[i for i, o in enumerate(outs) if o.dim() == 4]
                )
                example_input = example_input.permute(0, 2, 3, 1).contiguous()
            self._convert(module, example_input, path)
        except ExportError:
            raise
        except Exception as e:  # the converter raises many unrelated types; report any of them
            raise ExportError(f"{type(e).__name__}: {e}") from e

    @staticmethod
    def _convert(module: nn.Module, example_input: torch.Tensor, path: Path) -> None:
        import litert_torch

        # litert-torch prints its progress on stdout and the converter its op counts on fd 2:
        # nothing about our op (native_stderr_quiet gives fd 2 back if the conversion fails)
        with contextlib.redirect_stdout(io.StringIO()), native_stderr_quiet(), torch.no_grad():
            litert_torch.convert(module, (example_input,)).export(str(path))

    def _interpreter(self, path: Path, threads: int, xnnpack: bool = True):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        with native_stderr_quiet():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
            interp = Interpreter(model_path=str(path), num_threads=threads,
                                 experimental_op_resolver_type=resolver)
            interp.allocate_tensors()
        return interp

    def open(self, path: Path, *, threads: int, seed: int = 0, xnnpack: bool = True) -> "TFLiteSession":
        """`xnnpack=False` leaves out the default XNNPACK delegate (`--use_xnnpack=false`)."""
        return TFLiteSession(self._interpreter(path, threads, xnnpack), seed, path=Path(path),
                             threads=threads, xnnpack=xnnpack, layout=self.layout)

    def delegated_nodes(self, path: Path, threads: int = 1) -> int:
        """Number of DELEGATE nodes after the interpreter applied its default delegates."""
        interp = self._interpreter(path, threads)
        return sum(op["op_name"] == "DELEGATE" for op in interp._get_ops_details())


def boundary_transposes(path: Path) -> int:
    """TRANSPOSE ops that read a model input or write a model output (before delegation)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    io = {d["index"] for d in interp.get_input_details() + interp.get_output_details()}
    ops = interp._get_ops_details()
    return sum(op["op_name"] == "TRANSPOSE" and bool(io & (set(op["inputs"]) | set(op["outputs"]))) for op in ops)


class TFLiteSession:
    """An allocated interpreter with seeded inputs set once; `run()` is `invoke()`."""

    def __init__(self, interp, seed: int, *, path: Path | None = None, threads: int = 1,
                 xnnpack: bool = True, layout: str = "nhwc") -> None:
        self._interp = interp
        self._path, self._threads, self._seed, self._xnnpack = path, threads, seed, xnnpack
        self._layout = layout
        rng = np.random.default_rng(seed)
        self._inputs = []
        for d in interp.get_input_details():
            data = rng.standard_normal(d["shape"]).astype(d["dtype"])
            interp.set_tensor(d["index"], data)
            self._inputs.append((d["index"], data))

    def run(self) -> None:
        self._interp.invoke()

    def refresh_input(self) -> None:
        for i, data in self._inputs:  # copies into the interpreter's input tensor: warm after
            self._interp.set_tensor(i, data)

    def profile_ops(self, runs: int = 10, *, warmup: int = 1) -> list[OperatorProfile]:
        """Per-operator µs of `runs` profiled invocations (after `warmup` unprofiled ones), in
        execution order, named as benchmark_model's op-profiling tables name them. The model
        runs in its own LiteRT compiled model (CPU accelerator: XNNPACK, or the builtin kernels
        for a session opened with xnnpack=False) with the session's threads and seed, so the
        session's interpreter is left as it was."""
        if self._path is None:
            raise ValueError("this session was not opened from a file; use TFLiteRuntime.open")
        with native_stderr_quiet():  # LiteRT logs its accelerator registry at INFO
            return profile_tflite(self._path, threads=self._threads, runs=runs, warmup=warmup,
                                  seed=self._seed, xnnpack=self._xnnpack)

    def infer(self, x: np.ndarray) -> np.ndarray:
        """`x` and the result in PyTorch's layout (NCHW), whatever the file's I/O layout is."""
        detail = self._interp.get_input_details()[0]
        channel_last = self._layout == "nhwc" and x.ndim == 4
        if channel_last:
            x = x.transpose(0, 2, 3, 1)
        self._interp.set_tensor(detail["index"], np.ascontiguousarray(x, dtype=np.float32))
        self._interp.invoke()
        out = self._interp.get_tensor(self._interp.get_output_details()[0]["index"])
        if channel_last and out.ndim == 4:
            out = out.transpose(0, 3, 1, 2)
        for i, data in self._inputs:
            self._interp.set_tensor(i, data)
        return out
