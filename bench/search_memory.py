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

from bench.search_step import bench_parser, bench_setup, loss_step, measure, print_table, standalone_network, strategy_steps
from hwnas.flags import run_main


def main(argv: list[str] | None = None) -> int:
    args = bench_parser("bench.search_memory", __doc__, steps=3).parse_args(argv)
    dev, space, x, y, net = bench_setup(args)
    idx = torch.multinomial(torch.softmax(net.logit_mask, -1), 1).squeeze(1)
    alone = standalone_network(tuple(space.candidates_all[int(i)] for i in idx), space, 10).to(dev).train()
    cases: list[tuple[str, Callable[[], None], torch.nn.Module]] = [
        ("standalone (sampled network)", loss_step(lambda: F.cross_entropy(alone(x), y), alone), alone),
        *((name, run, net) for name, run in strategy_steps(net, x, y, idx)),
    ]
    rows = [(name, measure(run, model, dev, burn_in=1, steps=args.steps)) for name, run, model in cases]
    print(f"space {space.name}, batch {args.batch}, device {dev}")
    print_table(rows, "standalone (sampled network)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
