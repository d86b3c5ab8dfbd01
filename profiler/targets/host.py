"""The host target: this machine's CPU, timed in-process with each runtime's own interpreter.

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
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from profiler.runtimes import Runtime, run_host

from .base import RunnerError, RunSpec

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

    def __init__(self) -> None:
        self._fingerprint: dict[str, Any] | None = None
        self._last_cpu: tuple[float, float, float, float] | None = None  # (wall, busy, steal, own) s

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

    def prepare(self, runtime: Runtime, model_files: list[Path]) -> None:
        missing = [str(p) for p in model_files if not Path(p).is_file()]
        if missing:
            raise RunnerError(f"model files not found on the host: {missing[:5]}")

    def round_state(self) -> dict[str, Any]:
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
        # In-process: spec.timeout_s cannot interrupt a native call, and core_mask does not apply.
        try:
            return run_host(runtime, Path(model_file), threads=spec.threads, warmup=spec.warmup, runs=spec.runs)
        except Exception as e:  # any runtime failure fails this op only (the job goes on)
            raise RunnerError(f"{runtime.name} failed to run {Path(model_file).name}: {type(e).__name__}: {e}") from e

    def close(self) -> None:
        return None


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
