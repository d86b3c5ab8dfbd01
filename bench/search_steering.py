"""Latency steering side by side: per strategy, the soft latency knob → the found arch.

    python -m bench.search_steering --lut LUT [--luts-root luts] [--strategies fbnet,proxyless,...]
        [--betas 0,0.6,5,30] [--lambdas 0,1,10] [--target-fracs 0.25,0.5,0.75] [--epochs N]
        [--subset N] [--train-epochs 0] [--seed 0] [--out runs/steering] [--json]

For each strategy, one search per value of its knob — β of FBNet's CE·α·log(LAT)^β (fbnet), λ of
the additive CE + λ·LAT/ref (every other strategy), and a soft target T (`--target-latency-ms`,
every strategy) — with everything else at the defaults of `search.run`, on one LUT and one seed.
Targets are placed a fraction of the way from the LUT's fastest arch to the expected latency of
a uniform architecture distribution, so they fit any LUT. Each row: the knob, the found arch's
predicted latency (and its error against T), the final mean θ entropy and stable epochs
(differentiable strategies), its accuracy by split (supernet weights, BN recalibrated; trained
from scratch with --train-epochs), the search time. Below each sweep: whether the predicted
latency moved monotonically with the knob, and whether each target was hit within ±10 %.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from hwnas.flags import add_luts_root, add_out, add_verbose, comma_list, run_main
from lut.store import load_lut
from search.run import latency_model, run_search
from search.strategies import SearchConfig
from search.training import proxy_space_for

DIFFERENTIABLE = ("fbnet", "proxyless", "darts")


def sweeps(strategy: str, betas: list[float], lambdas: list[float], targets_ms: list[float]) -> list[tuple[str, list]]:
    """(knob, values) pairs for one strategy: β for fbnet, λ for the others, T for all."""
    knob = ("beta", betas) if strategy == "fbnet" else ("lambda", lambdas)
    return [knob, ("target_ms", targets_ms)]


def config_for(base: SearchConfig, strategy: str, knob: str, value: float) -> SearchConfig:
    if knob == "beta":
        return replace(base, strategy=strategy, latency_loss="mul", beta=value)
    if knob == "lambda":
        return replace(base, strategy=strategy, latency_loss="add", lambda_lat=value)
    return replace(base, strategy=strategy, target_latency_ms=value)


def is_monotone(knob: str, values: list[float], lat_ms: list[float]) -> bool:
    """β and λ: larger → never slower; T: larger → never faster."""
    pairs = sorted(zip(values, lat_ms))
    ordered = [lat for _, lat in pairs]
    if knob == "target_ms":
        return all(a <= b for a, b in zip(ordered, ordered[1:]))
    return all(a >= b for a, b in zip(ordered, ordered[1:]))


def run(args: argparse.Namespace) -> dict[str, Any]:
    latency = latency_model(load_lut(args.lut, root=args.luts_root))
    proxy = proxy_space_for(latency.space, 32, 0.25)
    lo, mid = latency.min_max_us()[0], latency.uniform_expected_us()
    targets_ms = [round(latency.span_us(f) / 1000, 3) for f in args.target_fracs]
    base = SearchConfig(seed=args.seed)
    if args.epochs is not None:
        base = replace(base, epochs=args.epochs)
    out = Path(args.out or tempfile.mkdtemp(prefix="steering-"))
    rows: list[dict[str, Any]] = []
    verdicts: list[dict[str, Any]] = []
    for strategy in args.strategies:
        for knob, values in sweeps(strategy, args.betas, args.lambdas, targets_ms):
            lat_ms = []
            for v in values:
                cfg = config_for(base, strategy, knob, v)
                s = run_search(cfg, latency, proxy, "digits", out=out / f"{strategy}_{knob}_{v}",
                               subset=args.subset, train_epochs=args.train_epochs)  # fmt: skip
                ms = s["predicted_latency_us"] / 1000
                lat_ms.append(ms)
                rows.append({"strategy": strategy, "knob": knob, "value": v, "predicted_ms": ms,
                             "target_error_pct": 100 * (ms / v - 1) if knob == "target_ms" else None,
                             "theta_entropy": s.get("theta_entropy"), "argmax_stable_epochs": s.get("argmax_stable_epochs"),
                             "val_accuracy": s["arch_split_accuracy"], "test_accuracy": s["test_accuracy"],
                             "trained_test_accuracy": s.get("trained_test_accuracy"), "search_s": s["search_s"]})  # fmt: skip
                print_row(rows[-1])
            verdict = {"strategy": strategy, "knob": knob, "monotone": is_monotone(knob, values, lat_ms)}
            if knob == "target_ms":
                verdict["within_10pct"] = [abs(ms / t - 1) <= 0.10 for ms, t in zip(lat_ms, values)]
            verdicts.append(verdict)
            print(f"  → {strategy} {knob}: monotone {'yes' if verdict['monotone'] else 'NO'}"
                  + (f", within ±10 % of T: {verdict['within_10pct']}" if "within_10pct" in verdict else ""))  # fmt: skip
    return {"lut": latency.lut_info.get("id"), "fastest_ms": lo / 1000, "uniform_expected_ms": mid / 1000,
            "rows": rows, "verdicts": verdicts}  # fmt: skip


HEADER = (f"{'strategy':10s} {'knob':9s} {'value':>8s} {'pred ms':>8s} {'vs T':>7s} {'H(θ)':>6s} {'stable':>6s} "
          f"{'val acc':>7s} {'test acc':>8s} {'trained':>7s} {'search s':>8s}")  # fmt: skip


def print_row(r: dict[str, Any]) -> None:
    def f(v: Any, fmt: str) -> str:
        return "—" if v is None else format(v, fmt)

    print(f"{r['strategy']:10s} {r['knob']:9s} {r['value']:8g} {r['predicted_ms']:8.3f} "
          f"{f(r['target_error_pct'], '+6.1f') + ('%' if r['target_error_pct'] is not None else ''):>7s} "
          f"{f(r['theta_entropy'], '.3f'):>6s} {f(r['argmax_stable_epochs'], 'd'):>6s} {r['val_accuracy']:7.3f} "
          f"{r['test_accuracy']:8.3f} {f(r['trained_test_accuracy'], '.3f'):>7s} {r['search_s']:8.0f}", flush=True)  # fmt: skip


_floats = comma_list(float)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.search_steering", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--lut", required=True, help="LUT path or id")
    add_luts_root(p)
    p.add_argument("--strategies", type=comma_list(), default=["fbnet", "proxyless", "darts", "evolution", "random"],
                   help="strategies, comma-separated (default: all five)")
    p.add_argument("--betas", type=_floats, default=[0.0, 0.6, 5.0, 30.0], help="FBNet β sweep, comma-separated")
    p.add_argument("--lambdas", type=_floats, default=[0.0, 1.0, 10.0], help="latency weight λ sweep, comma-separated")
    p.add_argument("--target-fracs", type=_floats, default=[0.25, 0.5, 0.75],
                   help="targets: fractions of the way from the fastest arch to the uniform expected latency")
    p.add_argument("--epochs", type=int, help="search epochs (default: search.run's)")
    p.add_argument("--subset", type=int, help="train images (default: all)")
    p.add_argument("--train-epochs", type=int, default=0, help="also train each found arch from scratch")
    p.add_argument("--seed", type=int, default=0, help="seed of every search (default 0)")
    add_out(p, help="keep the runs here (default: a temporary folder)")
    p.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--json", action="store_true", help="last line: the results as one JSON object")
    add_verbose(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    torch.set_num_threads(args.torch_threads)
    t0 = time.perf_counter()
    print(HEADER)
    result = run(args)
    print(f"LUT {result['lut']}: fastest arch {result['fastest_ms']:.3f} ms, uniform expected "
          f"{result['uniform_expected_ms']:.3f} ms; {time.perf_counter() - t0:.0f} s in all")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
