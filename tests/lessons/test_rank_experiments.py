"""The claims notebook 04 draws from lora_edu.lessons.rank_experiments, pinned on cheap subsets."""
import numpy as np
import pytest
import torch

from lora_edu.core import lowrank
from lora_edu.lessons import digits_task
from lora_edu.lessons import rank_experiments as rx


def test_numpy_adam_matches_torch_adam():
    target = rx.fit_target(6, 5, seed=1)
    steps, r, s, lr = 5, 2, 1.7, 0.01
    ours = rx.fit_lora_factors(target, r, s, "adam", lr, steps, seed=3)["loss"]
    rng = np.random.default_rng(3 + r)
    B = torch.zeros(6, r, dtype=torch.float64, requires_grad=True)
    A = torch.tensor(rng.uniform(-1, 1, size=(r, 5)) / np.sqrt(5), requires_grad=True)
    opt = torch.optim.Adam([B, A], lr=lr)
    theirs = []
    for _ in range(steps + 1):
        loss = 0.5 * ((s * B @ A - torch.tensor(target)) ** 2).sum()
        theirs.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)


def test_fit_stops_a_diverging_run_without_warnings():
    with np.errstate(all="raise"):
        loss = rx.fit_lora_factors(rx.fit_target(), 1, 64.0, "sgd", 0.02, 50)["loss"]
    assert np.isnan(loss[-1]) and np.isfinite(loss[0])


def test_truncate_update_keeps_rank_r_of_the_update():
    torch.manual_seed(0)
    base, model = digits_task.MLP(), digits_task.MLP()
    cut = rx.truncate_update(model, base, 3)
    delta = (cut.fc2.weight - base.fc2.weight).detach()
    assert torch.linalg.matrix_rank(delta) == 3
    expected = lowrank.TruncatedSVD((model.fc2.weight - base.fc2.weight).detach().numpy()).approx(3)
    np.testing.assert_allclose(delta.numpy(), expected, atol=1e-10)
    assert torch.equal(cut.head.weight, model.head.weight) and torch.equal(cut.fc2.bias, model.fc2.bias)


def test_plain_gd_favours_a_middle_rank_but_adam_the_largest():
    sweep = rx.scaling_sweep(ranks=(2, 8, 16, 64), alphas=(2, 16), rules=("alpha/r",))
    assert rx.best_rank(sweep["sgd"]["alpha/r"][16]) == 16      # plain GD at α = 16: a middle rank wins
    assert rx.best_rank(sweep["sgd"]["alpha/r"][2]) == 2        # at small α the smallest rank wins
    for alpha in (2, 16):
        assert rx.best_rank(sweep["adam"]["alpha/r"][alpha]) == 64   # trivially: r = 64 is full rank, floor 0
    svd = lowrank.TruncatedSVD(rx.fit_target())
    for r, curve in sweep["adam"]["alpha/r"][16].items():     # Adam reaches the Eckart–Young floor
        assert abs(curve[-1] - 0.5 * svd.relative_error(r) ** 2) < 1e-3


@pytest.fixture(scope="module")
def digits():
    from lora_edu.course.seeding import seed_everything

    seed_everything(0)
    pretrained = digits_task.pretrained_model()
    rotated = digits_task.load_digits_task(rotate=True)
    return pretrained, rotated


def test_update_size_shrinks_under_alpha_over_r_and_holds_under_rslora(digits):
    sizes = rx.early_update_sizes(*digits, ranks=(1, 4, 16, 64))
    for opt in ("adam", "sgd"):
        by_r = [sizes[opt]["alpha/r"][r]["update"] for r in (1, 4, 16, 64)]
        assert all(a > b for a, b in zip(by_r, by_r[1:])), (opt, by_r)
        sq = [sizes[opt]["alpha/sqrt(r)"][r]["update"] for r in (1, 4, 16, 64)]
        assert sq[-1] / sq[0] > 5 * by_r[-1] / by_r[0]        # rsLoRA shrinks far less (or not at all)
        const = [sizes[opt]["alpha=2r"][r]["update"] for r in (1, 4, 16, 64)]
        assert all(a < b for a, b in zip(const, const[1:]))     # α = 2r: the update grows with r
    sq = [sizes["adam"]["alpha/sqrt(r)"][r]["update"] for r in (1, 4, 16, 64)]
    assert max(sq) / min(sq) < 2                                # within a factor of two under Adam


def test_lora_beats_the_truncated_full_update_at_small_ranks(digits):
    pretrained, rotated = digits
    full = digits_task.adapt(pretrained, rotated, "full")["model"]
    compare = rx.lora_vs_truncation(pretrained, full, rotated, ranks=(1, 2, 4, 8))
    for r in (1, 2, 4, 8):
        assert compare["lora"][r] > compare["truncated"][r] + 0.05, r


def test_diverged_runs_lists_the_plain_gd_runs_that_blow_up():
    sweep = rx.scaling_sweep(ranks=(1, 2, 4, 8, 16, 32, 64), alphas=(16, 32, 64), rules=("alpha/r",), optimizers=("sgd",))
    assert rx.diverged_runs(sweep["sgd"]["alpha/r"]) == {32: [1], 64: [1, 2]}
    assert rx.best_rank(sweep["sgd"]["alpha/r"][64]) not in (1, 2)


def test_lora_parameter_share_reads_the_layer_shapes():
    model = digits_task.MLP()                                   # fc1 64→128, fc2 128→128
    assert rx.lora_parameter_share(model, 4) == 4 * (64 + 128 + 128 + 128) / (64 * 128 + 128 * 128)
    assert rx.lora_parameter_share(model, 8, layers=("fc2",)) == 8 * 256 / 128**2


def test_pretrained_model_is_confidently_wrong_on_rotated_digits(digits):
    before = rx.loss_before_training(*digits)
    assert before["loss"] > 10 * np.log(10) and before["accuracy"] < 0.2 and before["median_confidence"] > 0.99


def test_fit_table_prints_the_floor_and_both_optimizers_final_losses():
    sweep = rx.scaling_sweep(ranks=(1, 64), alphas=(16,), rules=("alpha/r",))
    lines = rx.fit_table(sweep, alpha=16).splitlines()
    assert lines[0].startswith("α = 16, s = α/r (loss at start: 0.500)") and lines[0].split()[-2:] == ["r=1", "r=64"]
    floor_64 = float(lines[1].split()[-1])
    assert floor_64 == 0.0 and lines[2].startswith("Adam: loss after 150 steps") and lines[3].startswith("plain GD")
    assert float(lines[2].split()[-2]) == round(float(sweep["adam"]["alpha/r"][16][1][-1]), 3)


def test_rank_choice_table_reads_accuracies_gains_errors_and_shares():
    compare = {"lora": {1: 0.5, 4: 0.9}, "truncated": {1: 0.2, 4: 0.6}}
    update = np.diag([2.0, 1.0, 0.0, 0.0])
    model = digits_task.MLP()
    table = rx.rank_choice_table(compare, update, model)
    rows = table.splitlines()
    assert len(rows) == 4 and rows[2].startswith("| 1 | 50.0% |  | 45% |")
    assert rows[3].startswith("| 4 | 90.0% | +40.0 points | 0% |")
    assert rows[3].endswith(f"| {rx.lora_parameter_share(model, 4):.0%} |")
