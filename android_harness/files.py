"""Files on the device: the work dir, pushes that skip what is already there, clean-up.

    work = WorkDir(device, "/data/local/tmp/hwnas")
    work.ensure()
    report = work.push([Path("a.pte"), Path("b.pte")], subdir="models")   # skips same sha256
    work.remote("models/a.pte")  ->  "/data/local/tmp/hwnas/models/a.pte"
    names = work.push_by_content([Path("a.pte")], subdir="models")
    names[Path("a.pte")]  ->  "/data/local/tmp/hwnas/models/a-<16 hex of its sha256>.pte"

Content-addressed pushes (`push_by_content`) name each file on the device by its stem and its
sha256: a file already there under that name is the same model (its device-side sha256 is checked
too, so a push cut short is redone), so a resumed job pushes only what is missing, and a model
that changed under the same host name never runs in place of the new one.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from .adb import AdbError, Device, quote

__all__ = ["WorkDir", "PushReport", "sha256_file", "parse_df_available_kb", "DEFAULT_WORK_DIR"]

log = logging.getLogger(__name__)

DEFAULT_WORK_DIR = "/data/local/tmp/hwnas"
_BATCH = 50  # files per sha256sum call: keeps command lines short


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_df_available_kb(text: str) -> int | None:
    """Available KiB from `df -k PATH` (toybox layout: FS, 1K-blocks, Used, Available, ...)."""
    rows = [line.split() for line in text.strip().splitlines()[1:]]
    for row in reversed(rows):
        if len(row) >= 4 and row[3].isdigit():
            return int(row[3])
    return None


@dataclass(frozen=True)
class PushReport:
    pushed: tuple[str, ...]  # device paths written
    skipped: tuple[str, ...]  # device paths whose sha256 already matched


class WorkDir:
    """A folder under /data/local/tmp that holds the runners and the models of a job."""

    def __init__(self, device: Device, path: str = DEFAULT_WORK_DIR) -> None:
        if not path.startswith("/data/local/tmp/"):
            raise ValueError(
                f"work dir {path!r} must be under /data/local/tmp/ (the only place `adb shell` "
                "may write and execute on an unrooted phone)"
            )
        self.device = device
        self.path = path.rstrip("/")

    def remote(self, relative: str) -> str:
        return posixpath.join(self.path, relative)

    def ensure(self, subdir: str = "") -> None:
        self.device.check(f"mkdir -p {quote(self.remote(subdir) if subdir else self.path)}")

    def available_kb(self) -> int | None:
        result = self.device.shell(f"df -k {quote(self.path)}")
        return parse_df_available_kb(result.stdout) if result.exit_code == 0 else None

    def remote_sha256(self, remote_paths: list[str]) -> dict[str, str]:
        """sha256 of each existing device file; missing files are simply absent."""
        found: dict[str, str] = {}
        for start in range(0, len(remote_paths), _BATCH):
            batch = remote_paths[start : start + _BATCH]
            # exit status 1 just means some files are missing
            result = self.device.shell("sha256sum " + " ".join(quote(p) for p in batch) + " 2>/dev/null")
            for digest, name in re.findall(r"^([0-9a-f]{64})\s+\*?(.+)$", result.stdout, re.M):
                found[name.strip()] = digest
        return found

    def push_by_content(self, files: list[Path], *, subdir: str = "", mode: int = 0o644) -> dict[Path, str]:
        """Push `files` into `subdir` named by content (`<stem>-<16 hex of sha256><suffix>`),
        skipping those the device already holds; returns each local file's device path."""
        named = {Path(f): f"{Path(f).stem}-{sha256_file(Path(f))[:16]}{Path(f).suffix}" for f in files}
        unique = {name: local for local, name in named.items()}  # identical files: one push
        self.push(list(unique.values()), subdir=subdir, mode=mode, names=list(unique))
        return {local: self.remote(posixpath.join(subdir, name)) for local, name in named.items()}

    def push(self, files: list[Path], *, subdir: str = "", mode: int = 0o644,
             names: list[str] | None = None) -> PushReport:
        """Push `files` into the work dir (or `subdir` of it) under their own names (or `names`),
        skipping identical ones."""
        self.ensure(subdir)
        names = names if names is not None else [Path(f).name for f in files]
        targets = {self.remote(posixpath.join(subdir, n)): Path(f) for f, n in zip(files, names)}
        if len(set(names)) != len(names):
            raise ValueError("two files to push share a name; the device folder is flat")
        remote = self.remote_sha256(list(targets))
        pushed, skipped = [], []
        for target, local in targets.items():
            if remote.get(target) == sha256_file(local):
                skipped.append(target)
                continue
            log.debug("push %s -> %s:%s", local, self.device.serial, target)
            self.device.push(local, target, mode=mode)
            pushed.append(target)
        if pushed:
            check = self.remote_sha256(pushed)
            bad = [t for t in pushed if check.get(t) != sha256_file(targets[t])]
            if bad:
                raise AdbError(f"checksum mismatch after push on {self.device.serial}: {bad}; "
                               "free space on the phone and retry")
        log.info("%s: pushed %d file(s), %d already there", self.device.serial, len(pushed),
                 len(skipped))
        return PushReport(tuple(pushed), tuple(skipped))

    def install_runner(self, local: Path, name: str) -> PushReport:
        """Push a runner binary as `<work dir>/<name>` and make it executable."""
        self.ensure()
        target = self.remote(name)
        if self.remote_sha256([target]).get(target) == sha256_file(local):
            self.device.check(f"chmod 755 {quote(target)}")
            return PushReport((), (target,))
        self.device.push(local, target, mode=0o755)
        self.device.check(f"chmod 755 {quote(target)}")
        return PushReport((target,), ())

    def remove(self, subdir: str) -> None:
        """Delete one folder of the work dir (never the work dir itself with the runners)."""
        if not subdir or subdir.startswith("/") or ".." in subdir.split("/"):
            raise ValueError(f"refusing to remove {subdir!r}: give a folder inside the work dir")
        self.device.check(f"rm -rf {quote(self.remote(subdir))}")
