"""An exercise kind for answers that are a class or a function of a model: :class:`ProbeExercise`.

Why a kind of its own: when the learner builds LoRA (notebook 05), the answer is a ``LoRALinear``
class, an ``add_lora`` that rewires a model, a training loop, a whole adaptation. None of them returns
one value to compare. A *probe* (:mod:`lora_edu.course.probes`) exercises the answer on a case (builds
a layer around a frozen weight, calls it, trains, merges) and returns a record of named numbers; a
*judge* compares that record with references computed here, in the trusted process, before any
learner code ran (they travel with the case, in :attr:`Case.secret`, which is never sent).

The notebook's check and the grader do the same thing, as for every exercise: the check runs the probe
in the learner's kernel, the grader in its sandbox (the job names the probe; only plain data comes back),
and both judge with :meth:`ProbeExercise.judge`.

The grader's feedback is plain (``judge(..., plain=True)``, issue 26; see :mod:`lora_edu.course.exercises`):
in the sandbox the probe runs after the student's code, which may replace it, so a probe's error text and the
record's values are the student's, and could carry the secret cases. Plain feedback never repeats them: a
probe's error becomes a fixed sentence, a record that cannot be read is named only in the course's own words
(:data:`answer_calls.CANNED`), and each judge is asked for its ``visible=False`` wording, which holds nothing of
the record's values and nothing of the case (neither inputs nor references). The pass note (``describe``),
computed from the record, is the notebook's only.
"""
from __future__ import annotations

import dis
import functools
import types
from collections.abc import Callable
from typing import Any

import numpy as np

from lora_edu.course import answer_calls, probes
from lora_edu.course.answer_calls import RAISED, STUB
from lora_edu.course.exercises import (
    FAILED,
    NOT_ATTEMPTED,
    PASSED,
    CheckResult,
    FunctionExercise,
    _course_names_used,
    _Feedback,
    _globals_read,
    _helpers_from_other_cells,
)


class Case(dict):
    """A case's inputs (the dict: what the learner's code gets) and ``secret``: what only the judge sees.

    ``secret`` holds the references and any held-out data, computed when the case is drawn, in the
    trusted process. The grader sends a case's items to the sandbox and never ``secret``.
    """

    def __init__(self, inputs: dict, secret: dict | None = None):
        super().__init__(inputs)
        self.secret = secret or {}


def _functions_of(answer: Any) -> list:
    """The functions an answer is made of: itself, or for a class the methods it defines."""
    if not isinstance(answer, type):
        return [answer]
    found = []
    for value in vars(answer).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            value = value.fget
        if isinstance(value, types.FunctionType):
            found.append(value)
    return found


#: libraries an answer must not use, and why; the grader's sandbox hides them (``sandbox.HIDDEN_PACKAGES``)
FORBIDDEN_LIBRARIES = {"peft": "PEFT, whose LoRA would answer the exercise for you",
                       "sklearn": "scikit-learn, whose digits include the held-out ones the check scores with"}


def _code_objects(code: types.CodeType):
    """``code`` and every code object nested in it (functions, lambdas, comprehensions, classes defined inside)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _modules_imported(fn: Any) -> set[str]:
    """Top-level names of the modules ``fn`` imports in its body: ``import x``, ``from x import y``, and
    ``importlib.import_module("x")`` / ``__import__("x")`` with a literal name. A global import is seen by
    :func:`_globals_read`; this sees the ones inside the function, which that cannot.
    """
    found = set()
    top = getattr(fn, "__code__", None)
    for code in _code_objects(top) if top is not None else ():
        dynamic = {"import_module", "__import__"} & set(code.co_names)
        for ins in dis.get_instructions(code):
            if isinstance(ins.argval, str) and (ins.opname == "IMPORT_NAME" or (dynamic and ins.opname == "LOAD_CONST")):
                found.add(ins.argval.split(".")[0])   # a literal that is no module name matches nothing below
    return found


def _from(obj: Any, packages: tuple) -> bool:
    """Whether ``obj`` (a module, a class of the answer's ancestry, a global it reads) comes from one of ``packages``."""
    module = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", None)
    return isinstance(module, str) and module.split(".")[0] in packages


def _top(obj: Any) -> str:
    """The top-level package ``obj`` (a module, a class, a function) comes from."""
    module = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", "")
    return str(module).split(".")[0]


def _from_course(obj: Any) -> bool:
    """Whether ``obj`` (a class of the answer's ancestry, or the answer itself) was defined in the course package."""
    return _from(obj, ("lora_edu",))


class ProbeExercise(FunctionExercise):
    """An exercise whose answer is exercised by a probe, and whose record is judged against references.

    ``probe`` names a function of :data:`probes.PROBES`; ``random_case(rng)`` returns a :class:`Case` (its
    ``secret`` holds the references); ``judge_record(record, case, visible)`` returns None when the record
    is right, else what is wrong, in words the learner can act on. Numbers only when ``visible`` (the notebook's
    visible example): with ``visible=False`` (a hidden case, and every case of the grader's plain feedback) the
    words say how an answer failed and hold nothing of the record's values or shapes, nor of the case's inputs or
    references, and ``visible`` changes the words only, never the verdict. ``kind`` is "class" or
    "function"; ``uses`` names answers of earlier exercises the answer may use (they are answer cells too,
    so the grader has them).
    """

    def __init__(self, name: str, probe: str, judge_record: Callable[[dict, Case, bool], str | None], example: Case,
                 random_case: Callable[[np.random.Generator], Case], *, kind: str = "function", uses: tuple = (),
                 describe: Callable[[dict, Case], str] | None = None, **kwargs):
        super().__init__(name, reference=None, example=example, random_case=random_case, **kwargs)
        if probe not in probes.PROBES:
            raise ValueError(f"no probe named {probe!r}; the probes are {sorted(probes.PROBES)}")
        self.probe, self.judge_record, self.kind, self.uses, self.describe = probe, judge_record, kind, tuple(uses), describe

    def call(self, answer: Any, inputs: dict) -> dict:
        """Run the probe on ``answer`` for one case, under the CPU and wall-clock limits (what the grader's sandbox does)."""
        return answer_calls.call(functools.partial(probes.PROBES[self.probe], answer), inputs,
                                 cpu_seconds=self.cpu_seconds, wall_seconds=self.wall_seconds, encoder=answer_calls.encode_record)

    def _check(self, answer: Any) -> CheckResult:
        what = "class" if self.kind == "class" else "function"
        if answer is None or answer is Ellipsis:
            raise _Feedback(NOT_ATTEMPTED, f"the placeholder is still in place: define your {what} and pass it in.")
        if not callable(answer) or (self.kind == "class" and not isinstance(answer, type)):
            raise _Feedback(FAILED, f"expected a {what}, got {answer_calls.encode(answer).get('description', type(answer).__name__)}. "
                                    f"Pass the {what} itself" + (", not an object made from it." if self.kind == "class" else ", without calling it."))
        functions = _functions_of(answer)
        imported = {m for f in functions for m in _modules_imported(f)}
        course_names = sorted({n for f in functions for n in _course_names_used(f)}
                              | {k.__name__ for k in getattr(answer, "__mro__", (answer,)) if _from_course(k)}
                              | {f"an import of {m}" for m in imported if m == "lora_edu"})
        if course_names:
            raise _Feedback(FAILED, f"your {what} uses {', '.join(course_names)} from the course package. The grader runs it "
                                    "without the package (it holds the reference answers): write it with PyTorch.")
        used = {n: obj for f in functions for n, obj, _ in _globals_read(f) if _from(obj, FORBIDDEN_LIBRARIES)}
        used |= {k.__name__: k for k in getattr(answer, "__mro__", ()) if _from(k, FORBIDDEN_LIBRARIES)}
        libraries = {_top(obj): FORBIDDEN_LIBRARIES[_top(obj)] for obj in used.values()}
        libraries |= {m: FORBIDDEN_LIBRARIES[m] for m in imported if m in FORBIDDEN_LIBRARIES}
        if libraries:
            names = ", ".join(sorted(used) + [f"an import of {m}" for m in sorted(imported & set(FORBIDDEN_LIBRARIES))])
            raise _Feedback(FAILED, f"your {what} uses {names} from {'; and '.join(libraries[k] for k in sorted(libraries))}. "
                                    "The grader's sandbox does not have it: write it with PyTorch, from the notebook alone.")
        helpers = sorted({n for f in functions for n in _helpers_from_other_cells(f)} - set(self.uses))
        if helpers:
            raise _Feedback(FAILED, f"your {what} uses {', '.join(helpers)}, defined in another cell. The grader runs only the "
                                    "answer cells (the ones that said YOUR CODE HERE): move it into this exercise's answer cell.")
        cases, outcomes = self._run_cases(answer)
        return self._described(self._passed(outcomes), cases, outcomes)

    def judge(self, cases: list[tuple[str, dict]], outcomes: list[dict | None], *, plain: bool = False) -> CheckResult:
        """The verdict on ``outcomes`` (one per case, None where none came back). Never raises; what the grader calls.

        With ``plain=True`` (the grader) every message is its plain version (see the module's docstring) and a
        pass carries no ``describe`` note: its numbers come from the record. ``details["case"]`` is the failing case.
        """
        result = super().judge(cases, outcomes, plain=plain)
        return result if plain or not result.passed else self._described(result, cases, outcomes)

    def _described(self, result: CheckResult, cases: list, outcomes: list[dict]) -> CheckResult:
        if self.describe is not None:  # e.g. the held-out accuracy the capstone reached on the visible example
            try:
                note = self.describe(answer_calls.decode_record(outcomes[0]["answer"]), cases[0][1])
            except Exception:  # a note must never turn a pass into a failure
                note = None
            if note:
                result.message = result.message.replace(". ", f". {note} ", 1)
        return result

    def _verdict(self, n_cases: int) -> str:
        return f"passes every check on the visible example and {n_cases - 1} hidden case{'s' if n_cases != 2 else ''}"

    def judge_case(self, n_done: int, where: str, inputs: dict, outcome: dict | None) -> None:
        """As for a function, without the "visible example's inputs" note: the probe's messages say what was tried.

        A probe's error text is shown by the notebook's check only: in the grader's sandbox the student's code may
        have replaced the probe, and its words (which quote the case: ``LoRALinear(base, r=3, alpha=8)``) could carry
        anything, so the plain version is a fixed sentence.
        """
        what = "class" if self.kind == "class" else "function"
        if isinstance(outcome, dict) and outcome.get("status") == STUB and self.kind == "class":
            raise _Feedback(NOT_ATTEMPTED, "your class still raises NotImplementedError: write your code where it says YOUR CODE HERE.",
                            plain=True)
        if isinstance(outcome, dict) and outcome.get("status") == RAISED:
            error = outcome.get("error")
            if isinstance(error, str) and error.startswith("ProbeError: "):
                raise _Feedback(FAILED, f"{where}: {answer_calls._short(error.removeprefix('ProbeError: '))}",
                                plain=f"{where}: the check stopped at a problem with your {what} (the grader does not repeat "
                                      "the check's words, which can quote your code's: run the check in your notebook, which "
                                      "names the problem on the visible example).")
        self._judge_case(n_done, where, inputs, outcome)

    def _judge_answer(self, n_done: int, where: str, inputs: dict, plain: Any) -> None:
        try:
            record = answer_calls.decode_record(plain)
        except ValueError as exc:
            described = plain.get("description") if isinstance(plain, dict) else None   # the course's own words only
            said = f", got {described}" if described in answer_calls.CANNED.values() else ""
            raise _Feedback(FAILED, f"what came back {where} could not be read ({exc}).",
                            plain=f"what came back {where} could not be read as a record of named numbers{said}.") from None
        if not isinstance(inputs, Case):
            raise _Feedback(FAILED, "the checker itself failed (a case without references); please report it.", plain=True)
        problem, hidden = self._problem(record, inputs, n_done == 0), None
        if problem:
            hidden = problem if n_done else self._problem(record, inputs, False)  # the words of a hidden case: nothing of the record
            raise _Feedback(FAILED, f"{where}: {problem}", plain=f"{where}: {hidden or 'what came back is not right.'}")

    def _problem(self, record: dict, case: Case, visible: bool) -> str | None:
        """The judge's verdict; a field it could not read (:class:`FieldError`) is the problem, in :func:`field`'s words."""
        try:
            return self.judge_record(record, case, visible)
        except FieldError as exc:
            return f"{exc}."


# ---------------------------------------------------------------- helpers for judges


class FieldError(ValueError):
    """A record's field that is missing, not numbers, of the wrong shape or not finite: the message is the learner's reason."""


def field(record: dict, name: str, shape: tuple | None = None, visible: bool = True) -> np.ndarray:
    """Field ``name`` of a record as a float64 array of ``shape``; :class:`FieldError` (the learner-facing reason) otherwise.

    Without ``visible`` the reason names no shape and no description but the course's own (:data:`answer_calls.CANNED`).
    """
    value = record.get(name)
    if value is None:
        raise FieldError(f"{name} is missing")
    if isinstance(value, str):
        said = f" ({value})" if visible or value in answer_calls.CANNED.values() else ""
        raise FieldError(f"{name} is not numbers{said}")
    value = np.asarray(value, dtype=np.float64)
    if shape is not None and value.shape != tuple(shape):
        raise FieldError(f"{name} has shape {value.shape}, expected {tuple(shape)}" if visible else f"{name} has the wrong shape")
    if not np.all(np.isfinite(value)):
        raise FieldError(f"{name} contains NaN or inf")
    return value


def differs(got: np.ndarray, expected: np.ndarray, visible: bool, *, rtol: float = 1e-7, atol: float = 1e-9) -> str | None:
    """None if ``got`` matches ``expected``; else how it differs (shapes and the size of the difference only on the visible example)."""
    if got.shape != expected.shape:
        return f"shape {got.shape} instead of {expected.shape}" if visible else "wrong shape"
    if np.allclose(got, expected, rtol=rtol, atol=atol):
        return None
    return f"largest difference {np.max(np.abs(got - expected)):.3g}" if visible else "wrong values"


__all__ = ["Case", "ProbeExercise", "FieldError", "field", "differs", "PASSED", "FAILED", "NOT_ATTEMPTED"]
