"""Static figures of notebook 09: the LoRA paper's analyses drawn from :mod:`lora_edu.lessons.paper_analyses` results.

Each function draws on a Matplotlib ``Axes`` it is given and returns it, so a notebook lays out
its own figure and a test can draw into an off-screen one.
"""
from __future__ import annotations

import numpy as np

from lora_edu.lessons.paper_analyses import FULL


def _set_name(targets: tuple[str, ...]) -> str:
    return " + ".join(targets)


def grid_heatmap(ax, cells: dict, full: dict, rows, ranks, title: str):
    """Test accuracy for each target set (rows) × rank (columns), full fine-tuning alone in the far corner.

    ``cells[(targets, r)]`` and ``full``: dicts with ``mean``, ``lo`` and ``hi`` (over seeds). Each cell
    shows the mean and, below it, the range over the seeds, so that a difference smaller than the
    range is visibly not one; cells not trained stay blank (grey).
    """
    def label(v):
        return f"{v['mean']:.1%}\n{100 * v['lo']:.1f}–{100 * v['hi']:.1f}"

    acc = np.full((len(rows) + 1, len(ranks) + 1), np.nan)
    for i, t in enumerate(rows):
        for j, r in enumerate(ranks):
            v = cells[tuple(t), r]
            acc[i, j] = v["mean"]
            ax.text(j, i, label(v), ha="center", va="center", fontsize=7, color="white" if v["mean"] < 0.6 else "black")
    acc[-1, -1] = full["mean"]
    ax.text(len(ranks), len(rows), label(full), ha="center", va="center", fontsize=7)
    image = ax.imshow(np.ma.masked_invalid(acc), cmap=_cmap_with_grey(), vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(ranks) + 1), [f"r = {r}" for r in ranks] + ["every weight"])
    ax.set_yticks(range(len(rows) + 1), [_set_name(t) for t in rows] + ["full fine-tuning"])
    ax.set(xlabel="rank (LoRA) → full fine-tuning", ylabel="layers adapted", title=title)
    return image


def _cmap_with_grey():
    import matplotlib.pyplot as plt

    return plt.get_cmap("viridis").with_extremes(bad="#eeeeee")   # cells not trained: light grey


def budget_bars(ax, rows: list[dict], budget: int, epochs: tuple[int, int]):
    """One pair of horizontal bars per target set at a fixed budget: mean accuracy after each of two epochs, seed range as whiskers.

    ``rows``: dicts with ``targets``, ``r``, ``trainable`` and, per epoch e of ``epochs``, ``(mean, lo, hi)``
    under key e. Sorted by the later epoch's mean; blue one layer, green several; the lighter bar is the earlier epoch.
    """
    early, late = epochs
    order = sorted(rows, key=lambda row: row[late][0])
    y = np.arange(len(order))
    for offset, epoch, alpha in ((-0.2, early, 0.45), (0.2, late, 1.0)):
        means = np.array([row[epoch][0] for row in order])
        errors = np.array([[row[epoch][0] - row[epoch][1] for row in order], [row[epoch][2] - row[epoch][0] for row in order]])
        ax.barh(y + offset, means, height=0.38, xerr=errors, alpha=alpha, capsize=2,
                color=["#4C72B0" if len(row["targets"]) == 1 else "#55A868" for row in order],
                label=f"after {epoch} epochs")
        for k, (m, hi) in enumerate(zip(means, means + errors[1])):
            ax.text(hi + 0.015, k + offset, f"{m:.1%}", va="center", fontsize=6)   # right of the whisker
    ax.set_yticks(y, [f"{_set_name(tuple(row['targets']))} (r = {row['r']}, {row['trainable']:,})" for row in order], fontsize=8)
    ax.set(xlim=(0, 1.12), xlabel="rotated-digits test accuracy (mean of the seeds; whiskers: their range)",
           title=f"At most {budget:,} trainable numbers (blue: one layer, green: several)")
    ax.legend(fontsize=7, loc="lower right")
    return ax


def similarity_heatmap(ax, grid: np.ndarray, title: str, i_label: str = "i", j_label: str = "j"):
    """φ(·, ·, i, j) as an image, i down the rows and j along the columns (the paper's Figure 3 layout)."""
    image = ax.imshow(grid, cmap="magma", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_yticks(range(grid.shape[0]), range(1, grid.shape[0] + 1), fontsize=7)
    step = max(1, grid.shape[1] // 8)
    ax.set_xticks(range(0, grid.shape[1], step), range(1, grid.shape[1] + 1, step), fontsize=7)
    ax.set(title=title, ylabel=i_label, xlabel=j_label)
    return image


def tradeoff(ax, runs: list[dict], epochs, start: tuple[float, float] | None = None) -> None:
    """Learning against forgetting: each run's path (new-task accuracy, original-task accuracy) over ``epochs``.

    The last epoch is a filled marker (a square for full fine-tuning). ``start``, the pretrained
    model's (new, original) accuracies, if given, is drawn as a star and every path begins there:
    without it a learner cannot see that the first epoch already costs most of the forgetting.
    """
    for run in runs:
        is_full = run["spec"].targets == (FULL,)
        xs, ys = list(run["history"]), list(run["original_history"])
        if start is not None:
            xs, ys = [start[0], *xs], [start[1], *ys]
        line, = ax.plot(xs, ys, "-" if is_full else "--", lw=2 if is_full else 1,
                        color="black" if is_full else None, alpha=0.8)
        ax.plot(xs[-1], ys[-1], "s" if is_full else "o", color=line.get_color(), label=run["label"])
    if start is not None:
        ax.plot(*start, "*", color="gray", markersize=12, label="pretrained model", zorder=3)
    first, last = epochs[0], epochs[-1]
    ax.set(xlabel="new task: rotated-digits test accuracy", ylabel="original task: upright-digits test accuracy",
           title=f"Learning against forgetting, {'pretrained' if start is not None else f'epoch {first}'} → epoch {last}",
           xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="upper right")
