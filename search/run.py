"""Device-targeted architecture search driven by a LUT: `python -m search.run`.

    python -m search.run --lut luts/pixel7/fbnet/executorch-t1 --strategy fbnet \\
        --data digits --epochs 8 --beta 0.6 --out runs/fbnet_pixel7 [--json]
    python -m search.run --lut ... --target-latency-ms 12 --out runs/at_12ms   # soft target

The LUT fixes the latency (its space, e.g. `fbnet` at 224×224); the supernet trains on a proxy of
the same family (`--resolution`, `--width`, default 32 and 0.25) so that it fits on a CPU.
Outputs in `--out`:

    arch.json    the found arch in the LUT's space: blocks, predicted latency (the number
                 `python -m lut predict LUT --arch arch.json` prints), the LUT's device id /
                 runtime / version / content hash, accuracies by split, the K sampled archs
    log.csv      one row per epoch (strategy-specific columns, e.g. loss, accuracy, expected
                 latency, τ, mean θ entropy, argmax_changes: layers whose argmax changed)
    theta.csv    θ per layer (strategies with architecture parameters), and theta.png
    samples.csv  the K sampled archs and their predicted latency

Accuracies of the found arch, each named for its split (the train split of the data is divided
into the weights split and the validation split — the architecture split, which no weight step
sees; the test split is the dataset's own):

    val_accuracy           supernet weights, BN statistics recalibrated on the weights split,
                           measured on the validation split (evolution and random search with
                           their default fitness: the arch trained --fitness-epochs from scratch
                           on the weights split; `accuracy_of` says which)
    test_accuracy          the same weights on the test split
    trained_test_accuracy  the arch trained from scratch (`search.train`) for --train-epochs on
                           the whole train split, measured on the test split (absent with 0)

With `--json` the last line printed is one JSON object (arch_path, predicted_latency_us, the
accuracies above, theta_entropy, ...). The workflow: profile → search → measure:

    python -m profiler.run --device SERIAL --space fbnet --runtime executorch
    python -m search.run --lut DEVICE_ID/fbnet/executorch-t1 --strategy fbnet --out runs/a
    python -m profiler.run --device SERIAL --arch runs/a/arch.json
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lut.files import atomic_write
from search.data import load_data
from search.distributed import Dist, DistributedError, ranks_agree, setup, teardown
from search.latency import LatencyModel, check_proxy_space, resolve_lut
from search.plots import plot_theta
from search.space import Arch, Space, get_space
from search.strategies import STRATEGIES, STRATEGY_DEFAULTS, SearchConfig, SearchContext, get_strategy
from search.strategies.common import ALTERNATE, TAU_SCHEDULES, check_budget
from search.strategies.objective import LATENCY_LOSSES, SearchDivergedError
from search.strategies.oneshot import FITNESS
from search.train import TrainConfig, proxy_space_for, select_device, train_arch

__all__ = ["run_search", "write_outputs", "add_search_arguments", "config_from_args", "latency_model", "main"]

log = logging.getLogger(__name__)


def run_search(
    cfg: SearchConfig,
    latency: LatencyModel,
    proxy: Space,
    data_spec: str = "digits",
    *,
    out: str | Path,
    subset: int | None = None,
    device: torch.device = torch.device("cpu"),
    progress: bool = False,
    train_epochs: int = 0,
    dist: Dist | None = None,
) -> dict[str, Any]:
    """Run one search and write its outputs to `out`; returns the summary (the --json object).
    With `train_epochs`, the found arch is then trained from scratch (`search.train.train_arch`).

    Under torchrun (`dist`, from `search.distributed.setup`), every rank runs the same search on
    its shard of each training batch, with gradients averaged over ranks at every step; the ranks'
    θ and found arch are compared at the end (`ranks_agree`, recorded with `world_size` in
    arch.json's info) and only rank 0 writes files."""
    check_proxy_space(latency.space, proxy)
    check_budget(latency, cfg.max_latency_us)
    get_strategy(cfg.strategy)  # an unknown name fails before any data is loaded
    cfg = cfg.resolved()  # the strategy's defaults for what was left None (arch.json records them)
    data = load_data(data_spec, resolution=proxy.resolution, subset=subset)
    rows: list[dict[str, Any]] = []
    dist = dist or Dist(device=device)
    device = dist.device if dist.is_distributed else device

    def on_epoch(row: dict[str, Any]) -> None:
        rows.append(row)
        if dist.is_main:
            log.info("  ".join(f"{k} {_fmt(v)}" for k, v in row.items()))

    ctx = SearchContext(cfg, data.to(device), latency, proxy, device, on_epoch, progress and dist.is_main, dist)
    t0 = time.perf_counter()
    result = get_strategy(cfg.strategy).run(ctx)
    elapsed_s = time.perf_counter() - t0
    found = torch.tensor([latency.blocks.index(b) for b in result.blocks])
    agree = ranks_agree([found] if result.theta is None else [found, result.theta], dist)
    if not agree:
        raise DistributedError("the ranks ended the search with different architectures or θ; see the digests above")
    result.info.update(world_size=dist.world_size, ranks_agree=agree)
    predicted = latency.predict_us(result.blocks)
    budget = cfg.max_latency_us
    if budget is not None and predicted > budget:
        raise RuntimeError(  # a strategy bug, never a user error
            f"{cfg.strategy} returned an arch of {predicted:.0f} µs over the {budget:.0f} µs budget"
        )
    samples = [{"blocks": list(s), "predicted_latency_us": latency.predict_us(s)} for s in result.samples]
    accuracy: dict[str, Any] = {"val_accuracy": result.val_accuracy, "test_accuracy": result.test_accuracy}
    if train_epochs > 0:
        t1 = time.perf_counter()
        trained = train_arch(result.blocks, proxy, data, TrainConfig(epochs=train_epochs, seed=cfg.seed), device=device,
                             dist=dist)  # fmt: skip
        accuracy.update(trained_test_accuracy=trained["test_accuracy"], trained_epochs=train_epochs,
                        train_s=time.perf_counter() - t1)  # fmt: skip
    summary: dict[str, Any] = {
        "strategy": cfg.strategy,
        "predicted_latency_us": predicted,
        "predicted_latency_ms": predicted / 1000.0,
        **accuracy,
        "target_latency_us": cfg.target_latency_us,
        "max_latency_us": budget,
        "lut": latency.lut_info,
        "latency_correction": latency.correction_info,
        "predicted_ops": latency.predicted_ops(result.blocks),  # ops the LUT's predictor made, not measured
        "space": latency.space.name,
        "proxy_space": proxy.name,
        "data": data.name,
        "search_s": elapsed_s,
        "world_size": dist.world_size,
        **{k: result.info[k] for k in ("theta_entropy", "argmax_stable_epochs", "accuracy_of") if k in result.info},
    }
    arch = Arch(
        latency.space.name,
        result.blocks,
        name=Path(out).name,
        info={**summary, "config": dataclasses.asdict(cfg), "samples": samples, **result.info},
    ).validate(latency.space)
    if not dist.is_main:
        return {"arch_path": None, **summary, "blocks": list(result.blocks)}
    paths = write_outputs(out, arch, rows, result.theta, latency.blocks, samples)
    return {"arch_path": str(paths["arch"]), **summary, "blocks": list(result.blocks)}


def write_outputs(
    out: str | Path,
    arch: Arch,
    rows: list[dict[str, Any]],
    theta: torch.Tensor | None,
    blocks: tuple[str, ...],
    samples: list[dict[str, Any]],
) -> dict[str, Path]:
    """arch.json, log.csv, samples.csv and (with θ) theta.csv + theta.png under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"arch": out / "arch.json", "log": out / "log.csv", "samples": out / "samples.csv"}
    atomic_write(paths["arch"], arch.to_json(indent=2) + "\n")
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with paths["log"].open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    with paths["samples"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rank", "predicted_latency_us", "blocks"])
        for i, s in enumerate(samples):
            w.writerow([i, f"{s['predicted_latency_us']:.3f}", " ".join(s["blocks"])])
    if theta is not None:
        paths["theta"] = out / "theta.csv"
        with paths["theta"].open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["layer", *blocks])
            for i, row in enumerate(theta.tolist()):
                w.writerow([i, *(f"{v:.6g}" for v in row)])
        paths["plot"] = plot_theta(
            theta, blocks, out / "theta.png", chosen=arch.blocks,
            title=f"{arch.info.get('strategy', '')} on {arch.space}: softmax(θ) per layer",
        )  # fmt: skip
    return paths


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


TRAIN_EPOCHS = 10  # default --train-epochs

_FLAGS: dict[str, tuple[str, type, str]] = {
    # config field: (flag, type, help)
    "epochs": ("--epochs", int, "search epochs after warm-up"),
    "warmup_epochs": ("--warmup-epochs", int, "epochs that train weights only"),
    "batch_size": ("--batch-size", int, "minibatch size"),
    "w_fraction": ("--w-fraction", float, "share of train data for weights (rest: θ)"),
    "w_lr": ("--w-lr", float, "SGD learning rate of the weights"),
    "theta_lr": ("--theta-lr", float, "Adam learning rate of θ / α"),
    "entropy_weight": ("--entropy-weight", float, "γ of the commitment term γ(t)·Σ_l H(softmax(θ_l)), ramped 0 → γ; 0 = off"),
    "alternate": ("--alternate", str, "batch: a θ step after every weight step | epoch: a pass each (FBNet paper)"),
    "tau_schedule": ("--tau-schedule", str, "fitted: τ0 → --tau-end over the epochs | paper: 5·exp(−0.045·epoch)"),
    "tau0": ("--tau0", float, "initial Gumbel-softmax temperature (None: the schedule's)"),
    "tau_end": ("--tau-end", float, "temperature of the last epoch (fitted schedule)"),
    "tau_decay": ("--tau-decay", float, "τ ← τ0·exp(−decay·epoch) (the paper's form with this decay)"),
    "mask_threshold": ("--mask-threshold", float, "skip mixed-op paths with mask ≤ this"),
    "latency_loss": ("--latency-loss", str, "mul | add | target | none (default: the strategy's own)"),
    "alpha": ("--alpha", float, "α of CE·α·log(LAT)^β"),
    "beta": ("--beta", float, "β of CE·α·log(LAT)^β"),
    "lambda_lat": ("--lambda", float, "λ of CE + λ·LAT/ref"),
    "ref_latency_ms": ("--ref-latency-ms", float, "ref of the additive form"),
    "target_latency_ms": ("--target-latency-ms", float, "soft latency target T (ms): CE·(LAT/T)^(w·sign(LAT−T))"),
    "target_weight": ("--target-weight", float, "w of the soft target"),
    "max_latency_ms": ("--max-latency-ms", float, "hard latency constraint (ms)"),
    "num_samples": ("--samples", int, "K archs sampled from softmax(θ) after search"),
    "recalib_batches": ("--recalib-batches", int, "BN recalibration batches before a path is evaluated"),
    "seed": ("--seed", int, "random seed"),
    "proxyless_paths": ("--proxyless-paths", int, "paths per layer in the proxyless arch step: 1, 2, 0 = all"),
    "darts_order": ("--darts-order", int, "1 or 2"),
    "darts_xi": ("--darts-xi", float, "DARTS virtual-step learning rate ξ"),
    "darts_tau_end": ("--darts-tau-end", float, "DARTS mixture temperature of the last epoch (softmax(α/τ), τ 1 → this)"),
    "fitness": ("--fitness", str, "evolution / random: train (each arch trained from scratch) | oneshot (SPOS supernet)"),
    "fitness_epochs": ("--fitness-epochs", int, "epochs each arch is trained for its fitness (--fitness train)"),
    "population": ("--population", int, "evolution population size"),
    "tournament": ("--tournament", int, "evolution tournament sample size"),
    "cycles": ("--cycles", int, "archs evaluated by evolution / random"),
    "eval_batches": ("--eval-batches", int, "batches per one-shot fitness evaluation"),
}


# the string flags' values, checked when the arguments are parsed (before any data loads)
_CHOICES: dict[str, tuple[str, ...]] = {
    "alternate": ALTERNATE,
    "tau_schedule": tuple(TAU_SCHEDULES),
    "latency_loss": LATENCY_LOSSES,
    "fitness": tuple(FITNESS),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m search.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("LUT")
    g.add_argument("--lut", help="LUT version dir, runtime dir (latest) or id device/space/runtime-tN[/vK]")
    g.add_argument("--device-id", help="with --space and --runtime: latest version of that LUT")
    g.add_argument("--space", help="LUT space name (with --device-id); with --lut: search this space of the LUT's "
                   "family, ops the LUT lacks from the predictor beside it (`python -m lut fit`)")
    g.add_argument("--spaces", help="comma list of spaces of the LUT's family (resolutions, widths): one search "
                   "each, the best arch at the latency target over all in OUT/arch.json (search/multispace.py)")
    g.add_argument("--runtime", help="runtime name (with --device-id)")
    g.add_argument("--threads", type=int, default=1, help="runtime threads of the LUT (default 1)")
    p.add_argument("--out", required=True, help="output directory, e.g. runs/NAME")
    p.add_argument("--json", action="store_true", help="last line: one JSON summary object")
    add_search_arguments(p)
    return p


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """Every flag of a search but the LUT and the output (shared with `search.crossdevice`)."""
    p.add_argument("--luts-root", default="luts", help="LUT store root (default luts)")
    p.add_argument("--latency-correction", choices=["auto", "none"], default="auto",
                   help="auto (default): predict with the correction `lut validate` chose for this LUT, if any; "
                        "none: the plain additive sum")  # fmt: skip
    p.add_argument("--strategy", default="fbnet", choices=sorted(STRATEGIES))
    p.add_argument("--data", default="digits", help="digits (embedded) | cifar10:DIR | imagefolder:DIR")
    p.add_argument("--subset", type=int, help="use this many train images (seeded sample)")
    p.add_argument("--proxy-space", help="proxy space name (overrides --resolution/--width)")
    p.add_argument("--resolution", type=int, default=32, help="proxy resolution (default 32)")
    p.add_argument("--width", type=float, default=0.25, help="proxy width multiplier (default 0.25)")
    p.add_argument("--device-train", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument("--torch-threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--train-epochs", type=int, default=TRAIN_EPOCHS,
                   help=f"then train the found arch from scratch for this many epochs and report its test "
                        f"accuracy (0: skip; default {TRAIN_EPOCHS})")  # fmt: skip
    defaults = SearchConfig()
    for name, (flag, typ, help_) in _FLAGS.items():
        default = getattr(defaults, name)
        shown = STRATEGY_DEFAULTS.get(name, "none") if default is None else default
        if name in STRATEGY_DEFAULTS:
            shown = f"{shown}, or the strategy's own"
        p.add_argument(flag, dest=name, type=typ, default=default, choices=_CHOICES.get(name),
                       help=f"{help_} (default {shown})")  # fmt: skip


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    return SearchConfig(strategy=args.strategy, **{k: getattr(args, k) for k in _FLAGS})


def latency_model(lut: Any, correction: str = "auto", space: str | None = None) -> LatencyModel:
    """A loaded LUT as the search's latency model, with its validated correction under "auto".
    Warns when the LUT's numbers were not measured on a device."""
    if lut.provenance != "measured":
        log.warning(
            "LUT %s is %s, not measured on a device: its numbers are %s", lut.id, lut.provenance,
            {"loopback": "this host's CPU seen through the dry-run adb device, not a phone's",
             "imported": "published values, one per op, measured by someone else",
             "synthetic": "made up (tests, dry runs)"}.get(lut.provenance, "of unknown origin"),
        )  # fmt: skip
    latency = LatencyModel.for_space(lut, space)
    return latency.with_validated_correction() if correction == "auto" else latency


def proxy_from_args(args: argparse.Namespace, latency: LatencyModel) -> Space:
    if args.proxy_space:
        return get_space(args.proxy_space)
    return proxy_space_for(latency.space, args.resolution, args.width)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = config_from_args(args)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    try:
        dist = setup(args.device_train)  # under torchrun: this rank's place; a world of one otherwise
    except (ValueError, DistributedError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # rank 0 speaks for all
    try:
        lut = resolve_lut(args.lut, device_id=args.device_id, space=args.space,
                          runtime=args.runtime, threads=args.threads, root=args.luts_root)
        if args.spaces:
            return _search_spaces(args, cfg, lut, dist)
        latency = latency_model(lut, args.latency_correction, args.space if args.lut else None)
        proxy = proxy_from_args(args, latency)
        summary = run_search(cfg, latency, proxy, args.data, out=args.out, subset=args.subset,
                             device=select_device(args.device_train), progress=args.progress,
                             train_epochs=args.train_epochs, dist=dist)  # fmt: skip
    except ValueError as e:  # LutError, LatencyModelError, DataError, ArchError are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (SearchDivergedError, DistributedError) as e:
        print(f"error: the search diverged: {e}", file=sys.stderr)
        return 1
    finally:
        teardown(dist)
    if not dist.is_main:
        return 0
    print(f"{summary['strategy']}: {' '.join(summary['blocks'])}")
    print(f"predicted latency {summary['predicted_latency_us'] / 1000:.3f} ms on "
          f"{summary['lut'].get('device_id')} ({summary['lut'].get('runtime')}, "
          f"v{summary['lut'].get('version')}); wrote {summary['arch_path']}")
    print(accuracy_line(summary))
    if "theta_entropy" in summary:
        print(f"θ: mean entropy {summary['theta_entropy']:.3f} nats per layer, argmax unchanged for the last "
              f"{summary['argmax_stable_epochs']} epoch(s); search {summary['search_s']:.0f} s")
    if args.json:
        print(json.dumps(summary))
    return 0


def _search_spaces(args: argparse.Namespace, cfg: SearchConfig, lut: Any, dist: Dist) -> int:
    from search.multispace import parse_spaces, search_spaces

    def run_one(latency: LatencyModel, out: Path) -> dict[str, Any]:
        return run_search(cfg, latency, proxy_from_args(args, latency), args.data, out=out, subset=args.subset,
                          device=select_device(args.device_train), progress=args.progress,
                          train_epochs=args.train_epochs, dist=dist)  # fmt: skip

    correct = (lambda m: m.with_validated_correction()) if args.latency_correction == "auto" else (lambda m: m)
    report = search_spaces(lut, parse_spaces(args.spaces), run_one, out=args.out, correction=correct,
                           max_us=cfg.max_latency_us, target_us=cfg.target_latency_us)  # fmt: skip
    if not dist.is_main:
        return 0
    for r in report["spaces"]:
        print(f"{r['space']}: {r['predicted_latency_us'] / 1000:.3f} ms predicted ({r['predicted_ops']} of "
              f"{r['num_ops']} ops by the predictor); {accuracy_line(r)}")  # fmt: skip
    print(f"best at the target: {report['best_space']}{'' if report['met_target'] else ' (no space met it: fastest)'}"
          f"; wrote {report['arch_path']}")  # fmt: skip
    if args.json:
        print(json.dumps(report))
    return 0


def accuracy_line(summary: dict[str, Any]) -> str:
    of = summary.get("accuracy_of", "supernet weights (BN recalibrated)")
    line = f"accuracy with {of}: validation {summary['val_accuracy']:.4f}, test {summary['test_accuracy']:.4f}"
    if "trained_test_accuracy" in summary:
        line += f"; trained from scratch ({summary['trained_epochs']} epochs): test {summary['trained_test_accuracy']:.4f}"
    return line


if __name__ == "__main__":
    sys.exit(main())
