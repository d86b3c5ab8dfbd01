"""Train a found architecture from scratch, export it and time it on its device.

    python -m search.train --arch runs/NAME/arch.json [--data digits|cifar10:DIR|cifar100:DIR|imagefolder:DIR]
        [--classes K] [--workers W]
        [--scale proxy|lut | --resolution R --width W] [--epochs 10] [--out DIR] [--resume]
        [--export executorch,tflite,onnxruntime [--dtype int8]] [--device host|SERIAL] [--lut LUT]
        [--torch-device cuda [--no-amp] [--deterministic]] [--json] [-- PROFILER OPTIONS]
    torchrun --nproc_per_node N -m search.train ...        # data-parallel (gloo on CPU, nccl on GPUs)

How: `TrainConfig` is the recipe of `search.recipe` (docs/training.md): Nesterov SGD at a peak lr
scaled with the batch size (0.1 × batch / 256), a linear warm-up then a cosine to 0 per step,
weight decay on conv and linear weights only, label smoothing 0.1, fan-out Kaiming-normal convs
and each residual block's last BN γ at 0. It trains every width and depth of the space alike.

What is trained: the arch names the LUT's space (e.g. `fbnet` at 224×224, width 1.0). By default
it is trained on the proxy the search used (`info.proxy_space` in arch.json, else r32-w0.25);
`--scale lut` trains at the LUT's own resolution and width, so the deployed network runs the very
ops the LUT measured; `--resolution`/`--width`/`--proxy-space` pick any other shapes of the
family. The classifier has as many outputs as the data has classes.

Outputs in `--out` (default: `train/` beside arch.json; `runs/<name>/train` for a named arch),
written by rank 0 only:

    checkpoint.pt   after every epoch, atomically: weights, optimizer, schedule, RNG state and
                    the metric history (`search.checkpoint`); `--resume` continues from it and
                    ends where an uninterrupted run ends; `--fresh` discards it
    metrics.csv     per epoch: epoch, train_loss, train_acc, test_loss, test_acc, lr (at the
                    epoch's first step), epoch_s
    model.json      the trained network as an arch of the space it was trained in, with
                    `info.num_classes`, the LUT arch it comes from, accuracy and world size; its
                    input is an image normalised as `search.data` normalises the data
    model.pt        its state_dict (what `python -m profiler.deploy export` loads)
    model[-int8].pte|.tflite|.onnx   with --export: the network in that runtime's format, written
                    by the profiler's exporters (`python -m profiler.deploy export`); int8 is
                    calibrated on 32 training images (calibration.pt)
    measure-<runtime>[-int8]-<device>.json   with --device: raw samples and their statistics
    lut-scale/      with --device after proxy training: the LUT's network (model.json, model.pt,
                    its exports and measure-*.json), timed in the proxy's place
    report.json     everything below, also the last line printed with --json

`--device host|SERIAL` times the network the LUT predicts with the profiler's round loop and
puts the median (`measured_latency_us`, with p10/p90 and n) beside the LUT's prediction of the
arch (additive sum and corrected), naming whatever else differs (classifier width, runtime,
device). Trained at the LUT's scale, that is the trained network's export. Trained on a proxy
(other shapes, microseconds where the LUT predicts milliseconds), the proxy is exported but not
timed: the LUT's own network (the arch at the LUT's resolution and width, this data's
classifier, untrained weights — dense kernels take as long whatever their values) is exported to
`lut-scale/` and timed in its place (`lut_scale_exports`). Without `--export`, `--device`
exports in the LUT's runtime. Options after
`--` go to the measurement unchanged: the protocol (`--rounds`, `--warmup`, `--runs`,
`--threads`) and the phone options of `profiler.run` (`--runner NAME=PATH`, `--adb-port`,
`--core-mask`, ...). Runtimes, dtype and target are checked before training starts.

The JSON line: arch_path, space, train_space (and proxy_space, the same), data, num_classes,
epochs, world_size, test_accuracy, test_loss, checkpoint, metrics_csv, model_path,
model_arch_path, weights_sha256, ranks_agree, exports (one object per runtime: export_path,
sha256, size_bytes, and with --device at the LUT's scale measured_latency_us, stats, device_id,
measure_path), lut_scale_exports (the same for the LUT's network timed after proxy training, else
empty); export_path, sha256, size_bytes of the first export and measured_latency_us of the first
timed one at top level;
prediction (see `search.deploy.prediction`) or null when no LUT is known.

Under torchrun every rank trains on its shard of each batch (`search.distributed`); the weights
stay bit-identical on all ranks (`ranks_agree` checks it) and only rank 0 writes or exports.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from hwnas.flags import add_device, add_luts_root, add_out, add_progress, add_runtime, add_torch_device, add_verbose, run_main
from lut.files import atomic_write
from lut.store import Lut
from search import deploy
from search.checkpoint import CheckpointError, check_same_run, load_checkpoint, save_checkpoint, write_metrics
from search.data import DataError, Dataset, add_data_arguments, batches, load_data, materialize
from search.distributed import (
    Dist,
    all_reduce_sum,
    broadcast_object,
    digest,
    loss_weight,
    num_batches,
    ranks_agree,
    setup,
    shard,
    shard_batches,
    sync_buffers,
    teardown,
    wrap,
)
from search.latency import check_proxy_space
from search.precision import add_precision_arguments, precision_for, repeatable
from search.recipe import RecipeConfig, init_weights, make_optimizer, make_schedule
from search.space import Arch, ArchError, Network, Space, arch_ops, get_space, load_arch

__all__ = [
    "TrainConfig",
    "train_arch",
    "evaluate",
    "build_proxy_model",
    "proxy_space_for",
    "train_space_for",
    "trained_arch",
    "select_device",
    "main",
]

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.csv"
CALIBRATION_IMAGES = 32  # training images an int8 export is calibrated on (calibration.pt)
LUT_SCALE_DIR = "lut-scale"  # with --device after proxy training: the LUT's network, timed in its place


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


# --- the CLI -------------------------------------------------------------------------------------
@dataclass
class _Plan:
    """Everything a run needs, checked before training starts."""

    arch: Arch  # in the LUT's space
    train: Space  # the space trained in
    trained: Arch  # the arch in that space
    data: Dataset
    cfg: TrainConfig
    out: Path
    dtype: str = "fp32"  # of the exports
    threads: int = 1  # of the measurement: the LUT's
    lut: Lut | None = None
    suffixes: dict[str, str] = field(default_factory=dict)  # runtime to export → its file suffix
    layouts: dict[str, str] = field(default_factory=dict)  # runtime → I/O layout (default: its own)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m search.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--arch", required=True, help="arch JSON file (or a named arch)")
    add_data_arguments(p)
    g = p.add_argument_group("shapes")
    g.add_argument("--scale", choices=["proxy", "lut"], default="proxy",
                   help="proxy (default): the search's proxy; lut: the LUT's own resolution and width")
    g.add_argument("--proxy-space", help="train in this space (same family), e.g. fbnet-r64-w0.5")
    g.add_argument("--resolution", type=int, help="override the resolution")
    g.add_argument("--width", type=float, help="override the width multiplier")
    d = TrainConfig()
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"training epochs (default {d.epochs})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch (split over ranks)")
    p.add_argument("--lr", type=float, default=d.lr,
                   help=f"peak learning rate (default: {d.lr_base:g} × batch size / {d.lr_base_batch})")
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs, help="linear warm-up before the cosine")
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of weights, data order and subset (default {d.seed})")
    add_out(p, help="output folder (default: train/ beside arch.json, runs/<name>/train)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--fresh", action="store_true", help="discard a checkpoint in --out and start over")
    g = p.add_argument_group("deploy")
    add_runtime(g, flag="--export", dest="export", multiple=True,
                help="export the trained network for these runtimes (comma-separated)")
    g.add_argument("--dtype", help="fp32 (default) or int8 (executorch, onnxruntime)")
    add_device(g, dest="measure", old=("--measure",), help="where to time each export: host or an adb serial")
    g.add_argument("--lut", help="LUT to predict with (default: the one arch.json names)")
    add_luts_root(g)
    add_torch_device(p)
    p.add_argument("--torch-threads", type=int, help="torch intra-op threads (default: torch's)")
    add_precision_arguments(p)
    add_progress(p)
    add_verbose(p)
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    return p


def _default_out(arch_arg: str, arch: Arch) -> Path:
    path = Path(arch_arg)
    if path.is_file():
        return path.parent / "train"
    return Path("runs") / re.sub(r"[^A-Za-z0-9_.-]+", "-", arch.label) / "train"


def _plan(args: argparse.Namespace) -> _Plan:
    """Inputs every rank reads the same way (no files written, no subprocess)."""
    arch = load_arch(args.arch)
    train = train_space_for(arch, scale=args.scale, proxy_space=args.proxy_space,
                            resolution=args.resolution, width=args.width)  # fmt: skip
    trained = trained_arch(arch, train)
    select_device(args.torch_device)
    if args.resume and args.fresh:
        raise ValueError("--resume continues a run, --fresh discards it; give one")
    if args.dtype and not args.export and not args.measure:
        raise ValueError("--dtype applies to --export; add --export RUNTIME")
    data = load_data(args.data, resolution=train.resolution, subset=args.subset, classes=args.classes,
                     workers=args.workers)  # fmt: skip
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      warmup_epochs=args.warmup_epochs)  # fmt: skip
    out = Path(args.out) if args.out else _default_out(args.arch, arch)
    return _Plan(arch, train, trained, data, cfg, out)


def _preflight(plan: _Plan, args: argparse.Namespace, extra: list[str]) -> None:
    """Rank 0: the checks that read the output folder, the LUT or ask the profiler."""
    ckpt = plan.out / CHECKPOINT_FILE
    if args.resume:
        load_checkpoint(ckpt)  # a clear error now rather than after the process group started
    elif ckpt.exists() and not args.fresh:
        raise CheckpointError(f"{plan.out} holds a run already ({ckpt}); --resume continues it, "
                              "--fresh starts over, or choose another --out")  # fmt: skip
    if extra and not args.measure:
        raise ValueError(f"options after -- ({' '.join(extra)}) are for the measurement; add --device host|SERIAL")
    plan.lut = deploy.find_lut(plan.arch, args.lut, root=args.luts_root, required=bool(args.measure))
    lut_rt = deploy.lut_runtime_of(plan.lut) if plan.lut is not None else None
    runtimes = list(dict.fromkeys(args.export or []))
    plan.dtype = args.dtype or "fp32"
    if args.measure and not runtimes:
        if lut_rt is None:
            raise ValueError("--device needs --export RUNTIME (no LUT is known whose runtime to use)")
        runtimes, plan.dtype = [lut_rt["runtime"]], args.dtype or lut_rt["dtype"]
    plan.threads = lut_rt["threads"] if lut_rt else 1
    if runtimes:
        checked = deploy.check(runtimes, plan.dtype, device=args.measure, threads=plan.threads, extra=extra)
        plan.suffixes = {r["runtime"]: r["suffix"] for r in checked["runtimes"]}
        if lut_rt is not None and lut_rt["runtime"] in plan.suffixes:  # the LUT's runtime: its layout too
            plan.layouts = {lut_rt["runtime"]: lut_rt["layout"]}
    if args.fresh:
        for name in (CHECKPOINT_FILE, METRICS_FILE):
            (plan.out / name).unlink(missing_ok=True)


def _split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def _report(plan: _Plan, args: argparse.Namespace, result: dict[str, Any], paths: dict[str, Path],
            exports: list[dict[str, Any]], timed: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    report: dict[str, Any] = {
        "arch_path": str(args.arch),
        "arch": plan.arch.label,
        "space": plan.arch.space,
        "train_space": plan.train.name,
        "proxy_space": plan.train.name,  # the name earlier versions printed; same as train_space
        "scale": "lut" if plan.train.name == plan.arch.space else "proxy",
        "data": plan.data.name,
        "num_classes": plan.data.num_classes,
        "epochs": plan.cfg.epochs,
        "world_size": result["world_size"],
        "test_accuracy": result["test_accuracy"],
        "test_loss": result["test_loss"],
        "resumed_from_epoch": result["resumed_from_epoch"],
        "weights_sha256": result["weights_sha256"],
        "ranks_agree": result["ranks_agree"],
        "out": str(plan.out),
        "checkpoint": str(paths["checkpoint"]),
        "metrics_csv": str(paths["metrics"]),
        "model_path": str(paths["weights"]),
        "model_arch_path": str(paths["model_json"]),
        "exports": exports,
        "lut_scale_exports": timed,
        "prediction": None,
    }
    if exports:
        report.update({k: exports[0][k] for k in ("export_path", "sha256", "size_bytes")})
    measured = [r for r in (timed or exports) if "measured_latency_us" in r]
    if measured:
        report["measured_latency_us"] = measured[0]["measured_latency_us"]
    if plan.lut is not None:  # of the network that was timed: the LUT-scale one when the proxy was trained
        pred = deploy.prediction(plan.lut, plan.arch, plan.arch if timed else plan.trained, plan.data.num_classes)
        if timed:
            pred["notes"].insert(0, f"timed: the LUT's own network ({plan.arch.space}, untrained weights, in "
                                    f"{LUT_SCALE_DIR}/); the trained network is the proxy {plan.train.name}, "
                                    "exported but not timed")  # fmt: skip
        for rec in measured:
            rec["vs_lut_notes"] = deploy.comparison_notes(pred, rec, rec["dtype"])
        report["prediction"] = pred
    return report


def _print_human(report: dict[str, Any]) -> None:
    print(f"{report['arch']}: test accuracy {report['test_accuracy']:.4f} on {report['data']} "
          f"({report['train_space']}, {report['epochs']} epochs, {report['world_size']} process(es)); "
          f"wrote {report['out']}")  # fmt: skip
    lines = deploy.describe(report["exports"], None if report["lut_scale_exports"] else report["prediction"])
    if report["lut_scale_exports"]:
        lines.append(f"  timed in place of the proxy: the LUT's network ({report['space']}, untrained weights)")
        lines += deploy.describe(report["lut_scale_exports"], report["prediction"])
    for line in lines:
        print(line)


def main(argv: list[str] | None = None) -> int:
    own, extra = _split_passthrough(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(own)
    rank = int(os.environ.get("RANK", "0") or 0)
    level = logging.WARNING if rank != 0 else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(message)s")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    repeatable(args.deterministic)
    try:
        plan = _plan(args)
    except (ValueError, ArchError, DataError) as e:  # every rank fails alike
        print(f"error: {e}", file=sys.stderr)
        return 2
    dist = setup(args.torch_device)
    show_progress = args.progress
    try:
        error = None
        if dist.is_main:
            try:
                _preflight(plan, args, extra)
            except (ValueError, deploy.ProfilerCallError) as e:
                error = str(e)
        error = broadcast_object(error, dist)
        if error is not None:
            if dist.is_main:
                print(f"error: {error}", file=sys.stderr)
            return 2

        def show(row: dict[str, Any]) -> None:
            if dist.is_main:
                print(f"epoch {row['epoch']:3d}  train loss {row['train_loss']:.3f} acc {row['train_acc']:.3f}"
                      f"  test loss {row['test_loss']:.3f} acc {row['test_acc']:.3f}  lr {row['lr']:.4f}"
                      f"  ({row['epoch_s']:.1f} s)", flush=True)  # fmt: skip

        try:
            result = train_arch(plan.trained.blocks, plan.train, plan.data, plan.cfg, device=dist.device,
                                on_epoch=show, head_channels=plan.trained.head_channels, dist=dist,
                                out=plan.out, resume=args.resume, progress=show_progress, amp=args.amp)  # fmt: skip
        except CheckpointError as e:
            if dist.is_main:
                print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            ckpt = plan.out / CHECKPOINT_FILE
            if dist.is_main and ckpt.exists():
                print(f"interrupted: the finished epochs are in {ckpt}; run the same command with --resume "
                      "to continue", file=sys.stderr)  # fmt: skip
            elif dist.is_main:
                print("interrupted before the first epoch finished; nothing to resume", file=sys.stderr)
            return 130
    finally:
        teardown(dist)
    if not dist.is_main:
        return 0
    return _finish(plan, args, extra, result, show_progress)


def _finish(plan: _Plan, args: argparse.Namespace, extra: list[str], result: dict[str, Any], progress: bool) -> int:
    """Rank 0 after training: model files, exports, measurements, the report."""
    paths = {"checkpoint": plan.out / CHECKPOINT_FILE, "metrics": plan.out / METRICS_FILE,
             "weights": plan.out / "model.pt", "model_json": plan.out / "model.json"}  # fmt: skip
    info = {
        "num_classes": plan.data.num_classes,
        "classes": list(plan.data.classes),
        "lut_arch": {k: v for k, v in plan.arch.to_dict().items() if k != "info"},
        "lut": plan.arch.info.get("lut"),
        "data": plan.data.name,
        "epochs": plan.cfg.epochs,
        "test_accuracy": result["test_accuracy"],
        "world_size": result["world_size"],
        "weights_sha256": result["weights_sha256"],
    }
    model_arch = replace(plan.trained, info=info)
    atomic_write(paths["model_json"], model_arch.to_json(indent=2) + "\n")
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in result["model"].state_dict().items()}, buf)
    atomic_write(paths["weights"], buf.getvalue())
    calibration = None
    if plan.suffixes and plan.dtype != "fp32":  # quantize on the network's own inputs, not noise
        gen = torch.Generator().manual_seed(plan.cfg.seed)
        pick = torch.randperm(len(plan.data.y_train), generator=gen)[:CALIBRATION_IMAGES]
        buf = io.BytesIO()
        torch.save(materialize(plan.data.x_train[pick]).cpu().contiguous(), buf)
        calibration = atomic_write(plan.out / "calibration.pt", buf.getvalue())
    status = 0
    proxy_measured = bool(args.measure) and plan.train.name != plan.arch.space
    try:
        exports = deploy.export_and_measure(
            paths["model_json"], paths["weights"], plan.out, plan.suffixes, plan.dtype, layouts=plan.layouts,
            calibration=calibration,
            device=None if proxy_measured else args.measure, threads=plan.threads, extra=extra, progress=progress,
        )  # fmt: skip
        timed = _time_lut_scale(plan, args, extra, progress) if proxy_measured else []
    except deploy.ProfilerCallError as e:
        print(f"error: {e}\n(the trained model is saved in {plan.out}; re-run with --resume to export "
              "again without training)", file=sys.stderr)  # fmt: skip
        exports, timed, status = [], [], 1
    report = _report(plan, args, result, paths, exports, timed)
    atomic_write(plan.out / "report.json", json.dumps(report, indent=2) + "\n")
    _print_human(report)
    if args.json:
        print(json.dumps(report))
    return status


def _time_lut_scale(plan: _Plan, args: argparse.Namespace, extra: list[str], progress: bool) -> list[dict[str, Any]]:
    """Trained on a proxy of other shapes: time the network the LUT predicts in its place."""
    pick = torch.randperm(len(plan.data.y_train), generator=torch.Generator().manual_seed(plan.cfg.seed))
    images = materialize(plan.data.x_train[pick[:CALIBRATION_IMAGES]]).cpu() if plan.dtype != "fp32" else None
    return deploy.time_lut_network(plan.arch, plan.data.num_classes, plan.out / LUT_SCALE_DIR, plan.suffixes,
                                   plan.dtype, layouts=plan.layouts, calibration_images=images, seed=plan.cfg.seed,
                                   device=args.measure, threads=plan.threads, extra=extra, progress=progress,
                                   info={"trained_network": str(plan.out / "model.json")})  # fmt: skip


if __name__ == "__main__":
    sys.exit(run_main(main))
