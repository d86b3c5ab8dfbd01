"""Runtime registry: one `RuntimeInfo` per model format; the implementation is imported on use.

    get_runtime("executorch")            ExecuTorch .pte, XNNPACK delegate (fp32 or int8)
    get_runtime("tflite")                LiteRT .tflite, XNNPACK delegate (fp32)
    get_runtime("onnxruntime", "int8")   ONNX .onnx on onnxruntime's CPU provider (fp32 or int8)

`RUNTIMES[name]` is the one place a runtime's dtypes, file suffix, exporter class and phone runner
are declared; CLIs, the loopback device and tests read them from here. Runtime modules import
their (heavy) exporters at import time, so `get_runtime` imports a module only when asked.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Callable

from .base import LAYOUTS, ExportError, Runtime, RuntimeInfo, Session

__all__ = [
    "LAYOUTS",
    "RUNTIMES",
    "ExportError",
    "Runtime",
    "RuntimeInfo",
    "Session",
    "get_runtime",
    "list_runtimes",
    "runtime_info",
    "time_invocations",
    "run_host",
]

RUNTIMES: dict[str, RuntimeInfo] = {
    info.name: info
    for info in (
        RuntimeInfo("executorch", "profiler.runtimes.executorch:ExecuTorchRuntime", ("fp32", "int8"),
                    ".pte", "executor_runner", "xnnpack", "executorch"),
        RuntimeInfo("tflite", "profiler.runtimes.tflite:TFLiteRuntime", ("fp32",),
                    ".tflite", "benchmark_model", "xnnpack", "ai-edge-litert"),
        RuntimeInfo("onnxruntime", "profiler.runtimes.onnxruntime:OnnxRuntime", ("fp32", "int8"),
                    ".onnx", None, "cpu_ep", "onnxruntime", ("nchw",), "relu", None),
    )
}  # fmt: skip


def list_runtimes() -> list[str]:
    return list(RUNTIMES)


def runtime_info(name: str) -> RuntimeInfo:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise ValueError(f"unknown runtime {name!r}; known runtimes: {', '.join(RUNTIMES)}") from None


def get_runtime(name: str, dtype: str = "fp32", layout: str | None = None) -> Runtime:
    """An instance of runtime `name` exporting `dtype` models with `layout` I/O (see base.py)."""
    info = runtime_info(name)
    if dtype not in info.dtypes:
        raise ValueError(
            f"runtime {name!r} does not support dtype {dtype!r}; supported: {', '.join(info.dtypes)}"
        )
    module_name, cls_name = info.impl.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(dtype=dtype, layout=layout)


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


def run_host(runtime: Runtime, path: Path, *, threads: int, warmup: int, runs: int) -> list[float]:
    """Open `path` once and time `runs` invocations after `warmup` ones (µs samples)."""
    session = runtime.open(Path(path), threads=threads)
    return time_invocations(session.run, warmup=warmup, runs=runs)
