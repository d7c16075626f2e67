"""Grade a class: student code runs in a sandbox, marks are computed here, in the instructor's process.

The flow for one run:

1. read the instructor's ``source/<assignment>/`` notebooks: which cells are graded, for which exercise
   of ``lora_edu.course.exercise_bank``, checking which function (:mod:`.course_folder`);
2. draw every graded case from a secret seed, fresh for each run (the notebooks' checks use a public one);
3. for each student and notebook, run the student's solution cells and call their functions on those
   cases in a fresh sandboxed process (:mod:`.sandbox`, :mod:`.runner`); only plain data comes back;
4. judge what came back with the same :meth:`FunctionExercise.judge` the notebooks use, against
   references computed here, and write ``grades.csv`` (and the reasons, in ``grades_feedback.csv``).

Nothing the student's code does can change a mark except the values its functions return.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import secrets
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, astuple, dataclass, fields
from pathlib import Path

import numpy as np

from lora_edu.course import answer_calls, exercise_bank
from lora_edu.course.exercises import FAILED, NOT_ATTEMPTED, CheckResult
from lora_edu.grade import sandbox, seccomp
from lora_edu.grade.course_folder import CourseError, SourceNotebook, defined_elsewhere, find_course, read_source, read_submission, real_dir, solution_sources

GRADES_FILE, FEEDBACK_FILE, TOTALS_FILE, RUN_FILE = "grades.csv", "grades_feedback.csv", "grades_totals.csv", "grading_run.json"
GRADE_COLUMNS = ("student_id", "notebook", "grade_id", "score", "max_score")


class SandboxBroken(CourseError):
    """The sandbox cannot run the grading script even without student code (a set-up problem): stop, write nothing."""


@dataclass(frozen=True)
class Mark:
    """One graded cell of one student: the first five fields are grades.csv's columns."""

    student_id: str
    notebook: str
    grade_id: str
    score: float
    max_score: float
    status: str
    message: str


@dataclass
class GradingRun:
    marks: list[Mark]
    seed: int
    seconds: float
    sandboxed: bool
    regraded_alone: int  # submissions graded a second time, alone, after a wall-clock limit stopped them

    def totals(self) -> dict[str, tuple[float, float]]:
        """student_id -> (score, max_score) over every graded cell."""
        totals: dict[str, tuple[float, float]] = {}
        for m in self.marks:
            score, max_score = totals.get(m.student_id, (0.0, 0.0))
            totals[m.student_id] = (score + m.score, max_score + m.max_score)
        return totals


def _exercise(name: str):
    factory = getattr(exercise_bank, name, None)
    if not callable(factory):
        raise CourseError(f"exercise_bank has no exercise {name!r}: the source notebook and the installed course package disagree")
    return factory()


def _ending(result: sandbox.RunResult, limits: sandbox.Limits) -> str:
    """Why a process stopped before it finished, in words."""
    if result.timed_out:
        return f"it was still running after {limits.wall_seconds:g} s and was stopped"
    code = result.returncode
    if code is not None and result.sandboxed and code > 128:  # bubblewrap exits 128 + n when signal n ended the student's process
        code = 128 - code
    if code is not None and code < 0 and -code in signal.valid_signals():
        name = signal.Signals(-code).name
        if -code == signal.SIGXCPU:
            return f"it used more than {limits.cpu_seconds:g} s of CPU time in all"
        return f"it was ended by {name}" + (" (out of memory, or killed itself?)" if -code == signal.SIGKILL else "")
    if code == 1 and "MemoryError" in result.output_tail:
        return f"it ran out of memory (limit {limits.memory_bytes >> 30} GiB)"
    return f"it exited with code {code}"


@contextlib.contextmanager
def _one_thread_maths():
    """BLAS and torch one thread each while the grading threads judge answers in this process.

    The judges (references, criteria such as notebook 04's fit) do small matrix work from several grading
    threads at once, beside the sandboxes that use the cores. With OpenBLAS's own thread pool on top, a
    judge's SVD spun for minutes in OpenBLAS's ``exec_blas`` during the grading benchmark (the pool's
    workers were gone); one thread per call is also the fast choice for matrices this small.
    """
    with contextlib.ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits  # comes with scikit-learn, a course dependency

            stack.enter_context(threadpool_limits(limits=1))
        except ImportError:  # no control over BLAS threads: grade anyway
            pass
        try:
            import torch

            before = torch.get_num_threads()
            torch.set_num_threads(1)
            stack.callback(torch.set_num_threads, before)
        except ImportError:
            pass
        yield


def _import_torch_once() -> None:
    """Import torch (where installed) in the calling thread, so no grading thread is the first to import it."""
    try:
        import torch  # noqa: F401
    except ImportError:  # the course's exercises that need torch then fail their own way, per submission
        pass


class _Notebook:
    """One source notebook with its exercises and this run's secret cases."""

    def __init__(self, source: SourceNotebook, seed: int, index: int, limits: sandbox.Limits):
        self.source, self.limits = source, limits
        self.exercises = {cell.grade_id: _exercise(cell.exercise) for cell in source.graded}
        for exercise in self.exercises.values():  # the grader's limits, so that its messages name them
            exercise.cpu_seconds, exercise.wall_seconds = limits.call_cpu_seconds, limits.call_wall_seconds
        self.cases = {cell.grade_id: self.exercises[cell.grade_id].cases(np.random.default_rng([seed, index, n]))
                      for n, cell in enumerate(source.graded)}
        # Each reference once here, in the main thread, before the grading threads start: a reference (or a
        # criterion) may import torch on first use, and two threads importing torch for the first time at once left
        # it half-initialised ("partially initialized module 'torch' has no attribute 'Tensor'"). PredictExercise
        # also caches its value on this first call.
        _import_torch_once()
        for grade_id, cases in self.cases.items():
            reference = self.exercises[grade_id].reference
            if reference is not None and cases:
                reference(**cases[0][1])

    def job(self, cells: list[str]) -> dict:
        return {
            "prelude": [list(p) for p in self.source.prelude],
            "cells": cells,
            "calls": [{"grade_id": cell.grade_id, "function": cell.function, "probe": getattr(self.exercises[cell.grade_id], "probe", None),
                       "cases": [{k: answer_calls.encode(v) for k, v in inputs.items()} for _, inputs in self.cases[cell.grade_id]]}
                      for cell in self.source.graded],
            "cpu_seconds": self.limits.call_cpu_seconds, "wall_seconds": self.limits.call_wall_seconds,
            "cell_cpu_seconds": self.limits.cell_cpu_seconds,
        }

    def zero(self, student: str, status: str, reason: str) -> list[Mark]:
        return [Mark(student, self.source.name, c.grade_id, 0.0, c.points, status, reason) for c in self.source.graded]

    def marks(self, student: str, result: sandbox.RunResult, elsewhere: dict[str, str] | None = None) -> list[Mark]:
        """The marks from what came back; ``elsewhere`` maps a function name to a note that it was defined outside the answer cells."""
        elsewhere = elsewhere or {}  # a local: one _Notebook is shared by the threads grading different students
        outcomes = {c.grade_id: [None] * len(self.cases[c.grade_id]) for c in self.source.graded}
        missing, cell_errors, done = {}, [], False
        for event in result.events:
            grade_id, case = event.get("grade_id"), event.get("case")
            if grade_id is not None and type(grade_id) is not str:
                continue  # untrusted data: only the grade_ids this notebook has can match
            if event.get("done") is True:
                done = True
            elif isinstance(event.get("error"), str) and type(event.get("cell")) is int:
                cell_errors.append(f"answer cell {event['cell'] + 1}: {answer_calls._short(event['error'], 200)}")
            elif grade_id in outcomes and "missing" in event:
                missing[grade_id] = True  # the words are ours: a student's process could send anything
            elif grade_id in outcomes and type(case) is int and 0 <= case < len(outcomes[grade_id]):
                outcomes[grade_id][case] = event.get("outcome")
        marks = []
        for cell in self.source.graded:
            exercise = self.exercises[cell.grade_id]
            if cell.grade_id in missing:
                check = CheckResult(exercise.name, FAILED, f"no function named {cell.function} was defined in your answer cells (the ones that said "
                                                           f"YOUR CODE HERE).{elsewhere.get(cell.function, '')}")
            else:
                check = exercise.judge(self.cases[cell.grade_id], outcomes[cell.grade_id])
            message = check.message
            if not check.passed and cell_errors:
                message += " Your answer cells raised: " + "; ".join(cell_errors[:3]) + "."
            if not check.passed and "name 'le' is not defined" in message:
                message += " The grader runs your code without the course package `le`: use NumPy or PyTorch."
            if not check.passed and not done:
                message += f" The process running your code did not finish: {_ending(result, self.limits)}."
            marks.append(Mark(student, self.source.name, cell.grade_id, cell.points if check.passed else 0.0, cell.points,
                              check.status, message))
        return marks


def grade(course: Path, assignment: str, *, seed: int | None = None, jobs: int | None = None, sandboxed: bool = True,
          limits: sandbox.Limits = sandbox.DEFAULT_LIMITS) -> GradingRun:
    """Grade every student's submission of ``assignment``; write the CSV files into ``course``; return the marks.

    Raises :class:`CourseError` (before running anything or writing anything) when the course folder is not usable.
    """
    start = time.perf_counter()
    course = Path(course).resolve()
    notebooks, students = find_course(course, assignment)
    if sandboxed:
        if sandbox.bubblewrap() is None:
            raise CourseError(f"bubblewrap (bwrap) is not installed: {sandbox.INSTALL_HINT}")
        try:
            sandbox.check_not_exposed(course)
        except ValueError as exc:
            raise CourseError(str(exc)) from None
    if sandboxed and seccomp.filter_program() is None:
        print(f"warning: no seccomp filter for this machine ({platform.machine()}): student code may start processes, so the "
              "per-process limits do not bound a whole submission", file=sys.stderr)
    _preflight(limits, sandboxed)
    seed = secrets.randbits(63) if seed is None else seed
    sources = [_Notebook(read_source(path), seed, i, limits) for i, path in enumerate(notebooks)]

    def grade_one(student: str, folder: Path, notebook: _Notebook) -> tuple[list[Mark], bool]:
        """The marks of one student's notebook, and whether its process hit a wall-clock limit."""
        try:
            return _grade_submission(student, folder, notebook, limits, sandboxed)
        except Exception as exc:  # a bug of ours must cost one submission's marks, loudly, not the whole run's
            print(f"grader error on {student}/{notebook.source.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return notebook.zero(student, FAILED, f"the grader failed on this submission ({type(exc).__name__}); "
                                                  "please tell your instructor"), False

    tasks = [(s, folder, nb) for s, folder in students.items() for nb in sources]
    with _one_thread_maths():
        with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
            results = list(pool.map(lambda t: grade_one(*t), tasks))
        # A submission stopped by a wall-clock limit may only have been starved of CPU by another one running beside
        # it: grade it again with nothing else running, and keep that verdict.
        regraded = [n for n, (_, waited) in enumerate(results) if waited]
        for n in regraded:
            results[n] = grade_one(*tasks[n])
    marks = [m for ms, _ in results for m in ms]
    run = GradingRun(marks, seed, time.perf_counter() - start, sandboxed, len(regraded))
    _write_csv(course / GRADES_FILE, GRADE_COLUMNS, [astuple(m)[:5] for m in marks])
    _write_csv(course / FEEDBACK_FILE, tuple(f.name for f in fields(Mark)), [astuple(m) for m in marks])
    _write_csv(course / TOTALS_FILE, ("student_id", "score", "max_score"), [(s, *t) for s, t in run.totals().items()])
    _write_atomically(course / RUN_FILE, json.dumps(dict(
        assignment=assignment, seed=seed, seconds=round(run.seconds, 1), sandboxed=sandboxed,
        seccomp=sandboxed and seccomp.filter_program() is not None, regraded_alone=len(regraded),
        students=len(students), notebooks=[nb.source.name for nb in sources], limits=asdict(limits),
        note="keep private: the exercises are public, so the seed reveals the cases; --seed reproduces this run"), indent=1) + "\n")
    return run


def _grade_submission(student: str, folder: Path, notebook: _Notebook, limits: sandbox.Limits,
                      sandboxed: bool) -> tuple[list[Mark], bool]:
    path = folder / notebook.source.name
    if folder.parent.is_symlink() or folder.is_symlink():
        return notebook.zero(student, FAILED, f"the {folder.name}/ folder is a symbolic link; submit the notebooks themselves"), False
    if not real_dir(folder):
        return notebook.zero(student, NOT_ATTEMPTED, f"no {folder.name}/ folder was submitted"), False
    if not os.path.lexists(path):
        others = sorted(p.name for p in folder.glob("*.ipynb") if p.name not in notebook.source.siblings)
        hint = f" (found {', '.join(others[:3])}: rename it to {notebook.source.name} if it is this notebook)" if others else ""
        return notebook.zero(student, NOT_ATTEMPTED, f"{notebook.source.name} was not submitted{hint}"), False
    try:
        nb = read_submission(path)
    except ValueError as exc:
        return notebook.zero(student, FAILED, f"{notebook.source.name} could not be read: {exc}"), False
    cells = solution_sources(nb, notebook.source.solution_ids)
    if not cells:
        return notebook.zero(student, FAILED, "the answer cells (the ones that said YOUR CODE HERE) are missing from your "
                                              "notebook, deleted or replaced: only those cells are graded"), False
    elsewhere = {name: f" You defined {name} in another cell: the grader runs only the answer cells, so move it there."
                 for name in defined_elsewhere(nb, notebook.source.solution_ids)}
    result = sandbox.run(notebook.job(cells), limits=limits, sandboxed=sandboxed)
    if not any(event.get("ready") is True for event in result.events):  # the sandbox worked before (preflight): a hiccup
        print(f"grader: the sandbox for {student}/{notebook.source.name} stopped before its ready line "
              f"(exit code {result.returncode}): {result.output_tail[-300:]}", file=sys.stderr)
        return notebook.zero(student, FAILED, "the grader could not start the process for this notebook; "
                                              "please tell your instructor (it says why on its console)"), False
    return notebook.marks(student, result, elsewhere), _waited(result)


def _preflight(limits: sandbox.Limits, sandboxed: bool) -> None:
    """Run the sandbox once with no student code: if it cannot, stop before grading anyone (a set-up problem)."""
    job = {"prelude": [], "cells": [], "calls": [], "cpu_seconds": limits.call_cpu_seconds,
           "wall_seconds": limits.call_wall_seconds, "cell_cpu_seconds": limits.cell_cpu_seconds}
    result = sandbox.run(job, limits=limits, sandboxed=sandboxed)
    if [e for e in result.events if e.get("ready") is True or e.get("done") is True] != [{"ready": True}, {"done": True}]:
        raise SandboxBroken(f"the sandbox could not run the grading script (exit code {result.returncode}); "
                            f"nothing was graded. Its output ends with:\n{result.output_tail[-1500:]}")


def _waited(result: sandbox.RunResult) -> bool:
    """Did a wall-clock limit stop this process, or a cell or call in it?"""
    if result.timed_out:
        return True
    for event in result.events:
        outcome = event.get("outcome")
        if isinstance(outcome, dict) and outcome.get("status") == answer_calls.WALL_LIMIT:
            return True
        if isinstance(event.get("error"), str) and event["error"].startswith("the cell was still running"):
            return True
    return False


def _write_csv(path: Path, header: tuple, rows: list) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([[_no_formula(v) for v in row] for row in rows])
    _write_atomically(path, buffer.getvalue())


def _no_formula(value):
    """A text cell a spreadsheet would run as a formula (=, +, -, @ first) gets a leading apostrophe: ids and messages are not code."""
    return "'" + value if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _write_atomically(path: Path, text: str) -> None:
    """A temporary file, then a rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
