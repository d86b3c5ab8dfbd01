"""Time and memory of one FBNet supernet step vs one step of the stand-alone sampled network, and
the images/s of each strategy's steps.

    python -m bench.search_step [--space fbnet-r32-w0.25] [--batch 32] [--steps 5] [--torch-device cuda]

It imports torch and the `search` package's space and supernet only (no LUT, runtime or pandas),
so it runs on a bare GPU machine with nothing but torch installed beside the repository. On cuda
every step runs in the precision a search uses there (`search.precision`: bfloat16 autocast where
the GPU has it); the header names it.

Phases: build, burn-in steps, then timed steps (synchronised around each on CUDA). Memory is the
activation memory a step keeps for backward (bytes of the distinct storages autograd saves,
parameters excluded), measured with saved-tensor hooks on any device; on CUDA also the peak
allocated memory of the step above what was allocated before it. Rows, side by side:

    standalone             the sampled arch as a plain network (`build_proxy_model`)
    supernet τ=5 (all)     FBNet at the initial temperature: every mask weight is above the
                           threshold, all 9 paths run
    supernet τ=0.1         an annealed mask (most weights under the 1e-3 threshold)
    supernet one-hot       a one-hot mask: exactly one path per layer, ×1.0

then each strategy's weight and architecture steps (`strategy_steps`, shared with
`bench.search_memory`), and per strategy the images/s of one weight step plus one architecture
step on the same batch (FBNet at τ=5, its costliest; DARTS first and second order; ProxylessNAS
with two paths; evolution and random search train a one-shot supernet with single-path weight
steps and only evaluate archs, so theirs is the weight step alone).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import Callable

import torch
import torch.nn.functional as F

from hwnas.flags import add_torch_device, add_verbose, run_main
from search.precision import precision_for
from search.space import Arch, Network, arch_ops, get_space
from search.space.spaces import Space
from search.supernet import Supernet

__all__ = ["measure", "activation_bytes", "loss_step", "print_table", "bench_parser", "bench_setup",
           "standalone_network", "strategy_steps", "STRATEGY_STEPS"]  # fmt: skip


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


def standalone_network(blocks: tuple[str, ...], space: Space, num_classes: int) -> Network:
    """The stand-alone network of `blocks` (as `search.training.build_proxy_model` builds it, without
    importing the training module and the LUT store behind it)."""
    return Network(arch_ops(Arch(space.name, blocks), replace(space, num_classes=num_classes)))


# strategy → (its weight step, its architecture step or None), names of `strategy_steps` rows
STRATEGY_STEPS = {
    "fbnet": ("fbnet weight step (τ=5)", "fbnet θ step (τ=5)"),
    "proxyless": ("proxyless weight step (1 path)", "proxyless α step (2 paths)"),
    "darts (1st order)": ("darts weight step", "darts α step, first order"),
    "darts (2nd order)": ("darts weight step", "darts α step, second order"),
    "evolution / random (one-shot)": ("proxyless weight step (1 path)", None),
}


def strategy_steps(
    net: Supernet, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
) -> list[tuple[str, Callable[[], None]]]:
    """One step closure per strategy step, on the same batch and supernet; `idx` is the sampled
    path the single-path steps train."""
    alpha = torch.zeros(net.allowed.shape, device=x.device, requires_grad=True)
    mask = net.logit_mask
    everything = [list(m.columns) for m in net.mixed]
    params = list(net.parameters())

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

    return [
        ("fbnet weight step (τ=5)", fbnet(False)),
        ("fbnet θ step (τ=5)", fbnet(True)),
        ("proxyless weight step (1 path)", proxyless_weight),
        ("proxyless α step (2 paths)", proxyless_arch),
        ("darts weight step", darts_weight),
        ("darts α step, first order", darts_arch_first),
        ("darts α step, second order", darts_arch_second),
    ]


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
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --torch-device cuda: no CUDA device is visible to torch")
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
    alone = standalone_network(blocks, space, 10).to(dev).train()
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

    precision = precision_for(dev, training=False)

    def timed(run: Callable[[], None], model: torch.nn.Module) -> dict[str, float]:
        def step() -> None:
            with precision.autocast():
                run()

        return measure(step, model, dev, steps=args.steps)

    standalone = loss_step(lambda: F.cross_entropy(alone(x), y), alone)
    rows = [("standalone (sampled arch)", timed(standalone, alone))]
    for name, tau in (("supernet fbnet τ=5 (all paths)", 5.0), ("supernet fbnet τ=0.1 annealed", 0.1),
                      ("supernet fbnet one-hot mask", None)):  # fmt: skip
        r = timed(masked(tau), net)
        rows.append((f"{name} [{sum(net.active_paths) / len(net.active_paths):.1f} paths]", r))
    steps = {name: timed(run, net) for name, run in strategy_steps(net, x, y, idx)}
    rows += list(steps.items())
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"space {space.name}, batch {args.batch}, device {dev} ({name}), {precision.name}, "
          f"{torch.get_num_threads()} torch thread(s), threshold {args.threshold:g}")  # fmt: skip
    print_table(rows, "standalone (sampled arch)")
    print(f"\n{'strategy (weight + architecture step)':44s} {'ms':>9s} {'images/s':>10s}")
    for strategy, (w, a) in STRATEGY_STEPS.items():
        ms = steps[w]["step_ms"] + (steps[a]["step_ms"] if a else 0.0)
        print(f"{strategy:44s} {ms:9.1f} {args.batch * 1000 / ms:10.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
