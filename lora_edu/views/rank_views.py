"""The sliders of notebook 04: rank as a dial, an image at rank r, α as a volume knob.

Each builder draws its figure once and, on every slider move, only updates the artists' data
and re-renders; every redraw is timed (``view.timings``, in seconds) so the notebook and the
tests can report that it stays under 100 ms. Returns an ipywidgets box with ``.update``,
``.sliders`` and ``.label`` attached, so tests and the browser test can drive it.
"""
from __future__ import annotations

import time

import ipywidgets as w
import matplotlib.pyplot as plt
import numpy as np

from lora_edu.core.lowrank import TruncatedSVD
from lora_edu.views.widget_tools import show_in

DPI = 100  # the house minimum for widget figures; notebook 04 times every redraw at this dpi


def _view(sliders: dict[str, w.Widget], draw, fig) -> w.VBox:
    """Wire sliders to ``draw(**values) -> label text``, time each redraw, show the figure."""
    label, out = w.HTML(), w.Output()
    timings: list[float] = []

    def update(change=None):
        start = time.perf_counter()
        label.value = draw(**{name: s.value for name, s in sliders.items()})
        show_in(out, fig)
        timings.append(time.perf_counter() - start)

    for s in sliders.values():
        s.observe(update, names="value")
    update()
    box = w.VBox([w.HBox(list(sliders.values())), label, out])
    box.add_class("lora-edu-view")  # lets the browser test find a slider's label and figure
    box.update, box.sliders, box.label, box.timings, box.figure = update, sliders, label, timings, fig
    return box


def rank_explorer(target: np.ndarray, r: int = 4, name: str = "ΔW") -> w.VBox:
    """A rank slider over the best rank-r approximation of ``target``: heatmaps, spectrum, error, parameters."""
    svd = TruncatedSVD(target)
    n = len(svd.S)
    vmax = float(np.percentile(np.abs(target), 99)) or 1.0   # a few outliers must not wash out the picture
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(10, 3.1), dpi=DPI)
    plt.close(fig)
    ax1.imshow(target, cmap="coolwarm", vmin=-vmax, vmax=vmax)
    ax1.set_title(f"{name} ({target.shape[0]}×{target.shape[1]})")
    approx_im = ax2.imshow(svd.approx(r), cmap="coolwarm", vmin=-vmax, vmax=vmax)
    shown = svd.S > svd.S[0] * 1e-10                          # leave out the numerically-zero tail
    ax3.semilogy(np.arange(1, n + 1)[shown], svd.S[shown], ".-", ms=3)
    ax3.set(xlabel="index i", ylabel="singular value σᵢ", title="spectrum")
    cut = ax3.axvline(r + 0.5, color="#C44E52")
    for ax in (ax1, ax2):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()

    def draw(r):
        approx_im.set_data(svd.approx(r))
        ax2.set_title(f"best rank-{r} approximation")
        cut.set_xdata([r + 0.5, r + 0.5])
        lora, full = svd.parameters(r)
        return (f"<b>r = {r}</b>: relative error {svd.relative_error(r):.1%} · LoRA stores r·(d+k) = {lora:,} numbers "
                f"against d·k = {full:,} ({lora / full:.0%})")

    return _view({"r": w.IntSlider(r, min=1, max=n, description="rank r", continuous_update=True)}, draw, fig)


def image_explorer(image: np.ndarray, r: int = 10) -> w.VBox:
    """A grayscale picture as a matrix, shown at rank r: how many directions a rank buys."""
    svd = TruncatedSVD(image)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(7, 4.2), dpi=DPI)
    plt.close(fig)
    ax1.imshow(image, cmap="gray", vmin=0, vmax=1)
    ax1.set_title(f"original ({image.shape[0]}×{image.shape[1]})")
    approx_im = ax2.imshow(svd.approx(r), cmap="gray", vmin=0, vmax=1)
    for ax in (ax1, ax2):
        ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.92, wspace=0.04)  # room for the titles

    def draw(r):
        approx_im.set_data(np.clip(svd.approx(r), 0, 1))
        ax2.set_title(f"rank {r}")
        lora, full = svd.parameters(r)
        return (f"<b>r = {r}</b>: relative error {svd.relative_error(r):.1%} · {lora:,} numbers instead of {full:,} "
                f"({lora / full:.1%})")

    return _view({"r": w.IntSlider(r, min=1, max=min(image.shape) // 2, description="image rank")}, draw, fig)


def alpha_explorer(sweep: dict, alpha: float = 16, r: int = 8, optimizer: str = "adam") -> w.VBox:
    """α, rank and optimizer controls over *trained* runs: every curve shown was trained at the α shown.

    ``sweep`` is :func:`lora_edu.lessons.rank_experiments.scaling_sweep`'s ``{optimizer: {rule: {α: {r:
    losses}}}}``; the α slider offers only the α values that were trained (nothing is rescaled).
    """
    optimizers = list(sweep)
    alphas = sorted(sweep[optimizers[0]]["alpha/r"])
    ranks = sorted(sweep[optimizers[0]]["alpha/r"][alphas[0]])
    steps = len(sweep[optimizers[0]]["alpha/r"][alphas[0]][ranks[0]]) - 1
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(11, 3.2), dpi=DPI)
    plt.close(fig)
    grid = np.arange(1, max(ranks) + 1)
    line_r, = ax1.loglog(grid, alpha / grid, label="α/r (LoRA)")
    line_sqrt, = ax1.loglog(grid, alpha / np.sqrt(grid), label="α/√r (rsLoRA)")
    ax1.axhline(2, color="gray", lw=1, ls="--", label="α = 2r: s = 2")
    dot_r, = ax1.plot([r], [alpha / r], "o", color=line_r.get_color())
    dot_sqrt, = ax1.plot([r], [alpha / np.sqrt(r)], "o", color=line_sqrt.get_color())
    ax1.set(xlabel="rank r", ylabel="scale s", title="the scale s", ylim=(0.01, 100))
    ax1.set_xticks(ranks, [str(k) for k in ranks])           # fixed ticks: no re-ticking on each redraw
    ax1.set_yticks([0.01, 0.1, 1, 10, 100], ["0.01", "0.1", "1", "10", "100"])
    ax1.minorticks_off()
    ax1.legend(fontsize=7)
    lines, titles = {}, {}
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(ranks)))
    for ax, rule in ((ax2, "alpha/r"), (ax3, "alpha/sqrt(r)")):
        for rank, color in zip(ranks, colors):
            lines[rule, rank], = ax.plot(np.arange(steps + 1), sweep[optimizer][rule][alpha][rank], label=f"r={rank}",
                                         lw=1, color=color)
        ax.set(xlabel="step", ylabel="loss ½‖s·B·A − ΔW*‖²", ylim=(0, 0.55), xlim=(0, steps))
        titles[rule] = ax.set_title("")
    ax2.legend(fontsize=7, ncols=2)  # one legend serves both panels
    fig.tight_layout()
    names = {"alpha/r": "s = α/r", "alpha/sqrt(r)": "s = α/√r"}
    opt_names = {"adam": "Adam", "sgd": "plain GD"}

    def draw(alpha_value, r, optimizer):
        line_r.set_ydata(alpha_value / grid)
        line_sqrt.set_ydata(alpha_value / np.sqrt(grid))
        dot_r.set_data([r], [alpha_value / r])
        dot_sqrt.set_data([r], [alpha_value / np.sqrt(r)])
        diverged = []
        for (rule, rank), line in lines.items():
            curve = sweep[optimizer][rule][alpha_value][rank]
            line.set_ydata(curve)
            line.set_linewidth(3 if rank == r else 1)
            line.set_alpha(1 if rank == r else 0.45)
            if not np.isfinite(curve[-1]):
                diverged.append(f"{names[rule]}, r = {rank}")
        for rule, title in titles.items():
            title.set_text(f"{opt_names[optimizer]}, {names[rule]}, α = {alpha_value:g}")
        finals = {rule: sweep[optimizer][rule][alpha_value][r][-1] for rule in names}
        text = (f"<b>α = {alpha_value:g}, r = {r}, {opt_names[optimizer]}</b>: s = α/r = {alpha_value / r:.3g}, "
                f"rsLoRA's s = α/√r = {alpha_value / np.sqrt(r):.3g}; loss after {steps} steps (bold curves): "
                + ", ".join(f"{finals[k]:.3f} with {names[k]}" for k in names)
                + ". Every curve was trained at this α.")
        if diverged:
            text += " Diverged (stopped): " + "; ".join(diverged) + "."
        return text

    sliders = {"alpha_value": w.SelectionSlider(options=alphas, value=alpha, description="α"),
               "r": w.SelectionSlider(options=ranks, value=r, description="LoRA rank"),
               "optimizer": w.ToggleButtons(options=[(opt_names[o], o) for o in optimizers], value=optimizer,
                                            description="optimizer")}
    return _view(sliders, draw, fig)


def time_redraws(view: w.VBox, moves: int = 10) -> np.ndarray:
    """Move each control of ``view`` through up to ``moves`` of its values and back; return the redraw times (ms).

    Works for int sliders (steps from ``min``) and for selection sliders and toggle buttons (their options).
    """
    first = len(view.timings)
    for control in view.sliders.values():
        start = control.value
        if hasattr(control, "options"):
            values = [o[1] if isinstance(o, tuple) else o for o in control.options]
        else:
            values = [control.min + i * control.step for i in range(1, moves + 1) if control.min + i * control.step <= control.max]
        for value in values[:moves]:
            control.value = value
        control.value = start
    return np.array(view.timings[first:]) * 1000
