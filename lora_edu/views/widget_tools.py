"""Helpers for widgets that redraw a picture, the same in JupyterLab, VS Code and under nbval, and their still copies.

Why not ``with output: display(fig)``? That capture is done by the *front end*: nbval and other
headless runners do not do it, so the figure lands in the cell's own output and strict nbval
reports it. Setting the ``Output`` widget's ``outputs`` directly works everywhere.
"""
from __future__ import annotations

import base64
import io

import IPython.display
import ipywidgets as widgets
import numpy as np
from IPython.core.interactiveshell import InteractiveShell
from matplotlib.figure import Figure


def figure_png(fig: Figure, compress_level: int = 1) -> str:
    """The figure as base64 PNG, drawn once at its own size and dpi, quickly compressed.

    ``savefig`` (and IPython's inline display, which also measures a tight bounding box) draws
    the figure twice and compresses hard; a slider's redraw needs neither, so this draws once
    with Agg and lets PIL write a lightly compressed PNG: about three times faster.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(canvas.buffer_rgba())).save(buffer, format="png", compress_level=compress_level)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def show_in(output: widgets.Output, obj) -> None:
    """Replace what ``output`` shows with ``obj`` (a figure, HTML, anything IPython can display)."""
    if isinstance(obj, Figure):
        data, metadata = {"image/png": figure_png(obj), "text/plain": repr(obj)}, {}
    else:
        data, metadata = InteractiveShell.instance().display_formatter.format(obj)
    output.outputs = ({"output_type": "display_data", "data": data, "metadata": metadata},)


def still(view) -> IPython.display.Image:
    """A still PNG of a view's figure as it is now: shown beside a widget, for readers where widgets do not run.

    Why: GitHub and other static renderers show a notebook's ordinary outputs but not its widgets, so a
    figure that lives only inside a widget is invisible there. Called right after building a view, this
    is the widget's starting picture, stored as a normal ``image/png`` output. ``view`` is a view from
    :mod:`lora_edu.views.rank_views` (anything with a ``.figure``) or a matplotlib ``Figure``.
    """
    fig = view if isinstance(view, Figure) else getattr(view, "figure", None)
    if not isinstance(fig, Figure):
        raise TypeError(f"still() needs a view built by lora_edu.views (it has a .figure) or a matplotlib Figure, "
                        f"got {type(view).__name__}; for a widget without a figure, draw its picture with matplotlib.")
    return IPython.display.Image(data=base64.b64decode(figure_png(fig, compress_level=6)), format="png")
