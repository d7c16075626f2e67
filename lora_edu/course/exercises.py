"""Exercises with immediate feedback: ``ex.check(answer)``, ``ex.hint()``, ``ex.solution()``.

Why this exists: a learner alone in Jupyter needs to know at once whether an answer is
right, and *why not* when it is wrong. So a check

* compares with the visible example **and** with hidden randomized cases (fresh shapes and
  values), so an answer hard-coded to the example is caught and told so;
* never raises into the notebook: every way an answer can go wrong (an exception inside
  the learner's function, wrong type, shape or dtype, NaN/inf, an input changed in place,
  running past its CPU-time limit, plain wrong numbers) is turned into one short message;
  warnings and prints to stderr are reported, never penalised;
* returns a :class:`CheckResult` (``.passed``, ``.score``, ``.mark()`` for graded cells).

An answer that is still the placeholder (``None``, or a function that raises
``NotImplementedError`` as nbgrader's student stub does) is reported as "not attempted
yet", so an untouched notebook runs top to bottom without error and scores zero.

The check runs in the learner's own kernel, so learner code can change it: it is for learning.
Marks an instructor can trust come from ``python -m lora_edu.grade``, which calls the same
:meth:`FunctionExercise.judge_case` on outcomes from a sandboxed process (see ``lora_edu.grade``).
Both go through :mod:`lora_edu.course.answer_calls`, so the notebook predicts the grade.

The grader's feedback is *plain* (``judge(..., plain=True)``): it says which case failed and how (wrong
values, wrong shape, an exception of a named built-in type, ...) but never an expected value, a hidden
input, or anything the student's code produced (its values, texts, type names): the student's code
could put the secret cases there (issue 26). Each ``_Feedback`` says what its plain version is; one
that does not (a new exercise kind's) gets a generic sentence. In a graded course
(:mod:`lora_edu.course.graded`) ``solution()`` refuses and references are sealed.
"""
from __future__ import annotations

import builtins
import os
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lora_edu.course import answer_calls, graded
from lora_edu.course.answer_calls import CPU_LIMIT, RAISED, STUB, WALL_LIMIT

PASSED, FAILED, NOT_ATTEMPTED = "passed", "failed", "not attempted"

#: limits for one call of a learner's function: CPU time judges it; wall time only stops code that waits
CPU_SECONDS = 5.0
WALL_SECONDS = 60.0


@dataclass
class CheckResult:
    """What one check found. ``score`` is 1.0 for a pass and 0.0 otherwise."""

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

    def mark(self) -> float:
        """The score, for the last line of a graded cell.

        Under nbgrader's autograde or validate (which set ``NBGRADER_EXECUTION``) a check that did
        not pass raises, so the cell earns nothing whether or not a number is displayed: nbgrader
        gives full credit to a graded cell that shows no number and no error. For learners it just
        returns the score, so an untouched notebook still runs top to bottom.
        """
        if not self.passed and os.environ.get("NBGRADER_EXECUTION"):
            raise AssertionError(f"[{self.exercise}] {self.status}: {self.message}")
        return self.score

    def __str__(self) -> str:
        mark = {PASSED: "✅ PASSED", FAILED: "❌ NOT YET", NOT_ATTEMPTED: "⏳ NOT ATTEMPTED YET"}[self.status]
        return f"[{self.exercise}] {mark}: {self.message}"

    def __repr__(self) -> str:
        return f"CheckResult(exercise={self.exercise!r}, status={self.status!r}, score={self.score})"


class _Feedback(Exception):
    """Raised inside a check to stop at the first problem; carries the learner-facing message.

    ``plain`` is what the grader says instead (see the module's docstring): ``True`` when ``message``
    holds nothing from the student's code or the secret cases, a text to say instead, or ``False``
    (the default, safe for new raise sites) for a generic sentence naming the case.
    """

    def __init__(self, status: str, message: str, *, rounding: bool = False, plain: str | bool = False):
        super().__init__(message)
        self.status, self.message, self.rounding = status, message, rounding
        self.plain = message if plain is True else plain or None


#: exception and warning classes the plain feedback may name: Python's own (a class the student defines could be
#: named after a secret value), and NumPy's linear-algebra error
_NAMED_ERRORS = frozenset(name for name, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, BaseException)
                          ) | {"LinAlgError", "AxisError"}


#: what Python raises where the grader's sandbox refuses a new thread (its seccomp filter): an honest answer that uses a
#: thread pool works in the notebook and fails only there, so the plain feedback says why, in fixed words
_NO_THREAD = "RuntimeError: can't start new thread"


def _plain_kind(text: str) -> str:
    """``"ValueError: ..."`` -> ``"ValueError"`` when that is a name the plain feedback may say, else ``"an exception"``."""
    if text.strip() == _NO_THREAD:
        return "RuntimeError (the grader runs your code on one thread and cannot start another: compute without threads)"
    kind = text.partition(":")[0].strip()
    return kind if kind in _NAMED_ERRORS else "an exception"


def _as_array(value: Any) -> np.ndarray:
    if answer_calls._is_tensor(value):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _fmt(values: np.ndarray) -> str:
    """Numbers as a reader wants them: whole numbers without ``.0``, others to 6 decimals."""
    values = np.asarray(values, dtype=np.float64)
    if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        shown = values.astype(np.int64).tolist()
    else:
        shown = np.round(values, 6).tolist()
    return str(shown)


def _show_inputs(inputs: dict) -> str:
    """The inputs as a learner can reproduce them: small arrays in full, larger ones by shape."""
    shown = []
    for name, value in inputs.items():
        array = _as_array(value)
        if array.ndim == 0:
            shown.append(f"{name}={_fmt(array.reshape(1))[1:-1]}")
        elif array.size <= 16:
            shown.append(f"{name}={_fmt(array)}")
        else:
            shown.append(f"{name} of shape {array.shape}")
    return ", ".join(shown)


def _read_answer(plain: Any, where: str) -> np.ndarray | None:
    """The answer as an array (or None), from its plain-data record; feedback for anything else."""
    try:
        answer = answer_calls.decode(plain)
    except ValueError as exc:
        raise _Feedback(FAILED, f"the answer {where} could not be read as numbers ({exc}).",
                        plain=f"the answer {where} could not be read as numbers.") from None
    if isinstance(answer, str):
        said = answer if answer in answer_calls.CANNED.values() else "something else"
        raise _Feedback(FAILED, f"expected a number or an array {where}, got {answer}.",
                        plain=f"expected a number or an array {where}, got {said}.")
    return answer


def _compare(expected: Any, got: np.ndarray | None, *, rtol: float, atol: float, where: str) -> None:
    """Raise :class:`_Feedback` naming the first way ``got`` (a decoded answer) differs from ``expected``."""
    if got is None:
        raise _Feedback(NOT_ATTEMPTED, f"got None {where}. If you have started, check that your code ends with `return`.", plain=True)
    exp = _as_array(expected)
    if got.shape != exp.shape:
        raise _Feedback(FAILED, f"wrong shape {where}: expected {exp.shape}, got {got.shape}.",
                        plain=f"wrong shape {where}: your answer's shape is not the one expected.")
    if np.issubdtype(exp.dtype, np.floating) and not np.issubdtype(got.dtype, np.floating):
        raise _Feedback(
            FAILED,
            f"wrong dtype {where}: expected floating point numbers, got {got.dtype} "
            "(integer arithmetic drops the fractions; use floats).",
            plain=f"wrong dtype {where}: expected floating point numbers, got integers or booleans "
                  "(integer arithmetic drops the fractions; use floats).",
        )
    arr = got.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise _Feedback(FAILED, f"the answer {where} contains NaN or inf at {int(bad.sum())} of {arr.size} entries.",
                        plain=f"the answer {where} contains NaN or inf.")
    if not np.allclose(arr, exp, rtol=rtol, atol=atol):
        diff = float(np.max(np.abs(arr - exp)))
        if exp.size <= 16:
            shown = f"expected {_fmt(exp)}, got {_fmt(arr)}"
        else:
            shown = f"largest difference {diff:.3g}"
        if got.dtype.itemsize < 8 and np.issubdtype(got.dtype, np.floating) and np.allclose(arr, exp, rtol=1e-3, atol=atol):
            raise _Feedback(FAILED, f"close but not exact {where}: {shown}. Your answer is {got.dtype}, which keeps only a few "
                                    "significant digits: compute in float64 (NumPy's default; torch.tensor(..., dtype=torch.float64)) "
                                    "or return a Python float.", rounding=True,
                            plain=f"close but not exact {where}: your answer is float16 or float32, which keeps only a few "
                                  "significant digits: compute in float64 or return a Python float.")
        raise _Feedback(FAILED, f"wrong values {where}: {shown}.", plain=f"wrong values {where}.")


class _Exercise:
    """What value and function exercises share: the texts, and turning problems into messages."""

    def __init__(self, name: str, *, hint: str, solution: str, why: str, rtol: float = 1e-6, atol: float = 1e-8):
        self.name, self._hint, self._solution, self.why = name, hint, solution, why
        if graded.graded_course():  # not kept where a learner could print it
            self._solution = None
        self.rtol, self.atol = rtol, atol

    def hint(self) -> None:
        """Print a nudge that does not give the answer away."""
        print(f"Hint for {self.name}: {self._hint}")

    def solution(self) -> None:
        """Print one correct answer (try first: the check tells you exactly what is off); not in a graded course."""
        if graded.graded_course():
            print(f"{self.name}: {graded.REFUSAL}")
            return
        print(f"One solution for {self.name}:\n{self._solution}")

    def check(self, answer: Any) -> CheckResult:
        """Check ``answer``, print the feedback, and return a :class:`CheckResult`. Never raises."""
        result = self._guarded(self._check, answer)
        print(result)
        return result

    def _guarded(self, judge: Callable[..., CheckResult], *args) -> CheckResult:
        try:
            return judge(*args)
        except _Feedback as fb:
            return CheckResult(self.name, fb.status, fb.message)
        except Exception as exc:  # a bug in a checker must not crash a learner's notebook either
            return CheckResult(self.name, FAILED, f"the checker itself failed ({type(exc).__name__}: {exc}); please report it.")

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
        _compare(self.expected, _read_answer(answer_calls.encode(answer), ""), rtol=self.rtol, atol=self.atol, where="")
        return CheckResult(self.name, PASSED, f"correct. {self.why}", 1, 1)


def _globals_read(fn: Any) -> list[tuple[str, Any, types.CodeType]]:
    """(name, object, fn's code) for each global name ``fn`` reads that its module defines or imports."""
    code, namespace = getattr(fn, "__code__", None), getattr(fn, "__globals__", None)
    if code is None or not isinstance(namespace, dict):
        return []
    return [(name, namespace[name], code) for name in code.co_names if name in namespace]


def _course_names_used(fn: Any) -> list[str]:
    """Global names ``fn`` reads that come from the course package (``le``, or a function imported from it)."""
    def from_course(obj: Any) -> bool:
        module = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
        return isinstance(module, str) and module.split(".")[0] == "lora_edu"

    return [name for name, obj, _ in _globals_read(fn) if from_course(obj)]


def _helpers_from_other_cells(fn: Any) -> list[str]:
    """Functions and classes ``fn`` reads that were defined in another notebook cell (the grader runs only the answer cell)."""
    found = []
    for name, obj, code in _globals_read(fn):
        if getattr(obj, "__module__", None) != fn.__globals__.get("__name__"):
            continue  # imported (NumPy, torch, ...): the grader has those
        helper_code = getattr(obj, "__code__", None) or getattr(getattr(obj, "__init__", None), "__code__", None)
        if helper_code is not None and helper_code.co_filename != code.co_filename:
            found.append(name)
    return found


class FunctionExercise(_Exercise):
    """An exercise whose answer is a function, checked on the visible example and on hidden cases.

    ``reference(**inputs)`` gives the right output; ``random_case(rng)`` makes a fresh dict of
    inputs (new shapes and values) for the hidden cases. Every input is treated as frozen:
    a function that changes one in place fails with a message saying which. The notebook's check
    draws its hidden cases from the public ``seed``; the grader draws them from a secret one.
    """

    def __init__(
        self,
        name: str,
        reference: Callable[..., Any],
        example: dict,
        random_case: Callable[[np.random.Generator], dict],
        *,
        hidden_cases: int = 5,
        cpu_seconds: float = CPU_SECONDS,
        wall_seconds: float = WALL_SECONDS,
        seed: int = 1234,
        **kwargs,
    ):
        super().__init__(name, **kwargs)
        self.reference, self.example, self.random_case = graded.sealed(reference), example, random_case
        self.hidden_cases, self.cpu_seconds, self.wall_seconds, self.seed = hidden_cases, cpu_seconds, wall_seconds, seed

    def cases(self, rng: np.random.Generator) -> list[tuple[str, dict]]:
        """The visible example, then ``hidden_cases`` fresh cases drawn from ``rng``, each as (where, inputs)."""
        cases = [("on the visible example", self.example)]
        return cases + [(f"on hidden case {i + 1}", self.random_case(rng)) for i in range(self.hidden_cases)]

    def _check(self, answer: Any) -> CheckResult:
        if answer is None or answer is Ellipsis:
            raise _Feedback(NOT_ATTEMPTED, "the placeholder is still in place: define your function and pass it in.")
        if not callable(answer):
            raise _Feedback(FAILED, f"expected a function, got {answer_calls.encode(answer).get('description', type(answer).__name__)}. "
                                    "Pass the function itself, without calling it.")
        course_names = _course_names_used(answer)
        if course_names:
            raise _Feedback(FAILED, f"your function uses {', '.join(course_names)} from the course package. The grader runs your "
                                    "function without it (it holds the reference answers): write it with NumPy or PyTorch.")
        helpers = _helpers_from_other_cells(answer)
        if helpers:
            raise _Feedback(FAILED, f"your function uses {', '.join(helpers)}, defined in another cell. The grader runs only the "
                                    "answer cell (the one that said YOUR CODE HERE): move it into that cell.")
        return self._passed(self._run_cases(answer)[1])

    def call(self, answer: Any, inputs: dict) -> dict:
        """Call ``answer`` on one case under the CPU and wall-clock limits (what the grader's sandbox does)."""
        return answer_calls.call(answer, inputs, cpu_seconds=self.cpu_seconds, wall_seconds=self.wall_seconds)

    def _run_cases(self, answer: Any) -> tuple[list, list[dict]]:
        """The visible example and the hidden cases, each called and judged in turn (a failure stops at that case)."""
        cases = self.cases(np.random.default_rng(self.seed))
        outcomes = []
        for where, inputs in cases:
            outcomes.append(self.call(answer, inputs))
            self.judge_case(len(outcomes) - 1, where, inputs, outcomes[-1])
        return cases, outcomes

    def judge(self, cases: list[tuple[str, dict]], outcomes: list[dict | None], *, plain: bool = False) -> CheckResult:
        """The verdict on ``outcomes`` (one per case, None where none came back), as a :class:`CheckResult`. Never raises.

        What the grader calls with the outcomes from its sandbox, with ``plain=True`` (see the module's docstring);
        the notebook's check does the same case by case. ``details["case"]`` is the index of the failing case.
        """
        failed = {}

        def judge_all() -> CheckResult:
            for n, ((where, inputs), outcome) in enumerate(zip(cases, outcomes, strict=True)):
                try:
                    self.judge_case(n, where, inputs, outcome)
                except _Feedback as fb:
                    failed["case"] = n
                    if plain:
                        fb.message = fb.plain or f"your function's answer is not right {where}."
                    raise
                except Exception as exc:  # a checker's bug: in plain words, its message could quote the answer
                    if not plain:
                        raise
                    failed["case"] = n
                    raise _Feedback(FAILED, f"the checker itself failed ({type(exc).__name__}) {where}; please report it.") from None
            return self._passed(outcomes, plain=plain)

        result = self._guarded(judge_all)
        result.details.update(failed)
        return result

    def _passed(self, outcomes: list[dict], plain: bool = False) -> CheckResult:
        n = len(outcomes)
        notes = sorted({note for outcome in outcomes for note in outcome["notes"]})
        if plain:  # the notes' texts are the student's: only the built-in warning classes, and whether it printed
            kinds = sorted({_plain_kind(note) for note in notes} - {"an exception"})
            said = ", ".join(kinds + (["printing to stderr"] if any(n.startswith("printed to stderr") for n in notes) else []))
            extra = f" (Your function also reported {said or 'warnings'}: warnings never cost marks.)" if notes else ""
        else:
            extra = f" (Your function also reported {'; '.join(notes[:2])}: warnings never cost marks.)" if notes else ""
        return CheckResult(self.name, PASSED, f"{self._verdict(n)}. {self.why}{extra}", n, n)

    def _verdict(self, n_cases: int) -> str:
        """The first words of a pass."""
        return f"correct on the visible example and {n_cases - 1} hidden cases"

    def judge_case(self, n_done: int, where: str, inputs: dict, outcome: dict | None) -> None:
        """Raise :class:`_Feedback` if ``outcome`` (an :func:`answer_calls.call` record) is not right for ``inputs``.

        A failure on the visible example also shows that example's inputs, so the learner can reproduce it.
        """
        try:
            self._judge_case(n_done, where, inputs, outcome)
        except _Feedback as fb:
            if n_done == 0 and fb.status == FAILED:  # the visible example is public: its inputs may be said
                shown = f". The visible example's inputs: {_show_inputs(inputs)}."
                fb.message = fb.message.rstrip(".") + shown
                fb.plain = fb.plain and fb.plain.rstrip(".") + shown
            raise

    def _judge_case(self, n_done: int, where: str, inputs: dict, outcome: dict | None) -> None:
        if outcome is None:
            raise _Feedback(FAILED, f"no result came back {where}: the code in your solution cells stopped the process that "
                                    "ran it (os._exit, a crash, or running out of memory or time).", plain=True)
        try:
            outcome = answer_calls.check_outcome(outcome)
        except ValueError as exc:
            raise _Feedback(FAILED, f"the result {where} could not be read ({exc}).", plain=f"the result {where} could not be read.") from None
        status = outcome["status"]
        if status == STUB:
            raise _Feedback(NOT_ATTEMPTED, "your function still raises NotImplementedError: write your code where it says YOUR CODE HERE.",
                            plain=True)
        if status == CPU_LIMIT:
            raise _Feedback(FAILED, f"your function used more than {self.cpu_seconds:g} s of CPU time {where} (an endless loop?).",
                            plain=True)
        if status == WALL_LIMIT:
            raise _Feedback(FAILED, f"your function was still running after {self.wall_seconds:g} s {where} (is it waiting for something?).",
                            plain=True)
        if status == RAISED:
            kind, _, detail = outcome["error"].partition(": ")
            raise _Feedback(FAILED, f"your function raised {kind} {where}: {detail}",
                            plain=f"your function raised {_plain_kind(outcome['error'])} {where} (the check in your notebook shows "
                                  "the message on the visible example).")
        if outcome["changed"]:
            named = [name for name in inputs if name in outcome["changed"]]  # the inputs' names are ours; other text is not
            raise _Feedback(
                FAILED,
                f"your function changed its input {', '.join(outcome['changed'])} in place {where}; inputs are frozen "
                "(like LoRA's base weight). Compute a new array instead of modifying the argument (avoid +=, [...] =, .add_()).",
                plain=f"your function changed its input {', '.join(named) or 'arguments'} in place {where}; inputs are frozen "
                      "(like LoRA's base weight). Compute a new array instead of modifying the argument (avoid +=, [...] =, .add_()).",
            )
        self._judge_answer(n_done, where, inputs, outcome["answer"])

    def _judge_answer(self, n_done: int, where: str, inputs: dict, plain: Any) -> None:
        """Raise :class:`_Feedback` if the returned value (``plain``, as :func:`answer_calls.encode` wrote it) is wrong."""
        try:
            _compare(self.reference(**inputs), _read_answer(plain, where), rtol=self.rtol, atol=self.atol, where=where)
        except _Feedback as fb:
            if n_done > 0 and fb.status == FAILED and not fb.rounding:
                shapes = ", ".join(f"{k}{tuple(np.shape(_as_array(v)))}" for k, v in inputs.items() if np.ndim(_as_array(v)))
                fb.message += (
                    f" It passed the visible example but not this fresh case ({shapes or 'new values'}): "
                    "it only works for that example. Compute the answer from the inputs, not from numbers you copied."
                )
                fb.plain = fb.plain and fb.plain + (" It passed the visible example but not this fresh case: it may only work for "
                                                    "that example. Compute the answer from the inputs, not from numbers you copied.")
            raise


class PredictExercise(FunctionExercise):
    """Predict first: the learner commits a number (or a few) *before* the cell that computes it.

    The answer is a function with no arguments, ``def predict_…(): return …``, so the grader can call
    it in its sandbox like any other answer; it is judged against ``compute()``, the value the course
    computes (in the trusted process, once, lazily). There are no hidden cases: nothing varies.
    ``rtol`` defaults to 0.1%: a prediction of 4 for a computed 3.9999999 is right. A count must be exact:
    give it ``rtol=0, atol=0.5`` (0.1% of 1,792 would let 1,793 pass).
    """

    WHERE = "for your prediction"

    def __init__(self, name: str, compute: Callable[[], Any], *, rtol: float = 1e-3, atol: float = 1e-9, **kwargs):
        cache: list = []

        def reference():
            if not cache:
                cache.append(compute())
            return cache[0]

        super().__init__(name, reference=reference, example={}, random_case=lambda rng: {}, hidden_cases=0,
                         rtol=rtol, atol=atol, **kwargs)

    def cases(self, rng: np.random.Generator) -> list[tuple[str, dict]]:
        return [(self.WHERE, {})]

    def judge_case(self, n_done: int, where: str, inputs: dict, outcome: dict | None) -> None:
        """As for any function, without the "visible example's inputs" note: a prediction has none."""
        self._judge_case(n_done, where, inputs, outcome)

    def _judge_answer(self, n_done: int, where: str, inputs: dict, plain: Any) -> None:
        """Whole numbers are fine for a prediction (4 for 3.9999999); a wrong one is not told the answer."""
        got = _read_answer(plain, where)
        if got is not None and got.dtype != np.bool_:
            got = got.astype(np.float64)
        try:
            _compare(self.reference(), got, rtol=self.rtol, atol=self.atol, where=where)
        except _Feedback as fb:
            if fb.status == FAILED and fb.message.startswith("wrong values"):
                within = f"to {self.rtol:.1%}" if self.rtol else "exactly"   # a count is exact: rtol=0, atol=0.5
                fb.message = (f"your prediction {_fmt(got)} is not what the course computes ({within}){self._which_off(got)}. "
                              "Run the cells below: they compute it and show why; the exercise's hint() gives a nudge.")
                fb.plain = (f"your prediction is not what the course computes ({within}). Run the cells below the exercise: "
                            "they compute it and show why; the exercise's hint() gives a nudge.")
            raise

    def _which_off(self, got: np.ndarray) -> str:
        """For a prediction of several numbers, which of them are off: a learner who got one right keeps it."""
        if got.size < 2:
            return ""
        expected = _as_array(self.reference()).astype(np.float64)
        off = np.flatnonzero(~np.isclose(got.ravel(), expected.ravel(), rtol=self.rtol, atol=self.atol)) + 1
        numbers = ", ".join(map(str, off[:-1])) + (" and " if len(off) > 1 else "") + str(off[-1])
        return f": number{'s' if len(off) > 1 else ''} {numbers} of the {got.size} {'are' if len(off) > 1 else 'is'} off"

    def _verdict(self, n_cases: int) -> str:
        return "correct prediction"


class CriterionExercise(FunctionExercise):
    """An open task: any answer that meets a criterion passes, not one reference value.

    ``criterion(answer, **inputs)`` gets the returned value as a NumPy array (already decoded and
    checked to be finite numbers) and returns ``None`` when it is good enough, or a message saying
    what fell short and by how much. It runs in the trusted process (the notebook's or the
    grader's), so it may train a model on data the learner's function never sees. It must be a pure
    function of its arguments: the grader judges several students at once, in threads.
    """

    def __init__(self, name: str, criterion: Callable[..., str | None], example: dict,
                 random_case: Callable[[np.random.Generator], dict], **kwargs):
        super().__init__(name, reference=None, example=example, random_case=random_case, **kwargs)
        self.criterion = criterion

    def _judge_answer(self, n_done: int, where: str, inputs: dict, plain: Any) -> None:
        answer = _read_answer(plain, where)
        if answer is None:
            raise _Feedback(NOT_ATTEMPTED, f"got None {where}. If you have started, check that your code ends with `return`.", plain=True)
        values = answer.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise _Feedback(FAILED, f"the answer {where} contains NaN or inf.", plain=True)
        problem = self.criterion(values, **inputs)
        if problem:  # the criterion's words quote the answer's numbers (the student's): the plain version does not
            raise _Feedback(FAILED, f"{where}: {problem}", plain=f"{where}: the answer does not meet the target (the check in "
                                                                 "your notebook says why on the visible example).")

    def _verdict(self, n_cases: int) -> str:
        return f"meets the target on the visible example and {n_cases - 1} hidden cases"
