"""Search across resolutions and widths: one search per space of a family against one device's LUT
(+ the predictor `lut fit` stored beside it), and the best arch at the latency target over all.

    python -m search.run --lut DEVICE/fbnet/executorch-t1 --spaces fbnet-r160-w0.75,fbnet-r128-w0.5 \\
        --max-latency-ms 2 --out runs/multi

Each space's search writes its own outputs under `<out>/<space>/`; `<out>/arch.json` is the best
arch (a copy of its space's) and `<out>/spaces.json` lists every space's result with its
`predicted_ops` (how many of the found arch's ops the predictor made rather than the LUT).

Best at the target: among the spaces whose found arch meets the latency bound (`--max-latency-ms`,
else `--target-latency-ms` + 10 %, the precision a soft target is hit with; no bound: all), the
highest accuracy — trained from scratch where the run trained it, else the validation accuracy —
and on a tie the faster. When no space meets the bound, the fastest found arch is returned and
`met_target` is false. The supernet of every space trains on the same proxy (`--resolution`,
`--width`), so accuracies compare the block choices, not the resolutions: train the winners at
their own resolution (`python -m search.train --scale lut`) before trusting an accuracy gap
between spaces.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

from lut.files import atomic_write
from lut.store import Lut
from search.latency import LatencyModel
from search.space import Arch, arch_ops

__all__ = ["parse_spaces", "pick_best", "search_spaces", "SOFT_TARGET_TOLERANCE"]

log = logging.getLogger(__name__)

SOFT_TARGET_TOLERANCE = 0.10  # a soft target counts as met within +10 %


def parse_spaces(text: str) -> list[str]:
    """'fbnet-r160-w0.75,fbnet-r128-w0.5' → the names (each checked), without repeats."""
    from search.space import get_space

    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise ValueError("--spaces needs at least one space name, e.g. fbnet-r160-w0.75,fbnet-r128-w0.5")
    families = {get_space(n).family for n in names}
    if len(families) > 1:
        raise ValueError(f"--spaces must be one family (resolutions and widths of it); got {sorted(families)}")
    return list(dict.fromkeys(get_space(n).name for n in names))


def _accuracy(r: dict[str, Any]) -> float:
    v = r.get("trained_test_accuracy", r.get("val_accuracy"))
    return float(v) if v is not None else float("-inf")


def pick_best(results: Sequence[dict[str, Any]], max_us: float | None, target_us: float | None) -> tuple[dict[str, Any], bool]:
    """(the best result, whether it meets the bound) — see the module docstring."""
    if not results:
        raise ValueError("no search results to pick from")
    bound = max_us if max_us is not None else (target_us * (1 + SOFT_TARGET_TOLERANCE) if target_us else None)
    meeting = [r for r in results if bound is None or r["predicted_latency_us"] <= bound]
    if not meeting:
        return min(results, key=lambda r: r["predicted_latency_us"]), False
    return max(meeting, key=lambda r: (_accuracy(r), -r["predicted_latency_us"])), True


def search_spaces(
    lut: Lut,
    spaces: Sequence[str],
    run_one: Callable[[LatencyModel, Path], dict[str, Any]],
    *,
    out: str | Path,
    correction: Callable[[LatencyModel], LatencyModel] = lambda m: m,
    max_us: float | None = None,
    target_us: float | None = None,
) -> dict[str, Any]:
    """Run `run_one(latency, out/space)` for every space and write the best to `out`; `correction`
    is applied to a space the LUT measured (a predicted space keeps the raw additive sum)."""
    out = Path(out)
    results = []
    for name in spaces:
        latency = LatencyModel.for_space(lut, name)
        if latency.lut is lut:
            latency = correction(latency)
        log.info("searching %s (%s)", name, latency.lut_info.get("id"))
        summary = run_one(latency, out / name)
        summary["predicted_ops"] = latency.predicted_ops(summary["blocks"])
        ops = arch_ops(Arch(latency.space.name, tuple(summary["blocks"])), latency.space)
        summary["num_ops"] = sum(not op.is_identity for op in ops)
        results.append(summary)
    best, met = pick_best(results, max_us, target_us)
    if best.get("arch_path"):
        shutil.copyfile(best["arch_path"], out / "arch.json")
    report = {"best_space": best["space"], "met_target": met, "max_latency_us": max_us, "target_latency_us": target_us,
              "arch_path": str(out / "arch.json") if best.get("arch_path") else None, "spaces": results}  # fmt: skip
    atomic_write(out / "spaces.json", json.dumps(report, indent=2) + "\n")
    return report
