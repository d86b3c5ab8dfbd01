"""The strategy protocol, its registry, and the data every strategy receives and returns.

A strategy is one file in this package with a class that has a `name` and
`run(ctx: SearchContext) -> SearchResult`, registered with `@register_strategy`. `search.run`
builds the context (data, latency model, proxy space, config) and writes the outputs the same way
for every strategy.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol, runtime_checkable

import torch

from search.data import Dataset
from search.distributed import Dist
from search.latency import LatencyModel
from search.space import Space

__all__ = [
    "SearchConfig",
    "SearchContext",
    "SearchResult",
    "Strategy",
    "STRATEGIES",
    "STRATEGY_DEFAULTS",
    "register_strategy",
    "get_strategy",
]


@dataclass(frozen=True)
class SearchConfig:
    """Every knob of a search. Paper values are FBNet's (Wu et al. 2019, §4.1) unless noted; the
    defaults are fitted to a search of a few minutes on a laptop CPU with the embedded data."""

    strategy: str = "fbnet"  # a key of STRATEGIES
    seed: int = 0  # seeds torch, data order, Gumbel noise and sampling
    # None = the strategy's own default (`STRATEGY_DEFAULTS`; a strategy class may override)
    epochs: int | None = None  # search epochs after warm-up (FBNet: 90 in total)
    warmup_epochs: int | None = None  # epochs that train the weights only (FBNet: 10)
    batch_size: int = 64  # minibatch of both steps (FBNet: 192)
    w_fraction: float = 0.8  # share of the train split for weights; the rest trains θ (FBNet: 80%)
    # "batch": one architecture step after every weight step, cycling the (smaller) architecture
    # split, as DARTS and ProxylessNAS do; "epoch": a pass over each split in turn (FBNet paper)
    alternate: str = "batch"
    # weights: SGD with momentum, cosine-annealed over all epochs
    # weights: `search.recipe` (init, Nesterov SGD, decay on conv / linear weights only), linear
    # warm-up to w_lr, then a per-step cosine to 0 over all epochs
    w_lr: float | None = None  # FBNet: 0.1 at batch 192; None: the recipe's 0.1 · batch_size / 256
    w_momentum: float = 0.9
    w_weight_decay: float = 4e-5  # the recipe's, on conv / linear weights only (FBNet: 1e-4)
    w_warmup_epochs: float = 1.0  # epochs of the weights' linear lr warm-up (at most half the run)
    w_nesterov: bool = True  # Nesterov momentum (the recipe's; ProxylessNAS's reference code)
    w_lr_min: float = 0.0  # the cosine's floor (DARTS: 0.001)
    w_grad_clip: float | None = None  # clip the weights' gradient to this global norm (DARTS: 5)
    # architecture parameters: Adam
    theta_lr: float = 0.1  # FBNet: 0.01 over ~90 epochs of ~1,000 steps; here ~150 steps
    theta_weight_decay: float = 5e-4  # FBNet: 5e-4
    theta_betas: tuple[float, float] = (0.9, 0.999)  # Adam's (β1, β2) (DARTS: 0.5; ProxylessNAS: 0)
    theta_grad_clip: float | None = None  # clip θ's gradient to this global norm before its step
    # commitment term γ(t)·Σ_l H(softmax(θ_l)) added to the architecture loss, γ ramped linearly
    # from 0 in the first search epoch to this in the last (DA²S's entropy loss, Tian et al. 2020):
    # a few hundred θ steps move θ by about a nat on CE alone; the term completes the decision the
    # data and the LUT lean towards. 0 = off (the papers' objectives as they are)
    entropy_weight: float = 0.5
    # FBNet Gumbel-softmax temperature. "fitted": τ0 → tau_end geometrically over the search
    # epochs asked for (warm-up at τ0); "paper": τ0 · exp(−tau_decay · epoch) with the paper's
    # τ0 = 5 and decay 0.045 unless given. --tau-decay alone selects the paper's form.
    tau_schedule: str = "fitted"
    tau0: float | None = None  # initial temperature; None = the schedule's (5.0, as the paper)
    tau_end: float = 0.1  # temperature of the last epoch (fitted schedule)
    tau_decay: float | None = None  # τ ← τ·exp(−tau_decay) per epoch; None = schedule's (paper 0.045)
    mask_threshold: float = 1e-2  # mixed-op paths with mask weight ≤ this are not run
    # FBNet masks. "hard" (default): the straight-through form (GDAS, Dong & Yang 2019): the
    # forward runs the one path a Gumbel-max sample of softmax(θ) picks, the gradient to θ is the
    # soft mask's; the weights only ever train paths that run alone, as the found arch will, so
    # nothing changes when θ commits. "soft": GumbelSoftmax(θ, τ) weights every path (the paper);
    # its weights co-adapt as a mixture and lose most of their accuracy when the paths commit
    # (docs/search.md)
    gumbel: str = "hard"
    # latency term (see strategies/objective.py)
    # None = the strategy's own form: fbnet "mul"; proxyless, darts "add"; evolution, random "none";
    # with target_latency_ms: "target" for every strategy
    latency_loss: str | None = None  # "mul" | "add" | "target" | "none"
    alpha: float = 0.2  # FBNet: 0.2 (scales the loss; Adam is invariant to it)
    beta: float = 0.6  # FBNet: 0.6
    lambda_lat: float = 0.1  # λ of the additive form (ProxylessNAS-style; ref = reference latency)
    ref_latency_ms: float | None = None  # ref of the additive form; None = budget, else uniform θ
    target_latency_ms: float | None = None  # soft target T: CE · (LAT/T)^(w·sign(LAT−T))
    target_weight: float = 5.0  # w of the target form
    max_latency_ms: float | None = None  # hard constraint on the final (and every sampled) arch
    num_samples: int = 6  # K architectures sampled from softmax(θ) after search
    # a path evaluated with supernet weights first re-estimates its batch-norm statistics on this
    # many batches of the weights split (SPOS); fitness of evolution / random and the final arch
    recalib_batches: int = 8
    # ProxylessNAS
    proxyless_paths: int = 2  # paths per layer in the architecture step: 1, 2 (paper), 0 = all
    proxyless_arch_every: int = 1  # with alternate="batch": an architecture step after every n-th weight step
    # DARTS
    darts_order: int = 1  # 1: first-order; 2: unrolled second-order (finite-difference HVP)
    darts_xi: float | None = None  # virtual step learning rate ξ; None = the current weight lr
    # mixture softmax(α/τ), τ from 1 in the first search epoch geometrically to this in the last:
    # the mixture anneals towards the arch it will be discretized to (1 = DARTS as published,
    # whose argmax arch scored 0.11–0.35 with the supernet's weights against 0.9 for the mixture,
    # and missed a tight soft target by 16 %; see docs/results.md)
    darts_tau_end: float = 0.2
    # evolution / random (see strategies/oneshot.py)
    fitness: str = "train"  # "train": each arch trained fitness_epochs from scratch | "oneshot": SPOS supernet
    fitness_epochs: int = 3  # epochs of training per evaluated arch ("train")
    population: int = 8  # regularized evolution population P
    tournament: int = 3  # sample size S of each tournament
    cycles: int = 24  # architectures evaluated in total (evolution and random alike)
    eval_batches: int = 4  # batches of the θ split that score one architecture's fitness ("oneshot")

    def resolved(self) -> "SearchConfig":
        """The config with every None that stands for "the strategy's default" filled in."""
        cls = STRATEGIES.get(self.strategy)
        defaults = {**STRATEGY_DEFAULTS, **(getattr(cls, "defaults", None) or {})}
        done = replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})
        if done.w_lr is None:  # the recipe's batch-scaled peak (search.recipe.RecipeConfig.peak_lr)
            done = replace(done, w_lr=0.1 * done.batch_size / 256)
        return done

    @property
    def max_latency_us(self) -> float | None:
        return None if self.max_latency_ms is None else self.max_latency_ms * 1000.0

    @property
    def target_latency_us(self) -> float | None:
        return None if self.target_latency_ms is None else self.target_latency_ms * 1000.0


# What None means in the fields above unless a strategy's `defaults` says otherwise: fitted to a
# search of a few minutes on two CPU cores with the embedded data (a strategy whose epochs cost a
# tenth, ProxylessNAS, takes more of them).
STRATEGY_DEFAULTS: dict[str, Any] = {"epochs": 8, "warmup_epochs": 1}


@dataclass
class SearchContext:
    """What a strategy gets: config, data (on `device`), the target LUT model, the proxy space."""

    cfg: SearchConfig
    data: Dataset
    latency: LatencyModel  # on the LUT's (target) space
    space: Space  # proxy space the supernet trains on: same layers and candidates
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    on_epoch: Callable[[dict[str, Any]], None] = lambda row: None  # called with each log row
    progress: bool = False  # show tqdm bars
    # this process's place under torchrun: training batches are sharded over ranks and every
    # optimizer step averages gradients (see `common.relaxed_setup`); a world of one otherwise
    dist: Dist = field(default_factory=Dist)
    # checkpoint and resume (`common.EpochCheckpoint`): a differentiable strategy hands its whole
    # state to `on_checkpoint` after every epoch, and continues from `resume` (such a state) when
    # it is set; None: no checkpoints / a fresh start
    on_checkpoint: Callable[[dict[str, Any]], None] | None = None
    resume: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.cfg = self.cfg.resolved()


@dataclass
class SearchResult:
    """What a strategy returns; `search.run` adds latencies and writes the files."""

    blocks: tuple[str, ...]  # the final architecture (the LUT space's block names)
    # accuracy of the final arch with the supernet's weights, its BN statistics recalibrated:
    # on the architecture split, the split θ was fitted on (evolution / random: the split their
    # fitness selected on), so not held out: it flatters the found arch
    arch_split_accuracy: float
    test_accuracy: float  # on the test split, which no step of the search saw
    theta: torch.Tensor | None = None  # [layers, blocks] architecture logits (−inf = n/a)
    samples: list[tuple[str, ...]] = field(default_factory=list)  # K archs drawn from softmax(θ)
    info: dict[str, Any] = field(default_factory=dict)  # strategy-specific, JSON-serialisable
    # the trained supernet (differentiable strategies), for evaluating other paths with its
    # weights (`common.evaluate_path`); not written anywhere
    supernet: Any = field(default=None, repr=False)


@runtime_checkable
class Strategy(Protocol):
    """`name` is set by `register_strategy`; an optional class attribute `defaults` (field →
    value) overrides `STRATEGY_DEFAULTS` for that strategy."""

    name: str

    def run(self, ctx: SearchContext) -> SearchResult: ...


STRATEGIES: dict[str, Callable[[], Strategy]] = {}


def register_strategy(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} is already registered")
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return deco


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ValueError(
            f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}"
        ) from None
