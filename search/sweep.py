"""A Pareto sweep: one search per latency target (or β, or λ), their front, and a random reference.

    python -m search.sweep --lut LUT --targets-ms 4,6,8 --out runs/sweep [--jobs N] [--random 2]
        [any other search.run flag, passed to every point: --strategy, --data, --epochs, ...]
    python -m search.sweep --lut LUT --betas 0.2,0.6,1.2 --out runs/beta-sweep
    python -m search.sweep --lut LUT --lambdas 0.05,0.1,0.2 --out runs/lambda-sweep

Each point is one `python -m search.run` process (`--target-latency-ms T`, `--beta B` or `--lambda
L` on top of the flags given), its outputs in OUT/<point>/ (`target-4ms`, `beta-0.6`, …) and its
output in OUT/<point>/sweep.log. Points run `--jobs` at a time (default: as many as the cores
allow at `--torch-threads` each; `--torch-threads` defaults to the cores shared out among the
jobs). A point whose folder already holds its arch.json is finished and is not run again, so a
sweep that was stopped continues where it was when re-run; `search.run --resume`, where it
exists, is passed to a point whose folder holds an unfinished run.

The reference: for each point, `--random K` archs (default 2) drawn layer-wise from the space
towards that point's found latency (`LatencyModel.sample_near`), the K nearest of 256 draws, each
trained from scratch exactly as the found arch is (`search.train`, the points' `--train-epochs`,
data and proxy), in OUT/random/<arch id>/. A search that steers by accuracy as well as latency
should sit above the random archs of its latency. With `--train-epochs 0` no arch is trained
and the front uses the supernet's test accuracy; there is then no random reference.

Outputs in OUT:

    pareto.csv   one row per point: the swept parameter (target_ms, beta or lambda) and its
                 value, found latency (predicted by the LUT, ms), val_accuracy, test_accuracy,
                 trained_test_accuracy, the accuracy the front is made of (front_accuracy), the
                 arch id, dominated (another point is at least as fast and as accurate and
                 better in one), the point's folder
    random.csv   the random reference: near which point, latency, trained test accuracy, arch id
    pareto.png   accuracy against latency: the points (the front joined, dominated ones hollow)
                 and the random archs
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hwnas.flags import add_verbose, run_main
from lut.files import atomic_write
from search import run as search_run
from search.latency import resolve_lut
from search.space import Arch, load_arch

__all__ = ["Point", "parse_values", "dominated", "run_sweep", "main"]

log = logging.getLogger(__name__)

SWEEPS = {  # sweep flag → (search.run flag, pareto.csv column, folder prefix, unit)
    "targets_ms": ("--target-latency-ms", "target_ms", "target", "ms"),
    "betas": ("--beta", "beta", "beta", ""),
    "lambdas": ("--lambda", "lambda", "lambda", ""),
}
NEAR_DRAWS = 256  # random archs drawn per point; the `--random` nearest in latency are trained


@dataclass(frozen=True)
class Point:
    """One search of the sweep."""

    column: str  # target_ms | beta | lambda
    value: float
    flag: str  # the search.run flag that sets it
    out: Path

    @property
    def finished(self) -> bool:
        return (self.out / "arch.json").is_file()


def parse_values(text: str, flag: str) -> list[float]:
    """'4,6,8' → [4.0, 6.0, 8.0]; positive numbers, each once."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated numbers, e.g. 4,6,8; got {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise ValueError(f"{flag} takes positive numbers, got {text!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{flag} names a value twice: {text!r}")
    return values


def dominated(latencies: list[float], accuracies: list[float]) -> list[bool]:
    """Per point: is another point at most as slow and at least as accurate, better in one?"""
    out = []
    for i, (li, ai) in enumerate(zip(latencies, accuracies)):
        out.append(any(lj <= li and aj >= ai and (lj < li or aj > ai)
                       for j, (lj, aj) in enumerate(zip(latencies, accuracies)) if j != i))  # fmt: skip
    return out


def _fmt_value(v: float) -> str:
    return f"{v:g}"


def _run_logged(cmd: list[str], log_path: Path) -> tuple[int, str]:
    """Run `cmd`, its output into `log_path`; (exit code, last line of stdout)."""
    with log_path.open("w") as f:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True)
        f.write(proc.stdout)
    lines = proc.stdout.strip().splitlines()
    return proc.returncode, lines[-1] if lines else ""


def _supports_resume() -> bool:
    return any("--resume" in a.option_strings for a in search_run.build_parser()._actions)


def _point_command(point: Point, lut: str, passthrough: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "search.run", "--lut", lut, "--out", str(point.out), "--json",
           point.flag, _fmt_value(point.value), *passthrough]  # fmt: skip
    if point.out.is_dir() and any(point.out.iterdir()) and _supports_resume() and "--resume" not in passthrough:
        cmd.append("--resume")  # an unfinished run of this point: continue it
    return cmd


def _run_point(point: Point, lut: str, passthrough: list[str]) -> dict[str, Any]:
    if not point.finished:
        point.out.mkdir(parents=True, exist_ok=True)
        cmd = _point_command(point, lut, passthrough)
        log.info("%s %s: running (log: %s)", point.column, _fmt_value(point.value), point.out / "sweep.log")
        code, _ = _run_logged(cmd, point.out / "sweep.log")
        if code != 0 or not point.finished:
            raise RuntimeError(f"the search of {point.column} {_fmt_value(point.value)} failed (exit {code}); "
                               f"see {point.out / 'sweep.log'}")  # fmt: skip
    else:
        log.info("%s %s: finished before, kept (%s)", point.column, _fmt_value(point.value), point.out)
    arch = load_arch(point.out / "arch.json")
    return {"arch": arch, **arch.info}


def _front_accuracy(info: dict[str, Any]) -> float:
    return float(info["trained_test_accuracy"] if info.get("trained_test_accuracy") is not None
                 else info["test_accuracy"])  # fmt: skip


def _random_reference(
    results: list[dict[str, Any]], args: argparse.Namespace, run_args: argparse.Namespace, passthrough: list[str],
    out: Path, jobs: int, threads: int,
) -> list[dict[str, Any]]:
    """Train `--random` archs of each point's latency as the points' archs were trained."""
    lut = resolve_lut(args.lut, root=run_args.luts_root)
    latency = search_run.latency_model(lut, run_args.latency_correction)
    gen = torch.Generator().manual_seed(run_args.seed)
    tasks = []
    for r in results:
        target_us = float(r["predicted_latency_us"])
        draws = latency.sample_near(NEAR_DRAWS, target_us, gen)
        lat = latency.predict_batch_us(draws)
        for k in (lat - target_us).abs().argsort()[: args.random].tolist():
            blocks = tuple(latency.blocks[int(i)] for i in draws[k])
            arch = Arch(latency.space.name, blocks, info={"proxy_space": r["proxy_space"], "lut": r["lut"]})
            tasks.append((r, arch, float(lat[k])))
    train_flags = _train_flags(run_args)

    def train(task: tuple[dict[str, Any], Arch, float]) -> dict[str, Any]:
        point, arch, lat_us = task
        folder = out / "random" / arch.id
        folder.mkdir(parents=True, exist_ok=True)
        report = folder / "report.json"
        if not report.is_file():
            atomic_write(folder / "arch.json", arch.to_json(indent=2) + "\n")
            cmd = [sys.executable, "-m", "search.train", "--arch", str(folder / "arch.json"), "--out", str(folder),
                   "--lut", args.lut, "--luts-root", run_args.luts_root, "--torch-threads", str(threads),
                   "--no-progress", *train_flags]  # fmt: skip
            if (folder / "checkpoint.pt").is_file():
                cmd.append("--resume")  # a stopped training of this arch: continue it
            code, _ = _run_logged(cmd, folder / "sweep.log")
            if code != 0 or not report.is_file():
                raise RuntimeError(f"training random arch {arch.id} failed (exit {code}); see {folder / 'sweep.log'}")
        acc = json.loads(report.read_text())["test_accuracy"]
        return {"near": point["_label"], "predicted_latency_ms": lat_us / 1000, "trained_test_accuracy": acc,
                "arch_id": arch.id, "dir": str(folder)}  # fmt: skip

    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(train, tasks))


def _train_flags(run_args: argparse.Namespace) -> list[str]:
    """search.train flags that train a random arch as search.run trains its found arch."""
    flags = ["--data", run_args.data, "--epochs", str(run_args.train_epochs), "--seed", str(run_args.seed)]
    for name, flag in (("subset", "--subset"), ("classes", "--classes"), ("workers", "--workers")):
        if getattr(run_args, name, None) is not None:
            flags += [flag, str(getattr(run_args, name))]
    flags += ["--torch-device", run_args.torch_device]
    if getattr(run_args, "deterministic", False):
        flags.append("--deterministic")
    if getattr(run_args, "amp", True) is False:
        flags.append("--no-amp")
    return flags


def run_sweep(args: argparse.Namespace, passthrough: list[str]) -> dict[str, Any]:
    """Run (or continue) every point, then the random reference; write pareto.csv/.png."""
    (key,) = [k for k in SWEEPS if getattr(args, k)]
    flag, column, prefix, unit = SWEEPS[key]
    values = parse_values(getattr(args, key), "--" + key.replace("_", "-"))
    run_args = _check_passthrough(passthrough, flag)
    out = Path(args.out)
    points = [Point(column, v, flag, out / f"{prefix}-{_fmt_value(v)}{unit}") for v in values]
    cores = os.cpu_count() or 1
    threads = run_args.torch_threads or max(1, cores // min(len(points), args.jobs or cores))
    jobs = args.jobs or max(1, min(len(points), cores // threads))
    if run_args.torch_threads is None:
        passthrough = [*passthrough, "--torch-threads", str(threads)]
    log.info("sweep of %d points (%s), %d at a time, %d torch thread(s) each", len(points), column, jobs, threads)
    with ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(_run_point, p, args.lut, passthrough) for p in points]
    results, failed = [], []
    for p, f in zip(points, futures):
        if f.exception() is not None:
            failed.append(str(f.exception()))
        else:
            results.append({**f.result(), "_label": f"{column} {_fmt_value(p.value)}", "_point": p})
    rows = _pareto_rows(results)
    out.mkdir(parents=True, exist_ok=True)
    reference: list[dict[str, Any]] = []
    if results and args.random > 0 and run_args.train_epochs > 0:
        try:
            reference = _random_reference(results, args, run_args, passthrough, out, jobs, threads)
        except RuntimeError as e:
            failed.append(str(e))
    _write_csv(out / "pareto.csv", rows)
    if reference:
        _write_csv(out / "random.csv", reference)
    plot = None
    if rows:
        from search.plots import plot_pareto

        plot = plot_pareto(rows, reference, out / "pareto.png",
                           title=f"{len(rows)} searches on {results[0]['lut'].get('device_id')} ({column} sweep)")  # fmt: skip
    return {"pareto_csv": str(out / "pareto.csv"), "plot": None if plot is None else str(plot), "rows": rows,
            "random": reference, "failed": failed}  # fmt: skip


def _pareto_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    lat = [float(r["predicted_latency_ms"]) for r in results]
    acc = [_front_accuracy(r) for r in results]
    dom = dominated(lat, acc)
    rows = []
    for r, a, d in zip(results, acc, dom):
        p: Point = r["_point"]
        rows.append({
            p.column: p.value, "predicted_latency_ms": round(float(r["predicted_latency_ms"]), 4),
            "val_accuracy": r.get("val_accuracy"), "test_accuracy": r.get("test_accuracy"),
            "trained_test_accuracy": r.get("trained_test_accuracy"), "front_accuracy": a,
            "arch_id": r["arch"].id, "dominated": d, "strategy": r.get("strategy"), "dir": str(p.out),
        })  # fmt: skip
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    lines = [",".join(fields)]
    for row in rows:
        lines.append(",".join("" if row.get(k) is None else str(row[k]) for k in fields))
    atomic_write(path, "\n".join(lines) + "\n")


def _check_passthrough(passthrough: list[str], flag: str) -> argparse.Namespace:
    """The flags for search.run, parsed as search.run parses them (an error now, not per point)."""
    if "--out" in passthrough or "--lut" in passthrough:
        raise ValueError("give --lut and --out to the sweep itself; every point gets OUT/<point>")
    if flag in passthrough or any(a.startswith(flag + "=") for a in passthrough):
        raise ValueError(f"{flag} is what this sweep sets per point; leave it out")
    parser = search_run.build_parser()
    parser.exit_on_error = False
    try:
        parsed, unknown = parser.parse_known_args(["--out", "-", *passthrough])
    except argparse.ArgumentError as e:
        raise ValueError(f"a flag the sweep passes to search.run is not valid: {e}") from None
    if unknown:
        raise ValueError(f"neither the sweep nor search.run knows {' '.join(unknown)} (python -m search.run -h)")
    return parsed


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m search.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--lut", required=True, help="the LUT every point searches against")
    p.add_argument("--out", required=True, help="sweep folder: one sub-folder per point, pareto.csv, pareto.png")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--targets-ms", help="latency targets (ms), comma-separated: --target-latency-ms per point")
    g.add_argument("--betas", help="β values, comma-separated: --beta per point")
    g.add_argument("--lambdas", help="λ values, comma-separated: --lambda per point")
    p.add_argument("--jobs", type=int, help="points run at once (default: as the cores allow)")
    p.add_argument("--random", type=int, default=2, help="random archs trained per point as reference (default 2)")
    p.add_argument("--json", action="store_true", help="last line: one JSON summary object")
    add_verbose(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, passthrough = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be ≥ 1, got {args.jobs}")
    if args.random < 0:
        parser.error(f"--random must be ≥ 0, got {args.random}")
    try:
        summary = run_sweep(args, passthrough)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for row in summary["rows"]:
        key = next(iter(row))
        print(f"{key} {row[key]:<6g} found {row['predicted_latency_ms']:.3f} ms  accuracy {row['front_accuracy']:.4f}"
              f"  {'dominated' if row['dominated'] else 'front'}  {row['arch_id']}")  # fmt: skip
    for r in summary["random"]:
        print(f"random near {r['near']}: {r['predicted_latency_ms']:.3f} ms  accuracy {r['trained_test_accuracy']:.4f}")
    print(f"wrote {summary['pareto_csv']}" + (f" and {summary['plot']}" if summary["plot"] else ""))
    for f in summary["failed"]:
        print(f"error: {f}", file=sys.stderr)
    if args.json:
        print(json.dumps({k: v for k, v in summary.items()}, default=str))
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(run_main(main))
