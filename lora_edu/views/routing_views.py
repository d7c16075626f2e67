"""Notebook 10's picture: confusion matrices of the message router, zero-shot and with its adapter, side by side."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def confusion_figure(matrices: dict[str, np.ndarray], labels: list[str]):
    """One panel per matrix (title -> counts, row = true team, column = chosen team), on one colour scale.

    The diagonal holds the messages routed right; each cell is annotated with its count, so the picture reads
    without the colour bar. Returns the figure.
    """
    if not matrices:
        raise ValueError("give at least one confusion matrix, e.g. {'zero-shot': counts}.")
    shapes = {np.asarray(m).shape for m in matrices.values()}
    if shapes != {(len(labels), len(labels))}:
        raise ValueError(f"every matrix must be {len(labels)}×{len(labels)} (one row and column per label), got {sorted(shapes)}.")
    top = max(int(np.asarray(m).max()) for m in matrices.values())
    fig, axes = plt.subplots(1, len(matrices), figsize=(3.4 * len(matrices), 3.3), squeeze=False)
    for ax, (title, counts) in zip(axes[0], matrices.items()):
        counts = np.asarray(counts)
        ax.imshow(counts, cmap="Blues", vmin=0, vmax=max(top, 1))
        for (i, j), n in np.ndenumerate(counts):
            ax.text(j, i, str(n), ha="center", va="center", color="white" if n > top / 2 else "black", fontsize=9)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("team chosen")
        right = int(np.trace(counts))
        ax.set_title(f"{title}: {right} of {int(counts.sum())} right", fontsize=10)
    axes[0][0].set_ylabel("true team")
    fig.tight_layout()
    return fig
