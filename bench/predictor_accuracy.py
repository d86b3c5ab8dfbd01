"""How well a LUT's kernel-level predictor answers for spaces it never measured, in one run.

    python -m bench.predictor_accuracy LUT [--spaces fbnet-r160-w0.75,fbnet-r128-w0.5] [--archs 10]
        [--rounds 6] [--seed 0] [--drift-ops 20] [--luts-root luts] [--profile] [--out FILE.json] [--json]

LUT is a device's LUT of a family's default space with a predictor beside it (`python -m lut
fit LUT SHAPES_LUT`). For each space of `--spaces` (same family, another resolution or width):

    ops    every op of the space (and of the named archs there), predicted by the predictor, beside
           a LUT measured for that space on the same device and runtime (the latest in the store;
           `--profile` measures one now, or reuses an up-to-date one): share within ±10 %, MAPE,
           RMSPE, per block kind, and over the ops no training LUT held (`unseen`); beside them the
           measured LUT's own noise: the median over its ops of the spread of their per-round
           medians (std / median), the floor no predictor beats
    archs  FBNet-A/B/C (their blocks at that space) and `--archs` random archs, timed end to end in
           the same shuffled rounds for all spaces (two halves of `--rounds`, seeds seed and
           seed+1), scored against the predictor's sum (raw additive, as `lut predict --space`
           gives it) and, side by side, the measured LUT's sum: MAPE, max APE, Spearman ρ, and the
           end-to-end noise floor (`lut.validate.noise_floor_pct` of the two halves)
    drift  `--drift-ops` ops of LUT re-timed with its protocol in the same rounds as the archs: how
           far the device moved since the LUT the predictor learnt from was measured (the median
           change; `lut validate` reports the same). A predictor answers for the device as it was
           then, a LUT measured now for now: beside the raw op figures, the share within ±10 %
           with the predictions moved by that drift says how much of a miss the device's move
           explains (a diagnostic; the raw figures are the result)

It also reports how many of a space's ops the training LUTs held exactly (an op measured for
training is not a prediction) and the predictor's own held-out error and fit time (refitted on
the same LUTs, not saved). Read the numbers of one run side by side: a shared machine drifts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import AbstractSet, Any

import numpy as np

from hwnas.flags import add_luts_root, add_out, add_verbose, run_main
from lut.predictor import (
    PredictedLut,
    find_predictor,
    fit_predictor,
    predicted_lut,
    retarget_arch,
)
from lut.store import Lut, LutCoverageError, LutError, load_lut
from lut.validate import error_metrics, noise_floor_pct, random_archs
from profiler.api import measure_archs, profile_space
from profiler.validate import drift_report, drift_sample, retime_options
from search.space import Arch, arch_ops, block_spec, get_space, named_archs_for

log = logging.getLogger("bench.predictor_accuracy")

DEFAULT_SPACES = "fbnet-r160-w0.75,fbnet-r128-w0.5"


def _op_errors(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    pct = pred / meas - 1.0
    return {"n": len(pct), "within_10pct": float(np.mean(np.abs(pct) <= 0.10)),
            "mape_pct": float(np.mean(np.abs(pct)) * 100), "rmspe_pct": float(np.sqrt(np.mean(pct**2)) * 100),
            "mean_error_pct": float(np.mean(pct) * 100)}  # fmt: skip


def lut_noise_pct(lut: Lut, keys: list[str]) -> float:
    """Median over `keys` of std(per-round medians) / median, in %: the LUT's own repeat spread."""
    s = lut.samples[lut.samples["op_key"].isin(keys)]
    per_round = s.groupby(["op_key", "round"])["latency_us"].median().groupby("op_key")
    rel = per_round.std(ddof=1) / per_round.median()
    return float(rel.median() * 100)


def compare_ops(pred_lut: PredictedLut, measured: Lut, ops: list[Any], seen: AbstractSet[str] = frozenset()) -> dict[str, Any]:
    """Predicted vs measured rows (the LUT's median µs, overhead included) of the space's ops;
    `unseen`: the same over the ops not in `seen` (the keys the predictor's training LUTs measured:
    a large sample draws some of a space's exact shapes)."""
    rows = []
    for op in ops:
        if op.key not in measured.table.index or measured.table.at[op.key, "status"] != "ok":
            continue
        rows.append({"op_key": op.key, "kind": block_spec(op.block).kind, "predicted": op.key in pred_lut.predicted,
                     "pred_us": float(pred_lut.table.at[op.key, "median_us"]),
                     "meas_us": float(measured.table.at[op.key, "median_us"])})  # fmt: skip
    pred = np.array([r["pred_us"] for r in rows])
    meas = np.array([r["meas_us"] for r in rows])
    kinds = np.array([r["kind"] for r in rows])
    fresh = np.array([r["op_key"] not in seen for r in rows], dtype=bool)
    out = {"all": _op_errors(pred, meas),
           "unseen": _op_errors(pred[fresh], meas[fresh]) if fresh.any() else None,
           "per_kind": {k: _op_errors(pred[kinds == k], meas[kinds == k]) for k in sorted(set(kinds))},
           "predicted_rows": int(sum(r["predicted"] for r in rows)),
           "lut_noise_pct": lut_noise_pct(measured, [r["op_key"] for r in rows]),
           "ops": rows}  # fmt: skip
    return out


def _measured_lut(base: Lut, space: str, root: str, profile: bool, rounds: int) -> tuple[Lut, float | None]:
    rt = base.meta["runtime"]
    if profile:
        t0 = time.perf_counter()
        res = profile_space(space, rt["name"], "host", out=root, threads=int(rt.get("threads") or 1),
                            dtype=rt.get("dtype", "fp32"), skip_existing=True, progress=False)  # fmt: skip
        return load_lut(res.lut_dir), (None if res.reused else time.perf_counter() - t0)
    try:
        return load_lut(f"{base.device_id}/{space}/{base.runtime_dir}", root=root), None
    except LutError as e:
        raise LutError(f"{e} — pass --profile to measure a LUT of {space} for the comparison") from None


def run(base: Lut, spaces: list[str], *, root: str, n_archs: int, rounds: int, seed: int, profile: bool,
        drift_ops: int = 20) -> dict[str, Any]:
    predictor = find_predictor(base)
    if predictor is None:
        raise LutError(f"no predictor beside {base.id}: python -m lut fit {base.id} SHAPES_LUT first")
    t0 = time.perf_counter()
    fitted_on = [load_lut(f["path"]) for f in predictor.meta["fitted_on"]]
    refit = fit_predictor(fitted_on)
    fit_s = time.perf_counter() - t0
    trained_keys = {k for lut in fitted_on for k in lut.table.index[lut.table["status"] == "ok"]}
    family = get_space(base.space).family
    report: dict[str, Any] = {
        "lut": base.id, "predictor": str(predictor.path), "fitted_on": predictor.meta["fitted_on"],
        "predictor_held_out": predictor.meta["held_out"], "refit_s": fit_s,
        "refit_held_out": refit.meta["held_out"]["overall"], "spaces": {},
    }  # fmt: skip
    all_archs: list[Arch] = []
    per_space: dict[str, dict[str, Any]] = {}
    for name in spaces:
        space = get_space(name)
        named = [retarget_arch(a, name) for a in named_archs_for(family)]
        named = [Arch(a.space, a.blocks, a.head_channels, f"{a.name}@{name}") for a in named]
        rand = [Arch(a.space, a.blocks, None, f"{a.name}@{name}") for a in random_archs(space, n_archs, seed)]
        by_key = {op.key: op for op in space.unique_ops()} | {op.key: op for a in named for op in arch_ops(a)}
        ops = list(by_key.values())
        ops = [op for op in ops if not op.is_identity]
        pred_lut = predicted_lut(base, name, predictor, extra_ops=ops)
        measured, profile_s = _measured_lut(base, name, root, profile, rounds)
        per_space[name] = {"pred": pred_lut, "meas": measured, "archs": named + rand}
        report["spaces"][name] = {
            "measured_lut": measured.id, "profile_s": profile_s,
            "ops_in_training_luts": sum(op.key in trained_keys for op in ops), "num_ops": len(ops),
            "ops": compare_ops(pred_lut, measured, ops, trained_keys),
        }  # fmt: skip
        all_archs += named + rand
    rt = base.meta["runtime"]
    proto = base.meta.get("protocol", {})
    kw = dict(threads=int(rt.get("threads") or 1), dtype=rt.get("dtype", "fp32"), layout=rt.get("layout"),
              warmup=int(proto.get("warmup", 5)), runs=int(proto.get("runs", 20)))  # fmt: skip
    retimed = drift_sample(base, drift_ops, seed)
    t1 = time.perf_counter()
    halves = [measure_archs(all_archs, rt["name"], "host", rounds=max(1, rounds // 2), seed=seed + i, ops=retimed,
                            **retime_options(proto), **kw) for i in range(2)]  # fmt: skip
    report["measure_archs_s"] = time.perf_counter() - t1
    report["drift"] = drift_report(base, retimed, halves) if retimed else None
    change = (report["drift"] or {}).get("median_change_pct")
    moved = None if change is None else 1.0 + change / 100.0  # the device now / when the LUT was measured
    for name, d in per_space.items():
        rows = []
        for a in d["archs"]:
            keys = [op.key for op in arch_ops(a)]
            s1, s2 = halves[0][a.label], halves[1][a.label]
            rows.append({"arch": a.label, "measured_us": float(np.median(s1 + s2)),
                         "half_us": [float(np.median(s1)), float(np.median(s2))],
                         "predictor_us": float(d["pred"].predict_us(keys)), "measured_lut_us": _sum_or_none(d["meas"], keys),
                         "predicted_ops": d["pred"].predicted_ops(keys),
                         "num_ops": sum(not op.is_identity for op in arch_ops(a))})  # fmt: skip
        meas = [r["measured_us"] for r in rows]
        covered = [r for r in rows if r["measured_lut_us"] is not None]
        if moved is not None:
            op_rows = report["spaces"][name]["ops"]["ops"]
            pct = np.array([r["pred_us"] * moved / r["meas_us"] - 1.0 for r in op_rows])
            report["spaces"][name]["ops"]["within_10pct_drift_removed"] = float(np.mean(np.abs(pct) <= 0.10))
        report["spaces"][name]["archs"] = {
            "predictor": error_metrics([r["predictor_us"] for r in rows], meas),
            # the archs the measured LUT covers (FBNet-A's scaled head is no op of the space's own LUT)
            "measured_lut": error_metrics([r["measured_lut_us"] for r in covered], [r["measured_us"] for r in covered]),
            "measured_lut_lacks": [r["arch"] for r in rows if r["measured_lut_us"] is None],
            "noise_floor_pct": noise_floor_pct([r["half_us"][0] for r in rows], [r["half_us"][1] for r in rows]),
            "rows": rows,
        }
    return report


def _sum_or_none(lut: Lut, keys: list[str]) -> float | None:
    try:
        return float(lut.predict_us(keys))
    except LutCoverageError:
        return None


def print_report(r: dict[str, Any]) -> None:
    held = r["predictor_held_out"]["overall"] or {}
    print(f"LUT {r['lut']}; predictor {r['predictor']} fitted on {', '.join(f['id'] for f in r['fitted_on'])}")
    print(f"  predictor held-out: {held.get('n')} ops, RMSPE {held.get('rmspe_pct')} %, within ±10 % "
          f"{held.get('within_10pct')}; refit in {r['refit_s']:.1f} s")  # fmt: skip
    print(f"  archs timed end to end in {r['measure_archs_s']:.0f} s")
    if r.get("drift") and r["drift"]["median_change_pct"] is not None:
        print(f"  drift: {len(r['drift']['ops'])} ops of the LUT re-timed beside the archs, median change "
              f"{r['drift']['median_change_pct']:+.1f} % since it was measured")  # fmt: skip
    for name, s in r["spaces"].items():
        o = s["ops"]["all"]
        print(f"{name}: {s['num_ops']} ops ({s['ops_in_training_luts']} of them in the training LUTs), vs "
              f"{s['measured_lut']}")  # fmt: skip
        print(f"  ops:   {o['within_10pct']:.0%} within ±10 %  MAPE {o['mape_pct']:.1f} %  RMSPE {o['rmspe_pct']:.1f} %  "
              f"bias {o['mean_error_pct']:+.1f} %  "
              f"(measured LUT's own round-to-round spread {s['ops']['lut_noise_pct']:.1f} %)")  # fmt: skip
        if s["ops"].get("unseen") and s["ops_in_training_luts"]:
            u = s["ops"]["unseen"]
            print(f"         {u['within_10pct']:.0%} within ±10 % of the {u['n']} ops no training LUT held")
        if "within_10pct_drift_removed" in s["ops"]:
            print(f"         {s['ops']['within_10pct_drift_removed']:.0%} within ±10 % with the predictions moved by the drift")
        for k, e in s["ops"]["per_kind"].items():
            print(f"    {k:<9} {e['n']:4d}  within ±10 % {e['within_10pct']:.0%}  MAPE {e['mape_pct']:.1f} %")
        a = s["archs"]
        print(f"  archs: predictor MAPE {a['predictor']['mape']:.1f} % (max {a['predictor']['max_ape']:.1f}, ρ "
              f"{a['predictor']['spearman']:.3f}, bias {a['predictor']['mean_error_pct']:+.1f} %)  |  measured LUT MAPE "
              f"{a['measured_lut']['mape']:.1f} % (ρ {a['measured_lut']['spearman']:.3f}, "
              f"{a['measured_lut']['n']} archs)  |  e2e noise floor "
              f"{a['noise_floor_pct']:.1f} %")  # fmt: skip
        for row in a["rows"]:
            lut_ms = "    -  " if row["measured_lut_us"] is None else f"{row['measured_lut_us'] / 1e3:7.3f}"
            print(f"    {row['arch']:<34} measured {row['measured_us'] / 1e3:7.3f} ms  predictor {row['predictor_us'] / 1e3:7.3f}"
                  f"  LUT {lut_ms}  ({row['predicted_ops']}/{row['num_ops']} ops predicted)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.predictor_accuracy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("lut", help="LUT (path or id) with a predictor beside it")
    p.add_argument("--spaces", default=DEFAULT_SPACES, help=f"comma list (default {DEFAULT_SPACES})")
    p.add_argument("--archs", type=int, default=10, help="random archs per space (default 10) besides FBNet-A/B/C")
    p.add_argument("--rounds", type=int, default=6, help="end-to-end rounds, in two halves (default 6)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random archs and the round order (default 0)")
    p.add_argument("--drift-ops", type=int, default=20,
                   help="ops of LUT re-timed beside the archs, to see how far the device moved since (default 20; 0: none)")
    add_luts_root(p)
    p.add_argument("--profile", action="store_true", help="measure a LUT of each space now (or reuse an up-to-date one)")
    add_out(p, help="also write the report as JSON to this file")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    add_verbose(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    if args.rounds < 2:
        p.error("--rounds must be ≥ 2 (two halves for the noise floor)")
    try:
        base = load_lut(args.lut, root=args.luts_root)
        spaces = [s.strip() for s in args.spaces.split(",") if s.strip()]
        report = run(base, spaces, root=args.luts_root, n_archs=args.archs, rounds=args.rounds, seed=args.seed,
                     profile=args.profile, drift_ops=args.drift_ops)  # fmt: skip
    except (ValueError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        from lut.files import atomic_write

        atomic_write(args.out, json.dumps(report, indent=1) + "\n")
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
