"""Pieces the strategies share: losses, optimizers, evaluation, sampling, the hard constraint."""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from search.data import batches
from search.latency import LatencyModel
from search.supernet import Supernet, batch_stat_bn

from .base import SearchConfig, SearchContext, SearchResult

__all__ = [
    "seed_everything",
    "latency_loss",
    "loss_form",
    "reference_latency_us",
    "make_w_optimizer",
    "make_theta_optimizer",
    "evaluate_path",
    "mean_entropy",
    "sample_archs",
    "constrained_argmax",
    "check_budget",
    "finish",
    "LATENCY_LOSSES",
]

log = logging.getLogger(__name__)

LATENCY_LOSSES = ("mul", "add", "none")


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch, numpy and random; return a generator for data order."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    return torch.Generator().manual_seed(seed)


def loss_form(cfg: SearchConfig, default: str) -> str:
    """The latency-loss form of a run: the configured one, else the strategy's default."""
    form = cfg.latency_loss or default
    if form not in LATENCY_LOSSES:
        raise ValueError(f"latency_loss must be one of {LATENCY_LOSSES}, got {form!r}")
    return form


def latency_loss(
    ce: torch.Tensor, lat_us: torch.Tensor, cfg: SearchConfig, ref_us: float, form: str
) -> torch.Tensor:
    """Combine cross-entropy with the latency of the (relaxed) architecture.

    mul (FBNet eq. 2): CE · α · log(LAT)^β with LAT in µs, clamped below at e µs so that
    log(LAT) ≥ 1 and the fractional power stays real. add: CE + λ · LAT / ref.
    """
    if form == "mul":
        return ce * cfg.alpha * torch.log(lat_us.clamp_min(math.e)) ** cfg.beta
    if form == "add":
        return ce + cfg.lambda_lat * lat_us / ref_us
    return ce


def reference_latency_us(ctx: SearchContext) -> float:
    """ref of the additive form: --ref-latency-ms, else the budget, else E[LAT] at uniform θ."""
    if ctx.cfg.ref_latency_ms is not None:
        return ctx.cfg.ref_latency_ms * 1000.0
    if ctx.cfg.max_latency_us is not None:
        return ctx.cfg.max_latency_us
    uniform = ctx.latency.allowed.double() / ctx.latency.allowed.sum(dim=1, keepdim=True)
    return float(ctx.latency.expected_us(uniform))


@dataclass
class Relaxed:
    """What a differentiable search (fbnet, proxyless, darts) starts from, built in one fixed order
    so that a seed reproduces a run: data-order generator, loss form, supernet, architecture
    logits (zeros: uniform start) and their mask, the two training splits and both optimizers."""

    gen: torch.Generator
    form: str
    ref_us: float
    net: Supernet
    logits: torch.Tensor
    mask: torch.Tensor
    w_split: tuple[torch.Tensor, torch.Tensor]
    a_split: tuple[torch.Tensor, torch.Tensor]
    epochs: int
    w_opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    a_opt: torch.optim.Adam


def relaxed_setup(ctx: SearchContext, default_form: str) -> Relaxed:
    cfg = ctx.cfg
    gen = seed_everything(cfg.seed)
    form = loss_form(cfg, default_form)
    ref_us = reference_latency_us(ctx)
    net = Supernet(ctx.space, ctx.data.num_classes).to(ctx.device)
    logits = torch.zeros(net.allowed.shape, device=ctx.device, requires_grad=True)
    w_split, a_split = ctx.data.split_train(cfg.w_fraction, cfg.seed)
    epochs = cfg.warmup_epochs + cfg.epochs
    w_opt, sched = make_w_optimizer(net, cfg, epochs * steps_per_epoch(len(w_split[1]), cfg.batch_size))
    a_opt = make_theta_optimizer([logits], cfg)
    return Relaxed(gen, form, ref_us, net, logits, net.logit_mask, w_split, a_split, epochs, w_opt, sched, a_opt)


def make_w_optimizer(
    model: torch.nn.Module, cfg: SearchConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """SGD with momentum, cosine-annealed per step to 0 over `total_steps`."""
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.w_lr, momentum=cfg.w_momentum, weight_decay=cfg.w_weight_decay
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps))
    return opt, sched


def make_theta_optimizer(params: Iterable[torch.Tensor], cfg: SearchConfig) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=cfg.theta_lr, weight_decay=cfg.theta_weight_decay)


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def evaluate_path(
    net: Supernet,
    idx: torch.Tensor | list[int],
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    max_batches: int | None = None,
) -> tuple[float, float]:
    """(mean CE, accuracy) of one path of the supernet, with batch-statistics BN."""
    total, correct, loss_sum = 0, 0, 0.0
    with batch_stat_bn(net):
        for i, (xb, yb) in enumerate(batches(x, y, batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            out = net.forward_path(xb, idx)
            loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
            correct += (out.argmax(1) == yb).sum().item()
            total += len(yb)
    return loss_sum / max(1, total), correct / max(1, total)


def mean_entropy(logits: torch.Tensor) -> float:
    """Mean over layers of the entropy (nats) of softmax(logits); −inf entries contribute 0."""
    p = torch.softmax(logits.detach().double(), dim=-1)
    return float(-(torch.xlogy(p, p)).sum(-1).mean())


def arch_columns(logits: torch.Tensor, latency: LatencyModel) -> dict[str, float]:
    """The per-epoch log columns that describe the architecture distribution softmax(logits)."""
    logits = logits.detach()
    best = constrained_argmax(logits, latency, None)
    return {
        "expected_latency_us": float(latency.expected_us(torch.softmax(logits.double().cpu(), dim=-1))),
        "argmax_latency_us": float(latency.predict_batch_us(best[None])[0]),
        "theta_entropy": mean_entropy(logits),
    }


def accuracy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy of a batch, as a 0-d tensor."""
    return (out.argmax(1) == y).float().mean()


def sample_archs(
    logits: torch.Tensor,
    k: int,
    latency: LatencyModel,
    generator: torch.Generator,
    budget_us: float | None = None,
    max_tries: int = 200,
) -> torch.Tensor:
    """K archs drawn layer-wise from softmax(logits): LongTensor [≤K, layers]. With a budget,
    draws over it are rejected (fewer than K come back if the budget is rarely met)."""
    p = torch.softmax(logits.detach().double().cpu(), dim=-1)
    kept: list[torch.Tensor] = []
    for _ in range(max_tries):
        draw = torch.multinomial(p, 4 * k, replacement=True, generator=generator).T  # [4k, L]
        if budget_us is not None:
            draw = draw[latency.predict_batch_us(draw) <= budget_us]
        kept.extend(draw)
        if len(kept) >= k:
            break
    if len(kept) < k:
        log.warning("only %d of %d sampled archs meet the latency budget", len(kept), k)
    return torch.stack(kept[:k]) if kept else torch.empty(0, latency.num_layers, dtype=torch.long)


def check_budget(latency: LatencyModel, budget_us: float | None) -> None:
    """A budget below the fastest arch of the space is an error that says so."""
    fastest = latency.min_max_us()[0]
    if budget_us is not None and fastest > budget_us:
        raise ValueError(
            f"no architecture of {latency.space.name} meets {budget_us / 1000:.3f} ms on this LUT: "
            f"the fastest takes {fastest / 1000:.3f} ms; raise --max-latency-ms"
        )


def constrained_argmax(
    logits: torch.Tensor, latency: LatencyModel, budget_us: float | None
) -> torch.Tensor:
    """Layer-wise argmax; over a budget, greedily swap the block whose change loses the least
    log-probability per µs saved until the arch fits (hard constraint)."""
    logp = torch.log_softmax(logits.detach().double().cpu(), dim=-1)
    idx = logp.argmax(dim=-1)
    if budget_us is None:
        return idx
    check_budget(latency, budget_us)
    table = latency.table_us
    rows = torch.arange(latency.num_layers)
    while latency.predict_batch_us(idx[None])[0] > budget_us:
        saved = table[rows, idx][:, None] - table  # µs saved by each swap, −inf where n/a
        lost = logp[rows, idx][:, None] - logp  # log-prob lost by each swap
        cost = torch.where(saved > 0, lost.clamp_min(0) / saved, torch.full_like(lost, math.inf))
        flat = int(cost.argmin())
        idx[flat // cost.shape[1]] = flat % cost.shape[1]
    return idx


def finish(
    ctx: SearchContext,
    net: Supernet,
    theta: torch.Tensor,
    generator: torch.Generator,
    info: dict[str, Any],
) -> SearchResult:
    """Final arch (constrained argmax of θ), K samples from softmax(θ), test accuracy."""
    lat = ctx.latency
    budget = ctx.cfg.max_latency_us
    masked = theta.detach().cpu() + net.logit_mask.cpu()
    best = constrained_argmax(masked, lat, budget)
    samples = sample_archs(masked, ctx.cfg.num_samples, lat, generator, budget)
    _, acc = evaluate_path(net, best, ctx.data.x_test, ctx.data.y_test, 256)
    return SearchResult(
        blocks=tuple(lat.blocks[int(i)] for i in best),
        val_accuracy=acc,
        theta=masked,
        samples=[tuple(lat.blocks[int(i)] for i in s) for s in samples],
        info=info,
    )


def bar(it: Iterable, ctx: SearchContext, desc: str, total: int | None = None) -> Iterator:
    """tqdm over `it` when the context asks for progress bars."""
    return iter(tqdm(it, desc=desc, total=total, leave=False, disable=not ctx.progress))
