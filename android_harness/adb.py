"""Device control through adbutils and the `adb` server.

    server = AdbServer.from_env(host=None, port=None)   # --adb-host/--adb-port, ADB_SERVER_SOCKET
    ensure_server(server)                                # starts `adb -P PORT start-server` if needed
    for info in list_devices(server): ...
    device = Device.connect(server, "127.0.0.1:5555")    # `adb connect` for host:port serials
    server, serial = device_address("R58M12@lab-pc:5037")  # a phone on another machine's adb server
    device.shell("getprop")                               # ShellResult(exit_code, stdout, stderr)

Every adb failure is checked against the device list: a device that is gone raises
`DeviceGoneError` (the job stops and keeps what it measured); anything else raises `AdbError`.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import adbutils
from adbutils.errors import AdbError as _UtilsError
from adbutils.errors import AdbTimeout as _UtilsTimeout

__all__ = [
    "AdbServer",
    "AdbError",
    "DeviceGoneError",
    "CommandTimeout",
    "DeviceInfo",
    "ShellResult",
    "Device",
    "ensure_server",
    "list_devices",
    "STATE_ADVICE",
    "quote",
    "device_address",
]

log = logging.getLogger(__name__)

# What the user must do for each non-ready state `adb devices` can report.
STATE_ADVICE = {
    "device": "ready",
    "unauthorized": "unlock the phone and accept the 'Allow USB debugging?' prompt "
    "(tick 'Always allow'); if no prompt shows, revoke USB debugging authorizations in "
    "Developer options and replug",
    "offline": "the phone stopped answering: replug the cable (or `adb reconnect offline`), "
    "check the phone is awake, and restart the adb server if it persists",
    "no permissions": "the host user may not open the USB device: add a udev rule for the "
    "phone's vendor id (see the Android docs 'Run apps on a hardware device') and replug",
    "authorizing": "the phone is still authorizing this host: wait a moment and retry",
    "connecting": "adb is still connecting to the phone: wait a moment and retry",
    "recovery": "the phone is in recovery mode: reboot it into Android",
    "sideload": "the phone is in sideload mode: reboot it into Android",
    "bootloader": "the phone is in the bootloader: reboot it into Android",
}


class AdbError(RuntimeError):
    """adb could not do what was asked; the message says what to do."""


class DeviceGoneError(AdbError):
    """The device disconnected or went offline."""


class CommandTimeout(AdbError):
    """A device command did not finish in time."""


def quote(arg: str) -> str:
    """Quote one argument for the device shell (mksh/toybox accept POSIX single quotes)."""
    return shlex.quote(arg)


@dataclass(frozen=True)
class AdbServer:
    """Where the adb server listens."""

    host: str = "127.0.0.1"
    port: int = 5037

    @classmethod
    def from_env(cls, host: str | None = None, port: int | None = None) -> AdbServer:
        """Explicit values win, then $ADB_SERVER_SOCKET (tcp:HOST:PORT), then
        $ANDROID_ADB_SERVER_HOST/$ANDROID_ADB_SERVER_PORT, then 127.0.0.1:5037."""
        env_host, env_port = "127.0.0.1", 5037
        sock = os.environ.get("ADB_SERVER_SOCKET", "")
        match = re.fullmatch(r"tcp:(?:(.+):)?(\d+)", sock)
        if sock and not match:
            raise AdbError(f"ADB_SERVER_SOCKET={sock!r} is not of the form tcp:HOST:PORT")
        if match:
            env_host, env_port = match.group(1) or env_host, int(match.group(2))
        else:
            env_host = os.environ.get("ANDROID_ADB_SERVER_HOST", env_host)
            env_port = int(os.environ.get("ANDROID_ADB_SERVER_PORT", env_port))
        return cls(host or env_host, port or env_port)

    @property
    def local(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1")

    def client(self) -> adbutils.AdbClient:
        return adbutils.AdbClient(host=self.host, port=self.port, socket_timeout=30)


def device_address(text: str, host: str | None = None, port: int | None = None) -> tuple[AdbServer, str]:
    """The adb server and serial a `--device` value names: `SERIAL@HOST:PORT` is SERIAL on the adb
    server at HOST:PORT (another machine's, started there with `adb -a -P PORT nodaemon server`);
    a plain SERIAL is on the server `host`/`port` or the environment give (`AdbServer.from_env`).
    SERIAL may itself be `IP:PORT` (adb over Wi-Fi, as that server sees it)."""
    serial, at, server = text.rpartition("@")
    if not at:
        return AdbServer.from_env(host, port), text
    where, _, port_text = server.rpartition(":")
    where = where.strip("[]")  # [::1]:5037
    if not serial or not where or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise AdbError(f"device {text!r}: give SERIAL@HOST:PORT (e.g. R58M12ABCDE@lab-pc:5037), the "
                       "serial as `adb devices` on that host lists it and its adb server's host and port")
    return AdbServer(where, int(port_text)), serial


def _server_up(server: AdbServer) -> bool:
    try:
        with socket.create_connection((server.host, server.port), timeout=0.5):
            return True
    except OSError:
        return False


def ensure_server(server: AdbServer) -> None:
    """Start the adb server when it is not running and `adb` is on PATH."""
    if _server_up(server):
        return
    adb = shutil.which("adb")
    if not server.local or adb is None:
        where = f"{server.host}:{server.port}"
        raise AdbError(
            f"no adb server at {where}"
            + ("" if server.local else "; start it on that host (`adb -a -P PORT server`)")
            + ("" if adb else "; install platform-tools (`apt-get install adb`) or put adb on PATH")
        )
    log.info("starting adb server on port %d", server.port)
    proc = subprocess.run(
        [adb, "-P", str(server.port), "start-server"], capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0 or not _server_up(server):
        raise AdbError(f"`adb -P {server.port} start-server` failed: {proc.stderr.strip()}")


@dataclass(frozen=True)
class DeviceInfo:
    """One line of `adb devices -l`, with the phone's identity when it is ready."""

    serial: str
    state: str
    advice: str
    model: str = ""
    soc: str = ""
    abi: str = ""
    android: str = ""


def _is_network_serial(serial: str) -> bool:
    return re.fullmatch(r"[\w.\-\[\]:]+:\d+", serial) is not None


def list_devices(server: AdbServer, *, details: bool = True) -> list[DeviceInfo]:
    """All devices the server knows; offline ones get one `adb reconnect offline` first."""
    ensure_server(server)
    client = server.client()
    infos = client.list(extended=True)
    if any(i.state == "offline" for i in infos):
        _reconnect_offline(server)
        infos = client.list(extended=True)
    out = []
    for info in infos:
        advice = STATE_ADVICE.get(info.state, f"unknown state '{info.state}': replug the phone")
        if info.state == "device" and details:
            props = Device(server, info.serial).getprops()
            out.append(DeviceInfo(
                info.serial, info.state, advice,
                model=props.get("ro.product.model", ""),
                soc=props.get("ro.soc.model") or props.get("ro.board.platform", ""),
                abi=props.get("ro.product.cpu.abi", ""),
                android=props.get("ro.build.version.release", ""),
            ))
        else:
            out.append(DeviceInfo(info.serial, info.state, advice))
    return out


def _reconnect_offline(server: AdbServer) -> None:
    try:
        with server.client().make_connection(timeout=10) as conn:
            conn.send_command("host:reconnect-offline")
            conn.check_okay()
        time.sleep(1.0)
    except (_UtilsError, OSError, EOFError) as exc:
        log.warning("`adb reconnect offline` failed: %s", exc)


@dataclass(frozen=True)
class ShellResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class Device:
    """One device on one adb server. Thread-safe: each call opens its own adb stream."""

    def __init__(self, server: AdbServer, serial: str) -> None:
        self.server = server
        self.serial = serial
        self._dev = server.client().device(serial)

    @classmethod
    def connect(cls, server: AdbServer, serial: str, *, wait_s: float = 10.0) -> Device:
        """The ready device `serial`; a `host:port` serial is `adb connect`ed when absent."""
        ensure_server(server)
        client = server.client()
        state = _state(client, serial)
        if state != "device" and _is_network_serial(serial):
            log.info("adb connect %s", serial)
            message = client.connect(serial, timeout=wait_s)
            if "unable" in message or "failed" in message:
                raise DeviceGoneError(f"`adb connect {serial}`: {message}")
        deadline = time.monotonic() + wait_s
        while state != "device" and time.monotonic() < deadline:
            time.sleep(0.2)
            state = _state(client, serial)
        if state != "device":
            advice = STATE_ADVICE.get(state or "", "check the cable and `adb devices`")
            raise DeviceGoneError(f"device {serial} is {state or 'not attached'}: {advice}")
        return cls(server, serial)

    # ---- shell -------------------------------------------------------------------------------
    def shell(self, command: str, *, timeout_s: float = 60.0) -> ShellResult:
        """Run one command line; the exit code comes from shell protocol v2 when available."""
        try:
            result = self._dev.shell2(command, timeout=timeout_s, v2=True)
        except _UtilsTimeout as exc:
            self._check_alive(exc)
            raise CommandTimeout(f"`{command}` on {self.serial} took over {timeout_s:g} s") from exc
        except (_UtilsError, OSError, EOFError) as exc:
            self._check_alive(exc)
            raise AdbError(f"`{command}` on {self.serial} failed: {exc}") from exc
        return ShellResult(result.returncode, result.stdout, result.stderr)

    def check(self, command: str, *, timeout_s: float = 60.0) -> str:
        """Run a command that must succeed; returns stdout."""
        result = self.shell(command, timeout_s=timeout_s)
        if result.exit_code != 0:
            raise AdbError(
                f"`{command}` on {self.serial} exited {result.exit_code}: "
                f"{(result.stderr or result.stdout).strip()[-500:]}"
            )
        return result.stdout

    def getprops(self) -> dict[str, str]:
        text = self.check("getprop")
        return dict(re.findall(r"^\[([^\]]+)\]: \[(.*)\]\s*$", text, flags=re.M))

    # ---- files -------------------------------------------------------------------------------
    def push(self, local: Path, remote: str, *, mode: int = 0o644) -> None:
        try:
            self._dev.sync.push(Path(local), remote, mode=mode)
        except (_UtilsError, OSError, EOFError) as exc:
            self._check_alive(exc)
            raise AdbError(f"pushing {local} to {self.serial}:{remote} failed: {exc}") from exc

    def stat(self, remote: str) -> tuple[int, int] | None:
        """(mode, size) of a device path, or None when it does not exist."""
        try:
            info = self._dev.sync.stat(remote)
        except (_UtilsError, OSError, EOFError) as exc:
            self._check_alive(exc)
            raise AdbError(f"stat {self.serial}:{remote} failed: {exc}") from exc
        if info.mode == 0 and info.mtime is None:
            return None
        return info.mode, info.size

    def read_text(self, remote: str) -> str:
        return self.pull_bytes(remote).decode("utf-8", errors="replace")

    def pull_bytes(self, remote: str) -> bytes:
        """The content of a device file (adb sync RECV)."""
        try:
            return self._dev.sync.read_bytes(remote)
        except (_UtilsError, OSError, EOFError) as exc:
            self._check_alive(exc)
            raise AdbError(f"reading {self.serial}:{remote} failed: {exc}") from exc

    def read_head(self, remote: str, size: int) -> bytes:
        """The first `size` bytes of a device file (adb sync RECV, stopped early)."""
        head = bytearray()
        try:
            chunks = self._dev.sync.iter_content(remote)
            for chunk in chunks:
                head += chunk
                if len(head) >= size:
                    break
            chunks.close()
        except (_UtilsError, OSError, EOFError) as exc:
            self._check_alive(exc)
            raise AdbError(f"reading {self.serial}:{remote} failed: {exc}") from exc
        return bytes(head[:size])

    # ---- liveness ------------------------------------------------------------------------------
    def state(self) -> str | None:
        try:
            return _state(self.server.client(), self.serial)
        except (_UtilsError, OSError):
            return None

    def _check_alive(self, cause: BaseException) -> None:
        """Raise DeviceGoneError when `cause` came from the device going away."""
        for _ in range(10):  # the server needs a moment to notice a dropped transport
            state = self.state()
            if state != "device":
                raise DeviceGoneError(
                    f"device {self.serial} disconnected ({state or 'not attached'}): reconnect it "
                    "and run the same command again; everything measured so far is kept and the "
                    f"job resumes where it stopped. ({cause})"
                ) from cause
            time.sleep(0.2)


def _state(client: adbutils.AdbClient, serial: str) -> str | None:
    for info in client.list():
        if info.serial == serial:
            return info.state
    return None
