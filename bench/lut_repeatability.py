"""Repeatability: two independent LUT builds of the same runtime, compared op by op.

    python bench/lut_repeatability.py --runtime tflite [--space fbnet] [--ops-limit N]
        [--rounds R] [--runs N]

Both builds use the same (warm) export cache and the same protocol; for every op measured in
both, |Δmedian| / mean of the two medians. Prints the median and p90 of that ratio over ops, the
worst op with both values, and whether the median is under 3 %.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hwnas.flags import add_runtime, add_verbose, run_main  # noqa: E402
from lut import load_lut  # noqa: E402
from profiler.api import JobSettings, ProtocolConfig, profile_space  # noqa: E402
from profiler.runtimes import list_runtimes  # noqa: E402

TARGET_MEDIAN_REL = 0.03


def compare(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Per op present and ok in both tables: both medians and |Δ|/mean."""
    ok = a.index[(a["status"] == "ok")].intersection(b.index[b["status"] == "ok"])
    d = pd.DataFrame({"a_us": a.loc[ok, "median_us"], "b_us": b.loc[ok, "median_us"]})
    d["rel"] = (d["a_us"] - d["b_us"]).abs() / ((d["a_us"] + d["b_us"]) / 2)
    return d.sort_values("rel", ascending=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_runtime(p, default="tflite", choices=list_runtimes(), help="runtime (default tflite)")
    p.add_argument("--space", default="fbnet", help="search space (default fbnet)")
    p.add_argument("--ops-limit", type=int, help="profile only the first N ops")
    p.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per op per round (default 20)")
    add_verbose(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="hwnas-repeat-") as tmp:
        settings = JobSettings(args.runtime, ops_limit=args.ops_limit, progress=False,
                               protocol=ProtocolConfig(rounds=args.rounds, runs=args.runs))  # fmt: skip
        loads = [os.getloadavg()[0]]
        runs = []
        for i in range(2):
            res = profile_space(args.space, settings=settings.updated(out=Path(tmp) / f"build{i}", seed=i))
            runs.append(load_lut(res.lut_dir).table)
            loads.append(os.getloadavg()[0])
    d = compare(*runs)
    med, p90 = d["rel"].median(), d["rel"].quantile(0.9)
    worst = d.index[0]
    print(f"{args.runtime} {args.space}: {len(d)} ops, rounds={args.rounds} runs={args.runs}, "
          f"load_avg_1m {' -> '.join(f'{x:.1f}' for x in loads)}")  # fmt: skip
    print(f"median |Δ|/latency = {med:.2%}   p90 = {p90:.2%}   "
          f"{'PASS' if med < TARGET_MEDIAN_REL else 'FAIL'} (target < {TARGET_MEDIAN_REL:.0%})")
    print(f"worst op: {worst}  {d.loc[worst, 'a_us']:.1f} µs vs {d.loc[worst, 'b_us']:.1f} µs "
          f"({d.loc[worst, 'rel']:.1%})")
    print(d.head(5).to_string(float_format="{:.3f}".format))
    return 0 if med < TARGET_MEDIAN_REL else 1


if __name__ == "__main__":
    sys.exit(run_main(main))
