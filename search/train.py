"""Train a found architecture from scratch on the proxy and report its test accuracy.

    python -m search.train --arch runs/NAME/arch.json [--data digits] [--epochs 10] [--json]

The arch names the LUT's space (e.g. `fbnet` at 224×224); it is trained on the proxy space that
the search used (recorded in `arch.json` as `info.proxy_space`), or the one given with
`--proxy-space` / `--resolution` / `--width`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from search.data import DataError, Dataset, batches, load_data
from search.space import Arch, ArchError, Network, Space, arch_ops, get_space, load_arch

__all__ = [
    "TrainConfig",
    "train_arch",
    "evaluate",
    "build_proxy_model",
    "proxy_space_for",
    "select_device",
    "main",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10  # full passes over the train split
    batch_size: int = 64
    lr: float = 0.1  # SGD, cosine-annealed per step to 0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    seed: int = 0


def proxy_space_for(target: Space, resolution: int | None = None, width: float | None = None) -> Space:
    """The target space's family at the proxy resolution and width (names like fbnet-r32-w0.25)."""
    proxy = replace(
        target,
        resolution=resolution or target.resolution,
        width_mult=width or target.width_mult,
    )
    return get_space(proxy.name)


def build_proxy_model(blocks: tuple[str, ...], proxy: Space, num_classes: int) -> Network:
    """The stand-alone network of `blocks` on the proxy's shapes with `num_classes` outputs."""
    space = replace(proxy, num_classes=num_classes)
    return Network(arch_ops(Arch(proxy.name, blocks), space))


def select_device(name: str) -> torch.device:
    """`cpu` or `cuda`; cuda only when asked for, and an error if it is not there."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device-train cuda: no CUDA device is visible to torch; use cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--device-train must be cpu or cuda, got {name!r}")
    return torch.device(name)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> tuple[float, float]:
    """(mean CE, accuracy) in eval mode."""
    model.eval()
    total, correct, loss_sum = 0, 0, 0.0
    with torch.no_grad():
        for xb, yb in batches(x, y, batch_size):
            out = model(xb)
            loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
            correct += (out.argmax(1) == yb).sum().item()
            total += len(yb)
    return loss_sum / max(1, total), correct / max(1, total)


def train_arch(
    blocks: tuple[str, ...],
    proxy: Space,
    data: Dataset,
    cfg: TrainConfig = TrainConfig(),
    *,
    device: torch.device = torch.device("cpu"),
    on_epoch: Callable[[dict[str, Any]], None] = lambda row: None,
) -> dict[str, Any]:
    """Train from scratch on the whole train split; returns test accuracy, the history and the model."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = build_proxy_model(blocks, proxy, data.num_classes).to(device)
    data = data.to(device)
    steps = cfg.epochs * max(1, -(-len(data.y_train) // cfg.batch_size))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    history = []
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        loss_sum, correct, total = 0.0, 0, 0
        for xb, yb in batches(data.x_train, data.y_train, cfg.batch_size, generator=gen):
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(yb)
            correct += (out.argmax(1) == yb).sum().item()
            total += len(yb)
        test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / total,
            "train_acc": correct / total,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "epoch_s": time.perf_counter() - t0,
        }
        history.append(row)
        on_epoch(row)
    return {"test_accuracy": history[-1]["test_acc"] if history else 0.0, "history": history, "model": model}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", required=True, help="arch JSON file (or a named arch)")
    parser.add_argument("--data", default="digits", help="digits | cifar10:DIR | imagefolder:DIR")
    parser.add_argument("--subset", type=int, help="train on this many images (seeded sample)")
    parser.add_argument("--proxy-space", help="proxy space name (default: the one the search used)")
    parser.add_argument("--resolution", type=int, help="proxy resolution (default: arch's proxy, else 32)")
    parser.add_argument("--width", type=float, help="proxy width multiplier (default: arch's proxy, else 0.25)")
    d = TrainConfig()
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--device-train", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object")
    parser.add_argument("--torch-threads", type=int, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        arch = load_arch(args.arch)
        target = get_space(arch.space)
        if args.proxy_space:
            proxy = get_space(args.proxy_space)
        elif args.resolution or args.width or "proxy_space" not in arch.info:
            proxy = proxy_space_for(target, args.resolution or 32, args.width or 0.25)
        else:
            proxy = get_space(arch.info["proxy_space"])
        data = load_data(args.data, resolution=proxy.resolution, subset=args.subset)
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
        device = select_device(args.device_train)
    except (ValueError, ArchError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    def show(row: dict[str, Any]) -> None:
        print(f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f}"
              f"  test loss {row['test_loss']:.3f} acc {row['test_acc']:.3f}  ({row['epoch_s']:.1f} s)")

    result = train_arch(arch.blocks, proxy, data, cfg, device=device, on_epoch=show)
    print(f"{arch.name or args.arch}: test accuracy {result['test_accuracy']:.4f} on {data.name} "
          f"({proxy.name}, {cfg.epochs} epochs)")
    if args.json:
        print(json.dumps({"arch_path": str(args.arch), "proxy_space": proxy.name, "data": data.name,
                          "epochs": cfg.epochs, "test_accuracy": result["test_accuracy"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
