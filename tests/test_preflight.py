"""The preflight: a job on a phone that cannot work stops before any op of the space is exported,
with one message naming the check, what it found and the fix (loopback device faults)."""

from __future__ import annotations

import json
import struct
import sys
import time
from pathlib import Path

import pytest

from android_harness.preflight import device_abis, elf_abi
from profiler.api import preflight_space, profile_space
from profiler.preflight import PREFLIGHT_OP, PreflightError
from profiler.protocol.plan import plan_ops
from profiler.run import main as run_main

_FAST = dict(rounds=1, warmup=1, runs=2, progress=False)


def _elf_header(elf_class: int, machine: int, big_endian: bool = False) -> bytes:
    """The first 20 bytes of an ELF file as the ELF specification lays them out."""
    ident = b"\x7fELF" + bytes([elf_class, 2 if big_endian else 1, 1, 0]) + bytes(8)
    return ident + struct.pack(">HH" if big_endian else "<HH", 2, machine)


def test_elf_abi_reads_class_and_machine():
    assert elf_abi(_elf_header(2, 183)) == ("arm64-v8a", "ELF 64-bit AArch64")
    assert elf_abi(_elf_header(1, 40)) == ("armeabi-v7a", "ELF 32-bit ARM")
    assert elf_abi(_elf_header(2, 62, big_endian=True))[1] == "ELF 64-bit x86-64"
    assert elf_abi(_elf_header(2, 40)) == (None, "ELF 64-bit ARM")  # no Android ABI is that
    with open(sys.executable, "rb") as handle:  # a real executable of this machine
        abi, described = elf_abi(handle.read(64))
    assert abi in ("x86_64", "arm64-v8a") and described.startswith("ELF 64-bit")
    with pytest.raises(ValueError, match="not an ELF executable"):
        elf_abi(b"#!/system/bin/sh\necho hi\n")


def test_device_abis_prefers_abilist():
    assert device_abis({"ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a,armeabi",
                        "ro.product.cpu.abi": "arm64-v8a"}) == ["arm64-v8a", "armeabi-v7a", "armeabi"]
    assert device_abis({"ro.product.cpu.abilist64": "", "ro.product.cpu.abilist32": "armeabi-v7a,armeabi"}) == [
        "armeabi-v7a", "armeabi"]
    assert device_abis({"ro.product.cpu.abi": "armeabi-v7a"}) == ["armeabi-v7a"]
    assert device_abis({}) == []


def _cache_stems(cache: Path) -> set[str]:
    return {p.name.split(".")[0] for p in cache.rglob("*") if p.is_file() and p.suffix in (".tflite", ".pte")}


def _options(server):
    return {"adb_port": server.port, "cooldown_poll_s": 0.1}


@pytest.mark.parametrize("runtime", ["tflite", "executorch"])
def test_preflight_passes_on_a_working_device(loopback, tmp_path, runtime):
    server, daemon = loopback
    report = preflight_space("fbnet", runtime, daemon.serial, ops_limit=3, cache_root=tmp_path,
                             target_options=_options(server), rounds=1, warmup=1, runs=2)
    assert report.ok, report.message()
    names = [c.name for c in report.checks]
    runner = "benchmark_model" if runtime == "tflite" else "executor_runner"
    assert names == [f"abi {runner}", "free space", f"run {runner}"]
    assert "x86_64" in report.checks[0].detail or "arm64-v8a" in report.checks[0].detail
    assert _cache_stems(tmp_path) == {PREFLIGHT_OP.key}  # the space itself was not exported
    assert daemon.unsupported == []


# fault -> (the check that fails, words of what it found, words of the fix)
FAULTS = {
    "userspace_32bit": ("abi benchmark_model", "a 32-bit Android", "--config=android_arm "),
    "disk_full": ("free space", "0.0 MiB free", "free space on the phone"),
    "crash": ("run benchmark_model", "exited with status 134", "crashed on a one-op model"),
    "unknown-format": ("run benchmark_model", "exited 0 but printed its report in a form", "does not read"),
}


def _set_fault(daemon, fault: str | None) -> None:
    daemon.set_faults(userspace_32bit=fault == "userspace_32bit", disk_full=fault == "disk_full",
                      runner_fault=fault if fault in ("crash", "unknown-format") else None)


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_faulty_phone_stops_the_job_before_any_export(loopback, tmp_path, fault):
    server, daemon = loopback
    check, found, fix = FAULTS[fault]
    cache, out = tmp_path / "exports", tmp_path / "luts"
    _set_fault(daemon, fault)
    t0 = time.perf_counter()
    try:
        with pytest.raises(PreflightError) as info:
            profile_space("fbnet", "tflite", device=daemon.serial, ops_limit=4, out=out, cache_root=cache,
                          target_options=_options(server), **_FAST)
    finally:
        _set_fault(daemon, None)
    elapsed = time.perf_counter() - t0
    message = str(info.value)
    assert f"check '{check}'" in message and found in message and fix in message, message
    assert message.count("fix:") == 1
    timed, _, _ = plan_ops("fbnet", 4)
    assert not _cache_stems(cache) & {op.key for op in timed}  # no op of the space was exported
    assert not out.exists() or not any(out.rglob("meta.json"))  # no LUT ...
    assert not any(out.rglob(".partial")) if out.exists() else True  # ... and no job left behind
    assert elapsed < 60, f"the preflight took {elapsed:.1f} s"
    print(f"preflight wall time with fault {fault}: {elapsed:.2f} s")


def test_preflight_cli_alone(loopback, tmp_path, capsys):
    server, daemon = loopback
    args = ["--device", daemon.serial, "--runtime", "tflite", "--preflight", "--adb-port", str(server.port),
            "--cache-dir", str(tmp_path), "--ops-limit", "2", "--runs", "2", "--warmup", "1"]
    assert run_main(args) == 0
    assert "preflight: ok" in capsys.readouterr().out
    _set_fault(daemon, "userspace_32bit")
    try:
        assert run_main([*args, "--json"]) == 1
    finally:
        _set_fault(daemon, None)
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not res["preflight"]["ok"] and "abi benchmark_model" in res["error"]
    assert [c["ok"] for c in res["preflight"]["checks"]] == [False]


def test_loopback_shell_faults(tmp_path):
    from android_harness.loopback.device import LoopbackConfig, build_sandbox
    from android_harness.loopback.shell import Shell

    build_sandbox(LoopbackConfig(), tmp_path)
    runner = "/data/local/tmp/hwnas/benchmark_model"
    r = Shell(tmp_path, userspace_bits=32).run(f"{runner} --graph=/x.tflite")
    assert (r.exit_code, r.stderr) == (126, f"/system/bin/sh: {runner}: not executable: 64-bit ELF file\n".encode())
    assert Shell(tmp_path).run(f"{runner} --graph=/x.tflite").exit_code == 1  # runs: no such model
    free = Shell(tmp_path, disk_full=True).run("df -k /data/local/tmp").stdout.decode().splitlines()[1].split()
    assert free[3] == "0" and free[4] == "100%"
    assert Shell(tmp_path, disk_full=True).run("echo x > /data/local/tmp/f").exit_code == 1


def test_preflight_on_the_host_runs_the_tiny_op(tmp_path, capsys):
    assert run_main(["--device", "host", "--runtime", "onnxruntime", "--preflight", "--cache-dir", str(tmp_path)]) == 0
    assert "[ok] run onnxruntime" in capsys.readouterr().out


def test_doctor_checks_the_runners_abi(loopback):
    from android_harness import Device
    from android_harness.doctor import run_checks

    server, daemon = loopback
    device = Device.connect(server, daemon.serial)
    assert {c.name: c for c in run_checks(device, work_dir="/data/local/tmp/hwnas")}["abi benchmark_model"].ok
    _set_fault(daemon, "userspace_32bit")
    try:
        checks = {c.name: c for c in run_checks(device, work_dir="/data/local/tmp/hwnas")}
    finally:
        _set_fault(daemon, None)
    assert not checks["abi benchmark_model"].ok and "--config=android_arm " in checks["abi benchmark_model"].fix


def test_doctor_cli_points_to_the_preflight(loopback, capsys):
    from android_harness.__main__ import main as harness_main

    server, daemon = loopback
    assert harness_main(["--adb-port", str(server.port), "doctor", "--device", daemon.serial]) == 0
    out = capsys.readouterr().out
    assert "[ok] abi benchmark_model" in out and f"profiler.run --device {daemon.serial}" in out and "--preflight" in out
