"""The grader's plain feedback (issue 26, attacks 3 and 4): which case failed and how, never a value or a text the student made."""
import numpy as np
import pytest

from lora_edu.course import answer_calls, exercise_bank


def _outcome(status=answer_calls.RETURNED, answer=None, error="", changed=(), notes=()):
    return dict(status=status, answer=answer, error=error, changed=list(changed), notes=list(notes), cpu_seconds=0.0)


def _judge(ex, answers_for_hidden, **outcome):
    """Right on the visible example, then ``outcome`` (or the given answer) on hidden case 1."""
    cases = ex.cases(np.random.default_rng(0))
    right = _outcome(answer=answer_calls.encode(ex.reference(**cases[0][1])))
    hidden = _outcome(answer=answers_for_hidden, **outcome)
    return cases, ex.judge(cases, [right, hidden] + [right] * (len(cases) - 2), plain=True)


SECRET_TEXT = "d=4321 k=8765"


@pytest.mark.parametrize("answer,outcome,says", [
    (answer_calls.encode(123456789), {}, "wrong values on hidden case 1."),
    (answer_calls.encode([4321, 8765]), {}, "wrong shape on hidden case 1"),
    ({"kind": "other", "description": f"str '{SECRET_TEXT}'"}, {}, "got something else"),
    (None, {"status": answer_calls.RAISED, "error": f"ValueError: {SECRET_TEXT}"}, "raised ValueError on hidden case 1"),
    (None, {"status": answer_calls.RAISED, "error": "Hidden_4321_8765: boom"}, "raised an exception on hidden case 1"),
    (answer_calls.encode(0), {"changed": [SECRET_TEXT, "d"]}, "changed its input d in place on hidden case 1"),
    (answer_calls.encode(float("nan")), {}, "contains NaN or inf."),
])
def test_a_failure_on_a_hidden_case_says_how_and_nothing_more(answer, outcome, says):
    ex = exercise_bank.lora_param_count()
    cases, result = _judge(ex, answer, **outcome)
    assert not result.passed and says in result.message and result.details["case"] == 1, result.message
    expected = ex.reference(**cases[1][1])
    assert "4321" not in result.message and "8765" not in result.message and str(expected) not in result.message


def test_a_pass_names_warning_classes_but_not_their_texts():
    ex = exercise_bank.lora_param_count()
    cases = ex.cases(np.random.default_rng(0))
    outcomes = [_outcome(answer=answer_calls.encode(ex.reference(**c)), notes=[f"UserWarning: {SECRET_TEXT}",
                                                                               f"printed to stderr: {SECRET_TEXT}",
                                                                               f"Hidden_4321: {SECRET_TEXT}"]) for _, c in cases]
    result = ex.judge(cases, outcomes, plain=True)
    assert result.passed and "UserWarning, printing to stderr" in result.message and "4321" not in result.message


def test_the_notebooks_own_check_keeps_the_details():
    ex = exercise_bank.lora_param_count()
    cases = ex.cases(np.random.default_rng(0))
    right = _outcome(answer=answer_calls.encode(ex.reference(**cases[0][1])))
    result = ex.judge(cases, [right, _outcome(answer=answer_calls.encode(0))] + [right] * (len(cases) - 2))
    assert f"expected {ex.reference(**cases[1][1])}, got 0" in result.message


def test_predictions_and_open_tasks_do_not_quote_the_answer():
    predict = exercise_bank.predict_trainable()
    result = predict.judge(predict.cases(None), [_outcome(answer=answer_calls.encode(4321))], plain=True)
    assert "your prediction is not what the course computes" in result.message and "4321" not in result.message
    plan = exercise_bank.lora_plan()
    cases = plan.cases(np.random.default_rng(0))
    result = plan.judge(cases, [_outcome(answer=answer_calls.encode([4321, 16, 0.02]))] * len(cases), plain=True)
    assert "does not meet the target" in result.message and "4321" not in result.message


def test_meta_and_sparse_tensors_are_named_honestly():
    torch = pytest.importorskip("torch")
    for value, words in ((torch.zeros(2, device="meta"), "a meta tensor"), (torch.eye(2).to_sparse(), "a sparse tensor")):
        outcome = answer_calls.call(lambda v=value: v, {}, cpu_seconds=2, wall_seconds=5)
        assert outcome["answer"]["description"] in answer_calls.CANNED.values() and words in outcome["answer"]["description"]
