"""The loopback device's runtime worker: times models with the host runtimes of `profiler.runtimes`.

Importing `executorch.runtime` costs seconds, far more than a phone's `executor_runner` takes to
start, so each loopback device keeps one worker process with the runtimes loaded. The runner shims
(separate processes with the real runners' flags and output) send it one request each over a
UNIX socket and print what it measured. Every request opens the model afresh through
`get_runtime(name).open(path, threads=...)`, as a fresh runner process would, and times
`session.run()`, the invocation alone.

Request (one JSON line): {"runner": "benchmark_model"|"executor_runner" (timed with the
runtime whose `RuntimeInfo.runner` it is), "model": host path, "threads": int,
"warmup": int, "warmup_min_s": float, "runs": int, "min_s": float, "max_s": float,
"xnnpack": bool, "profile_ops": bool, "etdump_path": host path or null, "slow_first": [N, k]
(optional: the first N inferences take k times as long)}.
Reply (one JSON line): {"ok": true, "init_us": float, "warmup_us": [...], "runs_us": [...],
"rss_start_kb", "rss_init_kb", "rss_end_kb": int, "planned_buffers": [bytes, ...] (executorch),
"ops": [[[name, node_type, µs], ...] per profiled run] (tflite with profile_ops)} or
{"ok": false, "error": str}.

A runtime's first request opens the model once untimed before the timed open: that open imports
the runtime's Python modules (seconds for ExecuTorch), which a runner binary never pays.

Memory: the worker lives on, so instead of the runner's peak-RSS growth since its start it reports
its resident set before opening the model, after opening it and after the runs.

    python -m android_harness.loopback.worker /tmp/x/runtime.sock
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

__all__ = ["request", "serve", "handle"]

log = logging.getLogger(__name__)

_warm: set[str] = set()  # runtimes whose modules this process has imported


def _rss_kb() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _timed_loop(invoke: Callable[[], None], count: int, min_s: float, max_s: float) -> list[float]:
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


def _slowed(invoke: Callable[[], None], count: int, factor: float) -> Callable[[], None]:
    """`invoke`, whose first `count` calls take `factor` times as long (a governor ramping up):
    each of them is followed by a busy wait of (factor - 1) times its own duration."""
    calls = [0]

    def run() -> None:
        t0 = time.perf_counter()
        invoke()
        calls[0] += 1
        if calls[0] <= count and factor > 1.0:
            until = time.perf_counter() + (factor - 1.0) * (time.perf_counter() - t0)
            while time.perf_counter() < until:
                pass

    return run


def _measure(req: dict[str, Any]) -> dict[str, Any]:
    from profiler.runtimes import RUNTIMES, get_runtime

    name = next((n for n, info in RUNTIMES.items() if info.runner == req["runner"]), None)
    if name is None:
        raise ValueError(f"no runtime in profiler.runtimes.RUNTIMES has the runner {req['runner']!r}")
    runtime = get_runtime(name)
    path = Path(req["model"])
    options: dict[str, Any] = {}
    if "xnnpack" in inspect.signature(runtime.open).parameters:
        options["xnnpack"] = req.get("xnnpack", True)
    if req.get("etdump_path"):
        options["etdump"] = True
    if name not in _warm:
        runtime.open(path, threads=max(int(req["threads"]), 1))
        _warm.add(name)
    rss_start = _rss_kb()
    t0 = time.perf_counter_ns()
    session = runtime.open(path, threads=max(int(req["threads"]), 1), **options)
    init_us = (time.perf_counter_ns() - t0) / 1000.0
    rss_init = _rss_kb()
    reply: dict[str, Any] = {"ok": True, "init_us": init_us}
    run = _slowed(session.run, *req.get("slow_first", [0, 1.0]))
    reply["warmup_us"] = _timed_loop(run, req["warmup"], req.get("warmup_min_s", 0.0), req["max_s"])
    reply["runs_us"] = _timed_loop(run, req["runs"], req.get("min_s", 0.0), req["max_s"])
    reply.update(rss_start_kb=rss_start, rss_init_kb=rss_init, rss_end_kb=_rss_kb())
    if hasattr(runtime, "planned_buffer_sizes"):
        reply["planned_buffers"] = runtime.planned_buffer_sizes(path)
    if req.get("profile_ops") and reply["runs_us"]:
        rows = session.profile_ops(runs=len(reply["runs_us"]))
        reply["ops"] = [[[r.name, r.node_type, r.elapsed_us[i]] for r in rows if i < len(r.elapsed_us)]
                        for i in range(len(reply["runs_us"]))]
    if req.get("etdump_path"):
        session.write_etdump(Path(req["etdump_path"]))
    return reply


def handle(line: bytes) -> dict[str, Any]:
    """One request line -> its reply (errors are replies, never exceptions)."""
    try:
        req = json.loads(line)
        for key in ("runner", "model", "threads", "warmup", "runs", "max_s"):
            req[key]
    except (ValueError, KeyError, TypeError) as exc:
        return {"ok": False, "error": f"bad request: {exc!r}"}
    try:
        return _measure(req)
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
                stream.write(json.dumps(handle(line)).encode() + b"\n")
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
