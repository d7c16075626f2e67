"""Small plotting helpers shared by the notebooks (matrices as annotated heatmaps)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def heatmaps(matrices: dict[str, np.ndarray], annotate: bool = True, decimals: int = 2, cmap: str = "coolwarm", width: float = 2.6):
    """One annotated heatmap per matrix, side by side, on a shared symmetric colour scale.

    A shared scale makes sizes comparable across panels (ΔW is small next to W); values are
    written in each cell so the picture and the printed matrices say the same thing.
    """
    arrays = {name: np.atleast_2d(np.asarray(m, dtype=float)) for name, m in matrices.items()}
    vmax = max(float(np.abs(a).max()) for a in arrays.values()) or 1.0
    fig, axes = plt.subplots(1, len(arrays), figsize=(width * len(arrays), width * 0.95), squeeze=False)
    for ax, (name, a) in zip(axes[0], arrays.items()):
        ax.imshow(a, cmap=cmap, vmin=-vmax, vmax=vmax)
        ax.set_title(f"{name}  ({a.shape[0]}×{a.shape[1]})", fontsize=10)
        ax.set_xticks(range(a.shape[1]))
        ax.set_yticks(range(a.shape[0]))
        if annotate:
            for (i, j), v in np.ndenumerate(a):
                ax.text(j, i, f"{v:.{decimals}f}".rstrip("0").rstrip(".") if v else "0", ha="center", va="center", fontsize=8)
    fig.tight_layout()
    return fig
