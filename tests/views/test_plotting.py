"""Heatmaps share one symmetric colour scale and write every value in its cell."""
import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from lora_edu.views.plotting import heatmaps

matplotlib.use("Agg")


def test_one_panel_per_matrix_on_a_shared_symmetric_scale():
    fig = heatmaps({"W": np.array([[1.0, -2.0], [0.5, 0.0]]), "ΔW": np.array([[0.1, 0.0]])})
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["W  (2×2)", "ΔW  (1×2)"]
    assert all(ax.images[0].get_clim() == (-2.0, 2.0) for ax in axes)
    assert [t.get_text() for t in axes[1].texts] == ["0.1", "0"]
    plt.close(fig)
