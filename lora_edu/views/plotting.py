"""Small plotting helpers shared by the notebooks (matrices as annotated heatmaps)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def cell_label(v: float, decimals: int = 2) -> str:
    """``v`` rounded to ``decimals``, trailing zeros dropped; a value that rounds to zero is "0", never "-0"."""
    text = f"{v:.{decimals}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "0", "-0") else text


def heatmaps(matrices: dict[str, np.ndarray], annotate: bool = True, decimals: int = 2, cmap: str = "coolwarm",
             width: float = 2.6, xlabel: str | None = None, ylabel: str | None = None, fontsize: float = 8):
    """One annotated heatmap per matrix, side by side, on a shared symmetric colour scale with one colour bar.

    A shared scale makes sizes comparable across panels (ΔW is small next to W); values are
    written in each cell (``decimals`` as the notebook prints them) so the picture and the printed
    matrices say the same thing. ``xlabel``/``ylabel`` name what the columns and rows index.
    """
    arrays = {name: np.atleast_2d(np.asarray(m, dtype=float)) for name, m in matrices.items()}
    vmax = max(float(np.abs(a).max()) for a in arrays.values()) or 1.0
    fig, axes = plt.subplots(1, len(arrays), figsize=(width * len(arrays) + 0.8, width * 1.05), squeeze=False,
                             layout="constrained")
    for ax, (name, a) in zip(axes[0], arrays.items()):
        image = ax.imshow(a, cmap=cmap, vmin=-vmax, vmax=vmax)
        ax.set_title(f"{name}  ({a.shape[0]}×{a.shape[1]})", fontsize=10)
        ax.set_xticks(range(a.shape[1]))
        ax.set_yticks(range(a.shape[0]))
        if xlabel:
            ax.set_xlabel(xlabel, fontsize=8)
        if ylabel and ax is axes[0][0]:
            ax.set_ylabel(ylabel, fontsize=8)
        if annotate:
            for (i, j), v in np.ndenumerate(a):
                ax.text(j, i, cell_label(v, decimals), ha="center", va="center", fontsize=fontsize)
    fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="value")
    return fig
