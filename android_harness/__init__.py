"""Profile models on Android phones over adb (no torch here: model files and runner binaries).

Public API:

    AdbServer, Device, list_devices, ensure_server        (adb.py; device_address: SERIAL@HOST:PORT)
    fingerprint, wait_for_cooldown, read_thermal, ...      (device_state.py)
    WorkDir                                                 (files.py: checksummed pushes)
    RUNNERS, parse_output, RunnerTiming                     (runners.py: command lines, parsers)
    RunOptions, measure, measure_detailed, Measurement     (execute.py: samples of one model)
    OperatorTiming, parse_stat_line, parse_op_profile      (tflite_stats.py: benchmark_model text)
    ClockLock, ClockStatus, restore_pending                 (clocks.py: locked CPU clocks)
    run_checks                                              (doctor.py)
    check_abi, check_space, check_run, elf_abi              (preflight.py: a job's first checks)

CLI: `python -m android_harness {devices,doctor,parse,loopback}`.
"""

from .adb import (
    AdbError,
    AdbServer,
    CommandTimeout,
    Device,
    DeviceGoneError,
    DeviceInfo,
    device_address,
    ensure_server,
    list_devices,
)
from .clocks import ClockLock, ClockLockError, ClockStatus, restore_pending
from .device_state import fingerprint, read_battery, read_cpus, read_thermal, wait_for_cooldown
from .execute import SAMPLE_SEMANTICS, Measurement, RunnerFailed, RunOptions, measure, measure_detailed
from .files import DEFAULT_WORK_DIR, WorkDir
from .runners import RUNNERS, RunnerOutputError, RunnerTiming, parse_output
from .tflite_stats import OperatorTiming, parse_op_profile, parse_stat_line

__all__ = [
    "AdbError",
    "AdbServer",
    "CommandTimeout",
    "Device",
    "DeviceGoneError",
    "DeviceInfo",
    "device_address",
    "ensure_server",
    "list_devices",
    "fingerprint",
    "read_battery",
    "read_cpus",
    "read_thermal",
    "wait_for_cooldown",
    "ClockLock",
    "ClockLockError",
    "ClockStatus",
    "restore_pending",
    "SAMPLE_SEMANTICS",
    "Measurement",
    "RunnerFailed",
    "RunOptions",
    "measure",
    "measure_detailed",
    "OperatorTiming",
    "parse_op_profile",
    "parse_stat_line",
    "DEFAULT_WORK_DIR",
    "WorkDir",
    "RUNNERS",
    "RunnerOutputError",
    "RunnerTiming",
    "parse_output",
]
