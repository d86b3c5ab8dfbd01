"""Peak memory and step time per strategy (fbnet, proxyless, darts) vs the stand-alone network.

    python -m bench.search_memory [--space fbnet-r32-w0.25] [--batch 32] [--steps 3] [--device cuda]

Each row is one training step of that strategy as its module runs it (forward + backward), on the
same batch and the same supernet; measurement as in `bench.search_step` (activation memory saved
for backward on any device, plus the CUDA peak on CUDA). The sampled network is the one the
ProxylessNAS weight step would train, so "×" columns compare a strategy's step to training that
single network.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from bench.search_step import bench_parser, bench_setup, loss_step, measure, print_table
from hwnas.flags import run_main
from search.train import build_proxy_model


def main(argv: list[str] | None = None) -> int:
    args = bench_parser("bench.search_memory", __doc__, steps=3).parse_args(argv)
    dev, space, x, y, net = bench_setup(args)
    alpha = torch.zeros(net.allowed.shape, device=dev, requires_grad=True)
    mask = net.logit_mask
    everything = [list(m.columns) for m in net.mixed]
    params = list(net.parameters())
    idx = torch.multinomial(torch.softmax(mask, -1), 1).squeeze(1)
    alone = build_proxy_model(tuple(space.candidates_all[int(i)] for i in idx), space, 10).to(dev).train()

    def clear() -> None:
        net.zero_grad(set_to_none=True)
        alpha.grad = None

    def fbnet(arch_step: bool) -> Callable[[], None]:
        def run() -> None:
            net.requires_grad_(not arch_step)
            logits = alpha + mask if arch_step else (alpha + mask).detach()
            m = F.gumbel_softmax(logits, tau=5.0, dim=-1)
            F.cross_entropy(net(x, m, threshold=1e-3), y).backward()
            net.requires_grad_(True)
            clear()

        return run

    def proxyless_weight() -> None:  # the same sampled paths as the stand-alone network
        F.cross_entropy(net.forward_path(x, idx), y).backward()
        clear()

    def proxyless_arch() -> None:
        net.requires_grad_(False)
        logits = alpha + mask
        pair = torch.multinomial(torch.softmax(logits.detach(), -1), 2)
        p_pair = torch.softmax(logits.gather(1, pair), -1)
        hard = F.one_hot(torch.multinomial(p_pair.detach(), 1).squeeze(1), 2).float()
        gates = torch.zeros_like(logits).scatter(1, pair, hard - p_pair.detach() + p_pair)
        F.cross_entropy(net(x, gates, active=pair.tolist()), y).backward()
        net.requires_grad_(True)
        clear()

    def darts_ce(weights: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(net(x, weights, active=everything), y)

    def darts_weight() -> None:
        darts_ce(torch.softmax(alpha + mask, -1).detach()).backward()
        clear()

    def darts_arch_first() -> None:
        torch.autograd.grad(darts_ce(torch.softmax(alpha + mask, -1)), alpha)
        clear()

    def darts_arch_second() -> None:  # the gradient computations of `strategies.darts`
        g = torch.autograd.grad(darts_ce(torch.softmax(alpha + mask, -1).detach()), params)
        backup = [q.detach().clone() for q in params]
        with torch.no_grad():
            for q, gq in zip(params, g):
                q.sub_(0.1 * gq)
        grads = torch.autograd.grad(darts_ce(torch.softmax(alpha + mask, -1)), [alpha, *params])
        eps = 0.01 / torch.sqrt(sum((d * d).sum() for d in grads[1:]))
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for q, b, d in zip(params, backup, grads[1:]):
                    q.copy_(b + sign * eps * d)
            torch.autograd.grad(darts_ce(torch.softmax(alpha + mask, -1)), alpha)
        with torch.no_grad():
            for q, b in zip(params, backup):
                q.copy_(b)
        clear()

    cases: list[tuple[str, Callable[[], None], torch.nn.Module]] = [
        ("standalone (sampled network)", loss_step(lambda: F.cross_entropy(alone(x), y), alone), alone),
        ("fbnet weight step (τ=5)", fbnet(False), net),
        ("fbnet θ step (τ=5)", fbnet(True), net),
        ("proxyless weight step (1 path)", proxyless_weight, net),
        ("proxyless α step (2 paths)", proxyless_arch, net),
        ("darts weight step", darts_weight, net),
        ("darts α step, first order", darts_arch_first, net),
        ("darts α step, second order", darts_arch_second, net),
    ]
    rows = [(name, measure(run, model, dev, burn_in=1, steps=args.steps)) for name, run, model in cases]
    print(f"space {space.name}, batch {args.batch}, device {dev}")
    print_table(rows, "standalone (sampled network)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
