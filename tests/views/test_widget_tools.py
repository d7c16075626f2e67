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


def test_still_is_a_png_of_the_views_figure_as_it_is_now():
    import numpy as np
    from IPython.display import Image as IPythonImage

    from lora_edu.views.rank_views import rank_explorer
    from lora_edu.views.widget_tools import still

    view = rank_explorer(np.diag([3.0, 2.0, 1.0, 0.5]), r=2)
    picture = still(view)
    assert isinstance(picture, IPythonImage) and picture.format == "png"
    width, height = Image.open(io.BytesIO(picture.data)).size
    assert (width, height) == (1000, 310)  # the view's figure: 10×3.1 inches at 100 dpi
    assert still(small_figure()).data != picture.data


def test_still_refuses_a_widget_without_a_figure_and_says_what_to_do():
    import pytest

    from lora_edu.views.widget_tools import still

    with pytest.raises(TypeError, match="draw its picture with matplotlib"):
        still(widgets.IntSlider())
