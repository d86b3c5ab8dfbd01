"""Per-operator timings of a .tflite model on this machine, from LiteRT's own profiler.

ai-edge-litert's Python API (`Interpreter`, `CompiledModel`) has no profiler, but the
`libLiteRt.so` it ships exports LiteRT's C API, profiler included (litert/c/litert_profiler.h,
litert_compiled_model.h). This module drives that C API through ctypes:

    environment -> model -> options (CPU accelerator; opaque "xnnpack" options with num_threads;
    opaque "runtime_options_string" with `enable_profiling = true`) -> compiled model -> managed
    tensor buffers -> LiteRtRunCompiledModel, with LiteRtStartProfiler/LiteRtStopProfiler
    around each profiled run -> LiteRtGetProfilerEvents.

The CPU accelerator applies the XNNPACK delegate, which reports each of its internal operators
(DELEGATE_PROFILED_OPERATOR_INVOKE_EVENT, e.g. "Convolution (NHWC, F32) IGEMM"); nodes it does
not take are reported by the interpreter (OPERATOR_INVOKE_EVENT, e.g. "CONV_2D"). Times are the
profiler's integer microseconds, as in `benchmark_model --enable_op_profiling=true`, and rows are
named as its tables name them (`Delegate/<op>:<index>`, `[<output tensors>]:<node>`).

    rows = profile_tflite(Path("op.tflite"), threads=1, runs=10)
    rows[0].node_type, rows[0].name, rows[0].elapsed_us   # ("Convolution (NHWC, F32) GEMM", ...)

The opaque option identifiers and TOML payloads are those of LiteRT's own option builders
(litert/c/options/litert_runtime_options.cc, litert_cpu_options.cc), which the library does not
export.
"""

from __future__ import annotations

import ctypes as C
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["OperatorProfile", "profile_tflite", "LiteRtError"]

_OK = 0
_HW_CPU = 1  # kLiteRtHwAcceleratorCpu
_LOCK_WRITE = 1  # kLiteRtTensorBufferLockModeWrite
_OPERATOR_INVOKE = 1 << 1  # LiteRtProfilerEventType
_DELEGATE_PROFILED_OPERATOR_INVOKE = 1 << 3
_P = C.c_void_p


class LiteRtError(RuntimeError):
    """A LiteRT C API call failed."""


class _MemoryUsage(C.Structure):
    _fields_ = [("total_allocated_bytes", C.c_size_t), ("in_use_allocated_bytes", C.c_size_t),
                ("private_footprint_bytes", C.c_size_t)]


class _Event(C.Structure):  # ProfiledEventData (litert/c/litert_profiler_event.h)
    _fields_ = [("tag", C.c_char_p), ("event_type", C.c_int), ("start_timestamp_us", C.c_uint64),
                ("elapsed_time_us", C.c_uint64), ("begin_mem_usage", _MemoryUsage),
                ("end_mem_usage", _MemoryUsage), ("event_metadata1", C.c_uint64),
                ("event_metadata2", C.c_uint64), ("event_source", C.c_int)]


@dataclass(frozen=True)
class OperatorProfile:
    """One operator of the model, with its time in each profiled run (execution order)."""

    node_type: str  # XNNPACK operator ("Convolution (NHWC, F32) GEMM") or TFLite op ("CONV_2D")
    name: str  # as benchmark_model's tables name it: "Delegate/<op>:<index>" or "[outputs]:<node>"
    index: int  # the delegate's operator index, or the interpreter's node index
    delegated: bool  # run inside the XNNPACK delegate
    elapsed_us: tuple[int, ...]  # one value per profiled run


_lib_lock = threading.Lock()
_lib: C.CDLL | None = None


def _library() -> C.CDLL:
    global _lib
    with _lib_lock:
        if _lib is None:
            import ai_edge_litert

            lib = C.CDLL(os.path.join(os.path.dirname(ai_edge_litert.__file__), "libLiteRt.so"))
            lib.LiteRtGetProfilerEvents.argtypes = [_P, C.c_int, C.POINTER(_Event)]
            lib.LiteRtCreateModelFromFile.argtypes = [_P, C.c_char_p, C.POINTER(_P)]
            lib.LiteRtCreateOpaqueOptions.argtypes = [C.c_char_p, _P, _P, C.POINTER(_P)]
            lib.LiteRtRunCompiledModel.argtypes = [_P, C.c_size_t, C.c_size_t, _P, C.c_size_t, _P]
            for name in ("LiteRtDestroyTensorBuffer", "LiteRtDestroyCompiledModel", "LiteRtDestroyOptions",
                         "LiteRtDestroyModel", "LiteRtDestroyEnvironment"):
                getattr(lib, name).argtypes = [_P]
                getattr(lib, name).restype = None
            _lib = lib
        return _lib


def _check(status: int, call: str) -> None:
    if status != _OK:
        raise LiteRtError(f"{call} failed with LiteRtStatus {status}")


class _ProfiledModel:
    """A compiled model with profiling enabled and its input/output buffers (owns them all)."""

    def __init__(self, path: Path, threads: int, seed: int, xnnpack: bool = True) -> None:
        lib = self._lib = _library()
        libc = C.CDLL(None)
        libc.malloc.restype = _P
        self._env, self._model, self._options, self._compiled = _P(), _P(), _P(), _P()
        self._buffers: list[_P] = []
        _check(lib.LiteRtCreateEnvironment(0, None, C.byref(self._env)), "LiteRtCreateEnvironment")
        _check(lib.LiteRtCreateModelFromFile(self._env, str(path).encode(), C.byref(self._model)),
               f"LiteRtCreateModelFromFile({path})")
        _check(lib.LiteRtCreateOptions(C.byref(self._options)), "LiteRtCreateOptions")
        _check(lib.LiteRtSetOptionsHardwareAccelerators(self._options, _HW_CPU),
               "LiteRtSetOptionsHardwareAccelerators")
        cpu = f"num_threads = {threads}\n" + ("" if xnnpack else 'kernel_mode = "builtin"\n')
        for identifier, toml in ((b"xnnpack", cpu),
                                 (b"runtime_options_string", "enable_profiling = true\n")):
            raw = toml.encode() + b"\0"
            payload = libc.malloc(len(raw))  # freed by the options (destructor: free)
            C.memmove(payload, raw, len(raw))
            opaque = _P()
            _check(lib.LiteRtCreateOpaqueOptions(identifier, payload, C.cast(libc.free, _P), C.byref(opaque)),
                   "LiteRtCreateOpaqueOptions")
            _check(lib.LiteRtAddOpaqueOptions(self._options, opaque), "LiteRtAddOpaqueOptions")
        _check(lib.LiteRtCreateCompiledModel(self._env, self._model, self._options, C.byref(self._compiled)),
               "LiteRtCreateCompiledModel")
        signature = _P()
        _check(lib.LiteRtGetModelSignature(self._model, C.c_size_t(0), C.byref(signature)),
               "LiteRtGetModelSignature")
        rng = np.random.default_rng(seed)
        self._inputs = self._make_buffers(signature, "Input", rng)
        self._outputs = self._make_buffers(signature, "Output", None)
        self._profiler = _P()
        _check(lib.LiteRtCompiledModelGetProfiler(self._compiled, C.byref(self._profiler)),
               "LiteRtCompiledModelGetProfiler")
        if not self._profiler:
            raise LiteRtError("the compiled model has no profiler (runtime option not applied)")

    def _make_buffers(self, signature: _P, kind: str, rng: np.random.Generator | None) -> C.Array:
        lib = self._lib
        count = C.c_size_t()
        _check(getattr(lib, f"LiteRtGetNumSignature{kind}s")(signature, C.byref(count)),
               f"LiteRtGetNumSignature{kind}s")
        array = (_P * count.value)()
        for i in range(count.value):
            tensor, requirements, buffer = _P(), _P(), _P()
            _check(getattr(lib, f"LiteRtGetSignature{kind}TensorByIndex")(signature, C.c_size_t(i), C.byref(tensor)),
                   f"LiteRtGetSignature{kind}TensorByIndex")
            tensor_type = C.create_string_buffer(1024)  # LiteRtRankedTensorType, passed back opaque
            _check(lib.LiteRtGetRankedTensorType(tensor, tensor_type), "LiteRtGetRankedTensorType")
            _check(getattr(lib, f"LiteRtGetCompiledModel{kind}BufferRequirements")(
                self._compiled, C.c_size_t(0), C.c_size_t(i), C.byref(requirements)),
                f"LiteRtGetCompiledModel{kind}BufferRequirements")
            _check(lib.LiteRtCreateManagedTensorBufferFromRequirements(
                self._env, tensor_type, requirements, C.byref(buffer)),
                "LiteRtCreateManagedTensorBufferFromRequirements")
            self._buffers.append(buffer)
            array[i] = buffer
            if rng is not None:
                self._fill(buffer, rng)
        return array

    def _fill(self, buffer: _P, rng: np.random.Generator) -> None:
        size, host = C.c_size_t(), _P()
        _check(self._lib.LiteRtGetTensorBufferPackedSize(buffer, C.byref(size)), "LiteRtGetTensorBufferPackedSize")
        data = rng.standard_normal(size.value // 4).astype(np.float32).tobytes()
        _check(self._lib.LiteRtLockTensorBuffer(buffer, C.byref(host), _LOCK_WRITE), "LiteRtLockTensorBuffer")
        C.memmove(host, data, len(data))
        _check(self._lib.LiteRtUnlockTensorBuffer(buffer), "LiteRtUnlockTensorBuffer")

    def run(self, profiled: bool) -> list[_Event]:
        lib = self._lib
        if profiled:
            _check(lib.LiteRtResetProfiler(self._profiler), "LiteRtResetProfiler")
            _check(lib.LiteRtStartProfiler(self._profiler), "LiteRtStartProfiler")
        _check(lib.LiteRtRunCompiledModel(self._compiled, 0, len(self._inputs), self._inputs,
                                          len(self._outputs), self._outputs), "LiteRtRunCompiledModel")
        if not profiled:
            return []
        _check(lib.LiteRtStopProfiler(self._profiler), "LiteRtStopProfiler")
        count = C.c_int()
        _check(lib.LiteRtGetNumProfilerEvents(self._profiler, C.byref(count)), "LiteRtGetNumProfilerEvents")
        if count.value == 0:
            return []
        events = (_Event * count.value)()
        _check(lib.LiteRtGetProfilerEvents(self._profiler, count.value, events), "LiteRtGetProfilerEvents")
        return list(events)

    def close(self) -> None:
        lib = self._lib
        for buffer in self._buffers:
            lib.LiteRtDestroyTensorBuffer(buffer)
        self._buffers = []
        for handle, destroy in ((self._compiled, lib.LiteRtDestroyCompiledModel),
                                (self._options, lib.LiteRtDestroyOptions),
                                (self._model, lib.LiteRtDestroyModel),
                                (self._env, lib.LiteRtDestroyEnvironment)):
            if handle:
                destroy(handle)
        self._compiled = self._options = self._model = self._env = _P()


def _output_names(path: Path) -> dict[int, str]:
    """Interpreter node index -> "[output tensor names]", as ProfileSummarizer names nodes."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(path),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    return {op["index"]: "[" + ", ".join(tensors.get(int(o), "Unknown") for o in op["outputs"]) + "]"
            for op in interp._get_ops_details()}


def profile_tflite(
    path: Path, *, threads: int, runs: int, warmup: int = 1, seed: int = 0, xnnpack: bool = True
) -> list[OperatorProfile]:
    """Per-operator times of `runs` profiled invocations after `warmup` unprofiled ones;
    `xnnpack=False` runs LiteRT's builtin kernels (CPU option kernel_mode "builtin")."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs ≥ 1 and warmup ≥ 0, got runs={runs}, warmup={warmup}")
    model = _ProfiledModel(Path(path), threads, seed, xnnpack)
    try:
        for _ in range(warmup):
            model.run(profiled=False)
        per_run = []
        for _ in range(runs):
            per_run.append([(e.event_type, e.tag.decode(errors="replace"), int(e.event_metadata1),
                             int(e.elapsed_time_us)) for e in model.run(profiled=True)
                            if e.event_type in (_OPERATOR_INVOKE, _DELEGATE_PROFILED_OPERATOR_INVOKE)])
    finally:
        model.close()
    names = _output_names(Path(path)) if any(t == _OPERATOR_INVOKE for run in per_run for t, *_ in run) else {}
    rows: dict[str, dict] = {}
    for run in per_run:
        for event_type, tag, index, elapsed in run:
            delegated = event_type == _DELEGATE_PROFILED_OPERATOR_INVOKE
            name = f"Delegate/{tag}:{index}" if delegated else f"{names.get(index, '[Unknown]')}:{index}"
            row = rows.setdefault(name, {"node_type": tag, "name": name, "index": index,
                                         "delegated": delegated, "elapsed_us": []})
            row["elapsed_us"].append(elapsed)
    return [OperatorProfile(**{**r, "elapsed_us": tuple(r["elapsed_us"])}) for r in rows.values()]
