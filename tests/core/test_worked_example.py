"""The 4×4 worked example's numbers, and gradient_step on any shapes."""
import numpy as np
import pytest
import torch

from lora_edu import worked_example as we


@pytest.fixture
def step():
    ex = we.example()
    return we.gradient_step(ex["x"], ex["W"], ex["A"], ex["B"], ex["y_true"], lr=0.1)


def test_forward_numbers_the_source_gets_right(step):
    assert np.allclose(step["y"], [[1.1, 0.2, -0.7, 2.4]])
    assert step["loss_before"] == pytest.approx(2.75)


def test_correct_gradient_and_update(step):
    assert np.allclose(step["grad_A"], [[0.1, -0.8, -1.7, 1.4], [0, 0, 0, 0]])
    assert np.allclose(step["grad_B"], [[-0.1, 0.29], [0, 0], [0, 0], [0, 0]])
    assert np.allclose(step["A_new"], [[0.09, 0.28, 0.47, 0.26], [-0.1, -0.2, 0.0, 0.1]])
    assert np.allclose(step["B_new"], [[1.01, -0.029], [0, 1], [0.5, -0.5], [-1, 1]])
    assert np.allclose(step["W_eff_new"], [[1.0938, 0.2886, -0.5253, 2.2597], [-0.1, 0.8, 1.0, -0.9],
                                           [2.095, -1.76, 0.235, 0.08], [0.81, 0.52, 0.53, 0.84]])
    assert step["loss_after"] == pytest.approx(2.21413629)


def test_errata_names_exactly_the_wrong_entries(step):
    correct = dict(y=step["y"], loss=step["loss_before"], grad_A=step["grad_A"], grad_B=step["grad_B"],
                   A_new=step["A_new"], W_eff_new=step["W_eff_new"])
    wrong = {(w["name"], w["index"]) for w in we.errata(we.SOURCE_PRINTED, correct)}
    expected = {("grad_A", (0, 1)), ("A_new", (0, 1)), ("W_eff_new", (0, 1)), ("W_eff_new", (2, 1)),
                ("W_eff_new", (3, 1)), ("W_eff_new", (3, 2))} | {("grad_B", (i, j)) for i in range(4) for j in range(2)}
    assert wrong == expected


def test_inputs_are_not_changed():
    ex = we.example()
    copies = {k: v.copy() for k, v in ex.items()}
    we.gradient_step(**ex)
    assert all(np.array_equal(ex[k], copies[k]) for k in ex)


@pytest.mark.parametrize("seed", range(5))
def test_any_shape_matches_autograd_and_finite_differences(seed):
    rng = np.random.default_rng(seed)
    n, k, d, r = rng.integers(1, 6, size=4)
    x, W, A, B, t = (rng.normal(size=s) for s in [(n, k), (k, d), (r, d), (k, r), (n, d)])
    s = float(rng.uniform(0.1, 3))
    got = we.gradient_step(x, W, A, B, t, lr=0.05, scaling=s)
    At, Bt = torch.tensor(A, requires_grad=True), torch.tensor(B, requires_grad=True)
    (0.5 * ((torch.tensor(x) @ (torch.tensor(W) + s * Bt @ At) - torch.tensor(t)) ** 2).sum()).backward()
    assert np.allclose(got["grad_A"], At.grad.numpy()) and np.allclose(got["grad_B"], Bt.grad.numpy())
    fd = we.finite_difference(lambda A_: we.loss(x @ (W + s * B @ A_), t), A)
    assert np.allclose(got["grad_A"], fd, atol=1e-5)
    assert np.allclose(got["A_new"], A - 0.05 * got["grad_A"])


def test_zero_b_means_zero_grad_a():
    ex = we.example()
    ex["B"] = np.zeros_like(ex["B"])
    s = we.gradient_step(**ex)
    assert not s["grad_A"].any() and s["grad_B"].any()


def test_bad_shapes_name_the_convention():
    ex = we.example()
    with pytest.raises(ValueError, match=r"B must be k×r = 4×2 \(r from A\), got \(2, 4\)"):
        we.gradient_step(ex["x"], ex["W"], ex["A"], ex["B"].T, ex["y_true"])
