"""lora_edu.lessons.paper_analyses: the batched runs are notebook 05's runs, one by one; budgets and bad inputs."""
import warnings

import numpy as np
import pytest
import torch

from lora_edu.core import lora
from lora_edu.lessons import digits_task
from lora_edu.lessons import paper_analyses as pa


@pytest.fixture(scope="module")
def setting():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield digits_task.pretrained_model(epochs=3), digits_task.load_digits_task(rotate=True), digits_task.load_digits_task()
    finally:
        torch.set_num_threads(threads)


def test_batched_runs_equal_digits_task_adapt(setting):
    pretrained, rotated, upright = setting
    # one stack of rank 4 holding an r = 3 run (padded), runs that skip a layer, a stack starting at fc2, at the head
    specs = [pa.RunSpec(("fc1", "fc2"), 4), pa.RunSpec(("fc1",), 3, seed=1), pa.RunSpec(("fc2", "head"), 3),
             pa.RunSpec(("head",), 2, seed=2), pa.RunSpec(("full",))]
    assert pa._group_key(specs[0]) == pa._group_key(specs[1]) != pa._group_key(specs[2])
    runs = pa.train_runs(pretrained, rotated, specs, epochs=2, original=upright, eval_epochs=(1, 2))
    for spec, run in zip(specs, runs):
        method = "full" if spec.targets == ("full",) else "lora"
        ref = digits_task.adapt(pretrained, rotated, method, r=spec.r, epochs=2, targets=spec.targets, seed=spec.seed)
        np.testing.assert_allclose(run["history"], ref["history"], atol=1e-12, err_msg=spec.label)
        assert run["trainable"] == ref["trainable"], spec.label
        assert run["original_accuracy"] == digits_task.accuracy(ref["model"], upright.x_test, upright.y_test)
        for name in run.get("A", {}):
            np.testing.assert_allclose(run["A"][name], getattr(ref["model"], name).lora_A.detach().numpy(), atol=1e-12)
        assert set(run.get("A", {})) == (set() if method == "full" else set(spec.targets))


def test_trainable_count_matches_add_lora():
    shapes = pa.layer_shapes(digits_task.MLP())
    for targets in pa.all_target_sets():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # r = 16 > the head's 10: allowed, warned about
            model = lora.add_lora(digits_task.MLP(), list(targets), r=16, alpha=32)
        assert pa.trainable_count(pa.RunSpec(targets, 16), shapes) == lora.count_parameters(model)[0]
    assert pa.trainable_count(pa.RunSpec(("full",)), shapes) == lora.count_parameters(digits_task.MLP())[0]


def test_budget_specs_stay_within_the_budget_at_a_useful_rank():
    shapes = pa.layer_shapes(digits_task.MLP())
    specs = pa.budget_specs(2048, shapes)
    assert [s.targets for s in specs] == pa.all_target_sets() and len(specs) == 7
    assert all(pa.trainable_count(s, shapes) <= 2048 for s in specs)
    ranks = {s.targets: s.r for s in specs}
    assert ranks[("fc2",)] == 8 and ranks[("head",)] == 10 and ranks[("fc1", "fc2", "head")] == 3
    assert pa.rank_for_budget(("fc1",), 10, shapes) == 1   # never below 1


def test_a_spec_asked_for_twice_is_trained_once(setting):
    pretrained, rotated, _ = setting
    spec = pa.RunSpec(("head",), 1)
    first, second = pa.train_runs(pretrained, rotated, [spec, spec], epochs=1)
    assert first is second and pa.by_spec([first])[spec] is first


@pytest.mark.parametrize("kwargs, match", [
    (dict(targets=("fc3",), r=2), "distinct names"),
    (dict(targets=(), r=2), "distinct names"),
    (dict(targets=("fc2", "fc1"), r=2), "model's order"),
    (dict(targets=("fc1",), r=0), "positive int"),
    (dict(targets=("full",), r=4), "no rank"),
])
def test_bad_specs_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pa.RunSpec(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(specs=[]), "empty"),
    (dict(specs=[("fc1",)]), "RunSpec"),
    (dict(specs=[pa.RunSpec(("fc1",), 1)], epochs=0), "epochs"),
    (dict(specs=[pa.RunSpec(("fc1",), 1)], epochs=2, eval_epochs=(1,)), "eval_epochs"),
])
def test_bad_train_runs_arguments(setting, kwargs, match):
    pretrained, rotated, _ = setting
    with pytest.raises(ValueError, match=match):
        pa.train_runs(pretrained, rotated, **kwargs)


def test_bad_budget():
    with pytest.raises(ValueError, match="budget"):
        pa.rank_for_budget(("fc1",), 0, pa.layer_shapes(digits_task.MLP()))
