"""The host target: this machine's CPU, timed with each runtime's own Python interpreter.

Each round runs in a fresh process (`profiler.targets.host_worker`), started when the round's
first op is measured and ended at the next `round_state()`: where a loaded model's heap, packed
weights and planned buffers land in memory is drawn once per process, and an ExecuTorch network's
time moves with that draw by up to ~14 % between processes on one quiet machine (its ops' sum by
~5 %). Rounds in one process would all share one draw and the LUT (or a validation half) would
carry it whole; rounds in fresh processes sample it, as a user's processes do. A worker that
crashes or runs past `RunSpec.timeout_s` fails that op-round only (`RunnerError`); the next
measurement starts another worker. `HostTarget(process_per_round=False)` measures in this process.

Fingerprint: CPU model, logical/physical cores, max frequency (cpufreq sysfs, where readable),
OS, Python and library versions. `device_id` = "host-<cpu model slug>-<8 hex of sha256(cpu model,
logical cores, machine)>", stable across runs on the same machine.

Per-round state: current CPU frequency and a thermal-zone temperature where sysfs exposes them,
the 1-minute load average, and how much CPU other processes took since the previous round
(`others_cores`: busy time of the whole machine minus this process's, in cores; `steal_pct` on a
VM). A job times its ops on a quiet machine only: when others take more than `COMPETING_CORES`
of a core while it measures, a warning says so and the LUT's per-round state records it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from profiler.runtimes import Runtime

from .base import Measurement, RunnerError, RunSpec
from .host_worker import measure_here

log = logging.getLogger(__name__)

COMPETING_CORES = 0.25  # others' CPU use (in cores) during a round above which the round is flagged
_LIBRARIES = ("torch", "executorch", "litert-torch", "ai-edge-litert", "onnx", "onnxruntime", "numpy")
_SYS_CPU = Path("/sys/devices/system/cpu")


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def _physical_cores() -> int | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    pairs = set(re.findall(r"physical id\s*:\s*(\d+)[\s\S]*?core id\s*:\s*(\d+)", text))
    return len(pairs) or None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "cpu"


def host_device_id(model: str, logical_cores: int, machine: str) -> str:
    digest = hashlib.sha256(f"{model}|{logical_cores}|{machine}".encode()).hexdigest()[:8]
    return f"host-{_slug(model)}-{digest}"


class HostTarget:
    """This machine's CPU. Runs models in-process; nothing to push."""

    name = "host"
    lock_key = "host"  # `profiler.targets.lock`: one lock for this machine's CPU
    cache_states = ("warm", "cold", "replicas")  # what `RunSpec.cache` may ask for (a job's default: "mixed")

    def __init__(self, *, process_per_round: bool = True) -> None:
        self._fingerprint: dict[str, Any] | None = None
        self._last_cpu: tuple[float, float, float, float] | None = None  # (wall, busy, steal, own) s
        self.process_per_round = process_per_round
        self._worker: _Worker | None = None
        self._workers_cpu_s = 0.0  # CPU time of the workers already ended

    def fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            model = cpu_model()
            logical = os.cpu_count() or 1
            max_khz = _read_int(_SYS_CPU / "cpu0/cpufreq/cpuinfo_max_freq")
            libs = {}
            for lib in _LIBRARIES:
                try:
                    libs[lib] = version(lib)
                except PackageNotFoundError:
                    continue
            self._fingerprint = {
                "device_id": host_device_id(model, logical, platform.machine()),
                "kind": "host",
                "cpu_model": model,
                "machine": platform.machine(),
                "logical_cores": logical,
                "physical_cores": _physical_cores(),
                "max_freq_khz": max_khz,
                "governor": _read_text(_SYS_CPU / "cpu0/cpufreq/scaling_governor"),
                "os": platform.platform(),
                "python": platform.python_version(),
                "libraries": libs,
            }
        return dict(self._fingerprint)

    @property
    def round_process(self) -> str:
        """What a job records of how its rounds ran: "fresh" or "one" (process)."""
        return "fresh" if self.process_per_round else "one"

    def settings(self, runtime: Runtime) -> dict[str, Any]:
        """The job's settings record of the target: how its rounds run ("fresh": each in a
        process of its own; "one": all in the job's process)."""
        return {"name": self.name, "round_process": self.round_process}

    def prepare(self, runtime: Runtime, model_files: list[Path]) -> None:
        missing = [str(p) for p in model_files if not Path(p).is_file()]
        if missing:
            raise RunnerError(f"model files not found on the host: {missing[:5]}")

    def round_state(self) -> dict[str, Any]:
        self._end_worker()  # the round about to start measures in a process of its own
        state: dict[str, Any] = {"load_avg_1m": round(os.getloadavg()[0], 2)}
        state.update(self._competition())
        freq = _read_int(_SYS_CPU / "cpu0/cpufreq/scaling_cur_freq")
        if freq is not None:
            state["cpu_freq_khz"] = freq
        temp = _read_int(Path("/sys/class/thermal/thermal_zone0/temp"))
        if temp is not None:
            state["temperature_c"] = temp / 1000.0
        return state

    def _competition(self) -> dict[str, Any]:
        """CPU taken by other processes since the previous call (the previous round)."""
        now = _cpu_times()
        if now is not None:  # this process's CPU time includes its workers'
            now = (*now[:3], now[3] + self._workers_cpu_s + (self._worker.cpu_s() if self._worker else 0.0))
        last, self._last_cpu = self._last_cpu, now
        if now is None or last is None or now[0] - last[0] < 0.5:
            return {}
        wall = now[0] - last[0]
        others = max(0.0, (now[1] - last[1]) - (now[3] - last[3])) / wall
        state = {"others_cores": round(others, 3), "steal_pct": round(100.0 * (now[2] - last[2]) / wall, 2)}
        if others > COMPETING_CORES:
            log.warning(
                "other processes used %.2f cores while this job measured on the host (load average "
                "%.2f): its timings share the CPU; measure on a quiet machine", others, os.getloadavg()[0],
            )  # fmt: skip
        return state

    def measure(self, runtime: Runtime, model_file: Path, spec: RunSpec) -> list[float]:
        return self.measure_detailed(runtime, model_file, spec).samples_us

    def measure_detailed(
        self, runtime: Runtime, model_file: Path, spec: RunSpec, *, profile: bool = False
    ) -> Measurement:
        """Load the model (timed: `load_us`; its resident memory growth over load and warm-up:
        `memory_kb`), warm up, and time `spec.runs` invocations; `spec.cache` "cold" cycles through
        `cold_copies` loaded copies, re-writing the input of the copy about to run (untimed), so
        each invocation finds its weights out of cache and its input in it. With `profile`, also
        the runtime's per-operator view of separate profiled runs (ExecuTorch: an ETDump; LiteRT:
        XNNPACK's operator timings).

        Runs in the round's worker process (see the module doc), which `spec.timeout_s` bounds;
        core_mask does not apply. With `process_per_round=False`, in this process, where
        `spec.timeout_s` cannot interrupt a native call."""
        if spec.cache not in self.cache_states:
            raise RunnerError(f"the host cannot time with {spec.cache!r} caches")
        path = Path(model_file)
        if self.process_per_round:
            if self._worker is None:
                self._worker = _Worker()
            try:
                status, value = self._worker.call((runtime.name, runtime.dtype, runtime.layout, path, spec, profile),
                                                  spec.timeout_s)  # fmt: skip
            except RunnerError as e:  # it died or hung: the next measurement starts another one
                self._end_worker()
                raise RunnerError(f"{runtime.name} failed to run {path.name}: {e}") from None
            if status == "ok":
                return value
            raise RunnerError(f"{runtime.name} failed to run {path.name}: {value}")
        try:
            return measure_here(runtime, path, spec, profile)
        except Exception as e:  # any runtime failure fails this op only (the job goes on)
            raise RunnerError(f"{runtime.name} failed to run {path.name}: {type(e).__name__}: {e}") from e

    def _end_worker(self) -> None:
        if self._worker is not None:
            worker, self._worker = self._worker, None
            self._workers_cpu_s += worker.stop()

    def close(self) -> None:
        self._end_worker()


class _Worker:
    """A `profiler.targets.host_worker` process: measurements sent in, Measurements back."""

    def __init__(self) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # where `profiler` is importable from
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "profiler.targets.host_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )  # fmt: skip
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._requests = Connection(os.dup(self.proc.stdin.fileno()), readable=False)
        self._replies = Connection(os.dup(self.proc.stdout.fileno()), writable=False)
        self.proc.stdin.close()
        self.proc.stdout.close()
        self._cpu_s = 0.0

    def call(self, request: tuple, timeout_s: float) -> tuple[str, Any]:
        try:
            self._requests.send(request)
        except OSError:
            raise RunnerError(self._gone()) from None
        if not self._replies.poll(timeout_s):
            self.proc.kill()
            raise RunnerError(f"no result within {timeout_s:g} s (RunSpec.timeout_s); the measuring process was killed")
        try:
            return self._replies.recv()
        except EOFError:
            raise RunnerError(self._gone()) from None

    def _gone(self) -> str:
        code = self.proc.wait(timeout=5)
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        return f"the measuring process ended ({how})"

    def cpu_s(self) -> float:
        """CPU time this worker has used so far (its /proc stat; the last value once it ended)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            self._cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
        return self._cpu_s

    def stop(self) -> float:
        """End the worker (end of its input, then a kill if it lingers); its CPU time."""
        cpu = self.cpu_s()
        self._requests.close()  # the worker reads the end of its input
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._replies.close()
        return cpu


def _cpu_times() -> tuple[float, float, float, float] | None:
    """(monotonic s, machine busy CPU-s, machine steal CPU-s, this process's CPU-s) from /proc."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    v = [int(x) / ticks for x in fields]
    # user nice system idle iowait irq softirq steal ...
    busy = v[0] + v[1] + v[2] + v[5] + v[6]
    steal = v[7] if len(v) > 7 else 0.0
    t = os.times()
    return time.monotonic(), busy, steal, t.user + t.system


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
