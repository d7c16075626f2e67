"""Small plotting helpers shared by the notebooks: matrices as annotated heatmaps, the LoRA picture, LoRA's count against r,
two libraries' outputs against each other."""
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


#: What the LoRA picture writes for each convention: (matrix applied first, matrix applied last, W, formula).
#: One convention, the course's: PEFT's and the paper's names.
LORA_DIAGRAM_LABELS = {
    "peft": ("A = lora_A   (r×in)\ndown-projection\nrandom at start",
             "B = lora_B   (out×r)\nup-projection\nzero at start",
             "W   (out×in)\npretrained, frozen",
             "h = x·Wᵀ + (α/r)·x·Aᵀ·Bᵀ   (ΔW = B·A)"),
}


def lora_diagram(convention: str = "peft", r_label: str = "r"):
    """The LoRA picture: the frozen path through W beside the trainable path down to rank r and back up.

    Drawn once here and shown in notebooks 02 and 05, in the course's one convention, PEFT's
    (:data:`LORA_DIAGRAM_LABELS`): A = ``lora_A``, applied first, projects down to rank r; B = ``lora_B``,
    applied last, projects back up and starts at zero, so the layer starts equal to the pretrained one.
    """
    from matplotlib.patches import FancyArrowPatch, Polygon, Rectangle

    if convention not in LORA_DIAGRAM_LABELS:
        raise ValueError(f"unknown convention {convention!r}; choose one of {sorted(LORA_DIAGRAM_LABELS)} "
                         "(the course uses PEFT's lora_A/lora_B names throughout).")
    first, last, frozen, formula = LORA_DIAGRAM_LABELS[convention]
    fig, ax = plt.subplots(figsize=(7.2, 4.4), dpi=100)
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    ax.axis("off")

    def arrow(x0, y0, x1, y1):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12, lw=1.2, color="0.25"))

    ax.add_patch(Rectangle((1.0, 3.0), 2.6, 3.6, facecolor="#c9d6ea", edgecolor="0.3"))       # W: frozen
    ax.text(2.3, 4.8, frozen, ha="center", va="center", fontsize=9)
    ax.add_patch(Polygon([(5.2, 3.0), (8.2, 3.0), (7.1, 4.7), (6.3, 4.7)], facecolor="#f3d9b1", edgecolor="0.3"))
    ax.text(8.4, 3.85, first, ha="left", va="center", fontsize=8.5)                          # down-projection
    ax.add_patch(Polygon([(6.3, 4.9), (7.1, 4.9), (8.2, 6.6), (5.2, 6.6)], facecolor="#b9e0c0", edgecolor="0.3"))
    ax.text(8.4, 5.75, last, ha="left", va="center", fontsize=8.5)                           # up-projection
    ax.text(6.15, 4.8, f"rank {r_label}", ha="right", va="center", fontsize=9, fontweight="bold")
    ax.text(2.3, 1.0, "x  (input)", ha="center", va="center", fontsize=10)
    ax.text(6.7, 7.25, "× α/r", ha="center", va="center", fontsize=9)
    ax.text(4.5, 9.3, "output = frozen path + trainable path", ha="center", va="center", fontsize=10)
    ax.text(4.5, 8.4, "+", ha="center", va="center", fontsize=16,
            bbox=dict(boxstyle="circle", facecolor="white", edgecolor="0.3"))
    arrow(2.3, 1.4, 2.3, 3.0)
    arrow(2.3, 1.4, 6.7, 3.0)
    arrow(2.3, 6.6, 4.2, 8.2)
    arrow(6.7, 6.6, 6.7, 7.0)
    arrow(6.7, 7.5, 4.8, 8.2)
    ax.text(4.5, 0.25, formula, ha="center", va="center", fontsize=9.5)
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value, not again by the inline backend at the cell's end
    return fig


def lora_count_figure(d: int = 4096, k: int = 4096, r: int = 8, max_r: int = 256):
    """LoRA's trainable numbers r·(d + k) for one d×k weight against the rank, beside the full d·k: notebook 00's slider, still.

    The slider of notebook 00 prints the count at one r; this draws every r up to ``max_r`` at once
    (log scale: the gap to d·k is orders of magnitude) and marks ``r``, so a reader who cannot move
    the slider (GitHub) sees the same numbers.
    """
    for name, value in (("d", d), ("k", k), ("r", r), ("max_r", max_r)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if r > max_r:
        raise ValueError(f"r = {r} is beyond the drawn range max_r = {max_r}; raise max_r or lower r.")
    ranks = np.arange(1, max_r + 1)
    fig, ax = plt.subplots(figsize=(6.4, 3.0), dpi=100)
    ax.semilogy(ranks, ranks * (d + k), label="LoRA: r·(d + k)")
    ax.axhline(d * k, color="0.3", ls="--", label=f"full update: d·k = {d * k:,}")
    ax.plot([r], [r * (d + k)], "o", color="#C44E52")
    ax.annotate(f"r = {r}: {r * (d + k):,} ({r * (d + k) / (d * k):.2%} of d·k)", (r, r * (d + k)),
                textcoords="offset points", xytext=(8, -14), fontsize=9)
    ax.set(xlabel="rank r", ylabel="trainable numbers (log scale)", title=f"One {d}×{k} weight: what LoRA trains at rank r")
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


RANDOM_COMPARISON = "random matrix, same shape and norm"


def update_spectrum_figure(updates: dict, ranks=(1, 2, 4, 8, 16, 32), random_comparison: bool = False):
    """Notebook 00's picture of why a low-rank update can be enough: the share of a matrix that rank r keeps.

    One picture, one idea: a first-contact reader follows one curve per matrix more easily than two panels, so
    only the share is drawn (the singular values themselves are a deep dive's printout). ``updates`` maps a label
    to a 2-D matrix (a tensor or an array), e.g. a real fine-tuning update ΔW. Each curve is the share of the
    matrix (of its squared Frobenius norm) that its best rank-r approximation keeps, (σ₁² + … + σᵣ²) / Σσ²
    (Eckart–Young), with ``ranks`` marked, and their percentages written, on the first curve.

    ``random_comparison=True`` adds a random matrix of the same shape and norm as the first one, labelled
    ``RANDOM_COMPARISON``: ``torch.randn_like`` from torch's global generator, scaled to the first matrix's norm
    (so a seeded notebook draws the same matrix it drew before this argument existed). The figure's ``matrices``
    attribute holds every matrix drawn, by label, for printing their shares.
    """
    if not updates:
        raise ValueError("pass at least one matrix, e.g. {'ΔW': delta}")
    updates = dict(updates)
    if random_comparison:
        import torch

        first = next(iter(updates.values()))
        first = first.detach() if hasattr(first, "detach") else torch.as_tensor(np.asarray(first))
        noise = torch.randn_like(first)
        noise *= first.norm() / noise.norm()                 # random, same shape and norm
        updates[RANDOM_COMPARISON] = noise
    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=100)
    for i, (label, matrix) in enumerate(updates.items()):
        m = np.asarray(matrix.detach().cpu() if hasattr(matrix, "detach") else matrix, dtype=float)
        if m.ndim != 2 or not np.abs(m).sum():
            raise ValueError(f"{label!r}: need a non-zero 2-D matrix, got shape {m.shape}")
        sv = np.linalg.svd(m, compute_uv=False)
        kept = np.cumsum(sv**2) / np.sum(sv**2)
        index = np.arange(1, len(sv) + 1)
        ax.plot(index, kept, label=label)
        if i == 0:
            marks = [r for r in ranks if r <= len(sv)]
            ax.plot(marks, kept[np.array(marks) - 1], "o", color="C0", ms=4)
            for r in marks:
                ax.annotate(f"{kept[r - 1]:.0%}", (r, kept[r - 1]), textcoords="offset points", xytext=(-4, 6), fontsize=7)
    ax.set(xscale="log", xlabel="rank r (log scale)", ylabel="share of ‖ΔW‖² kept", ylim=(0, 1.05),
           title="What the best rank-r approximation keeps")
    ax.set_xticks([r for r in (1, 2, 4, 8, 16, 32, 64, 128) if r <= len(sv)])
    ax.xaxis.set_major_formatter(plt.matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_locator(plt.matplotlib.ticker.NullLocator())
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.matrices = updates
    plt.close(fig)  # shown once, as the cell's value
    return fig


def digits_figure(upright, rotated, n: int = 3):
    """Notebook 05's picture of its task: the first ``n`` test digits upright, then the same ``n`` rotated, with labels.

    ``upright`` and ``rotated`` are ``lora_edu.digits_task`` splits (``x_test`` rows of 64 pixels, ``y_test``
    labels); the picture shows what the new task asks of a network pretrained on upright digits.
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= min(len(upright.x_test), len(rotated.x_test)):
        raise ValueError(f"n must be an int from 1 to the number of test digits, got {n!r}; use e.g. n=3.")
    fig, axes = plt.subplots(1, 2 * n, figsize=(7 * n / 3, 1.4))
    for i, ax in enumerate(axes):
        name, data = ("upright", upright) if i < n else ("rotated", rotated)
        ax.imshow(np.asarray(data.x_test[i % n]).reshape(8, 8), cmap="gray_r")
        ax.set_title(f"{name} {int(data.y_test[i % n])}", fontsize=8)
        ax.axis("off")
    plt.close(fig)  # shown once, as the cell's value
    return fig


def agreement_figure(agreement: dict, tolerance: float, names: tuple[str, str] = ("PEFT", "lora_edu")):
    """Two scatters on the diagonal: the two libraries' logits, and what their adapters add to the base model's.

    ``agreement`` is :func:`lora_edu.lessons.pitfalls.logit_agreement`'s dict. Points on the dashed diagonal
    mean equal values; each title states the largest difference against ``tolerance``, so the picture and
    the printed check say the same thing. The right panel matters: the adapters' change is small next to the
    logits, and only its own scatter shows that the adapters, not just the shared base, agree.
    """
    theirs, mine = names
    diff = float(np.abs(agreement["ours"] - agreement["peft"]).max())
    change_diff = float(np.abs(agreement["change_ours"] - agreement["change_peft"]).max())
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    panels = ((agreement["peft"], agreement["ours"], "logits", diff),
              (agreement["change_peft"], agreement["change_ours"], "what the adapters add (adapted − base logits)", change_diff))
    for ax, (x, y, what, largest) in zip(axes, panels):
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], "--", color="0.6", lw=1, label="equal (the diagonal)")
        ax.scatter(x, y, s=4, alpha=0.4, color="tab:blue", label=f"{x.size:,} values")
        ax.set_xlabel(f"{theirs}")
        ax.set_ylabel(f"{mine}")
        ax.set_title(f"{what}\nlargest |difference| {largest:.1g} (tolerance {tolerance:g})", fontsize=10)
        ax.legend(loc="upper left", fontsize=8)
    return fig


def loss_curves(curves: dict, title: str = "", log: bool = True):
    """Notebook 03's picture of training runs: one loss curve per run, ``{label: [loss at step 0, 1, …]}``.

    The losses are drawn against the step on a log scale (``log=True``), where a run that keeps shrinking its
    loss by a constant factor is a straight line.
    """
    if not curves:
        raise ValueError("pass at least one run, e.g. {'B = 0': losses}")
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for label, losses in curves.items():
        if len(losses) < 2:
            raise ValueError(f"{label!r}: need the loss at two steps or more, got {len(losses)}")
        ax.plot(losses, label=label)
    ax.set(xlabel="step", ylabel="loss (log scale)" if log else "loss", yscale="log" if log else "linear", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig
