"""What each round's process does to a validation: networks against their ops, round by round.

    python -m bench.process_draw LUT [--luts-root luts] [--rounds 24] [--runs 10] [--archs 20]
        [--seed 0] [--halves 3,6,12] [--json]

On the host each round of a LUT and of a validation runs in a process of its own, and where a
process's models land in memory moves a network's time more than its ops' (docs/protocol.md,
"The process"). This times what `lut validate LUT --drift-ops all` times — the random and named
archs end to end, and every op of the LUT in its protocol's cache state — in `--rounds` shuffled
rounds of `--runs` timed runs, each round its own process, and prints:

- the round factor: per round, the median over the networks (over the ops) of 100·ln(the round's
  median / that key's median over all rounds). Its spread for networks and for ops, and their
  correlation: a machine whose speed moves moves both; a draw of where models land moves networks
  more than the ops.
- per `k` rounds per half (`--halves`; `lut validate` takes 3 by default): the noise floor a
  validation of 2k rounds gives (`lut.validate.noise_floor_pct`), over halves taken one after the
  other as `lut validate` takes them, and over halves of rounds drawn at random (the draw without
  the machine's slow drift); its median, 90th percentile, and the share of splits within the
  quiet threshold; and the additivity of those rounds (`same-rounds` bias: the sum of the ops
  re-timed in them against the networks), its mean and its spread over splits, which is how far
  the draws alone move an additivity figure.
- the cost: seconds per round, so that more rounds are chosen with their price.

Read it before changing how many rounds a validation or a LUT takes on a machine: if the noise
floor falls with k, the draw is what the rounds average; if the bias holds still while the noise
floor falls, the additivity error is the machine's, not the draw's.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

import numpy as np

from hwnas.flags import add_luts_root, add_verbose, run_main
from lut.store import Lut, load_lut
from lut.validate import QUIET_NOISE_PCT, error_metrics, noise_floor_pct, random_archs
from profiler.api import measure_archs_detailed
from profiler.validate import ALL_OPS, drift_sample, measure_options, retime_options, same_rounds
from search.space import Arch, Op, get_space, named_archs_for

__all__ = ["measure", "round_factors", "splits", "main"]

PerRound = dict[str, dict[int, list[float]]]  # key (arch label or op key) → round → samples


def measure(lut: Lut, *, rounds: int, runs: int, num_archs: int, seed: int,
            progress: bool = False) -> tuple[list[Arch], list[Op], PerRound, float]:  # fmt: skip
    """Time the validation's archs and every op of the LUT in `rounds` rounds; the samples by
    round, and the seconds the measurement took."""
    space = get_space(lut.space)
    archs = random_archs(space, num_archs, seed) + named_archs_for(lut.space)
    if len(archs) < 2:
        raise ValueError(f"{lut.space} has {len(archs)} arch(s) to time with --archs {num_archs}: scoring needs ≥ 2")
    ops = drift_sample(lut, ALL_OPS, seed)
    options = {**measure_options(lut, progress=progress), "runs": runs}
    t0 = time.perf_counter()
    measured = measure_archs_detailed(archs, lut.meta["runtime"]["name"], rounds=rounds, seed=seed, ops=ops,
                                      **retime_options(lut.meta.get("protocol", {})), **options)  # fmt: skip
    return archs, ops, {k: m.rounds_us for k, m in measured.items()}, time.perf_counter() - t0


def round_factors(per_round: PerRound, keys: list[str]) -> np.ndarray:
    """Per round, the median over `keys` of 100·ln(the key's median in that round / its median
    over all rounds).

        >>> round_factors({"a": {0: [1.0], 1: [2.0]}, "b": {0: [2.0], 1: [4.0]}}, ["a", "b"]).round(1).tolist()
        [-34.7, 34.7]
    """
    logs = np.log([[np.median(per_round[k][r]) for r in sorted(per_round[k])] for k in keys])
    return 100.0 * np.median(logs - np.median(logs, axis=1, keepdims=True), axis=0)


def _pooled(per_round: PerRound, key: str, rounds: np.ndarray) -> list[float]:
    return [v for r in rounds for v in per_round[key][int(r)]]


def splits(lut: Lut, archs: list[Arch], ops: list[Op], per_round: PerRound, k: int, *, consecutive: bool,
           num: int = 200, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Validations of 2k of the measured rounds, in two halves of k: consecutive ones (rounds i…i+k−1
    against i+k…i+2k−1, every i) or `num` random draws. Per split the noise floor and the
    same-rounds bias; their summary."""
    n = len(next(iter(per_round.values())))
    if consecutive:
        picks = [np.arange(i, i + 2 * k) for i in range(n - 2 * k + 1)]
    else:
        rng = np.random.default_rng(seed)
        picks = [rng.choice(n, 2 * k, replace=False) for _ in range(num)]
    labels = [a.label for a in archs]
    noise, bias = [], []
    for pick in picks:
        h1 = [float(np.median(_pooled(per_round, lab, pick[:k]))) for lab in labels]
        h2 = [float(np.median(_pooled(per_round, lab, pick[k:]))) for lab in labels]
        noise.append(noise_floor_pct(h1, h2))
        both = {key: _pooled(per_round, key, pick) for key in per_round}
        same = same_rounds(lut, archs, ops, [both, {key: [] for key in both}])
        if same is not None:
            measured = [float(np.median(both[lab])) for lab in labels]
            bias.append(error_metrics(same["predicted_us"], measured)["mean_error_pct"])
    return {
        "k": k, "consecutive": consecutive, "splits": len(picks),
        "noise_median": float(np.median(noise)), "noise_p90": float(np.percentile(noise, 90)),
        "quiet_share": float(np.mean(np.array(noise) <= QUIET_NOISE_PCT)),
        "bias_mean": float(np.mean(bias)) if bias else None, "bias_sd": float(np.std(bias)) if bias else None,
    }  # fmt: skip


def _halves(text: str) -> list[int]:
    try:
        ks = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        ks = []
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError(f"expected rounds per half as a list like 3,6,12, got {text!r}")
    return ks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.process_draw", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("lut", help="a host LUT (version dir or id): its archs and ops, timed with its protocol")
    add_luts_root(p)
    p.add_argument("--rounds", type=int, default=24, help="rounds, each in a process of its own (default 24)")
    p.add_argument("--runs", type=int, default=10, help="timed runs per key per round (default 10)")
    p.add_argument("--archs", type=int, default=20, help="random archs besides the named ones (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the archs, the rounds' order and the splits")
    p.add_argument("--halves", type=_halves, default=[3, 6, 12], help="rounds per half to score (default 3,6,12)")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    add_verbose(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    ks = [k for k in args.halves if 2 * k <= args.rounds]
    if args.rounds < 2 or args.runs < 1 or not ks:
        p.error(f"need runs ≥ 1 and rounds ≥ 2 × the smallest of --halves ({args.halves[0]}); got "
                f"--rounds {args.rounds} --runs {args.runs}")  # fmt: skip
    try:
        lut = load_lut(args.lut, root=args.luts_root)
        archs, ops, per_round, elapsed = measure(lut, rounds=args.rounds, runs=args.runs, num_archs=args.archs,
                                                 seed=args.seed, progress=not args.json)  # fmt: skip
    except (ValueError, RuntimeError, OSError) as e:  # LutError, TargetError
        print(f"error: {e}", file=sys.stderr)
        return 2
    labels = [a.label for a in archs]
    nets = round_factors(per_round, labels)
    op_keys = [op.key for op in ops]
    opf = round_factors(per_round, op_keys)
    result = {
        "lut": lut.id, "rounds": args.rounds, "runs": args.runs, "num_archs": len(archs), "num_ops": len(op_keys),
        "seconds_per_round": elapsed / args.rounds,
        "round_factor": {"networks": nets.tolist(), "ops": opf.tolist(), "networks_sd": float(nets.std()),
                         "ops_sd": float(opf.std()), "correlation": float(np.corrcoef(nets, opf)[0, 1])},
        "halves": [splits(lut, archs, ops, per_round, k, consecutive=c, seed=args.seed) for k in ks for c in (True, False)],
    }  # fmt: skip
    if args.json:
        print(json.dumps(result))
        return 0
    rf = result["round_factor"]
    print(f"{lut.id}: {len(archs)} archs and {len(op_keys)} ops, {args.rounds} rounds of {args.runs} runs, each round "
          f"its own process ({result['seconds_per_round']:.1f} s per round)")  # fmt: skip
    print("round factor (per round, median over keys of 100·ln(round median / median over rounds)):")
    print(f"  networks  sd {rf['networks_sd']:.2f} %  range {nets.min():+.1f} … {nets.max():+.1f} %")
    print(f"  ops       sd {rf['ops_sd']:.2f} %  range {opf.min():+.1f} … {opf.max():+.1f} %"
          f"   correlation {rf['correlation']:.2f}")  # fmt: skip
    print(f"validations of 2k of these rounds (quiet: noise floor ≤ {QUIET_NOISE_PCT:g} %):")
    print(f"  {'k':>3}  {'halves':<12}{'splits':>7}{'noise median %':>16}{'p90 %':>8}{'quiet':>7}"
          f"{'same-rounds bias %':>20}{'sd':>7}")  # fmt: skip
    for h in result["halves"]:
        bias = f"{h['bias_mean']:+.2f}{h['bias_sd']:>7.2f}" if h["bias_mean"] is not None else f"{'-':>13}"
        print(f"  {h['k']:>3}  {'one by one' if h['consecutive'] else 'random':<12}{h['splits']:>7}"
              f"{h['noise_median']:>16.2f}{h['noise_p90']:>8.2f}{h['quiet_share']:>7.0%}{bias:>27}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
