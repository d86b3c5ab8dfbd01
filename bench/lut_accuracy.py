"""LUT accuracy per runtime, side by side with the noise floor measured in the same run.

    python -m bench.lut_accuracy [LUT ...] [--root luts] [--space fbnet] [--archs 20]
        [--rounds 6] [--seed 0] [--correction none|auto|affine|per_op] [--write] [--json]

Without LUT arguments, the latest version of every host LUT of `--space` under `--root` is
validated (one per runtime dir). Every LUT is validated on the same archs (same seed), one after
the other, with the protocol of `lut validate`; the table shows each runtime's MAPE, max APE,
Spearman ρ, Kendall τ, the end-to-end noise floor measured in that same validation, and
MAPE / noise floor: how many times the run-to-run noise the LUT's error is (≈1 is as good as any
LUT can be on this target).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from lut.store import LutError, list_luts, load_lut
from lut.correction import CORRECTIONS
from lut.validate import write_validation
from profiler.validate import ValidationConfig, validate_lut


def _latest_host_luts(root: str, space: str) -> list[str]:
    latest: dict[tuple[str, str], dict] = {}
    for row in list_luts(root):
        if row["space"] != space or not row["device"].startswith("host") or row["error"]:
            continue
        key = (row["device"], row["runtime"])
        if key not in latest or row["version"] > latest[key]["version"]:
            latest[key] = row
    return [r["path"] for _, r in sorted(latest.items())]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lut_accuracy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("luts", nargs="*", help="LUT dirs or ids (default: latest host LUTs of --space)")
    p.add_argument("--root", default="luts")
    p.add_argument("--space", default="fbnet")
    p.add_argument("--archs", type=int, default=20, help="random archs besides the named ones")
    p.add_argument("--rounds", type=int, default=6, help="end-to-end rounds (two halves)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--correction", default="none", choices=["none", "auto", *CORRECTIONS])
    p.add_argument("--write", action="store_true", help="also store validation.json beside each LUT")
    p.add_argument("--json", action="store_true", help="last line: one JSON list of rows")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    paths = args.luts or _latest_host_luts(args.root, args.space)
    if not paths:
        print(f"no host LUTs of space {args.space!r} under {args.root}; profile one with "
              f"`python -m profiler.run --space {args.space} --runtime executorch`", file=sys.stderr)  # fmt: skip
        return 2
    cfg = ValidationConfig(num_archs=args.archs, seed=args.seed, rounds=args.rounds,
                           correction=args.correction, progress=not args.json)  # fmt: skip
    rows = []
    for path in paths:
        try:
            lut = load_lut(path, root=args.root)
            rep = validate_lut(lut, cfg)
        except LutError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if args.write:
            write_validation(lut, rep)
        rows.append({
            "lut": lut.id, "runtime": lut.meta["runtime"]["name"], "model": rep["prediction_model"],
            "mape": rep["mape"], "max_ape": rep["max_ape"], "spearman": rep["spearman"],
            "kendall": rep["kendall"], "noise_floor": rep["noise_floor"],
            "mape_over_noise": rep["mape"] / rep["noise_floor"] if rep["noise_floor"] > 0 else float("inf"),
            "additive_mape": rep["additive"]["mape"], "num_archs": rep["num_archs"],
        })  # fmt: skip
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'runtime':<14}{'model':<10}{'MAPE %':>8}{'maxAPE %':>10}{'Spearman':>10}{'Kendall':>9}"
          f"{'noise %':>9}{'MAPE/noise':>12}{'archs':>7}")  # fmt: skip
    for r in rows:
        print(f"{r['runtime']:<14}{r['model']:<10}{r['mape']:>8.2f}{r['max_ape']:>10.2f}"
              f"{r['spearman']:>10.3f}{r['kendall']:>9.3f}{r['noise_floor']:>9.2f}"
              f"{r['mape_over_noise']:>12.1f}{r['num_archs']:>7d}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
