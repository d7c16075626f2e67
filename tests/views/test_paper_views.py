"""Notebook 09's figures: each cell and bar says what was measured; full fine-tuning sits alone in the far corner."""
import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from lora_edu.lessons.paper_analyses import RunSpec
from lora_edu.views import paper_views

matplotlib.use("Agg")


def fake_run(spec, acc, trainable, history=(0.2, 0.5)):
    return dict(spec=spec, label=spec.label, accuracy=acc, trainable=trainable, history=np.array([*history[:-1], acc]),
                original_history=np.array([0.9, 0.5]), original_accuracy=0.5)


def test_grid_heatmap_writes_every_cell_and_leaves_the_rest_blank():
    rows, ranks = [("head",), ("fc1", "fc2")], (1, 4)
    cells = {(t, r): dict(mean=0.1 * r + 0.2 * len(t), lo=0.1 * r + 0.2 * len(t) - 0.01, hi=0.1 * r + 0.2 * len(t) + 0.02)
             for t in rows for r in ranks}
    fig, ax = plt.subplots()
    image = paper_views.grid_heatmap(ax, cells, dict(mean=0.97, lo=0.96, hi=0.98), rows, ranks, "after 20 epochs")
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 5 and "97.0%\n96.0–98.0" in texts and "30.0%\n29.0–32.0" in texts
    shown = image.get_array()
    assert shown.shape == (3, 3) and shown.mask[-1, :-1].all() and shown.mask[:-1, -1].all() and not shown.mask[-1, -1]
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "full fine-tuning" and ax.get_title() == "after 20 epochs"
    plt.close(fig)


def test_budget_bars_sorted_by_the_later_epoch_and_labelled():
    rows = [{"targets": ["fc2"], "r": 8, "trainable": 2048, 20: (0.65, 0.6, 0.7), 300: (0.95, 0.94, 0.96)},
            {"targets": ["fc1", "fc2", "head"], "r": 3, "trainable": 1758, 20: (0.87, 0.85, 0.9), 300: (0.9, 0.89, 0.91)}]
    fig, ax = plt.subplots()
    paper_views.budget_bars(ax, rows, 2048, (20, 300))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["fc1 + fc2 + head (r = 3, 1,758)", "fc2 (r = 8, 2,048)"]
    assert "2,048" in ax.get_title() and "95.0%" in [t.get_text() for t in ax.texts]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["after 20 epochs", "after 300 epochs"]
    plt.close(fig)


def test_similarity_heatmap_and_tradeoff_draw():
    fig, (ax1, ax2) = plt.subplots(1, 2)
    image = paper_views.similarity_heatmap(ax1, np.linspace(0, 1, 16).reshape(2, 8), "φ")
    assert image.get_clim() == (0, 1) and ax1.get_title() == "φ"
    paper_views.tradeoff(ax2, [fake_run(RunSpec(("fc2",), 1), 0.3, 256), fake_run(RunSpec(("full",)), 0.9, 26122)], (1, 2))
    assert [t.get_text() for t in ax2.get_legend().get_texts()] == ["fc2 r=1", "full fine-tuning"]
    plt.close(fig)


def test_tradeoff_starts_every_path_at_the_pretrained_model():
    fig, ax = plt.subplots()
    paper_views.tradeoff(ax, [fake_run(RunSpec(("fc2",), 1), 0.3, 256)], (1, 2), start=(0.1, 0.98))
    path = ax.lines[0]
    assert (path.get_xdata()[0], path.get_ydata()[0]) == (0.1, 0.98) and len(path.get_xdata()) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["fc2 r=1", "pretrained model"]
    assert "pretrained → epoch 2" in ax.get_title()
    plt.close(fig)
