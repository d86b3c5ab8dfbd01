"""FBNet differentiable architecture search (Wu et al., CVPR 2019, https://arxiv.org/abs/1812.03443).

Each epoch, first the weights w are trained on the weights split (SGD with momentum, cosine lr),
then θ on the architecture split (Adam); the first `warmup_epochs` train w only. Every step
samples masks m = GumbelSoftmax(θ, τ) per layer, runs the supernet with them, and minimises

    L(a, w) = CE(a, w) · α · log(LAT(a))^β,     LAT(a) = Σ_l Σ_i m_{l,i} · LUT[l, i] (µs)

for θ. The weight step minimises CE alone: the factor α · log(LAT)^β is constant in w, so with
it the weight step would be the same step at a learning rate scaled by that factor (≈ 0.8 at the
paper's α, β and a 30 ms network in µs, 10^4 at β = 5), which couples α and β to the SGD
learning rate. Under Adam, α barely matters for θ either (Adam is invariant to a constant scale
of the loss), so β is the knob that trades accuracy for latency. τ starts at τ0 and is multiplied by
exp(−tau_decay) every epoch. After search: the argmax of θ (under the hard constraint, if one is
set) and K architectures sampled from softmax(θ).

Cost: paths whose mask weight is ≤ `mask_threshold` are not run (see `search.supernet`); the log
column `active_paths` is the mean number of blocks run per layer in the weight steps — all
candidates while τ is high, falling towards 1 as τ anneals and θ sharpens.
"""

from __future__ import annotations

import logging
import math
import time

import torch
import torch.nn.functional as F

from search.data import batches

from .base import SearchContext, SearchResult, register_strategy
from .common import accuracy, arch_columns, bar, finish, latency_loss, relaxed_setup

log = logging.getLogger(__name__)


@register_strategy("fbnet")
class FBNet:
    name = "fbnet"

    def run(self, ctx: SearchContext) -> SearchResult:
        cfg, lat = ctx.cfg, ctx.latency
        r = relaxed_setup(ctx, "mul")
        gen, form, ref_us, net, theta, mask = r.gen, r.form, r.ref_us, r.net, r.logits, r.mask
        (xw, yw), (xa, ya), total, w_opt, sched, t_opt = r.w_split, r.a_split, r.epochs, r.w_opt, r.sched, r.a_opt

        def step(x: torch.Tensor, y: torch.Tensor, tau: float, arch: bool) -> tuple[float, ...]:
            logits = theta + mask if arch else (theta + mask).detach()
            m = F.gumbel_softmax(logits, tau=tau, hard=False, dim=-1)
            out = net(x, m, threshold=cfg.mask_threshold)
            ce = F.cross_entropy(out, y)
            # The latency factor does not depend on w; in the weight step it would only rescale
            # the SGD learning rate (by 10^4 at β = 5), so weights minimise CE.
            loss = latency_loss(ce, lat.expected_us(m), cfg, ref_us, form) if arch else ce
            opt = t_opt if arch else w_opt
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not arch:
                sched.step()
            acc = accuracy(out, y).item()
            return ce.item(), acc, loss.item(), sum(net.active_paths) / len(net.active_paths)

        for epoch in bar(range(total), ctx, "fbnet", total):
            t0 = time.perf_counter()
            tau = cfg.tau0 * math.exp(-cfg.tau_decay * epoch)
            warm = epoch < cfg.warmup_epochs
            net.train()
            w_stats = [step(x, y, tau, False) for x, y in batches(xw, yw, cfg.batch_size, generator=gen)]
            if warm:
                a_stats = self._eval_relaxed(ctx, net, theta + mask, tau, xa, ya, ref_us, form)
            else:
                net.requires_grad_(False)  # θ step: no weight gradients are computed
                a_stats = [step(x, y, tau, True) for x, y in batches(xa, ya, cfg.batch_size, generator=gen)]
                net.requires_grad_(True)
            ctx.on_epoch(self._row(epoch, warm, tau, w_stats, a_stats, theta + mask, ctx, t0))
        return finish(ctx, net, theta, gen, {"tau_final": cfg.tau0 * math.exp(-cfg.tau_decay * (total - 1))})

    @staticmethod
    def _eval_relaxed(ctx, net, logits, tau, x, y, ref_us, form) -> list[tuple[float, ...]]:
        """Loss and accuracy of the relaxed supernet on the architecture split, no update."""
        stats = []
        with torch.no_grad():
            for xb, yb in batches(x, y, ctx.cfg.batch_size):
                m = F.gumbel_softmax(logits, tau=tau, hard=False, dim=-1)
                out = net(xb, m, threshold=ctx.cfg.mask_threshold)
                ce = F.cross_entropy(out, yb)
                loss = latency_loss(ce, ctx.latency.expected_us(m), ctx.cfg, ref_us, form)
                acc = accuracy(out, yb).item()
                stats.append((ce.item(), acc, loss.item(), sum(net.active_paths) / len(net.active_paths)))
        return stats

    @staticmethod
    def _row(epoch, warm, tau, w_stats, a_stats, logits, ctx, t0) -> dict:
        def mean(stats: list[tuple[float, ...]], i: int) -> float:
            return sum(s[i] for s in stats) / max(1, len(stats))

        return {
            "epoch": epoch,
            "phase": "warmup" if warm else "search",
            "tau": tau,
            "train_loss": mean(w_stats, 0),
            "train_acc": mean(w_stats, 1),
            "val_loss": mean(a_stats, 0),
            "val_acc": mean(a_stats, 1),
            "objective": mean(a_stats, 2),
            **arch_columns(logits, ctx.latency),
            "active_paths": mean(w_stats, 3),
            "epoch_s": time.perf_counter() - t0,
        }
