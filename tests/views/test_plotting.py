"""Heatmaps share one symmetric colour scale and write every value in its cell; the LoRA picture names its convention."""
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

from lora_edu.views.plotting import RANDOM_COMPARISON, cell_label, digits_figure, heatmaps, lora_diagram, update_spectrum_figure

matplotlib.use("Agg")


def test_one_panel_per_matrix_on_a_shared_symmetric_scale():
    fig = heatmaps({"W": np.array([[1.0, -2.0], [0.5, 0.0]]), "ΔW": np.array([[0.1, 0.0]])},
                   xlabel="output index d", ylabel="input index k")
    panels, bar = fig.axes[:2], fig.axes[2:]
    assert [ax.get_title() for ax in panels] == ["W  (2×2)", "ΔW  (1×2)"]
    assert all(ax.images[0].get_clim() == (-2.0, 2.0) for ax in panels)
    assert [t.get_text() for t in panels[1].texts] == ["0.1", "0"]
    assert len(bar) == 1 and bar[0].get_ylabel() == "value"  # one shared colour bar
    assert panels[0].get_ylabel() == "input index k" and panels[1].get_xlabel() == "output index d"
    plt.close(fig)


def test_labels_never_show_minus_zero_and_follow_decimals():
    assert cell_label(-0.0049999, 2) == "0" and cell_label(-0.0, 2) == "0"
    assert cell_label(-0.005, 4) == "-0.005" and cell_label(2.095, 4) == "2.095" and cell_label(0.235, 4) == "0.235"
    assert cell_label(1.0938, 4) == "1.0938" and cell_label(2.0, 2) == "2"
    fig = heatmaps({"change": np.array([[2.095 - 2.1, 0.0]])}, decimals=2)
    assert [t.get_text() for t in fig.axes[0].texts] == ["0", "0"]
    plt.close(fig)


def texts(fig):
    return "\n".join(t.get_text() for t in fig.axes[0].texts)


def test_lora_diagram_names_down_up_and_zero_in_the_courses_convention():
    peft = lora_diagram("peft")
    assert "A = lora_A   (r×in)\ndown-projection\nrandom at start" in texts(peft)
    assert "B = lora_B   (out×r)\nup-projection\nzero at start" in texts(peft)
    assert "rank r" in texts(peft) and "W   (out×in)\npretrained, frozen" in texts(peft)
    plt.close("all")


def test_lora_diagram_rejects_an_unknown_convention_naming_the_choices():
    with pytest.raises(ValueError, match=r"choose one of \['peft'\]"):
        lora_diagram("column")


def test_the_count_figure_draws_notebook_00s_slider_still():
    from lora_edu.views.plotting import lora_count_figure

    fig = lora_count_figure(4096, 4096, r=8, max_r=256)
    ax = fig.axes[0]
    line = ax.lines[0]
    assert line.get_xdata()[-1] == 256 and line.get_ydata()[7] == 8 * 8192
    assert any("r = 8: 65,536 (0.39% of d·k)" == t.get_text() for t in ax.texts)
    for bad in (dict(r=0), dict(r=300), dict(d=2.5)):
        with pytest.raises(ValueError):
            lora_count_figure(**bad)


def test_digits_figure_shows_the_same_digits_upright_then_rotated():
    from lora_edu.lessons import digits_task

    upright, rotated = digits_task.load_digits_task(rotate=False), digits_task.load_digits_task(rotate=True)
    fig = digits_figure(upright, rotated, n=3)
    titles = [ax.get_title() for ax in fig.axes]
    labels = [int(y) for y in upright.y_test[:3]]
    assert titles == [f"upright {y}" for y in labels] + [f"rotated {y}" for y in rotated.y_test[:3].tolist()]
    assert labels == [int(y) for y in rotated.y_test[:3]]   # the same digits, turned
    assert np.array_equal(fig.axes[0].images[0].get_array(), np.asarray(upright.x_test[0]).reshape(8, 8))
    plt.close(fig)
    with pytest.raises(ValueError, match="n must be an int"):
        digits_figure(upright, rotated, n=0)



def test_agreement_figure_draws_both_scatters_with_their_largest_difference():
    from lora_edu.views.plotting import agreement_figure

    x = np.linspace(-1, 1, 50)
    agreement = dict(ours=x + 1e-7, peft=x, change_ours=0.1 * x, change_peft=0.1 * x)
    fig = agreement_figure(agreement, tolerance=1e-5)
    assert len(fig.axes) == 2
    assert "1e-07" in fig.axes[0].get_title() and "|difference| 0 " in fig.axes[1].get_title() and "tolerance 1e-05" in fig.axes[0].get_title()
    assert "adapters" in fig.axes[1].get_title()
    assert np.allclose(fig.axes[0].collections[0].get_offsets()[:, 0], x)
    plt.close(fig)


def test_loss_curves_draw_one_line_per_run_on_a_log_scale():
    from lora_edu.views.plotting import loss_curves

    fig = loss_curves({"B = 0": [3.0, 1.0, 0.1], "A = 0": [3.0, 2.0, 1.0]}, title="two starts")
    ax = fig.axes[0]
    assert len(ax.lines) == 2 and ax.get_yscale() == "log" and ax.get_title() == "two starts"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["B = 0", "A = 0"]
    with pytest.raises(ValueError, match="at least one run"):
        loss_curves({})
    with pytest.raises(ValueError, match="two steps"):
        loss_curves({"one": [1.0]})


def test_the_spectrum_figure_is_one_panel_and_draws_its_random_matrix_as_notebook_00_did():
    """One picture, one idea: the share kept at rank r; the random matrix is torch.randn_like from the global
    generator, scaled to the first matrix's norm, so notebook 00's stored curves did not change."""
    import torch

    torch.manual_seed(3)
    delta = torch.randn(12, 8) @ torch.diag(0.5 ** torch.arange(8.0))
    state = torch.get_rng_state()
    fig = update_spectrum_figure({"ΔW": delta}, ranks=(1, 2, 4), random_comparison=True)
    torch.set_rng_state(state)
    noise = torch.randn_like(delta)
    noise *= delta.norm() / noise.norm()
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "What the best rank-r approximation keeps"
    assert list(fig.matrices) == ["ΔW", RANDOM_COMPARISON] and torch.equal(fig.matrices[RANDOM_COMPARISON], noise)
    curves = {line.get_label(): line.get_ydata() for line in fig.axes[0].lines if not line.get_label().startswith("_")}
    for label, m in fig.matrices.items():
        sv = np.linalg.svd(np.asarray(m, dtype=float), compute_uv=False)
        assert np.array_equal(curves[label], np.cumsum(sv**2) / np.sum(sv**2))
    assert [t.get_text() for t in fig.axes[0].texts] == [f"{curves['ΔW'][r - 1]:.0%}" for r in (1, 2, 4)]
    assert list(update_spectrum_figure({"ΔW": delta}).matrices) == ["ΔW"]
    with pytest.raises(ValueError):
        update_spectrum_figure({})
