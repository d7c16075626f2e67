"""Subspace similarity between two LoRA adapters: the measure of Hu et al. (2021), §7.2 and Appendix G.

The paper asks how much of what a rank-8 adapter learned is also in a rank-64 one. It takes the
two learned down-projections A (r×in, PEFT's ``lora_A``; the paper's A ∈ ℝ^{r×k} with k = in),
computes their right singular vectors (A = U Σ Vᵀ; the columns of V live in the *input* space,
which all adapters of one layer share, whatever their rank; the paper calls this matrix
"the right-singular unitary matrix U_A") and compares the top-i directions of one with the top-j of
the other:

    φ(A₁, A₂, i, j) = ‖V₁[:, :i]ᵀ · V₂[:, :j]‖²_F / min(i, j)   ∈ [0, 1].

‖·‖²_F adds the squared cosines of the principal angles between the two subspaces, so φ = 1 when
the smaller one lies inside the larger and 0 when they are orthogonal. Two *random* subspaces of
ℝ^d give φ ≈ max(i, j)/d on average (:func:`random_baseline`): the floor against which a measured φ
means something.
"""
from __future__ import annotations

import numpy as np


def _as_matrix(A, name: str) -> np.ndarray:
    """``A`` (NumPy array or torch tensor) as a float64 2-D array, or a ValueError naming the fix."""
    if hasattr(A, "detach"):
        A = A.detach().cpu().numpy()
    A = np.asarray(A, dtype=float)
    if A.ndim != 2 or 0 in A.shape:
        raise ValueError(f"{name} must be a non-empty 2-D matrix (r×in, like lora_A), got shape {A.shape}.")
    if not np.isfinite(A).all():
        raise ValueError(f"{name} holds NaN or inf; a diverged adapter has no meaningful subspace.")
    return A


def right_singular_vectors(A) -> np.ndarray:
    """The right singular vectors of ``A`` (r×in) as the columns of an in×min(r, in) matrix, largest first."""
    _, _, vh = np.linalg.svd(_as_matrix(A, "A"), full_matrices=False)
    return vh.T


def similarity_grid(A1, A2) -> np.ndarray:
    """φ(A1, A2, i, j) for every i ≤ rank of A1's rows and j ≤ A2's: an array ``grid[i - 1, j - 1]``.

    Both matrices are r×in with the same ``in`` (PEFT's ``lora_A``: rows are the rank). All the
    values come from one product M = V₁ᵀV₂: ‖V₁[:, :i]ᵀV₂[:, :j]‖²_F is the sum of M² over its
    top-left i×j block, a double cumulative sum.
    """
    A1, A2 = _as_matrix(A1, "A1"), _as_matrix(A2, "A2")
    if A1.shape[1] != A2.shape[1]:
        raise ValueError(f"A1 and A2 must act on the same input space (same number of columns, as two lora_A of one "
                         f"layer), got {A1.shape} and {A2.shape}. Pass lora_A (r×in), not lora_B (out×r).")
    m2 = (right_singular_vectors(A1).T @ right_singular_vectors(A2)) ** 2
    blocks = m2.cumsum(0).cumsum(1)
    i, j = np.arange(1, m2.shape[0] + 1)[:, None], np.arange(1, m2.shape[1] + 1)[None, :]
    return np.clip(blocks / np.minimum(i, j), 0.0, 1.0)   # clip: rounding can give 1 + 1e-16


def subspace_similarity(A1, A2, i: int, j: int) -> float:
    """φ(A1, A2, i, j) of Hu et al. (2021, §7.2): top-i right singular directions of A1 against top-j of A2."""
    grid = similarity_grid(A1, A2)
    for name, k, top in (("i", i, grid.shape[0]), ("j", j, grid.shape[1])):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= top:
            raise ValueError(f"{name} must be an int from 1 to {top} (the number of singular directions), got {k!r}.")
    return float(grid[i - 1, j - 1])


def random_baseline(d: int, i: int, j: int) -> float:
    """The expected φ for an i- and a j-dimensional subspace of ℝ^d drawn independently at random: max(i, j)/d.

    Each of the i orthonormal directions of the first has, on average, a squared projection of j/d on
    the second (a random j-dimensional subspace holds j/d of a unit vector's squared length, by
    symmetry), so E‖·‖²_F = i·j/d; divided by min(i, j) that is max(i, j)/d.
    """
    for name, k in (("d", d), ("i", i), ("j", j)):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"{name} must be a positive int, got {k!r}.")
    if max(i, j) > d:
        raise ValueError(f"i and j cannot exceed the dimension d = {d} (got i = {i}, j = {j}).")
    return max(i, j) / d
