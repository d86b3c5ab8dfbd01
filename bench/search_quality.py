"""Does the search find better archs than chance? FBNet's arch against random archs of the same
predicted latency, all trained from scratch with the same budget.

    python -m bench.search_quality --lut LUT [--luts-root luts] [--seeds 0,1,2] [--k 5]
        [--train-epochs 10] [--tolerance 0.05] [--cifar10 DIR] [--subset N] [--json]

Per seed: `search.run`'s default FBNet search (that seed) finds arch A with predicted latency
L_A on the LUT; K random archs of the same LUT within ±tolerance of L_A are drawn (layer-wise
from the distribution tilted to L_A, `LatencyModel.sample_near`, then filtered to the band). A
and the K archs are trained from scratch for the same epochs on the weights split of the train
data (`search.training.train_arch`, same seed), and evaluated on the validation split (the rest of
the train data) and the test split. "best of K" is the random arch with the highest validation
accuracy (what a random search would keep); the table shows its test accuracy beside A's and
beside the mean of the K. The last lines: mean ± std over seeds, and A's test accuracy minus
the best of K's, per seed. With `--cifar10 DIR` the same runs on CIFAR-10 as well.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from hwnas.flags import add_luts_root, add_out, add_verbose, comma_list, run_main
from lut.store import load_lut
from search.data import Dataset, load_data
from search.latency import LatencyModel
from search.run import latency_model, run_search
from search.strategies import SearchConfig
from search.training import TrainConfig, evaluate, proxy_space_for, train_arch


def near_latency_archs(
    latency: LatencyModel, target_us: float, k: int, tolerance: float, generator: torch.Generator
) -> list[tuple[str, ...]]:
    """K distinct random archs whose predicted latency is within ±tolerance of `target_us`."""
    kept: dict[tuple[int, ...], None] = {}
    for _ in range(200):
        draw = latency.sample_near(256, target_us, generator)
        lat = latency.predict_batch_us(draw)
        for row in draw[(lat - target_us).abs() <= tolerance * target_us]:
            kept[tuple(row.tolist())] = None
        if len(kept) >= k:
            break
    if len(kept) < k:
        raise ValueError(f"only {len(kept)} random archs within ±{tolerance:.0%} of {target_us / 1000:.3f} ms")
    return [tuple(latency.blocks[i] for i in row) for row in list(kept)[:k]]


def train_and_score(blocks: tuple[str, ...], proxy, data: Dataset, val: tuple[torch.Tensor, torch.Tensor],
                    cfg: TrainConfig) -> dict[str, float]:  # fmt: skip
    """Train on `data`'s train part (the weights split), score on the validation and test splits."""
    result = train_arch(blocks, proxy, data, cfg)
    _, val_acc = evaluate(result["model"], *val)
    return {"val_accuracy": val_acc, "test_accuracy": result["test_accuracy"]}


def one_seed(latency: LatencyModel, data_spec: str, seed: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    proxy = proxy_space_for(latency.space, 32, 0.25)
    cfg_search = SearchConfig(seed=seed) if args.epochs is None else SearchConfig(seed=seed, epochs=args.epochs)
    search = run_search(cfg_search, latency, proxy, data_spec, out=out / f"fbnet_seed{seed}",
                        subset=args.subset)  # fmt: skip
    data = load_data(data_spec, resolution=proxy.resolution, subset=args.subset)
    (xw, yw), val = data.split_train(SearchConfig().w_fraction, seed)
    weights_only = replace(data, x_train=xw, y_train=yw)
    cfg = TrainConfig(epochs=args.train_epochs, seed=seed)
    found = train_and_score(tuple(search["blocks"]), proxy, weights_only, val, cfg)
    gen = torch.Generator().manual_seed(seed)
    randoms = []
    for blocks in near_latency_archs(latency, search["predicted_latency_us"], args.k, args.tolerance, gen):
        randoms.append({"blocks": blocks, "predicted_latency_us": latency.predict_us(blocks),
                        **train_and_score(blocks, proxy, weights_only, val, cfg)})  # fmt: skip
    best = max(randoms, key=lambda r: r["val_accuracy"])
    return {
        "seed": seed,
        "fbnet_ms": search["predicted_latency_us"] / 1000,
        "fbnet_theta_entropy": search.get("theta_entropy"),
        "fbnet_val": found["val_accuracy"],
        "fbnet_test": found["test_accuracy"],
        "random_ms": [r["predicted_latency_us"] / 1000 for r in randoms],
        "best_random_val": best["val_accuracy"],
        "best_random_test": best["test_accuracy"],
        "mean_random_test": statistics.fmean(r["test_accuracy"] for r in randoms),
        "randoms": [{k: r[k] for k in ("val_accuracy", "test_accuracy", "predicted_latency_us")} for r in randoms],
    }


def _mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def report(data_spec: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{data_spec}: FBNet arch vs the best of K random archs at equal predicted latency (test accuracy)")
    print(f"{'seed':>4s} {'fbnet ms':>8s} {'random ms':>15s} {'H(θ)':>6s} {'fbnet':>7s} {'best of K':>9s} "
          f"{'mean K':>7s} {'fbnet − best':>12s}")  # fmt: skip
    for r in rows:
        print(f"{r['seed']:4d} {r['fbnet_ms']:8.3f} {min(r['random_ms']):7.3f}–{max(r['random_ms']):<7.3f} "
              f"{r['fbnet_theta_entropy'] or float('nan'):6.3f} {r['fbnet_test']:7.3f} {r['best_random_test']:9.3f} "
              f"{r['mean_random_test']:7.3f} {r['fbnet_test'] - r['best_random_test']:+12.3f}")  # fmt: skip
    print(f"mean ± std over {len(rows)} seeds: fbnet {_mean_std([r['fbnet_test'] for r in rows])}, "
          f"best of K {_mean_std([r['best_random_test'] for r in rows])}, "
          f"mean of K {_mean_std([r['mean_random_test'] for r in rows])}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.search_quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--lut", required=True, help="LUT path or id")
    add_luts_root(p)
    p.add_argument("--seeds", type=comma_list(int), default=[0, 1, 2], help="seeds, comma-separated (default 0,1,2)")
    p.add_argument("--k", type=int, default=5, help="random archs per seed")
    p.add_argument("--tolerance", type=float, default=0.05, help="latency band of the random archs (±)")
    p.add_argument("--train-epochs", type=int, default=10, help="from-scratch training budget of every arch")
    p.add_argument("--subset", type=int, help="train images (default: all)")
    p.add_argument("--epochs", type=int, help="search epochs (default: search.run's)")
    p.add_argument("--cifar10", help="also on CIFAR-10 from this folder (python-pickle layout)")
    add_out(p, help="keep the search runs here (default: a temporary folder)")
    p.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--json", action="store_true", help="last line: the results as one JSON object")
    add_verbose(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    torch.set_num_threads(args.torch_threads)
    latency = latency_model(load_lut(args.lut, root=args.luts_root))
    out = Path(args.out or tempfile.mkdtemp(prefix="quality-"))
    t0 = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {}
    for data_spec in ["digits"] + ([f"cifar10:{args.cifar10}"] if args.cifar10 else []):
        rows = [one_seed(latency, data_spec, seed, args, out / data_spec.split(":")[0]) for seed in args.seeds]
        results[data_spec] = rows
        report(data_spec, rows)
    print(f"LUT {latency.lut_info.get('id')}; K = {args.k}, ±{args.tolerance:.0%}, {args.train_epochs} training "
          f"epochs each; {time.perf_counter() - t0:.0f} s in all")  # fmt: skip
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
