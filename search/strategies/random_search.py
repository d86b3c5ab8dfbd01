"""Random search: the baseline every NAS method should beat (Li & Talwalkar, UAI 2019).

`cycles` archs drawn uniformly among those that meet the hard latency constraint (rejection with
the vectorised LUT predictor) — with a soft target, from the layer-wise distribution tilted
towards it — each scored with the same fitness proxy (`oneshot.fitness_proxy`: by default the
arch trained briefly from scratch) and budget as evolution; the fittest is the result.
"""

from __future__ import annotations

from .base import SearchContext, SearchResult, register_strategy
from .common import seed_everything
from .oneshot import fitness_proxy, sample_within_budget


@register_strategy("random")
class RandomSearch:
    name = "random"

    def run(self, ctx: SearchContext) -> SearchResult:
        cfg, lat = ctx.cfg, ctx.latency
        gen = seed_everything(cfg.seed)
        proxy = fitness_proxy(ctx, gen)
        best, best_fit, best_acc = None, float("-inf"), 0.0
        for i, idx in enumerate(sample_within_budget(lat, cfg.cycles, cfg.max_latency_us, gen, cfg.target_latency_us)):
            acc = proxy.accuracy(idx)
            fit = proxy.fitness(idx, acc)
            if fit > best_fit:
                best, best_fit, best_acc = idx, fit, acc
            ctx.on_epoch({"cycle": i, "phase": "random", "fitness": fit, "val_acc": acc,
                          "latency_us": float(lat.predict_batch_us(idx[None])[0]),
                          "best_fitness": best_fit})  # fmt: skip
        val_acc, test_acc = proxy.final_accuracy(best)
        return SearchResult(
            blocks=tuple(lat.blocks[int(i)] for i in best),
            arch_split_accuracy=val_acc,
            test_accuracy=test_acc,
            info={"fitness_val_accuracy": best_acc, "evaluated": cfg.cycles, "fitness": cfg.fitness,
                  "accuracy_of": proxy.accuracy_of},
        )
