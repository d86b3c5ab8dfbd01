"""The strategy protocol, its registry, and the data every strategy receives and returns.

A strategy is one file in this package with a class that has a `name` and
`run(ctx: SearchContext) -> SearchResult`, registered with `@register_strategy`. `search.run`
builds the context (data, latency model, proxy space, config) and writes the outputs the same way
for every strategy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import torch

from search.data import Dataset
from search.latency import LatencyModel
from search.space import Space

__all__ = [
    "SearchConfig",
    "SearchContext",
    "SearchResult",
    "Strategy",
    "STRATEGIES",
    "register_strategy",
    "get_strategy",
]


@dataclass(frozen=True)
class SearchConfig:
    """Every knob of a search. Paper defaults are FBNet's (Wu et al. 2019, §4.1) unless noted."""

    strategy: str = "fbnet"  # a key of STRATEGIES
    seed: int = 0  # seeds torch, data order, Gumbel noise and sampling
    epochs: int = 4  # search epochs after warm-up (FBNet: 90 in total)
    warmup_epochs: int = 1  # epochs that train the weights only (FBNet: 10)
    batch_size: int = 64  # minibatch of both steps (FBNet: 192)
    w_fraction: float = 0.8  # share of the train split for weights; the rest trains θ (FBNet: 80%)
    # weights: SGD with momentum, cosine-annealed over all epochs
    w_lr: float = 0.1  # FBNet: 0.1
    w_momentum: float = 0.9
    w_weight_decay: float = 1e-4
    # architecture parameters: Adam
    theta_lr: float = 0.01  # FBNet: 0.01
    theta_weight_decay: float = 5e-4  # FBNet: 5e-4
    # FBNet Gumbel-softmax
    tau0: float = 5.0  # initial temperature (FBNet: 5.0)
    tau_decay: float = 0.045  # τ ← τ · exp(−tau_decay) per epoch (FBNet: 0.045)
    mask_threshold: float = 1e-3  # mixed-op paths with mask weight ≤ this are not run
    # latency term
    # None = the strategy's own form: fbnet "mul"; proxyless, darts "add"; evolution, random "none"
    latency_loss: str | None = None  # "mul": CE·α·log(LAT)^β (FBNet); "add": CE + λ·LAT/ref
    alpha: float = 0.2  # FBNet: 0.2
    beta: float = 0.6  # FBNet: 0.6
    lambda_lat: float = 0.1  # λ of the additive form (ProxylessNAS-style; ref = reference latency)
    ref_latency_ms: float | None = None  # ref of the additive form; None = budget, else uniform θ
    max_latency_ms: float | None = None  # hard constraint on the final (and every sampled) arch
    num_samples: int = 6  # K architectures sampled from softmax(θ) after search
    # ProxylessNAS
    proxyless_paths: int = 2  # paths in memory in the architecture step: 1 (BinaryConnect) or 2
    # DARTS
    darts_order: int = 1  # 1: first-order; 2: unrolled second-order (finite-difference HVP)
    darts_xi: float | None = None  # virtual step learning rate ξ; None = w_lr
    # evolution / random
    population: int = 16  # regularized evolution population P
    tournament: int = 4  # sample size S of each tournament
    cycles: int = 64  # architectures evaluated in total (evolution and random alike)
    eval_batches: int = 4  # batches of the θ split that score one architecture's fitness

    @property
    def max_latency_us(self) -> float | None:
        return None if self.max_latency_ms is None else self.max_latency_ms * 1000.0


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


@dataclass
class SearchResult:
    """What a strategy returns; `search.run` adds latencies and writes the files."""

    blocks: tuple[str, ...]  # the final architecture (the LUT space's block names)
    val_accuracy: float  # accuracy of the final arch on the test split (proxy evaluation)
    theta: torch.Tensor | None = None  # [layers, blocks] architecture logits (−inf = n/a)
    samples: list[tuple[str, ...]] = field(default_factory=list)  # K archs drawn from softmax(θ)
    info: dict[str, Any] = field(default_factory=dict)  # strategy-specific, JSON-serialisable


@runtime_checkable
class Strategy(Protocol):
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
