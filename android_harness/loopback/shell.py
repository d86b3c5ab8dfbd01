"""The loopback device's shell: the command lines the harness sends, and nothing else.

A line is tokenised with `shlex` (POSIX quoting) and split into commands at `&&` and `;`.
These forms exist, as `android_harness` sends them (the names in brackets are optional):

    getprop [NAME]                          cat FILE...
    grep -H . FILE...       (globs)         echo WORD... [> FILE]
    test -d PATH                            mkdir -p PATH
    df -k PATH                              sha256sum FILE... [2>/dev/null]
    chmod MODE PATH                         rm -rf PATH
    dumpsys battery  |  dumpsys power       logcat -c  |  logcat -d -s TAG
    id                                      cd DIR && ...
    su -c LINE  |  su 0 sh -c LINE          (rooted devices: Magisk's and AOSP's su)
    [timeout -s 9 SECONDS] [taskset HEXMASK] /PATH/TO/EXECUTABLE ARGS...

An executable runs as a host process (the runner shims) with the sandbox as its filesystem.
Writes (`>`) under /sys and /proc need root; cpufreq writes go through `device.write_cpufreq`.
Any other command name fails as a phone's shell does (`/system/bin/sh: NAME: not found`, exit 127);
a known command in a form the harness does not send fails with exit 2, so a harness change that
would reach the phone untested shows up here first.

    Shell(sandbox).run("cd /data/local/tmp && getprop ro.product.model")  ->  ShellResult(0, b"Loopback\n", b"")
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .device import BACKLIGHT, device_path, write_cpufreq

__all__ = ["Shell", "ShellResult", "load_props"]

_CPUFREQ_FILE = re.compile(r"^/sys/devices/system/cpu/cpu(\d+)/cpufreq/(\w+)$")
_PRIVILEGED = ("/sys/", "/proc/")
_STDERR_NULL = re.compile(r"\s+2>/dev/null\s*$")
_THERMAL_TEMP = re.compile(r"/sys/(?:class/thermal|devices/virtual/thermal)/thermal_zone\d+/temp")


@dataclass
class ShellResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


@dataclass
class _Io:
    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)

    def say(self, text: str) -> None:
        self.out += text.encode()

    def complain(self, text: str) -> None:
        self.err += text.encode()


class _Unsupported(Exception):
    """A known command in a form the harness never sends."""


class Shell:
    """Runs one command line against a sandbox folder that stands for the device's `/`."""

    def __init__(
        self,
        sandbox: Path,
        *,
        props: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        cpu_count: int = 8,
        rooted: bool = False,  # `su` exists
        root: bool = False,  # this shell runs as root (inside `su`)
        max_runtime_s: float = 900.0,
        disk_full: bool = False,  # `df` reports no space left and writes fail (ENOSPC)
        userspace_bits: int = 64,  # 32: a 32-bit Android, which cannot exec a 64-bit ELF
        thermal_readable: bool = True,  # False: thermal_zone*/temp is Permission denied
        dumpsys: bool = True,  # False: `dumpsys` finds no battery or power service
    ) -> None:
        self.dumpsys = dumpsys
        self.sandbox = sandbox
        self.thermal_readable = thermal_readable
        self.disk_full = disk_full
        self.userspace_bits = userspace_bits
        self.props = props if props is not None else {}
        self.env = dict(env or {})
        self.cpu_count = cpu_count
        self.rooted = rooted
        self.root = root
        self.max_runtime_s = max_runtime_s
        self.logcat_file = sandbox / ".loopback" / "logcat"
        self.cwd = "/"
        self.unsupported: list[str] = []  # commands in a form this shell does not serve

    # ---- lines --------------------------------------------------------------------------------
    def run(self, line: str) -> ShellResult:
        io = _Io()
        quiet = _STDERR_NULL.search(line) is not None
        line = _STDERR_NULL.sub("", line)
        try:
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            tokens = list(lexer)
        except ValueError as exc:
            return ShellResult(2, b"", f"/system/bin/sh: syntax error: {exc}\n".encode())
        status, command, skip = 0, [], False
        for token in [*tokens, ";"]:
            if token not in ("&&", ";"):
                command.append(token)
                continue
            if command and not skip:
                status = self._command(command, io)
            skip = token == "&&" and status != 0
            command = []
        return ShellResult(status, bytes(io.out), b"" if quiet else bytes(io.err))

    def _command(self, words: list[str], io: _Io) -> int:
        target = None
        if len(words) >= 3 and words[-2] == ">":
            words, target = words[:-2], words[-1]
        if any(w in (">", ">>", "<", "|", "&", "(", ")", "<<") for w in words):
            io.complain(f"/system/bin/sh: unsupported redirection or operator in: {' '.join(words)}\n")
            return 2
        if not words:
            return 0
        sink = _Io() if target is not None else io
        status = self._exec(words, sink, deadline=None)
        if target is not None:
            io.err += sink.err
            if status == 0:
                status = self._write(target, bytes(sink.out), io)
        return status

    def _exec(self, words: list[str], io: _Io, deadline: float | None) -> int:
        name, args = words[0], words[1:]
        handler = _COMMANDS.get(name)
        if handler is None and "/" not in name:
            io.complain(f"/system/bin/sh: {name}: not found\n")
            return 127
        try:
            if handler is None:
                return self._run_file(words, io, deadline)
            if name in ("timeout", "taskset"):
                return handler(self, args, io, deadline)
            return handler(self, args, io)
        except _Unsupported:
            self.unsupported.append(" ".join(words))
            io.complain(f"/system/bin/sh: {' '.join(words)}: a form the loopback device does not "
                        "serve (see android_harness/loopback/shell.py)\n")
            return 2

    # ---- paths --------------------------------------------------------------------------------
    def _path(self, path: str) -> Path:
        return device_path(self.sandbox, path, self.cwd)

    def _absolute(self, path: str) -> str:
        relative = self._path(path).relative_to(self.sandbox).as_posix()
        return "/" if relative == "." else "/" + relative

    def _glob(self, pattern: str) -> list[str]:
        """sh globbing of an absolute pattern; the pattern itself when nothing matches."""
        if not any(c in pattern for c in "*?[") or not pattern.startswith("/"):
            return [pattern]
        matches = ["/"]
        for part in (p for p in pattern.split("/") if p):
            found = []
            for prefix in matches:
                host = self._path(prefix)
                names = sorted(n for n in os.listdir(host) if not n.startswith(".")) if host.is_dir() else []
                found += [f"{prefix.rstrip('/')}/{n}" for n in names if fnmatch.fnmatchcase(n, part)]
            matches = found
        return matches or [pattern]

    def _write(self, path: str, data: bytes, io: _Io) -> int:
        absolute = self._absolute(path)
        if absolute.startswith(_PRIVILEGED) and not self.root:
            io.complain(f"/system/bin/sh: can't create {path}: Permission denied\n")
            return 1
        cpufreq = _CPUFREQ_FILE.match(absolute)
        if cpufreq:
            error = write_cpufreq(self.sandbox, int(cpufreq.group(1)), cpufreq.group(2), data.decode())
            if error:
                io.complain(f"/system/bin/sh: echo: write error: {error}\n")
                return 1
            return 0
        target = self._path(path)
        if not target.parent.is_dir():
            io.complain(f"/system/bin/sh: can't create {path}: No such file or directory\n")
            return 1
        if self.disk_full and data:
            io.complain("/system/bin/sh: write error: No space left on device\n")
            return 1
        target.write_bytes(data)
        return 0

    # ---- commands -----------------------------------------------------------------------------
    def _cd(self, args: list[str], io: _Io) -> int:
        if len(args) != 1:
            raise _Unsupported
        if not self._path(args[0]).is_dir():
            io.complain(f"/system/bin/sh: cd: {args[0]}: No such file or directory\n")
            return 2
        self.cwd = self._absolute(args[0])
        return 0

    def _getprop(self, args: list[str], io: _Io) -> int:
        if len(args) > 1:
            raise _Unsupported
        if args:
            io.say(self.props.get(args[0], "") + "\n")
        else:
            io.say("".join(f"[{k}]: [{v}]\n" for k, v in sorted(self.props.items())))
        return 0

    def _cat(self, args: list[str], io: _Io) -> int:
        if not args or any(a.startswith("-") for a in args):
            raise _Unsupported
        status = 0
        for name in args:
            host = self._path(name)
            if self._denied(name):
                io.complain(f"cat: {name}: Permission denied\n")
                status = 1
            elif not host.is_file():
                io.complain(f"cat: {name}: {'Is a directory' if host.is_dir() else 'No such file or directory'}\n")
                status = 1
            else:
                io.out += host.read_bytes()
        return status

    def _denied(self, name: str) -> bool:
        """A read SELinux refuses: thermal zone temperatures, when the device hides them."""
        return (not self.thermal_readable and not self.root
                and _THERMAL_TEMP.fullmatch(self._absolute(name)) is not None)

    def _echo(self, args: list[str], io: _Io) -> int:
        if args and args[0].startswith("-"):
            raise _Unsupported
        io.say(" ".join(args) + "\n")
        return 0

    def _grep(self, args: list[str], io: _Io) -> int:
        if args[:2] != ["-H", "."] or len(args) < 3:
            raise _Unsupported
        found, status = False, 0
        for name in (path for pattern in args[2:] for path in self._glob(pattern)):
            host = self._path(name)
            if self._denied(name):
                io.complain(f"grep: {name}: Permission denied\n")
                status = 2
                continue
            if not host.is_file():
                io.complain(f"grep: {name}: No such file or directory\n")
                status = 2
                continue
            for text in host.read_text(errors="replace").splitlines():
                if text:
                    found = True
                    io.say(f"{name}:{text}\n")
        return status or (0 if found else 1)

    def _test(self, args: list[str], io: _Io) -> int:
        if len(args) != 2 or args[0] != "-d":
            raise _Unsupported
        return 0 if self._path(args[1]).is_dir() else 1

    def _mkdir(self, args: list[str], io: _Io) -> int:
        if len(args) != 2 or args[0] != "-p":
            raise _Unsupported
        host = self._path(args[1])
        if host.exists() and not host.is_dir():
            io.complain(f"mkdir: '{args[1]}': File exists\n")
            return 1
        host.mkdir(parents=True, exist_ok=True)
        return 0

    def _df(self, args: list[str], io: _Io) -> int:
        if len(args) != 2 or args[0] != "-k":
            raise _Unsupported
        host = self._path(args[1])
        if not host.exists():
            io.complain(f"df: {args[1]}: No such file or directory\n")
            return 1
        st = os.statvfs(host)
        total = st.f_blocks * st.f_frsize // 1024
        free = 0 if self.disk_full else st.f_bavail * st.f_frsize // 1024
        used = total if self.disk_full else total - st.f_bfree * st.f_frsize // 1024
        io.say("Filesystem      1K-blocks     Used Available Use% Mounted on\n"
               f"/dev/block/dm-5 {total:>12} {used:>8} {free:>9} "
               f"{int(round(100 * used / total)) if total else 0:>3}% /data\n")
        return 0

    def _sha256sum(self, args: list[str], io: _Io) -> int:
        if not args or any(a.startswith("-") for a in args):
            raise _Unsupported
        status = 0
        for name in args:
            host = self._path(name)
            if self._denied(name):
                io.complain(f"cat: {name}: Permission denied\n")
                status = 1
            elif not host.is_file():
                io.complain(f"sha256sum: {name}: No such file or directory\n")
                status = 1
                continue
            digest = hashlib.sha256()
            with open(host, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            io.say(f"{digest.hexdigest()}  {name}\n")
        return status

    def _chmod(self, args: list[str], io: _Io) -> int:
        if len(args) != 2 or not re.fullmatch(r"[0-7]{3,4}", args[0]):
            raise _Unsupported
        host = self._path(args[1])
        if not host.exists():
            io.complain(f"chmod: {args[1]}: No such file or directory\n")
            return 1
        host.chmod(int(args[0], 8))
        return 0

    def _rm(self, args: list[str], io: _Io) -> int:
        if len(args) != 2 or args[0] != "-rf":
            raise _Unsupported
        host = self._path(args[1])
        if host == self.sandbox:
            io.complain("rm: refusing to remove '/'\n")
            return 1
        if host.is_dir() and not host.is_symlink():
            shutil.rmtree(host)
        elif host.exists() or host.is_symlink():
            host.unlink()
        return 0

    def _dumpsys(self, args: list[str], io: _Io) -> int:
        if args not in (["battery"], ["power"]):
            raise _Unsupported
        if not self.dumpsys:
            io.complain(f"Can't find service: {args[0]}\n")
            return 0
        if args == ["power"]:
            return self._dumpsys_power(io)
        base = "/sys/class/power_supply/battery"
        level = self._path(f"{base}/capacity").read_text().strip()
        temp = self._path(f"{base}/temp").read_text().strip()
        status = self._path(f"{base}/status").read_text().strip()
        usb = self._path("/sys/class/power_supply/usb/online").read_text().strip() == "1"
        code = {"Charging": 2, "Discharging": 3, "Not charging": 4, "Full": 5}.get(status, 1)
        io.say("Current Battery Service state:\n"
               f"  AC powered: false\n  USB powered: {str(usb).lower()}\n"
               "  Wireless powered: false\n  Max charging current: 0\n"
               f"  status: {code}\n  health: 2\n  present: true\n"
               f"  level: {level}\n  scale: 100\n  voltage: 4123\n  temperature: {temp}\n"
               "  technology: Li-ion\n")
        return 0

    def _dumpsys_power(self, io: _Io) -> int:
        """The lines of `dumpsys power` (PowerManagerService) that say whether the screen is on."""
        on = self._path(f"{BACKLIGHT}/brightness").read_text().strip() not in ("", "0")
        wakefulness = "Awake" if on else "Asleep"
        io.say("POWER MANAGER (dumpsys power)\n\nPower Manager State:\n"
               f"  mDirty=0x0\n  mWakefulness={wakefulness}\n  mWakefulnessChanging=false\n"
               f"  mIsPowered={str(self._path('/sys/class/power_supply/usb/online').read_text().strip() == '1').lower()}\n"
               "  mStayOn=false\n"
               f"\nDisplay Power: state={'ON' if on else 'OFF'}\n")
        return 0

    def _logcat(self, args: list[str], io: _Io) -> int:
        if args == ["-c"]:
            self.logcat_file.parent.mkdir(parents=True, exist_ok=True)
            self.logcat_file.write_text("")
            return 0
        if len(args) != 3 or args[:2] != ["-d", "-s"]:
            raise _Unsupported
        io.say("--------- beginning of main\n")
        if self.logcat_file.exists():
            for text in self.logcat_file.read_text(errors="replace").splitlines():
                match = re.match(r"^\S+ \S+\s+\d+\s+\d+ [VDIWEF] ([^:]+?)\s*:", text)
                if match and match.group(1) == args[2]:
                    io.say(text + "\n")
        return 0

    def _id(self, args: list[str], io: _Io) -> int:
        if args:
            raise _Unsupported
        io.say("uid=0(root) gid=0(root) groups=0(root) context=u:r:su:s0\n" if self.root else
               "uid=2000(shell) gid=2000(shell) groups=2000(shell) context=u:r:shell:s0\n")
        return 0

    def _su(self, args: list[str], io: _Io) -> int:
        if not self.rooted:
            io.complain("/system/bin/sh: su: not found\n")
            return 127
        if len(args) == 2 and args[0] == "-c":
            line = args[1]
        elif len(args) == 4 and args[:3] == ["0", "sh", "-c"]:
            line = args[3]
        else:
            raise _Unsupported
        inner = Shell(self.sandbox, props=self.props, env=self.env, cpu_count=self.cpu_count,
                      rooted=True, root=True, max_runtime_s=self.max_runtime_s,
                      disk_full=self.disk_full, userspace_bits=self.userspace_bits,
                      thermal_readable=self.thermal_readable, dumpsys=self.dumpsys)
        inner.cwd = self.cwd
        result = inner.run(line)
        self.unsupported += inner.unsupported
        io.out += result.stdout
        io.err += result.stderr
        return result.exit_code

    def _timeout(self, args: list[str], io: _Io, deadline: float | None) -> int:
        if len(args) < 4 or args[:2] != ["-s", "9"]:
            raise _Unsupported
        try:
            own = time.monotonic() + float(args[2])
        except ValueError:
            raise _Unsupported from None
        return self._exec(args[3:], io, own if deadline is None else min(own, deadline))

    def _taskset(self, args: list[str], io: _Io, deadline: float | None) -> int:
        if len(args) < 2 or not re.fullmatch(r"[0-9a-fA-F]+", args[0]):
            raise _Unsupported
        mask = int(args[0], 16)
        if mask == 0 or mask >> self.cpu_count:
            io.complain(f"taskset: sched_setaffinity: Invalid argument (mask {args[0]})\n")
            return 1
        return self._exec(args[1:], io, deadline)

    def _run_file(self, words: list[str], io: _Io, deadline: float | None) -> int:
        host = self._path(words[0])
        if not host.is_file():
            io.complain(f"/system/bin/sh: {words[0]}: inaccessible or not found\n")
            return 127
        if not os.access(host, os.X_OK):
            io.complain(f"/system/bin/sh: {words[0]}: can't execute: Permission denied\n")
            return 126
        try:
            argv = self._interpreted(host) + [str(host), *words[1:]]
        except _ExecFormat as exc:
            io.complain(f"/system/bin/sh: {words[0]}: {exc}\n")
            return 126
        env = {**os.environ, **self.env, "LOOPBACK_ROOT": str(self.sandbox),
               "LOOPBACK_CWD": self.cwd, "LOOPBACK_LOGCAT": str(self.logcat_file)}
        limit = self.max_runtime_s if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            proc = subprocess.run(argv, cwd=self._path(self.cwd), env=env,
                                  capture_output=True, timeout=limit, check=False)
        except subprocess.TimeoutExpired as exc:
            io.out += exc.stdout or b""
            io.err += exc.stderr or b""
            return 124  # what `timeout` exits with when it had to kill the command
        io.out += proc.stdout
        io.err += proc.stderr
        if proc.returncode < 0:
            signum = -proc.returncode
            name = {signal.SIGABRT: "Aborted", signal.SIGSEGV: "Segmentation fault"}.get(
                signum, f"Signal {signum}")
            io.complain(f"{name}\n")
            return 128 + signum
        return proc.returncode

    def _interpreted(self, host: Path) -> list[str]:
        """What the kernel prepends to run `host`: for a `#!INTERPRETER` script, the interpreter
        (a device path, resolved in the sandbox); [] for a binary. A 64-bit ELF (the binary or
        the interpreter) on a 32-bit userspace fails as Android's shell reports it."""
        with open(host, "rb") as handle:
            head = handle.read(256)
        interpreter: list[str] = []
        if head.startswith(b"#!"):
            name = head[2:].split(b"\n", 1)[0].split()[0].decode(errors="replace")
            resolved = self._path(name)
            if not resolved.is_file():  # a host interpreter (tests' `#!/bin/sh` scripts)
                resolved = Path(name)
            if not resolved.is_file():
                raise _ExecFormat(f"bad interpreter: {name}: No such file or directory")
            with open(resolved, "rb") as handle:
                head = handle.read(64)
            # the sandbox's interpreter links to a host one: run the link's target as named (a
            # virtual environment's python finds its packages only when started by that name)
            interpreter = [os.readlink(resolved) if resolved.is_symlink() else str(resolved)]
        if head[:4] == b"\x7fELF" and head[4] == 2 and self.userspace_bits == 32:
            raise _ExecFormat("not executable: 64-bit ELF file")
        return interpreter


class _ExecFormat(Exception):
    """The file cannot be executed on this device (the message is the shell's)."""


_COMMANDS: dict[str, Callable[..., int]] = {
    "cd": Shell._cd,
    "getprop": Shell._getprop,
    "cat": Shell._cat,
    "echo": Shell._echo,
    "grep": Shell._grep,
    "test": Shell._test,
    "mkdir": Shell._mkdir,
    "df": Shell._df,
    "sha256sum": Shell._sha256sum,
    "chmod": Shell._chmod,
    "rm": Shell._rm,
    "dumpsys": Shell._dumpsys,
    "logcat": Shell._logcat,
    "id": Shell._id,
    "su": Shell._su,
    "timeout": Shell._timeout,
    "taskset": Shell._taskset,
}


def load_props(sandbox: Path) -> dict[str, str]:
    """The property set stored in the sandbox by `build_sandbox`."""
    return json.loads(device_path(sandbox, "/system/build.prop.json").read_text())
