"""What the loopback device looks like: properties, a fake sysfs/procfs tree, its work dir.

The device's whole filesystem is a sandbox folder on the host: the device path `/a/b` is
`<sandbox>/a/b`. `build_sandbox` writes the property set, the cpufreq and thermal sysfs files,
the battery, `/proc/cpuinfo` and `/proc/version`, and installs the runner shims into the
runner folder, as a phone looks after its user pushed the runners once. Tests change the state
of the device by writing those files (e.g. a thermal zone's `temp`).
"""

from __future__ import annotations

import json
import os
import platform
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

__all__ = ["Cluster", "LoopbackConfig", "build_sandbox", "device_path", "RUNNER_SHIMS"]

# Runner file name on the device -> module implementing its command line and output.
RUNNER_SHIMS = {
    "benchmark_model": "android_harness.loopback.shims.benchmark_model",
    "executor_runner": "android_harness.loopback.shims.executor_runner",
}
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Cluster:
    """CPUs sharing one cpufreq policy."""

    cpus: tuple[int, ...]
    max_freq_khz: int
    min_freq_khz: int = 300000
    governor: str = "schedutil"


def _default_props() -> dict[str, str]:
    # An honest identity: this is the host machine seen through a loopback adb daemon.
    machine = platform.machine() or "unknown"
    return {
        "ro.product.manufacturer": "hwnas",
        "ro.product.brand": "hwnas",
        "ro.product.model": "Loopback",
        "ro.product.name": "loopback",
        "ro.product.device": "loopback",
        "ro.board.platform": "loopback",
        "ro.hardware": "loopback",
        "ro.soc.manufacturer": "host",
        "ro.soc.model": machine,
        "ro.product.cpu.abi": {"x86_64": "x86_64", "aarch64": "arm64-v8a"}.get(machine, machine),
        "ro.product.cpu.abilist": {"x86_64": "x86_64", "aarch64": "arm64-v8a"}.get(
            machine, machine
        ),
        "ro.build.version.release": "14",
        "ro.build.version.sdk": "34",
        "ro.build.fingerprint": "hwnas/loopback/loopback:14/LOOPBACK/1:userdebug/test-keys",
        "ro.serialno": "LOOPBACK0001",
    }


@dataclass(frozen=True)
class LoopbackConfig:
    """The device the loopback daemon pretends to be (all of it is data)."""

    props: dict[str, str] = field(default_factory=_default_props)  # answered by `getprop`
    clusters: tuple[Cluster, ...] = (  # a big.LITTLE layout, so core-mask logic is exercised
        Cluster((0, 1, 2, 3), 1900800),
        Cluster((4, 5, 6, 7), 2457600),
    )
    thermal_zones: tuple[tuple[str, int], ...] = (  # (type, millidegrees C)
        ("cpu-0-0-usr", 38000),
        ("cpu-1-0-usr", 39000),
        ("battery", 30000),
    )
    battery_level: int = 87  # percent
    battery_temp_decic: int = 300  # tenths of a degree C, as `dumpsys battery` prints it
    runner_dir: str = "/data/local/tmp/hwnas"  # where the runner shims are preinstalled
    kernel: str = "Linux version 5.15.0-loopback (hwnas@loopback) #1 SMP PREEMPT"
    rooted: bool = False  # `su` exists only on rooted devices


def device_path(sandbox: Path, path: str, cwd: str = "/") -> Path:
    """Map a device path into the sandbox; '..' cannot climb out of it."""
    joined = PurePosixPath(cwd) / path
    parts: list[str] = []
    for part in joined.parts[1:]:
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return sandbox.joinpath(*parts) if parts else sandbox


def _write(sandbox: Path, path: str, text: str) -> None:
    target = device_path(sandbox, path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def _cpuinfo(config: LoopbackConfig) -> str:
    blocks = []
    for cluster in config.clusters:
        for cpu in cluster.cpus:
            blocks.append(
                f"processor\t: {cpu}\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd evtstrm aes\n"
            )
    return "\n".join(blocks) + f"\nHardware\t: {config.props.get('ro.hardware', '')}\n"


def _install_runner(sandbox: Path, runner_dir: str, name: str, module: str) -> None:
    target = device_path(sandbox, f"{runner_dir}/{name}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        f"#!{sys.executable}\n"
        f"# Loopback runner shim: same flags and output as the real `{name}`.\n"
        "import sys\n"
        f"sys.path.insert(0, {str(_REPO_ROOT)!r})\n"
        f"from {module} import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def build_sandbox(config: LoopbackConfig, sandbox: Path) -> Path:
    """Create (or refresh) the device filesystem under `sandbox`; returns `sandbox`."""
    sandbox.mkdir(parents=True, exist_ok=True)
    (sandbox / "data" / "local" / "tmp").mkdir(parents=True, exist_ok=True)
    ncpu = sum(len(c.cpus) for c in config.clusters)
    _write(sandbox, "/sys/devices/system/cpu/possible", f"0-{ncpu - 1}\n")
    _write(sandbox, "/sys/devices/system/cpu/online", f"0-{ncpu - 1}\n")
    for cluster in config.clusters:
        related = " ".join(str(c) for c in cluster.cpus)
        for cpu in cluster.cpus:
            base = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq"
            _write(sandbox, f"{base}/cpuinfo_max_freq", f"{cluster.max_freq_khz}\n")
            _write(sandbox, f"{base}/cpuinfo_min_freq", f"{cluster.min_freq_khz}\n")
            _write(sandbox, f"{base}/scaling_max_freq", f"{cluster.max_freq_khz}\n")
            _write(sandbox, f"{base}/scaling_cur_freq", f"{cluster.max_freq_khz}\n")
            _write(sandbox, f"{base}/scaling_governor", f"{cluster.governor}\n")
            _write(sandbox, f"{base}/related_cpus", f"{related}\n")
            _write(
                sandbox,
                f"{base}/scaling_available_governors",
                "schedutil performance powersave userspace\n",
            )
    for index, (kind, milli_c) in enumerate(config.thermal_zones):
        _write(sandbox, f"/sys/class/thermal/thermal_zone{index}/type", f"{kind}\n")
        _write(sandbox, f"/sys/class/thermal/thermal_zone{index}/temp", f"{milli_c}\n")
    battery = "/sys/class/power_supply/battery"
    _write(sandbox, f"{battery}/capacity", f"{config.battery_level}\n")
    _write(sandbox, f"{battery}/temp", f"{config.battery_temp_decic}\n")
    _write(sandbox, f"{battery}/status", "Discharging\n")
    _write(sandbox, "/proc/cpuinfo", _cpuinfo(config))
    _write(sandbox, "/proc/version", config.kernel + "\n")
    props = dict(config.props)
    _write(sandbox, "/system/build.prop.json", json.dumps(props, indent=1, sort_keys=True))
    for name, module in RUNNER_SHIMS.items():
        _install_runner(sandbox, config.runner_dir, name, module)
    os.makedirs(device_path(sandbox, "/data/local/tmp"), exist_ok=True)
    return sandbox
