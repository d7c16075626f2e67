"""Grade a class: student code runs in a sandbox, marks are computed here, in the instructor's process.

The flow for one run:

1. read the instructor's ``source/<assignment>/`` notebooks: which cells are graded, for which exercise
   of ``lora_edu.course.exercise_bank``, checking which function (:mod:`.course_folder`);
2. draw each student's graded cases from a secret seed, fresh for each run (the notebooks' checks use a
   public one), and different for each student (one student's feedback tells nothing about another's);
3. for each student and notebook, hand the submitted file, unread, to a fresh sandboxed process
   (:mod:`.sandbox`, :mod:`.runner`), which reads it, runs the answer cells and calls the student's
   functions on the cases (a class or a function of a model through its exercise's probe, which returns a
   record of named numbers); only plain data comes back, line by line, and is kept only where it fits;
4. judge what came back with the same ``judge`` the notebooks use (``FunctionExercise``'s, or for a probe
   ``ProbeExercise``'s), against references computed here, in plain words (which case failed and how;
   never a value or a text the student's code produced, which could carry the secret cases, nor a probe's
   words, which that code can replace), and append each submission's marks to ``grading_progress.jsonl``
   as it is graded; at the end write ``grades.csv`` and its companions.

Nothing the student's code does can change a mark except the values its functions return, and nothing it
sends is parsed or held here without a bound (issue 26). Time is shared fairly: a process that sleeps is
stopped after ``idle_seconds`` and gives up its CPU slot once idle; one stopped by a wall-clock limit is
graded again (one process a core) only if the kernel says it waited for a CPU rather than slept; each student has a
budget of ``student_seconds`` of their own time (CPU and asleep) over all notebooks. A run that crashes
loses nothing already graded: ``--resume`` carries on from the progress file.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io
import itertools
import json
import os
import platform
import queue
import secrets
import signal
import sys
import threading
import time
from collections.abc import Collection
from dataclasses import asdict, astuple, dataclass, fields
from pathlib import Path

import numpy as np

from lora_edu.course import answer_calls, exercise_bank
from lora_edu.course.exercises import FAILED, NOT_ATTEMPTED, CheckResult, _plain_kind
from lora_edu.grade import sandbox, seccomp
from lora_edu.grade.course_folder import CourseError, SourceNotebook, find_course, open_submission, read_source, real_dir

GRADES_FILE, FEEDBACK_FILE, TOTALS_FILE, RUN_FILE = "grades.csv", "grades_feedback.csv", "grades_totals.csv", "grading_run.json"
PROGRESS_FILE = "grading_progress.jsonl"
GRADE_COLUMNS = ("student_id", "notebook", "grade_id", "score", "max_score")
#: the most cell errors one submission's feedback names
MAX_CELL_ERRORS = 3


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
    regraded_alone: list[tuple[str, str]]  # (student, notebook) graded a second time, alone: they had been starved of CPU
    resumed: int = 0     # submissions taken from an interrupted run's progress file

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
    if result.stopped == "idle":
        return (f"it spent more than {limits.idle_seconds:g} s asleep (neither computing nor waiting for a CPU) and was stopped: "
                "waiting earns nothing")
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


def _student_key(student: str) -> int:
    """A number for the student's id, the same in every run: with the seed, it draws that student's cases."""
    return int.from_bytes(hashlib.sha256(student.encode("utf-8", errors="surrogateescape")).digest()[:8], "little")


class _Notebook:
    """One source notebook with its exercises; each student's secret cases are drawn from the run's seed."""

    def __init__(self, source: SourceNotebook, seed: int, index: int, limits: sandbox.Limits):
        self.source, self.limits, self.seed, self.index = source, limits, seed, index
        self.exercises = {cell.grade_id: _exercise(cell.exercise) for cell in source.graded}
        for exercise in self.exercises.values():  # the grader's limits, so that its messages name them
            exercise.cpu_seconds, exercise.wall_seconds = limits.call_cpu_seconds, limits.call_wall_seconds
        # grade_id -> the probe that exercises a class or a function of a model (notebook 05): its answer is a record
        self.probes = {grade_id: ex.probe for grade_id, ex in self.exercises.items() if isinstance(getattr(ex, "probe", None), str)}
        # Each reference once here, in the main thread, before the grading threads start: a reference (or a
        # criterion) may import torch on first use, and two threads importing torch for the first time at once left
        # it half-initialised ("partially initialized module 'torch' has no attribute 'Tensor'"). PredictExercise
        # also caches its value on this first call.
        _import_torch_once()
        for grade_id, cases in self.cases("").items():
            reference = self.exercises[grade_id].reference
            if reference is not None and cases:
                reference(**cases[0][1])

    def cases(self, student: str) -> dict[str, list[tuple[str, dict]]]:
        """grade_id -> the visible example and this student's hidden cases, for this run's seed."""
        return {cell.grade_id: self.exercises[cell.grade_id].cases(np.random.default_rng([self.seed, self.index, n, _student_key(student)]))
                for n, cell in enumerate(self.source.graded)}

    def job(self, cases: dict) -> dict:
        return {
            "prelude": [list(p) for p in self.source.prelude],
            "solution_ids": list(self.source.solution_ids),
            "calls": [{"grade_id": cell.grade_id, "function": cell.function, "probe": self.probes.get(cell.grade_id),
                       "cases": [{k: answer_calls.encode(v) for k, v in inputs.items()} for _, inputs in cases[cell.grade_id]]}
                      for cell in self.source.graded],
            "cpu_seconds": self.limits.call_cpu_seconds, "wall_seconds": self.limits.call_wall_seconds,
            "cell_cpu_seconds": self.limits.cell_cpu_seconds, "cell_wall_seconds": self.limits.cell_wall_seconds,
        }

    def zero(self, student: str, status: str, reason: str) -> list[Mark]:
        return [Mark(student, self.source.name, c.grade_id, 0.0, c.points, status, reason) for c in self.source.graded]

    def marks(self, student: str, report: _Report, result: sandbox.RunResult) -> list[Mark]:
        """The marks from what the submission's process reported (``report``) and how it ended (``result``)."""
        name, functions = self.source.name, {c.function for c in self.source.graded}
        found = report.notebook
        if found is None:
            return self.zero(student, FAILED, f"{name} could not be read: the process reading it stopped "
                                              f"({_ending(result, self.limits)}).")
        if found.get("error") == "json":
            return self.zero(student, FAILED, f"{name} could not be read: the notebook is not valid JSON.")
        if found.get("error") == "memory":
            return self.zero(student, FAILED, f"{name} could not be read: it takes more than the "
                                              f"{self.limits.memory_bytes >> 30} GiB of memory the grader gives a notebook.")
        if found.get("error") == "cells":
            return self.zero(student, FAILED, f"{name} could not be read: the notebook has no list of cells.")
        if not found.get("answer_cells"):
            return self.zero(student, FAILED, "the answer cells (the ones that said YOUR CODE HERE) are missing from your "
                                              "notebook, deleted or replaced: only those cells are graded")
        elsewhere = set(found.get("elsewhere", ())) & functions
        marks = []
        for cell in self.source.graded:
            exercise, grade_id = self.exercises[cell.grade_id], cell.grade_id
            if grade_id in report.missing:
                what = "class" if getattr(exercise, "kind", None) == "class" else "function"
                note = (f" You defined {cell.function} in another cell: the grader runs only the answer cells, so move it there."
                        if cell.function in elsewhere else "")
                check = CheckResult(exercise.name, FAILED, f"no {what} named {cell.function} was defined in your answer cells "
                                                           f"(the ones that said YOUR CODE HERE).{note}")
            elif grade_id in report.broken:
                check = CheckResult(exercise.name, FAILED, f"calling {cell.function} broke the grading script itself: "
                                                           f"{report.broken[grade_id]} was raised outside your function (by an object "
                                                           "it returned, or by code that replaced the script's own).")
            else:
                check = exercise.judge(report.cases[grade_id], report.outcomes[grade_id], plain=True)
            message = check.message
            if not check.passed and report.cell_errors:
                message += " Your answer cells: " + "; ".join(report.cell_errors) + "."
            if not check.passed and report.no_le:
                message += " The grader runs your code without the course package `le`: use NumPy or PyTorch."
            if not check.passed and not report.done:
                message += f" The process running your code did not finish: {_ending(result, self.limits)}."
            marks.append(Mark(student, name, grade_id, cell.points if check.passed else 0.0, cell.points, check.status, message))
        return marks


class _Report:
    """What one submission's process reported, kept as it arrives, bounded whatever the process sends.

    Only the runner's first line after "ready" (sent before any student code) may be the "notebook" event;
    outcomes are kept for the cases the job has and no others; a few cell errors, as plain words.
    """

    def __init__(self, cases: dict[str, list], limits: sandbox.Limits, records: Collection[str] = ()):
        self.cases, self.limits, self.records = cases, limits, frozenset(records)
        self.outcomes = {grade_id: [None] * len(c) for grade_id, c in cases.items()}
        self.ready = self.done = self.waited = self.no_le = False
        self.notebook: dict | None = None
        self.after_ready = 0
        self.missing: set[str] = set()
        self.broken: dict[str, str] = {}
        self.cell_errors: list[str] = []

    def add(self, event: dict) -> None:
        if not self.ready:
            self.ready = event.get("ready") is True
            return
        self.after_ready += 1
        if self.after_ready == 1:
            self.notebook = self._notebook(event.get("notebook"))
            if self.notebook is not None:
                return
        grade_id, case = event.get("grade_id"), event.get("case")
        if event.get("done") is True:
            self.done = True
        elif type(event.get("cell")) is int and 0 <= event["cell"] < 10**6:
            self._cell(event["cell"] + 1, event.get("limit"), event.get("error"))
        elif type(grade_id) is str and grade_id in self.outcomes:
            if event.get("missing") is True:
                self.missing.add(grade_id)  # the words are ours: a student's process could send anything
            elif isinstance(event.get("broken"), str):
                self.broken[grade_id] = _plain_kind(event["broken"])
            elif type(case) is int and 0 <= case < len(self.outcomes[grade_id]):
                outcome = self._checked(event.get("outcome"), record=grade_id in self.records)
                self.outcomes[grade_id][case] = outcome
                if isinstance(outcome, dict) and outcome.get("status") == answer_calls.WALL_LIMIT:
                    self.waited = True

    @staticmethod
    def _checked(outcome, record: bool = False):
        """The outcome if it is well-formed and its answer decodes, else a small stand-in the judge calls unreadable.

        Checked as it arrives, so that only a valid outcome (a few MB at most: a line is at most ``report_line_bytes``)
        is kept. A probe's answer (``record``) is a record of named values, or anything else the judge names.
        """
        try:
            answer = answer_calls.check_outcome(outcome)["answer"] or {"kind": "none"}
            if record and answer.get("kind") == "record":
                answer_calls.decode_record(answer)
            else:
                answer_calls.decode(answer)
        except (ValueError, TypeError, KeyError, AttributeError):
            return "unreadable"
        return outcome

    def _notebook(self, found) -> dict | None:
        """The "notebook" event if it is well-formed: an error code, or a count and names of graded functions."""
        if not isinstance(found, dict):
            return None
        if found.get("error") in ("json", "cells", "memory") and len(found) == 1:
            return found
        count, names = found.get("answer_cells"), found.get("elsewhere")
        if type(count) is int and count >= 0 and isinstance(names, list) and len(names) <= 100 and all(type(n) is str for n in names):
            return {"answer_cells": count, "elsewhere": names}
        return None

    def _cell(self, number: int, limit, error) -> None:
        if limit == "wall":
            self.waited = True
        if len(self.cell_errors) >= MAX_CELL_ERRORS:
            return
        if limit == "cpu":
            self.cell_errors.append(f"answer cell {number} used more than {self.limits.cell_cpu_seconds:g} s of CPU time")
        elif limit == "wall":
            self.cell_errors.append(f"answer cell {number} was still running after {self.limits.cell_wall_seconds:g} s")
        elif isinstance(error, str):
            self.no_le = self.no_le or error.startswith("NameError: name 'le' is not defined")
            self.cell_errors.append(f"answer cell {number} raised {_plain_kind(error)}{_hidden_module_note(error)}")


def _hidden_module_note(error: str) -> str:
    """Why an import failed when the module is one the sandbox hides on purpose, in the grader's own words.

    The student's error text is never repeated: only a name from :data:`sandbox.HIDDEN_MODULES` that the text
    names is said, so a message can carry nothing but one of those names.
    """
    kind, _, text = error.partition(":")
    if kind.strip() not in ("ImportError", "ModuleNotFoundError"):
        return ""
    for name in sandbox.HIDDEN_MODULES:
        if f"'{name}'" in text or f"'{name}." in text:
            return (f" ({name} is not available when grading: this exercise asks you to write the code yourself, "
                    "without it)")
    return ""


class _Progress:
    """``grading_progress.jsonl``: the run's settings, then one line per graded submission, written as each is graded.

    Each line is flushed and synced at once, so a crash (out of memory, a power cut, Ctrl-C) loses nothing
    already graded, and ``grade(..., resume=True)`` carries on from it with the same seed.
    """

    def __init__(self, path: Path):
        self.path, self.lock, self.file = path, threading.Lock(), None

    def start(self, header: dict, done: list[dict]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for record in [header, *done]:
                f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.file = open(self.path, "a", encoding="utf-8")

    def add(self, record: dict) -> None:
        with self.lock:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
            os.fsync(self.file.fileno())

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    @staticmethod
    def load(path: Path) -> tuple[dict, list[dict]]:
        """The header and the graded submissions of an interrupted run; a torn last line is dropped."""
        if not path.is_file():
            raise CourseError(f"there is no interrupted run to resume: {path} does not exist (a finished run removes it)")
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        if not records or records[0].get("progress_of") != "lora_edu.grade":
            raise CourseError(f"{path} is not a grading progress file; delete it and grade afresh")
        return records[0], [r for r in records[1:] if isinstance(r, dict) and "marks" in r]


@dataclass
class _Task:
    student: str
    folder: Path
    notebook: _Notebook
    marks: list[Mark] | None = None
    usage: sandbox.Usage | None = None
    again_alone: bool = False  # stopped by a wall-clock limit while starved of CPU
    own_seconds: float = 0.0   # the student's own time (CPU and asleep) over every run of this submission


def grade(course: Path, assignment: str, *, seed: int | None = None, jobs: int | None = None, sandboxed: bool = True,
          limits: sandbox.Limits = sandbox.DEFAULT_LIMITS, resume: bool = False) -> GradingRun:
    """Grade every student's submission of ``assignment``; write the CSV files into ``course``; return the marks.

    ``resume`` carries on an interrupted run from its progress file (its seed; a different ``seed`` is refused).
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
    progress = _Progress(course / PROGRESS_FILE)
    done: list[dict] = []
    if resume:
        header, done = _Progress.load(progress.path)
        if header.get("assignment") != assignment or header.get("notebooks") != [p.name for p in notebooks]:
            raise CourseError(f"{progress.path} is the progress of another assignment or set of notebooks "
                              f"({header.get('assignment')!r}: {header.get('notebooks')}); grade afresh without --resume")
        if seed is not None and seed != header.get("seed"):
            raise CourseError(f"--seed {seed} differs from the interrupted run's seed: resume keeps that run's seed (leave --seed out)")
        seed = header["seed"]
    _preflight(limits, sandboxed)
    seed = secrets.randbits(63) if seed is None else seed
    sources = [_Notebook(read_source(path), seed, i, limits) for i, path in enumerate(notebooks)]
    header = dict(progress_of="lora_edu.grade", assignment=assignment, seed=seed, notebooks=[p.name for p in notebooks],
                  note="keep private: the seed reveals the cases; python -m lora_edu.grade --resume carries on from here")
    progress.start(header, done)

    finished = {(r.get("student"), r.get("notebook")): r for r in done}
    used = {}  # student -> own seconds so far (CPU and asleep), the budget's measure
    for r in finished.values():
        used[r["student"]] = used.get(r["student"], 0.0) + float(r.get("own_seconds", 0.0))
    # Notebook by notebook across the class, not student by student: one student's notebooks are then far apart in the
    # queue, so a student whose code sleeps never holds several of the grading threads at once.
    tasks = [_Task(s, folder, nb) for nb in sources for s, folder in students.items() if (s, nb.source.name) not in finished]
    lock = threading.Lock()

    def record(task: _Task) -> None:
        progress.add(dict(student=task.student, notebook=task.notebook.source.name, own_seconds=round(task.own_seconds, 3),
                          marks=[astuple(m)[2:] for m in task.marks]))

    def grade_one(task: _Task, slot: _Slot | None, alone: bool = False) -> None:
        spent = used.get(task.student, 0.0)
        if spent >= limits.student_seconds:
            task.marks = task.notebook.zero(task.student, FAILED, f"not run: your notebooks had used up the {limits.student_seconds:g} s "
                                                                  "the grader gives one student (time computing or asleep; "
                                                                  "time waiting for a CPU does not count)")
            return
        # Alone, a process waits for no CPU, so its wall-clock time is its own: the student's time left bounds it (a process
        # that spins with its timers off looks starved beside others, and would otherwise spin a whole wall limit again).
        own = dataclasses.replace(limits, wall_seconds=min(limits.wall_seconds, limits.student_seconds - spent + 5)) if alone else limits
        try:
            task.marks, task.usage, waited = _grade_submission(task.student, task.folder, task.notebook, own, sandboxed, slot)
            task.again_alone = not alone and waited and (task.usage is None or task.usage.starved())
            task.own_seconds += task.usage.own if task.usage else 0.0
            with lock:  # every run counts, the first of a submission graded again too
                used[task.student] = used.get(task.student, 0.0) + (task.usage.own if task.usage else 0.0)
        except Exception as exc:  # a bug of ours must cost one submission's marks, loudly, not the whole run's
            print(f"grader error on {task.student}/{task.notebook.source.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            task.marks = task.notebook.zero(task.student, FAILED, f"the grader failed on this submission ({type(exc).__name__}); "
                                                                  "please tell your instructor")

    try:
        with _one_thread_maths():
            _run_all(tasks, jobs or os.cpu_count() or 1, grade_one, lambda t: None if t.again_alone else record(t))
            # A submission stopped by a wall-clock limit while it waited for a CPU (another submission beside it had
            # the cores) is graded again, one process a core and none asleep beside it, and that verdict counts. One that
            # slept is not, nor one whose student has used up their time.
            starved = [t for t in tasks if t.again_alone]
            regraded = [t for t in starved if used.get(t.student, 0.0) < limits.student_seconds]
            for task in starved:
                if task not in regraded:
                    record(task)
            _run_all(regraded, jobs or os.cpu_count() or 1, lambda task, slot: grade_one(task, None, alone=True), record,
                     over_commit=False)
    finally:
        progress.close()
    graded = {(t.student, t.notebook.source.name): t.marks for t in tasks}
    for r in finished.values():
        graded[r["student"], r["notebook"]] = [Mark(r["student"], r["notebook"], *m) for m in r["marks"]]
    marks = [m for s in students for nb in sources for m in graded[s, nb.source.name]]
    run = GradingRun(marks, seed, time.perf_counter() - start, sandboxed, [(t.student, t.notebook.source.name) for t in regraded],
                     len(finished))
    _write_csv(course / GRADES_FILE, GRADE_COLUMNS, [astuple(m)[:5] for m in marks])
    _write_csv(course / FEEDBACK_FILE, tuple(f.name for f in fields(Mark)), [astuple(m) for m in marks])
    _write_csv(course / TOTALS_FILE, ("student_id", "score", "max_score"), [(s, *t) for s, t in run.totals().items()])
    _write_atomically(course / RUN_FILE, json.dumps(dict(
        assignment=assignment, seed=seed, seconds=round(run.seconds, 1), sandboxed=sandboxed,
        seccomp=sandboxed and seccomp.filter_program() is not None, regraded_alone=len(regraded), resumed=len(finished),
        students=len(students), notebooks=[nb.source.name for nb in sources], limits=asdict(limits),
        student_seconds_used={s: round(v, 1) for s, v in used.items()},
        note="keep private: the exercises are public, so the seed reveals the cases; --seed reproduces this run"), indent=1) + "\n")
    progress.path.unlink(missing_ok=True)  # everything is in the CSV files now
    return run


class _Slot:
    """One of the ``jobs`` CPU slots, held by a running submission until it ends or falls asleep (then another starts)."""

    def __init__(self, slots: threading.Semaphore):
        self.slots, self.held = slots, False

    def __enter__(self):
        self.slots.acquire()
        self.held = True
        return self

    def release(self) -> None:
        if self.held:
            self.held = False
            self.slots.release()

    def __exit__(self, *exc):
        self.release()


def _run_all(tasks: list[_Task], jobs: int, grade_one, record, over_commit: bool = True) -> None:
    """Grade ``tasks`` with at most ``jobs`` processes computing at once.

    With ``over_commit``, a process that falls asleep gives its slot to the next task (up to ``jobs`` more
    processes in all), so a student whose code sleeps does not hold a core the class needs.
    """
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for task in tasks:
        todo.put(task)
    slots = threading.Semaphore(jobs)

    def work() -> None:
        while True:
            try:
                task = todo.get_nowait()
            except queue.Empty:
                return
            with _Slot(slots) as slot:
                grade_one(task, slot)
            record(task)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(min(len(tasks), (2 if over_commit else 1) * jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _grade_submission(student: str, folder: Path, notebook: _Notebook, limits: sandbox.Limits, sandboxed: bool,
                      slot: _Slot | None) -> tuple[list[Mark], sandbox.Usage | None, bool]:
    """The marks of one student's notebook, its process's usage, and whether a wall-clock limit stopped something in it."""
    path = folder / notebook.source.name
    if folder.parent.is_symlink() or folder.is_symlink():
        return notebook.zero(student, FAILED, f"the {folder.name}/ folder is a symbolic link; submit the notebooks themselves"), None, False
    if not real_dir(folder):
        return notebook.zero(student, NOT_ATTEMPTED, f"no {folder.name}/ folder was submitted"), None, False
    if not os.path.lexists(path):
        others = sorted(p.name for p in itertools.islice(folder.glob("*.ipynb"), 1000) if p.name not in notebook.source.siblings)
        hint = (f" (found {', '.join(map(shown_name, others[:3]))}: rename it to {notebook.source.name} if it is this notebook)"
                if others else "")
        return notebook.zero(student, NOT_ATTEMPTED, f"{notebook.source.name} was not submitted{hint}"), None, False
    try:
        submission = open_submission(path)
    except ValueError as exc:
        return notebook.zero(student, FAILED, f"{notebook.source.name} could not be read: {exc}"), None, False
    cases = notebook.cases(student)
    report = _Report(cases, limits, records=notebook.probes)
    with submission:
        result = sandbox.run(notebook.job(cases), limits=limits, sandboxed=sandboxed, submission=submission, on_event=report.add,
                             on_idle=slot.release if slot is not None else None)
    for event in result.events:  # a stand-in sandbox (the tests') returns its events instead
        report.add(event)
    if not report.ready:  # the sandbox worked before (preflight): a hiccup
        print(f"grader: the sandbox for {student}/{notebook.source.name} stopped before its ready line "
              f"(exit code {result.returncode}): {result.output_tail[-300:]}", file=sys.stderr)
        return notebook.zero(student, FAILED, "the grader could not start the process for this notebook; "
                                              "please tell your instructor (it says why on its console)"), result.usage, False
    return notebook.marks(student, report, result), result.usage, result.timed_out or report.waited


def _preflight(limits: sandbox.Limits, sandboxed: bool) -> None:
    """Run the sandbox once with no student code: if it cannot, stop before grading anyone (a set-up problem)."""
    job = {"prelude": [], "solution_ids": [], "calls": [], "cpu_seconds": limits.call_cpu_seconds,
           "wall_seconds": limits.call_wall_seconds, "cell_cpu_seconds": limits.cell_cpu_seconds}
    result = sandbox.run(job, limits=limits, sandboxed=sandboxed)
    if [e for e in result.events if e.get("ready") is True or e.get("done") is True] != [{"ready": True}, {"done": True}]:
        raise SandboxBroken(f"the sandbox could not run the grading script (exit code {result.returncode}); "
                            f"nothing was graded. Its output ends with:\n{result.output_tail[-1500:]}")


def shown_name(name: str, limit: int = 80) -> str:
    """A file name the student chose, fit to be said in feedback: printable, valid UTF-8, short.

    A name is bytes on Linux: one that is not UTF-8 comes back from the file system with lone surrogates, which no
    UTF-8 file can hold (red team 3: such a name in one student's folder stopped the whole class's CSV files, on
    every retry and resume). Undecodable bytes are shown as ``\\xff``, control and other unprintable characters
    (a newline, a right-to-left override) as their escapes.
    """
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
    """A temporary file, then a rename: a reader never sees half a file.

    A student id is a folder's name, and one that is not UTF-8 is written back as the same bytes (``surrogateescape``);
    texts the student chose are made printable before they get here (:func:`shown_name`). Anything else that UTF-8
    cannot hold is escaped: no text can make the write fail and lose the run.
    """
    try:
        data = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = text.encode("utf-8", "backslashreplace")
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
