"""Validate a LUT on its own target: measure archs end to end, score the LUT's prediction.

    python -m lut validate LUT [--archs 20] [--seed 0] [--rounds 6] [--correction none|auto|…]
                               [--device SERIAL --runner NAME=PATH …] [--json]
    (the same as `python -m profiler.validate …`: the LUT CLI hands validation to the profiler,
    which owns the targets)

`validate_lut(lut, config)` builds `config.num_archs` random architectures of the LUT's space
plus the space's named reference archs (`lut.validate.random_archs`, FBNet-A/B/C for "fbnet"),
measures each end to end with `measure_archs` on the LUT's own target and runtime (threads,
dtype, warm-up and runs of its protocol) in two independent halves of the rounds, and scores the
pooled measurement against the LUT's prediction with `lut.validate.evaluate` (MAPE, max error,
Spearman, Kendall, the noise floor and held-out corrections). The report is stored beside the
LUT as validation.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from hwnas.flags import add_device, add_luts_root, add_progress, add_verbose, run_main
from lut.correction import CORRECTIONS, Correction
from lut.predictor import PredictedLut, predicted_lut, retarget_arch
from lut.store import Lut, LutError, load_lut
from lut.validate import arch_features, error_metrics, evaluate, random_archs, verdict, verdict_line, write_validation
from profiler.api import measure_archs, measure_archs_detailed
from profiler.protocol.settings import OVERHEAD_OPS
from profiler.run import adb_module
from profiler.runtimes import RUNTIMES, runtime_info
from profiler.targets.lock import device_lock, lock_key_of
from search.space import Arch, Op, arch_ops, get_space, named_archs_for, overhead_op, parse_op_key

__all__ = ["ValidationConfig", "ALL_OPS", "validate_lut", "drift_sample", "drift_report", "measure_options",
           "retime_options", "same_rounds", "main"]

log = logging.getLogger(__name__)

ALL_OPS = -1  # ValidationConfig.drift_ops: re-time every op of the LUT


@dataclass(frozen=True)
class ValidationConfig:
    num_archs: int = 20  # random archs, besides the space's named reference archs
    seed: int = 0  # seeds the random archs and the measurement order
    rounds: int = 6  # end-to-end rounds in all, split into two halves for the noise floor
    device: str | None = None  # target: "host", or an adb serial (required for phone LUTs)
    correction: str = "none"  # "none" (additive sum), or a CORRECTIONS key, or "auto"
    target_options: dict[str, Any] | None = None  # passed through to the target (adb options)
    progress: bool = False  # progress bars while exporting and measuring
    lock_wait_s: float = 0.0  # a busy device: wait this long for its lock, then stop
    # LUT ops re-timed in the same rounds as the archs (drift since the LUT); ALL_OPS: every op, and
    # the report adds the sum of the re-timed ops scored against the archs (`same_rounds`)
    drift_ops: int = 10
    per_layer: bool = False  # also time the named archs' layers in context (profiler.layers)
    # another space of the LUT's family (e.g. fbnet-r160-w0.75): ops the LUT lacks come from the
    # predictor beside it (`lut fit`); the family's named archs are retargeted to it
    space: str | None = None


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


def validate_lut(lut: Lut, config: ValidationConfig = ValidationConfig()) -> dict[str, Any]:
    """Measure random + named archs end to end and report the LUT's error (see module doc)."""
    if config.rounds < 2:
        raise ValueError("rounds must be ≥ 2: the noise floor needs two independent halves")
    base = lut
    named = named_archs_for(lut.space)
    if config.space is not None and config.space != lut.space:
        named = [retarget_arch(a, config.space) for a in named_archs_for(get_space(config.space).family)]
        lut = predicted_lut(lut, config.space, extra_ops=[op for a in named for op in arch_ops(a)])
    space = get_space(lut.space)
    rand = random_archs(space, config.num_archs, config.seed)
    archs = rand + named
    for arch in archs:
        lut.check_coverage([op.key for op in arch_ops(arch, space)])
    rt, proto = lut.meta.get("runtime", {}), lut.meta.get("protocol", {})
    kwargs = measure_options(lut, config.device, config.target_options, config.progress)
    half = config.rounds // 2
    drift_ops = drift_sample(base, config.drift_ops, config.seed)  # measured ops only
    lock = lock_key_of(kwargs["device"], config.target_options)  # the phone's identity: one lock per phone
    with device_lock(lock, wait_s=config.lock_wait_s, what=f"validate {lut.id}"):
        halves = [
            measure_archs(archs, rt["name"], rounds=half, seed=config.seed + i, ops=drift_ops, **retime_options(proto),
                          **kwargs)
            for i in range(2)
        ]  # fmt: skip
        layers = _layers(lut, archs, rt["name"], kwargs) if config.per_layer else None
    n_train = len(rand) // 2
    records = []
    for i, arch in enumerate(archs):
        s1, s2 = halves[0][arch.label], halves[1][arch.label]
        records.append(
            {
                "name": arch.label,
                "blocks": list(arch.blocks),
                "head_channels": arch.head_channels,
                "split": "train" if i < n_train else "holdout",
                **arch_features(lut, arch),
                "measured_us": float(np.median(s1 + s2)),
                "half_us": [float(np.median(s1)), float(np.median(s2))],
                "num_samples": len(s1) + len(s2),
                "predicted_ops": _predicted_ops(lut, arch),
            }
        )
    report = evaluate(records, config.correction)
    chosen = report["corrections"].get(report["prediction_model"])
    for r in records:
        r["ape"] = 100.0 * abs(r["predicted_us"] - r["measured_us"]) / r["measured_us"]
        if chosen:
            r["corrected_us"] = Correction(report["prediction_model"], chosen["coef"]).apply(r)
    options = {k: v for k, v in kwargs.items() if k not in ("progress", "target_options")}
    report["drift"] = drift_report(base, drift_ops, halves)
    add = report["additive"]
    report["verdict"] = verdict(add["mape"], add["spearman"], report["noise_floor"],
                                report["drift"]["median_change_pct"])  # fmt: skip
    same = same_rounds(lut, archs, drift_ops, halves)
    if same is not None:
        for r, pred in zip(records, same["predicted_us"]):
            r["same_rounds_us"] = pred
        report["same_rounds"] = {**error_metrics(same["predicted_us"], [r["measured_us"] for r in records]),
                                 "definition": same["definition"]}  # fmt: skip
    if layers is not None:
        report["layers"] = layers
    report.update(
        num_archs=len(archs),
        predicted_ops=sum(r["predicted_ops"] for r in records),  # ops of the archs a predictor made
        predicted_from=lut.meta.get("predicted_from"),
        lut={"device_id": lut.device_id, "space": lut.space, "version": lut.version,
             "content_hash": lut.meta.get("content_hash")},  # fmt: skip
        config={**asdict(config), **options, "runtime": rt.get("name"), "target_options": None},
        noise_floor_definition=(
            "median over archs of 100*|m1-m2|/((m1+m2)/2), m1 and m2 the medians of two "
            f"independent halves of {config.rounds} end-to-end rounds; every round loads each model "
            "afresh (on the host, in a process of its own), so the floor includes the variation "
            "between loads and processes"
        ),
        archs=records,
    )
    return report


def measure_options(lut: Lut, device: str | None = None, target_options: dict[str, Any] | None = None,
                    progress: bool = False) -> dict[str, Any]:
    """`measure_archs` keywords that time archs as the LUT's ops were timed: its target (`device`,
    else the host for a host LUT), threads, dtype, layout, core mask, warm-up and runs."""
    rt, proto = lut.meta.get("runtime", {}), lut.meta.get("protocol", {})
    return dict(
        device=_target(lut, device),
        threads=int(rt.get("threads") or 1),
        dtype=rt.get("dtype", "fp32"),
        layout=rt.get("layout") or runtime_info(rt["name"]).layouts[-1],  # LUTs before layouts: nchw
        core_mask=rt.get("core_mask"),
        warmup=int(proto.get("warmup", 5)),
        runs=int(proto.get("runs", 20)),
        target_options=target_options,
        progress=progress,
    )


def retime_options(proto: dict[str, Any]) -> dict[str, Any]:
    """`measure_archs` keywords that time a LUT's ops as its protocol (`lut.meta["protocol"]`) did:
    the cache state (per op under "mixed": the ones not timed warm are listed; LUTs before the
    cache option timed ops warm), replica copies, and `RunSpec.cold_bytes` of the cold ops: one
    value, per op (`op_cold_bytes`), or 0 where none is recorded (LUTs before it: copies beyond
    twice the last-level cache)."""
    op_cache = proto.get("cache", "warm")
    if op_cache == "mixed":
        op_cache = proto.get("op_cache") or {}
    cold_bytes = proto.get("op_cold_bytes") or int(proto.get("cold_bytes") or 0)
    return {"op_cache": op_cache, "op_copies": proto.get("copies") or {}, "op_cold_bytes": cold_bytes}


def _predicted_ops(lut: Lut, arch: Arch) -> int:
    return lut.predicted_ops([op.key for op in arch_ops(arch)]) if isinstance(lut, PredictedLut) else 0


def drift_sample(lut: Lut, n: int, seed: int) -> list[Op]:
    """`n` ok ops of the LUT spread over its latency range (seeded), plus the network-input
    overhead op: what validation re-times to see how far the device moved since the LUT.
    `n` = ALL_OPS: every ok op, overhead ops included."""
    t = lut.table
    if n == ALL_OPS:
        return [parse_op_key(k) for k in t.index[t["status"] == "ok"]]
    if n <= 0:
        return []
    ok = t[(t["status"] == "ok") & (t["block"] != "overhead")].sort_values("median_us")
    rng = np.random.default_rng(seed)
    picks = [ok.index[min(len(ok) - 1, int(q * len(ok)))] for q in (np.arange(n) + rng.uniform(0, 1, n)) / n]
    stem = get_space(lut.space).fixed_ops()["stem"]
    return [parse_op_key(k) for k in dict.fromkeys(picks)] + [overhead_op(stem)]


def drift_report(lut: Lut, ops: list[Op], halves: list[dict[str, list[float]]]) -> dict[str, Any]:
    """Per re-timed op: its LUT median and its median now; the median relative change. The
    overhead ops of a LUT timed with another overhead op (a ReLU, before) are left out: they were
    another model."""
    theirs = lut.meta.get("protocol", {}).get("overhead_op")
    info = RUNTIMES.get(lut.meta.get("runtime", {}).get("name", ""))
    ours = OVERHEAD_OPS[info.overhead] if info is not None else None
    if theirs != ours and any(op.block == "overhead" for op in ops):
        log.warning("%s was timed with another overhead op (%s); its overhead ops are left out of the drift, "
                    "and the same-rounds sum uses today's", lut.id,
                    theirs or "unrecorded")  # fmt: skip
        ops = [op for op in ops if op.block != "overhead"]
    rows = []
    for op in ops:
        now = float(np.median(halves[0][op.key] + halves[1][op.key]))
        then = float(lut.table.at[op.key, "median_us"])
        rows.append({"op_key": op.key, "lut_us": then, "now_us": now, "change_pct": 100.0 * (now / then - 1.0)})
    changes = [r["change_pct"] for r in rows]
    return {
        "ops": rows,
        "median_change_pct": float(np.median(changes)) if changes else None,
        "definition": "ops of the LUT re-timed with its own protocol in the same rounds as the archs; "
        "change_pct = 100*(now/lut - 1): how far the device moved since the LUT was measured",
    }


def same_rounds(lut: Lut, archs: list[Arch], ops: list[Op], halves: list[dict[str, list[float]]]) -> dict[str, Any] | None:
    """Each arch's additive sum from its ops as re-timed in the rounds that timed the archs (their
    medians in place of the LUT's): the additivity error without the device's drift since the LUT
    was built. None unless every op of every arch (and its overhead op) was re-timed."""
    now = {op.key: float(np.median(halves[0][op.key] + halves[1][op.key])) for op in ops}
    space = get_space(lut.space)
    keys = [[op.key for op in arch_ops(arch, space)] for arch in archs]
    needed = {k for ks in keys for k in ks if not parse_op_key(k).is_identity}
    needed |= {overhead_op(parse_op_key(k)).key for k in needed}
    if not needed <= set(now):
        return None
    table = lut.table.copy()
    table.loc[list(now), "median_us"] = list(now.values())
    retimed = Lut(lut.path, lut.meta, table)
    return {
        "predicted_us": [retimed.predict_us(ks) for ks in keys],
        "definition": "the additive sum of each arch's ops re-timed with the LUT's protocol in the same shuffled "
                      "rounds as the archs, scored against them: additivity without the drift since the LUT",
    }


def _layers(lut: Lut, archs: list[Arch], runtime: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The named archs' (else the first three) layers: the LUT's isolated value of each op beside
    the layer's time inside the network."""
    chosen = [a for a in archs if not a.label.startswith("random_")] or archs[:3]
    measured = measure_archs_detailed(chosen, runtime, rounds=1, per_layer=True, **kwargs)
    out: dict[str, Any] = {}
    for arch in chosen:
        m = measured[arch.label]
        if m.layers is None:
            out[arch.label] = {"error": m.layers_error}
            continue
        rows = []
        for row in m.layers:
            lut_us = lut.op_latency_us(row["op_key"])
            ctx = row["median_us"]
            rows.append({**row, "lut_us": lut_us, "in_context_us": ctx,
                         "ratio": ctx / lut_us if lut_us > 0 else None})  # fmt: skip
        out[arch.label] = {"layers": rows, "resolution_us": m.layers_resolution_us,
                           "lut_sum_us": sum(r["lut_us"] for r in rows),
                           "in_context_sum_us": sum(r["in_context_us"] for r in rows),
                           "between_sum_us": sum(r["between_us"] for r in rows)}  # fmt: skip
    return out


# --- CLI ------------------------------------------------------------------------------------------
def _validated(lut: Lut, space: str | None) -> Lut:
    """The LUT a report belongs to: the predicted one for another space (stored beside its predictor)."""
    return lut if space is None or space == lut.space else predicted_lut(lut, space)


def _op_count(text: str) -> int:
    if text == "all":
        return ALL_OPS
    try:
        n = int(text)
    except ValueError:
        n = -2
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a count ≥ 0 or 'all', got {text!r}")
    return n


def build_parser(adb=None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lut validate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("lut", help="LUT version dir, runtime dir or id")
    add_luts_root(p)
    p.add_argument("--archs", type=int, default=20, help="random archs besides the named ones (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random archs (default 0)")
    p.add_argument("--rounds", type=int, default=6, help="end-to-end rounds, two halves (default 6)")
    add_device(p, help="where to measure: the adb serial (or SERIAL@HOST:PORT) of a phone LUT's phone (host LUTs: omit)")
    p.add_argument("--correction", default="none", choices=["none", "auto", *CORRECTIONS],
                   help="fitted correction of the additive sum, scored on held-out archs")  # fmt: skip
    p.add_argument("--drift-ops", type=_op_count, default=10, metavar="N|all",
                   help="LUT ops re-timed in the same rounds, to report the drift since the LUT (default 10); "
                        "all: every op, and the sum of the re-timed ops is scored too (additivity without drift)")
    p.add_argument("--space", help="validate the LUT's prediction of another space of its family (e.g. "
                   "fbnet-r160-w0.75) made with the predictor beside it (`lut fit`); stored beside the predictor")
    p.add_argument("--per-layer", action="store_true",
                   help="also time the named archs' layers inside the network, beside each op's LUT value")
    p.add_argument("--json", action="store_true", help="last line: one JSON object")
    add_progress(p)
    add_verbose(p)
    p.add_argument("--wait-lock", type=float, default=0.0, metavar="SECONDS",
                   help="when another job is measuring on the device, wait this long for it (default: stop)")
    if adb is not None:
        adb.add_adb_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    adb = adb_module()
    args = build_parser(adb).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        lut = load_lut(args.lut, root=args.luts_root)
        options = adb.adb_options(args) if (adb is not None and args.device and args.device != "host") else None
        cfg = ValidationConfig(num_archs=args.archs, seed=args.seed, rounds=args.rounds, device=args.device,
                               correction=args.correction, target_options=options, progress=args.progress and not args.json,
                               lock_wait_s=args.wait_lock, drift_ops=args.drift_ops, per_layer=args.per_layer,
                               space=args.space)  # fmt: skip
        report = validate_lut(lut, cfg)
    except (ValueError, RuntimeError, OSError) as e:  # LutError and TargetError included
        print(f"error: {e}", file=sys.stderr)
        return 2
    lut = _validated(lut, args.space)  # the LUT the report belongs to (a predicted space's, with --space)
    path = write_validation(lut, report)
    if args.json:
        print(json.dumps(report, default=str))
        return 0
    cols = ["name", "split", "predicted_us", *(["same_rounds_us"] if "same_rounds" in report else []),
            "measured_us", "ape", *(["predicted_ops"] if report.get("predicted_ops") else [])]  # fmt: skip
    with pd.option_context("display.width", 200, "display.float_format", "{:.1f}".format):
        print(pd.DataFrame(report["archs"])[cols].to_string(index=False))
    for name, entry in (report.get("layers") or {}).items():
        if "error" in entry:
            print(f"{name}: per-layer times unavailable: {entry['error']}")
            continue
        print(f"{name}: layers inside the network vs the LUT (sum {entry['in_context_sum_us'] / 1e3:.2f} ms "
              f"in context + {entry['between_sum_us'] / 1e3:.2f} ms of layout conversions between "
              f"layers, {entry['lut_sum_us'] / 1e3:.2f} ms in the LUT; operator times in steps of "
              f"{entry['resolution_us']:g} µs, the runtime profiler's resolution)")  # fmt: skip
        table = pd.DataFrame(entry["layers"])
        table["alone_only"] = table["alone_only"].map(", ".join)
        with pd.option_context("display.width", 200, "display.float_format", "{:.2f}".format):
            cols = ["layer", "op_key", "lut_us", "in_context_us", "ratio", "alone_only"]
            print(table[cols].to_string(index=False))
    d = report["drift"]
    if d["median_change_pct"] is not None:
        print(f"drift since the LUT: {len(d['ops'])} of its ops re-timed now, median change "
              f"{d['median_change_pct']:+.1f}%")  # fmt: skip
    if "same_rounds" in report:
        sr = report["same_rounds"]
        print(f"sum of the ops re-timed in the same rounds: MAPE {sr['mape']:.2f}%  bias {sr['mean_error_pct']:+.2f}%  "
              f"Spearman {sr['spearman']:.3f}  (additivity without the drift since the LUT)")  # fmt: skip
    print(f"{lut.id}: MAPE {report['mape']:.2f}%  max APE {report['max_ape']:.2f}%  "
          f"Spearman {report['spearman']:.3f}  Kendall {report['kendall']:.3f}  "
          f"noise floor {report['noise_floor']:.2f}%  ({report['prediction_model']}, "
          f"{report['evaluated_on']} archs)  → {path}")  # fmt: skip
    print(verdict_line(report["verdict"]))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
