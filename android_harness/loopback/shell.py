"""A small Android-shell interpreter for the loopback device.

It understands the subset of `sh` + toybox that a profiling harness sends: `;`, `&&`, `||`,
quoting, `$?`/`$VAR`, globs, `cd`, the redirections `>`, `>>`, `2>`, `2>&1`, and the commands in
`Shell.COMMANDS`. Any other word containing a '/' runs the sandbox file at that device path as a
host process (that is how the runner shims run). Whatever it does not know fails the way a real
shell would (`sh: x: not found`, exit 127), so a harness that works here sends nothing a phone
would reject.

    Shell(sandbox).run("cd /data/local/tmp && ls")  ->  ShellResult(exit_code=0, stdout=b"...", ...)
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .device import device_path

__all__ = ["Shell", "ShellResult", "tokenize", "ShellSyntaxError"]

log = logging.getLogger(__name__)

_STATUS = "\x00status\x00"
_OPERATORS = ("2>&1", "&&", "||", ">>", "2>", ";", "|", ">", "<", "&")


class ShellSyntaxError(ValueError):
    """The command line cannot be parsed."""


@dataclass(frozen=True)
class Word:
    text: str
    glob: bool  # contains unquoted glob characters


@dataclass(frozen=True)
class Op:
    text: str


@dataclass
class ShellResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


def tokenize(line: str, variables: Callable[[str], str]) -> list[Word | Op]:
    """Split a command line into words (quotes removed, `$` expanded) and operators."""
    tokens: list[Word | Op] = []
    buf: list[str] = []
    has_word = False
    globbable = False
    i = 0

    def flush() -> None:
        nonlocal buf, has_word, globbable
        if has_word:
            tokens.append(Word("".join(buf), globbable))
        buf, has_word, globbable = [], False, False

    def expand(at: int) -> tuple[str, int]:
        if line.startswith("$?", at):
            return variables("?"), at + 2
        if line.startswith("${", at):
            end = line.find("}", at)
            if end < 0:
                raise ShellSyntaxError("bad substitution: missing '}'")
            return variables(line[at + 2 : end]), end + 1
        match = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)", line[at:])
        if match:
            return variables(match.group(1)), at + match.end()
        return "$", at + 1

    while i < len(line):
        ch = line[i]
        if ch in " \t\n":
            flush()
            i += 1
        elif ch == "'":
            end = line.find("'", i + 1)
            if end < 0:
                raise ShellSyntaxError("unterminated quoted string")
            buf.append(line[i + 1 : end])
            has_word, i = True, end + 1
        elif ch == '"':
            i += 1
            has_word = True
            while True:
                if i >= len(line):
                    raise ShellSyntaxError("unterminated quoted string")
                c = line[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < len(line) and line[i + 1] in '"\\$`':
                    buf.append(line[i + 1])
                    i += 2
                elif c == "$":
                    text, i = expand(i)
                    buf.append(text)
                else:
                    buf.append(c)
                    i += 1
        elif ch == "\\" and i + 1 < len(line):
            buf.append(line[i + 1])
            has_word, i = True, i + 2
        elif ch == "$":
            text, i = expand(i)
            buf.append(text)
            has_word = True
        else:
            op = next((o for o in _OPERATORS if line.startswith(o, i)), None)
            # "2>" is an operator only at the start of a word.
            if op is not None and not (op.startswith("2") and has_word):
                flush()
                tokens.append(Op(op))
                i += len(op)
                continue
            buf.append(ch)
            has_word = True
            globbable = globbable or ch in "*?["
            i += 1
    flush()
    return tokens


@dataclass
class _Io:
    stdout: io.BytesIO = field(default_factory=io.BytesIO)
    stderr: io.BytesIO = field(default_factory=io.BytesIO)

    def out(self, text: str) -> None:
        self.stdout.write(text.encode())

    def err(self, text: str) -> None:
        self.stderr.write(text.encode())


class Shell:
    """Runs one command line against a sandbox folder that stands for the device's `/`."""

    def __init__(
        self,
        sandbox: Path,
        *,
        props: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        cpu_count: int = 8,
        rooted: bool = False,
        max_runtime_s: float = 900.0,
    ) -> None:
        self.sandbox = sandbox
        self.props = props if props is not None else {}
        self.env = dict(env or {})
        self.cpu_count = cpu_count
        self.rooted = rooted
        self.max_runtime_s = max_runtime_s
        self.logcat_file = sandbox / ".loopback" / "logcat"
        self.cwd = "/"
        self.last_status = 0

    # ---- line level ---------------------------------------------------------------------
    def run(self, line: str) -> ShellResult:
        sink = _Io()
        try:
            tokens = tokenize(line, self._variable)
        except ShellSyntaxError as exc:
            sink.err(f"sh: syntax error: {exc}\n")
            return ShellResult(2, b"", sink.stderr.getvalue())
        status = 0
        skip = False
        command: list[Word | Op] = []
        for token in [*tokens, Op(";")]:
            if isinstance(token, Op) and token.text in (";", "&&", "||", "|", "&"):
                if token.text in ("|", "&"):
                    sink.err(f"sh: '{token.text}' is not supported on this device shell\n")
                    return ShellResult(2, sink.stdout.getvalue(), sink.stderr.getvalue())
                if command and not skip:
                    status = self._simple(command, sink)
                    self.last_status = status
                command = []
                if token.text == "&&":
                    skip = status != 0
                elif token.text == "||":
                    skip = status == 0
                else:
                    skip = False
                continue
            command.append(token)
        return ShellResult(status, sink.stdout.getvalue(), sink.stderr.getvalue())

    def _variable(self, name: str) -> str:
        if name == "?":
            return _STATUS  # substituted when the command runs, not when the line is parsed
        return self.env.get(name, "")

    def _simple(self, tokens: list[Word | Op], sink: _Io) -> int:
        args: list[str] = []
        out_target: tuple[str, bool] | None = None  # (path, append)
        err_target: str | None = None
        err_to_out = False
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if isinstance(token, Op):
                if token.text == "2>&1":
                    err_to_out = True
                    i += 1
                    continue
                if i + 1 >= len(tokens) or not isinstance(tokens[i + 1], Word):
                    sink.err(f"sh: syntax error: '{token.text}' needs a file name\n")
                    return 2
                target = tokens[i + 1].text.replace(_STATUS, str(self.last_status))  # type: ignore[union-attr]
                if token.text in (">", ">>"):
                    out_target = (target, token.text == ">>")
                elif token.text == "2>":
                    err_target = target
                else:
                    sink.err(f"sh: input redirection is not supported on this device shell\n")
                    return 2
                i += 2
                continue
            args.extend(self._glob(token))
            i += 1
        args = [a.replace(_STATUS, str(self.last_status)) for a in args]
        if not args:
            return 0
        local = _Io()
        status = self._exec(args, local, deadline=None)
        out, err = local.stdout.getvalue(), local.stderr.getvalue()
        if err_to_out:
            out, err = out + err, b""
        if err_target is not None:
            if err_target != "/dev/null":
                self._write_file(err_target, err, append=False, sink=sink)
            err = b""
        if out_target is not None:
            if out_target[0] != "/dev/null" and not self._write_file(
                out_target[0], out, append=out_target[1], sink=sink
            ):
                return 1
            out = b""
        sink.stdout.write(out)
        sink.stderr.write(err)
        return status

    def _write_file(self, path: str, data: bytes, *, append: bool, sink: _Io) -> bool:
        target = self._path(path)
        if not target.parent.is_dir():
            sink.err(f"sh: can't create {path}: No such file or directory\n")
            return False
        with open(target, "ab" if append else "wb") as handle:
            handle.write(data)
        return True

    def _glob(self, word: Word) -> list[str]:
        if not word.glob:
            return [word.text]
        pattern = word.text
        absolute = pattern.startswith("/")
        base = "/" if absolute else self.cwd
        parts = [p for p in pattern.split("/") if p]
        matches = [base]
        for part in parts:
            nxt = []
            for prefix in matches:
                host = self._path(prefix)
                if any(c in part for c in "*?["):
                    if host.is_dir():
                        names = sorted(n for n in os.listdir(host) if not n.startswith("."))
                        nxt += [
                            f"{prefix.rstrip('/')}/{n}" for n in names if fnmatch.fnmatch(n, part)
                        ]
                else:
                    candidate = f"{prefix.rstrip('/')}/{part}"
                    if self._path(candidate).exists():
                        nxt.append(candidate)
            matches = nxt
        if not matches:
            return [pattern]
        if not absolute:
            root = self.cwd.rstrip("/") + "/"
            matches = [m[len(root) :] if m.startswith(root) else m for m in matches]
        return matches

    def _path(self, path: str) -> Path:
        return device_path(self.sandbox, path, self.cwd)

    # ---- commands ---------------------------------------------------------------------------
    def _exec(self, args: list[str], sink: _Io, deadline: float | None) -> int:
        name = args[0]
        handler = self.COMMANDS.get(name)
        if handler is not None:
            if name in ("timeout", "taskset", "su"):
                return handler(self, args[1:], sink, deadline)
            return handler(self, args[1:], sink)
        if "/" not in name:
            sink.err(f"/system/bin/sh: {name}: not found\n")
            return 127
        return self._run_file(args, sink, deadline)

    def _run_file(self, args: list[str], sink: _Io, deadline: float | None) -> int:
        host = self._path(args[0])
        if not host.is_file():
            sink.err(f"/system/bin/sh: {args[0]}: inaccessible or not found\n")
            return 127
        if not os.access(host, os.X_OK):
            sink.err(f"/system/bin/sh: {args[0]}: can't execute: Permission denied\n")
            return 126
        env = {**os.environ, **self.env, "LOOPBACK_ROOT": str(self.sandbox),
               "LOOPBACK_CWD": self.cwd, "LOOPBACK_LOGCAT": str(self.logcat_file)}
        limit = self.max_runtime_s if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            proc = subprocess.run(
                [str(host), *args[1:]],
                cwd=self._path(self.cwd),
                env=env,
                capture_output=True,
                timeout=limit,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            sink.stdout.write(exc.stdout or b"")
            sink.stderr.write(exc.stderr or b"")
            return 124
        sink.stdout.write(proc.stdout)
        sink.stderr.write(proc.stderr)
        if proc.returncode < 0:
            signum = -proc.returncode
            name = {signal.SIGABRT: "Aborted", signal.SIGSEGV: "Segmentation fault"}.get(
                signum, f"Signal {signum}"
            )
            sink.err(f"{name}\n")
            return 128 + signum
        return proc.returncode

    def _cmd_cd(self, args: list[str], sink: _Io) -> int:
        target = args[0] if args else "/"
        host = self._path(target)
        if not host.is_dir():
            sink.err(f"/system/bin/sh: cd: {target}: No such file or directory\n")
            return 2
        self.cwd = "/" + str(host.relative_to(self.sandbox)).replace(os.sep, "/").lstrip(".")
        self.cwd = self.cwd if self.cwd != "/." else "/"
        return 0

    def _cmd_echo(self, args: list[str], sink: _Io) -> int:
        newline = True
        if args and args[0] == "-n":
            newline, args = False, args[1:]
        sink.out(" ".join(args) + ("\n" if newline else ""))
        return 0

    def _cmd_true(self, args: list[str], sink: _Io) -> int:
        return 0

    def _cmd_false(self, args: list[str], sink: _Io) -> int:
        return 1

    def _cmd_getprop(self, args: list[str], sink: _Io) -> int:
        if args:
            sink.out(self.props.get(args[0], args[1] if len(args) > 1 else "") + "\n")
        else:
            sink.out("".join(f"[{k}]: [{v}]\n" for k, v in sorted(self.props.items())))
        return 0

    def _cmd_cat(self, args: list[str], sink: _Io) -> int:
        status = 0
        for name in args:
            host = self._path(name)
            if host.is_dir():
                sink.err(f"cat: {name}: Is a directory\n")
                status = 1
            elif not host.exists():
                sink.err(f"cat: {name}: No such file or directory\n")
                status = 1
            else:
                sink.stdout.write(host.read_bytes())
        return status

    def _cmd_grep(self, args: list[str], sink: _Io) -> int:
        flags = [a for a in args if a.startswith("-") and len(a) > 1]
        rest = [a for a in args if not (a.startswith("-") and len(a) > 1)]
        if not rest:
            sink.err("grep: no pattern\n")
            return 2
        pattern, files = re.compile(rest[0]), rest[1:]
        with_name = "-H" in flags or (len(files) > 1 and "-h" not in flags)
        found, status = False, 0
        for name in files:
            host = self._path(name)
            if not host.is_file():
                sink.err(f"grep: {name}: No such file or directory\n")
                status = 2
                continue
            for text in host.read_text(errors="replace").splitlines():
                if pattern.search(text):
                    found = True
                    sink.out(f"{name}:{text}\n" if with_name else f"{text}\n")
        return status if status else (0 if found else 1)

    def _cmd_ls(self, args: list[str], sink: _Io) -> int:
        long = any(a.startswith("-") and "l" in a for a in args)
        paths = [a for a in args if not a.startswith("-")] or ["."]
        status = 0
        for name in paths:
            host = self._path(name)
            if not host.exists():
                sink.err(f"ls: {name}: No such file or directory\n")
                status = 1
                continue
            entries = sorted(os.listdir(host)) if host.is_dir() else [None]
            for entry in entries:
                item = host / entry if entry else host
                label = entry if entry else name
                if long:
                    info = item.stat()
                    sink.out(f"{stat.filemode(info.st_mode)} 1 shell shell {info.st_size} {label}\n")
                else:
                    sink.out(f"{label}\n")
        return status

    def _cmd_mkdir(self, args: list[str], sink: _Io) -> int:
        parents = "-p" in args
        for name in (a for a in args if not a.startswith("-")):
            host = self._path(name)
            try:
                host.mkdir(parents=parents, exist_ok=parents)
            except FileExistsError:
                sink.err(f"mkdir: '{name}': File exists\n")
                return 1
            except FileNotFoundError:
                sink.err(f"mkdir: '{name}': No such file or directory\n")
                return 1
        return 0

    def _cmd_rm(self, args: list[str], sink: _Io) -> int:
        opts = "".join(a[1:] for a in args if a.startswith("-"))
        status = 0
        for name in (a for a in args if not a.startswith("-")):
            host = self._path(name)
            if host == self.sandbox:
                sink.err("rm: refusing to remove '/'\n")
                return 1
            if host.is_dir() and not host.is_symlink():
                if "r" not in opts.lower():
                    sink.err(f"rm: {name}: is a directory\n")
                    status = 1
                else:
                    shutil.rmtree(host)
            elif host.exists() or host.is_symlink():
                host.unlink()
            elif "f" not in opts:
                sink.err(f"rm: {name}: No such file or directory\n")
                status = 1
        return status

    def _cmd_chmod(self, args: list[str], sink: _Io) -> int:
        if len(args) < 2 or not re.fullmatch(r"[0-7]{3,4}", args[0]):
            sink.err("chmod: numeric MODE and at least one FILE expected\n")
            return 1
        status = 0
        for name in args[1:]:
            host = self._path(name)
            if not host.exists():
                sink.err(f"chmod: {name}: No such file or directory\n")
                status = 1
            else:
                host.chmod(int(args[0], 8))
        return status

    def _cmd_df(self, args: list[str], sink: _Io) -> int:
        paths = [a for a in args if not a.startswith("-")] or ["/data"]
        sink.out("Filesystem      1K-blocks     Used Available Use% Mounted on\n")
        for name in paths:
            host = self._path(name)
            if not host.exists():
                sink.err(f"df: {name}: No such file or directory\n")
                return 1
            st = os.statvfs(host)
            total = st.f_blocks * st.f_frsize // 1024
            free = st.f_bavail * st.f_frsize // 1024
            used = total - st.f_bfree * st.f_frsize // 1024
            pct = int(round(100 * used / total)) if total else 0
            sink.out(f"/dev/block/dm-5 {total:>12} {used:>8} {free:>9} {pct:>3}% /data\n")
        return 0

    def _digest(self, algorithm: str, args: list[str], sink: _Io) -> int:
        status = 0
        for name in args:
            host = self._path(name)
            if not host.is_file():
                sink.err(f"{algorithm}sum: {name}: No such file or directory\n")
                status = 1
                continue
            digest = hashlib.new(algorithm)
            with open(host, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            sink.out(f"{digest.hexdigest()}  {name}\n")
        return status

    def _cmd_sha256sum(self, args: list[str], sink: _Io) -> int:
        return self._digest("sha256", args, sink)

    def _cmd_md5sum(self, args: list[str], sink: _Io) -> int:
        return self._digest("md5", args, sink)

    def _cmd_id(self, args: list[str], sink: _Io) -> int:
        sink.out("uid=2000(shell) gid=2000(shell) groups=2000(shell) context=u:r:shell:s0\n")
        return 0

    def _cmd_uname(self, args: list[str], sink: _Io) -> int:
        release = self._path("/proc/version").read_text().split()[2]
        if "-r" in args:
            sink.out(release + "\n")
        elif "-m" in args:
            sink.out(os.uname().machine + "\n")
        else:
            sink.out(f"Linux localhost {release} #1 SMP PREEMPT {os.uname().machine} Toybox\n")
        return 0

    def _cmd_sleep(self, args: list[str], sink: _Io) -> int:
        try:
            time.sleep(float(args[0]))
        except (IndexError, ValueError):
            sink.err("sleep: missing or bad duration\n")
            return 1
        return 0

    def _cmd_test(self, args: list[str], sink: _Io) -> int:
        if args and args[-1] == "]":
            args = args[:-1]
        if len(args) != 2 or args[0] not in ("-e", "-f", "-d", "-x", "-s"):
            sink.err("test: only -e/-f/-d/-x/-s FILE are supported on this device shell\n")
            return 2
        host = self._path(args[1])
        checks = {
            "-e": host.exists(),
            "-f": host.is_file(),
            "-d": host.is_dir(),
            "-x": host.exists() and os.access(host, os.X_OK),
            "-s": host.is_file() and host.stat().st_size > 0,
        }
        return 0 if checks[args[0]] else 1

    def _cmd_dumpsys(self, args: list[str], sink: _Io) -> int:
        if args[:1] != ["battery"]:
            sink.err(f"Can't find service: {args[0] if args else ''}\n")
            return 0
        base = "/sys/class/power_supply/battery"
        level = self._path(f"{base}/capacity").read_text().strip()
        temp = self._path(f"{base}/temp").read_text().strip()
        charging = self._path(f"{base}/status").read_text().strip() == "Charging"
        sink.out(
            "Current Battery Service state:\n"
            f"  AC powered: false\n  USB powered: {str(charging).lower()}\n"
            "  Wireless powered: false\n  Max charging current: 0\n"
            f"  status: {2 if charging else 3}\n  health: 2\n  present: true\n"
            f"  level: {level}\n  scale: 100\n  voltage: 4123\n  temperature: {temp}\n"
            "  technology: Li-ion\n"
        )
        return 0

    def _cmd_logcat(self, args: list[str], sink: _Io) -> int:
        if "-c" in args:
            self.logcat_file.parent.mkdir(parents=True, exist_ok=True)
            self.logcat_file.write_text("")
            return 0
        if "-d" not in args:
            sink.err("logcat: only -c and -d are supported on this device shell\n")
            return 1
        tags = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-s"]
        tags += [a.split(":")[0] for a in args if not a.startswith("-") and a not in tags]
        sink.out("--------- beginning of main\n")
        if self.logcat_file.exists():
            for text in self.logcat_file.read_text(errors="replace").splitlines():
                match = re.match(r"^\S+ \S+\s+\d+\s+\d+ [VDIWEF] ([^:]+?)\s*:", text)
                if not tags or (match and match.group(1) in tags):
                    sink.out(text + "\n")
        return 0

    def _cmd_taskset(self, args: list[str], sink: _Io, deadline: float | None) -> int:
        if len(args) < 2 or args[0].startswith("-"):
            sink.err("taskset: usage: taskset MASK COMMAND...\n")
            return 1
        try:
            mask = int(args[0], 16)
        except ValueError:
            sink.err(f"taskset: bad mask '{args[0]}'\n")
            return 1
        if mask == 0 or mask >> self.cpu_count:
            sink.err(f"taskset: sched_setaffinity: Invalid argument (mask {args[0]})\n")
            return 1
        return self._exec(args[1:], sink, deadline)

    def _cmd_timeout(self, args: list[str], sink: _Io, deadline: float | None) -> int:
        while args and args[0] in ("-s", "-k"):
            args = args[2:]
        try:
            seconds = float(args[0].rstrip("s"))
        except (IndexError, ValueError):
            sink.err("timeout: usage: timeout [-s SIGNAL] DURATION COMMAND...\n")
            return 125
        own = time.monotonic() + seconds
        return self._exec(args[1:], sink, own if deadline is None else min(own, deadline))

    def _cmd_su(self, args: list[str], sink: _Io, deadline: float | None) -> int:
        if not self.rooted:
            sink.err("/system/bin/sh: su: not found\n")
            return 127
        if args[:1] == ["-c"] and len(args) == 2:
            result = Shell.run(self, args[1])
            sink.stdout.write(result.stdout)
            sink.stderr.write(result.stderr)
            return result.exit_code
        sink.err("su: usage: su -c 'COMMAND'\n")
        return 1

    COMMANDS: dict[str, Callable[..., int]] = {}


Shell.COMMANDS = {
    "cd": Shell._cmd_cd,
    "echo": Shell._cmd_echo,
    "true": Shell._cmd_true,
    "false": Shell._cmd_false,
    "getprop": Shell._cmd_getprop,
    "cat": Shell._cmd_cat,
    "grep": Shell._cmd_grep,
    "ls": Shell._cmd_ls,
    "mkdir": Shell._cmd_mkdir,
    "rm": Shell._cmd_rm,
    "chmod": Shell._cmd_chmod,
    "df": Shell._cmd_df,
    "sha256sum": Shell._cmd_sha256sum,
    "md5sum": Shell._cmd_md5sum,
    "id": Shell._cmd_id,
    "uname": Shell._cmd_uname,
    "sleep": Shell._cmd_sleep,
    "test": Shell._cmd_test,
    "[": Shell._cmd_test,
    "dumpsys": Shell._cmd_dumpsys,
    "logcat": Shell._cmd_logcat,
    "taskset": Shell._cmd_taskset,
    "timeout": Shell._cmd_timeout,
    "su": Shell._cmd_su,
}


def load_props(sandbox: Path) -> dict[str, str]:
    """The property set stored in the sandbox by `build_sandbox`."""
    return json.loads(device_path(sandbox, "/system/build.prop.json").read_text())
