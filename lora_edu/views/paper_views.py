"""Static figures of notebook 09: the LoRA paper's analyses drawn from :mod:`lora_edu.lessons.paper_analyses` results.

Each function draws on a Matplotlib ``Axes`` it is given and returns it, so a notebook lays out
its own figure and a test can draw into an off-screen one.
"""
from __future__ import annotations

import numpy as np

from lora_edu.lessons.paper_analyses import FULL, RunSpec


def _set_name(targets: tuple[str, ...]) -> str:
    return " + ".join(targets)


def grid_heatmap(ax, lookup: dict, rows, ranks, seed: int = 0):
    """Test accuracy for each target set (rows) × rank (columns), full fine-tuning alone in the far corner.

    ``lookup``: :func:`paper_analyses.by_spec` of the results. Each cell shows the accuracy and the
    trainable numbers; cells not trained stay blank (grey).
    """
    full = lookup[RunSpec((FULL,))]
    acc = np.full((len(rows) + 1, len(ranks) + 1), np.nan)
    for i, t in enumerate(rows):
        for j, r in enumerate(ranks):
            run = lookup[RunSpec(tuple(t), r, seed)]
            acc[i, j] = run["accuracy"]
            ax.text(j, i, f"{run['accuracy']:.1%}\n{run['trainable']:,}", ha="center", va="center", fontsize=7,
                    color="white" if run["accuracy"] < 0.6 else "black")
    acc[-1, -1] = full["accuracy"]
    ax.text(len(ranks), len(rows), f"{full['accuracy']:.1%}\n{full['trainable']:,}", ha="center", va="center", fontsize=7)
    cmap = _cmap_with_grey()
    image = ax.imshow(np.ma.masked_invalid(acc), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(ranks) + 1), [f"r = {r}" for r in ranks] + ["every weight"])
    ax.set_yticks(range(len(rows) + 1), [_set_name(t) for t in rows] + ["full fine-tuning"])
    ax.set(xlabel="rank (LoRA) → full fine-tuning", ylabel="layers adapted",
           title="Rotated-digits test accuracy (and trainable numbers)")
    return image


def _cmap_with_grey():
    import matplotlib.pyplot as plt

    return plt.get_cmap("viridis").with_extremes(bad="#eeeeee")   # cells not trained: light grey


def budget_bars(ax, runs: list[dict], budget: int):
    """One horizontal bar per target set at a fixed budget: accuracy, with rank and trainable numbers as labels."""
    order = sorted(runs, key=lambda run: run["accuracy"])
    y = np.arange(len(order))
    ax.barh(y, [run["accuracy"] for run in order], color=["#4C72B0" if len(run["spec"].targets) == 1 else "#55A868"
                                                           for run in order])
    ax.set_yticks(y, [f"{_set_name(run['spec'].targets)} (r = {run['spec'].r})" for run in order], fontsize=8)
    for k, run in enumerate(order):
        ax.text(run["accuracy"] + 0.01, k, f"{run['accuracy']:.1%} · {run['trainable']:,} numbers", va="center", fontsize=7)
    ax.set(xlim=(0, 1.25), xlabel="rotated-digits test accuracy",
           title=f"At most {budget:,} trainable numbers (blue: one layer, green: several)")
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
