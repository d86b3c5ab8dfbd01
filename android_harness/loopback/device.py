"""What the loopback device looks like: properties, a fake sysfs/procfs tree, its work dir.

The device's whole filesystem is a sandbox folder on the host: the device path `/a/b` is
`<sandbox>/a/b`. `build_sandbox` writes the property set, the cpufreq and thermal sysfs files,
the battery (and whether it charges), the screen's backlight, `/proc/cpuinfo` and `/proc/version`, and installs the runner shims into the
runner folder, as a phone looks after its user pushed the runners once. Tests change the state
of the device by writing those files (e.g. a thermal zone's `temp`).

cpufreq behaves as the kernel's: `write_cpufreq` is what a (root) shell write to
`cpuN/cpufreq/{scaling_governor,scaling_min_freq,scaling_max_freq,scaling_setspeed}` does. The
value is checked (an unknown governor, a non-number or `scaling_setspeed` outside the userspace
governor is EINVAL), applies to every CPU of the policy, and `scaling_cur_freq` follows: the set
speed under `userspace`, the max under `performance` (and `schedutil`: the loopback is busy), the
min under `powersave`, always within [scaling_min_freq, scaling_max_freq].
"""

from __future__ import annotations

import json
import os
import platform
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..runners import RUNNERS

__all__ = [
    "Cluster",
    "LoopbackConfig",
    "build_sandbox",
    "device_path",
    "RUNNER_SHIMS",
    "CPUFREQ_WRITABLE",
    "write_cpufreq",
    "BACKLIGHT",
]

# Runner name (`android_harness.runners.RUNNERS`) -> module with the same command line and output.
RUNNER_SHIMS = {name: f"android_harness.loopback.shims.{name}" for name in RUNNERS}
GOVERNORS = ("schedutil", "performance", "powersave", "userspace")
CPUFREQ_WRITABLE = ("scaling_governor", "scaling_min_freq", "scaling_max_freq", "scaling_setspeed")
_CPUFREQ = "/sys/devices/system/cpu/cpu{cpu}/cpufreq"
BACKLIGHT = "/sys/class/backlight/panel0-backlight"
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Cluster:
    """CPUs sharing one cpufreq policy."""

    cpus: tuple[int, ...]
    max_freq_khz: int
    min_freq_khz: int = 300000
    governor: str = "schedutil"
    steps: int = 8  # scaling_available_frequencies: this many, evenly from min to max

    @property
    def frequencies_khz(self) -> tuple[int, ...]:
        span = self.max_freq_khz - self.min_freq_khz
        return tuple(self.min_freq_khz + span * i // (self.steps - 1) // 100 * 100
                     for i in range(self.steps - 1)) + (self.max_freq_khz,)


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
    }


@dataclass(frozen=True)
class LoopbackConfig:
    """The device the loopback daemon pretends to be (all of it is data)."""

    # answered by `getprop`; without `ro.serialno` the daemon answers LOOPBACK<port>: each loopback
    # device is its own phone (its own device id and lock), the same one under any serial
    props: dict[str, str] = field(default_factory=_default_props)
    clusters: tuple[Cluster, ...] = (  # a big.LITTLE layout, so core-mask logic is exercised
        Cluster((0, 1, 2, 3), 1900800),
        Cluster((4, 5, 6, 7), 2457600),
    )
    thermal_zones: tuple[tuple[str, int], ...] = (  # (type, millidegrees C)
        ("cpu-0-0-usr", 38000),
        ("cpu-1-0-usr", 39000),
        ("battery", 30000),
    )
    # (level, type, KiB, shared by: "core" | "cluster" | "all"), for every CPU, as
    # /sys/devices/system/cpu/cpuN/cache/indexM/ lists them (the `mixed` cache rule reads the L2)
    caches: tuple[tuple[int, str, int, str], ...] = (
        (1, "Data", 64, "core"), (1, "Instruction", 64, "core"),
        (2, "Unified", 512, "core"), (3, "Unified", 2048, "all"),
    )
    battery_level: int = 87  # percent
    battery_temp_decic: int = 300  # tenths of a degree C, as `dumpsys battery` prints it
    runner_dir: str = "/data/local/tmp/hwnas"  # where the runner shims are preinstalled
    kernel: str = "Linux version 5.15.0-loopback (hwnas@loopback) #1 SMP PREEMPT"


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


def _cpu_list(cpus: list[int]) -> str:
    """CPUs as the kernel lists them: "4-7", "0-3,6"."""
    runs: list[list[int]] = []
    for c in sorted(cpus):
        if runs and c == runs[-1][-1] + 1:
            runs[-1].append(c)
        else:
            runs.append([c])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def _cpuinfo(config: LoopbackConfig) -> str:
    blocks = []
    for cluster in config.clusters:
        for cpu in cluster.cpus:
            blocks.append(
                f"processor\t: {cpu}\nBogoMIPS\t: 38.40\nFeatures\t: fp asimd evtstrm aes\n"
            )
    return "\n".join(blocks) + f"\nHardware\t: {config.props.get('ro.hardware', '')}\n"


# The shims' interpreter on the device: a link to the host's Python (an ELF of the host's ABI, which
# is what the device's userspace runs; `ro.product.cpu.abilist` says the same).
INTERPRETER = "/system/bin/python3"


def _install_interpreter(sandbox: Path) -> None:
    link = device_path(sandbox, INTERPRETER)
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(sys.executable)


def _install_runner(sandbox: Path, runner_dir: str, name: str, module: str) -> None:
    target = device_path(sandbox, f"{runner_dir}/{name}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(
        f"#!{INTERPRETER}\n"
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
            base = _CPUFREQ.format(cpu=cpu)
            _write(sandbox, f"{base}/cpuinfo_max_freq", f"{cluster.max_freq_khz}\n")
            _write(sandbox, f"{base}/cpuinfo_min_freq", f"{cluster.min_freq_khz}\n")
            _write(sandbox, f"{base}/scaling_max_freq", f"{cluster.max_freq_khz}\n")
            _write(sandbox, f"{base}/scaling_min_freq", f"{cluster.min_freq_khz}\n")
            _write(sandbox, f"{base}/scaling_cur_freq", f"{cluster.max_freq_khz}\n")
            _write(sandbox, f"{base}/scaling_governor", f"{cluster.governor}\n")
            _write(sandbox, f"{base}/scaling_setspeed", "<unsupported>\n")
            _write(sandbox, f"{base}/related_cpus", f"{related}\n")
            _write(sandbox, f"{base}/scaling_available_governors", " ".join(GOVERNORS) + "\n")
            _write(sandbox, f"{base}/scaling_available_frequencies",
                   " ".join(str(f) for f in cluster.frequencies_khz) + " \n")
    every = [c for cl in config.clusters for c in cl.cpus]
    for cluster in config.clusters:
        for cpu in cluster.cpus:
            for index, (level, kind, kib, scope) in enumerate(config.caches):
                shared = {"core": [cpu], "cluster": list(cluster.cpus), "all": every}[scope]
                base = f"/sys/devices/system/cpu/cpu{cpu}/cache/index{index}"
                _write(sandbox, f"{base}/level", f"{level}\n")
                _write(sandbox, f"{base}/type", f"{kind}\n")
                _write(sandbox, f"{base}/size", f"{kib}K\n")
                _write(sandbox, f"{base}/shared_cpu_list", f"{_cpu_list(shared)}\n")
    for index, (kind, milli_c) in enumerate(config.thermal_zones):
        _write(sandbox, f"/sys/class/thermal/thermal_zone{index}/type", f"{kind}\n")
        _write(sandbox, f"/sys/class/thermal/thermal_zone{index}/temp", f"{milli_c}\n")
    battery = "/sys/class/power_supply/battery"
    _write(sandbox, f"{battery}/capacity", f"{config.battery_level}\n")
    _write(sandbox, f"{battery}/temp", f"{config.battery_temp_decic}\n")
    _write(sandbox, f"{battery}/status", "Discharging\n")
    _write(sandbox, "/sys/class/power_supply/usb/online", "0\n")
    # the screen: off (0) as a phone being measured should be; `dumpsys power` follows it
    _write(sandbox, f"{BACKLIGHT}/brightness", "0\n")
    _write(sandbox, f"{BACKLIGHT}/max_brightness", "255\n")
    _write(sandbox, "/proc/cpuinfo", _cpuinfo(config))
    _write(sandbox, "/proc/version", config.kernel + "\n")
    props = dict(config.props)
    _write(sandbox, "/system/build.prop.json", json.dumps(props, indent=1, sort_keys=True))
    _install_interpreter(sandbox)
    for name, module in RUNNER_SHIMS.items():
        _install_runner(sandbox, config.runner_dir, name, module)
    os.makedirs(device_path(sandbox, "/data/local/tmp"), exist_ok=True)
    return sandbox


def _read(sandbox: Path, cpu: int, name: str) -> str:
    return device_path(sandbox, f"{_CPUFREQ.format(cpu=cpu)}/{name}").read_text().strip()


def write_cpufreq(sandbox: Path, cpu: int, name: str, value: str) -> str | None:
    """A write of `value` to cpu`cpu`/cpufreq/`name`, as the kernel takes it (module docstring).

    Returns None on success, else the errno text the writing shell reports."""
    if name not in CPUFREQ_WRITABLE:
        return "Permission denied"
    value = value.strip()
    governor = _read(sandbox, cpu, "scaling_governor")
    lo, hi = int(_read(sandbox, cpu, "cpuinfo_min_freq")), int(_read(sandbox, cpu, "cpuinfo_max_freq"))
    if name == "scaling_governor":
        if value not in _read(sandbox, cpu, "scaling_available_governors").split():
            return "Invalid argument"
    elif not value.isdigit() or (name == "scaling_setspeed" and governor != "userspace"):
        return "Invalid argument"
    else:
        value = str(min(max(int(value), lo), hi))
    policy = [int(c) for c in _read(sandbox, cpu, "related_cpus").split()] or [cpu]
    for member in policy:
        base = device_path(sandbox, _CPUFREQ.format(cpu=member))
        if name == "scaling_governor" and value != governor:
            # the userspace governor starts at the current speed; others have no set speed
            speed = _read(sandbox, member, "scaling_cur_freq") if value == "userspace" else "<unsupported>"
            (base / "scaling_setspeed").write_text(speed + "\n")
        (base / name).write_text(value + "\n")
        _settle(sandbox, member)
    return None


def _settle(sandbox: Path, cpu: int) -> None:
    """scaling_cur_freq after a change of governor or limits."""
    governor = _read(sandbox, cpu, "scaling_governor")
    low, high = int(_read(sandbox, cpu, "scaling_min_freq")), int(_read(sandbox, cpu, "scaling_max_freq"))
    low = min(low, high)
    if governor == "userspace":
        target = int(_read(sandbox, cpu, "scaling_setspeed"))
    elif governor == "powersave":
        target = low
    else:
        target = high
    cur = device_path(sandbox, f"{_CPUFREQ.format(cpu=cpu)}/scaling_cur_freq")
    cur.write_text(f"{min(max(target, low), high)}\n")
