"""Durable file writes, the one implementation the project uses.

    atomic_write(path, data)     write to a temp file beside `path`, fsync, rename over `path`:
                                 readers see the old file or the new one, never half of one
    append_durable(path, text)   append and fsync before returning (resumable job records)

A crash can leave a `.<name>.<random>.tmp` file beside the target, never a torn target.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["atomic_write", "append_durable", "fsync_dir"]


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Replace `path` with `data` (str is written as UTF-8) atomically and durably."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    payload = data.encode() if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def append_durable(path: str | Path, text: str) -> None:
    """Append `text` to `path` and fsync it: after return it survives a crash."""
    with open(path, "a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new file in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
