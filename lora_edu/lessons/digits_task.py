"""A real fine-tuning task that runs offline in seconds: handwritten digits, then rotated digits.

scikit-learn ships 1,797 labelled 8×8 digit images (no download). A small MLP is pretrained
on them; the *shifted* task is the same digits rotated by 90°, which the pretrained model
mostly gets wrong. Notebook 05 adapts it with full fine-tuning and with LoRA at several ranks.
Everything runs in float64: the tiny model costs nothing more, and the stored accuracies do
not change with how a CPU orders its sums.
"""
from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lora_edu.core.lora import add_lora, count_parameters

DTYPE = torch.float64


@dataclass
class Split:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_task(rotate: bool = False, seed: int = 0) -> Split:
    """The digits data set, pixels scaled to [0, 1], split 75/25 with a fixed seed; rotated by 90° if asked."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images / 16.0
    if rotate:
        images = np.rot90(images, k=1, axes=(1, 2))
    x = torch.tensor(images.reshape(len(images), -1).copy(), dtype=DTYPE)
    y = torch.tensor(digits.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(0.75 * len(x))
    train, test = order[:cut], order[cut:]
    return Split(x[train], y[train], x[test], y[test])


class MLP(nn.Sequential):
    """64 pixels → 128 → 128 → 10 classes, ReLU between; layers named fc1, fc2, head."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        self.fc1, self.act1 = nn.Linear(64, hidden, dtype=DTYPE), nn.ReLU()
        self.fc2, self.act2 = nn.Linear(hidden, hidden, dtype=DTYPE), nn.ReLU()
        self.head = nn.Linear(hidden, 10, dtype=DTYPE)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(-1) == y).double().mean().item()


def train(model: nn.Module, data: Split, epochs: int, lr: float = 1e-2, desc: str | None = None, seed: int = 0) -> list[float]:
    """Adam on the trainable parameters, mini-batches of 128; returns test accuracy after each epoch.

    Shows a tqdm progress bar when ``desc`` is given.
    """
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    history = []
    epochs_iter = tqdm(range(epochs), desc=desc, leave=True) if desc else range(epochs)
    for _ in epochs_iter:
        model.train()
        for batch in torch.randperm(len(data.x_train), generator=generator).split(128):
            opt.zero_grad()
            nn.functional.cross_entropy(model(data.x_train[batch]), data.y_train[batch]).backward()
            opt.step()
        model.eval()
        history.append(accuracy(model, data.x_test, data.y_test))
    return history


def pretrained_model(epochs: int = 30, seed: int = 0) -> nn.Module:
    """The MLP trained on the upright digits (the "pretrained model" of the notebook): a fresh copy on every call.

    The training runs once per (epochs, seed) and process (notebook 05 needs the model twice: for its
    own cells and for its capstone's check). Either way the call leaves torch's global generator where
    training from scratch leaves it (seeded, then the MLP's initialisation; training draws from its own).
    """
    torch.manual_seed(seed)
    model = MLP()
    model.load_state_dict(_pretrained_state(epochs, seed))
    return model


@functools.lru_cache(maxsize=4)
def _pretrained_state(epochs: int, seed: int) -> dict:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MLP()
        train(model, load_digits_task(rotate=False), epochs=epochs, lr=1e-2, seed=seed)
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def adapt(base: nn.Module, data: Split, method: str, r: int | None = None, epochs: int = 30, lr: float = 1e-2,
          targets=("fc1", "fc2"), seed: int = 0, progress: bool = True) -> dict:
    """Fine-tune a copy of ``base`` on ``data``: ``method`` "full" or "lora" (rank ``r`` on ``targets``).

    Returns the adapted model, the accuracy history, trainable-parameter count and seconds taken.
    ``progress=False`` trains without a progress bar (notebook 00 prints its results instead).
    """
    torch.manual_seed(seed)
    model = copy.deepcopy(base)
    if method == "lora":
        add_lora(model, list(targets), r=r, alpha=2 * r)
    label = "full fine-tuning" if method == "full" else f"LoRA r={r}"
    start = time.perf_counter()
    history = train(model, data, epochs=epochs, lr=lr, desc=label if progress else None, seed=seed)
    seconds = time.perf_counter() - start
    trainable, total = count_parameters(model)
    return dict(label=label, model=model, history=history, accuracy=history[-1], trainable=trainable, total=total, seconds=seconds)


def dead_units(model: MLP, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """For each ReLU of the MLP (``act1``, ``act2``): which hidden units output 0 on *every* row of ``x``.

    Why it matters for notebook 05's spectrum: a unit that stays dead on all training inputs
    passes no gradient, neither to its incoming weights (its row of the layer before) nor to
    its outgoing weights (its column of the layer after). Adam then never moves them (zero
    gradient gives a zero step), so those rows and columns of ΔW stay exactly zero and cap ΔW's rank.
    """
    with torch.no_grad():
        h1 = model.act1(model.fc1(x))
        h2 = model.act2(model.fc2(h1))
    return {"act1": (h1 == 0).all(0), "act2": (h2 == 0).all(0)}


def zero_lines(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks of the rows and of the columns of ``delta`` that are exactly zero."""
    zero = delta == 0
    return zero.all(1), zero.all(0)


def kept_share(delta: torch.Tensor) -> torch.Tensor:
    """The share of ``delta`` (of its squared Frobenius norm) that its best rank-r approximation keeps, for r = 1, 2, ….

    By Eckart–Young the best rank-r approximation keeps the r largest singular values, so the share is
    (σ₁² + … + σᵣ²) / (σ₁² + σ₂² + …). Entry r − 1 is rank r's share; the last entry is 1. Notebook 00 compares a
    real fine-tuning update with a random matrix this way.
    """
    if delta.ndim != 2 or not delta.abs().sum():
        raise ValueError(f"kept_share needs a non-zero matrix, got shape {tuple(delta.shape)}"
                         + (" of zeros" if delta.ndim == 2 else ""))
    energy = torch.linalg.svdvals(delta) ** 2
    return energy.cumsum(0) / energy.sum()
