"""Every exercise in the bank: the solution it shows passes its own check, and a near miss does not."""
import inspect

import numpy as np
import pytest

from lora_edu.course import exercise_bank
from lora_edu.course.exercises import FunctionExercise

FACTORIES = [f for name, f in inspect.getmembers(exercise_bank, inspect.isfunction)
             if not name.startswith("_") and f.__module__ == exercise_bank.__name__]


def solution_function(ex):
    namespace = {"np": np}
    exec(ex._solution, namespace)  # noqa: S102 - the course's own solution text
    functions = [v for k, v in namespace.items() if inspect.isfunction(v)]
    assert len(functions) == 1, f"{ex.name}: the solution should define one function"
    return functions[0]


def test_the_bank_has_every_exercise():
    assert len(FACTORIES) >= 9


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_printed_solution_passes_and_a_near_miss_fails(factory):
    ex = factory()
    assert isinstance(ex, FunctionExercise)
    solution = solution_function(ex)
    assert ex.check(solution).passed, ex.check(solution).message

    def near_miss(**kwargs):
        return np.asarray(solution(**kwargs), dtype=float) * 1.01 + 1e-3

    assert not ex.check(near_miss).passed
