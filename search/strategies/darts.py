"""DARTS (Liu et al., ICLR 2019, https://arxiv.org/abs/1806.09055) on a LUT-driven space.

Each layer is the softmax mixture Σ_i softmax(α)_i · block_i(x): every candidate runs (the
method's memory cost) until α sharpens; as in FBNet, a candidate whose weight is ≤ `mask_threshold`
(default 1 %) is left out of the sum, so late epochs run one or two paths per layer. Each step
takes one batch of each split: first α on the architecture split (cycling it: it is the smaller
one), then the weights on the weights split (SGD), as in the paper.
The α gradient is

  first order   ∇_α L_val(w, α)
  second order  ∇_α L_val(w', α) − ξ · [∇_α L_train(w⁺, α) − ∇_α L_train(w⁻, α)] / 2ε
                w' = w − ξ ∇_w L_train(w, α) (one plain SGD step with weight decay; no momentum;
                ξ = the weight learning rate of the current step, as in the reference
                implementation, unless `darts_xi` fixes it)
                w± = w ± ε ∇_{w'} L_val(w', α),  ε = 0.01 / ‖∇_{w'} L_val(w', α)‖

L_val carries the latency term of the relaxed arch (default additive λ · E[LAT] / ref; FBNet's
"mul", the soft "target" or "none" on request); it does not depend on w, so it does not enter the
Hessian term; neither does the commitment term γ(t)·Σ_l H(softmax(α_l)) (`entropy_weight`).
With `darts_tau_end` < 1 the mixture is softmax(α/τ), τ annealed from 1 to it over the search
epochs (`mixture_temperature`): the relaxed network, its expected latency and the commitment term
move towards the single arch that the argmax will take, as FBNet's Gumbel temperature does.
Final arch: argmax of α (under the hard constraint, if one is set); θ reported is α/τ.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F

from .base import SearchContext, SearchResult, register_strategy
from .common import ArchLog, accuracy, bar, commitment, cycle_train_batches, entropy_weight, finish, relaxed_setup, train_batches
from .objective import check_finite_step, latency_loss, objective_value


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
        params = list(net.parameters())
        track = ArchLog(lat, alpha + mask)
        arch_batches = cycle_train_batches(xa, ya, cfg.batch_size, gen, ctx.dist)
        xi_used: list[float] = []  # ξ of every second-order step (the log shows the last)
        n_arch = 0

        def ce_of(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = net(x, weights, threshold=cfg.mask_threshold)
            return F.cross_entropy(out, y), out

        tau = 1.0  # the mixture's temperature in the current epoch

        def mixture() -> torch.Tensor:
            return torch.softmax((alpha + mask) / tau, dim=-1)

        def val_loss(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            m = mixture()
            ce, out = ce_of(x, y, m)
            return latency_loss(ce, lat.expected_us(m), cfg, ref_us, form), ce, out

        def second_order_grad(xt, yt, xv, yv, xi: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            def train_ce(weights_grad: bool) -> torch.Tensor:
                m = mixture()
                return ce_of(xt, yt, m if weights_grad else m.detach())[0]

            grad, (loss, ce, out) = unrolled_alpha_grad(
                params, alpha, train_ce, lambda: val_loss(xv, yv), xi, cfg.w_weight_decay
            )
            return grad, loss.detach(), torch.stack([ce.detach(), accuracy(out, yv)])

        def arch_step(x: torch.Tensor, y: torch.Tensor, gamma: float) -> tuple[float, float, float]:
            nonlocal n_arch
            xv, yv = next(arch_batches)
            if cfg.darts_order == 2:
                xi = cfg.darts_xi if cfg.darts_xi is not None else w_opt.param_groups[0]["lr"]
                xi_used.append(xi)
                grad, loss, ce_acc = second_order_grad(x, y, xv, yv, xi)
            else:
                loss, ce, out = val_loss(xv, yv)
                grad = torch.autograd.grad(loss, alpha)[0]
                loss, ce_acc = loss.detach(), torch.stack([ce.detach(), accuracy(out, yv)])
            if gamma:
                grad = grad + torch.autograd.grad(gamma * commitment((alpha + mask) / tau), alpha)[0]
            a_opt.zero_grad(set_to_none=True)
            alpha.grad = grad
            n_arch += 1
            check_finite_step(a_opt, [alpha], where=f"darts α step {n_arch}", loss=loss.item())
            return ce_acc[0].item(), ce_acc[1].item(), objective_value(loss, form)

        for epoch in bar(range(total), ctx, "darts", total):
            t0 = time.perf_counter()
            warm, gamma = epoch < cfg.warmup_epochs, entropy_weight(cfg, epoch)
            tau = mixture_temperature(cfg, epoch)
            net.train()
            w_stats, a_stats = [], []
            for x, y in train_batches(xw, yw, cfg.batch_size, gen, ctx.dist):
                if not warm:
                    a_stats.append(arch_step(x, y, gamma))
                ce, out = ce_of(x, y, mixture().detach())
                w_opt.zero_grad(set_to_none=True)
                ce.backward()
                w_opt.step()
                sched.step()
                w_stats.append((ce.item(), accuracy(out, y).item()))
            row = {"epoch": epoch, "phase": "warmup" if warm else "search", "tau": tau, "entropy_weight": gamma}
            for name, stats, i in (("train_loss", w_stats, 0), ("train_acc", w_stats, 1), ("val_loss", a_stats, 0),
                                   ("val_acc", a_stats, 1), ("objective", a_stats, 2)):  # fmt: skip
                row[name] = sum(s[i] for s in stats) / len(stats) if stats else float("nan")
            if cfg.darts_order == 2:
                row["xi"] = xi_used[-1] if xi_used else float("nan")
            row.update(track.columns((alpha + mask) / tau), epoch_s=time.perf_counter() - t0)
            ctx.on_epoch(row)
        info = {"darts_order": cfg.darts_order, "arch_steps": n_arch, "tau_end": tau,
                "xi": "the current weight lr" if cfg.darts_xi is None else cfg.darts_xi}  # fmt: skip
        if xi_used:
            info["xi_first_last"] = [xi_used[0], xi_used[-1]]
        return finish(ctx, r, alpha / tau, track, info)  # the mixture as searched: softmax(α/τ)


def _grads(loss: torch.Tensor, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """∂loss/∂t for each t; zeros for a tensor the loss does not use (the weights of a path whose
    mixture weight fell below `mask_threshold` are not run)."""
    grads = torch.autograd.grad(loss, tensors, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]


def mixture_temperature(cfg, epoch: int) -> float:
    """τ of DARTS's mixture softmax(α/τ) in an epoch: 1 during warm-up and the first search epoch,
    then geometric to `cfg.darts_tau_end` in the last search epoch."""
    if cfg.darts_tau_end <= 0:
        raise ValueError(f"darts_tau_end must be > 0, got {cfg.darts_tau_end}")
    if cfg.epochs <= 1:
        return 1.0
    search_epoch = min(max(0, epoch - cfg.warmup_epochs), cfg.epochs - 1)
    return cfg.darts_tau_end ** (search_epoch / (cfg.epochs - 1))


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
    g_train = _grads(train_loss(False), params)
    backup = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():  # virtual step w' = w − ξ (∇w L_train + wd · w)
            for p, g in zip(params, g_train):
                p.sub_(xi * (g + weight_decay * p))
        val = val_loss()
        grads = _grads(val[0], [alpha, *params])
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
