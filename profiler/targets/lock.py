"""One measurement per device at a time: a lock file per device (the host, or a phone's identity).

Two jobs timing ops on the same device share its cores, its caches and its thermal budget: each
job's numbers are then neither job's. Every job that times something on a device (profiling a
LUT, validating one, timing archs or a deployed model) holds that device's lock for its whole
run; a second job stops with the holder's pid, command and start time, or waits for it with
`wait_s`.

    with device_lock("host", what="profile fbnet executorch"):
        ...

A phone's lock is keyed by its identity, the fingerprint's device id (`AdbTarget.lock_key`), not
by the serial it was reached by: the same phone over USB and over `ip:port` is one phone. An
`AdbTarget` takes it as it connects, before it writes anything to the phone (`lock_key_of` reads
the key without a target).

Locks are `fcntl.flock`s on `<lock dir>/<device>.lock` (the lock dir is `$HWNAS_LOCK_DIR`, else
`hwnas-locks` in the system temp dir, so every user of the machine sees the same host lock); the
kernel drops a lock when its holder exits, so a crashed job never leaves the device locked. A
lock is re-entrant within a thread (validation holds it across the measurements it makes); two
threads of one process (two `--device` names of one phone) exclude each other like two processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .base import TargetError

__all__ = ["DeviceBusyError", "device_lock", "lock_dir", "target_lock", "lock_key_of"]

_HELD: dict[tuple[str, int], tuple[int, int]] = {}  # (device, thread id) → (fd, depth) held
_GUARD = threading.Lock()


class DeviceBusyError(TargetError):
    """Another job holds the device; the message names it."""


def lock_dir() -> Path:
    return Path(os.environ.get("HWNAS_LOCK_DIR") or Path(tempfile.gettempdir()) / "hwnas-locks")


def _path(device: str) -> Path:
    return lock_dir() / (re.sub(r"[^A-Za-z0-9_.-]+", "_", device) + ".lock")


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 65536).decode() or "{}")
    except (OSError, ValueError):
        return "another process"
    if not info:
        return "another process"
    since = time.strftime("%H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info.get('pid')} ({info.get('what') or 'a job'}: `{info.get('command', '?')}`, since {since})"


@contextmanager
def device_lock(device: str, *, wait_s: float = 0.0, what: str = "", poll_s: float = 1.0) -> Iterator[None]:
    """Hold `device`'s lock for the block. Busy: wait up to `wait_s` seconds, then raise
    DeviceBusyError naming the holder."""
    held = (device, threading.get_ident())
    with _GUARD:
        if held in _HELD:
            fd, depth = _HELD[held]
            _HELD[held] = (fd, depth + 1)
            acquired = False
        else:
            acquired = True
    if acquired:
        fd = _acquire(device, wait_s, what, poll_s)
        with _GUARD:
            _HELD[held] = (fd, 1)
    try:
        yield
    finally:
        with _GUARD:
            fd, depth = _HELD[held]
            if depth > 1:
                _HELD[held] = (fd, depth - 1)
            else:
                del _HELD[held]
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


def target_lock(target: object, *, wait_s: float = 0.0, what: str = "") -> contextlib.AbstractContextManager[None]:
    """`device_lock` of a target: its `lock_key` (a phone's identity), else its name ("host")."""
    key = getattr(target, "lock_key", None) or target.name  # type: ignore[attr-defined]
    return device_lock(key, wait_s=wait_s, what=what)


def lock_key_of(device: str, options: dict | None = None) -> str:
    """The lock key of `device` ("host", or a phone's device id: its properties, read over adb)."""
    if device == "host":
        return "host"
    from android_harness import AdbError, Device, device_address
    from android_harness.device_state import device_id

    opts = options or {}
    try:
        server, serial = device_address(device, opts.get("adb_host"), opts.get("adb_port"))
        return device_id(Device.connect(server, serial).getprops(), serial)
    except AdbError as exc:  # the message names the device and what to do
        raise TargetError(f"{device}: {exc}") from exc


def _acquire(device: str, wait_s: float, what: str, poll_s: float) -> int:
    path = _path(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    deadline = time.monotonic() + wait_s
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = _holder(fd)
            if time.monotonic() >= deadline:
                os.close(fd)
                raise DeviceBusyError(
                    f"device {device!r} is busy: {holder} is measuring on it. Two jobs on one device "
                    "time each other's load; wait for it to finish (--wait-lock SECONDS waits) or stop it"
                ) from None
            if not announced:
                print(f"waiting for device {device!r}: held by {holder}", file=sys.stderr)
                announced = True
            time.sleep(poll_s)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    info = {"pid": os.getpid(), "command": " ".join(sys.argv), "what": what, "started": time.time()}
    os.write(fd, json.dumps(info).encode())
    return fd
