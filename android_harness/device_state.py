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
    "read_screen",
    "read_caches",
    "parse_caches",
    "private_cache_bytes",
    "parse_battery_sysfs",
    "parse_screen",
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
    charging: bool | None = None  # on a charger (AC, USB or wireless powered, or status charging)
    source: str = "dumpsys"  # where it was read: "dumpsys", "sysfs", or "" (neither answered)


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
    """`dumpsys battery` -> level, temperature (printed in tenths of °C) and whether it charges."""
    level = re.search(r"^\s*level:\s*(\d+)", text, re.M)
    temp = re.search(r"^\s*temperature:\s*(-?\d+)", text, re.M)
    powered = re.findall(r"^\s*(?:AC|USB|Wireless|Dock) powered:\s*(true|false)", text, re.M)
    status = re.search(r"^\s*status:\s*(\d+)", text, re.M)  # BatteryManager: 2 charging, 5 full
    charging = None
    if powered or status:
        charging = "true" in powered or (status is not None and status.group(1) == "2")
    return Battery(int(level.group(1)) if level else None,
                   int(temp.group(1)) / 10.0 if temp else None, charging)


_BATTERY_SYSFS = "/sys/class/power_supply"
_BATTERY_CMD = (f"grep -H . {_BATTERY_SYSFS}/battery/capacity {_BATTERY_SYSFS}/battery/temp "
                f"{_BATTERY_SYSFS}/battery/status {_BATTERY_SYSFS}/*/online")


def parse_battery_sysfs(text: str) -> Battery:
    """`grep -H .` over power_supply files -> level, temperature (tenths of °C), charging."""
    values = dict(re.findall(r"^/sys/class/power_supply/([^:]+):(.*)$", text, re.M))
    level = values.get("battery/capacity", "").strip()
    temp = values.get("battery/temp", "").strip()
    status = values.get("battery/status", "").strip()
    online = [v.strip() for k, v in values.items() if k.endswith("/online") and not k.startswith("battery/")]
    charging = None
    if status or online:
        charging = status in ("Charging", "Full") or "1" in online
    return Battery(int(level) if level.isdigit() else None,
                   int(temp) / 10.0 if re.fullmatch(r"-?\d+", temp) else None, charging, "sysfs")


def parse_screen(text: str) -> bool | None:
    """`dumpsys power` -> whether the screen is on (mWakefulness=Awake, or Display Power: state=ON)."""
    wake = re.search(r"mWakefulness=(\w+)", text)
    if wake:
        return wake.group(1) == "Awake"
    display = re.search(r"Display Power: state=(\w+)", text)
    return display.group(1) == "ON" if display else None


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


_CACHE_FILES = ("level", "type", "size", "shared_cpu_list")
_CACHE_CMD = "grep -H . " + " ".join(
    f"/sys/devices/system/cpu/cpu[0-9]*/cache/index[0-9]*/{name}" for name in _CACHE_FILES)


def parse_caches(text: str) -> dict[int, list[dict[str, Any]]]:
    """`grep -H .` over cpu*/cache/index*/{level,type,size,shared_cpu_list} -> {cpu: [{"level",
    "type", "size_bytes", "shared_cpu_list"}, ...]} (sizes like `512K`, `2M`), by level."""
    raw: dict[tuple[int, int], dict[str, str]] = {}
    for cpu, index, name, value in re.findall(
            r"^/sys/devices/system/cpu/cpu(\d+)/cache/index(\d+)/(\w+):(.*)$", text, re.M):
        raw.setdefault((int(cpu), int(index)), {})[name] = value.strip()
    out: dict[int, list[dict[str, Any]]] = {}
    for (cpu, _), files in sorted(raw.items()):
        size = re.fullmatch(r"(\d+)\s*([KMG]?)B?", files.get("size", ""))
        if not size or not files.get("level", "").isdigit():
            continue
        out.setdefault(cpu, []).append({
            "level": int(files["level"]), "type": files.get("type", ""),
            "size_bytes": int(size.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[size.group(2)],
            "shared_cpu_list": files.get("shared_cpu_list", ""),
        })
    return {cpu: sorted(c, key=lambda x: (x["level"], x["type"])) for cpu, c in out.items()}


def private_cache_bytes(caches: dict[int, list[dict[str, Any]]], cpu: int) -> int | None:
    """The size of `cpu`'s level-2 (data or unified) cache: what one core keeps of an op's weights
    between invocations (a cluster-shared L2 counts: a single-threaded op has it to itself).
    None when sysfs lists no L2 for it."""
    l2 = [c["size_bytes"] for c in caches.get(cpu, []) if c["level"] == 2 and c["type"] in ("Data", "Unified")]
    return max(l2) if l2 else None


def read_caches(device: Device) -> dict[int, list[dict[str, Any]]]:
    """The CPU caches sysfs lists ({} where the kernel lists none, as some phone kernels do)."""
    return parse_caches(device.shell(_CACHE_CMD).stdout)


def read_cpus(device: Device) -> dict[int, dict[str, str]]:
    # grep exits 2 when some files are unreadable (offline cores); what it printed still counts.
    return parse_cpufreq(device.shell(_CPUFREQ_CMD).stdout)


def read_thermal(device: Device) -> dict[str, float]:
    return parse_thermal(device.shell(_THERMAL_CMD).stdout)


def read_battery(device: Device) -> Battery:
    """From `dumpsys battery`; where it has no battery service, from sysfs (power_supply)."""
    found = parse_battery(device.shell("dumpsys battery").stdout)
    if found.level_pct is not None or found.temperature_c is not None:
        return found
    sysfs = parse_battery_sysfs(device.shell(_BATTERY_CMD).stdout)
    if sysfs.level_pct is None and sysfs.temperature_c is None and sysfs.charging is None:
        return Battery(None, None, None, "")
    return sysfs


def read_screen(device: Device) -> tuple[bool | None, str]:
    """(screen on, source): `dumpsys power`, else the backlight's brightness in sysfs (0 = off),
    else (None, "")."""
    on = parse_screen(device.shell("dumpsys power").stdout)
    if on is not None:
        return on, "dumpsys"
    text = device.shell("grep -H . /sys/class/backlight/*/brightness").stdout
    levels = re.findall(r"/brightness:(\d+)\s*$", text, re.M)
    if levels:
        return any(int(v) > 0 for v in levels), "sysfs"
    return None, ""


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
