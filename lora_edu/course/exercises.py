"""Exercises with immediate feedback: ``ex.check(answer)``, ``ex.hint()``, ``ex.solution()``.

Why this exists: a learner alone in Jupyter needs to know at once whether an answer is
right, and *why not* when it is wrong; an instructor needs the same checks to grade a
class automatically. So a check

* compares with the visible example **and** with hidden randomized cases (fresh shapes and
  values), so an answer hard-coded to the example is caught and told so;
* never raises into the notebook: every way an answer can go wrong (an exception inside
  the learner's function, wrong type, shape or dtype, NaN/inf, an input changed in place,
  running past a time limit, plain wrong numbers) is turned into one short message;
* returns a :class:`CheckResult` that a grader can read (``.passed``, ``.score``).

An answer that is still the placeholder (``None``, or a function that raises
``NotImplementedError`` as nbgrader's student stub does) is reported as "not attempted
yet", so an untouched notebook runs top to bottom without error and scores zero.
"""
from __future__ import annotations

import copy
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PASSED, FAILED, NOT_ATTEMPTED = "passed", "failed", "not attempted"


@dataclass
class CheckResult:
    """What one check found. ``score`` is 1.0 for a pass and 0.0 otherwise (what nbgrader reads)."""

    exercise: str
    status: str
    message: str
    cases_passed: int = 0
    cases_total: int = 0
    details: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @property
    def score(self) -> float:
        return 1.0 if self.passed else 0.0

    def __str__(self) -> str:
        mark = {PASSED: "✅ PASSED", FAILED: "❌ NOT YET", NOT_ATTEMPTED: "⏳ NOT ATTEMPTED YET"}[self.status]
        return f"[{self.exercise}] {mark}: {self.message}"

    def __repr__(self) -> str:
        return f"CheckResult(exercise={self.exercise!r}, status={self.status!r}, score={self.score})"


class _Feedback(Exception):
    """Raised inside a check to stop at the first problem; carries the learner-facing message."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class _TimeLimit(BaseException):
    """Raised by the alarm inside a learner's function; a BaseException so that ``except Exception`` in their code cannot swallow it."""


@contextmanager
def _time_limit(seconds: float):
    """Interrupt Python code that runs past ``seconds`` (SIGALRM; main thread on Unix only).

    Elsewhere the call runs to the end and its duration is checked afterwards.
    """
    use_alarm = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not use_alarm:
        yield
        return

    def _raise(signum, frame):
        raise _TimeLimit()

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _describe(value: Any) -> str:
    """A short description of what came back: type, shape and dtype where there are some."""
    if _is_tensor(value):
        return f"torch.Tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, np.ndarray):
        return f"numpy array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '…' if len(text) > 60 else text}"


def _is_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _as_array(value: Any) -> np.ndarray:
    if _is_tensor(value):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _snapshot(value: Any) -> Any:
    """A copy to compare against afterwards, to catch in-place changes to a frozen input."""
    if _is_tensor(value):
        return value.detach().clone()
    return copy.deepcopy(value)


def _unchanged(before: Any, after: Any) -> bool:
    if _is_tensor(before) or isinstance(before, np.ndarray):
        a, b = _as_array(before), _as_array(after)
        return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    try:
        return bool(before == after)
    except Exception:  # objects without a usable ==: nothing to compare
        return True


def _fmt(values: np.ndarray) -> str:
    """Numbers as a reader wants them: whole numbers without ``.0``, others to 6 decimals."""
    values = np.asarray(values, dtype=np.float64)
    if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        shown = values.astype(np.int64).tolist()
    else:
        shown = np.round(values, 6).tolist()
    return str(shown)


def _compare(expected: Any, got: Any, *, rtol: float, atol: float, where: str) -> None:
    """Raise :class:`_Feedback` naming the first way ``got`` differs from ``expected``."""
    if got is None:
        raise _Feedback(NOT_ATTEMPTED, f"got None {where}. If you have started, check that your code ends with `return`.")
    exp = _as_array(expected)
    is_arraylike = _is_tensor(got) or isinstance(got, (np.ndarray, list, tuple, int, float, np.number))
    if not is_arraylike:
        raise _Feedback(FAILED, f"expected a number or an array {where}, got {_describe(got)}.")
    raw = _as_array(got)
    try:
        arr = raw.astype(np.float64) if raw.dtype != object else None
    except (TypeError, ValueError):
        arr = None
    if arr is None:
        raise _Feedback(FAILED, f"expected numbers {where}, got {_describe(got)} (not numeric).")
    if arr.shape != exp.shape:
        raise _Feedback(FAILED, f"wrong shape {where}: expected {exp.shape}, got {arr.shape}.")
    if np.issubdtype(exp.dtype, np.floating) and not np.issubdtype(raw.dtype, np.floating):
        raise _Feedback(
            FAILED,
            f"wrong dtype {where}: expected floating point numbers, got {raw.dtype} "
            "(integer arithmetic drops the fractions; use floats).",
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        raise _Feedback(FAILED, f"the answer {where} contains NaN or inf at {int(bad.sum())} of {arr.size} entries.")
    if not np.allclose(arr, exp, rtol=rtol, atol=atol):
        diff = float(np.max(np.abs(arr - exp)))
        if exp.size <= 16:
            shown = f"expected {_fmt(exp)}, got {_fmt(arr)}"
        else:
            shown = f"largest difference {diff:.3g}"
        raise _Feedback(FAILED, f"wrong values {where}: {shown}.")


class _Exercise:
    """What value and function exercises share: the texts, and turning problems into messages."""

    def __init__(self, name: str, *, hint: str, solution: str, why: str, rtol: float = 1e-6, atol: float = 1e-8):
        self.name, self._hint, self._solution, self.why = name, hint, solution, why
        self.rtol, self.atol = rtol, atol

    def hint(self) -> None:
        """Print a nudge that does not give the answer away."""
        print(f"Hint for {self.name}: {self._hint}")

    def solution(self) -> None:
        """Print one correct answer (try first: the check tells you exactly what is off)."""
        print(f"One solution for {self.name}:\n{self._solution}")

    def check(self, answer: Any) -> CheckResult:
        """Check ``answer``, print the feedback, and return a :class:`CheckResult`. Never raises."""
        try:
            result = self._check(answer)
        except _Feedback as fb:
            result = CheckResult(self.name, fb.status, fb.message)
        except Exception as exc:  # a bug in a checker must not crash a learner's notebook either
            result = CheckResult(self.name, FAILED, f"the checker itself failed ({type(exc).__name__}: {exc}); please report it.")
        print(result)
        return result

    def _check(self, answer: Any) -> CheckResult:  # pragma: no cover - overridden
        raise NotImplementedError


class ValueExercise(_Exercise):
    """An exercise whose answer is a number, an array or a tensor."""

    def __init__(self, name: str, expected: Any, **kwargs):
        super().__init__(name, **kwargs)
        self.expected = expected

    def _check(self, answer: Any) -> CheckResult:
        if answer is None or answer is Ellipsis:
            raise _Feedback(NOT_ATTEMPTED, "the placeholder is still in place: replace it with your answer.")
        _compare(self.expected, answer, rtol=self.rtol, atol=self.atol, where="")
        return CheckResult(self.name, PASSED, f"correct. {self.why}", 1, 1)


class FunctionExercise(_Exercise):
    """An exercise whose answer is a function, checked on the visible example and on hidden cases.

    ``reference(**inputs)`` gives the right output; ``random_case(rng)`` makes a fresh dict of
    inputs (new shapes and values) for the hidden cases. Every input is treated as frozen:
    a function that changes one in place fails with a message saying which.
    """

    def __init__(
        self,
        name: str,
        reference: Callable[..., Any],
        example: dict,
        random_case: Callable[[np.random.Generator], dict],
        *,
        hidden_cases: int = 5,
        time_limit: float = 2.0,
        seed: int = 1234,
        **kwargs,
    ):
        super().__init__(name, **kwargs)
        self.reference, self.example, self.random_case = reference, example, random_case
        self.hidden_cases, self.time_limit, self.seed = hidden_cases, time_limit, seed

    def _check(self, answer: Any) -> CheckResult:
        if answer is None or answer is Ellipsis:
            raise _Feedback(NOT_ATTEMPTED, "the placeholder is still in place: define your function and pass it in.")
        if not callable(answer):
            raise _Feedback(FAILED, f"expected a function, got {_describe(answer)}. Pass the function itself, without calling it.")
        rng = np.random.default_rng(self.seed)
        cases = [("on the visible example", self.example)]
        cases += [(f"on hidden case {i + 1}", self.random_case(rng)) for i in range(self.hidden_cases)]
        for n_done, (where, inputs) in enumerate(cases):
            args = {k: _snapshot(v) for k, v in inputs.items()}
            frozen = {k: _snapshot(v) for k, v in inputs.items()}
            out = self._call(answer, args, where)
            changed = [k for k in args if not _unchanged(frozen[k], args[k])]
            if changed:
                raise _Feedback(
                    FAILED,
                    f"your function changed its input {', '.join(changed)} in place {where}; inputs are frozen "
                    "(like LoRA's base weight). Compute a new array instead of modifying the argument (avoid +=, [...] =, .add_()).",
                )
            try:
                _compare(self.reference(**inputs), out, rtol=self.rtol, atol=self.atol, where=where)
            except _Feedback as fb:
                if n_done > 0 and fb.status == FAILED:
                    shapes = ", ".join(f"{k}{tuple(np.shape(_as_array(v)))}" for k, v in inputs.items() if np.ndim(_as_array(v)))
                    fb.message += (
                        f" It passed the visible example but not this fresh case ({shapes or 'new values'}): "
                        "it only works for that example. Compute the answer from the inputs, not from numbers you copied."
                    )
                raise
        n = len(cases)
        return CheckResult(self.name, PASSED, f"correct on the visible example and {n - 1} hidden cases. {self.why}", n, n)

    def _call(self, fn: Callable, args: dict, where: str) -> Any:
        start = time.perf_counter()
        try:
            with _time_limit(self.time_limit):
                out = fn(**args)
        except NotImplementedError:
            raise _Feedback(NOT_ATTEMPTED, "your function still raises NotImplementedError: write your code where it says YOUR CODE HERE.") from None
        except _TimeLimit:
            raise _Feedback(FAILED, f"your function ran longer than the {self.time_limit:g} s limit {where} (an endless loop?).") from None
        except Exception as exc:
            raise _Feedback(FAILED, f"your function raised {type(exc).__name__} {where}: {exc}") from exc
        elapsed = time.perf_counter() - start
        if elapsed > self.time_limit:
            raise _Feedback(FAILED, f"your function took {elapsed:.1f} s {where}; the limit is {self.time_limit:g} s.")
        return out
