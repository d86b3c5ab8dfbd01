"""Does the supernet rank archs as training from scratch does? Kendall τ over archs of similar
latency, each scored with the searched supernet's weights and trained from scratch.

    python -m bench.supernet_ranking --lut LUT [--luts-root luts] [--archs 10] [--tolerance 0.05]
        [--reference fbnet_b] [--train-epochs 10] [--seed 0] [--subset N] [--epochs E]
        [--warmup-epochs W] [--plot PNG] [--json]

One default FBNet search (`search.run`'s defaults, its proxy, the soft target at the reference
arch's latency on the LUT) trains the supernet. Then `--archs` distinct random archs within
±tolerance of that latency (`bench.search_quality.near_latency_archs`) are each

    supernet   evaluated with the supernet's weights, batch norm recalibrated on the weights
               split (`search.strategies.common.evaluate_path`), on the test split
    scratch    trained from scratch on the same proxy with `search.train`'s recipe for
               `--train-epochs` (seed `--seed`), test accuracy

and the two rankings are compared: Kendall τ and Spearman ρ (scipy), with the spread of the
from-scratch accuracies (max − min, std) beside them: where that spread is within the seed-to-seed
noise of one arch (~0.02 on the embedded digits), no ranking can agree with it by more than
chance, whatever the supernet does. `--plot` writes the scatter (docs/figures/supernet_ranking.png).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from scipy import stats

from bench.search_quality import near_latency_archs
from lut.store import load_lut
from search.crossdevice import reference_arch
from search.data import load_data
from search.run import latency_model
from search.space import proxy_space
from search.strategies import SearchConfig, SearchContext, get_strategy
from search.strategies.common import evaluate_path
from search.training import TrainConfig, train_arch

log = logging.getLogger(__name__)


def supernet_ranking(
    lut: Any,
    *,
    archs: int = 10,
    tolerance: float = 0.05,
    reference: str = "fbnet_b",
    train_epochs: int = 10,
    seed: int = 0,
    data_spec: str = "digits",
    subset: int | None = None,
    epochs: int | None = None,
    warmup_epochs: int | None = None,
) -> dict[str, Any]:
    """The search, the archs, both accuracies per arch and the rank correlations (see above)."""
    latency = latency_model(lut)
    proxy = proxy_space(latency.space)
    data = load_data(data_spec, resolution=proxy.resolution, subset=subset)
    target_us = latency.predict_us(reference_arch(reference, latency.space.name).blocks)
    cfg = SearchConfig(seed=seed, target_latency_ms=target_us / 1000, epochs=epochs, warmup_epochs=warmup_epochs)
    t0 = time.perf_counter()
    result = get_strategy(cfg.strategy).run(SearchContext(cfg, data, latency, proxy))
    search_s = time.perf_counter() - t0
    net, cfg = result.supernet, cfg.resolved()
    (xw, _), _ = data.split_train(cfg.w_fraction, cfg.seed)
    picked = near_latency_archs(latency, target_us, archs, tolerance, torch.Generator().manual_seed(seed))
    rows = []
    for blocks in picked:
        idx = torch.tensor([latency.blocks.index(b) for b in blocks])
        _, sup = evaluate_path(net, idx, data.x_test, data.y_test, xw, 256, recalib_batches=max(1, cfg.recalib_batches))
        t1 = time.perf_counter()
        scratch = train_arch(blocks, proxy, data, TrainConfig(epochs=train_epochs, seed=seed))["test_accuracy"]
        rows.append({"blocks": list(blocks), "predicted_latency_us": latency.predict_us(blocks),
                     "supernet_test_accuracy": sup, "scratch_test_accuracy": scratch,
                     "train_s": time.perf_counter() - t1})  # fmt: skip
        log.info("supernet %.3f  scratch %.3f  %s", sup, scratch, " ".join(blocks))
    sup_acc = [r["supernet_test_accuracy"] for r in rows]
    scr_acc = [r["scratch_test_accuracy"] for r in rows]
    return {
        "lut": latency.lut_info.get("id"),
        "proxy_space": proxy.name,
        "data": data.name,
        "reference": reference,
        "target_us": target_us,
        "tolerance": tolerance,
        "train_epochs": train_epochs,
        "seed": seed,
        "search_s": search_s,
        "supernet": result.info.get("supernet"),
        "found_blocks": list(result.blocks),
        "found_test_accuracy": result.test_accuracy,
        "archs": rows,
        "kendall_tau": float(stats.kendalltau(sup_acc, scr_acc).statistic),
        "spearman_rho": float(stats.spearmanr(sup_acc, scr_acc).statistic),
        "scratch_spread": max(scr_acc) - min(scr_acc),
        "scratch_std": statistics.pstdev(scr_acc),
        "supernet_spread": max(sup_acc) - min(sup_acc),
    }


def plot(report: dict[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["scratch_test_accuracy"] for r in report["archs"]]
    y = [r["supernet_test_accuracy"] for r in report["archs"]]
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.scatter(x, y)
    ax.set_xlabel(f"test accuracy, trained from scratch ({report['train_epochs']} epochs)")
    ax.set_ylabel("test accuracy, supernet weights (BN recalibrated)")
    ax.set_title(f"{len(x)} archs within ±{report['tolerance']:.0%} of {report['reference']}'s latency\n"
                 f"Kendall τ {report['kendall_tau']:.2f}, scratch spread {report['scratch_spread']:.3f}", fontsize=9)  # fmt: skip
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.supernet_ranking", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--lut", required=True)
    p.add_argument("--luts-root", default="luts")
    p.add_argument("--archs", type=int, default=10)
    p.add_argument("--tolerance", type=float, default=0.05)
    p.add_argument("--reference", default="fbnet_b")
    p.add_argument("--train-epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="digits")
    p.add_argument("--subset", type=int)
    p.add_argument("--epochs", type=int, help="search epochs (default: the strategy's)")
    p.add_argument("--warmup-epochs", type=int, help="search warm-up epochs (default: the strategy's)")
    p.add_argument("--plot", help="write the scatter plot here")
    p.add_argument("--torch-threads", type=int)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    try:
        report = supernet_ranking(load_lut(args.lut, root=args.luts_root), archs=args.archs, tolerance=args.tolerance,
                                  reference=args.reference, train_epochs=args.train_epochs, seed=args.seed,
                                  data_spec=args.data, subset=args.subset,
                                  epochs=args.epochs, warmup_epochs=args.warmup_epochs)  # fmt: skip
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{'supernet':>9s} {'scratch':>8s} {'pred ms':>8s}  blocks")
    for r in report["archs"]:
        print(f"{r['supernet_test_accuracy']:9.3f} {r['scratch_test_accuracy']:8.3f} "
              f"{r['predicted_latency_us'] / 1000:8.2f}  {' '.join(r['blocks'])}")  # fmt: skip
    print(f"Kendall τ {report['kendall_tau']:.3f}, Spearman ρ {report['spearman_rho']:.3f} over {len(report['archs'])} "
          f"archs; from-scratch spread {report['scratch_spread']:.3f} (std {report['scratch_std']:.3f}), "
          f"supernet spread {report['supernet_spread']:.3f}")  # fmt: skip
    if args.plot:
        print(f"wrote {plot(report, args.plot)}")
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
