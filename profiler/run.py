"""`python -m profiler.run`: build a device's latency LUT, or time whole architectures.

    python -m profiler.run --device host|SERIAL[,...] --space fbnet
        [--runtime executorch|tflite|onnxruntime] [--threads 1] [--rounds R] [--luts-root luts/]
        [--arch NAME_OR_FILE[,...]] [--ops-limit N] [--json] [--preflight]

Before it exports anything, a job runs a preflight (on a phone: the runner's ABI against the
phone's, free space, one run of the runner on a tiny model with the job's flags) and stops with
the failed check, what it found and the fix; `--preflight` runs only that.

Re-running an interrupted command resumes it (and logs how many op-rounds it skips).
`--device` may list several devices (comma-separated or repeated): the devices are profiled in parallel,
one thread, one device lock and one LUT each. `--device SERIAL@HOST:PORT` is a phone on another machine's
adb server (started there with `adb -a -P PORT nodaemon server`). Ctrl-C stops every device's job at its
next op-round (seconds), keeping what each measured; the same command resumes them all. With `--json`, one
JSON object per device is printed, one per line, in the order the
devices were given; the last line is the last device's object. An op-job object has at least
`lut_dir`, `num_ops`, `num_failed`, `elapsed_s`; an `--arch` object has `archs` (name → stats and
raw `samples_us`) and `elapsed_s`. A device that fails prints `{"device": ..., "error": ...}` and
the exit status is 1. A job whose ops failed is such a failure (with `num_failed` and the
`incomplete` job's dir): it writes no LUT version; `--retry-failed` completes it, and
`--allow-failed` publishes it with the failed ops marked.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hwnas.flags import (
    DEFAULT_RUNTIME,
    ListAction,
    add_device,
    add_luts_root,
    add_progress,
    add_runtime,
    add_verbose,
    run_main,
)
from profiler.api import measure_archs_detailed, preflight_space, profile_space
from profiler.export import quiet_exporter_noise
from profiler.protocol.config import PROTOCOL_CACHE_STATES, IncompleteJobError, JobSettings, ProtocolConfig
from profiler.runtimes import LAYOUTS, RUNTIMES, list_runtimes
from profiler.shapes import shape_space
from profiler.targets.base import STOP
from search.space import get_space, load_arch

log = logging.getLogger("profiler.run")
_D = ProtocolConfig()


def adb_module():
    """profiler.targets.adb if it exists (it adds --adb-host, --runner, ...), else None."""
    try:
        import profiler.targets.adb as adb
    except ModuleNotFoundError as e:
        if e.name != "profiler.targets.adb":
            raise
        return None
    return adb


def build_parser(adb=None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m profiler.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_device(p, multiple=True,
               help="where to measure: host (default), adb serials or SERIAL@HOST:PORT (a phone on another "
                    "machine's adb server); several are profiled in parallel, one lock and one LUT each")
    p.add_argument("--space", default="fbnet", help="search space, e.g. fbnet, fbnet-r96-w0.35")
    add_runtime(p, choices=list_runtimes(), default=DEFAULT_RUNTIME,
                help=f"runtime to export to and time with (default {DEFAULT_RUNTIME})")
    p.add_argument("--dtype", default="fp32", choices=sorted({d for i in RUNTIMES.values() for d in i.dtypes}),
                   help="int8: executorch (XNNPACKQuantizer PTQ) or onnxruntime (quantize_static)")
    p.add_argument("--layout", choices=LAYOUTS,
                   help="I/O layout of exported models: nhwc (default where the runtime can: no layout "
                        "conversion at an op's boundaries, as inside a network) or nchw")  # fmt: skip
    p.add_argument("--threads", type=int, default=1, help="runtime threads (default 1)")
    p.add_argument("--rounds", type=int, default=_D.rounds, help=f"rounds over all ops (default {_D.rounds})")
    p.add_argument("--warmup", type=int, default=_D.warmup, help=f"untimed runs per op per round (default {_D.warmup})")
    p.add_argument("--runs", type=int, default=_D.runs, help=f"timed runs per op per round (default {_D.runs})")
    p.add_argument("--seed", type=int, default=_D.seed, help="shuffle seed (round r uses seed + r)")
    p.add_argument("--cache", choices=list(PROTOCOL_CACHE_STATES),
                   help="cache state of timed op invocations: mixed (the default) times cold (host) or as "
                        "replicas (phone) the ops whose weights stream (fewer than 8 uses per weight: the batch-1 "
                        "classifier) and the others warm; warm runs one loaded model again and again; cold gives "
                        "each invocation weights out of cache and its input in cache, as inside a network, by "
                        "cycling loaded copies (host); replicas times a model of several copies of the op reading "
                        "one input (what a phone's runner can do)")
    p.add_argument("--cold-mib", type=float, metavar="MIB",
                   help="host, cold ops: the loaded copies cycled hold together this many MiB (default: what a network "
                        "of the space reads and writes in one pass, its weights and every layer's activations: ≈ 39 "
                        "for fbnet, 10 at fbnet-r128-w0.5; the weights come from where a network's would); 0: twice "
                        "the last-level cache (always from memory)")
    add_luts_root(p, old=("--root", "--out"))
    p.add_argument("--arch", action=ListAction, metavar="NAME_OR_FILE[,...]",
                   help="time these archs (names or JSON files) end to end instead of ops")
    p.add_argument("--per-layer", action="store_true",
                   help="with --arch: also time every layer inside the network (the runtime's operator profile: "
                        "ExecuTorch ETDump, LiteRT op profiling) beside the op timed alone")
    p.add_argument("--ops-limit", type=int, help="profile only the first N ops of the space")
    p.add_argument("--sample-shapes", type=int, metavar="N",
                   help="instead of the space's ops, time the --space family's blocks at N sampled layers "
                        "(resolutions 96-320, widths 0.35-1.5; profiler/shapes.py) into a LUT of space "
                        "shapes-<family>, for `python -m lut fit` (docs/predictor.md; N = 256: about 3350 "
                        "models to export once)")
    p.add_argument("--cache-dir", help="export cache root (default $HWNAS_CACHE or .cache/exports)")
    p.add_argument("--export-workers", type=int, help="export processes (default: min(cores, 4) for large jobs)")
    p.add_argument("--retry-failed", action="store_true",
                   help="measure again the ops that failed (export or run) in the incomplete job and complete it")
    p.add_argument("--allow-failed", action="store_true",
                   help="publish a LUT even when ops failed (their rows are marked failed); without it a job "
                        "with failed ops writes no version, stays incomplete and exits 1 with the count")
    p.add_argument("--fresh", action="store_true", help="discard an interrupted job instead of resuming it")
    p.add_argument("--skip-existing", action="store_true",
                   help="do nothing when the latest LUT version has the same settings record (space, runtime, "
                        "exporters, protocol; on a phone the runner's sha256, core mask, clock lock, temperature "
                        "limit) and no failed ops")  # fmt: skip
    p.add_argument("--wait-lock", type=float, default=0.0, metavar="SECONDS",
                   help="when another job is measuring on the device, wait this long for it (default: stop)")
    p.add_argument("--preflight", action="store_true",
                   help="only the checks a job runs before it exports anything (on a phone: runner ABI, free "
                        "space, one run of the runner on a tiny model with the job's flags); exit 1 when one fails")
    add_progress(p)
    p.add_argument("--json", action="store_true", help="print one JSON object per device (last line)")
    add_verbose(p)
    if adb is not None:
        adb.add_adb_arguments(p)
    return p


def _run_device(device: str, args: argparse.Namespace, adb) -> dict[str, Any]:
    t0 = time.perf_counter()
    options = adb.adb_options(args) if (adb is not None and device != "host") else None
    if args.arch:
        archs = [load_arch(a) for a in args.arch]
        measured = measure_archs_detailed(
            archs, args.runtime, device, threads=args.threads, rounds=args.rounds, warmup=args.warmup,
            runs=args.runs, dtype=args.dtype, layout=args.layout, target_options=options, seed=args.seed,
            cache_root=args.cache_dir, lock_wait_s=args.wait_lock, progress=args.progress, per_layer=args.per_layer,
        )  # fmt: skip
        return {
            "device": device, "runtime": args.runtime, "dtype": args.dtype, "threads": args.threads,
            "archs": {n: m.to_dict() for n, m in measured.items()},
            "elapsed_s": round(time.perf_counter() - t0, 2),
        }  # fmt: skip
    settings = JobSettings(
        args.runtime, dtype=args.dtype, layout=args.layout, threads=args.threads,
        protocol=ProtocolConfig(rounds=args.rounds, warmup=args.warmup, runs=args.runs, seed=args.seed, cache=args.cache,
                                cold_bytes=None if args.cold_mib is None else round(args.cold_mib * (1 << 20))),
        ops_limit=args.ops_limit, out=args.luts_root, cache_root=args.cache_dir, export_workers=args.export_workers,
        lock_wait_s=args.wait_lock, retry_failed=args.retry_failed, fresh=args.fresh,
        skip_existing=args.skip_existing, allow_failed=args.allow_failed, progress=args.progress,
    )  # fmt: skip
    if args.preflight:
        report = preflight_space(args.space, device=device, settings=settings, target_options=options).to_dict()
        out = {"device": device, "runtime": args.runtime, "preflight": report}
        if not report["ok"]:
            bad = next(c for c in report["checks"] if not c["ok"])
            fix = f"; fix: {bad['fix']}" if bad["fix"] else ""
            out["error"] = f"preflight failed at check '{bad['name']}': {bad['detail']}{fix}"
        return out
    space = shape_space(args.space, args.sample_shapes) if args.sample_shapes is not None else args.space
    result = profile_space(space, device=device, settings=settings, target_options=options)
    return {"device": device, "runtime": args.runtime, **result.to_dict()}


def _print_human(res: dict[str, Any]) -> None:
    if "preflight" in res:
        pf = res["preflight"]
        print(f"{res['device']} {res['runtime']} preflight: {'ok' if pf['ok'] else 'FAILED'} ({pf['elapsed_s']:.1f} s)")
        for c in pf["checks"]:
            print(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['name']}: {c['detail']}")
            if c["fix"]:
                print(f"        -> {c['fix']}")
    elif "error" in res:
        print(f"{res['device']}: FAILED: {res['error']}")
    elif "archs" in res:
        for name, s in res["archs"].items():
            print(f"{res['device']} {res['runtime']} {name}: median {s['median_us'] / 1e3:.2f} ms "
                  f"(p10 {s['p10_us'] / 1e3:.2f}, p90 {s['p90_us'] / 1e3:.2f}, n {s['n']}); load "
                  f"{s['load_us'] / 1e3:.1f} ms, memory {s['memory_kb'] / 1024:.1f} MiB")  # fmt: skip
            if s.get("layers"):
                print(f"    layers in context (operator times in steps of {s['layers_resolution_us']:g} µs, "
                      "the runtime profiler's resolution):")  # fmt: skip
            for row in s.get("layers") or []:
                print(f"    layer {row['layer']:2d} {row['op_key']:<32} {row['median_us']:9.1f} µs in context")
            if s.get("layers_error"):
                print(f"    per-layer times unavailable: {s['layers_error']}")
    elif res.get("reused"):
        print(f"{res['device']}: LUT {res['lut_dir']} is up to date ({res['num_ops']} ops); "
              "drop --skip-existing to measure a new version")  # fmt: skip
    else:
        print(f"{res['device']}: LUT {res['lut_dir']}: {res['num_ops']} ops, {res['num_failed']} failed, "
              f"{res['exported']} exported, {res['skipped']} op-rounds resumed, {res['elapsed_s']:.1f} s")  # fmt: skip


def _run_parallel(devices: list[str], run_one) -> list[dict[str, Any]]:
    """One thread per device. Ctrl-C sets `STOP`: every job stops at its next op-round (or cool-down
    poll), closes its target (clocks restored, lock released, models left for the resume) and
    keeps what it measured; then KeyboardInterrupt goes on."""
    pool = ThreadPoolExecutor(len(devices), thread_name_prefix="device")
    futures = [pool.submit(run_one, d) for d in devices]
    try:
        return [f.result() for f in futures]
    except KeyboardInterrupt:
        STOP.set()
        print(f"stopping {len(devices)} jobs at their next op-round ...", file=sys.stderr)
        raise
    finally:
        pool.shutdown(wait=True)


def main(argv: list[str] | None = None) -> int:
    adb = adb_module()
    parser = build_parser(adb)
    args = parser.parse_args(argv)
    if args.sample_shapes is not None and args.arch:
        parser.error("--sample-shapes times sampled ops, --arch whole networks: give one")
    if not args.arch:
        try:  # a wrong name stops here, before any device is locked or touched
            get_space(args.space)
            if args.sample_shapes is not None:
                shape_space(args.space, args.sample_shapes)
        except ValueError as e:
            parser.error(str(e))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)  # fmt: skip
    for name in ("profiler", "lut"):  # our own progress messages; third-party stays at WARNING
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        quiet_exporter_noise()
    devices = list(dict.fromkeys(args.device or ["host"]))
    for device in devices:  # a malformed SERIAL@HOST:PORT stops here, before anything is locked
        if "@" in device:
            from android_harness import AdbError, device_address

            try:
                device_address(device)
            except AdbError as e:
                parser.error(str(e))
    if args.dtype not in RUNTIMES[args.runtime].dtypes:
        print(f"error: runtime {args.runtime} supports dtype {', '.join(RUNTIMES[args.runtime].dtypes)}", file=sys.stderr)
        return 2

    def run_one(device: str) -> dict[str, Any]:
        try:
            return _run_device(device, args, adb)
        except IncompleteJobError as e:  # ops failed: the count, and the kept job's place
            if args.json:  # a human reads it once, in the summary below
                log.error("%s: %s", device, e)
            return {"device": device, "error": f"{type(e).__name__}: {e}", "num_failed": e.num_failed,
                    "incomplete": str(e.work_dir)}  # fmt: skip
        except (ValueError, RuntimeError, OSError) as e:  # the message is the report
            if args.json:
                log.error("%s: %s", device, e)
            return {"device": device, "error": f"{type(e).__name__}: {e}"}

    STOP.clear()
    try:
        if len(devices) == 1:
            results = [run_one(devices[0])]
        else:
            results = _run_parallel(devices, run_one)
    except KeyboardInterrupt:
        print("interrupted: finished op-rounds are saved; re-run the same command to continue",
              file=sys.stderr)  # fmt: skip
        return 130
    for res in results:
        print(json.dumps(res) if args.json else "", end="\n" if args.json else "")
        if not args.json:
            _print_human(res)
    sys.stdout.flush()
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
