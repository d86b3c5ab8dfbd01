"""FBNet's last step: sample archs from the final θ, train each, keep the best by validation.

    rows = final_selection(theta, k, epochs, latency, proxy, data, cfg)   # one dict per candidate

`search.run --final-samples K --final-epochs E` calls it after the search and writes the rows as
candidates.csv; the chosen one becomes arch.json (docs/presets.md).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from search.data import Dataset
from search.distributed import Dist
from search.latency import LatencyModel
from search.space import Space
from search.strategies import SearchConfig
from search.strategies.common import sample_archs
from search.training import TrainConfig, evaluate, train_arch

__all__ = ["final_selection"]

log = logging.getLogger(__name__)


def final_selection(
    theta: torch.Tensor,
    k: int,
    epochs: int,
    latency: LatencyModel,
    proxy: Space,
    data: Dataset,
    cfg: SearchConfig,
    *,
    device: torch.device = torch.device("cpu"),
    dist: Dist | None = None,
) -> list[dict[str, Any]]:
    """FBNet's last step: k distinct archs drawn from softmax(θ) (under the hard constraint, if
    one is set), each trained from scratch for `epochs` on the weights split with `search.train`'s
    recipe (same seed for all) and scored on the validation split (the architecture split) and the
    test split. Returns one row per candidate in draw order; `chosen` marks the best validation
    accuracy (the first of equals). Fewer than k come back when softmax(θ) has fewer distinct archs
    within 50·k draws (a sharp θ), at least one."""
    gen = torch.Generator().manual_seed(cfg.seed)
    draws = sample_archs(theta, 50 * k, latency, gen, cfg.max_latency_us)
    distinct: list[tuple[int, ...]] = []
    for d in draws.tolist():
        if tuple(d) not in distinct:
            distinct.append(tuple(d))
        if len(distinct) == k:
            break
    if not distinct:
        raise ValueError("no arch drawn from the final θ meets the latency budget")
    (xw, yw), (xa, ya) = data.split_train(cfg.w_fraction, cfg.seed)
    weights_split = Dataset(data.name, xw, yw, data.x_test, data.y_test, data.classes)
    logp = torch.log_softmax(theta.detach().double().cpu(), dim=-1)
    rows = []
    for i, idx in enumerate(distinct):
        blocks = tuple(latency.blocks[j] for j in idx)
        trained = train_arch(blocks, proxy, weights_split, TrainConfig(epochs=epochs, seed=cfg.seed), device=device,
                             dist=dist)  # fmt: skip
        _, val_acc = evaluate(trained["model"], xa.to(device), ya.to(device), dist=dist or Dist(device=device))
        rows.append({"rank": i, "blocks": list(blocks), "predicted_latency_us": latency.predict_us(blocks),
                     "log_prob": float(logp[torch.arange(len(idx)), torch.tensor(idx)].sum()),
                     "val_accuracy": val_acc, "test_accuracy": trained["test_accuracy"]})  # fmt: skip
        log.info("candidate %d/%d: %.0f µs, validation %.4f, test %.4f", i + 1, len(distinct),
                 rows[-1]["predicted_latency_us"], val_acc, trained["test_accuracy"])  # fmt: skip
    best = max(range(len(rows)), key=lambda j: (rows[j]["val_accuracy"], -j))
    for j, row in enumerate(rows):
        row["chosen"] = j == best
    return rows
