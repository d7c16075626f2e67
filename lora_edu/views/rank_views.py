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

DPI = 72  # small PNGs keep every redraw fast


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
    fig.tight_layout()

    def draw(r):
        approx_im.set_data(np.clip(svd.approx(r), 0, 1))
        ax2.set_title(f"rank {r}")
        lora, full = svd.parameters(r)
        return (f"<b>r = {r}</b>: relative error {svd.relative_error(r):.1%} · {lora:,} numbers instead of {full:,} "
                f"({lora / full:.1%})")

    return _view({"r": w.IntSlider(r, min=1, max=min(image.shape) // 2, description="image rank")}, draw, fig)


def alpha_explorer(curves: dict[str, dict[int, np.ndarray]], alpha: float = 16.0, r: int = 8) -> w.VBox:
    """α and r sliders: the scale under α/r and α/√r, and cached training curves at each rank."""
    ranks = sorted(curves["alpha/r"])
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(11, 3.1), dpi=DPI)
    plt.close(fig)
    grid = np.arange(1, max(ranks) + 1)
    line_r, = ax1.loglog(grid, alpha / grid, label="α/r (LoRA)")
    line_sqrt, = ax1.loglog(grid, alpha / np.sqrt(grid), label="α/√r (rsLoRA)")
    dot_r, = ax1.plot([r], [alpha / r], "o", color=line_r.get_color())
    dot_sqrt, = ax1.plot([r], [alpha / np.sqrt(r)], "o", color=line_sqrt.get_color())
    ax1.set(xlabel="rank r", ylabel="scale s", title="the scale", ylim=(0.01, 100))
    ax1.set_xticks(ranks, [str(k) for k in ranks])           # fixed ticks: no re-ticking on each redraw
    ax1.set_yticks([0.01, 0.1, 1, 10, 100], ["0.01", "0.1", "1", "10", "100"])
    ax1.minorticks_off()
    ax1.legend(fontsize=8)
    lines = {}
    for ax, rule, title in ((ax2, "alpha/r", "training with s = α/r"), (ax3, "alpha/sqrt(r)", "with s = α/√r")):
        for rank in ranks:
            lines[rule, rank], = ax.plot(curves[rule][rank], label=f"r={rank}", lw=1)
        ax.set(xlabel="step", ylabel="loss", title=title + f" (α={alpha:g})")
        ax.set_xticks([0, len(curves[rule][ranks[0]]) - 1])
    ax2.legend(fontsize=7, ncols=2)  # one legend serves both panels
    fig.tight_layout()

    def draw(alpha_value, r):
        line_r.set_ydata(alpha_value / grid)
        line_sqrt.set_ydata(alpha_value / np.sqrt(grid))
        dot_r.set_data([r], [alpha_value / r])
        dot_sqrt.set_data([r], [alpha_value / np.sqrt(r)])
        nearest = min(ranks, key=lambda k: abs(k - r))
        for (_rule, rank), line in lines.items():
            line.set_linewidth(3 if rank == nearest else 1)
            line.set_alpha(1 if rank == nearest else 0.35)
        return (f"<b>α = {alpha_value:g}, r = {r}</b>: s = α/r = {alpha_value / r:.3g}, rsLoRA's s = α/√r = "
                f"{alpha_value / np.sqrt(r):.3g}. Bold curves: r = {nearest} (the cached run nearest to r, at α = {alpha:g}).")

    sliders = {"alpha_value": w.FloatSlider(alpha, min=1, max=64, step=1, description="α"),
               "r": w.IntSlider(r, min=1, max=max(ranks), description="rank r")}
    return _view(sliders, draw, fig)
