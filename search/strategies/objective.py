"""The search objective: cross-entropy combined with the latency of the (relaxed) architecture,
computed so that no β, no target and no LUT scale overflows; and the check that every
architecture step stays finite.

Forms (`SearchConfig.latency_loss`; None = the strategy's own; `target_latency_ms` selects
"target"):

    mul     FBNet (Wu et al. 2019, eq. 2)   CE · α · log(LAT)^β       LAT in µs, clamped at ≥ e µs
    add     ProxylessNAS-style              CE + λ · LAT / ref
    target  soft latency target T           CE · (LAT / T)^(w · sign(LAT − T))
                                              = CE · exp(w · |log(LAT / T)|)
    none                                    CE

The target form is MnasNet's reward ACC · (LAT/T)^w (Tan et al. 2019, eq. 2) turned into a loss,
with the exponent's sign set by the side of T: above T it is MnasNet's soft constraint (slower
costs), below T it costs to be faster than asked, so T attracts the search from both sides — the
choice TuNAS (Bender et al. 2020) makes with its absolute-value reward |LAT/T − 1|. `w`
(`target_weight`) says how much accuracy a step away from T is worth: at w = 5, 10 % over T
multiplies CE by 1.6. Evolution and random search use the same factor on accuracy
(`target_factor`).

Numerics. The two multiplicative forms are minimised through their logarithm,

    mul:     log CE + log α + β · log log LAT
    target:  log CE + w · |log(LAT / T)|

whose gradient points where the product's does at every step (∇L = L · ∇log L) and which has the
same minimisers; Adam normalises each coordinate by its running RMS, so what changes is only that
a step no longer carries the factor L. The product itself, CE · α · log(LAT)^β with LAT in µs, is
~1e31 at β = 30: in float32 Adam's second moment overflows to inf and every θ step is 0. The log
form stays in the tens for any β in [0, 100] and any LUT from µs to seconds. Latency terms are
computed in float64. `objective_value` (what log.csv shows as `objective`) is the objective
itself, exp of its log, in float64: finite while β · log log LAT < 709 (β ≈ 230 for a 1 s network).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from .base import SearchConfig

__all__ = [
    "LATENCY_LOSSES",
    "LOG_DOMAIN",
    "SearchDivergedError",
    "latency_loss",
    "objective_value",
    "target_factor",
    "check_finite_step",
]

LATENCY_LOSSES = ("mul", "add", "target", "none")
LOG_DOMAIN = ("mul", "target")  # forms minimised through their logarithm


class SearchDivergedError(RuntimeError):
    """An architecture step produced a gradient or parameter that is not finite."""


def latency_loss(
    ce: torch.Tensor, lat_us: torch.Tensor, cfg: SearchConfig, ref_us: float, form: str
) -> torch.Tensor:
    """The loss a strategy minimises: the objective of `form` (log of it for mul and target)."""
    if form == "none":
        return ce
    lat = lat_us.double() if torch.is_tensor(lat_us) else torch.tensor(float(lat_us), dtype=torch.float64)
    if form == "add":
        return ce.double() + cfg.lambda_lat * lat / ref_us
    log_ce = torch.log(ce.double().clamp_min(1e-12))
    if form == "mul":
        if cfg.alpha <= 0:
            raise ValueError(f"alpha must be > 0 in CE·α·log(LAT)^β, got {cfg.alpha}")
        return log_ce + math.log(cfg.alpha) + cfg.beta * torch.log(torch.log(lat.clamp_min(math.e)))
    if form == "target":
        if cfg.target_latency_ms is None:
            raise ValueError("the target form needs --target-latency-ms")
        return log_ce + cfg.target_weight * torch.log(lat.clamp_min(1e-9) / cfg.target_latency_us).abs()
    raise ValueError(f"latency_loss must be one of {LATENCY_LOSSES}, got {form!r}")


def objective_value(loss: torch.Tensor | float, form: str) -> float:
    """The objective itself from the loss `latency_loss` returned (exp of it in the log forms)."""
    v = float(loss.detach()) if torch.is_tensor(loss) else float(loss)
    if form not in LOG_DOMAIN:
        return v
    return math.exp(v) if v < 709.0 else math.inf


def target_factor(lat_us: torch.Tensor, cfg: SearchConfig) -> torch.Tensor:
    """exp(−w · |log(LAT / T)|) ∈ (0, 1]: what the target form multiplies accuracy by (fitness)."""
    lat = lat_us.double()
    return torch.exp(-cfg.target_weight * torch.log(lat / cfg.target_latency_us).abs())


def check_finite_step(
    optimizer: torch.optim.Optimizer, params: Iterable[torch.Tensor], *, where: str, loss: float
) -> None:
    """`optimizer.step()`, refusing to take (or keep) a step that is not finite."""
    params = list(params)
    for p in params:
        if p.grad is not None and not torch.isfinite(p.grad).all():
            raise SearchDivergedError(
                f"{where}: the architecture gradient is not finite (loss {loss:.4g}); the step was "
                "not taken. Check the LUT for zero or infinite latencies, or lower --theta-lr"
            )
    optimizer.step()
    for p in params:
        if not torch.isfinite(p).all():
            raise SearchDivergedError(
                f"{where}: the architecture parameters became non-finite after the step "
                f"(loss {loss:.4g}); lower --theta-lr"
            )
