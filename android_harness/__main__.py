"""`python -m android_harness`: devices, doctor, parse, loopback.

    python -m android_harness devices [--json]
    python -m android_harness doctor --device SERIAL
    python -m android_harness parse --runner benchmark_model|executor_runner FILE --json
    python -m android_harness loopback start [--port P] [--sandbox DIR] [--unrooted]
        [--timing-quantum-us Q] [--event-tracer]
        [--runner-fault crash|unknown-format] [--userspace-32bit] [--disk-full]
        [--runner-form tf1.12|tf1.15|tf2.0|et0.4|et0.6] [--thermal-unreadable] [--no-dumpsys]
        [--slow-first-runs N K]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from hwnas.flags import add_device, add_verbose, run_main

from .adb import AdbError, AdbServer, Device, device_address, list_devices
from .doctor import run_checks
from .files import DEFAULT_WORK_DIR
from .loopback.shims._common import RUNNER_FORMS
from .runners import RUNNERS, RunnerOutputError, parse_output


def _server(args: argparse.Namespace) -> AdbServer:
    return AdbServer.from_env(args.adb_host, args.adb_port)


def _devices(args: argparse.Namespace) -> int:
    infos = list_devices(_server(args))
    if args.json:
        print(json.dumps([asdict(i) for i in infos], indent=2))
        return 0
    if not infos:
        print("no devices: plug the phone in with USB debugging on, or `adb connect HOST:PORT`")
        return 1
    for info in infos:
        if info.state == "device":
            print(f"{info.serial}\tdevice\t{info.model}\tSoC {info.soc}\t{info.abi}\t"
                  f"Android {info.android}")
        else:
            print(f"{info.serial}\t{info.state}\t-> {info.advice}")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    server, serial = device_address(args.device, args.adb_host, args.adb_port)
    device = Device.connect(server, serial)
    checks = run_checks(device, work_dir=args.work_dir, min_battery_pct=args.min_battery,
                        max_temp_c=args.max_temp_c)
    for check in checks:
        print(f"[{'ok' if check.ok else 'FIX'}] {check.name}: {check.detail}")
        if check.fix:
            print(f"      -> {check.fix}")
    print(f"next: `python -m profiler.run --device {args.device} --runtime tflite|executorch [--runner NAME=PATH] "
          "--preflight` checks the runner's ABI against the phone's, the free space for a job's models, and "
          "runs the runner once on a tiny model with the job's flags (every job runs it before exporting)")
    return 0 if all(c.ok for c in checks) else 1


def _parse(args: argparse.Namespace) -> int:
    try:
        text = Path(args.file).read_text(errors="replace")
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        timing = parse_output(args.runner, text, source=args.file)
    except RunnerOutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    data = timing.to_json()
    print(json.dumps(data) if args.json else "\n".join(f"{k}: {v}" for k, v in data.items()))
    return 0


def _slow_first(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _loopback_start(args: argparse.Namespace) -> int:
    from .loopback import Faults, Knobs, LoopbackDaemon

    sandbox = Path(args.sandbox) if args.sandbox else Path(tempfile.mkdtemp(prefix="hwnas-dev-"))
    server = AdbServer.from_env(args.adb_host, args.adb_port)
    knobs = Knobs(rooted=not args.unrooted, timing_quantum_us=args.timing_quantum_us,
                  event_tracer=args.event_tracer)
    faults = Faults(runner_fault=args.runner_fault, userspace_32bit=args.userspace_32bit,
                    disk_full=args.disk_full, runner_form=args.runner_form,
                    thermal_unreadable=args.thermal_unreadable, no_dumpsys=args.no_dumpsys,
                    slow_first_runs=int(args.slow_first_runs[0]) if args.slow_first_runs else 0,
                    slow_factor=args.slow_first_runs[1] if args.slow_first_runs else 1.0)
    with LoopbackDaemon(sandbox, port=args.port, knobs=knobs, faults=faults) as daemon:
        Device.connect(server, daemon.serial)
        print(f"loopback device {daemon.serial} attached (sandbox {sandbox}); Ctrl-C stops it")
        print(f"  try: python -m profiler.run --device {daemon.serial} ...")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            server.client().disconnect(daemon.serial)
    return 0


def _adb_server_arguments(p: argparse.ArgumentParser, nested: bool = False) -> None:
    """--adb-host/--adb-port, before the subcommand or after it (`nested`: not to reset the former)."""
    default = argparse.SUPPRESS if nested else None
    p.add_argument("--adb-host", default=default, help="adb server host (default: $ADB_SERVER_SOCKET or 127.0.0.1)")
    p.add_argument("--adb-port", type=int, default=default, help="adb server port (default 5037)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m android_harness", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _adb_server_arguments(parser)
    add_verbose(parser)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("devices", help="list attached devices and what to do about each")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    _adb_server_arguments(p, nested=True)
    add_verbose(p, nested=True)
    p.set_defaults(func=_devices)

    p = sub.add_parser("doctor", help="check a device is ready to profile")
    add_device(p, required=True, metavar="SERIAL",
               help="the phone to check: its adb serial, or SERIAL@HOST:PORT (another machine's adb server)")
    p.add_argument("--work-dir", default=DEFAULT_WORK_DIR, help="device folder (default %(default)s)")
    p.add_argument("--min-battery", type=int, default=30, help="lowest battery percent that passes (default 30)")
    p.add_argument("--max-temp-c", type=float, default=45.0, help="highest CPU temperature that passes (default 45)")
    _adb_server_arguments(p, nested=True)
    add_verbose(p, nested=True)
    p.set_defaults(func=_doctor)

    p = sub.add_parser("parse", help="parse a saved runner output file")
    p.add_argument("--runner", required=True, choices=sorted(RUNNERS), help="the runner that printed it")
    p.add_argument("file", help="the saved output")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_verbose(p, nested=True)
    p.set_defaults(func=_parse)

    p = sub.add_parser("loopback", help="a loopback device for dry runs without a phone")
    lsub = p.add_subparsers(required=True, metavar="COMMAND")
    s = lsub.add_parser("start", help="start it and attach it to the adb server")
    s.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    s.add_argument("--sandbox", help="folder standing for the device's / (default: a temp dir)")
    s.add_argument("--unrooted", action="store_true", help="no su, as on a stock phone")
    s.add_argument("--timing-quantum-us", type=int, default=0,
                   help="runner shims round timings up to multiples of this (default: 1 µs)")
    s.add_argument("--event-tracer", action="store_true",
                   help="executor_runner as a devtools build: accepts --etdump_path")
    s.add_argument("--runner-fault", choices=["crash", "unknown-format"],
                   help="fault: every runner run crashes, or prints a report in a format no parser knows")
    s.add_argument("--userspace-32bit", action="store_true",
                   help="fault: a 32-bit Android (abilist armeabi-v7a only; 64-bit binaries do not run)")
    s.add_argument("--disk-full", action="store_true",
                   help="fault: /data is full (df reports nothing available; pushes fail)")
    s.add_argument("--runner-form", choices=list(RUNNER_FORMS),
                   help="fault: the runners print an older release's output ("
                        + "; ".join(f"{k}: {v[1]}" for k, v in RUNNER_FORMS.items()) + ")")
    s.add_argument("--no-dumpsys", action="store_true",
                   help="fault: `dumpsys battery|power` find no service (battery and screen state from sysfs)")
    s.add_argument("--thermal-unreadable", action="store_true",
                   help="fault: thermal_zone*/temp is Permission denied, as on stock Android 10+")
    s.add_argument("--slow-first-runs", nargs=2, type=_slow_first, metavar=("N", "K"),
                   help="fault: the first N inferences of every runner launch take K times as long "
                        "(a governor still ramping up)")
    add_verbose(s, nested=True)
    s.set_defaults(func=_loopback_start)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except AdbError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run_main(main))
