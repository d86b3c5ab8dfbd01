"""`python -m lut SUBCOMMAND`: inspect the LUT store.

    python -m lut list [--luts-root luts] [--json]
    python -m lut show PATH_OR_ID [--luts-root luts] [--json]
    python -m lut validate LUT [--archs N] [--seed S] [--device SERIAL] [--correction C] [--json]
                                              (runs `python -m profiler.validate`: measuring
                                               belongs to the profiler)
    python -m lut predict LUT --arch NAME_OR_FILE [--arch …] [--space S] [--correction validated|none] [--json]
    python -m lut fit LUT [MORE_LUTS …] [--luts-root luts] [--json]
                                              (a latency predictor per block kind, stored beside
                                               the first LUT: docs/predictor.md)
    python -m lut compare A B [--json] [--out DIR]
    python -m lut plot LUT [--vs LUT2] --out DIR
    python -m lut import FILE --format F [--space S] [--device-id D] [--runtime-dir R]
    python -m lut export LUT --format F --out FILE

Each subcommand is one small function registered with `set_defaults(func=...)`; add a
subcommand by adding a parser and a function.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from hwnas.flags import ListAction, add_luts_root, add_out, add_verbose, run_main

from .store import list_luts, load_lut

_LIST_COLUMNS = ["device", "space", "runtime", "version", "status", "provenance", "created", "ops", "failed",
                 "validated"]


def _cmd_list(args: argparse.Namespace) -> int:
    rows = list_luts(args.luts_root)
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print(f"no LUTs under {args.luts_root}")
        return 0
    df = pd.DataFrame(rows)
    for col in ("version", "ops", "failed"):  # a measurement job has no version (nor, running, counts)
        df[col] = df[col].map(lambda v: "-" if v is None or v != v else int(v))
    df = df.astype(object).where(df.notna(), "-")
    cols = _LIST_COLUMNS + (["error"] if (df["error"] != "").any() else [])
    with pd.option_context("display.width", 200, "display.max_colwidth", 80):
        print(df[cols].to_string(index=False))
    return 0


def _validation_summary(path: Path) -> dict[str, Any] | None:
    f = path / "validation.json"
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return {"error": f"{f}: unreadable ({e})"}
    if not isinstance(data, dict):
        return {"error": f"{f}: not a JSON object"}
    summary = data.get("summary", data)
    return {k: v for k, v in summary.items() if not isinstance(v, (list, dict))}


def _cmd_show(args: argparse.Namespace) -> int:
    lut = load_lut(args.lut, root=args.luts_root)
    validation = _validation_summary(lut.path)
    if args.json:
        table = lut.table.reset_index()
        print(
            json.dumps(
                {
                    "id": lut.id,
                    "path": str(lut.path),
                    "provenance": lut.provenance,
                    "meta": lut.meta,
                    "validation": validation,
                    "table": json.loads(table.to_json(orient="records")),
                }
            )
        )
        return 0
    m = lut.meta
    rt = m["runtime"]
    dev = m["device"]
    print(f"LUT {lut.id}  ({lut.path})")
    print(f"  provenance  {lut.provenance}")
    print(f"  created     {m['created_at']}  (tool {m['tool_version']}, schema {m['schema_version']})")
    print(f"  parent      {m['parent']}   content_hash {m['content_hash'][:16]}")
    print(f"  device      {dev['device_id']}  {dev.get('cpu_model') or dev.get('model') or ''}")
    print(
        f"  runtime     {rt['name']} {rt['version']}  delegate={rt['delegate']} threads={rt['threads']} "
        f"core_mask={rt['core_mask']} dtype={rt['dtype']}"
    )
    print(f"  exporters   {', '.join(f'{k} {v}' for k, v in sorted(m['exporters'].items()))}")
    print(f"  space       {m['space'].get('name')} (hash {m['space'].get('hash')})")
    print(f"  protocol    {', '.join(f'{k}={v}' for k, v in sorted(m['protocol'].items()))}")
    ovh = m["overhead_us"]
    print(f"  overhead    {ovh:.1f} µs at the network input" if ovh is not None else "  overhead    -")
    print(f"  counts      {m.get('counts')}")
    for key, msg in sorted((m["failed_ops"] or {}).items()):
        print(f"  FAILED      {key}: {msg.splitlines()[0] if msg else ''}")
    if validation is not None:
        print(f"  validation  {validation}")
    cols = ["block", "c_in", "h", "w", "c_out", "stride", "status", "median_us", "p10_us",
            "p90_us", "std_us", "n", "load_us", "memory_kb"]  # fmt: skip
    ok = lut.table[lut.table["status"] == "ok"]
    if ok["load_us"].notna().any():
        print(f"  load        median {ok['load_us'].median() / 1e3:.2f} ms per op (max {ok['load_us'].max() / 1e3:.2f})")
        print(f"  memory      median {ok['memory_kb'].median() / 1024:.2f} MiB per op (max "
              f"{ok['memory_kb'].max() / 1024:.2f}); {lut.meta['device'].get('memory_semantics', '')}")  # fmt: skip
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.float_format", "{:.1f}".format):
        print(lut.table[cols].to_string())
    return 0


# --- validate, compare, plot, import, export ------------------------------------------------------
def _validate(argv: list[str]) -> int:
    """`lut validate` measures archs on the LUT's target, which is the profiler's job: run its CLI
    with the same arguments (see `profiler/validate.py`)."""
    return subprocess.call([sys.executable, "-m", "profiler.validate", *argv])


def _cmd_predict(args: argparse.Namespace) -> int:
    from search.space import load_arch

    from .correction import predict_arch
    from .predictor import PredictedLut, predicted_lut, retarget_arch

    lut = load_lut(args.lut, root=args.luts_root)
    archs = [load_arch(a) for a in args.arch]
    if args.space:
        archs = [retarget_arch(a, args.space) for a in archs]
        lut = predicted_lut(lut, args.space, extra_ops=[op for a in archs for op in arch_ops_of(a)])
    rows = []
    for arch in archs:
        row = predict_arch(lut, arch, "validated" if args.correction == "validated" else None)
        keys = [op.key for op in arch_ops_of(arch)]
        row["predicted_ops"] = lut.predicted_ops(keys) if isinstance(lut, PredictedLut) else 0
        row["num_ops"] = sum(1 for op in arch_ops_of(arch) if not op.is_identity)
        rows.append(row)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    for r in rows:
        corr = f"  corrected ({r['correction']['name']}) {r['corrected_us'] / 1e3:.3f} ms" if r["correction"] else ""
        made = f"; {r['predicted_ops']} of {r['num_ops']} ops predicted" if r["predicted_ops"] else ""
        print(f"{r['arch']} on {r['lut']}: {r['predicted_us'] / 1e3:.3f} ms  (additive {r['additive_us'] / 1e3:.3f} ms{corr}{made})")
    return 0


def arch_ops_of(arch: Any) -> list[Any]:
    from search.space import arch_ops

    return arch_ops(arch)


def _cmd_fit(args: argparse.Namespace) -> int:
    from .predictor import fit_predictor, save_predictor

    luts = [load_lut(p, root=args.luts_root) for p in args.luts]
    pred = fit_predictor(luts, seed=args.seed)
    path = save_predictor(pred, luts[0])
    held = pred.meta["held_out"]
    if args.json:
        print(json.dumps({"path": str(path), "num_ops": pred.meta["num_ops"], "held_out": held,
                          "fitted_on": pred.meta["fitted_on"]}))  # fmt: skip
        return 0
    print(f"predictor {path}: {pred.meta['num_ops']} measured ops of {len(luts)} LUT(s), kinds "
          f"{', '.join(f'{k} {n}' for k, n in pred.meta['per_kind_ops'].items())}")  # fmt: skip
    o = held["overall"]
    if o:
        print(f"  held out ({o['n']} ops, {held['share']:.0%}): RMSPE {o['rmspe_pct']:.1f} %, "
              f"{o['within_10pct']:.0%} within ±10 %")  # fmt: skip
    for kind, e in held["per_kind"].items():
        print(f"    {kind:<9} {e['n']:4d} ops  RMSPE {e['rmspe_pct']:6.1f} %  within ±10 % {e['within_10pct']:.0%}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare_luts

    a, b = load_lut(args.a, root=args.luts_root), load_lut(args.b, root=args.luts_root)
    cmp = compare_luts(a, b)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        cmp.ops.to_csv(out / "ops.csv", float_format="%.3f")
        (out / "compare.json").write_text(json.dumps(cmp.to_dict(), indent=2) + "\n")
    if args.json:
        print(json.dumps(cmp.to_dict()))
        return 0
    s = cmp.summary
    print(f"A {cmp.a_id}\nB {cmp.b_id}  ({cmp.kind})")
    for col, label in (("load_us", "load time"), ("memory_kb", "memory")):
        if s.get(f"{col}_geomean_ratio") is not None:
            print(f"  {label}: geomean B/A {s[f'{col}_geomean_ratio']:.3f} over {s[f'{col}_ops_compared']} ops")
    print(f"  ops compared {s['num_ops']}  geomean B/A {s['geomean_ratio']:.3f}  "
          f"(range {s['ratio_min']:.2f}–{s['ratio_max']:.2f})  Spearman {s['spearman']:.3f}  "
          f"Kendall {s['kendall']:.3f}  block-order flips {s['num_flips']}")  # fmt: skip
    for f in cmp.flips[:10]:
        print(f"  flip  layer {f['layer']:2d}: A prefers {f['faster_on_a']}, B prefers {f['faster_on_b']}")
    if len(cmp.flips) > 10:
        print(f"  … and {len(cmp.flips) - 10} more flips (--json, or compare.json with --out, lists them all)")
    changed = [r for r in cmp.best_blocks if not r["same"]]
    print(f"  best block differs at {len(changed)} of {len(cmp.best_blocks)} layers")
    for r in changed:
        print(f"    layer {r['layer']:2d}: A {r['best_a']}, B {r['best_b']} "
              f"(A's pick +{r['a_pick_slowdown_on_b_pct']:.1f}% on B)")  # fmt: skip
    print("  how an arch searched on A fares on B: python -m search.crossdevice --lut A --lut B")
    d = cmp.drift
    print(f"  drift: median change {d['median_change_pct']:+.1f}%, {d['ops_changed']} of "
          f"{d['ops_compared']} ops moved > {d['threshold_pct']:.0f}%; meta differs in "
          f"{', '.join(d['meta_diff']) or 'nothing'}")  # fmt: skip
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from .plots import plot_all

    lut = load_lut(args.lut, root=args.luts_root)
    vs = load_lut(args.vs, root=args.luts_root) if args.vs else None
    for f in plot_all(lut, args.out, vs=vs):
        print(f)
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from .formats import import_file

    options = {k: v for k, v in (("space", args.space), ("device_id", args.device_id),
                                 ("runtime_dir", args.runtime_dir)) if v}  # fmt: skip
    paths = import_file(args.file, args.format, args.luts_root, **options)
    if args.json:
        print(json.dumps([str(p) for p in paths]))
    else:
        for p in paths:
            print(f"imported {p}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .formats import export_lut

    print(export_lut(load_lut(args.lut, root=args.luts_root), args.format, args.out))
    return 0


def _add_analysis_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    from .formats import FORMATS

    sub.add_parser("validate", add_help=False, help="measure archs end to end, report the LUT's error "
                   "(python -m profiler.validate; `lut validate --help` lists its options)")  # fmt: skip

    p = sub.add_parser("predict", parents=[common], help="an arch's predicted latency on a LUT")
    p.add_argument("lut", help="LUT version dir, runtime dir or id")
    p.add_argument("--arch", action=ListAction, required=True, metavar="NAME_OR_FILE[,...]",
                   help="named archs or arch JSON files")
    p.add_argument("--correction", default="validated", choices=["validated", "none"],
                   help="validated (default): also apply the correction `lut validate` stored for the LUT")
    p.add_argument("--space", help="predict for this space (e.g. fbnet-r160-w0.75): named archs keep their blocks; "
                   "ops the LUT lacks come from the predictor `lut fit` stored beside it (raw additive sum)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per arch (predicted_us, additive_us, predicted_ops, …)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("fit", parents=[common], help="fit a latency predictor per block kind on LUTs of one device")
    p.add_argument("luts", nargs="+", metavar="LUT", help="LUTs of one device and runtime (e.g. the space's and "
                   "shapes-<family>'s); the predictor is stored beside the first")
    p.add_argument("--seed", type=int, default=0, help="held-out split and tree seed")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("compare", parents=[common], help="compare two LUTs of one space")
    p.add_argument("a", help="LUT A: version dir, runtime dir or id")
    p.add_argument("b", help="LUT B, of the same space")
    p.add_argument("--floors", help=argparse.SUPPRESS)  # the transfer analysis moved to search.transfer
    add_out(p, help="write ops.csv (per-op ratios) and compare.json in this folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("plot", parents=[common], help="heatmap, validation and A-vs-B PNGs")
    p.add_argument("lut", help="LUT version dir, runtime dir or id")
    p.add_argument("--vs", help="a second LUT of the same space for the A-vs-B scatter")
    add_out(p, required=True, help="folder to write the PNGs in")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser("import", parents=[common], help="import a LUT from another format")
    p.add_argument("file", help="the file to import")
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="its format")
    p.add_argument("--space", help="space of the table (default: inferred from the file)")
    p.add_argument("--device-id", help="device id of the imported LUT (default: from the source)")
    p.add_argument("--runtime-dir", help="runtime dir name of the imported LUT")
    p.add_argument("--json", action="store_true", help="print the written LUT dirs as JSON")
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser("export", parents=[common], help="export a LUT to another format")
    p.add_argument("lut", help="LUT version dir, runtime dir or id")
    p.add_argument("--format", required=True, choices=sorted(n for n, f in FORMATS.items() if f.can_export),
                   help="format to write")
    add_out(p, required=True, help="file to write")
    p.set_defaults(func=_cmd_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lut", description="Inspect latency LUTs.")
    common = argparse.ArgumentParser(add_help=False)  # options every subcommand takes
    add_luts_root(common)
    add_verbose(common)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", parents=[common], help="devices, spaces, runtimes and versions")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("show", parents=[common], help="metadata and table of one LUT version")
    p.add_argument("lut", help="version dir, runtime dir (latest version) or id device/space/runtime[/vN]")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_show)

    _add_analysis_commands(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["validate"]:
        return _validate(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        return args.func(args)
    except ValueError as e:  # LutError, ArchError: the message says what is wrong
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `lut show … | head`: the reader has what it wanted
        # Python flushes stdout again at exit: point it at /dev/null so that flush is quiet too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
