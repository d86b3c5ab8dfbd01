"""A host-side adb daemon: the device end of the adb transport protocol over TCP.

The real `adb` server attaches to it with `adb connect 127.0.0.1:PORT`. It answers CNXN without
asking for AUTH, opens streams on OPEN, and serves `shell:` / `shell,v2:` (exit codes via shell
protocol v2, which it advertises), `exec:` and `sync:` (STAT, LIST, SEND, RECV, DATA, DONE, QUIT).
Shell command lines run in `Shell` against the sandbox folder that stands for the device's `/`.

Fault injection (`Faults`): drop the connection after N shell commands (the device then stays
unplugged until `replug()`), crash a runner on a model whose path contains a string, or hang it;
and the faults a first run meets on real phones: a runner that crashes on every model or prints a
report no parser knows, a 32-bit userspace (abilist armeabi-v7a only; a 64-bit ELF does not run),
a full /data (`df` reports nothing available, pushes fail); runners that print the output of an
older release (`runner_form`, `shims._common.RUNNER_FORMS`), thermal zones whose `temp` cannot be
read (an unrooted Android 10+ phone), and a governor that is still ramping up: the first
`slow_first_runs` inferences of every runner launch take `slow_factor` times as long.
Knobs (`Knobs`) change how the device behaves while it runs: whether `su` works, whether the
runner shims round their timings to a coarser quantum (so that, e.g., both runs of a
`benchmark_model` invocation take the same µs and it prints `count=2 curr=X(all same)`), and
whether `executor_runner` was built with the event tracer (accepts `--etdump_path`).
`daemon.set_faults(...)`/`daemon.set_knobs(...)` take effect from the next shell command.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from . import protocol as P
from .device import LoopbackConfig, build_sandbox, device_path
from .shell import Shell
from .shims._common import RUNNER_FORMS

__all__ = ["LoopbackDaemon", "Faults", "Knobs", "RUNNER_FAULTS"]

log = logging.getLogger(__name__)

_ACK_TIMEOUT_S = 60.0
_SYNC_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Faults:
    """Faults the device injects; `None` disables each."""

    drop_after_commands: int | None = None  # serve N shell commands, then unplug
    crash_on: str | None = None  # a runner aborts (SIGABRT) on a model path containing this
    hang_on: str | None = None  # a runner never returns on a model path containing this
    runner_fault: str | None = None  # every runner run: "crash" (SIGABRT) | "unknown-format" (prints
    # a report no parser knows, exits 0), as a wrong or foreign build does
    userspace_32bit: bool = False  # a 32-bit Android: abilist armeabi-v7a only, 64-bit ELFs do not run
    disk_full: bool = False  # /data is full: `df` reports 0 available and pushes fail (ENOSPC)
    runner_form: str | None = None  # the runners print the output of an older build (RUNNER_FORMS)
    thermal_unreadable: bool = False  # thermal_zone*/temp: Permission denied (stock Android 10+)
    no_dumpsys: bool = False  # `dumpsys battery|power` find no service: the battery and screen state
    # must come from sysfs (power_supply, backlight), as on builds that hide those services
    slow_first_runs: int = 0  # the first N inferences of every runner launch take ...
    slow_factor: float = 1.0  # ... this many times as long, as under a governor still ramping up

    def __post_init__(self) -> None:
        if self.runner_fault not in RUNNER_FAULTS:
            raise ValueError(f"runner_fault must be one of {RUNNER_FAULTS}, got {self.runner_fault!r}")
        if self.runner_form is not None and self.runner_form not in RUNNER_FORMS:
            raise ValueError(f"runner_form must be one of {', '.join(RUNNER_FORMS)}, got {self.runner_form!r}")
        if self.slow_first_runs < 0 or self.slow_factor < 1.0:
            raise ValueError("slow_first_runs must be >= 0 and slow_factor >= 1, got "
                             f"{self.slow_first_runs} and {self.slow_factor}")

    def env(self) -> dict[str, str]:
        """What the runner shims see of these faults."""
        env = {}
        if self.crash_on:
            env["LOOPBACK_CRASH_ON"] = self.crash_on
        if self.hang_on:
            env["LOOPBACK_HANG_ON"] = self.hang_on
        if self.runner_fault:
            env["LOOPBACK_RUNNER_FAULT"] = self.runner_fault
        if self.runner_form:
            env["LOOPBACK_RUNNER_FORM"] = self.runner_form
        if self.slow_first_runs and self.slow_factor > 1.0:
            env["LOOPBACK_SLOW_FIRST"] = f"{self.slow_first_runs}:{self.slow_factor:g}"
        return env

    def props(self, props: dict[str, str]) -> dict[str, str]:
        """The property set as the faulty device reports it."""
        if not self.userspace_32bit:
            return props
        return {**props, "ro.product.cpu.abi": "armeabi-v7a", "ro.product.cpu.abilist": "armeabi-v7a,armeabi",
                "ro.product.cpu.abilist32": "armeabi-v7a,armeabi", "ro.product.cpu.abilist64": ""}


RUNNER_FAULTS = (None, "crash", "unknown-format")


@dataclass(frozen=True)
class Knobs:
    """Device behaviour that tests and dry runs switch (`LOOPBACK_*` variables reach the shims)."""

    rooted: bool = True  # `su -c` / `su 0 sh -c` work; False: `su: not found`, as on a stock phone
    timing_quantum_us: int = 0  # shims round timings up to multiples of this; 0: to the µs, as the tools do
    event_tracer: bool = False  # executor_runner built with devtools' event tracer (--etdump_path);
    # the README's build does not have it, and then the flag is refused

    def env(self) -> dict[str, str]:
        env = {}
        if self.timing_quantum_us:
            env["LOOPBACK_TIMING_QUANTUM_US"] = str(int(self.timing_quantum_us))
        if self.event_tracer:
            env["LOOPBACK_EVENT_TRACER"] = "1"
        return env


class _Closed(Exception):
    """The stream or its connection went away."""


class _Stream:
    """One adb stream (OPEN ... CLSE) with blocking reads and acknowledged writes."""

    def __init__(self, conn: _Connection, local_id: int, remote_id: int) -> None:
        self.conn, self.local_id, self.remote_id = conn, local_id, remote_id
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._acked = threading.Event()
        self._acked.set()
        self.closed = False

    def feed(self, data: bytes) -> None:
        with self._cond:
            self._buf += data
            self._cond.notify_all()

    def close_from_peer(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        self._acked.set()

    def ack(self) -> None:
        self._acked.set()

    def read_exact(self, n: int) -> bytes:
        with self._cond:
            while len(self._buf) < n:
                if self.closed or self.conn.dead:
                    raise _Closed()
                self._cond.wait(0.5)
            data = bytes(self._buf[:n])
            del self._buf[:n]
            return data

    def write(self, data: bytes) -> None:
        size = self.conn.max_payload
        for start in range(0, len(data), size):
            if not self._acked.wait(_ACK_TIMEOUT_S) or self.closed or self.conn.dead:
                raise _Closed()
            self._acked.clear()
            self.conn.send(P.A_WRTE, self.local_id, self.remote_id, data[start : start + size])
        if not self._acked.wait(_ACK_TIMEOUT_S):
            raise _Closed()

    def finish(self) -> None:
        if not self.closed and not self.conn.dead:
            self.conn.send(P.A_CLSE, self.local_id, self.remote_id)
        self.conn.forget(self.local_id)


class _Connection:
    def __init__(self, daemon: LoopbackDaemon, sock: socket.socket) -> None:
        self.daemon, self.sock = daemon, sock
        self.max_payload = P.MAX_PAYLOAD
        self.dead = False
        self._send_lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._ids = itertools.count(1)

    def send(self, command: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        with self._send_lock:
            try:
                self.sock.sendall(P.pack(command, arg0, arg1, data))
            except OSError as exc:
                self.dead = True
                raise _Closed() from exc

    def forget(self, local_id: int) -> None:
        self._streams.pop(local_id, None)

    def kill(self) -> None:
        self.dead = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for stream in list(self._streams.values()):
            stream.close_from_peer()

    def _recv_exact(self, n: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < n:
            part = self.sock.recv(n - len(chunks))
            if not part:
                raise _Closed()
            chunks += part
        return bytes(chunks)

    def serve(self) -> None:
        try:
            while not self.dead:
                header = P.unpack_header(self._recv_exact(P.HEADER_SIZE))
                data = self._recv_exact(header.length) if header.length else b""
                self._dispatch(header, data)
        except (_Closed, OSError, P.ProtocolError) as exc:
            log.debug("loopback connection ended: %r", exc)
        finally:
            self.kill()
            self.daemon._forget(self)

    def _dispatch(self, header: P.Header, data: bytes) -> None:
        if header.command == P.A_CNXN:
            self.max_payload = max(4096, min(header.arg1, P.MAX_PAYLOAD))
            self.send(P.A_CNXN, P.A_VERSION, P.MAX_PAYLOAD, self.daemon.banner())
        elif header.command == P.A_OPEN:
            service = data.rstrip(b"\0").decode("utf-8", errors="replace")
            handler = self.daemon._service(service)
            if handler is None:
                log.info("loopback: refusing unknown service %r", service)
                self.send(P.A_CLSE, 0, header.arg0)
                return
            local_id = next(self._ids)
            stream = _Stream(self, local_id, header.arg0)
            self._streams[local_id] = stream
            self.send(P.A_OKAY, local_id, header.arg0)
            threading.Thread(
                target=self._run_service, args=(handler, stream), daemon=True,
                name=f"loopback-{service.split(':')[0]}",
            ).start()
        elif header.command == P.A_WRTE:
            stream = self._streams.get(header.arg1)
            if stream is not None:
                stream.feed(data)
                self.send(P.A_OKAY, header.arg1, header.arg0)
        elif header.command == P.A_OKAY:
            stream = self._streams.get(header.arg1)
            if stream is not None:
                stream.ack()
        elif header.command == P.A_CLSE:
            stream = self._streams.get(header.arg1)
            if stream is not None:
                stream.close_from_peer()
        # AUTH and STLS are never requested by this device, so the peer does not send them.

    def _run_service(self, handler, stream: _Stream) -> None:  # noqa: ANN001
        try:
            handler(stream)
        except _Closed:
            return
        except OSError as exc:
            log.warning("loopback service failed: %s", exc)
        try:
            stream.finish()
        except _Closed:
            pass


class LoopbackDaemon:
    """A device on 127.0.0.1:port whose filesystem is `sandbox`; see the module docstring."""

    def __init__(
        self,
        sandbox: Path,
        config: LoopbackConfig | None = None,
        *,
        port: int = 0,
        faults: Faults | None = None,
        knobs: Knobs | None = None,
    ) -> None:
        self.sandbox = Path(sandbox)
        self.config = config or LoopbackConfig()
        self.faults = faults or Faults()
        self.knobs = knobs or Knobs()
        self.commands: list[str] = []  # every shell command line served, in order
        self.unsupported: list[str] = []  # commands the shell refused as forms it does not serve
        self.pushes: list[str] = []  # device paths written by sync SEND, in order
        self._port = port
        self._listener: socket.socket | None = None
        self._conns: set[_Connection] = set()
        self._lock = threading.Lock()
        self._worker: subprocess.Popen | None = None
        self._worker_socket = ""
        self._tmp: tempfile.TemporaryDirectory | None = None

    # ---- lifecycle ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self._port}"

    def start(self) -> LoopbackDaemon:
        build_sandbox(self.config, self.sandbox)
        self._start_worker()
        self._listen()
        log.info("loopback device listening on %s (sandbox %s)", self.serial, self.sandbox)
        return self

    def stop(self) -> None:
        self.unplug()
        if self._worker is not None:
            self._worker.terminate()
            try:
                self._worker.wait(10)
            except subprocess.TimeoutExpired:
                self._worker.kill()
            self._worker = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LoopbackDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def unplug(self) -> None:
        """Drop every connection and stop listening, like pulling the cable."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = set(self._conns), set()
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            listener.close()
        for conn in conns:
            conn.kill()

    def replug(self) -> None:
        """Listen again on the same port (the adb server reconnects, or `adb connect`)."""
        if self._listener is None:
            self._listen()

    def set_faults(self, **changes: object) -> None:
        self.faults = replace(self.faults, **changes)

    def set_knobs(self, **changes: object) -> None:
        self.knobs = replace(self.knobs, **changes)

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self._port))
        listener.listen(8)
        self._port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True,
                         name="loopback-accept").start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            with self._lock:
                if self._listener is not listener:
                    sock.close()
                    return
                self._conns.add(conn)
            threading.Thread(target=conn.serve, daemon=True, name="loopback-conn").start()

    def _forget(self, conn: _Connection) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _start_worker(self) -> None:
        if self._worker is not None:
            return
        self._tmp = tempfile.TemporaryDirectory(prefix="hwnas-loopback-")
        self._worker_socket = os.path.join(self._tmp.name, "runtime.sock")
        self._worker = subprocess.Popen(
            [sys.executable, "-m", "android_harness.loopback.worker", self._worker_socket],
            cwd=str(Path(__file__).resolve().parents[2]),
        )

    # ---- identity and services ---------------------------------------------------------------
    def props(self) -> dict[str, str]:
        """The property set: the config's, with a hardware serial of this device's own."""
        return {"ro.serialno": f"LOOPBACK{self._port}", **self.config.props}

    def banner(self) -> bytes:
        props = self.config.props
        fields = ";".join(
            f"{key}={props.get(key, '')}"
            for key in ("ro.product.name", "ro.product.model", "ro.product.device")
        )
        return f"device::{fields};features=shell_v2".encode()

    def _service(self, service: str):  # noqa: ANN202
        if service == "sync:":
            return self._sync
        name, sep, command = service.partition(":")
        if not sep or not command:
            return None
        kind, *options = name.split(",")
        if kind == "shell":
            v2 = "v2" in options
            return lambda stream: self._shell(stream, command, v2=v2)
        if kind == "exec":
            return lambda stream: self._shell(stream, command, v2=False)
        return None

    def _count_command(self, command: str) -> bool:
        """Record a shell command; False when the drop fault fires instead of serving it."""
        with self._lock:
            limit = self.faults.drop_after_commands
            if limit is not None and len(self.commands) >= limit:
                drop = True
            else:
                self.commands.append(command)
                drop = False
        if drop:
            log.info("loopback: dropping the connection (fault after %d commands)", limit)
            self.set_faults(drop_after_commands=None)
            self.unplug()
        return not drop

    def _shell(self, stream: _Stream, command: str, *, v2: bool) -> None:
        if not self._count_command(command):
            raise _Closed()
        ncpu = sum(len(c.cpus) for c in self.config.clusters)
        env = {"LOOPBACK_RUNTIME_SOCKET": self._worker_socket, **self.knobs.env(), **self.faults.env()}
        shell = Shell(self.sandbox, props=self.faults.props(self.props()), env=env, cpu_count=ncpu,
                      rooted=self.knobs.rooted, disk_full=self.faults.disk_full,
                      userspace_bits=32 if self.faults.userspace_32bit else 64,
                      thermal_readable=not self.faults.thermal_unreadable,
                      dumpsys=not self.faults.no_dumpsys)
        result = shell.run(command)
        self.unsupported += shell.unsupported
        if v2:
            out = b""
            if result.stdout:
                out += P.shell_v2_packet(P.SHELL_STDOUT, result.stdout)
            if result.stderr:
                out += P.shell_v2_packet(P.SHELL_STDERR, result.stderr)
            out += P.shell_v2_packet(P.SHELL_EXIT, bytes([result.exit_code & 0xFF]))
            stream.write(out)
        else:
            stream.write(result.stdout + result.stderr)

    def _sync(self, stream: _Stream) -> None:
        while True:
            try:
                request = stream.read_exact(8)
            except _Closed:
                return
            ident, length = request[:4], struct.unpack("<I", request[4:])[0]
            if ident == b"QUIT":
                return
            arg = stream.read_exact(length).decode("utf-8", errors="replace")
            if ident == b"STAT":
                stream.write(b"STAT" + self._stat(arg))
            elif ident == b"LIST":
                self._list(stream, arg)
            elif ident == b"SEND":
                self._receive_file(stream, arg)
            elif ident == b"RECV":
                self._send_file(stream, arg)
            else:
                self._fail(stream, f"unknown sync request {ident!r}")
                return

    def _stat(self, path: str) -> bytes:
        host = device_path(self.sandbox, path)
        try:
            info = host.stat()
        except OSError:
            return struct.pack("<III", 0, 0, 0)
        return struct.pack("<III", info.st_mode, info.st_size & 0xFFFFFFFF, int(info.st_mtime))

    def _list(self, stream: _Stream, path: str) -> None:
        host = device_path(self.sandbox, path)
        out = bytearray()
        if host.is_dir():
            for name in sorted(os.listdir(host)):
                info = (host / name).stat()
                raw = name.encode()
                out += b"DENT" + struct.pack(
                    "<IIII", info.st_mode, info.st_size & 0xFFFFFFFF, int(info.st_mtime), len(raw)
                ) + raw
        out += b"DONE" + struct.pack("<IIII", 0, 0, 0, 0)
        stream.write(bytes(out))

    def _fail(self, stream: _Stream, message: str) -> None:
        raw = message.encode()
        stream.write(b"FAIL" + struct.pack("<I", len(raw)) + raw)

    def _receive_file(self, stream: _Stream, arg: str) -> None:
        path, _, mode_text = arg.rpartition(",")
        mode = int(mode_text) if mode_text.isdigit() else 0o644
        host = device_path(self.sandbox, path)
        data = bytearray()
        while True:
            ident = stream.read_exact(4)
            value = struct.unpack("<I", stream.read_exact(4))[0]
            if ident == b"DATA":
                data += stream.read_exact(value)
            elif ident == b"DONE":
                break
            else:
                self._fail(stream, f"unexpected {ident!r} in SEND")
                return
        if not host.parent.is_dir():
            self._fail(stream, f"secure_mkdirs failed: {os.path.dirname(path)}: not a directory")
            return
        if self.faults.disk_full:
            self._fail(stream, f"write failed: No space left on device ({path})")
            return
        tmp = host.with_name(f".{host.name}.part")
        tmp.write_bytes(bytes(data))
        tmp.chmod(stat.S_IMODE(mode) or 0o644)
        os.replace(tmp, host)
        os.utime(host, (time.time(), value or time.time()))
        self.pushes.append(path)
        stream.write(b"OKAY" + struct.pack("<I", 0))

    def _send_file(self, stream: _Stream, path: str) -> None:
        host = device_path(self.sandbox, path)
        if not host.is_file():
            self._fail(stream, f"remote object '{path}' does not exist")
            return
        with open(host, "rb") as handle:
            for chunk in iter(lambda: handle.read(_SYNC_CHUNK), b""):
                stream.write(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        stream.write(b"DONE" + struct.pack("<I", 0))
