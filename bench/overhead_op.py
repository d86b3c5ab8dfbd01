"""What a LUT's overhead op takes off the additive sum, measured side by side in one run.

    python -m bench.overhead_op [--runtime executorch,tflite] [--space fbnet] [--rounds 5]
        [--runs 50] [--archs 0] [--seed 0]

The latency model subtracts the overhead op of an op's input shape from the op and adds the
network input's once (`lut.store.Lut.predict_us`). The overhead op is meant to be an invocation
with no work: today a 1×1 depthwise conv that samples 2×2 pixels of its input
(`search.space.modules.Overhead`). Before, it was a ReLU, which also charged an elementwise pass
over the input (onnxruntime keeps it: `RuntimeInfo.overhead`). Per runtime, this times both at
every input shape of the space and the space's named archs end to end, interleaved in shuffled
rounds on this host (one thread, inputs bound once), and prints:

- per input shape: the ReLU's and the sampler's median µs;
- per named arch (and `--archs` random ones): its end-to-end median, and Σ over its timed ops
  after the first of (ReLU − sampler) at the op's input shape: what the ReLU took off the arch's
  predicted sum that the sampler does not, in µs and in % of the end-to-end time.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from hwnas.flags import add_runtime, add_verbose, run_main
from lut.validate import random_archs
from profiler.export import ExportCache, ExportItem
from profiler.protocol.plan import plan_ops
from profiler.runtimes import get_runtime, time_invocations
from search.space import arch_ops, get_space, named_archs_for


def _time_interleaved(sessions: dict[str, object], *, rounds: int, warmup: int, runs: int,
                      seed: int) -> dict[str, float]:  # fmt: skip
    """Median µs of each session over `rounds` shuffled rounds of `warmup` + `runs` invocations."""
    samples: dict[str, list[float]] = {k: [] for k in sessions}
    for r in range(rounds):
        order = sorted(sessions)
        random.Random(seed + r).shuffle(order)
        for k in order:
            samples[k] += time_invocations(sessions[k].run, warmup=warmup, runs=runs)
    return {k: statistics.median(v) for k, v in samples.items()}


def measure(runtime: str, space_name: str, *, rounds: int, runs: int, seed: int,
            num_random: int = 0) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """(per input shape: relu_us, sampler_us), (per arch: e2e_us, shift_us, shift_pct)."""
    rt = get_runtime(runtime)
    space = get_space(space_name)
    timed, _identity, _net = plan_ops(space.name)
    overheads = [op for op in timed if op.block == "overhead"]
    archs = named_archs_for(space.name) + random_archs(space, num_random, seed)
    cache = ExportCache(rt)
    report = cache.ensure([ExportItem.for_op(o) for o in overheads] + [ExportItem.for_arch(a) for a in archs])
    if report.failed:
        raise RuntimeError(f"could not export for {runtime}: {report.failed}")
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        for o in overheads:
            relu = Path(tmp) / f"relu-{o.key}{rt.suffix}"
            rt.export(nn.ReLU().eval(), o.example_input(), relu)
            sessions[f"relu/{o.key}"] = rt.open(relu, threads=1, seed=seed)
            sessions[f"sampler/{o.key}"] = rt.open(report.paths[o.key], threads=1, seed=seed)
        for a in archs:
            sessions[f"arch/{a.label}"] = rt.open(report.paths[ExportItem.for_arch(a).key], threads=1, seed=seed)
        med = _time_interleaved(sessions, rounds=rounds, warmup=5, runs=runs, seed=seed)
    shapes = [{"shape": f"{o.c_in}x{o.h}x{o.w}", "relu_us": med[f"relu/{o.key}"],
               "sampler_us": med[f"sampler/{o.key}"]} for o in overheads]  # fmt: skip
    diff = {(o.c_in, o.h, o.w): med[f"relu/{o.key}"] - med[f"sampler/{o.key}"] for o in overheads}
    rows = []
    for a in archs:
        ops = [op for op in arch_ops(a) if not op.is_identity]
        shift = sum(diff[(op.c_in, op.h, op.w)] for op in ops[1:])
        e2e = med[f"arch/{a.label}"]
        rows.append({"arch": a.label, "e2e_us": e2e, "shift_us": shift, "shift_pct": 100 * shift / e2e})
    return sorted(shapes, key=lambda s: s["shape"]), rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.overhead_op", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_runtime(p, dest="runtimes", multiple=True, spaced=True, default=["executorch", "tflite"], old=("--runtimes",),
                help="runtimes (default: executorch,tflite)")
    p.add_argument("--space", default="fbnet", help="search space (default fbnet)")
    p.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--runs", type=int, default=50, help="timed invocations per model and round")
    p.add_argument("--archs", type=int, default=0, help="random archs besides the named ones")
    p.add_argument("--seed", type=int, default=0, help="seed of the random archs (default 0)")
    add_verbose(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    torch.set_num_threads(1)
    for runtime in args.runtimes:
        shapes, archs = measure(runtime, args.space, rounds=args.rounds, runs=args.runs, seed=args.seed,
                                num_random=args.archs)  # fmt: skip
        print(f"{runtime}: overhead op per input shape (median µs)")
        print(f"  {'input shape':<14}{'ReLU':>9}{'sampler':>9}")
        for s in shapes:
            print(f"  {s['shape']:<14}{s['relu_us']:>9.2f} {s['sampler_us']:>8.2f}")
        print(f"{runtime}: what the ReLU took off each arch's sum")
        print(f"  {'arch':<24}{'e2e µs':>10}{'Δ µs':>9}{'Δ %':>7}")
        for r in archs:
            print(f"  {r['arch']:<24}{r['e2e_us']:>10.1f} {r['shift_us']:>8.1f} {r['shift_pct']:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
