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
                phone LUTs given an adb serial with `--serial DEVICE_ID=SERIAL` (a phone, or the
                loopback device). Other columns stay empty.

With `--target-frac F` each LUT gets its own soft target, the same fraction F of the way from its
fastest arch to its uniform expectation (`LatencyModel.span_us`): the searches then spend the
same relative budget on every device, so the found archs compare at a similar accuracy, as the
phones of FBNet's Table 4 do. Each row also carries the found arch's accuracies (`search.run`'s names: val_accuracy,
test_accuracy, trained_test_accuracy). Written to OUT: crossdevice.csv (one row per cell),
crossdevice.md (the tables), crossdevice.png (heat maps: latency relative to the column's own
arch, so the diagonal is 1 and a device-targeted search shows values ≥ 1 off the diagonal).
Host LUTs are taken to be this machine's, as `lut validate` does.
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

from lut.store import load_lut
from search.latency import LatencyModel
from search.plots import plot_crossdevice
from search.run import accuracy_line, add_search_arguments, config_from_args, latency_model, proxy_from_args, run_search
from search.space import load_arch
from search.strategies import SearchConfig
from search.train import select_device

__all__ = ["crossdevice", "measure_on", "target_of", "main"]

log = logging.getLogger(__name__)

ACCURACY_KEYS = ("val_accuracy", "test_accuracy", "trained_test_accuracy")


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
) -> dict[str, Any]:
    """Search on each LUT, fill the N×N tables and write them; returns the report. With
    `target_frac`, each LUT's search gets the soft target `span_us(target_frac)` of that LUT."""
    out = Path(out)
    labels = [lut_label(lat) for lat in latencies]
    if len(set(labels)) != len(labels):
        raise ValueError(f"two LUTs share a device and runtime ({labels}); give distinct LUTs")
    spaces = {lat.space.name for lat in latencies}
    if len(spaces) != 1:
        raise ValueError(f"the LUTs cover different spaces {sorted(spaces)}; compare LUTs of one space")
    rows: list[dict[str, Any]] = []
    for label, lat in zip(labels, latencies):
        log.info("searching on %s", label)
        if target_frac is not None:
            cfg = replace(cfg, target_latency_ms=lat.span_us(target_frac) / 1000)
        summary = run_search(cfg, lat, search_kw["proxy"](lat), search_kw["data"], out=out / label,
                             subset=search_kw.get("subset"), device=search_kw.get("device", torch.device("cpu")),
                             train_epochs=search_kw.get("train_epochs", 0))  # fmt: skip
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
        "searches": [{k: r.get(k) for k in ("arch_path", "blocks", "predicted_latency_us", "target_latency_us", "theta_entropy",
                                            "argmax_stable_epochs", "search_s", *ACCURACY_KEYS)} for r in rows],
        "own_arch_fastest": {labels[j]: min(range(len(archs)), key=lambda i: predicted[i][j]) == j
                             for j in range(len(labels))},
    }  # fmt: skip
    write_report(out, report)
    return report


def write_report(out: Path, report: dict[str, Any]) -> None:
    """crossdevice.csv, crossdevice.md, crossdevice.png and crossdevice.json under `out`."""
    labels, pred, meas = report["luts"], report["predicted_us"], report["measured_us"]
    with (out / "crossdevice.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["searched_on", "evaluated_on", "predicted_us", "measured_us",
                    "predicted_vs_own_arch", "measured_vs_own_arch", *ACCURACY_KEYS])  # fmt: skip
        for i, row_label in enumerate(labels):
            acc = [report["searches"][i].get(k) for k in ACCURACY_KEYS]
            for j, col_label in enumerate(labels):
                m, m_own = meas[i][j], meas[j][j]
                w.writerow([row_label, col_label, f"{pred[i][j]:.1f}", "" if m is None else f"{m:.1f}",
                            f"{pred[i][j] / pred[j][j]:.4f}",
                            "" if m is None or m_own is None else f"{m / m_own:.4f}",
                            *("" if a is None else f"{a:.4f}" for a in acc)])  # fmt: skip
    (out / "crossdevice.md").write_text(markdown(report))
    (out / "crossdevice.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_crossdevice(pred, meas, labels, out / "crossdevice.png", title=f"{report['strategy']}: searched on (rows) × run on (columns)")


def markdown(report: dict[str, Any]) -> str:
    labels, n = report["luts"], len(report["luts"])

    def table(values: list[list[float | None]], what: str) -> list[str]:
        head = ["| searched on ↓ / run on → | " + " | ".join(labels) + " | val acc | test acc | trained test acc |",
                "|---" * (n + 4) + "|"]  # fmt: skip
        body = []
        for i in range(n):
            cells = []
            for j in range(n):
                v, own = values[i][j], values[j][j]
                if v is None:
                    cells.append("—")
                else:
                    rel = f" ({v / own:.2f}×)" if own else ""
                    cells.append(f"**{v / 1000:.2f} ms**" if i == j else f"{v / 1000:.2f} ms{rel}")
            acc = [report["searches"][i].get(k) for k in ACCURACY_KEYS]
            body.append(f"| {labels[i]} | " + " | ".join(cells) + " | "
                        + " | ".join("—" if a is None else f"{a:.3f}" for a in acc) + " |")  # fmt: skip
        return [f"**{what}** latency (bold: the arch searched on that LUT; × = relative to it)", "", *head, *body, ""]

    title = f"# Cross-device search ({report['strategy']}"
    if report.get("target_frac") is not None:
        targets = ", ".join(f"{lab} {s['target_latency_us'] / 1000:.2f} ms" for lab, s in zip(labels, report["searches"]))
        title += f"; soft target {report['target_frac']:g} of each LUT's span: {targets}"
    lines = [title + ")", ""]
    lines += table(report["predicted_us"], "Predicted")
    if any(v is not None for row in report["measured_us"] for v in row):
        lines += table(report["measured_us"], "Measured (end to end, median)")
    lines += [f"- {k}: {v}" for k, v in report["notes"].items()]
    lines += [f"- own arch fastest on {k}: {'yes' if v else 'no'}" for k, v in report["own_arch_fastest"].items()]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m search.crossdevice", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--lut", action="append", required=True, help="a LUT (path or id); give two or more")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--serial", action="append", default=[], metavar="DEVICE_ID=SERIAL",
                   help="time archs for this LUT device on an adb serial (a phone, or the loopback device)")
    p.add_argument("--no-measure", action="store_true", help="predicted tables only")
    p.add_argument("--target-frac", type=float,
                   help="a soft target per LUT, this fraction of the way from its fastest arch to its uniform expectation")
    p.add_argument("--rounds", type=int, help="measurement rounds (default: the profiler's)")
    p.add_argument("--space", help="search this space of the LUTs' family (e.g. fbnet-r160-w0.75): ops a LUT lacks "
                   "come from the predictor beside it (`python -m lut fit`); `predicted_ops` counts them")
    p.add_argument("--json", action="store_true", help="last line: the report as one JSON object")
    add_search_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    if len(args.lut) < 2:
        print("error: give at least two --lut", file=sys.stderr)
        return 2
    if args.target_frac is not None and args.target_latency_ms is not None:
        print("error: --target-frac sets a target per LUT; drop --target-latency-ms", file=sys.stderr)
        return 2
    try:
        serials = dict(s.split("=", 1) for s in args.serial)
    except ValueError:
        print("error: --serial takes DEVICE_ID=SERIAL", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        latencies = [latency_model(load_lut(lut, root=args.luts_root), args.latency_correction, args.space)
                     for lut in args.lut]  # fmt: skip
        report = crossdevice(
            latencies, config_from_args(args), args.out, serials=serials, measure=not args.no_measure,
            rounds=args.rounds, target_frac=args.target_frac,
            search_kw={"proxy": lambda lat: proxy_from_args(args, lat), "data": args.data, "subset": args.subset,
                       "device": select_device(args.device_train), "train_epochs": args.train_epochs},
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
    sys.exit(main())
