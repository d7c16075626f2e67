"""Widgets redraw by replacing an Output widget's outputs: check the PNG and the replacement."""
import base64
import io

import ipywidgets as widgets
import matplotlib
from matplotlib.figure import Figure
from PIL import Image

from lora_edu.views.widget_tools import figure_png, show_in

matplotlib.use("Agg")


def small_figure(dpi=100):
    fig = Figure(figsize=(2, 1), dpi=dpi)
    fig.add_subplot().plot([0, 1], [1, 0])
    return fig


def test_figure_png_is_a_png_at_the_figures_size_and_dpi():
    image = Image.open(io.BytesIO(base64.b64decode(figure_png(small_figure(dpi=100)))))
    assert image.format == "PNG" and image.size == (200, 100)


def test_show_in_replaces_what_the_output_shows():
    out = widgets.Output()
    show_in(out, small_figure())
    show_in(out, small_figure())
    assert len(out.outputs) == 1 and "image/png" in out.outputs[0]["data"]
    show_in(out, "just text")
    assert len(out.outputs) == 1 and out.outputs[0]["data"]["text/plain"] == "'just text'"
