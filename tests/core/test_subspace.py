"""The paper's subspace similarity φ (lora_edu.core.subspace): its limits, its random floor, its bad inputs."""
import numpy as np
import pytest
import torch

from lora_edu.core import subspace


def test_identical_subspaces_give_one_whatever_the_basis():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(6, 20))
    mixed = rng.normal(size=(6, 6)) @ A           # other rows, the same row space
    assert subspace.subspace_similarity(A, mixed, 6, 6) == pytest.approx(1.0)
    grid = subspace.similarity_grid(A, A)
    assert grid.shape == (6, 6) and np.allclose(np.diag(grid), 1.0)


def test_a_subspace_inside_a_larger_one_gives_one():
    rng = np.random.default_rng(1)
    big = rng.normal(size=(8, 30))
    small = rng.normal(size=(3, 8)) @ big          # its rows lie in big's row space
    assert subspace.subspace_similarity(small, big, 3, 8) == pytest.approx(1.0)


def test_orthogonal_subspaces_give_zero():
    eye = np.eye(10)
    assert np.allclose(subspace.similarity_grid(eye[:4], 3 * eye[4:9]), 0.0)


def test_known_angle():
    a = np.array([[1.0, 0.0, 0.0]])
    b = np.array([[np.cos(0.3), np.sin(0.3), 0.0]])
    assert subspace.subspace_similarity(a, b, 1, 1) == pytest.approx(np.cos(0.3) ** 2)


def test_values_in_unit_interval_and_torch_input():
    rng = np.random.default_rng(2)
    grid = subspace.similarity_grid(torch.tensor(rng.normal(size=(8, 40))), rng.normal(size=(16, 40)))
    assert grid.shape == (8, 16) and grid.min() >= 0 and grid.max() <= 1


def test_random_subspaces_average_the_baseline():
    """Gaussian matrices have uniformly random row spaces: φ averages max(i, j)/d."""
    rng = np.random.default_rng(3)
    d = 32
    grids = np.mean([subspace.similarity_grid(rng.normal(size=(4, d)), rng.normal(size=(16, d))) for _ in range(400)], 0)
    for i, j in [(1, 1), (1, 16), (4, 4), (4, 16), (2, 8)]:
        assert grids[i - 1, j - 1] == pytest.approx(subspace.random_baseline(d, i, j), abs=0.02)
    assert subspace.random_baseline(128, 8, 64) == 0.5 and subspace.random_baseline(128, 1, 1) == 1 / 128


def test_right_singular_vectors_are_in_the_input_space():
    rng = np.random.default_rng(4)
    V = subspace.right_singular_vectors(rng.normal(size=(3, 11)))
    assert V.shape == (11, 3) and np.allclose(V.T @ V, np.eye(3))


@pytest.mark.parametrize("bad, match", [
    (dict(A1=np.ones((2, 3)), A2=np.ones((2, 4))), "same input space"),
    (dict(A1=np.ones(3), A2=np.ones((2, 3))), "2-D"),
    (dict(A1=np.full((2, 3), np.nan), A2=np.ones((2, 3))), "NaN"),
])
def test_bad_matrices_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        subspace.similarity_grid(**bad)


@pytest.mark.parametrize("i, j", [(0, 1), (1, 9), (1.5, 1), (True, 1)])
def test_bad_indices_are_named(i, j):
    rng = np.random.default_rng(5)
    with pytest.raises(ValueError, match="must be an int from 1"):
        subspace.subspace_similarity(rng.normal(size=(2, 9)), rng.normal(size=(8, 9)), i, j)


@pytest.mark.parametrize("args", [(0, 1, 1), (4, 5, 1), (4, 1, 2.0)])
def test_bad_baseline_arguments(args):
    with pytest.raises(ValueError):
        subspace.random_baseline(*args)
