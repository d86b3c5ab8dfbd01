"""What a device is (fingerprint) and how it is right now (CPU, thermal, battery).

Parsers are pure functions of command output; the `read_*` functions run the commands.

    parse_cpufreq("/sys/devices/system/cpu/cpu4/cpufreq/cpuinfo_max_freq:2457600\\n...")
        -> {4: {"cpuinfo_max_freq": "2457600", ...}, ...}
    clusters_of(cpus) -> [Cluster(cpus=(0, 1, 2, 3), max_freq_khz=1900800, governor="schedutil"), ...]
    core_mask((4, 5, 6, 7)) -> "f0"
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from .adb import Device

__all__ = [
    "CpuCluster",
    "Battery",
    "parse_cpufreq",
    "clusters_of",
    "core_mask",
    "parse_thermal",
    "cpu_temperature_c",
    "parse_battery",
    "device_id",
    "fingerprint",
    "read_cpus",
    "read_thermal",
    "read_battery",
    "wait_for_cooldown",
    "CPUFREQ_FILES",
]

log = logging.getLogger(__name__)

CPUFREQ_FILES = ("cpuinfo_max_freq", "scaling_cur_freq", "scaling_governor", "related_cpus")
_CPUFREQ_CMD = "grep -H . " + " ".join(
    f"/sys/devices/system/cpu/cpu[0-9]*/cpufreq/{name}" for name in CPUFREQ_FILES
)
_THERMAL_CMD = "grep -H . /sys/class/thermal/thermal_zone*/type /sys/class/thermal/thermal_zone*/temp"
# Thermal zone types that measure the CPU on common SoCs (Qualcomm, Exynos, MediaTek, Tensor).
_CPU_ZONE = re.compile(r"cpu|tsens|big|little|mtktscpu|soc_thermal|cluster", re.I)


@dataclass(frozen=True)
class CpuCluster:
    cpus: tuple[int, ...]
    max_freq_khz: int
    governor: str


@dataclass(frozen=True)
class Battery:
    level_pct: int | None
    temperature_c: float | None


def parse_cpufreq(text: str) -> dict[int, dict[str, str]]:
    """`grep -H .` output over cpu*/cpufreq files -> {cpu: {file: value}}."""
    cpus: dict[int, dict[str, str]] = {}
    for match in re.finditer(r"^/sys/devices/system/cpu/cpu(\d+)/cpufreq/(\w+):(.*)$", text, re.M):
        cpus.setdefault(int(match.group(1)), {})[match.group(2)] = match.group(3).strip()
    return dict(sorted(cpus.items()))


def clusters_of(cpus: dict[int, dict[str, str]]) -> list[CpuCluster]:
    """Group CPUs by cpufreq policy (related_cpus, else equal max frequency), slowest first."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for cpu, files in cpus.items():
        related = tuple(int(c) for c in files.get("related_cpus", "").split() if c.isdigit())
        key = related or (-int(files.get("cpuinfo_max_freq", "0") or 0),)
        groups.setdefault(key, []).append(cpu)
    clusters = []
    for members in groups.values():
        head = cpus[members[0]]
        clusters.append(CpuCluster(
            tuple(sorted(members)),
            int(head.get("cpuinfo_max_freq", "0") or 0),
            head.get("scaling_governor", "unknown"),
        ))
    return sorted(clusters, key=lambda c: (c.max_freq_khz, c.cpus))


def core_mask(cpus: tuple[int, ...]) -> str:
    """taskset hex mask for a set of CPUs."""
    return format(sum(1 << c for c in cpus), "x")


def parse_thermal(text: str) -> dict[str, float]:
    """`grep -H .` over thermal_zone*/type and temp -> {"zone3:cpu-1-0-usr": °C}."""
    types: dict[str, str] = {}
    temps: dict[str, float] = {}
    for zone, name, value in re.findall(r"/(thermal_zone\d+)/(type|temp):(.*)$", text, re.M):
        if name == "type":
            types[zone] = value.strip()
        else:
            try:
                raw = float(value.strip())
            except ValueError:
                continue
            temps[zone] = raw / 1000.0 if abs(raw) >= 200 else raw  # millidegrees on most kernels
    return {
        f"{zone}:{types.get(zone, '?')}": temp
        for zone, temp in sorted(temps.items(), key=lambda kv: int(kv[0][12:]))
        if -40.0 < temp < 150.0  # disabled sensors report nonsense
    }


def cpu_temperature_c(zones: dict[str, float]) -> float | None:
    """Hottest CPU zone; the hottest zone of all when none is recognisably the CPU's."""
    cpu = [t for name, t in zones.items() if _CPU_ZONE.search(name.split(":", 1)[1])]
    pool = cpu or list(zones.values())
    return max(pool) if pool else None


def parse_battery(text: str) -> Battery:
    """`dumpsys battery` -> level and temperature (the latter is printed in tenths of °C)."""
    level = re.search(r"^\s*level:\s*(\d+)", text, re.M)
    temp = re.search(r"^\s*temperature:\s*(-?\d+)", text, re.M)
    return Battery(int(level.group(1)) if level else None,
                   int(temp.group(1)) / 10.0 if temp else None)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def device_id(props: dict[str, str], serial: str) -> str:
    """Stable slug: manufacturer-model-soc-<4 hex of the hardware serial>.

    The suffix keeps two phones of the same model apart (one LUT per physical device)."""
    soc = props.get("ro.soc.model") or props.get("ro.board.platform") or props.get("ro.hardware", "")
    parts = [props.get("ro.product.manufacturer", ""), props.get("ro.product.model", ""), soc]
    hw_serial = props.get("ro.serialno") or props.get("ro.boot.serialno") or serial
    suffix = hashlib.sha256(hw_serial.encode()).hexdigest()[:4]
    return "-".join(p for p in (_slug(x) for x in parts) if p) + f"-{suffix}"


def read_cpus(device: Device) -> dict[int, dict[str, str]]:
    # grep exits 2 when some files are unreadable (offline cores); what it printed still counts.
    return parse_cpufreq(device.shell(_CPUFREQ_CMD).stdout)


def read_thermal(device: Device) -> dict[str, float]:
    return parse_thermal(device.shell(_THERMAL_CMD).stdout)


def read_battery(device: Device) -> Battery:
    return parse_battery(device.shell("dumpsys battery").stdout)


def fingerprint(device: Device) -> dict[str, Any]:
    """Device identity for LUT metadata (contains the `device_id` slug)."""
    props = device.getprops()
    cpus = read_cpus(device)
    clusters = clusters_of(cpus)
    kernel = device.shell("cat /proc/version").stdout.strip()
    return {
        "device_id": device_id(props, device.serial),
        "serial": device.serial,
        "manufacturer": props.get("ro.product.manufacturer", ""),
        "model": props.get("ro.product.model", ""),
        "board": props.get("ro.board.platform", ""),
        "soc": props.get("ro.soc.model", ""),
        "soc_manufacturer": props.get("ro.soc.manufacturer", ""),
        "hardware": props.get("ro.hardware", ""),
        "abi": props.get("ro.product.cpu.abi", ""),
        "android_version": props.get("ro.build.version.release", ""),
        "sdk": props.get("ro.build.version.sdk", ""),
        "build": props.get("ro.build.fingerprint", ""),
        "kernel": kernel,
        "cpu_clusters": [asdict(c) for c in clusters],
    }


def wait_for_cooldown(
    device: Device,
    max_temp_c: float,
    *,
    timeout_s: float = 600.0,
    poll_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> float | None:
    """Block until the CPU temperature is at most `max_temp_c`; returns the last reading.

    Gives up after `timeout_s` with a warning (measuring hot beats never measuring)."""
    deadline = time.monotonic() + timeout_s
    while True:
        temp = cpu_temperature_c(read_thermal(device))
        if temp is None or temp <= max_temp_c:
            return temp
        if time.monotonic() >= deadline:
            log.warning("%s still at %.1f °C after %.0f s (limit %.1f °C); measuring anyway",
                        device.serial, temp, timeout_s, max_temp_c)
            return temp
        log.info("%s at %.1f °C, waiting to cool below %.1f °C", device.serial, temp, max_temp_c)
        sleep(poll_s)
