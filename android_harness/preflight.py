"""Preflight of a phone for one runner: the checks that make a first run fail in seconds.

    check_abi(device, work, "benchmark_model", local=Path("./benchmark_model"))   -> Check
    check_space(device, work, need_bytes=40 << 20)                                -> Check
    check_run(device, "benchmark_model", binary, model, options)                  -> Check

- ABI: the runner's ELF header (class and machine; for a `#!` script, its interpreter's) against
  the ABIs the phone's userspace runs (`ro.product.cpu.abilist`, else `abilist64`/`abilist32`,
  else `ro.product.cpu.abi`). A 64-bit binary on a 32-bit Android fails every op with
  `not executable: 64-bit ELF file`; this says so before anything is exported.
- Free space: `df -k` of the work dir (or /data/local/tmp before it exists) against what the job
  will push (the caller's estimate, margin included).
- One run: one invocation of the runner on a tiny model with the job's own options (threads,
  warm-up, runs per invocation, core mask, timeout), its output parsed as the job parses it.

Each failed check names what was found and the fix; `elf_abi` and `device_abis` are pure.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, replace
from pathlib import Path

from .adb import AdbError, Device
from .execute import INVOCATION_RUNS, RunnerFailed, RunOptions, measure_detailed
from .files import WorkDir, parse_df_available_kb

__all__ = ["Check", "elf_abi", "device_abis", "check_abi", "check_space", "check_run", "build_hint", "SPACE_MARGIN"]

SPACE_MARGIN = 1.5  # free space wanted: what the job pushes × this (the filesystem must not fill up)

# ELF e_machine → Android ABI name, with the ELF class each ABI uses
_MACHINES = {(2, 183): "arm64-v8a", (1, 40): "armeabi-v7a", (2, 62): "x86_64", (1, 3): "x86",
             (2, 243): "riscv64"}  # fmt: skip
_MACHINE_NAMES = {183: "AArch64", 40: "ARM", 62: "x86-64", 3: "Intel 80386", 243: "RISC-V"}
_HEAD_BYTES = 64


@dataclass(frozen=True)
class Check:
    """One check of a device (preflight, doctor): what was found and, when it failed, the fix."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


def elf_abi(head: bytes) -> tuple[str | None, str]:
    """(Android ABI or None, description) of an executable from its first bytes.

    b"\\x7fELF\\x02\\x01..." with e_machine 183  ->  ("arm64-v8a", "ELF 64-bit AArch64")
    Raises ValueError when `head` is not an ELF header."""
    if len(head) < 20 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        raise ValueError(f"not an ELF executable (starts with {head[:16]!r})")
    bits = 32 * head[4]
    machine = struct.unpack("<H" if head[5] == 1 else ">H", head[18:20])[0]
    name = _MACHINE_NAMES.get(machine, f"machine {machine}")
    return _MACHINES.get((head[4], machine)), f"ELF {bits}-bit {name}"


def device_abis(props: dict[str, str]) -> list[str]:
    """The ABIs a phone's userspace runs, preferred first (`getprop` names)."""
    for keys in (("ro.product.cpu.abilist",), ("ro.product.cpu.abilist64", "ro.product.cpu.abilist32"),
                 ("ro.product.cpu.abi",)):  # fmt: skip
        abis = [a.strip() for k in keys for a in props.get(k, "").split(",") if a.strip()]
        if abis:
            return list(dict.fromkeys(abis))
    return []


def build_hint(runner: str, abi: str) -> str:
    """Where to get, or how to build, `runner` for `abi` (the recipes of docs/phone.md)."""
    if runner == "benchmark_model":
        config = {"arm64-v8a": "android_arm64", "armeabi-v7a": "android_arm", "x86_64": "android_x86_64",
                  "x86": "android_x86"}.get(abi, f"the {abi} Android config")  # fmt: skip
        nightly = {"arm64-v8a": "android_aarch64_benchmark_model", "armeabi-v7a": "android_arm_benchmark_model"}
        get = f"download the nightly {nightly[abi]} (LiteRT 'Performance measurement' page) or " if abi in nightly else ""
        return (f"{get}build it: `bazel build -c opt --config={config} "
                "//tflite/tools/benchmark:benchmark_model` (docs/phone.md: 'The runner binaries')")
    if runner == "executor_runner":
        return (f"build it with the cmake recipe of docs/phone.md and -DANDROID_ABI={abi} ('The runner "
                "binaries'; the ExecuTorch release must match the executorch package), or profile with "
                "`--runtime tflite` and TFLite's benchmark_model")  # fmt: skip
    return f"build {runner} for {abi}"


def _remote_head(device: Device, path: str) -> bytes:
    return device.read_head(path, _HEAD_BYTES)


def check_abi(device: Device, work: WorkDir, runner: str, *, local: Path | None = None) -> Check:
    """Does the runner (`local`, the binary about to be pushed; else the one in the work dir) run
    on this phone's userspace?"""
    name = f"abi {runner}"
    abis = device_abis(device.getprops())
    remote = work.remote(runner)
    where = str(local) if local is not None else remote
    try:
        if local is not None:
            with open(local, "rb") as handle:
                head = handle.read(_HEAD_BYTES)
        elif device.stat(remote) is None:
            return Check(name, False, f"{remote} is missing",
                         f"pass --runner {runner}=PATH with a {abis[0] if abis else 'matching'} build; "
                         + build_hint(runner, abis[0] if abis else "arm64-v8a"))
        else:
            head = _remote_head(device, remote)
        interpreter = ""
        if head.startswith(b"#!"):  # a script: what matters is the interpreter the kernel starts
            interpreter = head[2:].split(b"\n", 1)[0].split()[0].decode(errors="replace")
            head = _remote_head(device, interpreter)
        abi, described = elf_abi(head)
    except OSError as exc:
        return Check(name, False, f"cannot read {where}: {exc.strerror or exc}", f"pass --runner {runner}=PATH")
    except AdbError as exc:
        return Check(name, False, f"cannot read the runner or its interpreter on the phone: {exc}",
                     f"pass --runner {runner}=PATH with a {abis[0] if abis else 'matching'} build")
    except ValueError as exc:
        return Check(name, False, f"{where} is {exc}", f"pass --runner {runner}=PATH with the runner binary "
                     "itself; " + build_hint(runner, abis[0] if abis else "arm64-v8a"))  # fmt: skip
    what = f"{where} ({f'a script run by {interpreter}, ' if interpreter else ''}{described}, {abi or 'unknown ABI'})"
    found = f"the phone runs {', '.join(abis) or 'no ABI it reports'} (ro.product.cpu.abilist)"
    if abi is not None and abi in abis:
        return Check(name, True, f"{what}; {found}")
    only32 = abis and not any(a in ("arm64-v8a", "x86_64", "riscv64") for a in abis)
    why = " (a 32-bit Android: it cannot start 64-bit programs)" if only32 and described.startswith("ELF 64") else ""
    return Check(name, False, f"{what} does not run here: {found}{why}",
                 f"use a build of {runner} for {abis[0]}: " + build_hint(runner, abis[0]) if abis else
                 "the phone reports no ABI (getprop ro.product.cpu.abilist); check `adb shell getprop`")


def check_space(device: Device, work: WorkDir, need_bytes: int) -> Check:
    """Is there room in the work dir for `need_bytes` (what the job pushes, margin included)?"""
    path = work.path if device.shell(f"test -d {work.path}").exit_code == 0 else posix_parent(work.path)
    text = device.shell(f"df -k {path}")
    free_kb = parse_df_available_kb(text.stdout) if text.exit_code == 0 else None
    need_mib = need_bytes / 2**20
    if free_kb is None:
        return Check("free space", True, f"`df -k {path}` printed no free space; not checked "
                     f"(the job pushes ~{need_mib:.1f} MiB)")
    ok = free_kb * 1024 >= need_bytes
    detail = (f"{free_kb / 1024:.1f} MiB free under {path}; the runner and models need ~{need_mib:.1f} MiB "
              f"(with a {SPACE_MARGIN:g}x margin)")
    return Check("free space", ok, detail, "" if ok else
                 f"free space on the phone (old files under /data/local/tmp: `adb -s {device.serial} shell "
                 f"rm -rf {work.path}/models`; videos, apps), or profile fewer ops (--ops-limit N)")


def posix_parent(path: str) -> str:
    """/data/local/tmp/hwnas -> /data/local/tmp"""
    return re.sub(r"/[^/]+/?$", "", path) or "/"


def check_run(device: Device, runner: str, binary: str, model: str, options: RunOptions,
              hints: dict | None = None) -> Check:
    """One invocation of `runner` on `model` with the job's options, its output parsed (what it
    learns, e.g. the runner's printed version, goes into `hints`: see `measure_detailed`)."""
    once = replace(options, runs=INVOCATION_RUNS.get(runner, options.runs), profile=False)
    name = f"run {runner}"
    try:
        m = measure_detailed(device, runner, binary, model, once, label=f"preflight {Path(model).name}", hints=hints)
    except RunnerFailed as exc:
        text = str(exc)
        if re.search(r"exited with status (126|127)\b", text):
            fix = ("the phone cannot start it (wrong ABI, or not a program for Android): "
                   + build_hint(runner, "arm64-v8a"))
        elif re.search(r"exited with status (13[0-9]|1[4-5][0-9])\b", text):
            fix = (f"{runner} crashed on a one-op model with the job's flags: use a build that matches the "
                   f"exporter (docs/phone.md: 'The runner binaries'), and check its flags with "
                   f"`adb shell {binary} --help`")
        elif "timed out" in text or "did not answer" in text:
            fix = f"{runner} hung on a one-op model: check the phone (screen, thermal) and the build"
        else:
            fix = (f"{runner} printed a report the harness does not read: use a build the README names, "
                   f"or save its output and run `python -m android_harness parse --runner {runner} FILE`")
        return Check(name, False, text, fix)
    except AdbError as exc:
        return Check(name, False, str(exc), "check the connection (`adb devices`) and retry")
    median = sorted(m.samples_us)[len(m.samples_us) // 2]
    return Check(name, True, f"{binary} ran {Path(model).name} with the job's flags: "
                 f"{len(m.samples_us)} samples, median {median:.1f} µs")
