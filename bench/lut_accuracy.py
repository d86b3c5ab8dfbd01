"""LUT accuracy per runtime and measurement protocol, side by side, measured in one run.

    python -m bench.lut_accuracy [--runtime executorch,tflite] [--protocols nchw:warm,nhwc:warm,nhwc:mixed,nhwc:cold]
        [--space fbnet] [--archs 20] [--rounds 6] [--seed 0] [--drift-ops all|N] [--out bench_luts] [--json]
    python -m bench.lut_accuracy LUT [LUT ...]        # validate existing LUTs instead

For each runtime and each protocol (export layout : cache state of the timed ops), a LUT of the
space is profiled on this host into `--out` (a store of its own, so the user's `luts/` is not
touched; exports are cached), then validated right away on the same random archs (same seed) plus
the named archs, with the protocol of `lut validate`. The table shows, per LUT: the raw additive
sum's MAPE, max APE and Spearman ρ (`--correction none`); the fitted corrections' held-out MAPE
(`affine`, `per_op`: fitted on half of the random archs, scored on the rest); the end-to-end
noise floor and the drift of re-timed LUT ops in that same validation. With `--drift-ops all`
(the default) every op of the LUT is re-timed in the validation's rounds, and the sum of those
re-timings is scored too (`same`: MAPE, bias, ρ): the additivity error without the drift of the
machine between building the LUT and timing the archs. `nchw:warm` is the
protocol LUTs had before (a layout conversion at each op's boundaries, weights in cache);
`nhwc:warm` keeps every op's weights in cache; `nhwc:mixed`, the default, times cold the ops whose
weights stream inside a network (the batch-1 classifier) and the others warm; `nhwc:cold` times
every op cold (cycling loaded copies that together hold what a network of the space reads and
writes in one pass). A third field
of options joined by `+` changes how the host times: `one` times all rounds of a LUT, and of each
validation half, in one process, as the host did before each round got a fresh process
(`nhwc:mixed,nhwc:mixed:one` compares the two side by side); `llc` cycles as many cold copies as
exceed twice the last-level cache (weights always from memory), the cold state before it was sized
to the network (`nhwc:mixed,nhwc:mixed:llc`); `cold=MIB` cycles cold copies holding MIB.

Machines drift and VMs share their cores: read the columns of one run side by side, not against
another run's. Each row ends with the validation's verdict (`lut.validate.verdict`): whether the
raw sum meets the goal (MAPE ≤ 5 %, ρ ≥ 0.95), given only when the run was quiet enough to judge
(noise floor ≤ 4 %, |drift| ≤ 2 %; otherwise "not quiet"). `--repeats N` builds and validates
every LUT N times in turn and ends with the spread of each runtime and protocol over the repeats:
raw MAPE, bias and ρ from lowest to highest, how many repeats were quiet and how many of those met
the goal.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from typing import Any

from hwnas.flags import add_luts_root, add_out, add_runtime, add_verbose, run_main
from lut.store import load_lut
from lut.validate import GOAL_MAPE_PCT, GOAL_SPEARMAN, write_validation
from profiler.api import profile_space
from profiler.validate import ALL_OPS, ValidationConfig, validate_lut


def _row(lut, rep: dict[str, Any], protocol: str) -> dict[str, Any]:
    add = rep["additive"]
    corr = rep["corrections"]
    return {
        "lut": lut.id,
        "runtime": lut.meta["runtime"]["name"],
        "protocol": protocol,
        "raw_mape": add["mape"],
        "raw_max_ape": add["max_ape"],
        "raw_spearman": add["spearman"],
        "raw_mean_error_pct": add["mean_error_pct"],
        "affine_holdout_mape": corr.get("affine", {}).get("holdout", {}).get("mape"),
        "per_op_holdout_mape": corr.get("per_op", {}).get("holdout", {}).get("mape"),
        "same_mape": rep.get("same_rounds", {}).get("mape"),
        "same_mean_error_pct": rep.get("same_rounds", {}).get("mean_error_pct"),
        "same_spearman": rep.get("same_rounds", {}).get("spearman"),
        "noise_floor": rep["noise_floor"],
        "drift_pct": rep.get("drift", {}).get("median_change_pct"),
        "num_archs": rep["num_archs"],
        "quiet": rep["verdict"]["quiet"],
        "meets_goal": rep["verdict"]["meets_goal"],
        "not_quiet": rep["verdict"]["not_quiet"],
    }


def spread(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per runtime and protocol over the repeats: lowest and highest raw MAPE and bias, lowest ρ,
    and how many repeats were quiet and met the goal."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["runtime"], r["protocol"]), []).append(r)
    return [{
        "runtime": rt, "protocol": proto, "repeats": len(rs),
        "raw_mape_min": min(r["raw_mape"] for r in rs), "raw_mape_max": max(r["raw_mape"] for r in rs),
        "bias_min": min(r["raw_mean_error_pct"] for r in rs), "bias_max": max(r["raw_mean_error_pct"] for r in rs),
        "spearman_min": min(r["raw_spearman"] for r in rs),
        "quiet": sum(bool(r["quiet"]) for r in rs), "met": sum(r["meets_goal"] is True for r in rs),
    } for (rt, proto), rs in out.items()]  # fmt: skip


def _host_options(proto: str, options: str, p: argparse.ArgumentParser) -> tuple[dict[str, Any], dict[str, Any]]:
    """(target options, protocol fields) of a protocol's third field: `one`, `llc`, `cold=MIB`, joined by +."""
    host: dict[str, Any] = {"process_per_round": True}
    cold: dict[str, Any] = {}
    for opt in filter(None, options.split("+")):
        if opt == "one":
            host["process_per_round"] = False  # every round of the LUT and of each half in one process
        elif opt == "llc":
            cold["cold_bytes"] = 0  # cold copies beyond twice the last-level cache
        elif opt.startswith("cold=") and opt[5:].replace(".", "", 1).isdigit():
            cold["cold_bytes"] = round(float(opt[5:]) * (1 << 20))  # cold copies holding MIB together
        else:
            p.error(f"unknown protocol option {opt!r} in {proto!r}; known: one, llc, cold=MIB")
    return host, cold


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lut_accuracy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("luts", nargs="*", help="validate these LUTs (dirs or ids) instead of profiling")
    add_runtime(p, dest="runtimes", multiple=True, spaced=True, default=["executorch", "tflite"], old=("--runtimes",),
                help="runtimes to build LUTs with (default: executorch,tflite)")
    p.add_argument("--protocols", default="nchw:warm,nhwc:warm,nhwc:mixed,nhwc:cold",
                   help="comma-separated LAYOUT:CACHE pairs (default: the old protocol, the layout fix, and the "
                        "cache states with it); LAYOUT:CACHE:one times every round of the LUT and of each "
                        "validation half in one process (the default: each round in a fresh one); LAYOUT:CACHE:llc cycles "
                        "cold copies beyond twice the last-level cache, :cold=MIB copies holding MIB (options join with +: "
                        "one+llc)")
    p.add_argument("--space", default="fbnet", help="search space (default fbnet)")
    add_out(p, default="bench_luts", help="folder of the LUTs the benchmark builds (default bench_luts/)")
    add_luts_root(p, help="LUT store root of the LUTs named as arguments (default luts)")
    p.add_argument("--archs", type=int, default=20, help="random archs besides the named ones")
    p.add_argument("--rounds", type=int, default=6, help="end-to-end rounds (two halves)")
    p.add_argument("--profile-rounds", type=int, default=5, help="rounds of each LUT's op profile")
    p.add_argument("--seed", type=int, default=0, help="seed of the random archs (default 0)")
    p.add_argument("--drift-ops", default="all",
                   help="LUT ops re-timed in the validation rounds: a count, or all (default: every op, so that "
                        "the sum of the re-timed ops is scored beside the LUT's)")
    p.add_argument("--ops-limit", type=int, help="profile only the first N ops (tests)")
    p.add_argument("--write", action="store_true", help="store validation.json beside each LUT")
    p.add_argument("--json", action="store_true", help="last line: one JSON list of rows")
    p.add_argument("--repeats", type=int, default=1,
                   help="build and validate every LUT this many times in turn, then print the spread (default 1)")
    add_verbose(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    drift_ops = ALL_OPS if args.drift_ops == "all" else int(args.drift_ops)
    cfg = ValidationConfig(num_archs=args.archs, seed=args.seed, rounds=args.rounds, correction="auto",
                           progress=not args.json, drift_ops=drift_ops)  # fmt: skip
    if args.repeats < 1:
        p.error("--repeats must be ≥ 1")
    rows = []

    def validate(path: str, proto: str, repeat: int, config: ValidationConfig = cfg) -> None:
        lut = load_lut(path)
        rep = validate_lut(lut, config)
        if args.write:
            write_validation(lut, rep)
        rows.append({**_row(lut, rep, proto), "repeat": repeat})

    try:
        for repeat in range(args.repeats):
            if args.luts:
                for x in args.luts:
                    validate(str(load_lut(x, root=args.luts_root).path), "as stored", repeat)
                continue
            for runtime in args.runtimes:  # each LUT validated as soon as it is built: minutes apart
                for proto in args.protocols.split(","):
                    layout, cache, options = (proto.split(":") + ["", ""])[:3]
                    host, cold = _host_options(proto, options, p)
                    res = profile_space(args.space, runtime, out=args.out, layout=layout, cache=cache or None, **cold,
                                        rounds=args.profile_rounds, seed=args.seed, ops_limit=args.ops_limit,
                                        progress=not args.json, target_options=host)  # fmt: skip
                    validate(str(res.lut_dir), proto, repeat, replace(cfg, target_options=host))
    except (ValueError, RuntimeError) as e:  # LutError, TargetError, JobError
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'runtime':<12}{'protocol':<12}{'raw MAPE %':>11}{'bias %':>8}{'max APE %':>10}{'Spearman':>9}"
          f"{'affine %':>9}{'per_op %':>9}{'same %':>8}{'bias %':>8}{'ρ':>7}{'noise %':>8}{'drift %':>8}"
          f"{'archs':>6}  verdict")  # fmt: skip

    def f(v: float | None, spec: str) -> str:
        return format(v, spec) if v is not None else "-".rjust(int(spec.split(".")[0].lstrip(">")))

    for r in rows:
        print(f"{r['runtime']:<12}{r['protocol']:<12}{f(r['raw_mape'], '>11.2f')}{f(r['raw_mean_error_pct'], '>+8.2f')}"
              f"{f(r['raw_max_ape'], '>10.2f')}"
              f"{f(r['raw_spearman'], '>9.3f')}{f(r['affine_holdout_mape'], '>9.2f')}"
              f"{f(r['per_op_holdout_mape'], '>9.2f')}{f(r['same_mape'], '>8.2f')}{f(r['same_mean_error_pct'], '>+8.2f')}"
              f"{f(r['same_spearman'], '>7.3f')}{f(r['noise_floor'], '>8.2f')}{f(r['drift_pct'], '>+8.1f')}"
              f"{r['num_archs']:>6d}  {_verdict(r)}")  # fmt: skip
    for r in rows:
        if not r["quiet"]:
            print(f"  {r['runtime']} {r['protocol']} (repeat {r['repeat'] + 1}): {'; '.join(r['not_quiet'])}")
    if args.repeats > 1:
        print(f"over {args.repeats} repeats (goal: raw MAPE ≤ {GOAL_MAPE_PCT:g} %, ρ ≥ {GOAL_SPEARMAN:g}; judged on "
              "quiet repeats only):")  # fmt: skip
        for s_ in spread(rows):
            print(f"  {s_['runtime']:<12}{s_['protocol']:<12} raw MAPE {s_['raw_mape_min']:.2f}–{s_['raw_mape_max']:.2f} %"
                  f"  bias {s_['bias_min']:+.2f} … {s_['bias_max']:+.2f} %  ρ ≥ {s_['spearman_min']:.3f}"
                  f"  quiet {s_['quiet']}/{s_['repeats']}, met the goal {s_['met']}/{s_['quiet']}")  # fmt: skip
    return 0


def _verdict(r: dict[str, Any]) -> str:
    return "not quiet" if not r["quiet"] else ("meets goal" if r["meets_goal"] else "misses goal")


if __name__ == "__main__":
    sys.exit(run_main(main))
