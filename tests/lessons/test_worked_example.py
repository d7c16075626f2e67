"""The 4×4 worked example in PEFT's names, its one translation from the write-up, and gradient_step on any shapes."""
import numpy as np
import pytest
import torch

from lora_edu import worked_example as we


@pytest.fixture
def step():
    ex = we.example()
    return we.gradient_step(ex["x"], ex["W"], ex["A"], ex["B"], ex["y_true"], lr=0.1)


# ---- the translation (notebook 02's box) ------------------------------------------------------------

def test_the_write_up_is_kept_as_printed():
    w = we.writeup()
    assert w["W"].tolist() == [[1, 0, -1, 2], [0, 1, 1, -1], [2, -2, 0, 0], [1, 1, 1, 1]]
    assert w["A"].tolist() == [[0.1, 0.2, 0.3, 0.4], [-0.1, -0.2, 0.0, 0.1]]
    assert w["B"].tolist() == [[1, 0], [0, 1], [0.5, -0.5], [-1, 1]]
    assert w["x"].tolist() == [[1, 0, 0, 0]] and w["y_true"].tolist() == [[1, 1, 1, 1]]


def test_the_translation_maps_names_and_keeps_every_output():
    """Its row vector x·W_eff is W_effᵀ·x: PEFT's W = its Wᵀ, lora_A = its Bᵀ, lora_B = its Aᵀ."""
    w, ex = we.writeup(), we.example()
    assert np.array_equal(ex["W"], w["W"].T) and np.array_equal(ex["A"], w["B"].T) and np.array_equal(ex["B"], w["A"].T)
    assert ex["A"].shape == (2, 4) and ex["B"].shape == (4, 2) and ex["x"].shape == (4, 1)
    assert np.array_equal(we.writeup_output(w), we.forward(ex["x"], ex["W"], ex["A"], ex["B"])[1].T)
    # ΔW and W_eff are transposes of the write-up's
    assert np.array_equal(ex["B"] @ ex["A"], (w["B"] @ w["A"]).T)


@pytest.mark.parametrize("seed", range(5))
def test_the_translation_holds_for_any_shapes_and_maps_the_gradients(seed):
    """On random non-square write-up examples: outputs transpose, its ∇A is our ∇Bᵀ and its ∇B our ∇Aᵀ."""
    rng = np.random.default_rng(seed)
    n, k, d, r = (int(v) for v in rng.integers(1, 6, size=4))
    w = dict(x=rng.normal(size=(n, k)), W=rng.normal(size=(k, d)), A=rng.normal(size=(r, d)), B=rng.normal(size=(k, r)),
             y_true=rng.normal(size=(n, d)))
    ex = we.from_writeup(w)
    assert np.allclose(we.writeup_output(w), we.forward(ex["x"], ex["W"], ex["A"], ex["B"])[1].T, rtol=0, atol=1e-12)
    Aw, Bw = torch.tensor(w["A"], requires_grad=True), torch.tensor(w["B"], requires_grad=True)
    (0.5 * ((torch.tensor(w["x"]) @ (torch.tensor(w["W"]) + Bw @ Aw) - torch.tensor(w["y_true"])) ** 2).sum()).backward()
    g = we.gradients(**ex)
    assert np.allclose(g["grad_B"], Aw.grad.numpy().T) and np.allclose(g["grad_A"], Bw.grad.numpy().T)


def test_from_writeup_refuses_an_incomplete_example():
    with pytest.raises(ValueError, match=r"missing \['y_true'\]"):
        we.from_writeup({k: v for k, v in we.WRITEUP.items() if k != "y_true"})


def test_printed_values_translate_entry_by_entry():
    p = we.printed_in_peft_names()
    assert p["grad_B"].shape == (4, 2) and p["grad_A"].shape == (2, 4) and p["B_new"].shape == (4, 2)
    assert p["grad_B"][1, 0] == we.SOURCE_PRINTED["grad_A"][0, 1] and p["W_eff_new"][1, 0] == we.SOURCE_PRINTED["W_eff_new"][0, 1]
    assert "A_new" not in p and "B_new" not in we.SOURCE_PRINTED  # it prints no update of its B (our A)


# ---- the step, in PEFT's names ------------------------------------------------------------------------

def test_forward_numbers_the_source_gets_right(step):
    assert np.allclose(step["y"], [[1.1], [0.2], [-0.7], [2.4]])
    assert step["loss_before"] == pytest.approx(2.75)


def test_correct_gradient_and_update(step):
    """The values the write-up should have printed, transposed into PEFT's names."""
    assert np.allclose(step["grad_B"], np.array([[0.1, -0.8, -1.7, 1.4], [0, 0, 0, 0]]).T)
    assert np.allclose(step["grad_A"], np.array([[-0.1, 0.29], [0, 0], [0, 0], [0, 0]]).T)
    assert np.allclose(step["B_new"], np.array([[0.09, 0.28, 0.47, 0.26], [-0.1, -0.2, 0.0, 0.1]]).T)
    assert np.allclose(step["A_new"], np.array([[1.01, -0.029], [0, 1], [0.5, -0.5], [-1, 1]]).T)
    assert np.allclose(step["W_eff_new"], np.array([[1.0938, 0.2886, -0.5253, 2.2597], [-0.1, 0.8, 1.0, -0.9],
                                                    [2.095, -1.76, 0.235, 0.08], [0.81, 0.52, 0.53, 0.84]]).T)
    assert step["loss_after"] == pytest.approx(2.21413629)


def test_errata_names_exactly_the_wrong_entries_in_peft_names(step):
    correct = {name: step[key] for name, key in (("y", "y"), ("loss", "loss_before"), ("grad_A", "grad_A"),
                                                 ("grad_B", "grad_B"), ("B_new", "B_new"), ("W_eff_new", "W_eff_new"))}
    wrong = {(w["name"], w["index"]) for w in we.errata(we.printed_in_peft_names(), correct)}
    expected = {("grad_B", (1, 0)), ("B_new", (1, 0)), ("W_eff_new", (1, 0)), ("W_eff_new", (1, 2)),
                ("W_eff_new", (1, 3)), ("W_eff_new", (2, 3))} | {("grad_A", (j, i)) for i in range(4) for j in range(2)}
    assert wrong == expected
    with pytest.raises(ValueError, match="compare in the same names"):
        we.errata(we.SOURCE_PRINTED, correct)  # the write-up's shapes against PEFT's: refused, not misread


def test_inputs_are_not_changed():
    ex = we.example()
    copies = {k: v.copy() for k, v in ex.items()}
    we.gradient_step(**ex)
    assert all(np.array_equal(ex[k], copies[k]) for k in ex)


@pytest.mark.parametrize("seed", range(5))
def test_any_shape_matches_autograd_and_finite_differences(seed):
    rng = np.random.default_rng(seed)
    n, d_in, d_out, r = rng.integers(1, 6, size=4)
    x, W, A, B, t = (rng.normal(size=s) for s in [(d_in, n), (d_out, d_in), (r, d_in), (d_out, r), (d_out, n)])
    s = float(rng.uniform(0.1, 3))
    got = we.gradient_step(x, W, A, B, t, lr=0.05, scaling=s)
    At, Bt = torch.tensor(A, requires_grad=True), torch.tensor(B, requires_grad=True)
    (0.5 * (((torch.tensor(W) + s * Bt @ At) @ torch.tensor(x) - torch.tensor(t)) ** 2).sum()).backward()
    assert np.allclose(got["grad_A"], At.grad.numpy()) and np.allclose(got["grad_B"], Bt.grad.numpy())
    fd = we.finite_difference(lambda A_: we.loss((W + s * B @ A_) @ x, t), A)
    assert np.allclose(got["grad_A"], fd, atol=1e-5)
    assert np.allclose(got["A_new"], A - 0.05 * got["grad_A"])


def test_the_columns_are_what_nn_linear_computes_on_rows():
    """y = W_eff·x (columns) is nn.Linear's x·W_effᵀ (rows), transposed."""
    ex = we.example()
    lin = torch.nn.Linear(4, 4, bias=False, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(ex["W"] + ex["B"] @ ex["A"]))
    assert np.allclose(lin(torch.from_numpy(ex["x"].T)).detach().numpy(), we.forward(ex["x"], ex["W"], ex["A"], ex["B"])[1].T)


def test_zero_b_means_zero_grad_a():
    ex = we.example()
    ex["B"] = np.zeros_like(ex["B"])
    s = we.gradient_step(**ex)
    assert not s["grad_A"].any() and s["grad_B"].any()


def test_bad_shapes_name_the_convention():
    ex = we.example()
    with pytest.raises(ValueError, match=r"B \(lora_B\) must be out×r = 4×2 \(r from A\), got \(2, 4\)"):
        we.gradient_step(ex["x"], ex["W"], ex["A"], ex["B"].T, ex["y_true"])
    with pytest.raises(ValueError, match=r"x must be in×n = 4×n \(one input per column\), got \(1, 4\)"):
        we.gradient_step(ex["x"].T, ex["W"], ex["A"], ex["B"], ex["y_true"])


@pytest.mark.parametrize("seed", range(4))
def test_peft_default_zeros_lora_B_so_lora_A_has_zero_gradient(seed):
    """PEFT's default zeros B (lora_B, applied last): ΔW = 0 and ∇A = s·Bᵀ·G = 0 at the first step, while
    ∇B = s·G·Aᵀ ≠ 0: B moves first. Zeroing A instead reverses it."""
    rng = np.random.default_rng(seed)
    n, d_in, d_out, r = (int(v) for v in rng.integers(2, 6, size=4))
    x, W, t = rng.normal(size=(d_in, n)), rng.normal(size=(d_out, d_in)), rng.normal(size=(d_out, n))
    A, B = we.lora_init(d_out, d_in, r, seed=seed)
    assert A.shape == (r, d_in) and B.shape == (d_out, r) and not B.any() and A.all()
    assert we.zero_gradient(x, W, A, B, t) == ["A"]
    A, B = we.lora_init(d_out, d_in, r, zero="A", seed=seed)
    assert not A.any() and B.all()
    assert we.zero_gradient(x, W, A, B, t) == ["B"]
    with pytest.raises(ValueError, match="PEFT's default"):
        we.lora_init(4, 3, 2, zero="C")


def test_first_step_change_scales_like_s_squared_under_sgd_and_like_s_under_adam():
    ex = we.example()
    x, W, t = ex["x"], ex["W"], ex["y_true"]
    A, B = we.lora_init(4, 4, 2)
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
    with pytest.raises(ValueError, match="'sgd' or 'adam'"):
        we.first_step_change(x, W, A, B, t, 1.0, "rmsprop")


def test_adam_scaling_holds_from_the_sources_init_too():
    ex = we.example()
    c = [we.first_step_change(**ex, scaling=s, optimizer="adam", lr=1e-3) for s in (1.0, 2.0)]
    g = [we.first_step_change(**ex, scaling=s, optimizer="sgd", lr=1e-3) for s in (1.0, 2.0)]
    assert 1.8 < c[1] / c[0] < 2.2 and 3.5 < g[1] / g[0] < 4.5


def test_source_errata_explanations_updated_a_fits_15_old_a_14_of_16():
    """In PEFT's names: the printed W_eff,new is W + (printed B_new)·(A − η·printed ∇A): 15 of 16 entries; with the old A: 14."""
    ex, src = we.example(), we.printed_in_peft_names()
    fits = {}
    for name, A_used in {"updated": ex["A"] - 0.1 * src["grad_A"], "old": ex["A"]}.items():
        off = we.errata({"W_eff_new": src["W_eff_new"]}, {"W_eff_new": ex["W"] + src["B_new"] @ A_used})
        fits[name] = (16 - len(off), {w["index"] for w in off})
    assert fits["updated"] == (15, {(1, 3)}) and fits["old"] == (14, {(1, 2), (2, 3)})
    upd = ex["W"] + src["B_new"] @ (ex["A"] - 0.1 * src["grad_A"])
    assert np.allclose([upd[1, 2], upd[2, 3], upd[1, 3]], [-1.8035, 0.5234, 0.6147], atol=5e-5)


def test_printed_grad_A_is_x_and_error_swapped():
    """ẽ = the write-up's error (y₁ instead of y₁ − 1, as in its printed gradient); its ∇A = Bᵀ·x·ẽᵀ in all 8 entries."""
    ex, src = we.example(), we.printed_in_peft_names()
    e_src = src["grad_B"][:, :1]   # its error column ẽ, with the slip: the first column of the printed ∇B
    assert np.allclose(e_src, [[0.1], [0.2], [-1.7], [1.4]])
    assert np.allclose(we.swapped_grad_A(ex["x"], ex["B"], e_src), src["grad_A"], atol=1e-12)
    e = we.forward(ex["x"], ex["W"], ex["A"], ex["B"])[1] - ex["y_true"]
    assert not np.allclose(we.swapped_grad_A(ex["x"], ex["B"], e), we.gradients(**ex)["grad_A"])


@pytest.mark.parametrize("s", [0.5, 2.0, 4.0])
def test_scale_s_equals_scale_one_at_every_step_with_sqrt_s_init(s):
    ex = we.example()
    x, W, t = ex["x"], ex["W"], ex["y_true"]
    A, B = we.lora_init(4, 4, 2)
    for opt, lr, tol in (("adam", 0.01, 1e-7), ("sgd", 0.1, 1e-12)):
        ref = we.trajectory(x, W, A, B, t, s, opt, lr, steps=20)
        A1, B1, lr1 = we.equivalent_at_scale_one(A, B, s, opt, lr)
        same = we.trajectory(x, W, A1, B1, t, 1.0, opt, lr1, steps=20)
        assert np.abs(ref - same).max() < tol


def test_adam_s_as_learning_rate_holds_for_the_first_step_only():
    ex = we.example()
    x, W, t = ex["x"], ex["W"], ex["y_true"]
    A, B = we.lora_init(4, 4, 2)
    diff = np.abs(we.trajectory(x, W, A, B, t, 2.0, "adam", 0.01) - we.trajectory(x, W, A, B, t, 1.0, "adam", 0.02)).max(axis=(1, 2))
    assert diff[0] < 1e-8 and diff[1] > 1e-4 and diff[-1] > 0.1
    assert we.first_step_change(x, W, A, B, t, 1.0, "sgd", 0.1) == pytest.approx(
        np.linalg.norm(we.trajectory(x, W, A, B, t, 1.0, "sgd", 0.1, steps=1)[0] - W), rel=1e-12)


# ---- the helpers that keep notebooks 02 and 03 short -------------------------------------------------

def test_side_by_side_prints_every_entry_under_its_name_and_shape():
    ex = we.example()
    text = we.side_by_side({"W": ex["W"], "A = lora_A": ex["A"], "x": ex["x"]})
    lines = text.split("\n")
    assert len(lines) == 1 + 4 and lines[0].split() == ["W", "4×4", "A", "=", "lora_A", "2×4", "x", "4×1"]
    numbers = [float(v) for v in " ".join(lines[1:]).replace("[", " ").replace("]", " ").split()]
    assert sorted(numbers) == sorted([*ex["W"].ravel(), *ex["A"].ravel(), *ex["x"].ravel()])
    with pytest.raises(ValueError, match="at least one matrix"):
        we.side_by_side({})
    with pytest.raises(ValueError, match="2-D"):
        we.side_by_side({"T": np.zeros((2, 2, 2))})


def test_gradient_gaps_are_tiny_for_the_right_gradients_and_not_for_wrong_ones():
    ex = we.example()
    g = we.gradients(**{k: ex[k] for k in ("x", "W", "A", "B", "y_true")})
    gaps = we.gradient_gaps(ex["x"], ex["W"], ex["A"], ex["B"], ex["y_true"], g["grad_A"], g["grad_B"])
    assert gaps["autograd"] < 1e-12 and gaps["finite_differences"] < 1e-8
    wrong = we.gradient_gaps(ex["x"], ex["W"], ex["A"], ex["B"], ex["y_true"], g["grad_A"], g["grad_B"] + 0.1)
    assert wrong["autograd"] == pytest.approx(0.1) and wrong["finite_differences"] == pytest.approx(0.1, abs=1e-6)


def test_alpha_table_shows_sgd_growing_like_s_squared_and_adam_like_s():
    ex = we.example()
    A0, B0 = we.lora_init(4, 4, 2, zero="B")
    table = we.alpha_table(ex["x"], ex["W"], A0, B0, ex["y_true"], lrs={"sgd": 0.1, "adam": 0.01})
    rows = [line.split() for line in table.split("\n")[1:]]
    assert [r[0] for r in rows] == ["1", "2", "4", "8"] and len(rows[0]) == 4
    assert all(r[3] == "4.00" and r[5] == "2.00" for r in rows[1:])
    with pytest.raises(ValueError, match="'sgd' and 'adam'"):
        we.alpha_table(ex["x"], ex["W"], A0, B0, ex["y_true"], lrs={"sgd": 0.1})


def test_first_moves_names_the_matrix_that_moves_first_from_each_zero_start():
    ex = we.example()
    starts = {"B = 0": we.lora_init(4, 4, 2, zero="B"), "A = 0": we.lora_init(4, 4, 2, zero="A")}
    lines = we.first_moves(ex["x"], ex["W"], ex["y_true"], starts).splitlines()
    assert lines[0].startswith("B = 0: ΔW = 0 at start: True | |∇A| = 0.0000") and lines[0].endswith("moves first: ['B']")
    assert lines[1].startswith("A = 0: ΔW = 0 at start: True") and "|∇B| = 0.0000" in lines[1] and lines[1].endswith("['A']")


def test_as_lora_linear_takes_the_weights_as_they_are_and_rows_in():
    ex = we.example()
    lora = we.as_lora_linear(ex["W"], ex["A"], ex["B"])
    assert lora.scaling == 1 and lora.base.weight.dtype == torch.float64
    y = lora(torch.from_numpy(ex["x"].T)).detach().numpy()
    assert np.allclose(y, ((ex["W"] + ex["B"] @ ex["A"]) @ ex["x"]).T, rtol=0, atol=1e-12)
    assert np.allclose(lora.delta_weight().detach().numpy(), ex["B"] @ ex["A"], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="lora_B"):
        we.as_lora_linear(ex["W"], ex["A"], ex["B"][:, :1])
