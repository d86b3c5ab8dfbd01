"""Profile models on Android phones over adb (no torch here: model files and runner binaries).

Public API:

    AdbServer, Device, list_devices, ensure_server        (adb.py)
    fingerprint, wait_for_cooldown, read_thermal, ...      (device_state.py)
    WorkDir                                                 (files.py: checksummed pushes)
    RUNNERS, parse_output, RunnerTiming                     (runners.py: command lines, parsers)
    RunOptions, measure, RunnerFailed                       (execute.py: samples of one model)
    run_checks                                              (doctor.py)

CLI: `python -m android_harness {devices,doctor,parse,loopback}`.
"""

from .adb import (
    AdbError,
    AdbServer,
    CommandTimeout,
    Device,
    DeviceGoneError,
    DeviceInfo,
    ensure_server,
    list_devices,
)
from .device_state import fingerprint, read_battery, read_cpus, read_thermal, wait_for_cooldown
from .execute import SAMPLE_SEMANTICS, RunnerFailed, RunOptions, measure
from .files import DEFAULT_WORK_DIR, WorkDir
from .runners import RUNNERS, RunnerOutputError, RunnerTiming, parse_output

__all__ = [
    "AdbError",
    "AdbServer",
    "CommandTimeout",
    "Device",
    "DeviceGoneError",
    "DeviceInfo",
    "ensure_server",
    "list_devices",
    "fingerprint",
    "read_battery",
    "read_cpus",
    "read_thermal",
    "wait_for_cooldown",
    "SAMPLE_SEMANTICS",
    "RunnerFailed",
    "RunOptions",
    "measure",
    "DEFAULT_WORK_DIR",
    "WorkDir",
    "RUNNERS",
    "RunnerOutputError",
    "RunnerTiming",
    "parse_output",
]
