"""Plots of a search run: softmax(θ) per layer, the cross-device latency table as heat maps, and
a sweep's accuracy against latency."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from lut.plots import save_figure  # noqa: E402

__all__ = ["plot_theta", "plot_crossdevice", "plot_pareto"]


def plot_theta(
    theta: torch.Tensor,
    blocks: Sequence[str],
    path: str | Path,
    *,
    chosen: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Heat map of softmax(θ) (layers × blocks); `chosen` blocks are outlined. −inf = n/a."""
    p = torch.softmax(theta.detach().double().cpu(), dim=-1).numpy()
    n_layers, n_blocks = p.shape
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n_blocks, 1.2 + 0.32 * n_layers))
    im = ax.imshow(p, aspect="auto", cmap="viridis", vmin=0.0, vmax=max(1e-9, float(p.max())))
    ax.set_xticks(range(n_blocks), list(blocks), rotation=45, ha="right")
    ax.set_yticks(range(n_layers), [str(i) for i in range(n_layers)])
    ax.set_xlabel("candidate block")
    ax.set_ylabel("searchable layer")
    for i in range(n_layers):
        for j in range(n_blocks):
            if torch.isinf(theta[i, j]) and theta[i, j] < 0:
                ax.text(j, i, "×", ha="center", va="center", color="white", fontsize=7)
    if chosen is not None:
        for i, b in enumerate(chosen):
            j = list(blocks).index(b)
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=1.5))
    fig.colorbar(im, ax=ax, label="softmax(θ)")
    ax.set_title(title or "architecture distribution per layer")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_crossdevice(
    predicted_us: Sequence[Sequence[float]],
    measured_us: Sequence[Sequence[float | None]],
    labels: Sequence[str],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """Heat maps of the N×N cross-device table: cell (i, j) = latency of the arch searched on LUT
    i when run on LUT j, relative to LUT j's own arch (the diagonal is 1), annotated in ms; a
    second panel with the measured table when any cell was measured."""
    panels = [("predicted", predicted_us)]
    if any(v is not None for row in measured_us for v in row):
        panels.append(("measured", measured_us))
    n = len(labels)
    fig, axes = plt.subplots(1, len(panels), figsize=(1.8 + 2.2 * n * len(panels), 1.4 + 1.1 * n), squeeze=False)
    for ax, (what, values) in zip(axes[0], panels):
        rel = [[(v / values[j][j]) if v is not None and values[j][j] else float("nan")
                for j, v in enumerate(row)] for row in values]  # fmt: skip
        im = ax.imshow(rel, cmap="RdYlGn_r", vmin=0.8, vmax=1.2)
        for i in range(n):
            for j in range(n):
                v = values[i][j]
                text = "—" if v is None else f"{v / 1000:.2f} ms\n{rel[i][j]:.2f}×"
                ax.text(j, i, text, ha="center", va="center", fontsize=8)
        short = [lab.replace("_", "\n", 1) for lab in labels]
        ax.set_xticks(range(n), short, fontsize=7)
        ax.set_yticks(range(n), short, fontsize=7)
        ax.set_xlabel("run on (LUT)")
        ax.set_ylabel("searched on (LUT)")
        ax.set_title(f"{what}: latency / own arch's", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title or "cross-device latency", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_pareto(
    rows: Sequence[dict],
    reference: Sequence[dict],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """Accuracy against predicted latency: the sweep's points (`predicted_latency_ms`,
    `front_accuracy`, `dominated`, the swept value in the row's first column), the front joined,
    dominated points hollow; the random reference (`predicted_latency_ms`,
    `trained_test_accuracy`) as grey crosses."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    if reference:
        ax.scatter([r["predicted_latency_ms"] for r in reference], [r["trained_test_accuracy"] for r in reference],
                   marker="x", color="0.55", label="random archs of matching latency")  # fmt: skip
    front = sorted((r for r in rows if not r["dominated"]), key=lambda r: r["predicted_latency_ms"])
    ax.plot([r["predicted_latency_ms"] for r in front], [r["front_accuracy"] for r in front], "-o",
            color="tab:blue", label="searched (front)")  # fmt: skip
    dom = [r for r in rows if r["dominated"]]
    if dom:
        ax.scatter([r["predicted_latency_ms"] for r in dom], [r["front_accuracy"] for r in dom],
                   facecolors="none", edgecolors="tab:blue", label="searched (dominated)")  # fmt: skip
    for r in rows:
        key = next(iter(r))
        ax.annotate(f"{key} {r[key]:g}", (r["predicted_latency_ms"], r["front_accuracy"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")  # fmt: skip
    ax.set_xlabel("predicted latency on the LUT's device (ms)")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or "accuracy against latency", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
