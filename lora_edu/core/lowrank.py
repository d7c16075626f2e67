"""Low-rank approximation (truncated SVD), for notebook 04 (its training experiments: :mod:`lora_edu.lessons.rank_experiments`).

Eckart–Young: the best rank-r approximation of a matrix M, in the Frobenius (and spectral)
norm, keeps the top r singular values and directions of its SVD; its relative error is
sqrt(Σ_{i>r} σᵢ²) / sqrt(Σ σᵢ²). So the singular values of a matrix say how well rank r can
approximate *that matrix*, before training anything; they do not say what rank a task needs.
"""
from __future__ import annotations

import numpy as np


def structured_update(d: int = 64, k: int = 48, decay: float = 0.75, seed: int = 0) -> np.ndarray:
    """A d×k matrix with singular values decaying as decay**i (random orthonormal directions)."""
    rng = np.random.default_rng(seed)
    n = min(d, k)
    U, _ = np.linalg.qr(rng.normal(size=(d, n)))
    V, _ = np.linalg.qr(rng.normal(size=(k, n)))
    return (U * decay ** np.arange(n)) @ V.T


class TruncatedSVD:
    """The SVD of a matrix, computed once, so that every rank r is a cheap product afterwards."""

    def __init__(self, matrix: np.ndarray):
        self.matrix = np.asarray(matrix, dtype=float)
        self.U, self.S, self.Vt = np.linalg.svd(self.matrix, full_matrices=False)
        self._tail = np.concatenate([np.cumsum((self.S**2)[::-1])[::-1], [0.0]])  # Σ_{i≥r} σᵢ²

    def approx(self, r: int) -> np.ndarray:
        """The best rank-r approximation (Eckart–Young)."""
        return (self.U[:, :r] * self.S[:r]) @ self.Vt[:r]

    def relative_error(self, r: int) -> float:
        """‖M − M_r‖_F / ‖M‖_F, from the singular values alone."""
        return float(np.sqrt(self._tail[r] / self._tail[0]))

    def parameters(self, r: int) -> tuple[int, int]:
        """(LoRA's r·(d + k), the full d·k)."""
        d, k = self.matrix.shape
        return r * (d + k), d * k


def smallest_rank(singular_values, max_relative_error: float) -> int:
    """The smallest r whose best rank-r approximation has relative error ≤ ``max_relative_error``."""
    s2 = np.asarray(singular_values, dtype=float) ** 2
    tail = np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]])
    errors = np.sqrt(tail / tail[0])
    return int(np.argmax(errors <= max_relative_error + 1e-12))


def grayscale_sample_image(step: int = 2) -> np.ndarray:
    """A photograph that matplotlib ships (Grace Hopper), gray, every ``step``-th pixel, in [0, 1]."""
    import matplotlib.cbook as cbook
    import matplotlib.pyplot as plt

    image = plt.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return image.mean(axis=-1)[::step, ::step] / 255.0

