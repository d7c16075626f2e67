"""The two exercise kinds beyond "write this formula": predictions (PredictExercise) and open tasks (CriterionExercise)."""
import warnings

import numpy as np

from lora_edu.course import answer_calls
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
