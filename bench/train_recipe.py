"""Does the training recipe work at every width we ship? Named and random archs trained from
scratch at two widths over seeds, side by side.

    python -m bench.train_recipe [--archs fbnet_a,fbnet_b,fbnet_c,random_000,...] [--widths 0.25,1.0]
        [--seeds 0,1] [--epochs 10] [--resolution 32] [--data digits] [--subset N]
        [--random 5] [--random-seed 0] [--min-acc 0.85] [--max-spread 0.05] [--json]

Every arch (FBNet-A/B/C and `--random` archs of the fbnet space with one uniformly drawn block per
layer, `lut.validate.random_archs` seeded by `--random-seed`, named random_000 …) is trained by
`search.training.train_arch` with the default `TrainConfig` (the recipe of `search.recipe`) for
`--epochs` on the whole train split at each width (the space `fbnet-r<R>-w<W>`, as
`search.train --resolution R --width W` trains it), once per seed. Each row: the test accuracy
of each seed, the spread between the seeds (max − min), whether every seed reaches `--min-acc`
and the spread stays within `--max-spread`. Below: how many runs and pairs meet the targets,
the width-1.0 mean over the width-0.25 mean, and the wall time.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from typing import Any

import torch

from hwnas.flags import add_verbose, comma_list, run_main
from lut.validate import random_archs
from search.data import Dataset, load_data
from search.space import Arch, get_arch, get_space
from search.training import TrainConfig, train_arch, train_space_for, trained_arch

NAMED = ("fbnet_a", "fbnet_b", "fbnet_c")


_floats = comma_list(float)
_ints = comma_list(int)


def resolve_archs(names: list[str] | None, n_random: int, random_seed: int) -> list[Arch]:
    """The named archs and `n_random` seeded random archs of the fbnet space; `names` picks among
    them (a named arch of any fbnet-family space, or random_000 …)."""
    randoms = {a.name: a for a in random_archs(get_space("fbnet"), n_random, random_seed)}
    if names is None:
        return [get_arch(n) for n in NAMED] + list(randoms.values())
    archs = []
    for name in names:
        if name in randoms:
            archs.append(randoms[name])
        elif name.startswith("random_"):
            raise ValueError(f"{name} is not among the {n_random} random archs (random_000 … "
                             f"random_{n_random - 1:03d}); raise --random")  # fmt: skip
        else:
            archs.append(get_arch(name))  # ValueError listing the named archs
    return archs


def run_one(arch: Arch, width: float, resolution: int, seed: int, data: Dataset, epochs: int) -> dict[str, Any]:
    """One training from scratch: the arch at this width and resolution, this seed."""
    space = train_space_for(arch, resolution=resolution, width=width)
    trained = trained_arch(arch, space)
    t0 = time.perf_counter()
    result = train_arch(trained.blocks, space, data, TrainConfig(epochs=epochs, seed=seed),
                        head_channels=trained.head_channels)  # fmt: skip
    return {"arch": arch.label, "width": width, "space": space.name, "seed": seed,
            "test_accuracy": result["test_accuracy"], "test_loss": result["test_loss"],
            "train_s": time.perf_counter() - t0}  # fmt: skip


def summarize(rows: list[dict[str, Any]], min_acc: float, max_spread: float) -> list[dict[str, Any]]:
    """One pair per (arch, width): the seeds' accuracies, their spread and the verdicts."""
    pairs: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in rows:
        pairs.setdefault((r["arch"], r["width"]), []).append(r)
    out = []
    for (arch, width), runs in pairs.items():
        accs = [r["test_accuracy"] for r in runs]
        spread = max(accs) - min(accs)
        out.append({"arch": arch, "width": width, "seeds": [r["seed"] for r in runs], "test_accuracy": accs,
                    "spread": spread, "all_above": min(accs) >= min_acc,
                    "within_spread": spread <= max_spread})  # fmt: skip
    return out


def report(pairs: list[dict[str, Any]], rows: list[dict[str, Any]], args: argparse.Namespace, wall_s: float) -> None:
    seeds = args.seeds
    head = " ".join(f"{'seed ' + str(s):>7s}" for s in seeds)
    print(f"\n{'arch':<12s} {'width':>5s} {head} {'spread':>7s}  ≥{args.min_acc:g}  ≤{args.max_spread:g}")
    for p in pairs:
        accs = " ".join(f"{a:7.3f}" for a in p["test_accuracy"])
        print(f"{p['arch']:<12s} {p['width']:5.2f} {accs} {p['spread']:7.3f}  {'yes' if p['all_above'] else 'NO':>4s}"
              f"  {'yes' if p['within_spread'] else 'NO':>4s}")  # fmt: skip
    n_above = sum(r["test_accuracy"] >= args.min_acc for r in rows)
    n_close = sum(p["within_spread"] for p in pairs)
    print(f"runs with test accuracy ≥ {args.min_acc:g}: {n_above}/{len(rows)}; "
          f"pairs within {args.max_spread:g}: {n_close}/{len(pairs)}")  # fmt: skip
    by_width = {w: [r["test_accuracy"] for r in rows if r["width"] == w] for w in args.widths}
    if len(by_width) > 1 and all(by_width.values()):
        lo, hi = min(args.widths), max(args.widths)
        print(f"mean test accuracy at width {hi:g} / at width {lo:g}: "
              f"{statistics.fmean(by_width[hi]) / statistics.fmean(by_width[lo]):.3f}")  # fmt: skip
    print(f"{len(rows)} trainings of {args.epochs} epochs on {args.data} at {args.resolution}×{args.resolution}, "
          f"{args.torch_threads} torch thread(s): {wall_s:.0f} s in all")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.train_recipe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--archs", type=comma_list(),
                   help=f"comma list (default: {','.join(NAMED)} and the random archs)")
    p.add_argument("--random", type=int, default=5, help="random archs of the fbnet space (default 5)")
    p.add_argument("--random-seed", type=int, default=0, help="seed of the random archs")
    p.add_argument("--widths", type=_floats, default=[0.25, 1.0], help="width multipliers, comma-separated")
    p.add_argument("--seeds", type=_ints, default=[0, 1], help="seeds, comma-separated")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    p.add_argument("--resolution", type=int, default=32, help="input resolution (default 32)")
    p.add_argument("--data", default="digits", help="digits (default) | cifar10:DIR | imagefolder:DIR")
    p.add_argument("--subset", type=int, help="train images (default: all)")
    p.add_argument("--min-acc", type=float, default=0.85, help="target: every run's test accuracy")
    p.add_argument("--max-spread", type=float, default=0.05, help="target: max − min over the seeds of a pair")
    p.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--json", action="store_true", help="last line: the runs and pairs as one JSON object")
    add_verbose(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    try:
        if args.random < 0 or args.epochs < 1 or not args.widths or not args.seeds:
            raise ValueError("need --random ≥ 0, --epochs ≥ 1 and at least one width and one seed")
        if any(w <= 0 for w in args.widths):
            raise ValueError(f"widths must be > 0, got {args.widths}")
        archs = resolve_archs(args.archs, args.random, args.random_seed)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.torch_threads)
    data = load_data(args.data, resolution=args.resolution, subset=args.subset)
    t0 = time.perf_counter()
    rows = []
    for arch in archs:
        for width in args.widths:
            for seed in args.seeds:
                rows.append(run_one(arch, width, args.resolution, seed, data, args.epochs))
                r = rows[-1]
                print(f"{r['arch']:<12s} w{width:g} seed {seed}: test accuracy {r['test_accuracy']:.3f} "
                      f"({r['train_s']:.0f} s)", flush=True)  # fmt: skip
    pairs = summarize(rows, args.min_acc, args.max_spread)
    wall_s = time.perf_counter() - t0
    report(pairs, rows, args, wall_s)
    if args.json:
        print(json.dumps({"runs": rows, "pairs": pairs, "wall_s": wall_s}))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
