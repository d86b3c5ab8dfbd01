"""Device-targeted search side by side: search on each LUT, then every found arch on every LUT.

    python -m search.crossdevice --lut pixel3-hwnasbench/fbnet/tflite-t1 \\
        --lut raspi4-hwnasbench/fbnet/hwnasbench-t1 --out runs/xdev [search.run flags] [--json]

This is FBNet's Table 4 (FBNet-iPhoneX vs FBNet-S8) for the user's own devices. For N LUTs (one
space), the same search (same strategy, flags and seed) runs once per LUT into `OUT/<lut>/`; then
the N×N table holds the latency of the arch searched on LUT i (row) on LUT j (column):

    predicted   every cell: LUT j's prediction (the additive sum plus LUT j's validated correction,
                the number `python -m lut predict` prints)
    measured    end to end with `python -m profiler.run --arch`, for the columns whose target is
                reachable from here: LUTs measured on this host (their runtime, threads, dtype), and
                phone LUTs given an adb serial with `--device DEVICE_ID=SERIAL` (a phone, or the
                loopback device). Other columns stay empty.

The same relative budget on every device, so that the found archs differ by device and not by
accuracy: by default each LUT's search gets a soft target at a reference arch's latency on that
LUT (`--reference fbnet_b`, FBNet-B; any named arch of the space), and every cell is also read
relative to the reference on that column's LUT (0.80× = 20 % faster than FBNet-B there). With
`--target-frac F` the target is instead the same fraction F of the way from each LUT's fastest
arch to its uniform expectation (`LatencyModel.span_us`); `--reference none` with no
`--target-frac` runs the same objective on every LUT.

Each found arch is then trained from scratch on the proxy the search used (`search.train`'s
recipe) for `--train-epochs` once per `--train-seeds` seed (default 0,1); the table leads with
the mean test accuracy, the seeds' spread beside it. The verdict per device (FBNet's Table 4
claim): does the arch searched on that device run fastest there, and by how much against the
fastest arch searched elsewhere — with the accuracies beside it, since an arch that is faster
and far less accurate wins nothing.

Written to OUT: crossdevice.csv (one row per cell), crossdevice.md (the tables and the
verdicts), crossdevice.json (the report), crossdevice.png (heat maps: latency relative to the
column's own arch, so the diagonal is 1 and a device-targeted search shows values ≥ 1 off the
diagonal). Host LUTs are taken to be this machine's, as `lut validate` does.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from hwnas.flags import ListAction, add_device, add_out, run_main
from lut.store import load_lut
from search.data import load_data
from search.latency import LatencyModel
from search.plots import plot_crossdevice
from search.precision import repeatable
from search.run import accuracy_line, add_search_arguments, config_from_args, latency_model, proxy_from_args, run_search
from search.space import Arch, get_arch, get_space, load_arch
from search.strategies import SearchConfig
from search.training import TrainConfig, select_device, train_arch

__all__ = ["crossdevice", "measure_on", "target_of", "train_seeds", "verdicts", "main"]

log = logging.getLogger(__name__)

# test accuracy first: the trained arch's mean over seeds, then the supernet's figures
ACCURACY_KEYS = ("trained_test_accuracy", "test_accuracy", "arch_split_accuracy")
REFERENCE = "fbnet_b"  # default --reference
TRAIN_SEEDS = (0, 1)  # default --train-seeds


def lut_label(latency: LatencyModel) -> str:
    info = latency.lut_info
    return f"{info['device_id']}_{info['runtime']}-t{info.get('threads') or 1}"


def target_of(latency: LatencyModel, serials: dict[str, str]) -> str | None:
    """Where a LUT's archs can be timed from here: "host", an adb serial, or None."""
    meta_dev = (latency.lut.meta or {}).get("device", {}) if latency.lut is not None else {}
    device_id = latency.lut_info.get("device_id") or ""
    if device_id in serials:
        return serials[device_id]
    if meta_dev.get("target") == "host" or meta_dev.get("kind") == "host" or device_id.startswith("host"):
        return "host"
    return None


def measure_on(
    target: str, latency: LatencyModel, arch_files: list[Path], rounds: int | None = None
) -> dict[str, float]:
    """Median end-to-end µs of each arch on `target` with the LUT's runtime, threads and dtype:
    `python -m profiler.run --arch ...` as a subprocess (search never measures by itself)."""
    info = latency.lut_info
    cmd = [sys.executable, "-m", "profiler.run", "--device", target, "--runtime", str(info["runtime"]),
           "--threads", str(info.get("threads") or 1), "--json", "--no-progress"]  # fmt: skip
    if info.get("dtype"):
        cmd += ["--dtype", str(info["dtype"])]
    if rounds:
        cmd += ["--rounds", str(rounds)]
    for f in arch_files:
        cmd += ["--arch", str(f)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    result = json.loads(lines[-1]) if lines else {}
    if proc.returncode != 0 or "archs" not in result:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"measuring on {target} failed ({result.get('error', 'no result')}): " + " | ".join(tail))
    return {name: float(s["median_us"]) for name, s in result["archs"].items()}


def reference_arch(name: str, space_name: str) -> Arch:
    """The named arch `name` as an arch of `space_name` (its blocks; the space's default head, as
    the found archs have)."""
    ref = get_arch(name)
    space = get_space(space_name)
    if ref.space.split("-")[0] != space.family or len(ref.blocks) != space.num_layers:
        raise ValueError(f"reference arch {name!r} is of space {ref.space!r}, not of {space_name!r}'s family")
    return Arch(space.name, ref.blocks, name=name).validate(space)


def train_seeds(
    blocks: tuple[str, ...], proxy: Any, data: Any, epochs: int, seeds: tuple[int, ...], device: torch.device
) -> list[float]:
    """Test accuracy of `blocks` trained from scratch on `proxy` (the recipe), once per seed."""
    return [train_arch(blocks, proxy, data, TrainConfig(epochs=epochs, seed=s), device=device)["test_accuracy"]
            for s in seeds]  # fmt: skip


def crossdevice(
    latencies: list[LatencyModel],
    cfg: SearchConfig,
    out: str | Path,
    *,
    search_kw: dict[str, Any],
    serials: dict[str, str] | None = None,
    measure: bool = True,
    rounds: int | None = None,
    target_frac: float | None = None,
    reference: str | None = REFERENCE,
    seeds: tuple[int, ...] = TRAIN_SEEDS,
) -> dict[str, Any]:
    """Search on each LUT, train each found arch once per seed (`search_kw["train_epochs"]`
    epochs; 0: no training), fill the N×N tables and write them; returns the report. Each LUT's
    search gets a soft target: `span_us(target_frac)` of that LUT with `target_frac`, else the
    `reference` arch's latency on it (None: the objective `cfg` says, the same on every LUT)."""
    out = Path(out)
    labels = [lut_label(lat) for lat in latencies]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two LUTs share a device and runtime ({labels}); give distinct LUTs")
    spaces = {lat.space.name for lat in latencies}
    if len(spaces) != 1:
        raise ValueError(f"the LUTs cover different spaces {sorted(spaces)}; compare LUTs of one space")
    ref = reference_arch(reference, latencies[0].space.name) if reference else None
    ref_us = [lat.predict_us(ref.blocks) for lat in latencies] if ref else None
    if (target_frac is not None or ref is not None) and cfg.target_latency_ms is not None:
        raise ValueError("a target per LUT (--target-frac or --reference) and --target-latency-ms exclude each other")
    epochs = int(search_kw.get("train_epochs", 0))
    device = search_kw.get("device", torch.device("cpu"))
    rows: list[dict[str, Any]] = []
    for j, (label, lat) in enumerate(zip(labels, latencies)):
        log.info("searching on %s", label)
        if target_frac is not None:
            cfg = replace(cfg, target_latency_ms=lat.span_us(target_frac) / 1000)
        elif ref_us is not None:
            cfg = replace(cfg, target_latency_ms=ref_us[j] / 1000)
        proxy = search_kw["proxy"](lat)
        data_options = search_kw.get("data_options") or {}
        summary = run_search(cfg, lat, proxy, search_kw["data"], out=out / label, subset=search_kw.get("subset"),
                             device=device, train_epochs=0, data_options=data_options,
                             amp=search_kw.get("amp", True))  # fmt: skip
        if epochs > 0 and seeds:
            data = load_data(search_kw["data"], resolution=proxy.resolution, subset=search_kw.get("subset"),
                             **data_options)  # fmt: skip
            accs = train_seeds(tuple(summary["blocks"]), proxy, data, epochs, seeds, device)
            summary.update(trained_test_accuracy=sum(accs) / len(accs), trained_test_accuracies=accs,
                           trained_epochs=epochs, trained_seeds=list(seeds))  # fmt: skip
        log.info("%s: %s", label, accuracy_line(summary))
        rows.append(summary)
    archs = [load_arch(r["arch_path"]) for r in rows]
    predicted = [[lat.predict_us(a) for lat in latencies] for a in archs]
    measured: list[list[float | None]] = [[None] * len(latencies) for _ in archs]
    notes: dict[str, str] = {}
    for j, lat in enumerate(latencies):
        target = target_of(lat, serials or {}) if measure else None
        if target is None:
            notes[labels[j]] = "not measured: no target reachable from here" if measure else "not measured"
            continue
        try:
            medians = measure_on(target, lat, [Path(r["arch_path"]) for r in rows], rounds)
        except RuntimeError as e:
            log.warning("%s", e)
            notes[labels[j]] = f"not measured: {e}"
            continue
        notes[labels[j]] = f"measured on {target}"
        for i, a in enumerate(archs):
            measured[i][j] = medians.get(a.label)
    report = {
        "luts": labels,
        "lut_ids": [lat.lut_info.get("id") for lat in latencies],
        "strategy": cfg.strategy,
        "predicted_us": predicted,
        # per cell: how many of the arch's ops LUT j's predictor made rather than measured
        "predicted_ops": [[lat.predicted_ops(a) for lat in latencies] for a in archs],
        "measured_us": measured,
        "notes": notes,
        "target_frac": target_frac,
        "reference": reference,
        "reference_us": ref_us,
        "searches": [{k: r.get(k) for k in ("arch_path", "blocks", "predicted_latency_us", "target_latency_us", "theta_entropy",
                                            "argmax_stable_epochs", "search_s", "supernet", "trained_test_accuracies",
                                            "trained_epochs", *ACCURACY_KEYS)} for r in rows],
        "own_arch_fastest": {labels[j]: min(range(len(archs)), key=lambda i: predicted[i][j]) == j
                             for j in range(len(labels))},
    }  # fmt: skip
    report["verdicts"] = verdicts(report)
    write_report(out, report)
    return report


def verdicts(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per device j, on its predicted latencies: does the arch searched on j win there, and by
    how much against the fastest arch searched elsewhere (`margin` = that arch's latency on j over
    the own arch's, minus 1: +0.12 = the own arch is 12 % faster; negative: it loses), with the
    own and that rival's trained test accuracy (mean over seeds) beside it."""
    labels, pred = report["luts"], report["predicted_us"]
    out: dict[str, dict[str, Any]] = {}
    for j, label in enumerate(labels):
        others = [i for i in range(len(labels)) if i != j]
        rival = min(others, key=lambda i: pred[i][j])
        margin = pred[rival][j] / pred[j][j] - 1.0
        acc = [s.get("trained_test_accuracy") for s in report["searches"]]
        out[label] = {"own_wins": margin > 0, "margin": margin, "own_us": pred[j][j], "rival": labels[rival],
                      "rival_us": pred[rival][j], "own_test_accuracy": acc[j], "rival_test_accuracy": acc[rival]}  # fmt: skip
    return out


def verdict_line(label: str, v: dict[str, Any]) -> str:
    acc = ""
    if v["own_test_accuracy"] is not None and v["rival_test_accuracy"] is not None:
        acc = f" (test accuracy {v['own_test_accuracy']:.3f} vs {v['rival_test_accuracy']:.3f})"
    if v["own_wins"]:
        return (f"- on {label} its own arch wins: {v['own_us'] / 1000:.2f} ms; the fastest arch searched elsewhere "
                f"({v['rival']}) takes {v['rival_us'] / 1000:.2f} ms there, {v['margin']:.1%} longer{acc}")  # fmt: skip
    return (f"- on {label} its own arch does not win: {v['own_us'] / 1000:.2f} ms; the arch searched on "
            f"{v['rival']} takes {v['rival_us'] / 1000:.2f} ms there, {1 - v['rival_us'] / v['own_us']:.1%} less{acc}")  # fmt: skip


def write_report(out: Path, report: dict[str, Any]) -> None:
    """crossdevice.csv, crossdevice.md, crossdevice.png and crossdevice.json under `out`."""
    labels, pred, meas = report["luts"], report["predicted_us"], report["measured_us"]
    with (out / "crossdevice.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["searched_on", "evaluated_on", "predicted_us", "measured_us",
                    "predicted_vs_own_arch", "measured_vs_own_arch", "predicted_vs_reference", *ACCURACY_KEYS])  # fmt: skip
        ref = report.get("reference_us")
        for i, row_label in enumerate(labels):
            acc = [report["searches"][i].get(k) for k in ACCURACY_KEYS]
            for j, col_label in enumerate(labels):
                m, m_own = meas[i][j], meas[j][j]
                w.writerow([row_label, col_label, f"{pred[i][j]:.1f}", "" if m is None else f"{m:.1f}",
                            f"{pred[i][j] / pred[j][j]:.4f}",
                            "" if m is None or m_own is None else f"{m / m_own:.4f}",
                            "" if not ref else f"{pred[i][j] / ref[j]:.4f}",
                            *("" if a is None else f"{a:.4f}" for a in acc)])  # fmt: skip
    (out / "crossdevice.md").write_text(markdown(report))
    (out / "crossdevice.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_crossdevice(pred, meas, labels, out / "crossdevice.png", title=f"{report['strategy']}: searched on (rows) × run on (columns)")


def markdown(report: dict[str, Any]) -> str:
    labels, n = report["luts"], len(report["luts"])
    ref_us, ref = report.get("reference_us"), report.get("reference")

    def acc_cells(i: int) -> list[str]:
        s = report["searches"][i]
        trained, seeds = s.get("trained_test_accuracy"), s.get("trained_test_accuracies") or []
        first = "—" if trained is None else f"{trained:.3f}" + (f" ({' / '.join(f'{a:.3f}' for a in seeds)})" if len(seeds) > 1 else "")
        return [first, *("—" if s.get(k) is None else f"{s[k]:.3f}" for k in ACCURACY_KEYS[1:])]

    def table(values: list[list[float | None]], what: str, relative: bool) -> list[str]:
        head = ["| searched on ↓ / run on → | " + " | ".join(labels)
                + " | test acc, trained (seeds) | test acc, supernet | arch-split acc, supernet (fitted on) |",
                "|---" * (n + 4) + "|"]  # fmt: skip
        body = []
        for i in range(n):
            cells = []
            for j in range(n):
                v, own = values[i][j], values[j][j]
                if v is None:
                    cells.append("—")
                    continue
                rel = [f"{v / own:.2f}× own"] if own and i != j else []
                if relative and ref_us:
                    rel.append(f"{v / ref_us[j]:.2f}× {ref}")
                text = f"{v / 1000:.2f} ms" + (f" ({', '.join(rel)})" if rel else "")
                cells.append(f"**{text}**" if i == j else text)
            body.append(f"| {labels[i]} | " + " | ".join(cells) + " | " + " | ".join(acc_cells(i)) + " |")
        if relative and ref_us:
            body.append(f"| *{ref} (reference)* | " + " | ".join(f"{v / 1000:.2f} ms" for v in ref_us) + " | | | |")
        note = "bold: the arch searched on that LUT; × own = relative to it"
        if relative and ref_us:
            note += f"; × {ref} = relative to the reference arch on that LUT"
        return [f"**{what}** latency ({note})", "", *head, *body, ""]

    title = f"# Cross-device search ({report['strategy']}"
    targets = ", ".join(f"{lab} {s['target_latency_us'] / 1000:.2f} ms" for lab, s in zip(labels, report["searches"])
                        if s.get("target_latency_us"))  # fmt: skip
    if report.get("target_frac") is not None:
        title += f"; soft target {report['target_frac']:g} of each LUT's span: {targets}"
    elif ref_us:
        title += f"; soft target at {ref}'s latency on each LUT: {targets}"
    lines = [title + ")", ""]
    lines += table(report["predicted_us"], "Predicted", relative=True)
    if any(v is not None for row in report["measured_us"] for v in row):
        lines += table(report["measured_us"], "Measured (end to end, median)", relative=False)
    epochs = next((s.get("trained_epochs") for s in report["searches"] if s.get("trained_epochs")), None)
    if epochs:
        lines.append(f"Trained: each found arch from scratch on its search's proxy, {epochs} epochs per seed "
                     "(search.train's recipe); test accuracy is the mean over seeds.")  # fmt: skip
        lines.append("")
    lines += [f"- {k}: {v}" for k, v in report["notes"].items()]
    v = report.get("verdicts") or {}
    wins = sum(x["own_wins"] for x in v.values())
    if v:
        lines += ["", f"**Diagonal: the own arch wins on {wins} of {len(v)} devices** (predicted latency)."]
        lines += [verdict_line(k, x) for k, x in v.items()]
    collapsed = [lab for lab, s in zip(labels, report["searches"]) if (s.get("supernet") or {}).get("collapsed")]
    if collapsed:
        lines.append(f"- warning: the supernet collapsed in the search on {', '.join(collapsed)} (see its log.csv)")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m search.crossdevice", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--lut", action=ListAction, required=True, metavar="LUT[,...]",
                   help="LUTs (paths or ids), two or more")
    add_out(p, required=True, help="output folder")
    add_device(p, dest="serial", multiple=True, default=[], old=("--serial",), metavar="DEVICE_ID=SERIAL",
               help="where to time the archs of the LUTs of DEVICE_ID: an adb serial (a phone, or the loopback device)")
    p.add_argument("--no-measure", action="store_true", help="predicted tables only")
    p.add_argument("--target-frac", type=float,
                   help="a soft target per LUT, this fraction of the way from its fastest arch to its uniform expectation")
    p.add_argument("--reference", default=REFERENCE,
                   help=f"named arch whose latency on each LUT is that LUT's soft target, and that columns are read "
                        f"against (default {REFERENCE}; none: no per-LUT target unless --target-frac)")
    p.add_argument("--train-seeds", default=",".join(map(str, TRAIN_SEEDS)),
                   help="train each found arch --train-epochs once per seed (default 0,1; empty: none)")
    p.add_argument("--rounds", type=int, help="measurement rounds (default: the profiler's)")
    p.add_argument("--space", help="search this space of the LUTs' family (e.g. fbnet-r160-w0.75): ops a LUT lacks "
                   "come from the predictor beside it (`python -m lut fit`); `predicted_ops` counts them")
    p.add_argument("--json", action="store_true", help="last line: the report as one JSON object")
    add_search_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    repeatable(args.deterministic)
    if len(args.lut) < 2:
        print("error: give at least two --lut", file=sys.stderr)
        return 2
    reference = None if args.reference in ("none", "") else args.reference
    if args.target_latency_ms is not None and (args.target_frac is not None or reference is not None):
        print("error: --target-frac and --reference set a target per LUT; drop --target-latency-ms "
              "(or give --reference none)", file=sys.stderr)  # fmt: skip
        return 2
    try:
        seeds = tuple(int(x) for x in args.train_seeds.split(",") if x.strip())
    except ValueError:
        print(f"error: --train-seeds takes integers separated by commas, got {args.train_seeds!r}", file=sys.stderr)
        return 2
    try:
        serials = dict(s.split("=", 1) for s in args.serial)
    except ValueError:
        print("error: --device takes DEVICE_ID=SERIAL here", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        latencies = [latency_model(load_lut(lut, root=args.luts_root), args.latency_correction, args.space)
                     for lut in args.lut]  # fmt: skip
        report = crossdevice(
            latencies, config_from_args(args), args.out, serials=serials, measure=not args.no_measure,
            rounds=args.rounds, target_frac=args.target_frac, reference=reference, seeds=seeds,
            search_kw={"proxy": lambda lat: proxy_from_args(args, lat), "data": args.data, "subset": args.subset,
                       "device": select_device(args.torch_device), "train_epochs": args.train_epochs,
                       "data_options": {"classes": args.classes, "workers": args.workers}, "amp": args.amp},
        )  # fmt: skip
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(report))
    print(f"wrote {Path(args.out) / 'crossdevice.md'} (.csv, .png) in {time.perf_counter() - t0:.0f} s")
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
