"""Which cache state each layer's time inside a network follows, measured side by side in one run.

    python -m bench.cache_states [--runtime executorch,tflite] [--space fbnet] [--archs 3]
        [--rounds 3] [--runs 15] [--seed 0] [--layers]

A LUT times each op alone in one cache state (`--cache`): warm (one loaded copy run again and
again), cold (a cycle of loaded copies, so its weights and buffers are out of cache), or mixed (the
state `search.space.streamed_ops` gives each op). Inside a network a layer finds its weights
and buffers in whatever state the layers before it left them. Per runtime, for the space's named
archs and `--archs` random ones, this measures in shuffled rounds:

- every layer inside its network and alone, from the runtime's operator profile (ExecuTorch's
  ETDump, LiteRT's op profiling; `profiler.layers`): `ctx/alone`, what the network adds to the
  layer's operators;
- every op alone end to end, warm and cold, each less its input shape's overhead op timed in the
  same state: `cold/warm`, what the cold state adds.

A layer whose ctx/alone is near 1 runs warm inside the network; one whose ctx/alone is near its
cold/warm runs cold (`follows`: whichever is nearer in log ratio). Printed per input resolution and
per state the `mixed` rule gives the op: Σ alone, Σ in context and their ratio, Σ warm, Σ cold and
their ratio, and the share of layers that follow cold; with `--layers`, every layer. On a device
where mixed LUTs do not add up, this shows which layers the rule puts in the wrong state.

On this host only: the cold state is a cycle of loaded copies, which a phone's runner binaries
cannot time (they time replicas, `--cache replicas`).
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import statistics
import sys
from dataclasses import replace

import pandas as pd

from hwnas.flags import add_runtime, add_verbose, run_main
from lut.validate import random_archs
from profiler.export import ExportCache, ExportItem
from profiler.layers import operators_of, run_totals, split_layers
from profiler.protocol.config import ProtocolConfig
from profiler.protocol.plan import op_cache_states, plan_ops
from profiler.protocol.rounds import run_rounds
from profiler.runtimes import get_runtime, runtime_info
from profiler.targets import get_target
from profiler.targets.base import RunSpec
from search.space import arch_ops, get_space, named_archs_for, overhead_op


def measure(runtime: str, space_name: str, *, num_random: int, rounds: int, runs: int, seed: int) -> pd.DataFrame:
    """One row per computing layer of each arch: arch, layer, op_key, resolution, mixed (the
    state the mixed rule gives the op), alone_us, ctx_us, warm_us, cold_us (µs, medians over
    rounds; warm and cold less the overhead op in the same state)."""
    space = get_space(space_name)
    archs = named_archs_for(space.name) + random_archs(space, num_random, seed)
    timed, _identity, net_overhead = plan_ops(space.name)
    mixed = op_cache_states(timed, net_overhead, "mixed", "cold")
    ops = {op.key: op for a in archs for op in arch_ops(a) if not op.is_identity}
    ops.update({overhead_op(op).key: overhead_op(op) for op in list(ops.values())})
    rt = get_runtime(runtime)
    arch_items = {a.label: ExportItem.for_arch(a) for a in archs}
    items = {item.key: item for item in arch_items.values()}
    items.update({k: ExportItem.for_op(op) for k, op in ops.items()})
    report = ExportCache(rt).ensure(list(items.values()), progress=False)
    if report.failed:
        raise RuntimeError(f"could not export for {runtime}: {report.failed}")
    paths = report.paths
    target = get_target("host")
    spec = RunSpec(threads=1, warmup=5, runs=runs)
    try:
        target.prepare(rt, list(paths.values()))
        # warm and cold end to end, interleaved in the same shuffled rounds
        samples: dict[str, list[float]] = {}
        files = {f"{state}/{k}": paths[k] for k in ops for state in ("warm", "cold")}
        given_up = run_rounds(
            target, rt, files, ProtocolConfig(rounds=rounds, runs=runs, seed=seed), spec,
            specs={k: replace(spec, cache="cold") for k in files if k.startswith("cold/")},
            on_samples=lambda k, _r, s, _e: samples.setdefault(k, []).extend(s), progress=False,
        )  # fmt: skip
        if given_up:
            raise RuntimeError(f"could not time {sorted(given_up)} on this host")
        med = {k: statistics.median(v) for k, v in samples.items()}
        # operator profiles: each arch and each op alone, in shuffled rounds
        ctx: dict[tuple[str, int], list[float]] = {}
        alone: dict[str, list[float]] = {}
        profiled = [k for k, op in ops.items() if op.block != "overhead"] + [item.key for item in arch_items.values()]
        for r in range(rounds):
            order = list(profiled)
            random.Random(seed + r).shuffle(order)
            found = {k: operators_of(target.measure_detailed(rt, paths[k], spec, profile=True)) for k in order}
            for k in found:
                if k in ops:
                    alone.setdefault(k, []).append(statistics.median(run_totals(found[k])))
            for a in archs:
                layers = arch_ops(a)
                rows = split_layers(found[arch_items[a.label].key],
                                    [found[op.key] if not op.is_identity else [] for op in layers],
                                    [op.key for op in layers])  # fmt: skip
                for i, row in enumerate(rows):
                    ctx.setdefault((a.label, i), []).append(row["median_us"] + row["between_us"])
    finally:
        target.close()
    out = []
    for a in archs:
        for i, op in enumerate(arch_ops(a)):
            if op.is_identity:
                continue
            ovh = overhead_op(op).key
            out.append({
                "arch": a.label, "layer": i, "op_key": op.key, "resolution": op.h, "mixed": mixed.get(op.key, "warm"),
                "alone_us": statistics.median(alone[op.key]), "ctx_us": statistics.median(ctx[(a.label, i)]),
                "warm_us": med[f"warm/{op.key}"] - med[f"warm/{ovh}"],
                "cold_us": med[f"cold/{op.key}"] - med[f"cold/{ovh}"],
            })  # fmt: skip
    df = pd.DataFrame(out)
    df["ctx/alone"] = df.ctx_us / df.alone_us
    df["cold/warm"] = df.cold_us / df.warm_us
    log_ctx = df["ctx/alone"].map(_log)
    log_cold = df["cold/warm"].map(_log)
    df["follows"] = ((log_ctx - log_cold).abs() < log_ctx.abs()).map({True: "cold", False: "warm"})
    return df


def _log(x: float) -> float:
    return math.log(x) if x > 0 else math.nan


def summary(df: pd.DataFrame, by: str) -> pd.DataFrame:
    """Σ per group of `by` (and over all layers): alone, in context, warm, cold, their ratios,
    and the share of layers that follow cold."""
    def agg(g: pd.DataFrame) -> pd.Series:
        return pd.Series({
            "layers": len(g), "Σ alone µs": g.alone_us.sum(), "Σ ctx µs": g.ctx_us.sum(),
            "ctx/alone": g.ctx_us.sum() / g.alone_us.sum(), "Σ warm µs": g.warm_us.sum(),
            "Σ cold µs": g.cold_us.sum(), "cold/warm": g.cold_us.sum() / g.warm_us.sum(),
            "follow cold %": 100.0 * (g.follows == "cold").mean(),
        })  # fmt: skip

    groups = [agg(g).rename(k) for k, g in df.groupby(by, sort=True)]
    table = pd.DataFrame([*groups, agg(df).rename("all")])
    table.index.name = by
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cache_states", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_runtime(p, dest="runtimes", multiple=True, spaced=True, default=["executorch", "tflite"], old=("--runtimes",),
                help="runtimes with an operator profile on this host (default: executorch,tflite)")
    p.add_argument("--space", default="fbnet", help="search space (default fbnet)")
    p.add_argument("--archs", type=int, default=3, help="random archs besides the named ones")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--runs", type=int, default=15, help="timed invocations per model and round")
    p.add_argument("--seed", type=int, default=0, help="seed of the random archs (default 0)")
    p.add_argument("--layers", action="store_true", help="also print every layer")
    add_verbose(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    fmt = {"float_format": lambda v: f"{v:.3f}" if abs(v) < 10 else f"{v:.0f}"}
    for runtime in args.runtimes:
        df = measure(runtime, args.space, num_random=args.archs, rounds=args.rounds, runs=args.runs,
                     seed=args.seed)  # fmt: skip
        res = runtime_info(runtime).op_profile_resolution_us
        coarse = int(((df.alone_us < 10 * res) | (df.ctx_us < 10 * res)).sum()) if res else 0
        print(f"{runtime}: alone and in-context times are sums of operator times in steps of {res:g} µs (the "
              f"runtime profiler's resolution); {coarse} of {len(df)} layers are under {10 * res:g} µs, where "
              "that step is ≥ 10 % of the value")  # fmt: skip
        print(f"{runtime}: per input resolution")
        print(summary(df, "resolution").to_string(**fmt))
        print(f"{runtime}: per state of the mixed rule")
        print(summary(df, "mixed").to_string(**fmt))
        if args.layers:
            print(f"{runtime}: per layer")
            print(df.to_string(index=False, **fmt))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
