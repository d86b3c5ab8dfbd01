"""Pieces the strategies share: setup, optimizers, the temperature schedule, the per-epoch
architecture columns, evaluation with recalibrated batch norm, sampling, the hard constraint."""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from search.data import DataError, ImageSet, augment_seed, batches
from search.distributed import Dist, average_gradients_before_step, broadcast_, num_batches, shard_batches
from search.latency import LatencyModel
from search.recipe import RecipeConfig, init_weights, make_optimizer, make_schedule
from search.supernet import Supernet, recalibrated_bn

from .base import SearchConfig, SearchContext, SearchResult
from .objective import LATENCY_LOSSES, latency_loss

__all__ = [
    "seed_everything",
    "latency_loss",
    "loss_form",
    "reference_latency_us",
    "make_w_optimizer",
    "make_theta_optimizer",
    "train_batches",
    "cycle_train_batches",
    "CycleBatches",
    "EpochCheckpoint",
    "rng_state",
    "set_rng_state",
    "clip_before_step",
    "average_gradients_before_step",
    "temperature",
    "TAU_SCHEDULES",
    "entropy_weight",
    "commitment",
    "evaluate_path",
    "mean_entropy",
    "ArchLog",
    "CollapseWatch",
    "COLLAPSE_RATIO",
    "sample_archs",
    "constrained_argmax",
    "check_budget",
    "finish",
    "LATENCY_LOSSES",
]

log = logging.getLogger(__name__)

# name → (τ0, per-epoch decay) defaults; "fitted" has no decay: it spans τ0 → tau_end
TAU_SCHEDULES: dict[str, tuple[float, float | None]] = {"fitted": (5.0, None), "paper": (5.0, 0.045)}
ALTERNATE = ("batch", "epoch")


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch, numpy and random; return a generator for data order."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    return torch.Generator().manual_seed(seed)


def loss_form(cfg: SearchConfig, default: str) -> str:
    """The latency-loss form of a run: the configured one; else "target" when a target latency is
    set; else the strategy's default."""
    form = cfg.latency_loss or ("target" if cfg.target_latency_ms is not None else default)
    if form not in LATENCY_LOSSES:
        raise ValueError(f"latency_loss must be one of {LATENCY_LOSSES}, got {form!r}")
    if cfg.target_latency_ms is not None and form != "target":
        raise ValueError(
            f"--target-latency-ms sets the soft term to the target form; it cannot be combined with "
            f"--latency-loss {form} (drop one of them)"
        )
    if form == "target" and cfg.target_latency_ms is None:
        raise ValueError("--latency-loss target needs --target-latency-ms")
    return form


def reference_latency_us(ctx: SearchContext) -> float:
    """ref of the additive form: --ref-latency-ms, else the budget, else E[LAT] at uniform θ."""
    if ctx.cfg.ref_latency_ms is not None:
        return ctx.cfg.ref_latency_ms * 1000.0
    if ctx.cfg.max_latency_us is not None:
        return ctx.cfg.max_latency_us
    return ctx.latency.uniform_expected_us()


def temperature(cfg: SearchConfig, epoch: int) -> float:
    """Gumbel-softmax τ of an epoch (warm-up epochs included in the count).

    fitted: τ0 during warm-up, then geometric from τ0 to `tau_end` over the search epochs, so that
    the masks reach near one-hot in the last epoch whatever `epochs` is. paper: τ0 · exp(−decay ·
    epoch) (FBNet: τ0 = 5, decay 0.045 — after 90 epochs τ = 0.09; after 5 epochs still 4.0).
    An explicit `tau_decay` selects the paper's form with that decay."""
    if cfg.tau_schedule not in TAU_SCHEDULES:
        raise ValueError(f"tau_schedule must be one of {', '.join(TAU_SCHEDULES)}, got {cfg.tau_schedule!r}")
    tau0_default, decay_default = TAU_SCHEDULES[cfg.tau_schedule]
    tau0 = cfg.tau0 if cfg.tau0 is not None else tau0_default
    decay = cfg.tau_decay if cfg.tau_decay is not None else decay_default
    if decay is not None:
        return tau0 * math.exp(-decay * epoch)
    if cfg.epochs <= 1:
        return tau0
    search_epoch = min(max(0, epoch - cfg.warmup_epochs), cfg.epochs - 1)
    return tau0 * (cfg.tau_end / tau0) ** (search_epoch / (cfg.epochs - 1))


def entropy_weight(cfg: SearchConfig, epoch: int) -> float:
    """γ of the commitment term in an epoch: 0 during warm-up and the first search epoch, rising
    linearly to `cfg.entropy_weight` in the last search epoch."""
    search_epoch = epoch - cfg.warmup_epochs
    if cfg.entropy_weight <= 0 or search_epoch <= 0 or cfg.epochs <= 1:
        return 0.0
    return cfg.entropy_weight * min(1.0, search_epoch / (cfg.epochs - 1))


def commitment(logits: torch.Tensor) -> torch.Tensor:
    """Σ_l H(softmax(logits_l)) in nats (−inf logits contribute 0): the commitment term's sum.
    Its gradient is 0 at a uniform θ; elsewhere it moves every layer towards its leading block."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp.masked_fill(torch.isinf(logits), 0.0)).sum()


@dataclass
class Relaxed:
    """What a differentiable search (fbnet, proxyless, darts) starts from, built in one fixed order
    so that a seed reproduces a run: data-order generator, loss form, supernet, architecture
    logits (zeros: uniform start) and their mask, the two training splits and both optimizers."""

    gen: torch.Generator
    form: str
    ref_us: float
    net: Supernet
    logits: torch.Tensor
    mask: torch.Tensor
    w_split: tuple[torch.Tensor, torch.Tensor]
    a_split: tuple[torch.Tensor, torch.Tensor]
    epochs: int
    w_opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    a_opt: torch.optim.Adam
    watch: "CollapseWatch"


def relaxed_setup(ctx: SearchContext, default_form: str) -> Relaxed:
    cfg = ctx.cfg
    if cfg.alternate not in ALTERNATE:
        raise ValueError(f"alternate must be one of {ALTERNATE}, got {cfg.alternate!r}")
    gen = seed_everything(cfg.seed)
    form = loss_form(cfg, default_form)
    ref_us = reference_latency_us(ctx)
    net = Supernet(ctx.space, ctx.data.num_classes).to(ctx.device)
    logits = torch.zeros(net.allowed.shape, device=ctx.device, requires_grad=True)
    w_split, a_split = ctx.data.split_train(cfg.w_fraction, cfg.seed)
    epochs = cfg.warmup_epochs + cfg.epochs
    per_epoch = steps_per_epoch(len(w_split[1]), cfg.batch_size, ctx.dist)
    w_opt, sched = make_w_optimizer(net, cfg, epochs * per_epoch, per_epoch)
    a_opt = make_theta_optimizer([logits], cfg)
    broadcast_([logits, *net.parameters(), *net.buffers()], ctx.dist)  # identical anyway: same seed
    average_gradients_before_step(w_opt, ctx.dist)
    average_gradients_before_step(a_opt, ctx.dist)
    clip_before_step(w_opt, cfg.w_grad_clip)  # after the averaging: the norm of the global gradient
    clip_before_step(a_opt, cfg.theta_grad_clip)
    watch = CollapseWatch()
    ctx.on_epoch = watch.wrap(ctx.on_epoch)
    return Relaxed(gen, form, ref_us, net, logits, net.logit_mask, w_split, a_split, epochs, w_opt, sched, a_opt,
                   watch)  # fmt: skip


class EpochCheckpoint:
    """Checkpoint and resume of a differentiable search's epoch loop (fbnet, proxyless, darts).

        ckpt = EpochCheckpoint(ctx, r, track=track, arch_batches=arch_batches)
        n_arch = ckpt.value("n_arch", 0)             # the loop's own counters, restored on resume
        for epoch in range(ckpt.start, r.epochs):
            ...
            ctx.on_epoch(row)
            ckpt.epoch_done(epoch, n_arch=n_arch)    # → ctx.on_checkpoint(state)

    The state holds everything the next epoch depends on: the supernet's weights and batch-norm
    buffers, the architecture logits, both optimizers and the learning-rate schedule, every random
    generator (torch's, CUDA's, numpy's, Python's and the data-order generator), the `parts`
    (objects with `state_dict` / `load_state_dict`: the architecture log, the architecture split's
    pass) and the loop's counters. Resumed from the state after epoch e, the search runs epochs
    e+1… exactly as the uninterrupted run does (same seed, device and threads)."""

    def __init__(self, ctx: SearchContext, r: "Relaxed", **parts: Any) -> None:
        self.ctx, self.r, self.parts = ctx, r, parts
        self.start, self.values = 0, {}
        if ctx.resume is not None:
            self.load(ctx.resume)

    def value(self, name: str, default: Any) -> Any:
        """A counter of the loop as the checkpoint left it (`default` on a fresh start)."""
        return self.values.get(name, default)

    def state(self, epochs_done: int, values: dict[str, Any]) -> dict[str, Any]:
        r = self.r
        return {
            "epoch": epochs_done,
            "net": r.net.state_dict(),
            "logits": r.logits.detach().cpu().clone(),
            "w_opt": r.w_opt.state_dict(),
            "sched": r.sched.state_dict(),
            "a_opt": r.a_opt.state_dict(),
            "rng": rng_state(self.ctx.device, r.gen),
            "parts": {k: p.state_dict() for k, p in self.parts.items()},
            "values": values,
        }

    def load(self, state: dict[str, Any]) -> None:
        r = self.r
        r.net.load_state_dict(state["net"])
        with torch.no_grad():
            r.logits.copy_(state["logits"].to(r.logits.device))
        r.w_opt.load_state_dict(state["w_opt"])
        r.sched.load_state_dict(state["sched"])
        r.a_opt.load_state_dict(state["a_opt"])
        set_rng_state(state["rng"], self.ctx.device, r.gen)
        for k, p in self.parts.items():
            p.load_state_dict(state["parts"][k])
        self.start, self.values = int(state["epoch"]), dict(state["values"])
        log.info("resuming the search after epoch %d of %d", self.start, r.epochs)

    def epoch_done(self, epoch: int, **values: Any) -> None:
        """Hand the state after `epoch` to the context's checkpoint writer (if any)."""
        if self.ctx.on_checkpoint is not None:
            self.ctx.on_checkpoint(self.state(epoch + 1, values))


def rng_state(device: torch.device, gen: torch.Generator) -> dict[str, Any]:
    """Every random generator a search draws from, as tensors, numbers and lists."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    numpy_state = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "gauss": float(gauss)}  # fmt: skip
    state = {
        "torch": torch.get_rng_state(),
        "data_order": gen.get_state(),
        "numpy": numpy_state,
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["data_order"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def make_w_optimizer(
    model: torch.nn.Module, cfg: SearchConfig, total_steps: int, steps_per_epoch: int = 1
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The supernet's weights train with `search.recipe` as a found arch does: its initialisation
    (fan-out convs, each residual block's last BN γ = 0, so every path starts as the identity),
    SGD with momentum (Nesterov's with `w_nesterov`) and decay on conv / linear weights only, a
    linear warm-up of `w_warmup_epochs` to `cfg.w_lr`, then a per-step cosine to `w_lr_min` over
    `total_steps`."""
    init_weights(model)
    recipe = RecipeConfig(batch_size=cfg.batch_size, lr=cfg.w_lr, momentum=cfg.w_momentum,
                          weight_decay=cfg.w_weight_decay, warmup_epochs=cfg.w_warmup_epochs,
                          nesterov=cfg.w_nesterov, min_lr=cfg.w_lr_min)  # fmt: skip
    opt = make_optimizer(model, recipe)
    return opt, make_schedule(opt, recipe, total_steps, steps_per_epoch)


def make_theta_optimizer(params: Iterable[torch.Tensor], cfg: SearchConfig) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=cfg.theta_lr, betas=tuple(cfg.theta_betas), weight_decay=cfg.theta_weight_decay)


def clip_before_step(opt: torch.optim.Optimizer, max_norm: float | None) -> None:
    """Clip the gradient of `opt`'s parameters to `max_norm` (global L2 norm) before every step."""
    if max_norm is None:
        return
    params = [p for g in opt.param_groups for p in g["params"]]
    opt.register_step_pre_hook(lambda *_: torch.nn.utils.clip_grad_norm_(params, max_norm))


def train_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator, dist: Dist = Dist()
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled training minibatches; a last batch of one image is dropped (train-mode BN).

    Under torchrun, this rank's share of each global batch of `batch_size`
    (`search.distributed.shard_batches`): every rank draws the same order from its identically
    seeded generator and takes the same number of steps. With one process: `search.data.batches`."""
    if not dist.is_distributed:
        return batches(x, y, batch_size, generator=generator, min_size=2)
    return ((xb, yb) for xb, yb, _ in shard_batches(x, y, batch_size, dist, generator=generator))


def cycle_train_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator, dist: Dist = Dist()
) -> "CycleBatches":
    """`train_batches` without end, a new order every pass: the architecture split feeds one batch
    per weight step although it is smaller than the weights split. The iterator has
    `state_dict()` / `load_state_dict()` (the current pass's order and position) so that a resumed
    search continues the pass where it stopped."""
    return CycleBatches(x, y, batch_size, generator, dist)


class CycleBatches:
    """The iterator `cycle_train_batches` returns. Each pass draws its order from `generator` as
    `train_batches` does (one `randperm`, when the pass's first batch is asked for), so the batches
    and the generator's stream are those of a plain loop over `train_batches`."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator,
                 dist: Dist = Dist()) -> None:  # fmt: skip
        self.x, self.y, self.batch_size, self.gen, self.dist = x, y, batch_size, generator, dist
        self.order: torch.Tensor | None = None  # the current pass's permutation
        self.seed: int | None = None  # the current pass's augmentation seed (image sets)
        self.pos = 0  # batches of the current pass already served
        self._it: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = None

    def __iter__(self) -> "CycleBatches":
        return self

    def _pass(self, order: torch.Tensor, skip: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        # the batches of `order` as train_batches cuts them (unshuffled batches of the indices)
        cuts = [idx.to(self.y.device) for idx, _ in train_batches(order, order, self.batch_size, None, self.dist)]  # type: ignore[arg-type]
        if isinstance(self.x, ImageSet):  # decoded a batch at a time, augmented as a shuffled pass is
            images = self.x.stream([c.tolist() for c in cuts], self.seed)
            for i, (xb, idx) in enumerate(zip(images, cuts)):
                if i >= skip:
                    yield xb, self.y[idx]
            return
        for idx in cuts[skip:]:
            yield self.x[idx], self.y[idx]

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        for _ in range(2):
            if self._it is None:
                self.order = torch.randperm(len(self.y), generator=self.gen)
                # an image set's pass also draws its augmentation seed, as `search.data.batches` does
                self.seed = augment_seed(self.gen) if isinstance(self.x, ImageSet) else None
                self.pos, self._it = 0, self._pass(self.order, 0)
            try:
                batch = next(self._it)
            except StopIteration:
                empty, self._it = self.pos == 0, None
                if empty:
                    break
                continue
            self.pos += 1
            return batch
        raise DataError(f"{len(self.y)} images make no batch of at least 2 per process; use more data")

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order, "pos": self.pos, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order, self.pos, self.seed = state["order"], int(state["pos"]), state.get("seed")
        self._it = None if self.order is None else self._pass(self.order, self.pos)


def steps_per_epoch(n: int, batch_size: int, dist: Dist = Dist()) -> int:
    """Batches `train_batches` yields for n images (the same on every rank)."""
    if dist.is_distributed:
        return max(1, num_batches(n, batch_size, dist))
    return max(1, n // batch_size + (1 if n % batch_size >= 2 else 0))


def evaluate_path(
    net: Supernet,
    idx: torch.Tensor | list[int],
    x: torch.Tensor,
    y: torch.Tensor,
    calibration: torch.Tensor,
    batch_size: int,
    *,
    recalib_batches: int,
    max_batches: int | None = None,
) -> tuple[float, float]:
    """(mean CE, accuracy) of one path of the supernet on (x, y), in eval mode, after its BN
    statistics were re-estimated on the first `recalib_batches` batches of `calibration`
    (training images; see `search.supernet.recalibrated_bn`)."""
    calib = calibration[: recalib_batches * batch_size].split(batch_size)
    total, correct, loss_sum = 0, 0, 0.0
    with recalibrated_bn(net, idx, calib):
        for i, (xb, yb) in enumerate(batches(x, y, batch_size)):
            if max_batches is not None and i >= max_batches:
                break
            out = net.forward_path(xb, idx)
            loss_sum += torch.nn.functional.cross_entropy(out, yb, reduction="sum").item()
            correct += (out.argmax(1) == yb).sum().item()
            total += len(yb)
    return loss_sum / max(1, total), correct / max(1, total)


def mean_entropy(logits: torch.Tensor) -> float:
    """Mean over layers of the entropy (nats) of softmax(logits); −inf entries contribute 0."""
    p = torch.softmax(logits.detach().double(), dim=-1)
    return float(-(torch.xlogy(p, p)).sum(-1).mean())


class ArchLog:
    """The per-epoch log columns that describe the architecture distribution softmax(logits):
    its expected latency, the latency of its argmax, its mean entropy per layer (of softmax(θ)
    itself, nats) and how many layers' argmax changed since the previous row (the first row
    compares with the uniform start)."""

    def __init__(self, latency: LatencyModel, logits: torch.Tensor) -> None:
        self.latency = latency
        self.prev = constrained_argmax(logits, latency, None)
        self.changes: list[int] = []

    def columns(self, logits: torch.Tensor) -> dict[str, float]:
        logits = logits.detach()
        best = constrained_argmax(logits, self.latency, None)
        changed = int((best != self.prev).sum())
        self.prev = best
        self.changes.append(changed)
        return {
            "expected_latency_us": float(self.latency.expected_us(torch.softmax(logits.double().cpu(), dim=-1))),
            "argmax_latency_us": float(self.latency.predict_batch_us(best[None])[0]),
            "theta_entropy": mean_entropy(logits),
            "argmax_changes": changed,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"prev": self.prev.clone(), "changes": list(self.changes)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.prev, self.changes = state["prev"].clone(), list(state["changes"])

    def stable_epochs(self) -> int:
        """Trailing epochs in which no layer's argmax changed."""
        n = 0
        for c in reversed(self.changes):
            if c:
                break
            n += 1
        return n


COLLAPSE_RATIO = 0.9  # a search epoch's train accuracy below this share of the peak: collapsed


class CollapseWatch:
    """Makes a supernet collapse visible: adds `train_acc_peak` (the best train accuracy of the
    search epochs so far; warm-up epochs do not count) and `train_acc_vs_peak` (this epoch's over
    that peak) to every log row, and judges the run at its end (`verdict`): it collapsed when
    the last epoch's train accuracy ends below `COLLAPSE_RATIO` × the peak."""

    def __init__(self) -> None:
        self.peak: float | None = None
        self.last: float | None = None
        self.worst_ratio = 1.0

    def wrap(self, on_epoch: Any) -> Any:
        def wrapped(row: dict[str, Any]) -> None:
            on_epoch(self.row(row))

        return wrapped

    def row(self, row: dict[str, Any]) -> dict[str, Any]:
        acc = row.get("train_acc")
        if row.get("phase") == "warmup" or acc is None or math.isnan(acc):
            return {**row, "train_acc_peak": float("nan"), "train_acc_vs_peak": float("nan")}
        self.peak = acc if self.peak is None else max(self.peak, acc)
        self.last = acc
        ratio = acc / self.peak if self.peak > 0 else 1.0
        self.worst_ratio = min(self.worst_ratio, ratio)
        return {**row, "train_acc_peak": self.peak, "train_acc_vs_peak": ratio}

    def verdict(self) -> dict[str, Any]:
        """{train_acc_peak, train_acc_final, train_acc_final_vs_peak, train_acc_worst_vs_peak,
        collapsed}; logs a warning when the run collapsed."""
        if self.peak is None or self.last is None:
            return {}
        ratio = self.last / self.peak if self.peak > 0 else 1.0
        collapsed = ratio < COLLAPSE_RATIO
        if collapsed:
            log.warning(
                "the supernet collapsed: train accuracy ended at %.3f, %.0f %% of its post-warm-up peak %.3f "
                "(below %.0f %%); its accuracy signal is not to be trusted (see log.csv's train_acc_vs_peak)",
                self.last, 100 * ratio, self.peak, 100 * COLLAPSE_RATIO,
            )  # fmt: skip
        return {"train_acc_peak": self.peak, "train_acc_final": self.last, "train_acc_final_vs_peak": ratio,
                "train_acc_worst_vs_peak": self.worst_ratio, "collapsed": collapsed}  # fmt: skip


def accuracy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy of a batch, as a 0-d tensor."""
    return (out.argmax(1) == y).float().mean()


def sample_archs(
    logits: torch.Tensor,
    k: int,
    latency: LatencyModel,
    generator: torch.Generator,
    budget_us: float | None = None,
    max_tries: int = 200,
) -> torch.Tensor:
    """K archs drawn layer-wise from softmax(logits): LongTensor [≤K, layers]. With a budget,
    draws over it are rejected (fewer than K come back if the budget is rarely met)."""
    p = torch.softmax(logits.detach().double().cpu(), dim=-1)
    kept: list[torch.Tensor] = []
    for _ in range(max_tries):
        draw = torch.multinomial(p, 4 * k, replacement=True, generator=generator).T  # [4k, L]
        if budget_us is not None:
            draw = draw[latency.predict_batch_us(draw) <= budget_us]
        kept.extend(draw)
        if len(kept) >= k:
            break
    if len(kept) < k:
        log.warning("only %d of %d sampled archs meet the latency budget", len(kept), k)
    return torch.stack(kept[:k]) if kept else torch.empty(0, latency.num_layers, dtype=torch.long)


def check_budget(latency: LatencyModel, budget_us: float | None) -> None:
    """A budget below the fastest arch of the space is an error that says so."""
    fastest = latency.min_max_us()[0]
    if budget_us is not None and fastest > budget_us:
        raise ValueError(
            f"no architecture of {latency.space.name} meets {budget_us / 1000:.3f} ms on this LUT: "
            f"the fastest takes {fastest / 1000:.3f} ms; raise --max-latency-ms"
        )


def constrained_argmax(
    logits: torch.Tensor, latency: LatencyModel, budget_us: float | None
) -> torch.Tensor:
    """Layer-wise argmax; over a budget, greedily swap the block whose change loses the least
    log-probability per µs saved until the arch fits (hard constraint)."""
    logp = torch.log_softmax(logits.detach().double().cpu(), dim=-1)
    idx = logp.argmax(dim=-1)
    if budget_us is None:
        return idx
    check_budget(latency, budget_us)
    table = latency.table_us
    rows = torch.arange(latency.num_layers)
    while latency.predict_batch_us(idx[None])[0] > budget_us:
        saved = table[rows, idx][:, None] - table  # µs saved by each swap, −inf where n/a
        lost = logp[rows, idx][:, None] - logp  # log-prob lost by each swap
        cost = torch.where(saved > 0, lost.clamp_min(0) / saved, torch.full_like(lost, math.inf))
        flat = int(cost.argmin())
        idx[flat // cost.shape[1]] = flat % cost.shape[1]
    return idx


def path_accuracy(
    ctx: SearchContext, net: Supernet, idx: torch.Tensor, calibration: torch.Tensor,
    val: tuple[torch.Tensor, torch.Tensor],
) -> tuple[float, float]:  # fmt: skip
    """(validation, test) accuracy of one path with the supernet's weights, BN recalibrated on
    `calibration` (the weights split) for each."""
    cfg = ctx.cfg
    kw = {"recalib_batches": max(cfg.recalib_batches, 1)}
    _, val_acc = evaluate_path(net, idx, *val, calibration, 256, **kw)
    _, test_acc = evaluate_path(net, idx, ctx.data.x_test, ctx.data.y_test, calibration, 256, **kw)
    return val_acc, test_acc


def finish(
    ctx: SearchContext,
    r: Relaxed,
    theta: torch.Tensor,
    track: ArchLog,
    info: dict[str, Any],
) -> SearchResult:
    """Final arch (constrained argmax of θ), K samples from softmax(θ), and the final arch's
    validation and test accuracy with the supernet's weights (BN recalibrated)."""
    lat = ctx.latency
    budget = ctx.cfg.max_latency_us
    masked = theta.detach().cpu() + r.net.logit_mask.cpu()
    best = constrained_argmax(masked, lat, budget)
    samples = sample_archs(masked, ctx.cfg.num_samples, lat, r.gen, budget)
    val_acc, test_acc = path_accuracy(ctx, r.net, best, r.w_split[0], r.a_split)
    info = {"theta_entropy": mean_entropy(masked), "argmax_stable_epochs": track.stable_epochs(), **info,
            "supernet": r.watch.verdict()}  # fmt: skip
    return SearchResult(
        blocks=tuple(lat.blocks[int(i)] for i in best),
        arch_split_accuracy=val_acc,
        test_accuracy=test_acc,
        theta=masked,
        samples=[tuple(lat.blocks[int(i)] for i in s) for s in samples],
        info=info,
        supernet=r.net,
    )


def bar(it: Iterable, ctx: SearchContext, desc: str, total: int | None = None) -> Iterator:
    """tqdm over `it` when the context asks for progress bars."""
    return iter(tqdm(it, desc=desc, total=total, leave=False, disable=not ctx.progress))
