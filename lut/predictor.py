"""Kernel-level latency predictors: a regressor per block kind, fitted on measured LUT rows, that
answers for op shapes no LUT measured (another input resolution, another width multiplier).

    pred = fit_predictor([load_lut("…/fbnet/executorch-t1"), load_lut("…/shapes-fbnet/executorch-t1")])
    path = save_predictor(pred, luts[0])          # <first LUT's runtime dir>/predictors/v<N>.json
    pred.predict_us([op, …], cache)               # raw median µs, as a LUT row would hold
    lut2 = predicted_lut(lut, "fbnet-r160-w0.75") # a `Lut` of that space: measured rows where the
                                                  # LUT has them, the predictor's elsewhere

Model (per block kind: ir, mb, skip, conv, pool_fc, overhead), fitted on the rows as the LUT
stores them (median µs, the per-invocation overhead included; overhead ops are a kind of their own,
so a predicted op is overhead-subtracted like a measured one):

    µs ≈ (Σ_t coef_t · term_t(op)) · exp(Σ trees(features(op)))

The terms (`TERMS`) are what a kernel's time is made of: a fixed cost and one per conv call, output
pixels, dense MACs and depthwise MACs (two very different rates), the same in whole tiles of a CPU
kernel (16 channels, 6 or 7 pixels), activation and weight elements, and the weights of an op timed
cold; their coefficients are non-negative and fitted on relative error, so the base is a
roofline-like sum that interpolates and extrapolates smoothly between a few sampled shapes (trees
alone cannot). Gradient-boosted trees (scikit-learn) then fit the log ratio of measured to base on
`FEATURES` (MACs, parameters, input/output/activation elements, H, output pixels, channels in,
expanded and out and their remainders past 16, kernel, expansion, stride, groups, MACs per
parameter, and the cache state): the cache cliffs, stride-2 kernels and shapes a runtime tiles
badly.

Cache state (`OpCache`). A job under the "mixed" protocol times the ops whose weights stream
inside a network cold, over copies sized to the network (a sampled LUT: to each draw's), and the
same op runs faster warm than cold, and cold faster where its network fits in the last-level
cache. Fitting reads each row's state from its LUT's protocol record (`lut_cache`); predicting a
space reads it from the same rule (`search.space.streamed_ops`) with that space's network size
(`space_cache`), so a 10 MiB network's heavy layers are not charged the memory traffic of a
40 MiB one's.

Portable form: JSON. The term coefficients and every tree's arrays (children, feature, threshold,
value) are stored as numbers; `Predictor.predict_us` evaluates them with numpy, so reading a
predictor needs neither pickle nor scikit-learn, and `FORMAT_VERSION` says which readers can.
The artifact records the device, runtime, the LUT versions and content hashes it was fitted on,
the library versions that fitted it, and its held-out error (`held_out`: RMSPE and the share of
ops within ±10 %, overall and per kind, from a fit on 80 % of the rows scored on the other 20 %).
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from search.space import PRIVATE_CACHE_BYTES, Arch, ArchError, Op, Space, block_spec, get_space, network_bytes, overhead_op, streamed_ops

from .files import atomic_write, fsync_dir
from .store import Lut, LutCoverageError, LutError

__all__ = [
    "FORMAT", "FORMAT_VERSION", "FEATURES", "PREDICTORS_DIR", "Predictor", "PredictorError", "PredictedLut",
    "OpCache", "op_features", "lut_cache", "space_cache", "fit_predictor", "save_predictor", "load_predictor",
    "find_predictor", "predicted_lut", "retarget_arch",
]  # fmt: skip

log = logging.getLogger(__name__)

FORMAT = "hwnas-latency-predictor"
FORMAT_VERSION = 1  # bump when a reader of the previous version would misread a file
PREDICTORS_DIR = "predictors"  # beside a LUT's versions: <runtime dir>/predictors/v<N>.json
HOLD_OUT = 0.2  # share of rows the held-out error is scored on

# op key → the bytes the op's cold copies were sized to hold (`RunSpec.cold_bytes`; 0.0 for an op
# timed as replicas); an op absent was timed warm
OpCache = dict[str, float]
LLC_RULE_BYTES = 64 << 20  # cold copies of "twice the last-level cache" (cold_bytes 0), taken as past any LLC

# Tree features: name → value of an op (logs of sizes, raw small integers). `c` is the op's cache
# state as a job timed it (`OpCache`): the same op runs faster warm than cold, and cold faster when
# its copies together fit in the last-level cache (a small network's) than when they do not.
FEATURES: dict[str, Any] = {
    "log_macs": lambda op, s, c: math.log1p(op.macs),
    "log_params": lambda op, s, c: math.log1p(op.params),
    "log_in": lambda op, s, c: math.log(op.c_in * op.h * op.w),
    "log_out": lambda op, s, c: math.log(math.prod(op.output_shape)),
    "log_act": lambda op, s, c: math.log(op.activations),
    "log_macs_per_param": lambda op, s, c: math.log1p(op.macs) - math.log1p(op.params),
    "log_h": lambda op, s, c: math.log(op.h),
    "log_c_in": lambda op, s, c: math.log(op.c_in),
    "log_c_out": lambda op, s, c: math.log(op.c_out),
    "log_c_mid": lambda op, s, c: math.log(_mid(op)),
    "log_pixels_out": lambda op, s, c: math.log(math.prod(op.output_shape[-2:])),
    # channels past a whole number of a kernel's 16-wide tiles: a 40-channel conv runs partly empty
    "c_in_mod16": lambda op, s, c: float(op.c_in % 16),
    "c_mid_mod16": lambda op, s, c: float(_mid(op) % 16),
    "c_out_mod16": lambda op, s, c: float(op.c_out % 16),
    "kernel": lambda op, s, c: float(s.kernel),
    "expansion": lambda op, s, c: float(s.expansion),
    "stride": lambda op, s, c: float(op.stride),
    "groups": lambda op, s, c: float(s.groups),
    "cold": lambda op, s, c: float(c is not None),
    "log_cold_bytes": lambda op, s, c: math.log(c) if c else 0.0,
}

LANES = 16  # output channels a CPU kernel computes at once (XNNPACK's f32 tiles: 8 or 16 wide)
ROWS = (6, 7)  # output pixels a GEMM kernel computes at once (XNNPACK f32: 6x8 on arm64, 7x16 avx512)


def _mid(op: Op) -> int:
    """The block's widest channel count: an inverted residual's expanded channels, else its output's."""
    spec = block_spec(op.block)
    return op.c_in * spec.expansion if spec.kind in ("ir", "mb") else max(op.c_out, 1)


def _convs(op: Op) -> list[tuple[int, int, int, int, int, int]]:
    """The op's convolutions as (c_in, c_out, kernel, groups, out_h, out_w)."""
    h, w, out = op.h, op.w, []
    for ci, co, k, g, st in block_spec(op.block)._convs(op.c_in, op.c_out, op.stride):
        h, w = -(-h // st), -(-w // st)
        out.append((ci, co, k, g, h, w))
    return out


def _conv_macs(op: Op, lanes: int = 1, rows: int = 1) -> tuple[float, float]:
    """(dense MACs: full and grouped convs and the classifier, depthwise MACs) of an op; they run at
    very different rates (a depthwise conv reuses each weight over its pixels only). `lanes`, `rows`:
    with each conv's output channels rounded up to a multiple of `lanes` (and a dense conv's output
    pixels to one of `rows`), the MACs a kernel that computes such tiles at once spends (an
    8-channel conv costs a 16-channel one's)."""
    dense, depthwise = 0.0, 0.0
    for ci, co, k, g, h, w in _convs(op):
        tiled_co = -(-co // lanes) * lanes
        if g > 1 and g == ci == co:
            depthwise += h * w * tiled_co * k * k
        else:
            dense += -(-(h * w) // rows) * rows * tiled_co * (ci // g) * k * k
    if block_spec(op.block).kind == "pool_fc":
        dense += op.c_in * op.c_out
    return dense, depthwise


# Cost terms of the linear base: latency ≈ Σ coef · term, coef ≥ 0 (a fixed cost and one per
# kernel call, compute at two rates and in whole tiles, memory traffic of activations and weights,
# and the weights an op timed cold reads from beyond its caches). `c`: as in FEATURES.
TERMS: dict[str, Any] = {
    "once": lambda op, c: 1.0,
    "convs": lambda op, c: float(len(_convs(op))),
    "pixels_out": lambda op, c: float(sum(h * w for *_, h, w in _convs(op))),
    "dense_macs": lambda op, c: _conv_macs(op)[0],
    "depthwise_macs": lambda op, c: _conv_macs(op)[1],
    "dense_macs_tiled": lambda op, c: _conv_macs(op, LANES)[0],
    "depthwise_macs_tiled": lambda op, c: _conv_macs(op, LANES)[1],
    **{f"dense_macs_tiled_{r}x{LANES}": (lambda op, c, r=r: _conv_macs(op, LANES, r)[0]) for r in ROWS},
    "activations": lambda op, c: float(op.activations),
    "params": lambda op, c: float(op.params),
    "cold_params": lambda op, c: float(op.params) if c is not None else 0.0,
}


class PredictorError(LutError):
    """A predictor cannot be fitted, read or used; the message says what to do."""


def op_features(ops: Sequence[Op], cache: OpCache | None = None) -> np.ndarray:
    """[len(ops), len(FEATURES)] float64: the trees' features (`cache`: the ops a job timed cold,
    see `OpCache`; None: every op warm)."""
    rows = []
    for op in ops:
        spec = block_spec(op.block)
        state = cache.get(op.key) if cache else None
        rows.append([f(op, spec, state) for f in FEATURES.values()])
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURES))


def lut_cache(lut: Lut) -> OpCache:
    """The cache state `lut`'s job timed each of its ops in, from its protocol record."""
    proto = lut.meta.get("protocol") or {}
    cache = proto.get("cache")
    if cache == "mixed":
        states = dict(proto.get("op_cache") or {})
    elif cache in ("cold", "replicas"):
        states = {str(k): cache for k in lut.table.index}
    else:
        return {}
    per_op, default = proto.get("op_cold_bytes") or {}, proto.get("cold_bytes")
    return {k: (float(per_op.get(k, default) or LLC_RULE_BYTES) if st == "cold" else 0.0)
            for k, st in states.items() if st != "warm"}  # fmt: skip


def space_cache(lut: Lut, space: Space, ops: Sequence[Op]) -> OpCache:
    """The cache state a job like `lut`'s would time `ops` of `space` in (every op of a network,
    overhead ops included, so that an overhead op's state follows its shape's ops): the same rule
    (`search.space.streamed_ops` under "mixed"), cold copies sized to `space`'s network where the
    LUT's were sized to its own (the default), else to what the LUT's were."""
    proto = lut.meta.get("protocol") or {}
    cache = proto.get("cache")
    if cache not in ("mixed", "cold", "replicas"):
        return {}
    per_el = 1 if lut.runtime.get("dtype") == "int8" else 4
    nbytes = _cold_bytes_in(lut, proto, space, per_el)
    replicas = cache == "replicas" or "replicas" in (proto.get("op_cache") or {}).values()
    if cache != "mixed":
        return {op.key: 0.0 if replicas else nbytes for op in ops}
    cold = streamed_ops(ops, overhead_op(space.fixed_ops()["stem"]), whole_shapes=replicas,
                        dtype=lut.runtime.get("dtype") or "fp32",
                        private_cache_bytes=proto.get("private_cache_bytes") or PRIVATE_CACHE_BYTES)  # fmt: skip
    return {k: 0.0 if replicas else nbytes for k in cold}


def _cold_bytes_in(lut: Lut, proto: dict[str, Any], space: Space, per_el: int) -> float:
    """What cold copies of `space`'s ops hold under `lut`'s protocol, read as `lut_cache` reads it:
    `space`'s network where the LUT sized its copies to its own network (per draw for a sampled
    LUT), else the LUT's one size (none recorded, or 0: LLC_RULE_BYTES)."""
    recorded = proto.get("cold_bytes")
    if proto.get("op_cold_bytes"):
        return float(network_bytes(space, per_el))
    try:
        own = network_bytes(get_space(lut.space), per_el) if recorded else None
    except ValueError:  # a space name no parser knows (a sampled one)
        own = None
    return float(network_bytes(space, per_el) if recorded and recorded == own else recorded or LLC_RULE_BYTES)


def op_terms(ops: Sequence[Op], cache: OpCache | None = None) -> np.ndarray:
    """[len(ops), len(TERMS)] float64: the linear base's cost terms (`cache`: as in op_features)."""
    cache = cache or {}
    rows = [[t(op, cache.get(op.key)) for t in TERMS.values()] for op in ops]
    return np.asarray(rows, dtype=np.float64).reshape(len(ops), len(TERMS))


# --- the fitted model as data -------------------------------------------------------------------
def _tree_to_dict(tree: Any) -> dict[str, list]:
    t = tree.tree_
    return {
        "children_left": t.children_left.tolist(), "children_right": t.children_right.tolist(),
        "feature": t.feature.tolist(), "threshold": t.threshold.tolist(), "value": t.value[:, 0, 0].tolist(),
    }  # fmt: skip


def _eval_tree(tree: dict[str, Any], x: np.ndarray) -> np.ndarray:
    left, right = np.asarray(tree["children_left"]), np.asarray(tree["children_right"])
    feat, thr, value = np.asarray(tree["feature"]), np.asarray(tree["threshold"]), np.asarray(tree["value"])
    node = np.zeros(len(x), dtype=np.int64)
    rows = np.arange(len(x))
    while True:
        inner = left[node] != -1
        if not inner.any():
            return value[node]
        go_left = x[rows, np.maximum(feat[node], 0)] <= thr[node]
        node = np.where(inner, np.where(go_left, left[node], right[node]), node)


@dataclass
class KindModel:
    """µs = (coef · terms(op)) · exp(tree_weight · Σ trees(features(op)))."""

    coef: list[float]
    trees: list[dict[str, list]] = field(default_factory=list)
    tree_weight: float = 0.0
    n_train: int = 0

    def base_us(self, terms: np.ndarray) -> np.ndarray:
        return np.maximum(terms @ np.asarray(self.coef), 1e-3)

    def predict_us(self, terms: np.ndarray, x: np.ndarray) -> np.ndarray:
        log_ratio = np.zeros(len(x))
        for tree in self.trees:
            log_ratio = log_ratio + self.tree_weight * _eval_tree(tree, x)
        return self.base_us(terms) * np.exp(log_ratio)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _fit_kind(terms: np.ndarray, x: np.ndarray, y: np.ndarray, seed: int) -> KindModel:
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LinearRegression

    # non-negative least squares on relative error: rows scaled by 1/y (terms scaled to O(1) first)
    norm = np.maximum(np.abs(terms).max(axis=0), 1e-12)
    lin = LinearRegression(positive=True, fit_intercept=False).fit(terms / norm / y[:, None], np.ones_like(y))
    model = KindModel((lin.coef_ / norm).tolist(), n_train=len(y))
    if len(y) >= 8:  # too few rows for trees to learn anything but noise
        resid = np.log(y) - np.log(model.base_us(terms))
        gbr = GradientBoostingRegressor(n_estimators=300, learning_rate=0.05, max_depth=4, min_samples_leaf=3,
                                        subsample=0.8, init="zero", random_state=seed).fit(x, resid)  # fmt: skip
        model.trees = [_tree_to_dict(t) for t in gbr.estimators_[:, 0]]
        model.tree_weight = float(gbr.learning_rate)
    return model


@dataclass
class Predictor:
    """One device × runtime's kernel predictors; `meta` holds provenance and held-out error."""

    kinds: dict[str, KindModel]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def id(self) -> str:
        return str(self.path) if self.path else "an unsaved predictor"

    def can_predict(self, op: Op) -> bool:
        return block_spec(op.block).kind in self.kinds

    def predict_us(self, ops: Sequence[Op], cache: OpCache | None = None) -> np.ndarray:
        """Raw median µs of each op, as a LUT row would hold it (overhead included), timed in the
        cache state `cache` says (`space_cache`; None: every op warm)."""
        ops = list(ops)
        out = np.full(len(ops), np.nan)
        if not ops:
            return out
        x, terms = op_features(ops, cache), op_terms(ops, cache)
        kinds = np.array([block_spec(op.block).kind for op in ops])
        missing = sorted(set(kinds) - set(self.kinds))
        if missing:
            raise PredictorError(
                f"{self.id} has no model for block kind(s) {', '.join(missing)}: fit it on a LUT that measured "
                "such blocks (python -m profiler.run --sample-shapes N for their family, then python -m lut fit)"
            )
        for kind, model in self.kinds.items():
            sel = kinds == kind
            if sel.any():
                out[sel] = model.predict_us(terms[sel], x[sel])
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "features": list(FEATURES),
                **self.meta, "kinds": {k: m.to_dict() for k, m in sorted(self.kinds.items())}}  # fmt: skip


# --- fitting ------------------------------------------------------------------------------------
def _rows(luts: Sequence[Lut]) -> tuple[list[Op], np.ndarray, OpCache]:
    ops: dict[str, Op] = {}
    values: dict[str, list[float]] = {}
    cache: OpCache = {}
    for lut in reversed(luts):  # an op several LUTs timed in different states: the first LUT's
        cache.update(lut_cache(lut))
    for lut in luts:
        ok = lut.table[lut.table["status"] == "ok"]
        for key, r in ok.iterrows():
            op = Op(str(r["block"]), int(r["c_in"]), int(r["h"]), int(r["w"]), int(r["c_out"]), int(r["stride"]))
            ops.setdefault(op.key, op)
            values.setdefault(op.key, []).append(float(r["median_us"]))
    keys = sorted(ops)
    # an op measured by several LUTs counts once, at its median
    return [ops[k] for k in keys], np.array([float(np.median(values[k])) for k in keys]), cache


def _check_same_target(luts: Sequence[Lut]) -> dict[str, Any]:
    first = luts[0]
    want = (first.device_id, first.runtime_dir)
    for lut in luts[1:]:
        if (lut.device_id, lut.runtime_dir) != want:
            raise PredictorError(
                f"fit on LUTs of one device and runtime: {first.id} is {want[0]} {want[1]}, {lut.id} is "
                f"{lut.device_id} {lut.runtime_dir}"
            )
    rt = first.runtime
    return {"device_id": first.device_id, "runtime_dir": first.runtime_dir,
            "runtime": {k: rt.get(k) for k in ("name", "version", "dtype", "threads", "delegate", "layout")}}  # fmt: skip


def _errors(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    pct = pred / meas - 1.0
    return {"n": len(pct), "rmspe_pct": round(float(np.sqrt(np.mean(pct**2)) * 100), 2),
            "within_10pct": round(float(np.mean(np.abs(pct) <= 0.10)), 4),
            "mape_pct": round(float(np.mean(np.abs(pct)) * 100), 2)}  # fmt: skip


def _fit_all(ops: Sequence[Op], y: np.ndarray, cache: OpCache, seed: int) -> dict[str, KindModel]:
    x, terms = op_features(ops, cache), op_terms(ops, cache)
    kinds = np.array([block_spec(op.block).kind for op in ops])
    return {str(k): _fit_kind(terms[kinds == k], x[kinds == k], y[kinds == k], seed) for k in sorted(set(kinds))}


def fit_predictor(luts: Sequence[Lut], *, seed: int = 0) -> Predictor:
    """Fit one model per block kind on the measured rows of `luts` (one device and runtime) and
    score it on held-out rows first (see the module docstring)."""
    from importlib.metadata import version

    if not luts:
        raise PredictorError("fit needs at least one LUT")
    target = _check_same_target(luts)
    ops, y, cache = _rows(luts)
    if len(ops) < 10:
        raise PredictorError(f"only {len(ops)} measured ops in {', '.join(lut.id for lut in luts)}; fit needs ≥ 10")
    rng = np.random.default_rng(seed)
    test = rng.random(len(ops)) < HOLD_OUT
    kinds = np.array([block_spec(op.block).kind for op in ops])
    for k in set(kinds):  # every kind keeps training rows
        if (test & (kinds == k)).sum() == (kinds == k).sum():
            test[kinds == k] = False
    train_ops = [op for op, t in zip(ops, test) if not t]
    held = Predictor(_fit_all(train_ops, y[~test], cache, seed))
    test_ops = [op for op, t in zip(ops, test) if t]
    pred = held.predict_us(test_ops, cache) if test_ops else np.array([])
    held_out: dict[str, Any] = {"overall": _errors(pred, y[test]) if test_ops else None, "per_kind": {}}
    for k in sorted(set(kinds[test])):
        sel = kinds[test] == k
        held_out["per_kind"][str(k)] = _errors(pred[sel], y[test][sel])
    meta = {
        **target,
        "fitted_on": [
            {"id": lut.id, "path": str(lut.path), "version": lut.version, "space": lut.space,
             "content_hash": lut.meta.get("content_hash"), "rows": int((lut.table["status"] == "ok").sum())}
            for lut in luts
        ],
        "num_ops": len(ops),
        "per_kind_ops": {str(k): int((kinds == k).sum()) for k in sorted(set(kinds))},
        "cold_ops": sum(op.key in cache for op in ops),  # rows timed cold or as replicas (`lut_cache`)
        "target": "log of the LUT row's median_us (per-invocation overhead included; overhead ops are a kind)",
        "model": "non-negative linear cost terms fitted on relative error, times exp(gradient-boosted trees "
                 "(depth 4, 300, lr 0.05) fitted on the log ratio of measured to linear)",
        "terms": list(TERMS),
        "held_out": {"share": HOLD_OUT, "seed": seed, **held_out},
        "fitted_with": {p: version(p) for p in ("scikit-learn", "numpy")},
        "read_by": f"lut.predictor format_version {FORMAT_VERSION} (numpy only)",
    }
    return Predictor(_fit_all(ops, y, cache, seed), meta)


# --- the store ----------------------------------------------------------------------------------
def predictors_dir(lut: Lut) -> Path:
    return lut.path.parent / PREDICTORS_DIR


def save_predictor(pred: Predictor, lut: Lut) -> Path:
    """Write the next `v<N>.json` under the LUT's runtime dir's `predictors/` (never overwrites)."""
    base = predictors_dir(lut)
    base.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        versions = list_versions_json(base)
        n = (versions[-1] + 1) if versions else 1
        pred.meta["version"] = n
        path = base / f"v{n}.json"
        tmp = atomic_write(base / f".v{n}.{uuid.uuid4().hex[:8]}.json", json.dumps(pred.to_dict(), indent=1) + "\n")
        try:
            os.link(tmp, path)  # fails when another writer claimed v<n> first
        except FileExistsError:
            continue
        finally:
            tmp.unlink()
        fsync_dir(base)
        pred.path = path
        return path
    raise PredictorError(f"could not claim a predictor version under {base}")


def list_versions_json(base: Path) -> list[int]:
    if not base.is_dir():
        return []
    return sorted(int(p.stem[1:]) for p in base.glob("v*.json") if p.stem[1:].isdigit())


def load_predictor(path: str | Path) -> Predictor:
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PredictorError(f"{path}: unreadable predictor ({e})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise PredictorError(f"{path}: not a {FORMAT} file")
    if d.get("format_version") != FORMAT_VERSION:
        raise PredictorError(
            f"{path}: format_version {d.get('format_version')!r} is not readable here (this code reads "
            f"{FORMAT_VERSION}); fit it again with python -m lut fit"
        )
    if d.get("features") != list(FEATURES) or d.get("terms") != list(TERMS):
        raise PredictorError(f"{path}: fitted on other features or cost terms than this code computes; fit again")
    try:
        kinds = {k: KindModel(**m) for k, m in d.pop("kinds").items()}
    except TypeError as e:
        raise PredictorError(f"{path}: corrupt model ({e})") from None
    meta = {k: v for k, v in d.items() if k not in ("format", "format_version", "features")}
    return Predictor(kinds, meta, path)


def find_predictor(lut: Lut) -> Predictor | None:
    """The latest predictor stored beside `lut` (its runtime dir), or None."""
    base = predictors_dir(lut)
    versions = list_versions_json(base)
    return load_predictor(base / f"v{versions[-1]}.json") if versions else None


# --- a LUT of an unmeasured space ---------------------------------------------------------------
class PredictedLut(Lut):
    """A LUT for `space` made of the measured LUT's rows where it has the op and the predictor's
    elsewhere (`predicted`: the keys of predicted rows, overhead rows included). It carries no
    path, so no validated correction of the measured LUT applies: its sum is the raw additive sum."""

    def __init__(self, lut: Lut, predictor: Predictor, space_name: str, predicted: set[str], table: pd.DataFrame):
        space = get_space(space_name)
        meta = {**lut.meta, "space": {"name": space.name, "hash": space.hash()},
                "predicted_from": {"lut": lut.id, "predictor": predictor.id, "num_predicted": len(predicted)}}  # fmt: skip
        super().__init__(lut.path, meta, table)
        self.path = None  # type: ignore[assignment]
        self.base = lut
        self.predictor = predictor
        self.predicted = predicted
        self._runtime_dir = lut.runtime_dir

    @property
    def runtime_dir(self) -> str:
        return self._runtime_dir

    @property
    def space(self) -> str:
        return str(self.meta["space"]["name"])

    @property
    def validation_path(self) -> Path | None:
        """Where `lut validate --space` stores its report: beside the predictor, per space."""
        p = self.predictor.path
        return None if p is None else p.with_name(f"{p.stem}-validation-{self.space}.json")

    @property
    def id(self) -> str:
        return f"{self.base.id}+predictor({self.space})"

    def predicted_ops(self, op_keys: Sequence[str]) -> int:
        """How many of a network's ops (in order, identity ops excluded) come from the predictor."""
        return sum(1 for k in op_keys if k in self.predicted and not k.startswith("overhead-"))


def predicted_lut(lut: Lut, space_name: str, predictor: Predictor | None = None, extra_ops: Sequence[Op] = ()) -> Lut:
    """`lut` itself when it covers `space_name` (or the space is its own), else a `PredictedLut`
    with every op of the space (and `extra_ops`) the LUT lacks predicted — by `predictor`, or the
    latest one stored beside the LUT. Without one, the LUT's coverage error stands."""
    space = get_space(space_name)
    ops = [op for op in [*space.unique_ops(), *extra_ops] if not op.is_identity]
    ops = list({op.key: op for op in ops}.values())
    ops += [overhead_op(op) for op in ops]
    missing = [op for op in dict.fromkeys(ops) if op.key not in lut.table.index or lut.table.at[op.key, "status"] != "ok"]
    missing = list({op.key: op for op in missing}.values())
    if space.name == lut.space and not missing:
        return lut
    predictor = predictor or find_predictor(lut)
    if predictor is None:
        if space.name == lut.space:
            lut.check_coverage([op.key for op in ops])
        raise LutCoverageError(
            [op.key for op in missing],
            f"{lut.id} (space {lut.space!r}, asked for {space.name!r}; no predictor beside it: "
            f"python -m profiler.run --sample-shapes N, then python -m lut fit {lut.id} SHAPES_LUT)",
        )
    values = predictor.predict_us(missing, space_cache(lut, space, ops))
    rows = [{"op_key": op.key, "block": op.block, "c_in": op.c_in, "h": op.h, "w": op.w, "c_out": op.c_out,
             "stride": op.stride, "status": "ok", "median_us": v, "mean_us": v, "std_us": 0.0, "min_us": v,
             "p10_us": v, "p90_us": v, "n": 0, "error": "predicted"} for op, v in zip(missing, values)]  # fmt: skip
    new = pd.DataFrame(rows).set_index("op_key")
    kept = lut.table.drop(index=[k for k in new.index if k in lut.table.index])
    table = pd.concat([kept, new[lut.table.columns.intersection(new.columns)]])
    return PredictedLut(lut, predictor, space.name, set(new.index), table)


def retarget_arch(arch: Arch, space_name: str) -> Arch:
    """The same blocks in another resolution/width of the arch's family ('fbnet_c' at
    fbnet-r160-w0.75). A head width other than the space's default scales with the width."""
    src, dst = get_space(arch.space), get_space(space_name)
    if src.name == dst.name:
        return arch
    if src.family != dst.family:
        raise ArchError(f"arch {arch.label} is of family {src.family!r}; {dst.name!r} is another family")
    head = arch.head_channels
    if head is not None:
        head = None if head == src.default_head else dst.ch(head / src.width_mult)
    info = {**arch.info, "retargeted_from": arch.space}
    return Arch(dst.name, arch.blocks, head, arch.name, info).validate(dst)
