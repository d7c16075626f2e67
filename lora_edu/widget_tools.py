"""Helpers for widgets that redraw a picture, the same in JupyterLab, VS Code and under nbval.

Why not ``with output: display(fig)``? That capture is done by the *front end*: nbval and other
headless runners do not do it, so the figure lands in the cell's own output and strict nbval
reports it. Setting the ``Output`` widget's ``outputs`` directly works everywhere.
"""
from __future__ import annotations

import ipywidgets as widgets
from IPython.core.interactiveshell import InteractiveShell


def show_in(output: widgets.Output, obj) -> None:
    """Replace what ``output`` shows with ``obj`` (a figure, HTML, anything IPython can display)."""
    data, metadata = InteractiveShell.instance().display_formatter.format(obj)
    output.outputs = ({"output_type": "display_data", "data": data, "metadata": metadata},)
