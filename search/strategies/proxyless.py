"""ProxylessNAS with binarized paths (Cai et al., ICLR 2019, https://arxiv.org/abs/1812.00332).

Architecture parameters α [layers × blocks], p = softmax(α) over each layer's candidates. After
warm-up, one architecture step follows every weight step (cycling the smaller architecture split).

- weight step on the weights split: one path per layer sampled from p; only that path runs and is
  in memory (`Supernet.forward_path`); loss CE.
- architecture step on the architecture split, `proxyless_paths` = k candidates per layer in
  memory, one of them the active binary gate g (sampled), the layer output Σ_{j∈S} g̃_j · o_j(x)
  with g̃ = g − q.detach() + q: the value is the active path alone, and autograd delivers the
  BinaryConnect estimate ∂L/∂α_i = Σ_{j∈S} ∂L/∂g_j · ∂q_j/∂α_i with ∂L/∂g_j = ⟨∂L/∂y, o_j⟩:

    k = 2 (paper)  S = two candidates drawn from p; q = p renormalised over S; after the Adam step
                   the two α are shifted by a common offset so that Σ exp(α) over S is unchanged
                   (the paper's rescaling: the other paths keep their probabilities).
    k = 1          S = the active path alone; q = the full softmax p, so ∂L/∂α_i =
                   ∂L/∂g_a · p_a (δ_ai − p_i) reaches every candidate (a softmax over the one sampled
                   logit would be the constant 1 and give no CE gradient at all).
    k = 0 (all)    S = every allowed candidate of the layer; q = p (the paper's "full" estimate).

- latency: E[LAT] = Σ_j p_j · LAT(o_j) with the full p, added as λ · E[LAT] / ref ("add",
  the default), FBNet's CE · α · log(E[LAT])^β ("mul") or the soft target ("target"); and the
  commitment term γ(t)·Σ_l H(p_l) (`entropy_weight`).

Final arch: argmax of α (under the hard constraint, if one is set).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from search.supernet import Supernet

from .base import SearchContext, SearchResult, register_strategy
from .common import ArchLog, accuracy, bar, commitment, cycle_train_batches, entropy_weight, finish, relaxed_setup, train_batches
from .objective import check_finite_step, latency_loss, objective_value


@register_strategy("proxyless")
class ProxylessNAS:
    name = "proxyless"
    # An epoch runs one path per weight step and k per architecture step: a tenth of FBNet's or
    # DARTS's, so the same few minutes buy 30 epochs. No warm-up: uniformly sampled single paths
    # do not train on the embedded proxy (train accuracy stays at chance for 950 steps, lr 0.01 to
    # 0.1); the weights learn once α concentrates, at a learning rate that does not collapse them.
    defaults = {"epochs": 30, "warmup_epochs": 0, "w_lr": 0.05}

    def run(self, ctx: SearchContext) -> SearchResult:
        cfg, lat, dev = ctx.cfg, ctx.latency, ctx.device
        if cfg.proxyless_paths < 0:
            raise ValueError(f"proxyless_paths must be 0 (all), 1 or more, got {cfg.proxyless_paths}")
        r = relaxed_setup(ctx, "add")
        gen, form, ref_us, net, alpha, mask = r.gen, r.form, r.ref_us, r.net, r.logits, r.mask
        (xw, yw), (xa, ya), total, w_opt, sched, a_opt = r.w_split, r.a_split, r.epochs, r.w_opt, r.sched, r.a_opt
        max_paths = {"weight_step": 0, "arch_step": 0}
        track = ArchLog(lat, alpha + mask)
        arch_batches = cycle_train_batches(xa, ya, cfg.batch_size, gen, ctx.dist)
        n_arch = 0

        def w_step(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
            p = torch.softmax((alpha + mask).detach(), dim=-1)
            idx = torch.multinomial(p, 1).squeeze(1)
            out = net.forward_path(x, idx)
            max_paths["weight_step"] = max(max_paths["weight_step"], *net.active_paths)
            ce = F.cross_entropy(out, y)
            w_opt.zero_grad(set_to_none=True)
            ce.backward()
            w_opt.step()
            sched.step()
            return ce.item(), accuracy(out, y).item()

        def arch_step(x: torch.Tensor, y: torch.Tensor, gamma: float) -> tuple[float, float, float]:
            nonlocal n_arch
            net.requires_grad_(False)
            logits = alpha + mask
            gates, active, pair = self._gates(logits, cfg.proxyless_paths, net)
            out = net(x, gates, active=active)
            max_paths["arch_step"] = max(max_paths["arch_step"], *net.active_paths)
            ce = F.cross_entropy(out, y)
            loss = latency_loss(ce, lat.expected_us(torch.softmax(logits, dim=-1)), cfg, ref_us, form)
            old = alpha.detach().gather(1, pair) if pair is not None else None
            a_opt.zero_grad(set_to_none=True)
            (loss + gamma * commitment(logits) if gamma else loss).backward()
            n_arch += 1
            check_finite_step(a_opt, [alpha], where=f"proxyless α step {n_arch}", loss=loss.item())
            if pair is not None:
                with torch.no_grad():  # keep Σ exp(α) over each pair: the others keep their p
                    rows = torch.arange(alpha.shape[0], device=dev)[:, None]
                    new = alpha.gather(1, pair)
                    offset = torch.logsumexp(new, 1, keepdim=True) - torch.logsumexp(old, 1, keepdim=True)
                    alpha[rows, pair] = new - offset
            net.requires_grad_(True)
            return ce.item(), accuracy(out, y).item(), objective_value(loss, form)

        for epoch in bar(range(total), ctx, "proxyless", total):
            t0 = time.perf_counter()
            warm, gamma = epoch < cfg.warmup_epochs, entropy_weight(cfg, epoch)
            net.train()
            w_stats, a_stats = [], []
            for x, y in train_batches(xw, yw, cfg.batch_size, gen, ctx.dist):
                w_stats.append(w_step(x, y))
                if not warm and cfg.alternate == "batch":
                    a_stats.append(arch_step(*next(arch_batches), gamma))
            if not warm and cfg.alternate == "epoch":
                a_stats = [arch_step(x, y, gamma) for x, y in train_batches(xa, ya, cfg.batch_size, gen, ctx.dist)]
            ctx.on_epoch({
                "epoch": epoch,
                "phase": "warmup" if warm else "search",
                "entropy_weight": gamma,
                "train_loss": _mean(w_stats, 0),
                "train_acc": _mean(w_stats, 1),
                "val_loss": _mean(a_stats, 0),
                "val_acc": _mean(a_stats, 1),
                "objective": _mean(a_stats, 2),
                **track.columns(alpha + mask),
                "epoch_s": time.perf_counter() - t0,
            })  # fmt: skip
        return finish(ctx, r, alpha, track, {"max_active_paths": max_paths, "arch_steps": n_arch,
                                             "proxyless_paths": cfg.proxyless_paths})  # fmt: skip

    @staticmethod
    def _gates(
        logits: torch.Tensor, k: int, net: Supernet
    ) -> tuple[torch.Tensor, list[list[int]], torch.Tensor | None]:
        """(straight-through gates [L, B], active columns per layer, the sampled pairs for the
        rescaling or None) for k paths per layer (0 = all allowed)."""
        p = torch.softmax(logits, dim=-1)
        allowed = net.allowed
        if k == 0 or k >= int(allowed.sum(1).max()):  # every allowed candidate: q = p
            chosen = torch.multinomial(p.detach(), 1).squeeze(1)
            hard = F.one_hot(chosen, p.shape[1]).to(p.dtype)
            active = [row.nonzero().flatten().tolist() for row in allowed.cpu()]
            return hard - p.detach() + p, active, None
        if k == 1:  # the active path alone, through the full softmax
            chosen = torch.multinomial(p.detach(), 1).squeeze(1)
            hard = F.one_hot(chosen, p.shape[1]).to(p.dtype)
            return hard - p.detach() + p, [[int(c)] for c in chosen], None
        n_allowed = allowed.sum(1)
        pair = torch.multinomial(p.detach(), int(min(k, int(n_allowed.min()))), replacement=False)  # [L, k]
        q = torch.softmax(logits.gather(1, pair), dim=-1)
        chosen = torch.multinomial(q.detach(), 1).squeeze(1)
        hard = F.one_hot(chosen, pair.shape[1]).to(q.dtype)
        gates = torch.zeros_like(logits).scatter(1, pair, hard - q.detach() + q)
        return gates, pair.tolist(), pair


def _mean(stats: list[tuple[float, ...]], i: int) -> float:
    return sum(s[i] for s in stats) / len(stats) if stats else float("nan")
