"""`doctor`: is a device ready to profile, and if not, what to fix.

    for check in run_checks(device, work_dir="/data/local/tmp/hwnas"):
        print(check.ok, check.name, check.detail, check.fix)
"""

from __future__ import annotations

from .adb import AdbError, Device
from .clocks import su_prefix
from .device_state import clusters_of, cpu_temperature_c, read_battery, read_cpus, read_thermal
from .files import WorkDir
from .preflight import Check, check_abi
from .runners import RUNNERS

__all__ = ["Check", "run_checks"]


def _runner_check(device: Device, work: WorkDir, name: str) -> Check:
    path = work.remote(name)
    found = device.stat(path)
    if found is None:
        return Check(f"runner {name}", False, f"{path} is missing",
                     f"build or download {name} for arm64 (docs/phone.md) and pass "
                     f"--runner {name}=PATH once; it is pushed to {path}")
    mode, size = found
    if not mode & 0o111:
        return Check(f"runner {name}", False, f"{path} is not executable",
                     f"adb -s {device.serial} shell chmod 755 {path}")
    return Check(f"runner {name}", True, f"{path} ({size} bytes, executable)")


def run_checks(
    device: Device,
    *,
    work_dir: str,
    min_battery_pct: int = 30,
    max_temp_c: float = 45.0,
    min_free_mb: int = 200,
) -> list[Check]:
    """Every check, in the order a user fixes them."""
    work = WorkDir(device, work_dir)
    checks = []
    for name in RUNNERS:
        checks.append(_runner_check(device, work, name))
        if checks[-1].ok:  # present and executable: does it run on this phone's userspace?
            checks.append(check_abi(device, work, name))
    try:
        free_kb = work.available_kb() if device.shell(f"test -d {work.path}").exit_code == 0 \
            else WorkDir(device, "/data/local/tmp/x").available_kb()
    except AdbError as exc:
        free_kb = None
        checks.append(Check("free space", False, str(exc)))
    if free_kb is not None:
        ok = free_kb >= min_free_mb * 1024
        checks.append(Check("free space", ok, f"{free_kb // 1024} MiB free under /data/local/tmp",
                            "" if ok else "delete files on the phone (models, videos)"))
    battery = read_battery(device)
    if battery.level_pct is None:
        checks.append(Check("battery", False, "`dumpsys battery` printed no level",
                            "check the phone's battery service"))
    else:
        ok = battery.level_pct >= min_battery_pct
        checks.append(Check("battery", ok, f"{battery.level_pct}%",
                            "" if ok else f"charge the phone above {min_battery_pct}% "
                            "(or pass --force)"))
    temp = cpu_temperature_c(read_thermal(device))
    if temp is None:
        checks.append(Check("temperature", False, "no readable thermal zone",
                            "rounds cannot wait for cool-down; expect thermal drift"))
    else:
        ok = temp <= max_temp_c
        checks.append(Check("temperature", ok, f"CPU {temp:.1f} °C (limit {max_temp_c:g} °C)",
                            "" if ok else "let the phone cool: screen off, off the charger"))
    clusters = clusters_of(read_cpus(device))
    if not clusters:
        checks.append(Check("governor", False, "no cpufreq information",
                            "core pinning falls back to no mask; pass --core-mask"))
    else:
        governors = sorted({c.governor for c in clusters})
        ok = all(g in ("performance", "schedutil", "userspace", "interactive", "sched")
                 for g in governors)
        detail = ", ".join(f"cpus {c.cpus[0]}-{c.cpus[-1]}: {c.governor} @ {c.max_freq_khz} kHz"
                           for c in clusters)
        checks.append(Check("governor", ok, detail,
                            "" if ok else "powersave governor: numbers will be low and noisy; "
                            "disable battery saver"))
    root = su_prefix(device)
    checks.append(Check("clock lock", True,
                        f"rooted (`{root}`): --lock-clocks auto locks the measured cores" if root else
                        "not rooted: clocks run under the phone's governor (recorded per round)"))
    return checks
