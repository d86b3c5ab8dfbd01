"""DARTS (Liu et al., ICLR 2019, https://arxiv.org/abs/1806.09055) on a LUT-driven space.

Each layer is the softmax mixture Σ_i softmax(α)_i · block_i(x): every candidate runs (the
method's memory cost). Each step takes one batch of each split: first α on the architecture split,
then the weights on the weights split (SGD), as in the paper. The α gradient is

  first order   ∇_α L_val(w, α)
  second order  ∇_α L_val(w', α) − ξ · [∇_α L_train(w⁺, α) − ∇_α L_train(w⁻, α)] / 2ε
                w' = w − ξ ∇_w L_train(w, α) (one plain SGD step with weight decay; no momentum)
                w± = w ± ε ∇_{w'} L_val(w', α),  ε = 0.01 / ‖∇_{w'} L_val(w', α)‖

L_val carries the latency term of the relaxed arch (default additive λ · E[LAT] / ref; FBNet's
"mul" or "none" on request); it does not depend on w, so it does not enter the Hessian term.
Final arch: argmax of α (under the hard constraint, if one is set).
"""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F

from search.data import batches

from .base import SearchContext, SearchResult, register_strategy
from .common import accuracy, arch_columns, bar, finish, latency_loss, relaxed_setup


@register_strategy("darts")
class DARTS:
    name = "darts"

    def run(self, ctx: SearchContext) -> SearchResult:
        cfg, lat = ctx.cfg, ctx.latency
        if cfg.darts_order not in (1, 2):
            raise ValueError(f"darts_order must be 1 or 2, got {cfg.darts_order}")
        r = relaxed_setup(ctx, "add")
        gen, form, ref_us, net, alpha, mask = r.gen, r.form, r.ref_us, r.net, r.logits, r.mask
        (xw, yw), (xa, ya), total, w_opt, sched, a_opt = r.w_split, r.a_split, r.epochs, r.w_opt, r.sched, r.a_opt
        everything = [list(m.columns) for m in net.mixed]
        xi = cfg.darts_xi if cfg.darts_xi is not None else cfg.w_lr
        params = list(net.parameters())

        def ce_of(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = net(x, weights, active=everything)
            return F.cross_entropy(out, y), out

        def val_loss(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            m = torch.softmax(alpha + mask, dim=-1)
            ce, out = ce_of(x, y, m)
            return latency_loss(ce, lat.expected_us(m), cfg, ref_us, form), ce, out

        def second_order_grad(xt, yt, xv, yv) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            def train_ce(weights_grad: bool) -> torch.Tensor:
                m = torch.softmax(alpha + mask, dim=-1)
                return ce_of(xt, yt, m if weights_grad else m.detach())[0]

            grad, (loss, ce, out) = unrolled_alpha_grad(
                params, alpha, train_ce, lambda: val_loss(xv, yv), xi, cfg.w_weight_decay
            )
            return grad, loss.detach(), torch.stack([ce.detach(), accuracy(out, yv)])

        for epoch in bar(range(total), ctx, "darts", total):
            t0 = time.perf_counter()
            warm = epoch < cfg.warmup_epochs
            net.train()
            stats = {"train_loss": 0.0, "train_acc": 0.0, "val_loss": 0.0, "val_acc": 0.0, "objective": 0.0}
            n_w = n_a = 0
            arch_batches = batches(xa, ya, cfg.batch_size, generator=gen)
            for x, y in batches(xw, yw, cfg.batch_size, generator=gen):
                if not warm:
                    xv, yv = next(arch_batches, (None, None))
                    if xv is None:  # the architecture split is smaller: cycle it
                        arch_batches = batches(xa, ya, cfg.batch_size, generator=gen)
                        xv, yv = next(arch_batches)
                    if cfg.darts_order == 2:
                        grad, loss, ce_acc = second_order_grad(x, y, xv, yv)
                    else:
                        loss, ce, out = val_loss(xv, yv)
                        grad = torch.autograd.grad(loss, alpha)[0]
                        loss, ce_acc = loss.detach(), torch.stack([ce.detach(), accuracy(out, yv)])
                    a_opt.zero_grad(set_to_none=True)
                    alpha.grad = grad
                    a_opt.step()
                    stats["objective"] += loss.item()
                    stats["val_loss"] += ce_acc[0].item()
                    stats["val_acc"] += ce_acc[1].item()
                    n_a += 1
                ce, out = ce_of(x, y, torch.softmax(alpha + mask, dim=-1).detach())
                w_opt.zero_grad(set_to_none=True)
                ce.backward()
                w_opt.step()
                sched.step()
                stats["train_loss"] += ce.item()
                stats["train_acc"] += accuracy(out, y).item()
                n_w += 1
            row = {"epoch": epoch, "phase": "warmup" if warm else "search"}
            for k, v in stats.items():
                n = n_w if k.startswith("train") else n_a
                row[k] = v / n if n else float("nan")
            row.update(arch_columns(alpha + mask, lat), epoch_s=time.perf_counter() - t0)
            ctx.on_epoch(row)
        return finish(ctx, net, alpha, gen, {"darts_order": cfg.darts_order, "xi": xi})


def unrolled_alpha_grad(
    params: list[torch.Tensor],
    alpha: torch.Tensor,
    train_loss: Callable[[bool], torch.Tensor],
    val_loss: Callable[[], tuple[torch.Tensor, ...]],
    xi: float,
    weight_decay: float,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """DARTS's second-order α gradient (eq. 7–8 of the paper) by the central finite difference.

    `train_loss(with_alpha)` is L_train at the current `params` (its α graph only needed when
    `with_alpha`); `val_loss()` returns (L_val, ...) at the current `params`. The params are restored
    on return. Returns (∇α L_val(w', α) − ξ · [∇α L_train(w⁺) − ∇α L_train(w⁻)] / 2ε, val_loss()).
    """
    g_train = torch.autograd.grad(train_loss(False), params)
    backup = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():  # virtual step w' = w − ξ (∇w L_train + wd · w)
            for p, g in zip(params, g_train):
                p.sub_(xi * (g + weight_decay * p))
        val = val_loss()
        grads = torch.autograd.grad(val[0], [alpha, *params])
        d_alpha, d_w = grads[0], grads[1:]
        eps = 0.01 / torch.sqrt(sum((g * g).sum() for g in d_w)).clamp_min(1e-12)
        hvp = []
        for sign in (1.0, -1.0):  # ∇α L_train at w ± ε·∇w' L_val
            with torch.no_grad():
                for p, b, g in zip(params, backup, d_w):
                    p.copy_(b + sign * eps * g)
            hvp.append(torch.autograd.grad(train_loss(True), alpha)[0])
    finally:
        with torch.no_grad():
            for p, b in zip(params, backup):
                p.copy_(b)
    return d_alpha - xi * (hvp[0] - hvp[1]) / (2 * eps), val
