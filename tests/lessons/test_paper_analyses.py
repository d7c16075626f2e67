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


def test_study_specs_one_seed():
    shapes = pa.layer_shapes(digits_task.MLP())
    specs = pa.study_specs(shapes, seed=2)
    assert list(specs) == list(pa.STUDY_LRS) and all(s.seed == 2 for group in specs.values() for s in group)
    main = specs[pa.STUDY_LRS[0]]
    assert len(main) == len(set(main)) == 24   # grid 15 + budget 7 + fc2 r 8, 64 + all layers r 64 + full, less repeats
    assert set(pa.grid_specs(pa.GRID_ROWS, pa.GRID_RANKS, 2)) <= set(main) and set(pa.budget_specs(pa.BUDGET, shapes, 2)) <= set(main)
    assert specs[pa.STUDY_LRS[1]] == [pa.RunSpec(pa.ALL_LAYERS, 16, 2), pa.RunSpec(("full",), None, 2)]


def test_study_record_round_trip_and_summaries():
    spec = pa.RunSpec(("fc2",), 4, 1)
    run = dict(spec=spec, trainable=1024, history=np.array([0.2, 0.8, 0.9]), original_history=np.array([0.9, 0.5, 0.4]),
               train_loss_history=np.array([2.0, 0.5123456, 0.1]))
    rec = pa.study_record(run, 0.01, 450, 450)
    assert rec["new_correct"] == [90, 360, 405] and rec["train_loss"][1] == 0.51235
    other = dict(rec, seed=0, new_correct=[45, 90, 360])
    study = pa.load_study(dict(n_test_new=450, n_test_original=450, runs=[rec, other]))
    assert set(study) == {(spec, 0.01), (pa.RunSpec(("fc2",), 4, 0), 0.01)}
    epochs = (1, 2, 5)
    assert pa.at_epoch(study[spec, 0.01], "history", 2, epochs) == 0.8
    with pytest.raises(ValueError, match="was not evaluated"):
        pa.at_epoch(study[spec, 0.01], "history", 3, epochs)
    assert pa.over_seeds(study, ("fc2",), 4, 0.01, "history", 5, seeds=(0, 1), eval_epochs=epochs) == pytest.approx((0.85, 0.8, 0.9))
    assert pa.kept_when_learned(study[spec, 0.01], 0.8, epochs) == (2, 0.5)
    assert pa.kept_when_learned(study[spec, 0.01], 0.95, epochs) is None


def test_stored_study_reproduces(setting):
    """Runs of the stored study, trained again for 20 epochs in other stacks, give exactly the stored accuracies."""
    from lora_edu import data as stored_data

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pretrained = digits_task.pretrained_model()
        _, rotated, upright = setting
        stored = stored_data.load_json("paper_analyses_study.json")
        study = pa.load_study(stored)
        assert (stored["epochs"], tuple(stored["eval_epochs"]), tuple(stored["seeds"])) == (
            pa.STUDY_EPOCHS, pa.STUDY_EVAL_EPOCHS, pa.STUDY_SEEDS)
        specs = [pa.RunSpec(("fc1",), 10, 1), pa.RunSpec(("head",), 16, 2), pa.RunSpec(("full",), None, 0)]
        runs = pa.by_spec(pa.train_runs(pretrained, rotated, specs, epochs=20, original=upright, eval_epochs=range(1, 21)))
        for spec in specs:
            assert np.array_equal(runs[spec]["history"], study[spec, 0.01]["history"][:20]), spec.label
            assert np.array_equal(runs[spec]["original_history"], study[spec, 0.01]["original_history"][:20]), spec.label
    finally:
        torch.set_num_threads(threads)
