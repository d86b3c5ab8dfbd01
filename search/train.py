"""Train a found architecture from scratch, export it and time it on its device.

    python -m search.train --arch runs/NAME/arch.json [--data digits|cifar10:DIR|cifar100:DIR|imagefolder:DIR]
        [--classes K] [--workers W]
        [--scale proxy|lut | --resolution R --width W] [--epochs 10] [--out DIR] [--resume]
        [--export executorch,tflite,onnxruntime [--dtype int8]] [--device host|SERIAL] [--lut LUT]
        [--torch-device cuda [--no-amp] [--deterministic]] [--json] [-- PROFILER OPTIONS]
    torchrun --nproc_per_node N -m search.train ...        # data-parallel (gloo on CPU, nccl on GPUs)

How: `TrainConfig` (`search.training`, the loop this command drives) is the recipe of
`search.recipe` (docs/training.md): Nesterov SGD at a peak lr scaled with the batch size
(0.1 × batch / 256), a linear warm-up then a cosine to 0 per step, weight decay on conv and linear
weights only, label smoothing 0.1, fan-out Kaiming-normal convs and each residual block's last BN
γ at 0. It trains every width and depth of the space alike.

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
prediction (see `search.profiler_client.prediction`) or null when no LUT is known.

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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from hwnas.flags import add_device, add_luts_root, add_out, add_progress, add_runtime, add_torch_device, add_verbose, run_main
from lut.files import atomic_write
from lut.store import Lut
from search import profiler_client
from search.checkpoint import CheckpointError, load_checkpoint
from search.data import DataError, Dataset, add_data_arguments, load_data, materialize
from search.distributed import broadcast_object, setup, teardown
from search.precision import add_precision_arguments, repeatable
from search.space import Arch, ArchError, Space, load_arch
from search.training import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    TrainConfig,
    select_device,
    train_arch,
    train_space_for,
    trained_arch,
)

__all__ = ["build_parser", "main"]

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 32  # training images an int8 export is calibrated on (calibration.pt)
LUT_SCALE_DIR = "lut-scale"  # with --device after proxy training: the LUT's network, timed in its place


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
    plan.lut = profiler_client.find_lut(plan.arch, args.lut, root=args.luts_root, required=bool(args.measure))
    lut_rt = profiler_client.lut_runtime_of(plan.lut) if plan.lut is not None else None
    runtimes = list(dict.fromkeys(args.export or []))
    plan.dtype = args.dtype or "fp32"
    if args.measure and not runtimes:
        if lut_rt is None:
            raise ValueError("--device needs --export RUNTIME (no LUT is known whose runtime to use)")
        runtimes, plan.dtype = [lut_rt["runtime"]], args.dtype or lut_rt["dtype"]
    plan.threads = lut_rt["threads"] if lut_rt else 1
    if runtimes:
        checked = profiler_client.check(runtimes, plan.dtype, device=args.measure, threads=plan.threads, extra=extra)
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
        pred = profiler_client.prediction(plan.lut, plan.arch, plan.arch if timed else plan.trained, plan.data.num_classes)
        if timed:
            pred["notes"].insert(0, f"timed: the LUT's own network ({plan.arch.space}, untrained weights, in "
                                    f"{LUT_SCALE_DIR}/); the trained network is the proxy {plan.train.name}, "
                                    "exported but not timed")  # fmt: skip
        for rec in measured:
            rec["vs_lut_notes"] = profiler_client.comparison_notes(pred, rec, rec["dtype"])
        report["prediction"] = pred
    return report


def _print_human(report: dict[str, Any]) -> None:
    print(f"{report['arch']}: test accuracy {report['test_accuracy']:.4f} on {report['data']} "
          f"({report['train_space']}, {report['epochs']} epochs, {report['world_size']} process(es)); "
          f"wrote {report['out']}")  # fmt: skip
    lines = profiler_client.describe(report["exports"], None if report["lut_scale_exports"] else report["prediction"])
    if report["lut_scale_exports"]:
        lines.append(f"  timed in place of the proxy: the LUT's network ({report['space']}, untrained weights)")
        lines += profiler_client.describe(report["lut_scale_exports"], report["prediction"])
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
            except (ValueError, profiler_client.ProfilerCallError) as e:
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
        exports = profiler_client.export_and_measure(
            paths["model_json"], paths["weights"], plan.out, plan.suffixes, plan.dtype, layouts=plan.layouts,
            calibration=calibration,
            device=None if proxy_measured else args.measure, threads=plan.threads, extra=extra, progress=progress,
        )  # fmt: skip
        timed = _time_lut_scale(plan, args, extra, progress) if proxy_measured else []
    except profiler_client.ProfilerCallError as e:
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
    return profiler_client.time_lut_network(plan.arch, plan.data.num_classes, plan.out / LUT_SCALE_DIR, plan.suffixes,
                                   plan.dtype, layouts=plan.layouts, calibration_images=images, seed=plan.cfg.seed,
                                   device=args.measure, threads=plan.threads, extra=extra, progress=progress,
                                   info={"trained_network": str(plan.out / "model.json")})  # fmt: skip


if __name__ == "__main__":
    sys.exit(run_main(main))
