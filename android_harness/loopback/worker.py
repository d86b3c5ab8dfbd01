"""The loopback device's runtime worker: times models with the host runtimes.

Importing `executorch.runtime` costs seconds, far more than a phone's `executor_runner` takes to
start, so each loopback device keeps one worker process with the runtimes loaded. The runner shims
(separate processes with the real runners' flags and output) send it one request each over a
UNIX socket and print what it measured. Every request loads the model afresh, as a fresh runner
process would.

Request (one JSON line): {"runtime": "tflite"|"executorch", "model": host path, "threads": int,
"warmup": int, "warmup_min_s": float, "runs": int, "min_s": float, "max_s": float,
"xnnpack": bool}. Reply (one JSON line): {"ok": true, "init_us": float, "warmup_us": [...],
"runs_us": [...]} or {"ok": false, "error": str}.

    python -m android_harness.loopback.worker /tmp/x/runtime.sock
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from typing import Any, Callable

__all__ = ["request", "serve"]

log = logging.getLogger(__name__)


def _timed_loop(
    invoke: Callable[[], None], count: int, min_s: float, max_s: float
) -> list[float]:
    """benchmark_model's loop: at least `count` runs and `min_s` seconds, at most `max_s`."""
    times_us: list[float] = []
    start = time.perf_counter()
    while len(times_us) < count or time.perf_counter() - start < min_s:
        if max_s > 0 and time.perf_counter() - start > max_s:
            break
        t0 = time.perf_counter_ns()
        invoke()
        times_us.append((time.perf_counter_ns() - t0) / 1000.0)
    return times_us


def _tflite(req: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    from ai_edge_litert import interpreter as litert

    t0 = time.perf_counter_ns()
    resolver = (
        litert.OpResolverType.AUTO
        if req.get("xnnpack", True)
        else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interp = litert.Interpreter(
        model_path=req["model"], num_threads=req["threads"], experimental_op_resolver_type=resolver
    )
    interp.allocate_tensors()
    init_us = (time.perf_counter_ns() - t0) / 1000.0
    rng = np.random.default_rng(0)
    for detail in interp.get_input_details():
        data = rng.standard_normal(detail["shape"]).astype(detail["dtype"])
        interp.set_tensor(detail["index"], data)
    warm = _timed_loop(interp.invoke, req["warmup"], req.get("warmup_min_s", 0.0), req["max_s"])
    runs = _timed_loop(interp.invoke, req["runs"], req.get("min_s", 0.0), req["max_s"])
    return {"ok": True, "init_us": init_us, "warmup_us": warm, "runs_us": runs}


def _executorch(req: dict[str, Any]) -> dict[str, Any]:
    import torch
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    if req["threads"] > 0:
        portable_lib._unsafe_reset_threadpool(req["threads"])
    t0 = time.perf_counter_ns()
    program = Runtime.get().load_program(req["model"])
    method = program.load_method("forward")
    if method is None:
        raise ValueError("program has no method 'forward'")
    init_us = (time.perf_counter_ns() - t0) / 1000.0
    meta = method.metadata
    inputs = [torch.ones(meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())]
    warm = _timed_loop(lambda: method.execute(inputs), req["warmup"], 0.0, req["max_s"])
    runs = _timed_loop(lambda: method.execute(inputs), req["runs"], 0.0, req["max_s"])
    return {"ok": True, "init_us": init_us, "warmup_us": warm, "runs_us": runs}


_RUNTIMES: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "tflite": _tflite,
    "executorch": _executorch,
}


def _handle(line: bytes) -> dict[str, Any]:
    try:
        req = json.loads(line)
        run = _RUNTIMES[req["runtime"]]
    except (ValueError, KeyError) as exc:
        return {"ok": False, "error": f"bad request: {exc!r}"}
    try:
        return run(req)
    except Exception as exc:  # noqa: BLE001 - any runtime failure is reported to the runner
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def serve(path: str) -> None:
    """Answer requests one at a time until killed (one device runs one runner at a time)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    while True:
        conn, _ = server.accept()
        with conn, conn.makefile("rwb") as stream:
            line = stream.readline()
            if line:
                stream.write(json.dumps(_handle(line)).encode() + b"\n")
                stream.flush()


def request(payload: dict[str, Any], socket_path: str | None = None) -> dict[str, Any]:
    """Send one request to the worker named by $LOOPBACK_RUNTIME_SOCKET and wait for it."""
    path = socket_path or os.environ.get("LOOPBACK_RUNTIME_SOCKET", "")
    if not path:
        raise RuntimeError("LOOPBACK_RUNTIME_SOCKET is not set: run this under the loopback device")
    deadline = time.monotonic() + 30.0
    while True:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(path)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            conn.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with conn, conn.makefile("rwb") as stream:
        stream.write(json.dumps(payload).encode() + b"\n")
        stream.flush()
        reply = stream.readline()
    if not reply:
        return {"ok": False, "error": "runtime worker closed the connection"}
    return json.loads(reply)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    serve(sys.argv[1])
