"""A private adb server with a loopback device attached: for tests and dry runs.

    with loopback_session(tmp_path) as (server, daemon):
        device = Device.connect(server, daemon.serial)

The adb server runs on its own free port (`adb -P PORT start-server`) and is killed on exit
(`adb -P PORT kill-server`), so a user's own server and phones are never touched.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Iterator

from ..adb import AdbError, AdbServer, Device, ensure_server
from .daemon import Faults, Knobs, LoopbackDaemon
from .device import LoopbackConfig

__all__ = ["loopback_session", "free_port"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _private_server(attempts: int = 3) -> AdbServer:
    """An adb server started on a free port. A port found free can be taken before the server
    binds it (by another process's server or device, when several start at once): then adb
    answers with a protocol fault, and another free port is tried."""
    for _ in range(attempts - 1):
        server = AdbServer("127.0.0.1", free_port())
        try:
            ensure_server(server)
            return server
        except AdbError:
            continue
    server = AdbServer("127.0.0.1", free_port())
    ensure_server(server)  # the last try's error is the report
    return server


@contextlib.contextmanager
def loopback_session(
    sandbox: Path, config: LoopbackConfig | None = None, faults: Faults | None = None,
    knobs: Knobs | None = None,
) -> Iterator[tuple[AdbServer, LoopbackDaemon]]:
    adb = shutil.which("adb")
    if adb is None:
        raise AdbError("the loopback session needs `adb` on PATH (apt-get install adb)")
    server = _private_server()
    daemon = LoopbackDaemon(Path(sandbox), config, faults=faults, knobs=knobs).start()
    try:
        Device.connect(server, daemon.serial)
        yield server, daemon
    finally:
        daemon.stop()
        subprocess.run([adb, "-P", str(server.port), "kill-server"], capture_output=True,
                       timeout=30, check=False)
