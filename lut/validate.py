"""Validation scoring: how well a LUT's prediction matches end-to-end measurements.

Pure (numbers in, numbers out): the driver that builds the archs, measures them on the LUT's
own target and calls `evaluate` is `profiler.validate` (`python -m lut validate` runs it). A
validation measures random architectures of the LUT's space (`random_archs`, one uniformly random
candidate per layer, seeded) plus the space's named reference archs (FBNet-A/B/C for "fbnet")
end to end in two independent halves of the rounds, and compares the pooled measurement with the
LUT's prediction `Lut.predict_us`.

Reported (all percentages in %):
- `mape`, `max_ape`: mean / max of 100·|pred − meas| / meas over the evaluated archs;
  `mean_error_pct` the signed mean (negative: the LUT under-predicts);
- `spearman`, `kendall`: rank correlation of predicted vs measured;
- `noise_floor`: median over archs of 100·|m₁ − m₂| / ((m₁ + m₂)/2), where m₁, m₂ are the medians
  of the two halves: the run-to-run error of the target itself, which no LUT can beat;
- `corrections`: fitted corrections of the additive sum (`lut.correction`), each fitted on the
  first half of the random archs ("train") and evaluated on the rest plus the named archs
  ("holdout"); train and holdout errors are both stored. The top-level metrics are those of
  `prediction_model`: "additive" (evaluated on all archs) unless `config.correction` selects a
  correction, which is then evaluated on the holdout archs only. In-sample fits are never the
  headline.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from lut.correction import CORRECTIONS, VALIDATION_FILE, features, fit_correction, read_validation
from lut.files import atomic_write
from lut.store import Lut, LutError
from search.space import Arch, arch_ops
from search.space.spaces import Space

__all__ = [
    "CORRECTIONS",
    "GOAL_MAPE_PCT",
    "GOAL_SPEARMAN",
    "QUIET_DRIFT_PCT",
    "QUIET_NOISE_PCT",
    "verdict",
    "verdict_line",
    "random_archs",
    "arch_features",
    "error_metrics",
    "noise_floor_pct",
    "evaluate",
    "write_validation",
    "read_validation",
    "VALIDATION_FILE",
]

GOAL_MAPE_PCT = 5.0  # host goal for executorch and tflite: MAPE ≤ 5% and Spearman ≥ 0.95
GOAL_SPEARMAN = 0.95
# A run quiet enough to judge a LUT by: its own end-to-end halves agree within this (noise floor)
# and its ops re-timed beside the archs moved at most this much since the LUT (drift).
QUIET_NOISE_PCT = 4.0
QUIET_DRIFT_PCT = 2.0


# --- architectures --------------------------------------------------------------------------------
def random_archs(space: Space, n: int, seed: int) -> list[Arch]:
    """`n` archs with one uniformly random candidate per layer, named random_000, random_001 …"""
    rng = random.Random(seed)
    layers = space.layers()
    return [
        Arch(space.name, tuple(rng.choice(space.candidates(l)) for l in layers), name=f"random_{i:03d}")
        for i in range(n)
    ]


def arch_features(lut: Lut, arch: Arch) -> dict[str, float]:
    """What a correction may use (`lut.correction.FEATURES`) for one arch under `lut`."""
    return features(lut, [op.key for op in arch_ops(arch)])


# --- metrics --------------------------------------------------------------------------------------
def error_metrics(pred: list[float], meas: list[float]) -> dict[str, float]:
    """MAPE and max APE (%), Spearman ρ and Kendall τ of predicted vs measured."""
    p, m = np.asarray(pred, float), np.asarray(meas, float)
    if len(p) != len(m) or len(p) < 2:
        raise ValueError(f"need ≥ 2 paired values, got {len(p)} predicted and {len(m)} measured")
    if np.any(m <= 0):
        raise ValueError("measured latencies must be positive")
    ape = 100.0 * np.abs(p - m) / m
    return {
        "mape": float(ape.mean()),
        "mean_error_pct": float((100.0 * (p - m) / m).mean()),  # signed: < 0 when the LUT under-predicts
        "max_ape": float(ape.max()),
        "spearman": float(stats.spearmanr(p, m).statistic),
        "kendall": float(stats.kendalltau(p, m).statistic),
        "n": int(len(p)),
    }


def noise_floor_pct(half1: list[float], half2: list[float]) -> float:
    """Median over archs of 100·|m₁ − m₂| / ((m₁ + m₂)/2): the target's run-to-run error."""
    a, b = np.asarray(half1, float), np.asarray(half2, float)
    return float(np.median(100.0 * np.abs(a - b) / ((a + b) / 2.0)))


# --- corrections ----------------------------------------------------------------------------------
def _loo_mape(name: str, rows: list[dict[str, float]], meas: list[float]) -> float:
    """Leave-one-out MAPE of a correction on the training archs: how `auto` chooses."""
    errs = []
    for i in range(len(rows)):
        corr = fit_correction(name, rows[:i] + rows[i + 1 :], meas[:i] + meas[i + 1 :])
        errs.append(abs(corr.apply(rows[i]) - meas[i]) / meas[i])
    return 100.0 * float(np.mean(errs))


# --- the whole validation -------------------------------------------------------------------------
def evaluate(
    records: list[dict[str, Any]], correction: str = "none"
) -> dict[str, Any]:
    """Metrics and corrections from per-arch records (features, measured, halves, split).

    Pure: `validate_lut` measures, this computes. Records need `predicted_us`, `num_ops`,
    `measured_us`, `half_us` (two medians) and `split` ("train", "holdout").
    """
    if correction not in ("none", "auto", *CORRECTIONS):
        raise ValueError(f"correction must be none, auto or one of {', '.join(CORRECTIONS)}")
    pred = [r["predicted_us"] for r in records]
    meas = [r["measured_us"] for r in records]
    train = [r for r in records if r["split"] == "train"]
    hold = [r for r in records if r["split"] == "holdout"]
    additive = error_metrics(pred, meas)
    out: dict[str, Any] = {
        "additive": additive,
        "additive_holdout": error_metrics(
            [r["predicted_us"] for r in hold], [r["measured_us"] for r in hold]
        ) if len(hold) >= 2 else None,
        "noise_floor": noise_floor_pct(
            [r["half_us"][0] for r in records], [r["half_us"][1] for r in records]
        ),
        "corrections": {},
    }
    t_meas = [r["measured_us"] for r in train]
    for name in CORRECTIONS:
        if len(train) < len(CORRECTIONS[name]) + 2 or len(hold) < 2:
            continue
        corr = fit_correction(name, train, t_meas)
        out["corrections"][name] = {
            "coef": dict(corr.coef),
            "features": list(CORRECTIONS[name]),
            "train": error_metrics([corr.apply(r) for r in train], t_meas),
            "holdout": error_metrics([corr.apply(r) for r in hold], [r["measured_us"] for r in hold]),
            "loo_train_mape": _loo_mape(name, train, t_meas),
        }
    chosen = correction
    if correction == "auto":
        # chosen on the training archs only: a correction is used if the additive sum misses the
        # goal there and the correction's leave-one-out error beats it; the holdout archs score it
        train_additive = (
            error_metrics([r["predicted_us"] for r in train], t_meas)["mape"]
            if len(train) >= 2
            else math.inf
        )
        cands = {n: c["loo_train_mape"] for n, c in out["corrections"].items()}
        chosen = "none"
        if cands and train_additive > GOAL_MAPE_PCT:
            best = min(cands, key=cands.get)
            chosen = best if cands[best] < train_additive else "none"
    if chosen != "none" and chosen not in out["corrections"]:
        raise LutError(
            f"correction {chosen!r} needs ≥ {len(CORRECTIONS[chosen]) + 2} training archs and "
            "2 holdout archs; raise --archs"
        )
    head = additive if chosen == "none" else out["corrections"][chosen]["holdout"]
    out.update(
        prediction_model="additive" if chosen == "none" else chosen,
        evaluated_on="all" if chosen == "none" else "holdout",
        **{k: head[k] for k in ("mape", "max_ape", "spearman", "kendall")},
    )
    out["meets_goal"] = bool(out["mape"] <= GOAL_MAPE_PCT and out["spearman"] >= GOAL_SPEARMAN)
    return out


def verdict(mape: float, spearman: float, noise_floor: float, drift_pct: float | None) -> dict[str, Any]:
    """Whether a validation may judge the LUT against the goal (raw MAPE ≤ GOAL_MAPE_PCT, Spearman ≥
    GOAL_SPEARMAN), and the judgement. A run is quiet when its noise floor is ≤ QUIET_NOISE_PCT and
    its drift (None: not measured) within ±QUIET_DRIFT_PCT; otherwise `meets_goal` is None and
    `not_quiet` says by how much each figure missed.

        >>> verdict(3.0, 0.97, 2.1, -0.5)["meets_goal"]
        True
        >>> verdict(3.0, 0.97, 6.0, -0.5)["not_quiet"]
        ['noise floor 6.00 % > 4 % (by 2.00 points)']
    """
    not_quiet = []
    if not noise_floor <= QUIET_NOISE_PCT:
        not_quiet.append(f"noise floor {noise_floor:.2f} % > {QUIET_NOISE_PCT:g} % "
                         f"(by {noise_floor - QUIET_NOISE_PCT:.2f} points)")  # fmt: skip
    if drift_pct is None:
        not_quiet.append("drift not measured (re-time LUT ops beside the archs: --drift-ops N or all)")
    elif abs(drift_pct) > QUIET_DRIFT_PCT:
        not_quiet.append(f"drift {drift_pct:+.2f} % beyond ±{QUIET_DRIFT_PCT:g} % "
                         f"(by {abs(drift_pct) - QUIET_DRIFT_PCT:.2f} points)")  # fmt: skip
    meets = None if not_quiet else bool(mape <= GOAL_MAPE_PCT and spearman >= GOAL_SPEARMAN)
    return {"quiet": not not_quiet, "not_quiet": not_quiet, "meets_goal": meets,
            "goal": f"raw MAPE ≤ {GOAL_MAPE_PCT:g} % and Spearman ≥ {GOAL_SPEARMAN:g}",
            "thresholds": {"noise_floor_pct": QUIET_NOISE_PCT, "drift_pct": QUIET_DRIFT_PCT}}  # fmt: skip


def verdict_line(v: dict[str, Any]) -> str:
    """One line for a human: the judgement, or why the run gives none."""
    if v["quiet"]:
        return f"verdict: {'meets' if v['meets_goal'] else 'misses'} the goal ({v['goal']}); the run was quiet"
    return f"no verdict: the run was not quiet enough to judge ({'; '.join(v['not_quiet'])})"


def write_validation(lut: Lut, report: dict[str, Any]) -> Path:
    """Store the report as validation.json beside the LUT (atomic); a LUT of a predicted space
    (`lut.predictor.PredictedLut`) stores it beside its predictor, per space."""
    path = getattr(lut, "validation_path", None) or Path(lut.path) / VALIDATION_FILE
    return atomic_write(path, json.dumps(report, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    raise TypeError(f"cannot serialize {type(v).__name__}")
