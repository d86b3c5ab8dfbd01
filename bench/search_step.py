"""Time and memory of one FBNet supernet step vs one step of the stand-alone sampled network.

    python -m bench.search_step [--space fbnet-r32-w0.25] [--batch 32] [--steps 5] [--device cuda]

Phases: build, burn-in steps, then timed steps (synchronised around each on CUDA). Memory is the
activation memory a step keeps for backward (bytes of the distinct storages autograd saves,
parameters excluded), measured with saved-tensor hooks on any device; on CUDA also the peak
allocated memory of the step above what was allocated before it. Rows, side by side:

    standalone             the sampled arch as a plain network (`build_proxy_model`)
    supernet τ=5 (all)     FBNet at the initial temperature: every mask weight is above the
                           threshold, all 9 paths run
    supernet τ=0.1         an annealed mask (most weights under the 1e-3 threshold)
    supernet one-hot       a one-hot mask: exactly one path per layer, ×1.0
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
import torch.nn.functional as F

from hwnas.flags import add_torch_device, add_verbose, run_main
from search.space import get_space
from search.space.spaces import Space
from search.supernet import Supernet
from search.train import build_proxy_model

__all__ = ["measure", "activation_bytes", "loss_step", "print_table", "bench_parser", "bench_setup"]


def activation_bytes(fn: Callable[[], None], exclude: set[int]) -> int:
    """Run `fn` (forward + backward), summing the distinct storages autograd saves for backward
    (for a step with several graphs, e.g. DARTS second order, their sum: an upper bound)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr not in exclude:
            seen[ptr] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def loss_step(forward: Callable[[], torch.Tensor], model: torch.nn.Module) -> Callable[[], None]:
    """A step closure: forward, backward, drop the gradients."""

    def run() -> None:
        forward().backward()
        model.zero_grad(set_to_none=True)

    return run


def measure(
    run: Callable[[], None],
    model: torch.nn.Module,
    device: torch.device,
    *,
    burn_in: int = 2,
    steps: int = 5,
) -> dict[str, float]:
    """Median step time (ms), activation MB and CUDA peak MB of `run` (forward + backward)."""
    exclude = {p.untyped_storage().data_ptr() for p in model.parameters()}
    cuda = device.type == "cuda"
    for _ in range(burn_in):
        run()
    times, acts, peaks = [], [], []
    for _ in range(steps):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        acts.append(activation_bytes(run, exclude))
        if cuda:
            torch.cuda.synchronize()
            peaks.append((torch.cuda.max_memory_allocated() - base) / 2**20)
        times.append(time.perf_counter() - t0)
    times.sort()
    return {
        "step_ms": 1000 * times[len(times) // 2],
        "activations_mb": max(acts) / 2**20,
        "cuda_peak_mb": max(peaks) if peaks else float("nan"),
    }


def print_table(rows: list[tuple[str, dict[str, float]]], baseline: str) -> None:
    base = dict(rows)[baseline]
    print(f"{'case':44s} {'step ms':>9s} {'× time':>7s} {'act MB':>9s} {'× act':>7s} {'cuda MB':>9s}")
    for name, r in rows:
        print(f"{name:44s} {r['step_ms']:9.1f} {r['step_ms'] / base['step_ms']:7.2f} "
              f"{r['activations_mb']:9.2f} {r['activations_mb'] / base['activations_mb']:7.2f} "
              f"{r['cuda_peak_mb']:9.1f}")  # fmt: skip


def bench_parser(module: str, doc: str | None, steps: int) -> argparse.ArgumentParser:
    """The options both search benchmarks share."""
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--space", default="fbnet-r32-w0.25", help="space of the supernet (default fbnet-r32-w0.25)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--steps", type=int, default=steps, help=f"timed steps (default {steps})")
    add_torch_device(p, old=("--device",))
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    add_verbose(p)
    return p


def bench_setup(args: argparse.Namespace) -> tuple[torch.device, Space, torch.Tensor, torch.Tensor, Supernet]:
    """Seeded device, space, one batch (10 classes) and a fresh supernet in train mode."""
    torch.manual_seed(args.seed)
    dev = torch.device(args.torch_device)
    space = get_space(args.space)
    x = torch.randn(args.batch, 3, space.resolution, space.resolution, device=dev)
    y = torch.randint(0, 10, (args.batch,), device=dev)
    return dev, space, x, y, Supernet(space, 10).to(dev).train()


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("bench.search_step", __doc__, steps=5)
    p.add_argument("--threshold", type=float, default=1e-3, help="mask weights below this skip their path (default 1e-3)")
    args = p.parse_args(argv)
    dev, space, x, y, net = bench_setup(args)
    theta = torch.zeros(net.allowed.shape, device=dev, requires_grad=True)
    idx = torch.multinomial(torch.softmax(theta.detach() + net.logit_mask, -1), 1).squeeze(1)
    blocks = tuple(space.candidates_all[int(i)] for i in idx)
    alone = build_proxy_model(blocks, space, 10).to(dev).train()
    one_hot = F.one_hot(idx, theta.shape[1]).float()

    def masked(tau: float | None) -> Callable[[], None]:
        def step() -> None:
            if tau is None:
                m = one_hot + 0 * theta
            else:  # annealed θ concentrated on `idx`, as after search
                logits = theta + net.logit_mask + (0.0 if tau >= 1 else 5.0 * one_hot)
                m = F.gumbel_softmax(logits, tau=tau, dim=-1)
            F.cross_entropy(net(x, m, threshold=args.threshold), y).backward()
            net.zero_grad(set_to_none=True)
            theta.grad = None

        return step

    standalone = loss_step(lambda: F.cross_entropy(alone(x), y), alone)
    rows = [("standalone (sampled arch)", measure(standalone, alone, dev, steps=args.steps))]
    for name, tau in (("supernet fbnet τ=5 (all paths)", 5.0), ("supernet fbnet τ=0.1 annealed", 0.1),
                      ("supernet fbnet one-hot mask", None)):  # fmt: skip
        r = measure(masked(tau), net, dev, steps=args.steps)
        rows.append((f"{name} [{sum(net.active_paths) / len(net.active_paths):.1f} paths]", r))
    print(f"space {space.name}, batch {args.batch}, device {dev}, threshold {args.threshold:g}")
    print_table(rows, "standalone (sampled arch)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
