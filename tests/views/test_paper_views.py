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
    lookup = {RunSpec(t, r): fake_run(RunSpec(t, r), 0.1 * r + 0.2 * len(t), 100 * r) for t in rows for r in ranks}
    lookup[RunSpec(("full",))] = fake_run(RunSpec(("full",)), 0.97, 26122)
    fig, ax = plt.subplots()
    image = paper_views.grid_heatmap(ax, lookup, rows, ranks)
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 5 and "97.0%\n26,122" in texts and "30.0%\n100" in texts
    shown = image.get_array()
    assert shown.shape == (3, 3) and shown.mask[-1, :-1].all() and shown.mask[:-1, -1].all() and not shown.mask[-1, -1]
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "full fine-tuning"
    plt.close(fig)


def test_budget_bars_sorted_and_labelled():
    runs = [fake_run(RunSpec(("fc2",), 8), 0.65, 2048), fake_run(RunSpec(("fc1", "fc2", "head"), 3), 0.87, 1758)]
    fig, ax = plt.subplots()
    paper_views.budget_bars(ax, runs, 2048)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["fc2 (r = 8)", "fc1 + fc2 + head (r = 3)"]
    assert "2,048" in ax.get_title() and "87.0% · 1,758 numbers" in [t.get_text() for t in ax.texts]
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
