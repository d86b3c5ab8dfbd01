"""ExecuTorch: `torch.export` → `to_edge_transform_and_lower` (XNNPACK partitioner) → `.pte`.

On the host, `.pte` files run in `executorch.runtime` (the pybindings runtime, which links the
XNNPACK backend); on a phone, in the user's `executor_runner`.

int8 uses ExecuTorch's own post-training quantization flow: `XNNPACKQuantizer` with the symmetric
per-channel config, torchao pt2e `prepare_pt2e` → calibration on random inputs (or on the
`calibration` inputs given to `export`: a trained network's own data) → `convert_pt2e`,
then the same lowering.
"""

from __future__ import annotations

import logging
from importlib.metadata import version
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from . import RUNTIMES
from .base import ExportError, RuntimeBase
from .base import native_stderr_quiet as _native_stderr_quiet

log = logging.getLogger(__name__)

CALIBRATION_BATCHES = 8  # random inputs fed through the prepared model before int8 conversion


class ExecuTorchRuntime(RuntimeBase):
    info = RUNTIMES["executorch"]
    runner_modules = ("executorch.runtime", "executorch.extension.pybindings.portable_lib")

    def versions(self) -> dict[str, str]:
        return {"torch": version("torch"), "executorch": version("executorch")}

    # --- export ---------------------------------------------------------------------------------
    def export(self, module: nn.Module, example_input: torch.Tensor, path: Path,
               calibration: Sequence[torch.Tensor] | None = None) -> None:  # fmt: skip
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        module = module.eval()
        if self.layout == "nhwc" and example_input.dim() == 4:
            # channels-last dim order at the input: XNNPACK then needs no NCHW→NHWC conversion,
            # and 4-D outputs keep the channels-last order their producers give them
            example_input = example_input.contiguous(memory_format=torch.channels_last)
        try:
            with torch.no_grad():
                ep = torch.export.export(module, (example_input,))
                if self.dtype == "int8":
                    ep = self._quantize(ep, example_input, calibration)
                program = to_edge_transform_and_lower(
                    ep, partitioner=[XnnpackPartitioner()]
                ).to_executorch()
        except Exception as e:  # the exporters raise many unrelated types; report any of them
            raise ExportError(f"{type(e).__name__}: {e}") from e
        Path(path).write_bytes(program.buffer)

    @staticmethod
    def _quantize(ep: torch.export.ExportedProgram, example_input: torch.Tensor,
                  calibration: Sequence[torch.Tensor] | None = None):  # fmt: skip
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        prepared = prepare_pt2e(ep.module(), quantizer)
        g = torch.Generator().manual_seed(0)
        xs = calibration or [torch.randn(example_input.shape, generator=g) for _ in range(CALIBRATION_BATCHES)]
        for x in xs:
            prepared(x)
        converted = convert_pt2e(prepared)
        return torch.export.export(converted, (example_input,))

    @staticmethod
    def planned_buffer_sizes(path: Path) -> list[int]:
        """Bytes of each memory-planned buffer of `forward`, as `executor_runner` allocates them
        ("Setting up CPU planned buffer I, size N."); read from the program's flatbuffer, since
        the Python MethodMeta does not expose them."""
        from executorch.exir._serialize._program import deserialize_pte_binary

        pte = deserialize_pte_binary(Path(path).read_bytes())
        program = getattr(pte, "program", pte)
        plan = next((p for p in program.execution_plan if p.name == "forward"), None)
        if plan is None:
            raise ValueError(f"{path}: program has no 'forward' method")
        return list(plan.non_const_buffer_sizes[1:])  # entry 0 is reserved by the planner

    # --- host execution -------------------------------------------------------------------------
    def open(self, path: Path, *, threads: int, seed: int = 0, etdump: bool = False) -> "ExecuTorchSession":
        """`etdump=True` records an ETDump (per-delegate-operator timings of every run) that
        `session.write_etdump(path)` writes out; `executorch.devtools.Inspector` reads it."""
        import executorch.extension.pybindings.portable_lib as portable_lib
        from executorch.runtime import Runtime

        # The runtime logs its first cpuinfo probe of the host ("Failed to open midr file", ...)
        # and each threadpool reset to stderr: nothing about the op, so held back unless it fails.
        with _native_stderr_quiet():
            if portable_lib._threadpool_get_thread_count() != threads:
                portable_lib._unsafe_reset_threadpool(threads)  # the XNNPACK backend's threadpool
            program = Runtime.get().load_program(Path(path), enable_etdump=etdump)
            method = program.load_method("forward")
        if method is None:
            raise RuntimeError(f"{path}: program has no 'forward' method")
        return ExecuTorchSession(program, method, seed, self.layout)


class ExecuTorchSession:
    """A loaded `forward` method. `run()` calls the pybind method's `execute()` on inputs bound
    once with `set_inputs` (the `executorch.runtime.Method` wrapper copies inputs in and clones
    outputs on every call, which `executor_runner` does not)."""

    def __init__(self, program, method, seed: int, layout: str) -> None:
        self._program = program  # keeps the program (and the method's memory) alive
        self._method = method._method  # the pybind ExecuTorchMethod behind the public wrapper
        self._layout = layout
        meta = method.metadata
        g = torch.Generator().manual_seed(seed)
        self._inputs = [
            self._as_layout(torch.randn(tuple(meta.input_tensor_meta(i).sizes()), generator=g))
            for i in range(meta.num_inputs())
        ]
        self._method.set_inputs(self._inputs)

    def _as_layout(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs are bound in the dim order the program was exported with."""
        if self._layout == "nhwc" and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()

    def run(self) -> None:
        self._method.execute()

    def refresh_input(self) -> None:
        self._method.set_inputs(self._inputs)  # copies into the planned input buffer: warm after

    def write_etdump(self, path: Path) -> None:
        """Write the ETDump of every run so far (opened with `etdump=True`)."""
        self._program._program.write_etdump_result_to_file(str(path))

    def infer(self, x: np.ndarray) -> np.ndarray:
        self._method.set_inputs([self._as_layout(torch.from_numpy(np.ascontiguousarray(x)))])
        self._method.execute()
        out = self._method.get_outputs(clone_outputs=True)[0].contiguous().numpy()
        self._method.set_inputs(self._inputs)
        return out
