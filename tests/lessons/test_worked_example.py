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


@pytest.mark.parametrize("seed", range(4))
def test_lora_init_zeros_the_up_projection_so_the_down_projection_has_zero_gradient(seed):
    """Row vectors, y = x·(W + B·A): B (k×r) is applied first (down), A (r×d) last (up).

    LoRA and PEFT zero the matrix applied last (here A): then ΔW = 0 and ∇B = s·G·Aᵀ = 0 at the first step,
    while ∇A = s·Bᵀ·G ≠ 0: the up-projection moves first. Zeroing B instead reverses it.
    """
    rng = np.random.default_rng(seed)
    n, k, d, r = (int(v) for v in rng.integers(2, 6, size=4))
    x, W, t = rng.normal(size=(n, k)), rng.normal(size=(k, d)), rng.normal(size=(n, d))
    A, B = we.lora_init(k, d, r, zero="A", seed=seed)
    assert A.shape == (r, d) and B.shape == (k, r) and not A.any() and B.all()
    assert we.zero_gradient(x, W, A, B, t) == ["B"]
    A, B = we.lora_init(k, d, r, zero="B", seed=seed)
    assert not B.any() and A.all()
    assert we.zero_gradient(x, W, A, B, t) == ["A"]
    assert "applied last" in we.ROLES["A"] and "lora_B" in we.ROLES["A"]
    assert "applied first" in we.ROLES["B"] and "lora_A" in we.ROLES["B"]


def test_lora_init_maps_to_peft_zero_lora_B():
    """Mapped to PyTorch's convention (lora_A = Bᵀ, lora_B = Aᵀ), zero="A" is PEFT's lora_B = 0."""
    A, B = we.lora_init(4, 3, 2, zero="A")
    lora_A, lora_B = B.T, A.T
    assert lora_A.shape == (2, 4) and lora_B.shape == (3, 2) and not lora_B.any() and lora_A.any()
    with pytest.raises(ValueError, match="up-projection"):
        we.lora_init(4, 3, 2, zero="C")


def test_first_step_change_scales_like_s_squared_under_sgd_and_like_s_under_adam():
    ex = we.example()
    x, W, t = ex["x"], ex["W"], ex["y_true"]
    A, B = we.lora_init(4, 4, 2, zero="A")
    sgd = [we.first_step_change(x, W, A, B, t, s, "sgd", lr=0.1) for s in (0.5, 1.0, 2.0)]
    adam = [we.first_step_change(x, W, A, B, t, s, "adam", lr=0.01) for s in (0.5, 1.0, 2.0)]
    assert sgd[1] / sgd[0] == pytest.approx(4, rel=1e-9) and sgd[2] / sgd[1] == pytest.approx(4, rel=1e-9)
    assert adam[1] / adam[0] == pytest.approx(2, rel=1e-6) and adam[2] / adam[1] == pytest.approx(2, rel=1e-6)
    # under Adam, doubling s is the same first step as doubling the learning rate (Hu et al. 2021, §4.1)
    assert we.first_step_change(x, W, A, B, t, 2.0, "adam", 0.01) == pytest.approx(
        we.first_step_change(x, W, A, B, t, 1.0, "adam", 0.02), rel=1e-6)
    # under SGD it is the same as multiplying the learning rate by four
    assert we.first_step_change(x, W, A, B, t, 2.0, "sgd", 0.1) == pytest.approx(
        we.first_step_change(x, W, A, B, t, 1.0, "sgd", 0.4), rel=1e-12)
    # SGD through torch.optim equals the hand-written gradient_step
    st = we.gradient_step(x, W, A, B, t, lr=0.1, scaling=1.0)
    assert sgd[1] == pytest.approx(np.linalg.norm(st["W_eff_new"] - st["W_eff"]), rel=1e-12)


def test_adam_scaling_holds_from_the_sources_init_too():
    ex = we.example()
    c = [we.first_step_change(**ex, scaling=s, optimizer="adam", lr=1e-3) for s in (1.0, 2.0)]
    g = [we.first_step_change(**ex, scaling=s, optimizer="sgd", lr=1e-3) for s in (1.0, 2.0)]
    assert 1.8 < c[1] / c[0] < 2.2 and 3.5 < g[1] / g[0] < 4.5


def test_source_errata_explanations_updated_b_fits_15_old_b_14_of_16():
    """The printed W_eff,new is W + (B − η·printed ∇B)·(printed A_new): 15 of 16 entries; with the old B: 14."""
    ex, src = we.example(), we.SOURCE_PRINTED
    fits = {}
    for name, B_used in {"updated": ex["B"] - 0.1 * src["grad_B"], "old": ex["B"]}.items():
        off = we.errata({"W_eff_new": src["W_eff_new"]}, {"W_eff_new": ex["W"] + B_used @ src["A_new"]})
        fits[name] = (16 - len(off), {w["index"] for w in off})
    assert fits["updated"] == (15, {(3, 1)}) and fits["old"] == (14, {(2, 1), (3, 2)})
    upd = ex["W"] + (ex["B"] - 0.1 * src["grad_B"]) @ src["A_new"]
    assert np.allclose([upd[2, 1], upd[3, 2], upd[3, 1]], [-1.8035, 0.5234, 0.6147], atol=5e-5)


def test_printed_grad_B_is_x_and_error_swapped():
    """ẽ = the source's error row (y₁ instead of y₁ − 1, as in its ∇A); its ∇B = ẽᵀ·(x·Aᵀ) in all 8 entries."""
    ex, src = we.example(), we.SOURCE_PRINTED
    e_src = src["grad_A"][:1]
    assert np.allclose(e_src, [[0.1, 0.2, -1.7, 1.4]])
    assert np.allclose(we.swapped_grad_B(ex["x"], ex["A"], e_src), src["grad_B"], atol=1e-12)
    e = ex["x"] @ (ex["W"] + ex["B"] @ ex["A"]) - ex["y_true"]
    assert not np.allclose(we.swapped_grad_B(ex["x"], ex["A"], e), we.gradients(**ex)["grad_B"])


@pytest.mark.parametrize("s", [0.5, 2.0, 4.0])
def test_scale_s_equals_scale_one_at_every_step_with_sqrt_s_init(s):
    ex = we.example()
    x, W, t = ex["x"], ex["W"], ex["y_true"]
    A, B = we.lora_init(4, 4, 2, zero="A")
    for opt, lr, tol in (("adam", 0.01, 1e-7), ("sgd", 0.1, 1e-12)):
        ref = we.trajectory(x, W, A, B, t, s, opt, lr, steps=20)
        same = we.trajectory(x, W, *we.equivalent_at_scale_one(A, B, s, opt, lr)[:2], t, 1.0, opt,
                             we.equivalent_at_scale_one(A, B, s, opt, lr)[2], steps=20)
        assert np.abs(ref - same).max() < tol


def test_adam_s_as_learning_rate_holds_for_the_first_step_only():
    ex = we.example()
    x, W, t = ex["x"], ex["W"], ex["y_true"]
    A, B = we.lora_init(4, 4, 2, zero="A")
    diff = np.abs(we.trajectory(x, W, A, B, t, 2.0, "adam", 0.01) - we.trajectory(x, W, A, B, t, 1.0, "adam", 0.02)).max(axis=(1, 2))
    assert diff[0] < 1e-8 and diff[1] > 1e-4 and diff[-1] > 0.1
    assert we.first_step_change(x, W, A, B, t, 1.0, "sgd", 0.1) == pytest.approx(
        np.linalg.norm(we.trajectory(x, W, A, B, t, 1.0, "sgd", 0.1, steps=1)[0] - W), rel=1e-12)
