"""Validation: measure architectures end to end and compare with the LUT's prediction.

`validate_lut(lut, config)` builds `config.num_archs` random architectures of the LUT's space
(one uniformly random candidate per layer, seeded) plus the space's named reference archs
(FBNet-A/B/C for "fbnet"), measures each end to end with `profiler.api.measure_archs` on the
LUT's own target and runtime (threads, dtype) in two independent halves of the rounds, and
compares the pooled measurement with the LUT's prediction `Lut.predict_us`.

Reported (all percentages in %):
- `mape`, `max_ape`: mean / max of 100·|pred − meas| / meas over the evaluated archs;
- `spearman`, `kendall`: rank correlation of predicted vs measured;
- `noise_floor`: median over archs of 100·|m₁ − m₂| / ((m₁ + m₂)/2), where m₁, m₂ are the medians
  of the two halves: the run-to-run error of the target itself, which no LUT can beat;
- `corrections`: fitted corrections of the additive sum (see `CORRECTIONS`), each fitted on the
  first half of the random archs ("train") and evaluated on the rest plus the named archs
  ("holdout"); train and holdout errors are both stored. The top-level metrics are those of
  `prediction_model`: "additive" (evaluated on all archs) unless `config.correction` selects a
  correction, which is then evaluated on the holdout archs only. In-sample fits are never the
  headline.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from lut.store import Lut, LutError
from search.space import Arch, arch_ops, get_space, named_archs_for
from search.space.spaces import Space

__all__ = [
    "ValidationConfig",
    "CORRECTIONS",
    "random_archs",
    "error_metrics",
    "noise_floor_pct",
    "fit_correction",
    "validate_lut",
    "evaluate",
    "write_validation",
    "read_validation",
    "corrected_predict_us",
    "VALIDATION_FILE",
]

logger = logging.getLogger(__name__)

VALIDATION_FILE = "validation.json"
GOAL_MAPE_PCT = 5.0  # host goal for executorch and tflite: MAPE ≤ 5% and Spearman ≥ 0.95
GOAL_SPEARMAN = 0.95


@dataclass(frozen=True)
class ValidationConfig:
    num_archs: int = 20  # random archs, besides the space's named reference archs
    seed: int = 0  # seeds the random archs and the measurement order
    rounds: int = 6  # end-to-end rounds in all, split into two halves for the noise floor
    device: str | None = None  # target: "host", or an adb serial (required for phone LUTs)
    correction: str = "none"  # "none" (additive sum), or a CORRECTIONS key, or "auto"
    target_options: dict[str, Any] | None = None  # passed through to the target
    progress: bool = False  # progress bars while exporting and measuring


# --- architectures --------------------------------------------------------------------------------
def random_archs(space: Space, n: int, seed: int) -> list[Arch]:
    """`n` archs with one uniformly random candidate per layer, named random_000, random_001 …"""
    rng = random.Random(seed)
    layers = space.layers()
    return [
        Arch(space.name, tuple(rng.choice(space.candidates(l)) for l in layers), name=f"random_{i:03d}")
        for i in range(n)
    ]


def _features(lut: Lut, arch: Arch) -> dict[str, float]:
    """What a correction may use: the additive prediction and counts of ops that run."""
    ops = arch_ops(arch)
    keys = [op.key for op in ops]
    computing = [op for op in ops if not op.is_identity]
    return {
        "predicted_us": float(lut.predict_us(keys)),
        "num_ops": float(len(computing)),
    }


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
# A correction is a linear model of measured latency on some features, fitted by least squares on
# relative error (rows weighted by 1/measured). name → feature names ("1" = intercept).
CORRECTIONS: dict[str, tuple[str, ...]] = {
    "affine": ("predicted_us", "1"),  # measured ≈ a·pred + b: a global scale (cache, clocks)
    "per_op": ("predicted_us", "num_ops", "1"),  # + c per computing op (boundaries, transposes)
}


def _design(rows: list[dict[str, float]], names: tuple[str, ...]) -> np.ndarray:
    return np.array([[1.0 if n == "1" else r[n] for n in names] for r in rows])


def fit_correction(
    name: str, rows: list[dict[str, float]], measured: list[float]
) -> dict[str, float]:
    """Least-squares coefficients (feature → coefficient) of correction `name`."""
    if name not in CORRECTIONS:
        raise ValueError(f"unknown correction {name!r}; known: {', '.join(CORRECTIONS)}")
    names = CORRECTIONS[name]
    if len(rows) < len(names) + 1:
        raise ValueError(f"correction {name!r} needs ≥ {len(names) + 1} training archs")
    y = np.asarray(measured, float)
    x = _design(rows, names) / y[:, None]
    coef, *_ = np.linalg.lstsq(x, np.ones_like(y), rcond=None)
    return dict(zip(names, map(float, coef)))


def apply_correction(coef: dict[str, float], row: dict[str, float]) -> float:
    return sum(c * (1.0 if n == "1" else row[n]) for n, c in coef.items())


def corrected_predict_us(lut: Lut, arch: Arch, correction: dict[str, Any] | None) -> float:
    """The LUT's prediction for `arch` with a stored correction (None: the additive sum)."""
    row = _features(lut, arch)
    return row["predicted_us"] if correction is None else apply_correction(correction["coef"], row)


def _loo_mape(name: str, rows: list[dict[str, float]], meas: list[float]) -> float:
    """Leave-one-out MAPE of a correction on the training archs: how `auto` chooses."""
    errs = []
    for i in range(len(rows)):
        coef = fit_correction(name, rows[:i] + rows[i + 1 :], meas[:i] + meas[i + 1 :])
        errs.append(abs(apply_correction(coef, rows[i]) - meas[i]) / meas[i])
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
        coef = fit_correction(name, train, t_meas)
        out["corrections"][name] = {
            "coef": coef,
            "features": list(CORRECTIONS[name]),
            "train": error_metrics([apply_correction(coef, r) for r in train], t_meas),
            "holdout": error_metrics(
                [apply_correction(coef, r) for r in hold], [r["measured_us"] for r in hold]
            ),
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


def _target(lut: Lut, device: str | None) -> str:
    if device:
        return device
    dev = lut.meta.get("device", {})
    if dev.get("target") == "host" or str(dev.get("device_id", "")).startswith("host"):
        return "host"
    raise LutError(
        f"LUT {lut.device_id} was measured on a phone: give its adb serial with --device SERIAL "
        "(a serial is not an identity, so it is not stored in the LUT)"
    )


def validate_lut(
    lut: Lut,
    config: ValidationConfig = ValidationConfig(),
) -> dict[str, Any]:
    """Measure random + named archs end to end and report the LUT's error (see module doc)."""
    if config.rounds < 2:
        raise ValueError("rounds must be ≥ 2: the noise floor needs two independent halves")
    from profiler.api import measure_archs  # local: lut imports the profiler only to validate

    space = get_space(lut.space)
    rand = random_archs(space, config.num_archs, config.seed)
    named = named_archs_for(space.name)
    archs = rand + named
    for arch in archs:
        lut.check_coverage([op.key for op in arch_ops(arch, space)])
    rt, proto = lut.meta.get("runtime", {}), lut.meta.get("protocol", {})
    kwargs = dict(  # the LUT's own target, runtime and protocol
        device=_target(lut, config.device),
        threads=int(rt.get("threads") or 1),
        dtype=rt.get("dtype", "fp32"),
        core_mask=rt.get("core_mask"),
        warmup=int(proto.get("warmup", 5)),
        runs=int(proto.get("runs", 20)),
        target_options=config.target_options,
        progress=config.progress,
    )
    half = config.rounds // 2
    halves = [
        measure_archs(archs, rt["name"], rounds=half, seed=config.seed + i, **kwargs) for i in range(2)
    ]
    n_train = len(rand) // 2
    records = []
    for i, arch in enumerate(archs):
        s1, s2 = halves[0][arch.name], halves[1][arch.name]
        records.append(
            {
                "name": arch.name,
                "blocks": list(arch.blocks),
                "head_channels": arch.head_channels,
                "split": "train" if i < n_train else "holdout",
                **_features(lut, arch),
                "measured_us": float(np.median(s1 + s2)),
                "half_us": [float(np.median(s1)), float(np.median(s2))],
                "num_samples": len(s1) + len(s2),
            }
        )
    report = evaluate(records, config.correction)
    for r in records:
        r["ape"] = 100.0 * abs(r["predicted_us"] - r["measured_us"]) / r["measured_us"]
        chosen = report["corrections"].get(report["prediction_model"])
        if chosen:
            r["corrected_us"] = apply_correction(chosen["coef"], r)
    report.update(
        num_archs=len(archs),
        lut={"device_id": lut.device_id, "space": lut.space, "version": lut.version,
             "content_hash": lut.meta.get("content_hash")},  # fmt: skip
        config={**asdict(config), **{k: v for k, v in kwargs.items() if k != "progress"},
                "runtime": rt.get("name")},  # fmt: skip
        noise_floor_definition=(
            "median over archs of 100*|m1-m2|/((m1+m2)/2), m1 and m2 the medians of two "
            f"independent halves of {config.rounds} end-to-end rounds"
        ),
        archs=records,
    )
    return report


def write_validation(lut: Lut, report: dict[str, Any]) -> Path:
    """Store the report as validation.json beside the LUT (atomic)."""
    path = Path(lut.path) / VALIDATION_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True, default=_json_default) + "\n")
    tmp.replace(path)
    return path


def read_validation(lut_dir: str | Path) -> dict[str, Any] | None:
    """The stored validation report of a LUT directory, or None when it was never validated."""
    path = Path(lut_dir) / VALIDATION_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise LutError(f"{path} is corrupt ({e}); re-run `python -m lut validate`") from None


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    raise TypeError(f"cannot serialize {type(v).__name__}")
