"""Corrections of a LUT's additive sum, and predictions with them: the one `Correction` type that
validation fits, `lut predict` applies and search folds into its latency tensors.

A LUT predicts a network as the sum of its ops' latencies (each minus the per-invocation
overhead) plus that overhead once (`Lut.predict_us`). A correction is a linear model of the
measured latency on *features* of the network, each of which is itself a sum over the network's
ops plus a once-per-network term:

    feature_f(net) = Σ_op per_op_f(op) + once_f(first op)
    corrected(net) = Σ_f coef_f · feature_f(net)

    predicted_us   per op: the op's LUT latency (overhead subtracted); once: the overhead
    num_ops        per op: 1 for an op that computes (not an identity skip/zero); once: 0
    1              per op: 0; once: 1 (the intercept)

Because every feature is a sum over ops, a correction is too: `Correction.op_us` is what one op
contributes and `Correction.once_us` what a network adds once, so a search can fold any
correction into a per-(layer, block) table and stay differentiable. Adding a correction is adding
a `CORRECTIONS` entry (its feature names), or a feature to `FEATURES`; nothing else names them.

    c = fit_correction("affine", rows, measured_us)     # rows: feature dicts of measured archs
    c.predict_us(lut, op_keys)                           # == Σ_f coef_f · features[f]
    predict_arch(lut, get_arch("fbnet_c"))               # {"additive_us": …, "predicted_us": …}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from search.space import Arch, arch_ops, parse_op_key

from .store import Lut, LutError

__all__ = [
    "Feature",
    "FEATURES",
    "CORRECTIONS",
    "Correction",
    "CorrectionError",
    "features",
    "fit_correction",
    "VALIDATION_FILE",
    "read_validation",
    "validated_correction",
    "predict_arch",
]

VALIDATION_FILE = "validation.json"


class CorrectionError(LutError):
    """A correction cannot be fitted, read or applied; the message says what to do."""


@dataclass(frozen=True)
class Feature:
    """A per-network quantity that is a sum over the network's ops plus a once-per-network term."""

    per_op: Callable[[Lut, str], float]  # (lut, op key) → contribution of that op
    once: Callable[[Lut, str], float]  # (lut, key of the network's first op) → added once
    doc: str = ""


def _overhead_once(lut: Lut, first_key: str) -> float:
    op = parse_op_key(first_key)
    return lut.overhead_us(op.c_in, op.h, op.w)


FEATURES: dict[str, Feature] = {
    "predicted_us": Feature(lambda lut, k: lut.op_latency_us(k), _overhead_once, "the additive LUT sum (µs)"),
    "num_ops": Feature(lambda lut, k: float(not parse_op_key(k).is_identity), lambda lut, k: 0.0,
                       "ops that compute (identity skip/zero excluded)"),
    "1": Feature(lambda lut, k: 0.0, lambda lut, k: 1.0, "intercept"),
}  # fmt: skip

# name → feature names. Fitted by least squares on relative error (rows weighted by 1/measured).
CORRECTIONS: dict[str, tuple[str, ...]] = {
    "affine": ("predicted_us", "1"),  # measured ≈ a·sum + b: a global scale (cache, clocks)
    "per_op": ("predicted_us", "num_ops", "1"),  # + c per computing op (boundaries, transposes)
}


def features(lut: Lut, op_keys: Sequence[str], names: Sequence[str] | None = None) -> dict[str, float]:
    """The features of a network (its op keys, in network order) under `lut`."""
    keys = list(op_keys)
    if not keys:
        raise ValueError("a network needs at least one op key")
    lut.check_coverage(keys)
    out = {}
    for name in names or FEATURES:
        f = FEATURES[name]
        out[name] = float(sum(f.per_op(lut, k) for k in keys) + f.once(lut, keys[0]))
    return out


@dataclass(frozen=True)
class Correction:
    """coef: feature name → coefficient; `name` is its `CORRECTIONS` key (for reports)."""

    name: str
    coef: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.coef) - set(FEATURES))
        if unknown:
            raise CorrectionError(
                f"correction {self.name!r} uses unknown features {unknown}; known: {', '.join(FEATURES)}"
            )

    def op_us(self, lut: Lut, key: str) -> float:
        """What one op contributes to the corrected prediction."""
        return sum(c * FEATURES[f].per_op(lut, key) for f, c in self.coef.items())

    def once_us(self, lut: Lut, first_key: str) -> float:
        """What a network adds once (given its first op)."""
        return sum(c * FEATURES[f].once(lut, first_key) for f, c in self.coef.items())

    def apply(self, row: Mapping[str, float]) -> float:
        """The corrected value from a network's features (the intercept "1" may be left out)."""
        return sum(c * _value(row, f) for f, c in self.coef.items())

    def predict_us(self, lut: Lut, op_keys: Sequence[str]) -> float:
        return self.apply(features(lut, op_keys, list(self.coef)))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "coef": dict(self.coef)}


def fit_correction(name: str, rows: Sequence[Mapping[str, float]], measured: Sequence[float]) -> Correction:
    """Least-squares fit of correction `name` on relative error: minimises Σ (pred/meas − 1)²."""
    if name not in CORRECTIONS:
        raise CorrectionError(f"unknown correction {name!r}; known: {', '.join(CORRECTIONS)}")
    names = CORRECTIONS[name]
    if len(rows) < len(names) + 1:
        raise CorrectionError(f"correction {name!r} needs ≥ {len(names) + 1} training archs, got {len(rows)}")
    y = np.asarray(measured, float)
    x = np.array([[_value(r, n) for n in names] for r in rows]) / y[:, None]
    coef, *_ = np.linalg.lstsq(x, np.ones_like(y), rcond=None)
    return Correction(name, dict(zip(names, map(float, coef))))


def _value(row: Mapping[str, float], name: str) -> float:
    return row.get(name, 1.0) if name == "1" else row[name]


# --- the validated correction of a LUT ------------------------------------------------------------
def read_validation(lut_dir: str | Path) -> dict[str, Any] | None:
    """The stored validation report of a LUT directory, or None when it was never validated."""
    path = Path(lut_dir) / VALIDATION_FILE
    if not path.exists():
        return None
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise LutError(f"{path} is corrupt ({e}); re-run `python -m lut validate`") from None
    if not isinstance(report, dict):
        raise LutError(f"{path} is corrupt (not a JSON object); re-run `python -m lut validate`")
    return report


def validated_correction(lut: Lut) -> Correction | None:
    """The correction `lut validate --correction …` chose for this LUT, or None (never validated,
    or the validation kept the plain additive sum)."""
    report = read_validation(lut.path) if getattr(lut, "path", None) else None
    name = (report or {}).get("prediction_model", "additive")
    if name == "additive":
        return None
    try:
        coef = report["corrections"][name]["coef"]  # type: ignore[index]
    except (KeyError, TypeError):
        raise CorrectionError(
            f"{lut.path}/{VALIDATION_FILE} names correction {name!r} but has no coefficients for it; "
            "re-run `python -m lut validate`"
        ) from None
    return Correction(name, coef)


def predict_arch(lut: Lut, arch: Arch, correction: Correction | None | str = "validated") -> dict[str, Any]:
    """An arch's predicted latency on `lut`: the additive sum, and with `correction` ("validated":
    the LUT's own, if any; None: none) the corrected value. `predicted_us` is the one to use."""
    if arch.space != lut.space:
        raise LutError(
            f"arch {arch.label} is of space {arch.space!r}, the LUT {lut.id} of {lut.space!r}; "
            "predict with a LUT of the arch's space"
        )
    keys = [op.key for op in arch_ops(arch)]
    corr = validated_correction(lut) if correction == "validated" else correction
    additive = float(lut.predict_us(keys))
    out: dict[str, Any] = {
        "arch": arch.label,
        "lut": lut.id,
        "additive_us": additive,
        "correction": None if corr is None else corr.to_dict(),  # type: ignore[union-attr]
        "corrected_us": None if corr is None else corr.predict_us(lut, keys),  # type: ignore[union-attr]
    }
    out["predicted_us"] = out["corrected_us"] if corr is not None else additive
    return out
