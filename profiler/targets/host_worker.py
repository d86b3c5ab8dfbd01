"""Timing a model on this machine (`measure_here`), and the process a host round runs it in:
`python -m profiler.targets.host_worker`.

`HostTarget` starts one of these for each round and hands it that round's measurements, so a
round's timings come from a process of their own: where its heap, its packed weights and its
planned buffers land in memory (and so which cache sets they share) is drawn afresh each round,
the same way it is drawn for a user's process. Timings within one process share that draw;
timings of different processes do not (see docs/protocol.md, "Additivity", the process).

Messages go over stdin and the original stdout as `multiprocessing.connection.Connection`
messages (the worker's own stdout goes to stderr, so a runtime that prints cannot corrupt them).
Request: `(runtime_name, dtype, layout, model_path, RunSpec, profile)`. Reply: `("ok",
Measurement)` or `("error", "TypeName: message")`. End of stdin ends the worker.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import math
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import warnings
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from android_harness.tflite_stats import OperatorTiming
from profiler.runtimes import Runtime, get_runtime, time_invocations

from .base import Measurement, RunnerError, RunSpec


def last_level_cache_bytes() -> int:
    """Size of the largest CPU cache sysfs lists (the last-level cache), else 32 MiB."""
    sizes = []
    for f in Path("/sys/devices/system/cpu").glob("cpu0/cache/index*/size"):
        try:
            text = f.read_text().strip()
        except OSError:
            continue
        m = re.fullmatch(r"(\d+)([KMG]?)", text)
        if m:
            sizes.append(int(m[1]) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m[2]])
    return max(sizes, default=32 << 20)


def cold_copies(model_bytes: int, cold_bytes: int = 0, *, cache_bytes: int | None = None, most: int = 64) -> int:
    """Loaded copies to cycle so that their weights (about the file's size each) together hold
    `cold_bytes` (`RunSpec.cold_bytes`: what a network reads and writes in one pass; each invocation
    then finds its copy's weights where a layer's are inside such a network), or with 0 twice the last-level
    cache (`cache_bytes`, else read from sysfs: weights always from memory). At least 2, at most
    `most`."""
    total = cold_bytes or 2 * (cache_bytes or last_level_cache_bytes())
    return max(2, min(most, -(-total // max(1, model_bytes))))


def _rss_kb(trim: bool = False) -> float:
    """This process's resident memory (KiB); `trim` first returns freed heap to the system so that
    the next growth is the next allocation's. Only the young generations are collected: what the
    previous measurement left in cycles is young, and a full pass over a process that imported
    torch costs ~0.2 s per measurement."""
    if trim:
        gc.collect(1)
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc: growth may be hidden by reused free memory
            pass
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return math.nan
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024.0


def measure_here(runtime: Runtime, path: Path, spec: RunSpec, profile: bool) -> Measurement:
    """Time `path` in this process (what a round's worker process runs)."""
    rss0 = _rss_kb(trim=True)
    t0 = time.perf_counter_ns()
    first = runtime.open(path, threads=spec.threads)
    load_us = (time.perf_counter_ns() - t0) / 1e3
    for _ in range(max(1, spec.warmup)):
        first.run()
    memory_kb = _rss_kb() - rss0
    extra = {"load_us": load_us, "memory_kb": memory_kb, "pid": float(os.getpid())}  # pid: the measuring process
    if spec.cache == "cold":
        k = cold_copies(path.stat().st_size, spec.cold_bytes)
        sessions = [first] + [runtime.open(path, threads=spec.threads) for _ in range(k - 1)]
        for s in sessions[1:]:
            s.run()  # a copy's first run pays its lazy set-up; the op itself is warmed up above
        extra["cold_copies"] = float(k)
        samples = []
        clock = time.perf_counter_ns
        for i in range(spec.runs):
            s = sessions[i % k]
            s.refresh_input()
            t = clock()
            s.run()
            samples.append((clock() - t) / 1e3)
        del sessions
    else:
        samples = time_invocations(first.run, warmup=0, runs=spec.runs)
    ops: tuple = ()
    etdump = None
    if profile:
        ops, etdump = _profile(runtime, path, spec)
    return Measurement(samples, extra, ops, etdump, invocations=1)


def _profile(runtime: Runtime, path: Path, spec: RunSpec) -> tuple[tuple, bytes | None]:
    """The runtime's per-operator view of `spec.runs` profiled invocations of `path`."""
    runs = max(5, spec.runs)
    if runtime.name == "executorch":
        session = runtime.open(path, threads=spec.threads, etdump=True)
        for _ in range(spec.warmup + runs):
            session.run()
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run.etdump"
            session.write_etdump(out)
            return (), out.read_bytes()
    if runtime.name == "tflite":
        rows = runtime.open(path, threads=spec.threads).profile_ops(runs=runs, warmup=spec.warmup)
        total = sum(statistics.fmean(r.elapsed_us) for r in rows) or 1.0
        cdf, ops = 0.0, []
        for r in rows:
            avg = statistics.fmean(r.elapsed_us)
            cdf += 100.0 * avg / total
            ops.append(OperatorTiming(r.node_type, r.name, float(r.elapsed_us[0]), avg, 100.0 * avg / total, cdf, 1))
        return tuple(ops), None
    raise RunnerError(f"{runtime.name} has no per-operator profiler on the host")


def serve(requests: Connection, replies: Connection) -> None:
    runtimes: dict[tuple[str, str, str], Any] = {}
    while True:
        try:
            name, dtype, layout, path, spec, profile = requests.recv()
        except EOFError:  # the target ended the round
            return
        try:
            rt = runtimes.get((name, dtype, layout))
            if rt is None:
                rt = runtimes[(name, dtype, layout)] = get_runtime(name, dtype, layout)
                rt.load_libraries()  # not part of the first model's load time
            reply: tuple[str, Any] = ("ok", measure_here(rt, path, spec, profile))
        except Exception as e:  # the parent turns it into a RunnerError for this op
            reply = ("error", f"{type(e).__name__}: {e}")
        replies.send(reply)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops between op-rounds
    requests = Connection(os.dup(sys.stdin.fileno()), writable=False)
    replies = Connection(os.dup(sys.stdout.fileno()), readable=False)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # prints of a runtime go to stderr
    sys.stdout = sys.stderr
    # the libraries' import-time chatter was shown once by the parent; the worker's own warnings stay
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("profiler").setLevel(logging.WARNING)
    warnings.simplefilter("ignore")
    import torch  # noqa: F401  (torch sets its loggers' levels when imported; quiet them after)

    logging.getLogger("torch").setLevel(logging.ERROR)
    serve(requests, replies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
