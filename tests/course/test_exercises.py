"""The exercise system: every failure mode gets its own message, and nothing ever raises."""
import time

import numpy as np
import pytest
import torch

from lora_edu.course.exercises import FAILED, NOT_ATTEMPTED, PASSED, FunctionExercise, ValueExercise


def delta_w_exercise(**kwargs):
    def case(rng):
        d, k, r = (int(n) for n in rng.integers(2, 9, size=3))
        return dict(A=rng.normal(size=(r, k)), B=rng.normal(size=(d, r)))

    example = dict(A=np.arange(8.0).reshape(2, 4) / 10, B=np.ones((4, 2)))
    return FunctionExercise(
        "delta_w", reference=lambda A, B: B @ A, example=example, random_case=case,
        hint="B @ A", solution="return B @ A", why="ΔW has W's shape.", **kwargs,
    )


def check(answer, **kwargs):
    return delta_w_exercise(**kwargs).check(answer)


def test_correct_function_passes_with_why_it_matters(capsys):
    result = check(lambda A, B: B @ A)
    assert result.passed and result.score == 1.0 and result.status == PASSED
    assert result.cases_passed == result.cases_total == 6
    assert "PASSED" in capsys.readouterr().out and "W's shape" in result.message


def test_torch_answers_are_accepted():
    assert check(lambda A, B: torch.tensor(B) @ torch.tensor(A)).passed


def test_hard_coded_answer_is_told_it_only_works_for_the_example():
    fixed = np.ones((4, 2)) @ (np.arange(8.0).reshape(2, 4) / 10)
    result = check(lambda A, B: fixed)
    assert result.status == FAILED
    assert "only works for that example" in result.message and "hidden case 1" in result.message


def test_exception_inside_the_learners_function():
    result = check(lambda A, B: B @ A.T)  # shapes do not line up
    assert result.status == FAILED and "raised ValueError on the visible example" in result.message


def test_wrong_shape():
    result = check(lambda A, B: (B @ A)[:, :2])
    assert result.status == FAILED and "wrong shape on the visible example" in result.message


def test_wrong_shape_message_names_both_shapes():
    result = check(lambda A, B: A)
    assert "expected (4, 4), got (2, 4)" in result.message


def test_wrong_dtype():
    result = check(lambda A, B: (B @ A).astype(int))
    assert result.status == FAILED and "wrong dtype" in result.message and "int64" in result.message


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_and_inf():
    result = check(lambda A, B: B @ A / 0.0)
    assert result.status == FAILED and "NaN or inf" in result.message


def test_changing_a_frozen_input_in_place():
    def sneaky(A, B):
        A *= 1.0
        A += 0.0
        A[0, 0] = 99.0
        return B @ A

    result = check(sneaky)
    assert result.status == FAILED and "changed its input A in place" in result.message


def test_changing_a_frozen_torch_input_in_place():
    ex = FunctionExercise(
        "scale", reference=lambda W: W * 2, example=dict(W=torch.ones(2, 2)),
        random_case=lambda rng: dict(W=torch.randn(3, 3)), hint="", solution="", why="",
    )
    assert "changed its input W" in ex.check(lambda W: W.mul_(2)).message


def test_cpu_time_limit_interrupts_an_endless_loop():
    def forever(A, B):
        while True:
            pass

    result = check(forever, cpu_seconds=0.3)
    assert result.status == FAILED and "more than 0.3 s of CPU time on the visible example" in result.message


def test_waiting_is_not_cpu_time_so_a_slow_machine_costs_no_marks():
    """A correct answer that takes 0.5 s of wall-clock time (a busy grader) but little CPU passes."""
    def slow_but_right(A, B):
        time.sleep(0.5)
        return B @ A

    assert check(slow_but_right, cpu_seconds=0.3).passed


def test_wall_clock_backstop_stops_code_that_waits_forever():
    def waits(A, B):
        time.sleep(60)

    result = check(waits, wall_seconds=0.3)
    assert result.status == FAILED and "still running after 0.3 s" in result.message


def test_warnings_and_stderr_never_cost_marks(capsys):
    import sys
    import warnings

    def noisy(A, B):
        warnings.warn("this is deprecated", DeprecationWarning, stacklevel=1)
        print("debugging", file=sys.stderr)
        return B @ A

    result = check(noisy)
    captured = capsys.readouterr()
    assert result.passed and "this is deprecated" in result.message and "debugging" in result.message
    assert captured.err == "", "nbgrader scores a graded cell that wrote to stderr as 0"


def test_using_the_course_package_fails_with_the_reason():
    import lora_edu as le

    namespace = {"le": le}
    exec("def delta(A, B):\n    return le.worked_example.example()['B'] @ A", namespace)
    result = check(namespace["delta"])
    assert result.status == FAILED and "uses le from the course package" in result.message


def test_mark_returns_the_score_for_learners_and_asserts_under_nbgrader(monkeypatch):
    passed, failed = check(lambda A, B: B @ A), check(lambda A, B: B @ A + 1)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    assert passed.mark() == 1.0 and failed.mark() == 0.0
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert passed.mark() == 1.0
    with pytest.raises(AssertionError, match="wrong values"):
        failed.mark()


def test_an_object_pretending_to_be_a_tensor_is_not_a_number():
    class Fake:
        __module__ = "torch"

        def detach(self):
            return self

        def numpy(self):
            return self

    result = check(lambda A, B: Fake())
    assert result.status == FAILED and "expected a number or an array" in result.message


def test_wrong_values_show_expected_and_got():
    result = check(lambda A, B: B @ A + 1)
    assert result.status == FAILED and "wrong values on the visible example" in result.message and "expected" in result.message


def test_not_a_function():
    result = check(np.zeros((4, 4)))
    assert result.status == FAILED and "expected a function" in result.message


def test_returning_the_wrong_type():
    result = check(lambda A, B: "B @ A")
    assert result.status == FAILED and "expected a number or an array" in result.message


@pytest.mark.parametrize("placeholder", [None, Ellipsis])
def test_placeholder_is_not_attempted(placeholder):
    result = check(placeholder)
    assert result.status == NOT_ATTEMPTED and result.score == 0.0


def test_nbgrader_stub_is_not_attempted():
    def stub(A, B):
        # YOUR CODE HERE
        raise NotImplementedError()

    result = check(stub)
    assert result.status == NOT_ATTEMPTED and "YOUR CODE HERE" in result.message


def test_function_returning_none_is_not_attempted_and_mentions_return():
    result = check(lambda A, B: None)
    assert result.status == NOT_ATTEMPTED and "return" in result.message


def test_a_broken_checker_still_does_not_raise():
    ex = FunctionExercise("broken", reference=lambda x: 1 / 0, example=dict(x=1.0),
                          random_case=lambda rng: dict(x=1.0), hint="", solution="", why="")
    result = ex.check(lambda x: x)
    assert result.status == FAILED and "checker itself failed" in result.message


def test_value_exercise():
    ex = ValueExercise("budget", expected=84.0, rtol=1e-3, hint="h", solution="s", why="w")
    assert ex.check(84.0).passed
    assert ex.check(np.float32(84.0)).passed
    assert ex.check(None).status == NOT_ATTEMPTED
    wrong = ex.check(56.0)
    assert wrong.status == FAILED and "expected 84, got 56" in wrong.message
    assert "NaN" in ex.check(float("nan")).message


def test_tensor_value_exercise():
    ex = ValueExercise("dw", expected=np.eye(2), hint="h", solution="s", why="w")
    assert ex.check(torch.eye(2)).passed
    assert "wrong shape" in ex.check(torch.eye(3)).message


def test_hint_and_solution_print(capsys):
    ex = delta_w_exercise()
    ex.hint()
    ex.solution()
    out = capsys.readouterr().out
    assert "Hint for delta_w: B @ A" in out and "One solution for delta_w" in out


def test_result_repr_is_readable_for_graders():
    result = check(lambda A, B: B @ A)
    assert repr(result) == "CheckResult(exercise='delta_w', status='passed', score=1.0)"


def test_a_failure_on_the_visible_example_shows_its_inputs():
    result = check(lambda A, B: B @ A + 1)
    assert "The visible example's inputs: A=[[0.0, 0.1, 0.2, 0.3], [0.4, 0.5, 0.6, 0.7]], B=[[1, 1], [1, 1], [1, 1], [1, 1]]." in result.message


def test_a_helper_defined_in_another_cell_is_named_because_the_grader_runs_only_the_answer_cell():
    namespace = {"__name__": "__main__"}
    exec(compile("def helper(A, B):\n    return B @ A\n", "<cell 1>", "exec"), namespace)
    exec(compile("def delta(A, B):\n    return helper(A, B)\n", "<cell 2>", "exec"), namespace)
    result = check(namespace["delta"])
    assert result.status == FAILED and "uses helper, defined in another cell" in result.message
    exec(compile("def helper2(A, B):\n    return B @ A\ndef delta2(A, B):\n    return helper2(A, B)\n", "<cell 3>", "exec"), namespace)
    assert check(namespace["delta2"]).passed


def test_a_float32_answer_is_told_about_precision_not_about_copying_numbers():
    ex = FunctionExercise("gb", reference=lambda n: n * 12 / 1e9, example=dict(n=7_000_000_000),
                          random_case=lambda rng: dict(n=int(rng.integers(10**9, 10**11))), rtol=1e-9, hint="", solution="", why="")
    result = ex.check(lambda n: torch.tensor(n * 12 / 1e9))
    assert result.status == FAILED and "float32" in result.message and "close but not exact" in result.message
    assert "only works for that example" not in result.message
