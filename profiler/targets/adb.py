"""A phone over adb as a profiling target, built on `android_harness`.

    target = AdbTarget("R58M12ABCDE", runners={"benchmark_model": "~/bin/benchmark_model"})
    target.prepare(runtime, model_files)    # battery check, runner check, checksummed push
    state = target.round_state()            # waits for cool-down; temperature, freq, governor
    samples_us = target.measure(runtime, model_file, RunSpec(runs=20))
    m = target.measure_detailed(runtime, model_file, RunSpec(runs=20), profile=True)
    m.samples_us, m.extra["init_us"], m.ops, m.etdump     # see android_harness.execute.Measurement
    target.close()                          # restores the clocks, removes the pushed models

Models are pushed content-addressed (`<work dir>/models/<stem>-<sha256 prefix>.<ext>`, only those
missing).
A measurement job sets `keep_models` while it runs and clears it once its LUT is written: a job
that stops (Ctrl-C, a lost phone, failed ops) leaves its models on the phone, and its resume
pushes nothing again.

The phone's lock (`profiler.targets.lock`, keyed by `lock_key`: the fingerprint's device id, so
one phone over USB and over `ip:port` is one phone) is taken as the target connects, before
anything is written to the phone, and released by `close()`; a second command on a busy phone
waits `lock_wait_s`, then stops naming the holder. Everything that runs on a phone (profile,
validate, arch timing, `profiler.deploy`, `search.train --device`) goes through this target.

Clocks (`lock_clocks`): "auto" locks the measured cores' cpufreq policies at a fixed frequency
when the phone is rooted and goes on unlocked when it is not, "require" refuses to measure
unlocked, "off" leaves them alone (`android_harness.clocks` says how). The lock is taken when the
target is first used (`fingerprint()` or `prepare()`) and released by `close()`; what a
disconnect left locked is restored when a target next holds that phone's lock. The fingerprint's
`clock_lock` and every round's `clocks_locked`/`locked_freq_khz`/`governor` record the outcome.

The CLI helpers `add_adb_arguments(parser)` and `adb_options(args)` give `profiler.run` its
`--adb-host`, `--adb-port`, `--runner NAME=PATH`, `--work-dir`, `--core-mask`, `--max-temp-c`,
`--min-battery`, `--force`, `--keep-files`, `--lock-clocks` and `--lock-freq-khz`.
"""

from __future__ import annotations

import argparse
import logging
import posixpath
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from android_harness import (
    DEFAULT_WORK_DIR,
    SAMPLE_SEMANTICS,
    AdbError,
    Device,
    DeviceGoneError,
    Measurement,
    RunnerFailed,
    RunOptions,
    WorkDir,
    device_address,
    fingerprint,
    measure_detailed,
    read_battery,
    read_cpus,
    read_thermal,
    wait_for_cooldown,
)
from android_harness.clocks import ClockLock, ClockLockError, ClockStatus, restore_pending
from android_harness.device_state import (
    clusters_of,
    cpu_temperature_c,
    device_id,
    private_cache_bytes,
    read_caches,
    read_screen,
)
from android_harness.device_state import core_mask as mask_of_cpus
from android_harness.execute import WARMUP_S
from android_harness.preflight import SPACE_MARGIN, Check, check_abi, check_run, check_space
from android_harness.runners import RUNNERS
from profiler.runtimes.base import Runtime

from .base import DeviceLostError, RunnerError, RunSpec, TargetError, interruptible_sleep
from .lock import device_lock

__all__ = ["AdbTarget", "add_adb_arguments", "adb_options", "LOCK_CLOCKS"]

log = logging.getLogger(__name__)

_MODELS = "models"
LOCK_CLOCKS = ("auto", "off", "require")


class AdbTarget:
    """The Target protocol on one adb device (see `profiler.targets.base`).

    Cache state: a runner binary times one loaded model again and again, so a plain op's weights
    stay in cache, as they would not inside a network ("warm"). "replicas" times a model of
    several copies of the op instead, each with its own weights and all reading one input, so
    that each copy finds its weights out of cache and its input in it (the profiler divides an
    invocation by the copies). A job's default, "mixed", times the ops whose weights stream (the
    classifier) as replicas and the others warm."""

    cache_states = ("warm", "replicas")  # what `RunSpec.cache` may ask for

    def __init__(
        self,
        serial: str,
        *,
        adb_host: str | None = None,  # adb server host (default: $ADB_SERVER_SOCKET or local)
        adb_port: int | None = None,  # adb server port (default 5037)
        runners: dict[str, str] | None = None,  # runner name -> local binary to push once
        work_dir: str = DEFAULT_WORK_DIR,  # device folder for runners and models
        core_mask: str | None = None,  # taskset hex mask; None = the fastest cluster
        max_temp_c: float = 45.0,  # each round waits until the CPU is at most this hot
        cooldown_timeout_s: float = 600.0,  # ... but no longer than this
        cooldown_poll_s: float = 5.0,
        min_battery: int = 20,  # percent; prepare() refuses below it unless force
        force: bool = False,
        keep_files: bool = False,  # leave pushed models on the phone after close()
        xnnpack: bool = True,  # benchmark_model --use_xnnpack
        lock_clocks: str = "auto",  # "auto" (lock when rooted) | "off" | "require"
        lock_freq_khz: int | None = None,  # locked frequency; None: each policy's highest
        clock_state_dir: str | None = None,  # where locks to restore live ($HWNAS_STATE_DIR/...)
        lock_wait_s: float = 0.0,  # the phone is busy with another job: wait this long, then stop
        lock_what: str = "",  # what this job is, for the message a second job gets
        warmup_s: float = WARMUP_S,  # time-based warm-up at the start of each device command
        max_remeasure: int = 3,  # op-rounds of an op taken too hot or throttled that are re-measured
    ) -> None:
        if warmup_s < 0 or max_remeasure < 0:
            raise TargetError(f"warmup_s and max_remeasure must be ≥ 0, got {warmup_s} and {max_remeasure}")
        if lock_clocks not in LOCK_CLOCKS:
            raise TargetError(f"lock_clocks must be one of {', '.join(LOCK_CLOCKS)}, got {lock_clocks!r}")
        self.name = serial  # as given: SERIAL, or SERIAL@HOST:PORT (a phone on another machine's adb server)
        try:
            self._server, serial = device_address(serial, adb_host, adb_port)
        except AdbError as exc:
            raise TargetError(str(exc)) from exc
        self._runners = {k: Path(v).expanduser() for k, v in (runners or {}).items()}
        unknown = sorted(set(self._runners) - set(RUNNERS))
        if unknown:
            raise TargetError(f"unknown runner(s) {unknown}; known: {', '.join(sorted(RUNNERS))}")
        self._max_temp_c = max_temp_c
        self._cooldown_timeout_s = cooldown_timeout_s
        self._cooldown_poll_s = cooldown_poll_s
        self._min_battery = min_battery
        self._force = force
        self._keep_files = keep_files
        self._xnnpack = xnnpack
        self._warmup_s = warmup_s
        self.max_remeasure = max_remeasure
        self._hints: dict[str, float] = {}  # model → µs per execution (sizes executor_runner's warm-up)
        self._lock_mode = lock_clocks
        self._clock_state_dir = Path(clock_state_dir) if clock_state_dir else None
        self._device = self._call(lambda: Device.connect(self._server, serial))
        # the phone's lock, before anything touches it (reading its properties touches nothing)
        self.lock_key = self._call(lambda: device_id(self._device.getprops(), serial))
        self._held = ExitStack()
        self._held.enter_context(
            device_lock(self.lock_key, wait_s=lock_wait_s, what=lock_what or f"measure on {serial}"))
        try:
            self._setup(work_dir, core_mask, lock_freq_khz)
        except BaseException:
            self._held.close()
            raise

    def _setup(self, work_dir: str, core_mask: str | None, lock_freq_khz: int | None) -> None:
        """Everything that touches the phone: under its lock."""
        self._call(lambda: restore_pending(self._device, self._clock_state_dir, key=self.lock_key))
        self._work = WorkDir(self._device, work_dir)
        self._clusters = clusters_of(self._call(lambda: read_cpus(self._device)))
        self._pinned = self._pinned_cpus(core_mask)
        # the phone's own caches (sysfs): the `mixed` rule's private cache is the measured core's L2
        self._caches = self._call(lambda: read_caches(self._device))
        self.private_cache_bytes = private_cache_bytes(self._caches, self._pinned[0]) if self._pinned else None
        self.private_cache_source = (f"cpu{self._pinned[0]}/cache L2 in the phone's sysfs"
                                     if self.private_cache_bytes else "default")
        self._core_mask = core_mask or (mask_of_cpus(self._pinned) if self._pinned else None)
        self._remote: dict[Path, str] = {}
        self._fingerprint: dict[str, Any] | None = None
        self._clock_lock = ClockLock(self._device, self._pinned or tuple(sorted(
            c for cl in self._clusters for c in cl.cpus)), state_dir=self._clock_state_dir,
            freq_khz=lock_freq_khz, key=self.lock_key)
        self._clocks: ClockStatus | None = None
        self.keep_models = False  # a job that may be resumed: close() leaves the models on the phone

    # ---- protocol ----------------------------------------------------------------------------
    def fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            clocks = self._lock_clocks()
            fp = self._call(lambda: fingerprint(self._device))
            binaries = [self._work.remote(name) for name in RUNNERS]
            sums = self._call(lambda: self._work.remote_sha256(binaries))
            fp.update({
                "target": "adb",
                "adb_server": f"{self._server.host}:{self._server.port}",
                "core_mask": self._core_mask,
                "work_dir": self._work.path,
                "runner_sha256": {posixpath.basename(p): d for p, d in sums.items()},
                "sample_semantics": dict(SAMPLE_SEMANTICS),
                "warmup_handling": {
                    "executor_runner": f"an untimed launch of about {self._warmup_s:g} s (its executions from "
                                       "the model's previous time per execution) in the same device command, "
                                       "then the first `warmup` iterations of the timed launch dropped",
                    "benchmark_model": f"--warmup_min_secs={self._warmup_s:g} in the first launch of each device "
                                       "command, --warmup_runs in every launch",
                },
                "warmup_s": self._warmup_s,
                "cpu_caches": {str(c): self._caches.get(c, []) for c in self._pinned},
                "private_cache_bytes": self.private_cache_bytes,
                "max_temp_c": self._max_temp_c,
                "clock_lock": {"mode": self._lock_mode, **clocks.to_json()},
            })
            self._fingerprint = fp
        return dict(self._fingerprint)

    def prepare(self, runtime: Runtime, model_files: list[Path]) -> None:
        runner = self._runner_of(runtime)
        self._lock_clocks()
        if not self._force:
            battery = self._call(lambda: read_battery(self._device))
            if battery.level_pct is not None and battery.level_pct < self._min_battery:
                raise TargetError(
                    f"{self.name}: battery at {battery.level_pct}% (< {self._min_battery}%): "
                    "charge it, or pass --force to profile anyway"
                )
        self._call(self._work.ensure)
        if runner in self._runners:
            self._call(lambda: self._work.install_runner(self._runners[runner], runner))
        binary = self._work.remote(runner)
        found = self._call(lambda: self._device.stat(binary))
        if found is None or not found[0] & 0o111:
            raise TargetError(
                f"{self.name}: {binary} is {'missing' if found is None else 'not executable'}; "
                f"pass --runner {runner}=PATH to push your arm64 build "
                "(docs/phone.md says how to get one)"
            )
        self._remote.update(self._call(lambda: self._work.push_by_content(
            [Path(f) for f in model_files], subdir=_MODELS)))

    def round_state(self) -> dict[str, Any]:
        temp = self._call(lambda: wait_for_cooldown(
            self._device, self._max_temp_c, timeout_s=self._cooldown_timeout_s,
            poll_s=self._cooldown_poll_s, sleep=interruptible_sleep))
        cpus = self._call(lambda: read_cpus(self._device))
        probe = self._pinned[0] if self._pinned else (min(cpus) if cpus else None)
        files = cpus.get(probe, {}) if probe is not None else {}
        freq = files.get("scaling_cur_freq", "")
        clocks = self._clocks or ClockStatus(False, reason="not used yet")
        related = files.get("related_cpus", "").split()
        policy = str(min((int(c) for c in related), default=probe)) if probe is not None else ""
        return {
            "temperature_c": temp,
            "cpu_freq_khz": int(freq) if freq.isdigit() else None,
            "governor": files.get("scaling_governor"),
            "clocks_locked": clocks.locked,
            "locked_freq_khz": clocks.freq_khz.get(policy),
            "cpu_freq_khz_all": {str(c): int(f["scaling_cur_freq"]) for c, f in cpus.items()
                                 if f.get("scaling_cur_freq", "").isdigit()},
            **self._power_state(),
        }

    def op_conditions(self) -> str | None:
        """Why the op-round just measured does not count, or None: the CPU above `max_temp_c`, or
        a measured core below the frequency its clocks are locked at (thermal throttling)."""
        temp = cpu_temperature_c(self._call(lambda: read_thermal(self._device)))
        if temp is not None and temp > self._max_temp_c:
            return f"CPU at {temp:.1f} °C, above the {self._max_temp_c:g} °C limit (--max-temp-c)"
        clocks = self._clocks
        if clocks is None or not clocks.locked:
            return None
        cpus = self._call(lambda: read_cpus(self._device))
        for cpu in self._pinned:
            files = cpus.get(cpu, {})
            policy = str(min((int(c) for c in files.get("related_cpus", str(cpu)).split()), default=cpu))
            locked = clocks.freq_khz.get(policy)
            cur = files.get("scaling_cur_freq", "")
            if locked and cur.isdigit() and int(cur) < locked:
                return f"cpu{cpu} at {int(cur)} kHz, below its locked {locked} kHz (throttled)"
        return None

    def cool_down(self) -> None:
        """Wait (up to the cool-down timeout) for the CPU to cool below `max_temp_c`."""
        self._call(lambda: wait_for_cooldown(
            self._device, self._max_temp_c, timeout_s=self._cooldown_timeout_s,
            poll_s=self._cooldown_poll_s, sleep=interruptible_sleep))

    def _power_state(self) -> dict[str, Any]:
        """Battery level and temperature, charging, screen on: what changes a phone's clocks and
        heat besides the job (a charger heats it, a lit screen loads the GPU and the CPU)."""
        battery = self._call(lambda: read_battery(self._device))
        screen_on, screen_source = self._call(lambda: read_screen(self._device))
        return {"battery_pct": battery.level_pct, "battery_temp_c": battery.temperature_c,
                "charging": battery.charging, "screen_on": screen_on,
                "power_source": ",".join(x for x in (battery.source and f"battery:{battery.source}",
                                                     screen_source and f"screen:{screen_source}") if x)}

    def measure(self, runtime: Runtime, model_file: Path, spec: RunSpec) -> list[float]:
        return self.measure_detailed(runtime, model_file, spec).samples_us

    def measure_detailed(
        self, runtime: Runtime, model_file: Path, spec: RunSpec, *, profile: bool = False
    ) -> Measurement:
        """`spec.runs` samples with the runner's extras (init_us, memory, ...) and, with
        `profile`, per-operator data: benchmark_model's op table (`ops`) or an ETDump (`etdump`)."""
        if spec.cache not in self.cache_states:
            raise TargetError(f"{self.name}: a runner binary cannot time with {spec.cache!r} caches; "
                              f"use {' or '.join(self.cache_states)}")
        runner = self._runner_of(runtime)
        remote = self._remote.get(Path(model_file))
        if remote is None:
            raise TargetError(f"{model_file} was not passed to prepare(); call prepare() first")
        options = self._options(spec, profile)
        try:
            return self._call(lambda: measure_detailed(self._device, runner, self._work.remote(runner),
                                                       remote, options, label=Path(model_file).stem,
                                                       hints=self._hints))
        except RunnerFailed as exc:
            raise RunnerError(str(exc)) from exc

    def settings(self, runtime: Runtime) -> dict[str, Any]:
        """What this target measures `runtime`'s ops with, for the job's settings record: the
        runner and its sha256 as it is on the phone now (after the preflight's push), the core
        mask, XNNPACK, the clock-lock mode and frequency, the temperature limit and cool-down."""
        runner = self._runner_of(runtime)
        binary = self._work.remote(runner)
        digest = self._call(lambda: self._work.remote_sha256([binary])).get(binary)
        if self._fingerprint is not None:  # the LUT's device block names the binary that measured
            self._fingerprint["runner_sha256"][runner] = digest
        return {
            "name": "adb",
            "runner": runner,
            "runner_sha256": digest,
            # the runtime version the runner printed in the preflight (None: it prints none)
            "runner_version": self._hints.get(f"version:{runner}"),
            "core_mask": self._core_mask,
            "xnnpack": self._xnnpack,
            "clock_lock": self._lock_mode,
            "lock_freq_khz": self._clock_lock.freq_khz,
            "max_temp_c": self._max_temp_c,
            "cooldown_timeout_s": self._cooldown_timeout_s,
            "warmup_s": self._warmup_s,
            "max_remeasure": self.max_remeasure,
        }

    def preflight(self, runtime: Runtime, model_file: Path, spec: RunSpec, need_bytes: int) -> list[Check]:
        """The checks before a job exports anything (`android_harness.preflight`), in order, up to
        the first that fails: the runner's ABI against the phone's, free space for the runner and
        `need_bytes` of models, then `prepare` (battery, runner push) and one invocation on
        `model_file` with `spec`'s flags, its output parsed."""
        runner = self._runner_of(runtime)
        local = self._runners.get(runner)
        checks = [self._call(lambda: check_abi(self._device, self._work, runner, local=local))]
        if not checks[-1].ok:
            return checks
        runner_bytes = local.stat().st_size if local is not None else 0
        need = int((need_bytes + runner_bytes) * SPACE_MARGIN)
        checks.append(self._call(lambda: check_space(self._device, self._work, need)))
        if not checks[-1].ok:
            return checks
        try:
            self.prepare(runtime, [Path(model_file)])
        except TargetError as exc:
            checks.append(Check("setup", False, str(exc).partition(": ")[2] or str(exc),
                                "see the message; `python -m android_harness doctor --device SERIAL` checks more"))
            return checks
        remote = self._remote[Path(model_file)]
        checks.append(self._call(lambda: check_run(self._device, runner, self._work.remote(runner), remote,
                                                   self._options(spec, False), hints=self._hints)))
        return checks

    def close(self) -> None:
        """Restore the clocks, remove the pushed models (unless `keep_models` or `keep_files`),
        release the phone's lock."""
        try:
            self._close()
        finally:
            self._held.close()

    def _close(self) -> None:
        try:
            self._clock_lock.restore()
        except DeviceGoneError as exc:
            log.warning("%s: gone before its CPU clocks were restored; they are restored when it "
                        "next connects (%s)", self.name, exc)
        except AdbError as exc:
            log.warning("%s: could not restore its CPU clocks: %s", self.name, exc)
        if self._keep_files or self.keep_models or not self._remote:
            if self.keep_models and self._remote:
                log.info("%s: models left in %s for the job's resume", self.name, self._work.remote(_MODELS))
            return
        try:
            self._work.remove(_MODELS)
        except (AdbError, OSError) as exc:  # a gone device keeps its files; nothing to undo
            log.warning("%s: could not remove pushed models: %s", self.name, exc)

    # ---- helpers -----------------------------------------------------------------------------
    def _lock_clocks(self) -> ClockStatus:
        if self._clocks is None:
            if self._lock_mode == "off":
                self._clocks = ClockStatus(False, reason="--lock-clocks off")
            else:
                try:
                    self._clocks = self._call(
                        lambda: self._clock_lock.lock(require=self._lock_mode == "require"))
                except ClockLockError as exc:
                    raise TargetError(f"{exc}; root the phone, or pass --lock-clocks auto|off") from exc
        return self._clocks

    def _options(self, spec: RunSpec, profile: bool) -> RunOptions:
        """The runner options of `spec`: one place, so the preflight runs with the job's flags."""
        return RunOptions(threads=spec.threads, warmup=spec.warmup, runs=spec.runs,
                          core_mask=spec.core_mask or self._core_mask, timeout_s=spec.timeout_s,
                          xnnpack=self._xnnpack, profile=profile, warmup_s=self._warmup_s)

    def _runner_of(self, runtime: Runtime) -> str:
        if runtime.runner is None:
            raise TargetError(
                f"runtime {runtime.name!r} has no phone runner; on a device use tflite "
                "(benchmark_model) or executorch (executor_runner), or profile it on --device host"
            )
        return runtime.runner

    def _pinned_cpus(self, mask: str | None) -> tuple[int, ...]:
        if mask:
            bits = int(mask, 16)
            return tuple(c for c in range(bits.bit_length()) if bits >> c & 1)
        return self._clusters[-1].cpus if self._clusters else ()

    def _call(self, fn):  # noqa: ANN001, ANN202
        """Run fn, turning a lost device into DeviceLostError and adb trouble into TargetError."""
        try:
            return fn()
        except DeviceGoneError as exc:
            raise DeviceLostError(str(exc)) from exc
        except AdbError as exc:
            raise TargetError(f"{self.name}: {exc}") from exc


def _runner_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or name not in RUNNERS or not path:
        raise argparse.ArgumentTypeError(
            f"--runner wants NAME=PATH with NAME in {', '.join(sorted(RUNNERS))}, got {text!r}"
        )
    return name, path


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.0 <= value <= 60.0:
        raise argparse.ArgumentTypeError(f"give 0 to 60 seconds, got {text}")
    return value


def add_adb_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of phone targets (`--device SERIAL`)."""
    g = parser.add_argument_group("phone (adb) options")
    g.add_argument("--adb-host", help="adb server host (default: $ADB_SERVER_SOCKET or 127.0.0.1)")
    g.add_argument("--adb-port", type=int, help="adb server port (default: 5037)")
    g.add_argument("--runner", action="append", type=_runner_arg, metavar="NAME=PATH",
                   help="push this arm64 runner binary (benchmark_model, executor_runner); repeatable")
    g.add_argument("--work-dir", default=DEFAULT_WORK_DIR, help="device folder (default %(default)s)")
    g.add_argument("--core-mask", dest="adb_core_mask",
                   help="taskset hex mask (default: the fastest CPU cluster)")
    g.add_argument("--max-temp-c", type=float, default=45.0,
                   help="wait before each round until the CPU is this cool (default 45)")
    g.add_argument("--min-battery", type=int, default=20,
                   help="refuse to start below this battery percent (default 20)")
    g.add_argument("--force", action="store_true", help="profile even on low battery")
    g.add_argument("--keep-files", action="store_true", help="leave pushed models on the phone")
    g.add_argument("--lock-clocks", choices=LOCK_CLOCKS, default="auto",
                   help="lock the measured cores at a fixed CPU frequency: auto (when the phone is "
                        "rooted), require, off (default %(default)s)")
    g.add_argument("--warmup-secs", type=_seconds, default=WARMUP_S,
                   help="time-based warm-up at the start of each op's runner command, for the governor to ramp "
                        "up (default %(default)s s, as benchmark_model's own)")
    g.add_argument("--lock-freq-khz", type=int,
                   help="the locked frequency, rounded down to an available one (default: the highest)")


def adb_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of AdbTarget from parsed `add_adb_arguments` options."""
    return {
        "adb_host": args.adb_host,
        "adb_port": args.adb_port,
        "runners": dict(args.runner or []),
        "work_dir": args.work_dir,
        "core_mask": args.adb_core_mask,
        "max_temp_c": args.max_temp_c,
        "min_battery": args.min_battery,
        "force": args.force,
        "keep_files": args.keep_files,
        "lock_clocks": getattr(args, "lock_clocks", "auto"),
        "lock_freq_khz": getattr(args, "lock_freq_khz", None),
        "warmup_s": getattr(args, "warmup_secs", WARMUP_S),
    }
