"""Regularized (aging) evolution (Real et al., AAAI 2019, https://arxiv.org/abs/1802.01548) under
a hard latency constraint checked with the vectorised LUT predictor.

Population of `population` random archs within the budget; each cycle samples `tournament` of
them, mutates the fittest (one layer's block replaced by another candidate of that layer,
re-drawn until the child meets the budget), evaluates the child and removes the oldest member.
`cycles` archs are evaluated in all (the initial population included). The result is the
fittest arch ever evaluated. Fitness: see `oneshot` (by default the arch's accuracy after a few
epochs of training from scratch, optionally with a soft latency term).
"""

from __future__ import annotations

from collections import deque

import torch

from .base import SearchContext, SearchResult, register_strategy
from .common import seed_everything
from .oneshot import fitness_proxy, sample_within_budget


@register_strategy("evolution")
class RegularizedEvolution:
    name = "evolution"

    def run(self, ctx: SearchContext) -> SearchResult:
        cfg, lat = ctx.cfg, ctx.latency
        if not 2 <= cfg.tournament <= cfg.population <= cfg.cycles:
            raise ValueError("evolution needs 2 ≤ tournament ≤ population ≤ cycles")
        gen = seed_everything(cfg.seed)
        proxy = fitness_proxy(ctx, gen)
        budget = cfg.max_latency_us
        population: deque[tuple[torch.Tensor, float]] = deque()
        history: list[tuple[torch.Tensor, float, float]] = []  # (arch, fitness, accuracy)

        def evaluate(idx: torch.Tensor) -> None:
            acc = proxy.accuracy(idx)
            fit = proxy.fitness(idx, acc)
            population.append((idx, fit))
            history.append((idx, fit, acc))
            ctx.on_epoch({"cycle": len(history) - 1, "phase": "evolution", "fitness": fit,
                          "val_acc": acc, "latency_us": float(lat.predict_batch_us(idx[None])[0]),
                          "best_fitness": max(h[1] for h in history)})  # fmt: skip

        for idx in sample_within_budget(lat, cfg.population, budget, gen, cfg.target_latency_us):
            evaluate(idx)
        while len(history) < cfg.cycles:
            picks = torch.randperm(len(population), generator=gen)[: cfg.tournament].tolist()
            parent = max((population[i] for i in picks), key=lambda m: m[1])[0]
            evaluate(self._mutate(parent, ctx, gen))
            population.popleft()  # the oldest dies
        best, _, best_acc = max(history, key=lambda h: h[1])
        val_acc, test_acc = proxy.final_accuracy(best)
        return SearchResult(
            blocks=tuple(lat.blocks[int(i)] for i in best),
            arch_split_accuracy=val_acc,
            test_accuracy=test_acc,
            info={"fitness_val_accuracy": best_acc, "evaluated": len(history), "fitness": cfg.fitness,
                  "accuracy_of": proxy.accuracy_of},
        )

    @staticmethod
    def _mutate(parent: torch.Tensor, ctx: SearchContext, gen: torch.Generator) -> torch.Tensor:
        """One layer gets another allowed block; re-drawn until the child meets the budget."""
        lat, budget = ctx.latency, ctx.cfg.max_latency_us
        for _ in range(1000):
            child = parent.clone()
            layer = int(torch.randint(lat.num_layers, (1,), generator=gen))
            options = [j for j in lat.allowed[layer].nonzero().flatten().tolist() if j != int(parent[layer])]
            child[layer] = options[int(torch.randint(len(options), (1,), generator=gen))]
            if budget is None or lat.predict_batch_us(child[None])[0] <= budget:
                return child
        return parent.clone()  # every one-layer change breaks the budget: re-evaluate the parent
