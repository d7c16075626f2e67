"""The two exercise kinds beyond "write this formula": predictions (PredictExercise) and open tasks (CriterionExercise)."""
import warnings

import numpy as np
import pytest

from lora_edu.course import answer_calls, exercise_bank
from lora_edu.course.exercises import FAILED, NOT_ATTEMPTED, PASSED, CriterionExercise, PredictExercise


def predict(compute=lambda: 4.0000001, **kwargs):
    return PredictExercise("p", compute, hint="", solution="", why="It is 4.", **kwargs)


def test_a_prediction_is_judged_against_the_computed_value_and_whole_numbers_are_fine():
    assert predict().check(lambda: 4).passed                     # an int for a float: a prediction, not a dtype lesson
    assert predict(lambda: [4.0, 2.0]).check(lambda: (4, 2)).passed
    result = predict().check(lambda: 4.0)
    assert result.message.startswith("correct prediction. It is 4.")


def test_a_wrong_prediction_is_not_told_the_answer_and_is_sent_to_the_cells_below():
    result = predict().check(lambda: 3)
    assert result.status == FAILED and "your prediction 3 is not what the course computes" in result.message
    assert "4" not in result.message.replace("(to 0.1%)", "") and "visible example" not in result.message
    assert predict(lambda: [4.0, 2.0]).check(lambda: 4).message.startswith("wrong shape for your prediction")


def test_a_prediction_left_as_the_placeholder_is_not_attempted():
    def stub():
        raise NotImplementedError()

    assert predict().check(stub).status == NOT_ATTEMPTED and predict().check(lambda: None).status == NOT_ATTEMPTED


def test_the_computation_runs_once_and_only_when_judged():
    calls = []
    ex = predict(lambda: calls.append(1) or 4.0)
    assert calls == []
    ex.check(lambda: 4)
    ex.check(lambda: 5)
    assert calls == [1]


def test_a_prediction_grades_from_plain_outcomes_as_the_grader_does():
    ex = predict()
    cases = ex.cases(np.random.default_rng(0))
    assert cases == [("for your prediction", {})]
    honest = [answer_calls.call(lambda: 4, inputs, cpu_seconds=5, wall_seconds=60) for _, inputs in cases]
    wrong = [answer_calls.call(lambda: 5, inputs, cpu_seconds=5, wall_seconds=60) for _, inputs in cases]
    assert ex.judge(cases, honest).status == PASSED and ex.judge(cases, wrong).status == FAILED


def open_task():
    def criterion(answer, n):
        return None if answer.shape == () and answer >= n else f"{float(answer):g} is below {n}"

    return CriterionExercise("open", criterion, example=dict(n=3), random_case=lambda rng: dict(n=int(rng.integers(5, 9))),
                             hint="", solution="", why="Any big enough number will do.")


def test_an_open_task_accepts_every_answer_that_meets_its_criterion():
    assert open_task().check(lambda n: n).passed and open_task().check(lambda n: 10 * n + 0.5).passed
    result = open_task().check(lambda n: n + 1)
    assert result.message.startswith("meets the target on the visible example and 5 hidden cases. Any big")


def test_an_open_task_says_what_fell_short_with_the_visible_examples_inputs():
    result = open_task().check(lambda n: 1)
    assert result.status == FAILED and "on the visible example: 1 is below 3" in result.message
    assert "The visible example's inputs: n=3." in result.message
    hard_coded = open_task().check(lambda n: 3)
    assert hard_coded.status == FAILED and "on hidden case 1: 3 is below" in hard_coded.message


def test_an_open_task_refuses_nan_text_and_none_before_its_criterion_runs():
    assert "NaN or inf" in open_task().check(lambda n: float("nan")).message
    assert "expected a number or an array" in open_task().check(lambda n: "big").message
    assert open_task().check(lambda n: None).status == NOT_ATTEMPTED


def test_warnings_in_an_honest_open_answer_cost_nothing():
    def noisy(n):
        warnings.warn("just saying", UserWarning, stacklevel=1)
        return n

    result = open_task().check(noisy)
    assert result.passed and "warnings never cost marks" in result.message


def test_a_wrong_prediction_of_several_numbers_says_which_are_off_not_what_they_should_be():
    ex = predict(lambda: [4.0, 2.0])
    assert "(to 0.1%): number 2 of the 2 is off." in ex.check(lambda: [4, 4]).message
    assert "numbers 1 and 2 of the 2 are off." in ex.check(lambda: [1, 1]).message
    assert "2.0" not in ex.check(lambda: [1, 1]).message and "of the" not in predict().check(lambda: 3).message


# ---------------------------------------------------------------- notebook 04's open task, lora_plan


def _no_training(*args, **kwargs):
    raise AssertionError("the criterion trained on a plan it should have refused")


@pytest.mark.parametrize("plan,words", [
    ([10**9, 16, 0.02], "whole number from 1 to min(d, k) = 48"),
    ([-3, 16, 0.02], "whole number from 1"), ([2.5, 16, 0.02], "whole number from 1"),
    ([50, 16, 0.02], "whole number from 1 to min(d, k) = 48"),
    ([9, 16, 0.02], "over the budget of 1,000"),
    ([8, 1e308, 0.02], "alpha must be in (0, 10,000]"), ([8, 0, 0.02], "alpha must be in"),
    ([8, -16, 0.02], "alpha must be in"), ([8, 16, 1e9], "lr in (0, 1]"), ([8, 16, 0], "lr in (0, 1]"),
    ([[8, 16, 0.02]], "return three numbers"), ([8, 16], "return three numbers"),
])
def test_lora_plan_refuses_a_plan_out_of_range_before_training(monkeypatch, plan, words):
    from lora_edu.course.exercise_bank import _plan_problem
    from lora_edu.lessons import rank_experiments

    monkeypatch.setattr(rank_experiments, "fit_lora_factors", _no_training)
    assert words in _plan_problem(np.array(plan, dtype=float), d=64, k=48, budget=1000)


def test_lora_plan_diverging_or_stalled_fits_fail_with_advice_and_nan_never_reaches_the_criterion():
    ex = exercise_bank.lora_plan()
    assert "diverged" in ex.check(lambda d, k, budget: [min(budget // (d + k), d, k), 10_000, 1.0]).message
    assert "has not converged in 150 steps" in ex.check(lambda d, k, budget: [min(budget // (d + k), d, k), 16, 1e-9]).message
    assert "NaN or inf" in ex.check(lambda d, k, budget: [float("nan"), 16, 0.02]).message


def test_lora_plan_the_solution_passes_every_hidden_case_and_a_fixed_rank_does_not():
    """The grader draws hidden cases from a secret seed: the course's answer must pass whatever it draws."""
    from lora_edu.course.exercise_bank import _plan_problem

    ex, rng = exercise_bank.lora_plan(), np.random.default_rng(13)
    cases = [ex.random_case(rng) for _ in range(40)]
    assert not [c for c in cases if _plan_problem(np.array([min(c["budget"] // (c["d"] + c["k"]), c["d"], c["k"]), 16, 0.02]), **c)]
    assert not ex.check(lambda d, k, budget: [8, 16, 0.02]).passed


# ---------------------------------------------------------------- the bug hunts of notebooks 02 and 05


def _defined(code: str, name: str):
    import torch

    namespace = {"np": np, "torch": torch}
    exec(code, namespace)
    return namespace[name]


def test_the_merge_bug_hunt_fails_the_planted_bug_and_a_fix_that_stops_merging_and_passes_the_real_fix():
    """A learner who sees "before ≠ after" may make merge() a no-op: the plain matmul with the merged W catches that."""
    ex = exercise_bank.outputs_around_merge()
    assert not ex.check(_defined(exercise_bank.BUGGY_MERGE, "outputs_around_merge")).passed
    no_merge = exercise_bank.BUGGY_MERGE.replace("        self.W = self.W + self.scaling * (self.B @ self.A)\n", "")
    assert no_merge != exercise_bank.BUGGY_MERGE
    assert not ex.check(_defined(no_merge, "outputs_around_merge")).passed
    assert ex.check(_defined(ex._solution, "outputs_around_merge")).passed


def test_the_transpose_bug_hunt_fails_the_planted_bug_and_passes_the_fix():
    ex = exercise_bank.torch_style_output()
    assert "wrong values on the visible example" in ex.check(_defined(exercise_bank.BUGGY_TORCH_STYLE, "torch_style_output")).message
    assert ex.check(_defined(ex._solution, "torch_style_output")).passed


def test_a_predicted_count_must_be_exact():
    """predict_trainable is a count of parameters: off by one is wrong (the default 0.1% would pass 1,793 for 1,792)."""
    ex = exercise_bank.predict_trainable()
    assert ex.check(lambda: 1792).passed and ex.check(lambda: 1792.0).passed
    result = ex.check(lambda: 1793)
    assert not result.passed and "is not what the course computes (exactly)." in result.message
