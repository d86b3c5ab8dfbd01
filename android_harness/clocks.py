"""Locking the measured cores' CPU clock on a rooted phone for a job, and putting it back.

    lock = ClockLock(device, cpus=(4, 5, 6, 7), state_dir=default_state_dir())
    status = lock.lock(require=False)      # ClockStatus(locked=True, method="userspace", ...)
    ...                                    # measure
    lock.restore()                         # in a `finally`: also after an exception or Ctrl-C
    restore_pending(device, state_dir)     # at the next connection, after a disconnect

Method, per cpufreq policy that holds a measured core: with the `userspace` governor available,
`scaling_governor=userspace` and `scaling_setspeed=F`: the kernel then runs exactly F, which no
load-driven governor decision changes (thermal limits still can, and each round records
`scaling_cur_freq`). Without it, `scaling_governor=performance` with
`scaling_min_freq=scaling_max_freq=F`. F is the requested frequency rounded down to one the policy
lists in `scaling_available_frequencies` (its highest by default: a deployed network runs the
busy cores at their top speed; the protocol's cool-down keeps the rounds comparable).

Root is `su -c LINE` (Magisk, SuperSU) or `su 0 sh -c LINE` (AOSP userdebug builds), whichever
answers `id` with uid 0. Without root nothing is written and the status says why.

Restoring: before the first write, each policy's governor, min, max and set speed are saved to
`<state_dir>/<key>.json` (an atomic write; the key is the phone's identity, default its
serial). `restore()` writes them back (the min is lowered
first so that the max can move) and removes the file. A job that ends, fails or is interrupted
restores in its `finally`; a disconnect cannot, so the file stays and `restore_pending` restores
at the next connection to that phone (AdbTarget does so under the phone's lock), with a log line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .adb import AdbError, Device, quote
from .device_state import parse_cpufreq

__all__ = ["ClockLock", "ClockStatus", "ClockLockError", "default_state_dir", "restore_pending", "su_prefix"]

log = logging.getLogger(__name__)

_FILES = ("scaling_governor", "scaling_min_freq", "scaling_max_freq", "scaling_setspeed",
          "scaling_available_governors", "scaling_available_frequencies", "cpuinfo_min_freq",
          "cpuinfo_max_freq", "scaling_cur_freq", "related_cpus")
_BASE = "/sys/devices/system/cpu/cpu{cpu}/cpufreq"


class ClockLockError(AdbError):
    """The clocks could not be locked (or restored) as asked."""


@dataclass(frozen=True)
class ClockStatus:
    """Whether the measured cores run at a fixed clock, recorded with the LUT."""

    locked: bool
    method: str | None = None  # "userspace" (set speed) or "performance" (min = max)
    governor: str | None = None  # the governor while locked (else the phone's own)
    freq_khz: dict[str, int] = field(default_factory=dict)  # policy (its first CPU) -> locked kHz
    reason: str = ""  # why not locked

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def default_state_dir() -> Path:
    """$HWNAS_STATE_DIR/clock-locks, else ~/.cache/hwnas/clock-locks (read when called)."""
    root = os.environ.get("HWNAS_STATE_DIR")
    return Path(root) / "clock-locks" if root else Path.home() / ".cache" / "hwnas" / "clock-locks"


def _state_file(state_dir: Path, serial: str) -> Path:
    return Path(state_dir) / (re.sub(r"[^\w.-]", "_", serial) + ".json")


def su_prefix(device: Device) -> str | None:
    """The `su` form that gives this device's shell uid 0, or None when it has none."""
    for prefix in ("su -c", "su 0 sh -c"):
        result = device.shell(f"{prefix} id")
        if result.exit_code == 0 and result.stdout.startswith("uid=0"):
            return prefix
    return None


def _read(device: Device, cpus: list[int]) -> dict[int, dict[str, str]]:
    paths = " ".join(f"{_BASE.format(cpu=c)}/{name}" for c in cpus for name in _FILES)
    return parse_cpufreq(device.shell(f"grep -H . {paths}").stdout)  # exit 2: optional files absent


def _as_root(device: Device, prefix: str, commands: list[str], *, stop_on_error: bool) -> None:
    line = (" && " if stop_on_error else "; ").join(commands)
    result = device.shell(f"{prefix} {quote(line)}")
    if result.exit_code != 0:
        raise ClockLockError(f"`{line}` as root on {device.serial} failed: "
                             f"{(result.stderr or result.stdout).strip()[-300:]}")


def _restore_commands(policies: dict[str, dict[str, Any]]) -> list[str]:
    commands = []
    for saved in policies.values():
        base = _BASE.format(cpu=saved["cpus"][0])
        commands += [f"echo {saved['cpuinfo_min']} > {base}/scaling_min_freq",
                     f"echo {saved['max']} > {base}/scaling_max_freq",
                     f"echo {saved['min']} > {base}/scaling_min_freq",
                     f"echo {saved['governor']} > {base}/scaling_governor"]
        if saved["governor"] == "userspace" and str(saved.get("setspeed", "")).isdigit():
            commands.append(f"echo {saved['setspeed']} > {base}/scaling_setspeed")
    return commands


def restore_pending(device: Device, state_dir: Path | None = None, *, key: str | None = None) -> bool:
    """Restore what an interrupted job left locked on this device; True when it did. `key` names
    the phone's state file (its identity, default the serial). Call it only while holding the
    phone's lock: a running job's locked clocks are not pending."""
    path = _state_file(state_dir or default_state_dir(), key or device.serial)
    if not path.is_file():
        return False
    state = json.loads(path.read_text())
    prefix = su_prefix(device)
    if prefix is None:
        log.warning("%s: %s asks to restore CPU clocks but su no longer works; restore them by "
                    "hand or reboot the phone", device.serial, path)
        return False
    _as_root(device, prefix, _restore_commands(state["policies"]), stop_on_error=False)
    path.unlink()
    log.warning("%s: restored the CPU clocks an interrupted job left locked (%s)", device.serial,
                ", ".join(f"cpu{p['cpus'][0]}-{p['cpus'][-1]}: {p['governor']} {p['min']}-{p['max']} kHz"
                          for p in state["policies"].values()))
    return True


class ClockLock:
    """Locks the policies of `cpus` at one frequency each; see the module docstring."""

    def __init__(self, device: Device, cpus: tuple[int, ...], *, state_dir: Path | None = None,
                 freq_khz: int | None = None, key: str | None = None) -> None:
        self.device = device
        self.cpus = tuple(cpus)
        self.freq_khz = freq_khz  # None: each policy's highest available frequency
        # the state file is named by the phone's identity (`key`), so the phone reached by another
        # serial (USB, or ip:port) finds what a disconnect left locked
        self.state_file = _state_file(state_dir or default_state_dir(), key or device.serial)
        self.status = ClockStatus(False, reason="not requested")
        self._prefix: str | None = None
        self._saved: dict[str, dict[str, Any]] = {}

    def _policies(self, files: dict[int, dict[str, str]]) -> dict[str, list[int]]:
        policies: dict[str, list[int]] = {}
        for cpu in self.cpus:
            related = [int(c) for c in files.get(cpu, {}).get("related_cpus", str(cpu)).split()]
            policies.setdefault(str(min(related or [cpu])), sorted(related or [cpu]))
        return policies

    def _target(self, info: dict[str, str]) -> int:
        available = sorted(int(f) for f in info.get("scaling_available_frequencies", "").split() if f.isdigit())
        available = available or [int(info["cpuinfo_max_freq"])]
        wanted = self.freq_khz or available[-1]
        return max([f for f in available if f <= wanted] or available[:1])

    def lock(self, *, require: bool = False) -> ClockStatus:
        """Lock, or record why not (raising ClockLockError when `require`)."""
        try:
            self.status = self._lock()
        except (ClockLockError, KeyError, ValueError) as exc:  # a policy refused, or odd sysfs
            try:
                self.restore()
            except ClockLockError as again:
                log.warning("%s: restoring after a failed lock failed too: %s", self.device.serial, again)
            self.status = ClockStatus(False, reason=f"{type(exc).__name__}: {exc}")
        if require and not self.status.locked:
            raise ClockLockError(f"{self.device.serial}: cannot lock the CPU clocks: {self.status.reason}")
        if not self.status.locked:
            log.info("%s: CPU clocks not locked (%s)", self.device.serial, self.status.reason)
        return self.status

    def _lock(self) -> ClockStatus:
        self._prefix = su_prefix(self.device)
        if self._prefix is None:
            return ClockStatus(False, reason="not rooted (no su that gives uid 0)")
        files = _read(self.device, list(self.cpus))
        policies = self._policies(files)
        files = _read(self.device, [p[0] for p in policies.values()])
        for key, cpus in policies.items():
            info = files[cpus[0]]
            self._saved[key] = {"cpus": cpus, "governor": info["scaling_governor"],
                                "min": int(info["scaling_min_freq"]), "max": int(info["scaling_max_freq"]),
                                "setspeed": info.get("scaling_setspeed", ""),
                                "cpuinfo_min": int(info["cpuinfo_min_freq"])}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps({"serial": self.device.serial, "saved_at": time.time(),
                                   "policies": self._saved}, indent=1))
        os.replace(tmp, self.state_file)
        method, targets = None, {}
        for key, cpus in policies.items():
            info, base = files[cpus[0]], _BASE.format(cpu=cpus[0])
            target = targets[key] = self._target(info)
            if "userspace" in info.get("scaling_available_governors", "").split():
                method = method or "userspace"
                commands = [f"echo userspace > {base}/scaling_governor",
                            f"echo {target} > {base}/scaling_setspeed"]
            else:
                method = method or "performance"
                commands = [f"echo {info['cpuinfo_min_freq']} > {base}/scaling_min_freq",
                            f"echo {target} > {base}/scaling_max_freq",
                            f"echo {target} > {base}/scaling_min_freq",
                            f"echo performance > {base}/scaling_governor"]
            _as_root(self.device, self._prefix, commands, stop_on_error=True)
        now = _read(self.device, [p[0] for p in policies.values()])
        for key, cpus in policies.items():
            cur = int(now[cpus[0]].get("scaling_cur_freq", "0") or 0)
            if cur != targets[key]:
                log.warning("%s: cpu%d runs at %d kHz, not the locked %d kHz (thermal or vendor "
                            "limits)", self.device.serial, cpus[0], cur, targets[key])
        log.info("%s: CPU clocks locked (%s): %s", self.device.serial, method,
                 ", ".join(f"cpu{k}: {v} kHz" for k, v in targets.items()))
        return ClockStatus(True, method=method, governor=now[policies[next(iter(policies))][0]]["scaling_governor"],
                           freq_khz=targets)

    def restore(self) -> bool:
        """Put back what `lock` saved; True when something was restored. A device that is gone
        keeps its state file for `restore_pending`."""
        if not self._saved or self._prefix is None:
            return False
        _as_root(self.device, self._prefix, _restore_commands(self._saved), stop_on_error=False)
        self._saved = {}
        self.state_file.unlink(missing_ok=True)
        log.info("%s: CPU clocks restored", self.device.serial)
        return True
