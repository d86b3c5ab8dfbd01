"""PNG plots of LUTs (matplotlib, Agg backend): heatmap, validation scatter, A-vs-B scatter.

    heatmap(lut, path)              layer × block net latency (µs), log colour scale
    validation_scatter(report, path) predicted vs measured end-to-end latency, ±5% band
    ops_scatter(comparison, path)   per-op latency under A vs B, log-log, y = x and geomean lines
    plot_all(lut, out_dir, vs=None) whichever of the above apply; returns the files written
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from lut.compare import Comparison, compare_luts, lut_id, net_latencies_us  # noqa: E402
from lut.store import Lut  # noqa: E402
from lut.validate import read_validation  # noqa: E402
from search.space import get_space  # noqa: E402

__all__ = ["heatmap", "validation_scatter", "ops_scatter", "plot_all"]

logger = logging.getLogger(__name__)
_DPI = 120


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = _DPI) -> Path:
    """Write `fig` to `path` (its folder made if missing) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def heatmap(lut: Lut, path: str | Path) -> Path:
    """Layer × candidate-block net latency (µs); blank = identity, not a candidate, or failed."""
    space = get_space(lut.space)
    layers, blocks = space.layers(), list(space.candidates_all)
    grid = np.full((len(layers), len(blocks)), np.nan)
    for i, layer in enumerate(layers):
        cands = space.candidates(layer)
        lat = net_latencies_us(lut, [layer.op(b).key for b in cands])
        for b in cands:
            v = lat[layer.op(b).key]
            grid[i, blocks.index(b)] = v if v > 0 else np.nan
    fig, ax = plt.subplots(figsize=(2.5 + 0.8 * len(blocks), 1.5 + 0.32 * len(layers)),
                           layout="constrained")
    finite = grid[np.isfinite(grid)]
    norm = LogNorm(vmin=finite.min(), vmax=finite.max()) if finite.size else None
    im = ax.imshow(grid, aspect="auto", cmap="viridis", norm=norm)
    for i, j in zip(*np.where(np.isfinite(grid))):
        v = grid[i, j]
        ax.text(j, i, f"{v:.0f}" if v >= 10 else f"{v:.1f}", ha="center", va="center",
                fontsize=6, color="white" if norm is None or norm(v) < 0.6 else "black")  # fmt: skip
    ax.set_xticks(range(len(blocks)), blocks, rotation=45, ha="right")
    ax.set_yticks(range(len(layers)),
                  [f"{l.index} ({l.c_in}→{l.c_out}, {l.h}², s{l.stride})" for l in layers],
                  fontsize=7)  # fmt: skip
    ax.set_xlabel("candidate block")
    ax.set_ylabel("searchable layer (c_in→c_out, input size, stride)")
    ax.set_title(f"Per-op latency (µs, overhead subtracted)\n{lut_id(lut)}")
    fig.colorbar(im, ax=ax, label="latency (µs)")
    return save_figure(fig, path)


def validation_scatter(report: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Predicted vs measured end-to-end latency per arch, with y = x and a ±5% band."""
    archs = report["archs"]
    fig, ax = plt.subplots(figsize=(6, 6), layout="constrained")
    styles = {"train": ("tab:blue", "o"), "holdout": ("tab:orange", "s")}
    for split, (color, marker) in styles.items():
        rows = [a for a in archs if a["split"] == split]
        if rows:
            ax.scatter([a["measured_us"] / 1000 for a in rows],
                       [a["predicted_us"] / 1000 for a in rows],
                       c=color, marker=marker, label=f"additive, {split} archs")  # fmt: skip
    corrected = [a for a in archs if "corrected_us" in a and a["split"] == "holdout"]
    if corrected:
        ax.scatter([a["measured_us"] / 1000 for a in corrected],
                   [a["corrected_us"] / 1000 for a in corrected],
                   c="tab:green", marker="^", label=f"{report['prediction_model']}, holdout")  # fmt: skip
    for a in archs:
        if not a["name"].startswith("random_"):
            ax.annotate(a["name"], (a["measured_us"] / 1000, a["predicted_us"] / 1000),
                        fontsize=7, xytext=(4, -8), textcoords="offset points")  # fmt: skip
    vals = [a["measured_us"] / 1000 for a in archs] + [a["predicted_us"] / 1000 for a in archs]
    lo, hi = min(vals) * 0.9, max(vals) * 1.1
    xs = np.linspace(lo, hi, 50)
    ax.plot(xs, xs, "k-", lw=1, label="predicted = measured")
    ax.fill_between(xs, xs * 0.95, xs * 1.05, color="grey", alpha=0.2, label="±5%")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured end-to-end latency (ms)")
    ax.set_ylabel("LUT-predicted latency (ms)")
    ax.set_title(
        f"{title}\nMAPE {report['mape']:.1f}% ({report['prediction_model']}, "
        f"{report['evaluated_on']}), Spearman {report['spearman']:.3f}, "
        f"noise floor {report['noise_floor']:.1f}%".strip()
    )
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def ops_scatter(comparison: Comparison, path: str | Path) -> Path:
    """Per-op latency under A (x) vs B (y), log-log, coloured by block."""
    ops = comparison.ops
    fig, ax = plt.subplots(figsize=(7, 6), layout="constrained")
    groups = list(ops.groupby("block", sort=True))
    colors = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(groups), 2)))
    for (block, g), color in zip(groups, colors):
        ax.scatter(g["a_us"], g["b_us"], s=14, label=block, alpha=0.85, color=color)
    lo = min(ops["a_us"].min(), ops["b_us"].min()) * 0.8
    hi = max(ops["a_us"].max(), ops["b_us"].max()) * 1.25
    xs = np.geomspace(lo, hi, 50)
    gm = comparison.summary["geomean_ratio"]
    ax.plot(xs, xs, "k-", lw=1, label="B = A")
    ax.plot(xs, xs * gm, "k--", lw=1, label=f"B = {gm:.2f}·A (geomean)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"A: {comparison.a_id} (µs)")
    ax.set_ylabel(f"B: {comparison.b_id} (µs)")
    ax.set_title(
        f"Per-op latency, B vs A ({comparison.kind})\nSpearman {comparison.summary['spearman']:.3f}, "
        f"{comparison.summary['num_flips']} block-order flips"
    )
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    ax.grid(alpha=0.3, which="both")
    return save_figure(fig, path)


def plot_all(lut: Lut, out_dir: str | Path, vs: Lut | None = None) -> list[Path]:
    """Heatmap, validation scatter (if validated), A-vs-B scatter (if `vs`); the files written."""
    out = Path(out_dir)
    files = [heatmap(lut, out / "heatmap.png")]
    report = read_validation(lut.path) if getattr(lut, "path", None) else None
    if report is not None:
        files.append(validation_scatter(report, out / "validation.png", title=lut_id(lut)))
    else:
        logger.info("%s has no validation.json; run `python -m lut validate` first", lut_id(lut))
    if vs is not None:
        files.append(ops_scatter(compare_luts(lut, vs), out / "ops_vs.png"))
    return files
