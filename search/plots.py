"""Plots of a search run: softmax(θ) per layer as a heat map."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

__all__ = ["plot_theta"]


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
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
