"""Time to build a space's LUT per runtime: cold (empty export cache) vs warm (cached exports).

    python bench/lut_build_time.py [--runtime tflite,executorch,onnxruntime] [--space fbnet]
        [--ops-limit N] [--rounds R] [--export-workers W] [--keep DIR]

Prints, per runtime, cold and warm wall time, the warm/cold ratio and whether the cold build
meets the target (< 300 s on a 2-core machine). The machine's load average is printed with it:
on a shared CPU the absolute seconds mean little without it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hwnas.flags import add_runtime, add_verbose, run_main  # noqa: E402
from profiler.api import JobSettings, ProtocolConfig, profile_space  # noqa: E402
from profiler.runtimes import list_runtimes  # noqa: E402

TARGET_COLD_S = 300.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_runtime(p, dest="runtimes", multiple=True, spaced=True, default=list_runtimes(), choices=list_runtimes(),
                old=("--runtimes",), help="runtimes to build LUTs with (default: all)")
    p.add_argument("--space", default="fbnet", help="search space (default fbnet)")
    p.add_argument("--ops-limit", type=int, help="profile only the first N ops")
    p.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--export-workers", type=int, help="export processes (default: the profiler's)")
    p.add_argument("--keep", type=Path, help="keep the LUTs (DIR/luts) and exports (DIR/cache, usable as HWNAS_CACHE) here; "
                   "its cache must start empty for a cold build")  # fmt: skip
    add_verbose(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    rows = []
    for rt in args.runtimes:
        with tempfile.TemporaryDirectory(prefix="hwnas-bench-") as tmp:
            base = args.keep or Path(tmp)
            if (base / "cache" / rt).exists() and any((base / "cache" / rt).iterdir()):
                p.error(f"{base / 'cache' / rt} is not empty: a cold build needs an empty export cache")
            settings = JobSettings(rt, out=base / "luts", cache_root=base / "cache", ops_limit=args.ops_limit,
                                   protocol=ProtocolConfig(rounds=args.rounds), export_workers=args.export_workers,
                                   progress=False)  # fmt: skip
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            cold = profile_space(args.space, settings=settings)
            cold_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            warm = profile_space(args.space, settings=settings)
            warm_s = time.perf_counter() - t0
        rows.append({
            "runtime": rt, "ops": cold.num_ops, "failed": cold.num_failed, "exported": cold.exported,
            "cold_s": round(cold_s, 1), "warm_s": round(warm_s, 1), "warm/cold": round(warm_s / cold_s, 3),
            "warm_exported": warm.exported, "cold<300s": cold_s < TARGET_COLD_S,
            "load_avg_1m": f"{load0:.1f}->{os.getloadavg()[0]:.1f}", "cores": os.cpu_count(),
        })  # fmt: skip
        print(pd.DataFrame(rows[-1:]).to_string(index=False), flush=True)
    print("\nsummary")
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
