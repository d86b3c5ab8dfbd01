"""One measurement per device at a time: a lock file per device (the host, or a phone's serial).

Two jobs timing ops on the same device share its cores, its caches and its thermal budget: each
job's numbers are then neither job's. Every job that times something on a device (profiling a
LUT, validating one, timing archs or a deployed model) holds that device's lock for its whole
run; a second job stops with the holder's pid, command and start time, or waits for it with
`wait_s`.

    with device_lock("host", what="profile fbnet executorch"):
        ...

Locks are `fcntl.flock`s on `<lock dir>/<device>.lock` (the lock dir is `$HWNAS_LOCK_DIR`, else
`hwnas-locks` in the system temp dir, so every user of the machine sees the same host lock); the
kernel drops a lock when its holder exits, so a crashed job never leaves the device locked. A
lock is re-entrant within a process (validation holds it across the measurements it makes).
"""

from __future__ import annotations

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

__all__ = ["DeviceBusyError", "device_lock", "lock_dir"]

_HELD: dict[str, tuple[int, int]] = {}  # device → (fd, depth) held by this process
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
    with _GUARD:
        if device in _HELD:
            fd, depth = _HELD[device]
            _HELD[device] = (fd, depth + 1)
            acquired = False
        else:
            acquired = True
    if acquired:
        fd = _acquire(device, wait_s, what, poll_s)
        with _GUARD:
            _HELD[device] = (fd, 1)
    try:
        yield
    finally:
        with _GUARD:
            fd, depth = _HELD[device]
            if depth > 1:
                _HELD[device] = (fd, depth - 1)
            else:
                del _HELD[device]
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


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
