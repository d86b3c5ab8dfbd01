"""The runtime protocol: export a module to a file, open that file on this machine, run it.

A runtime (executorch, tflite, onnxruntime) knows how to export an `nn.Module` + example input to
its file format, how to open that file on this machine with its own interpreter (a `Session`),
and which device benchmark binary runs the file on a phone (`runner`: the command lines and
output parsers of those binaries live in `android_harness.runners`, which knows nothing of torch).

    rt = get_runtime("executorch")
    rt.export(module, x, Path("op.pte"))
    session = rt.open(Path("op.pte"), threads=1)     # load, plan memory, bind a seeded input
    session.run()                                   # one invocation on the bound input
    y = session.infer(x)                            # bind x, run, return the first output

A session binds its input once: `run()` is the invocation alone, as a runner binary times it
(no per-call input copy or output clone).

Layout (`layout`, part of the export cache key and of a LUT's metadata): "nhwc" (default) exports
4-D inputs and outputs channels-last — ExecuTorch's channels-last dim order, litert-torch's
channel-last I/O — so an op converts no layout at its boundaries, as inside a deployed network
whose input arrives channels-last (a whole network is exported the same way). "nchw" keeps
PyTorch's layout at the boundaries: every exported op pays an NCHW↔NHWC conversion on each side
that a network pays once (kept for comparison: `bench.lut_accuracy --layouts`). ONNX graphs are
NCHW by definition: onnxruntime exports "nchw" only, and its CPU provider converts to its own
blocked layout inside a session, for an op as for a network. Adding a runtime is adding one module to
`profiler/runtimes/` and one `RuntimeInfo` line to the registry in `profiler/runtimes/__init__.py`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

__all__ = ["LAYOUTS", "Runtime", "RuntimeBase", "RuntimeInfo", "Session", "ExportError", "native_stderr_quiet"]

LAYOUTS = ("nhwc", "nchw")  # layouts of exported models' 4-D inputs and outputs (see above)


class ExportError(RuntimeError):
    """Exporting one op failed; the message carries the exporter's own message."""


@dataclass(frozen=True)
class RuntimeInfo:
    """Everything the rest of the project needs to know about a runtime without importing it."""

    name: str  # "executorch" | "tflite" | "onnxruntime"
    impl: str  # "module:Class" of its implementation, imported on first use
    dtypes: tuple[str, ...]  # what it exports: "fp32", "int8" (the runtime's own PTQ flow)
    suffix: str  # file suffix of exported models, e.g. ".pte"
    runner: str | None  # device benchmark binary (an `android_harness.runners` name) or None
    delegate: str  # the backend that runs the ops: "xnnpack", "cpu_ep"
    version_package: str  # the distribution whose version is "the runtime's version"
    layouts: tuple[str, ...] = LAYOUTS  # I/O layouts its exporter can write; the first is the default
    overhead: str = "sampler"  # the form of its overhead op (`search.space.modules.Overhead.FORMS`)
    # The resolution of its operator profiler (per-layer times), or None without one. XNNPACK
    # reports each operator's time in whole µs (`xnn_profile_info_operator_timing`, read by
    # ExecuTorch's ETDump and LiteRT's profiler alike; benchmark_model prints it as ms to 3
    # decimals), so an operator under 1 µs reads 0 or 1.
    op_profile_resolution_us: float | None = 1.0


@runtime_checkable
class Session(Protocol):
    """One model file opened by its runtime's interpreter, with a seeded input bound."""

    def run(self) -> None:
        """One invocation on the bound input (nothing copied in or out)."""
        ...

    def refresh_input(self) -> None:
        """Write the bound input again (as the layer before would): it is in cache afterwards."""
        ...

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Bind `x`, run once and return the first output (for correctness checks)."""
        ...


@runtime_checkable
class Runtime(Protocol):
    info: RuntimeInfo
    name: str  # == info.name
    suffix: str  # == info.suffix
    runner: str | None  # == info.runner
    delegate: str  # == info.delegate
    dtype: str  # "fp32" or "int8"
    layout: str  # "nhwc" or "nchw": the layout of exported models' 4-D inputs and outputs

    @property
    def runtime_version(self) -> str:
        """The version of the interpreter that times models (`info.version_package`)."""
        ...

    def versions(self) -> dict[str, str]:
        """Exporter and runtime versions: part of the export cache key and of the LUT metadata."""
        ...

    def export(self, module: nn.Module, example_input: torch.Tensor, path: Path) -> None:
        """Write `module` to `path`; raise ExportError with the exporter's message on failure.

        Runtimes with int8 also take `calibration=` (inputs shaped like `example_input`) to
        calibrate on instead of random inputs: a trained network's own data."""
        ...

    def open(self, path: Path, *, threads: int, seed: int = 0) -> Session:
        """Load `path` with `threads` intra-op threads and bind a seeded random input."""
        ...


class RuntimeBase:
    """What every runtime class shares: its registry entry and the dtype check.

    Subclasses set `info` (their `RUNTIMES` entry) and implement `versions`, `export`, `open`."""

    info: RuntimeInfo

    def __init__(self, dtype: str = "fp32", layout: str | None = None) -> None:
        if dtype not in self.info.dtypes:
            raise ValueError(
                f"runtime {self.info.name!r} does not support dtype {dtype!r}; "
                f"supported: {', '.join(self.info.dtypes)}"
            )
        layout = layout or self.info.layouts[0]
        if layout not in self.info.layouts:
            raise ValueError(
                f"runtime {self.info.name!r} exports layout(s) {', '.join(self.info.layouts)}, not {layout!r}"
            )
        self.dtype = dtype
        self.layout = layout

    @property
    def export_options(self) -> dict[str, str]:
        """What besides the versions decides an exported file: part of the cache key and LUT meta."""
        return {"dtype": self.dtype, "layout": self.layout}

    @property
    def name(self) -> str:
        return self.info.name

    # the modules `open` needs; `load_libraries` imports them ahead of a timed load
    runner_modules: tuple[str, ...] = ()

    def load_libraries(self) -> None:
        """Import what `open` needs, so that a process's first timed load does not pay for it."""
        for module in self.runner_modules:
            importlib.import_module(module)

    @property
    def suffix(self) -> str:
        return self.info.suffix

    @property
    def runner(self) -> str | None:
        return self.info.runner

    @property
    def delegate(self) -> str:
        return self.info.delegate

    @property
    def runtime_version(self) -> str:
        from importlib.metadata import version

        return version(self.info.version_package)


@contextlib.contextmanager
def native_stderr_quiet() -> Iterator[None]:
    """Hold back what native code writes to fd 2 inside the block; give it back if the block fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            os.write(2, sink.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
