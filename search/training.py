"""Training a network of the space from scratch: the recipe, the shapes to train at, the loop.

    cfg = TrainConfig(epochs=10)                          # the recipe of `search.recipe` + length, seed
    train = train_space_for(arch, scale="proxy")          # the space to train in (proxy or the LUT's)
    result = train_arch(arch.blocks, train, data, cfg, out="runs/a/train", resume=False)
    result["test_accuracy"], result["history"], result["model"]
    trained_arch(arch, train)                             # the arch in the space it was trained in

`TrainConfig` is the recipe of `search.recipe` (docs/training.md): Nesterov SGD at a peak lr
scaled with the batch size (0.1 × batch / 256), a linear warm-up then a cosine to 0 per step,
weight decay on conv and linear weights only, label smoothing 0.1, fan-out Kaiming-normal convs
and each residual block's last BN γ at 0. It trains every width and depth of the space alike.

`train_arch` writes `checkpoint.pt` and `metrics.csv` into `out` after every epoch (rank 0 only,
`search.checkpoint`) and continues from them with `resume=True`, ending where an uninterrupted run
ends. Under torchrun every rank trains on its shard of each batch (`search.distributed`); the
weights stay bit-identical on all ranks (`ranks_agree` checks it).

The command line that trains a found arch, exports it and times it on its device is
`python -m search.train` (`search.train`); `search.run`, `search.crossdevice`, `search.finalists`
and the one-shot strategies call this module directly.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from search.checkpoint import CheckpointError, check_same_run, load_checkpoint, save_checkpoint, write_metrics
from search.data import Dataset, batches
from search.distributed import (
    Dist,
    all_reduce_sum,
    digest,
    loss_weight,
    num_batches,
    ranks_agree,
    shard,
    shard_batches,
    sync_buffers,
    wrap,
)
from search.latency import check_proxy_space
from search.precision import precision_for
from search.recipe import RecipeConfig, init_weights, make_optimizer, make_schedule
from search.space import Arch, Network, Space, arch_ops, get_space

__all__ = [
    "TrainConfig",
    "train_arch",
    "evaluate",
    "build_proxy_model",
    "proxy_space_for",
    "train_space_for",
    "trained_arch",
    "select_device",
    "CHECKPOINT_FILE",
    "METRICS_FILE",
]

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.csv"


@dataclass(frozen=True)
class TrainConfig(RecipeConfig):
    """The recipe (`search.recipe.RecipeConfig`: batch size, peak lr scaled with it, warm-up +
    cosine, weight decay on conv/linear weights only, label smoothing, init) plus the run's length
    and seed."""

    epochs: int = 10  # full passes over the train split
    seed: int = 0  # weights, data order (the same on every rank)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs < 1:
            raise ValueError(f"epochs must be ≥ 1, got {self.epochs}")


def proxy_space_for(target: Space, resolution: int | None = None, width: float | None = None) -> Space:
    """The target space's family at the proxy resolution and width (names like fbnet-r32-w0.25)."""
    proxy = replace(
        target,
        resolution=resolution or target.resolution,
        width_mult=width or target.width_mult,
    )
    return get_space(proxy.name)


def train_space_for(
    arch: Arch,
    *,
    scale: str = "proxy",
    proxy_space: str | None = None,
    resolution: int | None = None,
    width: float | None = None,
) -> Space:
    """The space to train `arch` in: `proxy_space`, else the LUT's own (`scale="lut"`), else the
    search's proxy (`info.proxy_space`, else r32-w0.25); then `resolution`/`width` override."""
    target = get_space(arch.space)
    if scale not in ("proxy", "lut"):
        raise ValueError(f"--scale must be proxy or lut, got {scale!r}")
    if proxy_space and scale == "lut":
        raise ValueError("--proxy-space and --scale lut contradict each other; give one")
    if proxy_space:
        base = get_space(proxy_space)
    elif scale == "lut":
        base = target
    elif arch.info.get("proxy_space"):
        base = get_space(str(arch.info["proxy_space"]))
    else:
        base = proxy_space_for(target, 32, 0.25)
    if resolution or width:
        base = proxy_space_for(base, resolution, width)
    check_proxy_space(target, base)
    return base


def trained_arch(arch: Arch, train: Space) -> Arch:
    """`arch` in the space it is trained in; an explicit head width scales with the width."""
    target = get_space(arch.space)
    head = arch.head_channels
    if head is not None and train.name != target.name:
        head = train.ch(head / target.width_mult)
    return Arch(train.name, arch.blocks, head_channels=head, name=arch.name).validate(train)


def build_proxy_model(
    blocks: tuple[str, ...], proxy: Space, num_classes: int, head_channels: int | None = None
) -> Network:
    """The stand-alone network of `blocks` on the proxy's shapes with `num_classes` outputs."""
    space = replace(proxy, num_classes=num_classes)
    return Network(arch_ops(Arch(proxy.name, blocks, head_channels=head_channels), space))


def select_device(name: str) -> torch.device:
    """`cpu` or `cuda`; cuda only when asked for, and an error if it is not there."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--torch-device cuda: no CUDA device is visible to torch; use cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"--torch-device must be cpu or cuda, got {name!r}")
    return torch.device(name)


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256, dist: Dist = Dist()
) -> tuple[float, float]:
    """(mean CE, accuracy) in eval mode; under torchrun each rank evaluates its shard and the sums
    are all-reduced, so every rank returns the same numbers."""
    model.eval()
    total, correct, loss_sum = 0, 0, 0.0
    with torch.no_grad():
        for xb, yb in batches(shard(x, dist), shard(y, dist), batch_size):
            out = model(xb)
            loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
            correct += (out.argmax(1) == yb).sum().item()
            total += len(yb)
    loss_sum, correct, total = all_reduce_sum([loss_sum, correct, total], dist)
    return loss_sum / max(1, total), correct / max(1, total)


def _identity(arch: Arch, data: Dataset, cfg: TrainConfig) -> dict[str, Any]:
    """What makes a checkpoint belong to this run (see `search.checkpoint`)."""
    return {
        "arch": {"space": arch.space, "blocks": list(arch.blocks), "head_channels": arch.head_channels},
        "num_classes": data.num_classes,
        "data": {"name": data.name, "classes": list(data.classes), "train": len(data.y_train),
                 "test": len(data.y_test)},  # fmt: skip
        "config": asdict(cfg),
    }


def train_arch(
    blocks: tuple[str, ...],
    proxy: Space,
    data: Dataset,
    cfg: TrainConfig = TrainConfig(),
    *,
    device: torch.device = torch.device("cpu"),
    on_epoch: Callable[[dict[str, Any]], None] = lambda row: None,
    head_channels: int | None = None,
    dist: Dist | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    amp: bool = True,
) -> dict[str, Any]:
    """Train from scratch on the whole train split; returns test accuracy and the history.
    On cuda with `amp`, in mixed precision and channels-last (`search.precision`).

    With `out`, rank 0 writes `checkpoint.pt` and `metrics.csv` there after every epoch;
    `resume=True` continues from that checkpoint (CheckpointError when it is missing or from
    another run). `dist` (`search.distributed.setup`) trains data-parallel; `on_epoch(row)` is
    called on every rank with the same row. Also returned: the trained `model` (unwrapped),
    `weights_sha256`, `ranks_agree`, `world_size`, `resumed_from_epoch`."""
    dist = dist or Dist(device=device)
    device = dist.device if dist.is_distributed else device
    arch = Arch(proxy.name, tuple(blocks), head_channels=head_channels)
    identity = _identity(arch, data, cfg)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = build_proxy_model(arch.blocks, proxy, data.num_classes, head_channels)
    prec = precision_for(device, training=True, amp=amp)
    model = init_weights(model, init=cfg.init, zero_init_last=cfg.zero_init_last).to(device)
    model = model.to(memory_format=prec.memory_format())
    scaler = prec.scaler()
    data = data.to(device)
    per_epoch = num_batches(len(data.y_train), cfg.batch_size, dist)
    opt = make_optimizer(model, cfg)
    sched = make_schedule(opt, cfg, cfg.epochs * per_epoch, per_epoch)
    ckpt_path = Path(out) / CHECKPOINT_FILE if out is not None else None
    history: list[dict[str, Any]] = []
    start = 0
    if resume:
        if ckpt_path is None:
            raise CheckpointError("resume=True needs `out`, the folder holding checkpoint.pt")
        state = load_checkpoint(ckpt_path, dist)
        check_same_run(state, identity, where=str(ckpt_path))
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        gen.set_state(state["rng"]["data_order"])
        if device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        history, start = list(state["history"]), int(state["epoch"])
        if state.get("world_size", 1) != dist.world_size:
            log.warning("resuming a run trained with %s process(es) with %d: the data order is the same, "
                        "the result not bit-identical", state.get("world_size"), dist.world_size)  # fmt: skip
        log.info("resuming %s after epoch %d of %d", ckpt_path, start, cfg.epochs)
    net = wrap(model, dist)
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        net.train()
        loss_sum, correct, total = 0.0, 0, 0
        bar = tqdm(total=per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
                   disable=not (progress and dist.is_main))  # fmt: skip
        for xb, yb, n in shard_batches(data.x_train, data.y_train, cfg.batch_size, dist, generator=gen):
            with prec.autocast():
                logits = net(xb.contiguous(memory_format=prec.memory_format()))
                loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss * loss_weight(len(yb), n, dist)).backward()
            if cfg.clip_grad_norm is not None:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
            scaler.step(opt)
            scaler.update()
            sched.step()
            loss_sum += loss.item() * len(yb)
            correct += (logits.argmax(1) == yb).sum().item()
            total += len(yb)
            bar.update()
        bar.close()
        loss_sum, correct, total = all_reduce_sum([loss_sum, correct, total], dist)
        sync_buffers(model, dist)
        with prec.autocast():
            test_loss, test_acc = evaluate(model, data.x_test, data.y_test, dist=dist)
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / max(1, total),
            "train_acc": correct / max(1, total),
            "test_loss": test_loss,
            "test_acc": test_acc,
            "lr": lr,
            "epoch_s": time.perf_counter() - t0,
        }
        history.append(row)
        if ckpt_path is not None and dist.is_main:
            rng = {"torch": torch.get_rng_state(), "data_order": gen.get_state()}
            if device.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state(device)
            save_checkpoint(ckpt_path, {
                "identity": identity, "epoch": epoch + 1, "model": model.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": rng,
                "history": history, "world_size": dist.world_size,
                **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {}),
            })  # fmt: skip
            write_metrics(ckpt_path.with_name(METRICS_FILE), history)
        on_epoch(row)
    last = history[-1] if history else {"test_acc": 0.0, "test_loss": float("nan")}
    return {
        "test_accuracy": last["test_acc"],
        "test_loss": last["test_loss"],
        "history": history,
        "model": model,
        "weights_sha256": digest(model),
        "ranks_agree": ranks_agree(model, dist),
        "world_size": dist.world_size,
        "resumed_from_epoch": start if resume else None,
        "precision": prec.name,
    }
