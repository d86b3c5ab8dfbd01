"""The shared proxy of evolution and random search: a weight-sharing one-shot supernet.

Fitness proxy (our choice, as the issue allows): the supernet is trained for
`warmup_epochs + epochs` epochs on the weights split with one uniformly sampled path per step
(single-path one-shot training: memory and time of one network per step). An architecture's
fitness is then its accuracy with the shared weights on the first `eval_batches` batches of the
architecture split, after its batch-norm statistics were re-estimated on `recalib_batches` batches
of the weights split (SPOS's recalibration; the supernet's own statistics mix every path). It
costs a few forward passes per architecture instead of a training run, so evolution and random
search see the same budget: the same supernet and `cycles` evaluated architectures each.

Latency: the hard constraint rejects architectures over `max_latency_ms` before they are
evaluated (vectorised LUT prediction). The soft constraint, if asked for, scales the fitness:
"add": acc − λ · LAT / ref; "mul": acc · (LAT / ref)^(−β) (MnasNet's reward form); "target":
acc · exp(−w · |log(LAT / T)|) (`objective.target_factor`); default none. With a target, the
archs that random search draws and evolution starts from come from the layer-wise distribution
tilted towards T (`LatencyModel.sample_near`) instead of the uniform one, so that they cover T.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from search.latency import LatencyModel
from search.supernet import Supernet

from .base import SearchContext
from .common import (
    accuracy,
    bar,
    evaluate_path,
    loss_form,
    make_w_optimizer,
    path_accuracy,
    reference_latency_us,
    steps_per_epoch,
    train_batches,
    average_gradients_before_step,
)
from .objective import target_factor

__all__ = ["OneShot", "sample_within_budget"]


def sample_within_budget(
    latency: LatencyModel,
    n: int,
    budget_us: float | None,
    generator: torch.Generator,
    target_us: float | None = None,
) -> torch.Tensor:
    """n random archs that meet the budget (rejection with the vectorised predictor): uniform,
    or with a target drawn from the distribution tilted towards it (`LatencyModel.sample_near`)."""
    kept: list[torch.Tensor] = []
    m = max(256, 4 * n)
    for _ in range(1000):
        if target_us is None:
            draw = latency.sample_uniform(m, generator)
        else:
            draw = latency.sample_near(m, target_us, generator)
        if budget_us is not None:
            draw = draw[latency.predict_batch_us(draw) <= budget_us]
        kept.extend(draw)
        if len(kept) >= n:
            return torch.stack(kept[:n])
    raise ValueError(
        f"fewer than {n} of {1000 * m} random archs meet {budget_us / 1000:.3f} ms: the budget is "
        "too tight for random sampling; raise --max-latency-ms"
    )


class OneShot:
    """A uniformly trained single-path supernet and the fitness of archs under it."""

    def __init__(self, ctx: SearchContext, generator: torch.Generator) -> None:
        self.ctx = ctx
        self.gen = generator
        self.net = Supernet(ctx.space, ctx.data.num_classes).to(ctx.device)
        (self.xw, self.yw), (self.xa, self.ya) = ctx.data.split_train(ctx.cfg.w_fraction, ctx.cfg.seed)
        self.form = loss_form(ctx.cfg, "none")
        self.ref_us = reference_latency_us(ctx)
        self.target_us = ctx.cfg.target_latency_us

    def train(self) -> None:
        cfg, net = self.ctx.cfg, self.net
        total = cfg.warmup_epochs + cfg.epochs
        opt, sched = make_w_optimizer(net, cfg, total * steps_per_epoch(len(self.yw), cfg.batch_size, self.ctx.dist))
        average_gradients_before_step(opt, self.ctx.dist)  # the sampled path is the same on every rank
        for epoch in bar(range(total), self.ctx, "one-shot supernet", total):
            t0 = time.perf_counter()
            net.train()
            loss_sum, acc_sum, n = 0.0, 0.0, 0
            for x, y in train_batches(self.xw, self.yw, cfg.batch_size, self.gen, self.ctx.dist):
                idx = self.ctx.latency.sample_uniform(1, self.gen)[0]
                out = net.forward_path(x, idx)
                ce = F.cross_entropy(out, y)
                opt.zero_grad(set_to_none=True)
                ce.backward()
                opt.step()
                sched.step()
                loss_sum, acc_sum, n = loss_sum + ce.item(), acc_sum + accuracy(out, y).item(), n + 1
            self.ctx.on_epoch({"epoch": epoch, "phase": "supernet", "train_loss": loss_sum / n,
                               "train_acc": acc_sum / n, "epoch_s": time.perf_counter() - t0})  # fmt: skip

    def accuracy(self, idx: torch.Tensor) -> float:
        """Shared-weight accuracy of one arch on the first `eval_batches` batches of the θ split,
        its BN statistics recalibrated on the weights split."""
        cfg = self.ctx.cfg
        return evaluate_path(self.net, idx, self.xa, self.ya, self.xw, cfg.batch_size,
                             recalib_batches=cfg.recalib_batches, max_batches=cfg.eval_batches)[1]  # fmt: skip

    def fitness(self, idx: torch.Tensor, acc: float) -> float:
        """Accuracy, optionally with the soft latency term."""
        if self.form == "none":
            return acc
        lat_us = self.ctx.latency.predict_batch_us(idx[None])[0]
        if self.form == "add":
            return acc - self.ctx.cfg.lambda_lat * float(lat_us) / self.ref_us
        if self.form == "target":
            return acc * float(target_factor(lat_us, self.ctx.cfg))
        return acc * (float(lat_us) / self.ref_us) ** (-self.ctx.cfg.beta)

    def final_accuracy(self, idx: torch.Tensor) -> tuple[float, float]:
        """(validation, test) accuracy of the found arch: the whole θ split and the test split."""
        return path_accuracy(self.ctx, self.net, idx, self.xw, (self.xa, self.ya))
