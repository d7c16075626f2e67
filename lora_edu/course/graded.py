"""The graded-course switch: one place that says whether this installation serves a graded class.

Why a switch: in self-study, ``ex.solution()`` is how a stuck learner moves on. In a graded course it
was how a student got full marks without solving anything (issue 26: pasting what ``solution()``
printed scored 19/19). So an instructor turns graded mode on, and then ``solution()`` refuses and an
exercise's reference answer is sealed (callable by the check, not printed or shown by ``inspect``).

It is on when the environment variable ``LORA_EDU_GRADED`` is set to anything but ``""``/``0``/``false``/``no``
(a JupyterHub's ``c.Spawner.environment``), or when a file named ``lora_edu_graded.txt`` lies in the
kernel's working folder (the instructor puts it in ``source/<assignment>/``; nbgrader's
``generate_assignment`` releases it with the notebooks). Both live on the student's machine, so a
student who wants to can turn it off, and the course's source (open, like the references in
``exercise_bank.py``) stays readable: graded mode removes the one-call shortcut, not the source. Marks
never depend on it: the grader (``python -m lora_edu.grade``) runs answer cells without the course
package and without the libraries listed in :data:`lora_edu.grade.sandbox.HIDDEN_MODULES`.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

ENV_VAR = "LORA_EDU_GRADED"
MARKER_FILE = "lora_edu_graded.txt"
REFUSAL = ("solutions are off in this graded course (your instructor turned graded mode on): the check tells you "
           "what is off, and hint() gives a nudge.")


def graded_course() -> bool:
    """Is graded mode on (the environment variable, or the marker file in the working folder)?"""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    return value not in ("", "0", "false", "no") or os.path.isfile(MARKER_FILE)


class _Sealed:
    """A reference answer that the check can call but a learner's ``print``/``repr``/``inspect.getsource`` does not show."""

    __slots__ = ("_call",)

    def __init__(self, fn: Callable[..., Any]):
        self._call = fn

    def __call__(self, *args, **kwargs):
        return self._call(*args, **kwargs)

    def __repr__(self) -> str:
        return "<the reference answer: not shown in a graded course>"


def sealed(fn: Callable[..., Any] | None) -> Callable[..., Any] | None:
    """``fn`` itself in self-study, a :class:`_Sealed` wrapper of it in graded mode (None stays None)."""
    return _Sealed(fn) if fn is not None and graded_course() else fn
