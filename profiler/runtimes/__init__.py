"""Runtime registry: name → the class that exports to and runs one model format.

    get_runtime("executorch")            ExecuTorch .pte, XNNPACK delegate (fp32 or int8)
    get_runtime("tflite")                LiteRT .tflite, XNNPACK delegate (fp32)
    get_runtime("onnxruntime", "int8")   ONNX .onnx on onnxruntime's CPU provider (fp32 or int8)

Runtime modules import their (heavy) exporters at import time, so the registry imports a module
only when its runtime is asked for.
"""

from __future__ import annotations

import importlib
import time
from typing import Callable

from .base import ExportError, Runtime

__all__ = ["RUNTIMES", "DTYPES", "ExportError", "Runtime", "get_runtime", "list_runtimes", "time_invocations"]

# name → "module:Class" of its implementation (imported lazily by get_runtime).
RUNTIMES: dict[str, str] = {
    "executorch": "profiler.runtimes.executorch:ExecuTorchRuntime",
    "tflite": "profiler.runtimes.tflite:TFLiteRuntime",
    "onnxruntime": "profiler.runtimes.onnxruntime:OnnxRuntime",
}
# dtypes each runtime can export (int8 = the runtime's own post-training quantization flow).
DTYPES: dict[str, tuple[str, ...]] = {
    "executorch": ("fp32", "int8"),
    "tflite": ("fp32",),
    "onnxruntime": ("fp32", "int8"),
}


def list_runtimes() -> list[str]:
    return list(RUNTIMES)


def get_runtime(name: str, dtype: str = "fp32") -> Runtime:
    """An instance of runtime `name` exporting `dtype` models."""
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; known runtimes: {', '.join(RUNTIMES)}")
    if dtype not in DTYPES[name]:
        raise ValueError(
            f"runtime {name!r} does not support dtype {dtype!r}; supported: {', '.join(DTYPES[name])}"
        )
    module_name, cls_name = RUNTIMES[name].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(dtype=dtype)


def time_invocations(invoke: Callable[[], object], *, warmup: int, runs: int) -> list[float]:
    """Call `invoke` `warmup` times untimed, then `runs` times timed; one µs sample per call."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs ≥ 1 and warmup ≥ 0, got runs={runs}, warmup={warmup}")
    for _ in range(warmup):
        invoke()
    samples: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(runs):
        t0 = clock()
        invoke()
        samples.append((clock() - t0) / 1e3)
    return samples
