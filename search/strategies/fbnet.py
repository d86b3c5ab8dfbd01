"""FBNet differentiable architecture search (Wu et al., CVPR 2019, https://arxiv.org/abs/1812.03443).

Weights w train on the weights split (SGD with momentum, cosine lr), θ on the architecture split
(Adam); the first `warmup_epochs` train w only. With `alternate="batch"` (default) one θ step
follows every weight step, cycling the smaller architecture split, as DARTS and ProxylessNAS do;
`"epoch"` is the paper's alternation (a pass over the weights split, then one over the
architecture split), which on the embedded data gives θ only ~5 Adam steps per epoch. Every step
samples masks m = GumbelSoftmax(θ, τ) per layer, runs the supernet with them, and minimises

    L(a, w) = CE(a, w) · α · log(LAT(a))^β,     LAT(a) = Σ_l Σ_i m_{l,i} · LUT[l, i] (µs)

for θ, through its logarithm (see `objective`: the product overflows float32 at β ≈ 30). A soft
target T compares T with the expected latency under softmax(θ) itself (the latency the argmax
converges to), not the mask's: at τ = 5 a mask's latency stays near the uniform expectation
however far θ has moved, and the search would overshoot T. The
weight step minimises CE alone: the factor α · log(LAT)^β is constant in w, so with it the weight
step would be the same step at a learning rate scaled by that factor, which couples α and β to
the SGD learning rate. α does not change θ's steps either (Adam is invariant to a constant scale
of the loss): β is the knob that trades accuracy for latency. A soft target
(`target_latency_ms`) or the additive form replace the latency factor on request. The θ loss also
carries the commitment term γ(t)·Σ_l H(softmax(θ_l)) (`entropy_weight`, see `SearchConfig`),
which makes θ itself sharpen within the epochs asked for.

τ follows `common.temperature`: by default geometric from τ0 to `tau_end` over the epochs asked
for, so that the masks reach near one-hot at the end of any run; the paper's schedule (τ0 = 5,
×exp(−0.045) per epoch) is `tau_schedule="paper"`. After search: the argmax of θ (under the hard
constraint, if one is set), evaluated with the supernet's weights after recalibrating its batch
norm, and K architectures sampled from softmax(θ).

Cost: paths whose mask weight is ≤ `mask_threshold` are not run (see `search.supernet`); the log
column `active_paths` is the mean number of blocks run per layer in the weight steps — all
candidates while τ is high, falling towards 1 as τ anneals and θ sharpens.
"""

from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F

from search.data import batches

from .base import SearchContext, SearchResult, register_strategy
from .common import (
    ArchLog,
    accuracy,
    bar,
    commitment,
    cycle_train_batches,
    entropy_weight,
    finish,
    relaxed_setup,
    temperature,
    train_batches,
)
from .objective import check_finite_step, latency_loss, objective_value

log = logging.getLogger(__name__)


@register_strategy("fbnet")
class FBNet:
    name = "fbnet"

    def run(self, ctx: SearchContext) -> SearchResult:
        cfg, lat = ctx.cfg, ctx.latency
        r = relaxed_setup(ctx, "mul")
        gen, form, ref_us, net, theta, mask = r.gen, r.form, r.ref_us, r.net, r.logits, r.mask
        (xw, yw), (xa, ya), total, w_opt, sched, t_opt = r.w_split, r.a_split, r.epochs, r.w_opt, r.sched, r.a_opt
        track = ArchLog(lat, theta + mask)
        arch_batches = cycle_train_batches(xa, ya, cfg.batch_size, gen, ctx.dist)
        n_arch = 0

        def w_step(x: torch.Tensor, y: torch.Tensor, tau: float) -> tuple[float, ...]:
            m = F.gumbel_softmax((theta + mask).detach(), tau=tau, hard=False, dim=-1)
            out = net(x, m, threshold=cfg.mask_threshold)
            ce = F.cross_entropy(out, y)
            w_opt.zero_grad(set_to_none=True)
            ce.backward()
            w_opt.step()
            sched.step()
            return ce.item(), accuracy(out, y).item(), ce.item(), sum(net.active_paths) / len(net.active_paths)

        def theta_step(x: torch.Tensor, y: torch.Tensor, tau: float, gamma: float) -> tuple[float, ...]:
            nonlocal n_arch
            net.requires_grad_(False)  # θ step: no weight gradients are computed
            m = F.gumbel_softmax(theta + mask, tau=tau, hard=False, dim=-1)
            out = net(x, m, threshold=cfg.mask_threshold)
            ce = F.cross_entropy(out, y)
            # a target is met by the arch θ converges to: compare it with the expected latency under
            # softmax(θ) itself; a τ = 5 mask stays near the uniform expectation however θ moves
            relaxed = torch.softmax(theta + mask, dim=-1) if form == "target" else m
            loss = latency_loss(ce, lat.expected_us(relaxed), cfg, ref_us, form)
            t_opt.zero_grad(set_to_none=True)
            (loss + gamma * commitment(theta + mask) if gamma else loss).backward()
            n_arch += 1
            check_finite_step(t_opt, [theta], where=f"fbnet θ step {n_arch}", loss=loss.item())
            net.requires_grad_(True)
            return ce.item(), accuracy(out, y).item(), objective_value(loss, form), sum(net.active_paths) / len(net.active_paths)

        for epoch in bar(range(total), ctx, "fbnet", total):
            t0 = time.perf_counter()
            tau, gamma = temperature(cfg, epoch), entropy_weight(cfg, epoch)
            warm = epoch < cfg.warmup_epochs
            net.train()
            w_stats, a_stats = [], []
            for x, y in train_batches(xw, yw, cfg.batch_size, gen, ctx.dist):
                w_stats.append(w_step(x, y, tau))
                if not warm and cfg.alternate == "batch":
                    a_stats.append(theta_step(*next(arch_batches), tau, gamma))
            if not warm and cfg.alternate == "epoch":
                a_stats = [theta_step(x, y, tau, gamma) for x, y in train_batches(xa, ya, cfg.batch_size, gen, ctx.dist)]
            if warm:
                a_stats = self._eval_relaxed(ctx, net, theta + mask, tau, xa, ya, ref_us, form)
            ctx.on_epoch(self._row(epoch, warm, tau, gamma, w_stats, a_stats, theta + mask, track, t0))
        return finish(ctx, r, theta, track, {"tau_final": temperature(cfg, total - 1), "arch_steps": n_arch})

    @staticmethod
    def _eval_relaxed(ctx, net, logits, tau, x, y, ref_us, form) -> list[tuple[float, ...]]:
        """Loss and accuracy of the relaxed supernet on the architecture split, no update."""
        stats = []
        with torch.no_grad():
            for xb, yb in batches(x, y, ctx.cfg.batch_size, min_size=2):
                m = F.gumbel_softmax(logits, tau=tau, hard=False, dim=-1)
                out = net(xb, m, threshold=ctx.cfg.mask_threshold)
                ce = F.cross_entropy(out, yb)
                loss = latency_loss(ce, ctx.latency.expected_us(m), ctx.cfg, ref_us, form)
                acc = accuracy(out, yb).item()
                stats.append((ce.item(), acc, objective_value(loss, form), sum(net.active_paths) / len(net.active_paths)))
        return stats

    @staticmethod
    def _row(epoch, warm, tau, gamma, w_stats, a_stats, logits, track, t0) -> dict:
        def mean(stats: list[tuple[float, ...]], i: int) -> float:
            return sum(s[i] for s in stats) / len(stats) if stats else float("nan")

        return {
            "epoch": epoch,
            "phase": "warmup" if warm else "search",
            "tau": tau,
            "entropy_weight": gamma,
            "train_loss": mean(w_stats, 0),
            "train_acc": mean(w_stats, 1),
            "val_loss": mean(a_stats, 0),
            "val_acc": mean(a_stats, 1),
            "objective": mean(a_stats, 2),
            **track.columns(logits),
            "active_paths": mean(w_stats, 3),
            "epoch_s": time.perf_counter() - t0,
        }
