"""Device-targeted architecture search driven by a LUT: `python -m search.run`.

    python -m search.run --lut luts/pixel7/fbnet/executorch-t1 --strategy fbnet \\
        --data digits --epochs 8 --beta 0.6 --out runs/fbnet_pixel7 [--json]
    python -m search.run --lut ... --target-latency-ms 12 --out runs/at_12ms   # soft target
    python -m search.run --lut ... --data imagefolder:IMAGENET --classes 100 --torch-device cuda --out runs/in100

The LUT fixes the latency (its space, e.g. `fbnet` at 224×224); the supernet trains on a proxy of
the same family (`--resolution`, `--width`, default 32 and 0.25) so that it fits on a CPU, with
every stem / stage width at least 16 channels and the reduced-stride schedule that keeps each
searchable layer's input at least as large as its largest kernel (`search.space.proxy_space`;
`--proxy-space NAME` trains on any other proxy of the family, e.g. fbnet-r32-w0.25 with the LUT's
strides). arch.json records the proxy (`proxy_space`) and each layer's input size on it
(`proxy_input_sizes`, one entry per searchable layer).
Outputs in `--out`:

    arch.json    the found arch in the LUT's space: blocks, predicted latency (the number
                 `python -m lut predict LUT --arch arch.json` prints), the LUT's device id /
                 runtime / version / content hash, accuracies by split, the K sampled archs
    log.csv      one row per epoch (strategy-specific columns, e.g. loss, accuracy, expected
                 latency, τ, mean θ entropy, argmax_changes: layers whose argmax changed)
    theta.csv    θ per layer (strategies with architecture parameters), and theta.png
    samples.csv  the K sampled archs and their predicted latency
    config.yaml  the run's whole resolved configuration (written when the run starts);
                 `--config config.yaml` runs it again, flags given beside it override its values
    search_state.pt  the search's checkpoint after every epoch (fbnet, proxyless, darts: weights,
                 θ, optimizers, schedule, random generators, the log so far) or every arch scored
                 (evolution, random with --fitness train); `--resume --out DIR` continues a
                 killed run from it with DIR's config.yaml
    candidates.csv  with --final-samples K: the K distinct archs sampled from the final θ, each
                 trained --final-epochs from scratch on the weights split; the one with the best
                 validation accuracy becomes arch.json (FBNet's last step)

Presets (`--preset`, docs/presets.md lists every value and its source): `default` (tuned for a
search of a few minutes on a laptop CPU), `fbnet-paper`, `proxyless-paper`, `darts-paper` (each
paper's hyperparameters as published).

Accuracies of the found arch, each named for its split (the train split of the data is divided
into the weights split and the architecture split; the test split is the dataset's own, and no
step of the search sees it), the test split's first:

    test_accuracy          supernet weights, BN statistics recalibrated on the weights split,
                           measured on the test split (evolution and random search with their
                           default fitness: the arch trained --fitness-epochs from scratch on the
                           weights split; `accuracy_of` says which)
    arch_split_accuracy    the same weights on the architecture split: the split θ was fitted on
                           (evolution / random: the split their fitness selected on), so not held
                           out — it flatters the found arch
    trained_test_accuracy  the arch trained from scratch (`search.train`) for --train-epochs on
                           the whole train split, measured on the test split (absent with 0)

`supernet` in the summary says whether the supernet collapsed: its train accuracy at the end
against its peak after warm-up (log.csv: train_acc_peak, train_acc_vs_peak; a warning when the
end is below 0.9 × the peak).

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
import io
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from hwnas.flags import add_luts_root, add_out, add_progress, add_runtime, add_torch_device, add_verbose, run_main
from lut.files import atomic_write
from search.checkpoint import check_same_run, load_checkpoint, save_checkpoint
from search.config import CONFIG_FILE, PRESETS, ConfigError, from_cli, search_config, write_yaml
from search.data import add_data_arguments, load_data
from search.distributed import Dist, DistributedError, ranks_agree, setup, teardown
from search.finalists import final_selection
from search.latency import LatencyModel, check_proxy_space, resolve_lut
from search.plots import plot_theta
from search.precision import add_precision_arguments, precision_for, repeatable
from search.space import Arch, Space, get_space, proxy_space
from search.strategies import STRATEGIES, STRATEGY_DEFAULTS, SearchConfig, SearchContext, get_strategy
from search.strategies.common import ALTERNATE, TAU_SCHEDULES, check_budget
from search.strategies.fbnet import GUMBEL
from search.strategies.objective import LATENCY_LOSSES, SearchDivergedError
from search.strategies.oneshot import FITNESS
from search.training import TrainConfig, select_device, train_arch

__all__ = ["run_search", "SEARCH_STATE", "write_outputs", "add_search_arguments", "config_from_args", "latency_model",
           "main"]  # fmt: skip

log = logging.getLogger(__name__)

SEARCH_STATE = "search_state.pt"  # the search's checkpoint in --out
RESUMABLE = ("fbnet", "proxyless", "darts")  # the strategies that checkpoint every epoch
# evolution and random search checkpoint every arch they score with fitness "train"
TRAIN_EPOCHS = 10  # default --train-epochs and --final-epochs


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
    data_options: dict[str, Any] | None = None,
    amp: bool = True,
    resume: bool = False,
    final_samples: int = 0,
    final_epochs: int = TRAIN_EPOCHS,
    config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one search and write its outputs to `out`; returns the summary (the --json object).
    With `train_epochs`, the found arch is then trained from scratch (`search.training.train_arch`).

    Under torchrun (`dist`, from `search.distributed.setup`), every rank runs the same search on
    its shard of each training batch, with gradients averaged over ranks at every step; the ranks'
    θ and found arch are compared at the end (`ranks_agree`, recorded with `world_size` in
    arch.json's info) and only rank 0 writes files.

    The differentiable strategies write `search_state.pt` in `out` after every epoch (rank 0,
    atomically); `resume=True` continues from it (CheckpointError when it is missing or was written
    by a search with other settings, data, proxy or LUT). With `final_samples`, FBNet's last step
    (`final_selection`) picks the arch. A new run first writes `config` (the CLI's whole resolved
    configuration; by default the part this call knows: the search settings, LUT version, data,
    proxy and the steps after the search) as config.yaml."""
    check_proxy_space(latency.space, proxy)
    check_budget(latency, cfg.max_latency_us)
    get_strategy(cfg.strategy)  # an unknown name fails before any data is loaded
    cfg = cfg.resolved()  # the strategy's defaults for what was left None (arch.json records them)
    data = load_data(data_spec, resolution=proxy.resolution, subset=subset, **(data_options or {}))
    rows: list[dict[str, Any]] = []
    dist = dist or Dist(device=device)
    device = dist.device if dist.is_distributed else device
    state_path = Path(out) / SEARCH_STATE
    identity = {"config": dataclasses.asdict(cfg), "lut": latency.lut_info, "space": latency.space.name,
                "proxy_space": proxy.name, "data": data.name, "subset": subset}  # fmt: skip
    if dist.is_main and not resume:
        if config is None:
            config = {"lut": latency.lut_info.get("path") or latency.lut_info.get("id"), "data": data_spec,
                      "subset": subset, "proxy_space": proxy.name, "train_epochs": train_epochs,
                      "final_samples": final_samples, "final_epochs": final_epochs,
                      **dataclasses.asdict(cfg)}  # fmt: skip
        write_yaml(Path(out) / CONFIG_FILE, config, header=CONFIG_HEADER)
    resume_state = None
    if resume:
        state = load_checkpoint(state_path, dist)
        check_same_run(state, identity, where=str(state_path))
        resume_state = state["search"]
        rows = [] if resume_state.get("replay") else list(state["rows"])  # a replay logs every row again

    def on_checkpoint(search_state: dict[str, Any]) -> None:
        if dist.is_main:
            save_checkpoint(state_path, {"identity": identity, "epoch": search_state["epoch"], "rows": rows,
                                         "search": search_state, "world_size": dist.world_size})  # fmt: skip

    def on_epoch(row: dict[str, Any]) -> None:
        rows.append(row)
        if dist.is_main:
            log.info("  ".join(f"{k} {_fmt(v)}" for k, v in row.items()))

    ctx = SearchContext(cfg, data.to(device), latency, proxy, device, on_epoch, progress and dist.is_main, dist,
                        on_checkpoint=on_checkpoint, resume=resume_state)  # fmt: skip
    t0 = time.perf_counter()
    precision = precision_for(device, training=False, amp=amp)
    with precision.autocast():  # lowers convolutions only: the latency term stays float32
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
    accuracy: dict[str, Any] = {"test_accuracy": result.test_accuracy, "arch_split_accuracy": result.arch_split_accuracy}
    candidates: list[dict[str, Any]] = []
    if final_samples > 0:
        if result.theta is None:
            raise ValueError(f"--final-samples samples from θ; {cfg.strategy} has none "
                             "(use fbnet, proxyless or darts)")  # fmt: skip
        t1 = time.perf_counter()
        candidates = final_selection(result.theta, final_samples, final_epochs, latency, proxy, data, cfg,
                                     device=device, dist=dist)  # fmt: skip
        chosen = next(c for c in candidates if c["chosen"])
        result.info["supernet_argmax"] = {"blocks": list(result.blocks), "test_accuracy": result.test_accuracy,
                                          "arch_split_accuracy": result.arch_split_accuracy}  # fmt: skip
        result.info["accuracy_of"] = f"the arch trained from scratch {final_epochs} epochs on the weights split"
        result.info["final_selection"] = {"samples": len(candidates), "asked": final_samples, "epochs": final_epochs,
                                          "select_s": time.perf_counter() - t1}  # fmt: skip
        result.blocks = tuple(chosen["blocks"])
        predicted = latency.predict_us(result.blocks)
        # the candidate trained on the weights split alone: the architecture split is held out from it
        accuracy = {"test_accuracy": chosen["test_accuracy"], "arch_split_accuracy": chosen["val_accuracy"]}
    if train_epochs > 0:
        t1 = time.perf_counter()
        trained = train_arch(result.blocks, proxy, data, TrainConfig(epochs=train_epochs, seed=cfg.seed), device=device,
                             dist=dist, amp=amp)  # fmt: skip
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
        "proxy_input_sizes": [layer.h for layer in proxy.layers()],
        "data": data.name,
        "precision": precision.name,
        "search_s": elapsed_s,
        "world_size": dist.world_size,
        **{k: result.info[k] for k in ("theta_entropy", "argmax_stable_epochs", "accuracy_of", "supernet")
           if k in result.info},
        "resumed_from_epoch": resume_state["epoch"] if resume_state else None,
    }
    arch = Arch(
        latency.space.name,
        result.blocks,
        name=Path(out).name,
        info={**summary, "config": dataclasses.asdict(cfg), "classes": list(data.classes), "samples": samples,
              **result.info},  # fmt: skip
    ).validate(latency.space)
    if not dist.is_main:
        return {"arch_path": None, **summary, "blocks": list(result.blocks)}
    paths = write_outputs(out, arch, rows, result.theta, latency.blocks, samples, candidates)
    return {"arch_path": str(paths["arch"]), **summary, "blocks": list(result.blocks)}


def write_outputs(
    out: str | Path,
    arch: Arch,
    rows: list[dict[str, Any]],
    theta: torch.Tensor | None,
    blocks: tuple[str, ...],
    samples: list[dict[str, Any]],
    candidates: list[dict[str, Any]] | None = None,
) -> dict[str, Path]:
    """arch.json, log.csv, samples.csv, (with θ) theta.csv + theta.png and (with candidates)
    candidates.csv under `out`."""
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
    if candidates:
        paths["candidates"] = out / "candidates.csv"
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["rank", "chosen", "predicted_latency_us", "val_accuracy", "test_accuracy", "log_prob", "blocks"])
        for c in candidates:
            w.writerow([c["rank"], int(c["chosen"]), f"{c['predicted_latency_us']:.3f}", f"{c['val_accuracy']:.4f}",
                        f"{c['test_accuracy']:.4f}", f"{c['log_prob']:.4f}", " ".join(c["blocks"])])  # fmt: skip
        atomic_write(paths["candidates"], buf.getvalue())
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
    "gumbel": ("--gumbel", str, "fbnet masks: soft (every path weighted) | hard (one sampled path, straight-through)"),
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
    "proxyless_arch_every": ("--proxyless-arch-every", int, "proxyless: an arch step after every n-th weight step"),
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
    "gumbel": GUMBEL,
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
    add_runtime(g, help="runtime of the LUT (with --device-id)")
    g.add_argument("--threads", type=int, default=1, help="runtime threads of the LUT (default 1)")
    add_out(p, required=True, help="output folder, e.g. runs/NAME")
    p.add_argument("--json", action="store_true", help="last line: one JSON summary object")
    g = p.add_argument_group("configuration, resume and FBNet's last step")
    g.add_argument("--preset", default="default", choices=list(PRESETS),
                   help="hyperparameters: default (tuned for a few CPU minutes) or a paper's as published "
                        "(docs/presets.md); flags given beside it override its values")  # fmt: skip
    g.add_argument("--config", metavar="FILE",
                   help="run the configuration in FILE (a run's config.yaml); flags given beside it override it")
    g.add_argument("--resume", action="store_true",
                   help="continue the killed search in --out from its search_state.pt with its config.yaml")
    g.add_argument("--final-samples", type=int, default=0,
                   help="sample this many distinct archs from the final θ, train each, keep the best by "
                        "validation accuracy (0: the argmax; default 0)")  # fmt: skip
    g.add_argument("--final-epochs", type=int, default=TRAIN_EPOCHS,
                   help=f"epochs each --final-samples candidate is trained from scratch (default {TRAIN_EPOCHS})")
    add_search_arguments(p)
    return p


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """Every flag of a search but the LUT and the output (shared with `search.crossdevice`)."""
    add_luts_root(p)
    p.add_argument("--latency-correction", choices=["auto", "none"], default="auto",
                   help="auto (default): predict with the correction `lut validate` chose for this LUT, if any; "
                        "none: the plain additive sum")  # fmt: skip
    p.add_argument("--strategy", default="fbnet", choices=sorted(STRATEGIES), help="search strategy (default fbnet)")
    add_data_arguments(p)
    p.add_argument("--proxy-space", help="proxy space name (overrides --resolution/--width)")
    p.add_argument("--resolution", type=int, default=32, help="proxy resolution (default 32)")
    p.add_argument("--width", type=float, default=0.25, help="proxy width multiplier (default 0.25)")
    add_torch_device(p)
    add_progress(p)
    add_verbose(p)
    p.add_argument("--torch-threads", type=int, help="torch intra-op threads (default: torch's)")
    add_precision_arguments(p)
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
    return proxy_space(latency.space, args.resolution, args.width)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        conf = from_cli(parser, argv, config=args.config, resume_out=args.out if args.resume else None)
        cfg = search_config(conf).resolved()
        get_strategy(cfg.strategy)
    except (ConfigError, TypeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.resume and cfg.strategy not in RESUMABLE and cfg.fitness != "train":
        print(f"error: {cfg.strategy} search with --fitness {cfg.fitness} writes no checkpoint to resume from; "
              f"--resume continues {', '.join(RESUMABLE)} searches and evolution / random search with "
              "--fitness train", file=sys.stderr)  # fmt: skip
        return 2
    conf.update(dataclasses.asdict(cfg))  # the strategy's defaults filled in: config.yaml shows them
    args = argparse.Namespace(**{**vars(args), **conf})
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    repeatable(args.deterministic)
    try:
        dist = setup(args.torch_device)  # under torchrun: this rank's place; a world of one otherwise
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
        conf["lut"] = str(lut.path)  # this version, whichever way it was named
        summary = run_search(cfg, latency, proxy, args.data, out=args.out, subset=args.subset,
                             device=select_device(args.torch_device), progress=args.progress,
                             train_epochs=args.train_epochs, dist=dist, resume=args.resume,
                             final_samples=args.final_samples, final_epochs=args.final_epochs,
                             config=conf, amp=args.amp,
                             data_options={"classes": args.classes, "workers": args.workers})  # fmt: skip
    except ValueError as e:  # LutError, LatencyModelError, DataError, ArchError, CheckpointError are ValueErrors
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


CONFIG_HEADER = """python -m search.run: the whole configuration of this run (search.config).
Run it again: python -m search.run --config config.yaml --out DIR [flags that override it]
Continue it after a kill: python -m search.run --resume --out DIR"""


def _search_spaces(args: argparse.Namespace, cfg: SearchConfig, lut: Any, dist: Dist) -> int:
    from search.multispace import parse_spaces, search_spaces

    def run_one(latency: LatencyModel, out: Path) -> dict[str, Any]:
        return run_search(cfg, latency, proxy_from_args(args, latency), args.data, out=out, subset=args.subset,
                          device=select_device(args.torch_device), progress=args.progress,
                          train_epochs=args.train_epochs, dist=dist, amp=args.amp,
                          data_options={"classes": args.classes, "workers": args.workers})  # fmt: skip

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
    """Test accuracy first; the architecture split's is named as the split the search fitted on."""
    of = summary.get("accuracy_of", "supernet weights (BN recalibrated)")
    line = ""
    if "trained_test_accuracy" in summary:
        line = f"test accuracy trained from scratch ({summary['trained_epochs']} epochs): {summary['trained_test_accuracy']:.4f}; "
    line += (f"with {of}: test {summary['test_accuracy']:.4f}, "
             f"architecture split (fitted on, not held out) {summary['arch_split_accuracy']:.4f}")  # fmt: skip
    sup = summary.get("supernet") or {}
    if sup.get("collapsed"):
        line += (f"\nwarning: the supernet collapsed (train accuracy ended at {sup['train_acc_final']:.3f}, "
                 f"{sup['train_acc_final_vs_peak']:.0%} of its post-warm-up peak {sup['train_acc_peak']:.3f})")  # fmt: skip
    return line


if __name__ == "__main__":
    sys.exit(run_main(main))
