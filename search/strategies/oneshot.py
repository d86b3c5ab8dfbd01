"""The fitness proxies of evolution and random search: the accuracy an architecture reaches.

`fitness="train"` (the default): each architecture evaluated is trained from scratch for
`fitness_epochs` epochs on the weights split (with `search.train`'s recipe, `search.recipe`; the
same initialisation seed and data order for every arch) and scored on the whole architecture split — a
low-fidelity version of what `search.train` does to the final arch, as evolution (Real et al.
2019) and random search (Li & Talwalkar 2019) evaluate archs. Each costs a few epochs of one small
network, so `cycles` is small by default.

`fitness="oneshot"`: single-path one-shot (SPOS, Guo et al. 2020): a weight-sharing supernet
trained for `warmup_epochs + epochs` epochs with one uniformly sampled path per step; an arch's
fitness is its accuracy with the shared weights on the first `eval_batches` batches of the
architecture split, after its batch-norm statistics were re-estimated on `recalib_batches`
batches of the weights split. It needs many more steps than this budget has: on the embedded
digits (FBNet proxy, 22 layers) the supernet stays at chance (train accuracy 0.09–0.12 after 35
epochs, every sampled path 0.05–0.16), while a single fixed path trains to 0.9 in 8 epochs and
three paths sharing weights to 0.53 — the shared weights cannot serve 9^22 paths in a few hundred
steps. It is kept for larger budgets and data.

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
from search.recipe import init_weights, make_optimizer, make_schedule
from search.supernet import Supernet
from search.training import TrainConfig, build_proxy_model, evaluate

from .base import SearchContext
from .common import (
    accuracy,
    average_gradients_before_step,
    bar,
    evaluate_path,
    loss_form,
    make_w_optimizer,
    path_accuracy,
    reference_latency_us,
    steps_per_epoch,
    train_batches,
)
from .objective import target_factor

__all__ = ["FITNESS", "OneShot", "ShortTraining", "fitness_proxy", "sample_within_budget"]

FITNESS = ("train", "oneshot")


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


def fitness_proxy(ctx: SearchContext, generator: torch.Generator) -> "OneShot | ShortTraining":
    """The proxy `cfg.fitness` names, ready to score archs (the one-shot supernet trained)."""
    if ctx.cfg.fitness not in FITNESS:
        raise ValueError(f"fitness must be one of {', '.join(FITNESS)}, got {ctx.cfg.fitness!r}")
    proxy = OneShot(ctx, generator) if ctx.cfg.fitness == "oneshot" else ShortTraining(ctx, generator)
    proxy.train()
    return proxy


class _Fitness:
    """The soft latency term on top of an accuracy, shared by both proxies."""

    def __init__(self, ctx: SearchContext, generator: torch.Generator) -> None:
        self.ctx = ctx
        self.gen = generator
        (self.xw, self.yw), (self.xa, self.ya) = ctx.data.split_train(ctx.cfg.w_fraction, ctx.cfg.seed)
        self.form = loss_form(ctx.cfg, "none")
        self.ref_us = reference_latency_us(ctx)
        self.target_us = ctx.cfg.target_latency_us

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


class ShortTraining(_Fitness):
    """Fitness: the arch trained from scratch for `fitness_epochs` on the weights split, scored on
    the architecture split; the test accuracy of that same model is kept for the final arch."""

    def __init__(self, ctx: SearchContext, generator: torch.Generator) -> None:
        super().__init__(ctx, generator)
        if ctx.cfg.fitness_epochs < 1:
            raise ValueError(f"fitness_epochs must be ≥ 1, got {ctx.cfg.fitness_epochs}")
        self.space = ctx.space
        self.accuracy_of = f"the arch trained from scratch {ctx.cfg.fitness_epochs} epochs on the weights split"
        self.scores: dict[tuple[int, ...], tuple[float, float]] = {}  # arch → (val, test) accuracy
        # checkpoint and resume: the scores are the whole state of the search. Every arch is trained
        # with the same seeds, and the strategy draws its archs from its own generator, so a resumed
        # search replays its draws from the start and takes the archs scored before from here.
        if ctx.resume is not None:
            self.scores = {tuple(k): (float(v), float(t)) for k, v, t in ctx.resume["scores"]}

    def train(self) -> None:
        return None  # nothing shared to train

    def _score(self, idx: torch.Tensor) -> tuple[float, float]:
        key = tuple(int(i) for i in idx)
        if key not in self.scores:
            cfg, dist = self.ctx.cfg, self.ctx.dist
            blocks = tuple(self.ctx.latency.blocks[i] for i in key)
            recipe = TrainConfig(epochs=cfg.fitness_epochs, batch_size=cfg.batch_size, seed=cfg.seed)
            torch.manual_seed(cfg.seed)  # every arch: the same initialisation seed and data order
            model = build_proxy_model(blocks, self.space, self.ctx.data.num_classes)
            model = init_weights(model, init=recipe.init, zero_init_last=recipe.zero_init_last).to(self.ctx.device)
            per_epoch = steps_per_epoch(len(self.yw), cfg.batch_size, dist)
            opt = make_optimizer(model, recipe)  # search.train's recipe, as the final arch is trained
            sched = make_schedule(opt, recipe, cfg.fitness_epochs * per_epoch, per_epoch)
            average_gradients_before_step(opt, dist)
            order = torch.Generator().manual_seed(cfg.seed)
            model.train()
            for _ in range(cfg.fitness_epochs):
                for x, y in train_batches(self.xw, self.yw, cfg.batch_size, order, dist):
                    ce = F.cross_entropy(model(x), y, label_smoothing=recipe.label_smoothing)
                    opt.zero_grad(set_to_none=True)
                    ce.backward()
                    opt.step()
                    sched.step()
            model.eval()
            self.scores[key] = (evaluate(model, self.xa, self.ya)[1],
                                evaluate(model, self.ctx.data.x_test, self.ctx.data.y_test)[1])  # fmt: skip
            if self.ctx.on_checkpoint is not None:
                self.ctx.on_checkpoint({"epoch": len(self.scores), "replay": True,
                                        "scores": [[list(k), v, t] for k, (v, t) in self.scores.items()]})  # fmt: skip
        return self.scores[key]

    def accuracy(self, idx: torch.Tensor) -> float:
        return self._score(idx)[0]

    def final_accuracy(self, idx: torch.Tensor) -> tuple[float, float]:
        """(validation, test) accuracy of the found arch after its `fitness_epochs` of training."""
        return self._score(idx)


class OneShot(_Fitness):
    """A uniformly trained single-path supernet and the fitness of archs under it."""

    def __init__(self, ctx: SearchContext, generator: torch.Generator) -> None:
        super().__init__(ctx, generator)
        self.net = Supernet(ctx.space, ctx.data.num_classes).to(ctx.device)
        self.accuracy_of = "supernet weights (BN recalibrated)"

    def train(self) -> None:
        cfg, net = self.ctx.cfg, self.net
        total = cfg.warmup_epochs + cfg.epochs
        per_epoch = steps_per_epoch(len(self.yw), cfg.batch_size, self.ctx.dist)
        opt, sched = make_w_optimizer(net, cfg, total * per_epoch, per_epoch)
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

    def final_accuracy(self, idx: torch.Tensor) -> tuple[float, float]:
        """(validation, test) accuracy of the found arch: the whole θ split and the test split."""
        return path_accuracy(self.ctx, self.net, idx, self.xw, (self.xa, self.ya))
