"""ProxylessNAS with binarized paths (Cai et al., ICLR 2019, https://arxiv.org/abs/1812.00332).

Architecture parameters α [layers × blocks], p = softmax(α). Per epoch (after warm-up):

- weight step on the weights split: one path per layer sampled from p; only that path runs and is
  in memory (`Supernet.forward_path`); loss CE.
- architecture step on the architecture split: two candidates per layer sampled from p
  (`proxyless_paths`, 0 = all: the "full" estimate), their probabilities renormalised to p', one
  of them drawn as the active binary gate g. The layer outputs Σ_{j∈pair} g̃_j · o_j(x) with
  g̃ = g − p'.detach() + p': the value is the active path alone, and autograd delivers the
  BinaryConnect estimate ∂L/∂α_i = Σ_j ∂L/∂g_j · p'_j (δ_ij − p'_i) with ∂L/∂g_j = ⟨∂L/∂y, o_j⟩.
  After the Adam step the two α of each pair are shifted by a common offset so that Σ exp(α)
  over the pair is unchanged: the other paths keep their probabilities (the paper's rescaling).
- latency: E[LAT] = Σ_j p_j · LAT(o_j) with the full p, added as λ · E[LAT] / ref ("add",
  the default) or FBNet's CE · α · log(E[LAT])^β ("mul").

Final arch: argmax of α (under the hard constraint, if one is set).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from search.data import batches
from search.supernet import Supernet

from .base import SearchContext, SearchResult, register_strategy
from .common import accuracy, arch_columns, bar, finish, latency_loss, relaxed_setup


@register_strategy("proxyless")
class ProxylessNAS:
    name = "proxyless"

    def run(self, ctx: SearchContext) -> SearchResult:
        cfg, lat, dev = ctx.cfg, ctx.latency, ctx.device
        r = relaxed_setup(ctx, "add")
        gen, form, ref_us, net, alpha, mask = r.gen, r.form, r.ref_us, r.net, r.logits, r.mask
        (xw, yw), (xa, ya), total, w_opt, sched, a_opt = r.w_split, r.a_split, r.epochs, r.w_opt, r.sched, r.a_opt
        max_paths = {"weight_step": 0, "arch_step": 0}
        rows = torch.arange(net.allowed.shape[0], device=dev)

        for epoch in bar(range(total), ctx, "proxyless", total):
            t0 = time.perf_counter()
            warm = epoch < cfg.warmup_epochs
            net.train()
            w_loss, w_acc, n_w = 0.0, 0.0, 0
            for x, y in batches(xw, yw, cfg.batch_size, generator=gen):
                p = torch.softmax((alpha + mask).detach(), dim=-1)
                idx = torch.multinomial(p, 1).squeeze(1)
                out = net.forward_path(x, idx)
                max_paths["weight_step"] = max(max_paths["weight_step"], *net.active_paths)
                ce = F.cross_entropy(out, y)
                w_opt.zero_grad(set_to_none=True)
                ce.backward()
                w_opt.step()
                sched.step()
                w_loss, w_acc, n_w = w_loss + ce.item(), w_acc + accuracy(out, y).item(), n_w + 1
            a_loss, a_acc, a_obj, n_a = 0.0, 0.0, 0.0, 0
            if not warm:
                net.requires_grad_(False)
                for x, y in batches(xa, ya, cfg.batch_size, generator=gen):
                    logits = alpha + mask
                    pair = self._sample_pairs(logits.detach(), cfg.proxyless_paths, net)
                    sub = logits.gather(1, pair)  # [L, k]
                    p_pair = torch.softmax(sub, dim=-1)
                    chosen = torch.multinomial(p_pair.detach(), 1).squeeze(1)
                    hard = F.one_hot(chosen, pair.shape[1]).to(p_pair.dtype)
                    gates = torch.zeros_like(logits).scatter(1, pair, hard - p_pair.detach() + p_pair)
                    out = net(x, gates, active=pair.tolist())
                    max_paths["arch_step"] = max(max_paths["arch_step"], *net.active_paths)
                    ce = F.cross_entropy(out, y)
                    e_lat = lat.expected_us(torch.softmax(logits, dim=-1))
                    loss = latency_loss(ce, e_lat, cfg, ref_us, form)
                    old = alpha.detach().gather(1, pair)
                    a_opt.zero_grad(set_to_none=True)
                    loss.backward()
                    a_opt.step()
                    with torch.no_grad():  # keep Σ exp(α) over each pair: others keep their p
                        new = alpha.gather(1, pair)
                        offset = torch.logsumexp(new, 1, keepdim=True) - torch.logsumexp(old, 1, keepdim=True)
                        alpha[rows[:, None], pair] = new - offset
                    a_loss, a_acc, a_obj, n_a = a_loss + ce.item(), a_acc + accuracy(out, y).item(), a_obj + loss.item(), n_a + 1
                net.requires_grad_(True)
            ctx.on_epoch({
                "epoch": epoch,
                "phase": "warmup" if warm else "search",
                "train_loss": w_loss / max(1, n_w),
                "train_acc": w_acc / max(1, n_w),
                "val_loss": a_loss / n_a if n_a else float("nan"),
                "val_acc": a_acc / n_a if n_a else float("nan"),
                "objective": a_obj / n_a if n_a else float("nan"),
                **arch_columns(alpha + mask, lat),
                "epoch_s": time.perf_counter() - t0,
            })  # fmt: skip
        return finish(ctx, net, alpha, gen, {"max_active_paths": max_paths})

    @staticmethod
    def _sample_pairs(logits: torch.Tensor, k: int, net: Supernet) -> torch.Tensor:
        """k distinct candidates per layer drawn from softmax(logits): LongTensor [L, k]."""
        n_allowed = int(net.allowed.sum(1).min())
        k = n_allowed if k <= 0 else min(k, n_allowed)
        return torch.multinomial(torch.softmax(logits, dim=-1), k, replacement=False)
