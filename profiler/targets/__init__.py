"""Targets: where timing happens. `get_target("host")` is this machine's CPU; any other name is
an adb serial, handled by `profiler.targets.adb.AdbTarget` (imported only when asked for, so the
host path never needs adbutils)."""

from __future__ import annotations

from typing import Any

from .base import DeviceLostError, RunnerError, RunSpec, Target, TargetError

__all__ = ["get_target", "RunSpec", "Target", "TargetError", "DeviceLostError", "RunnerError"]


def get_target(device: str, options: dict[str, Any] | None = None, *, lock_wait_s: float = 0.0,
               what: str = "") -> Target:  # fmt: skip
    """'host' → HostTarget; anything else → AdbTarget(serial=device, **options), which holds the
    phone's lock from here until its `close()` (busy: waits `lock_wait_s`, then DeviceBusyError)."""
    options = dict(options or {})
    if device == "host":
        from .host import HostTarget

        return HostTarget(**options)
    from .adb import AdbTarget

    return AdbTarget(device, **{"lock_wait_s": lock_wait_s, "lock_what": what, **options})
