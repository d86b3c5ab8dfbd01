"""The runtime protocol: export a module to a file, run that file.

A runtime (executorch, tflite, onnxruntime) knows how to export an `nn.Module` + example input to
its file format, how to time that file on this machine with its own Python interpreter, and which
device benchmark binary runs the file on a phone (`runner`: the command lines and output parsers
of those binaries live in `android_harness.runners`, which knows nothing of torch).

Adding a runtime is adding one module to `profiler/runtimes/` and one line to its registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["Runtime", "ExportError"]


class ExportError(RuntimeError):
    """Exporting one op failed; the message carries the exporter's own message."""


@runtime_checkable
class Runtime(Protocol):
    name: str  # "executorch" | "tflite" | "onnxruntime"
    suffix: str  # file suffix of exported models, e.g. ".pte"
    runner: str | None  # device benchmark binary ("executor_runner", "benchmark_model") or None
    dtype: str  # "fp32" or "int8"

    def versions(self) -> dict[str, str]:
        """Exporter and runtime versions: part of the export cache key and of the LUT metadata."""
        ...

    def export(self, module: nn.Module, example_input: torch.Tensor, path: Path) -> None:
        """Write `module` to `path`; raise ExportError with the exporter's message on failure."""
        ...

    def run_host(self, path: Path, *, threads: int, warmup: int, runs: int) -> list[float]:
        """Time `runs` invocations of `path` on this machine after `warmup` ones; µs samples."""
        ...
