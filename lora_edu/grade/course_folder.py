"""nbgrader's folder layout, read by the trusted side: what is graded, and what each student submitted.

Why this is careful: the instructor's ``source/`` notebooks are trusted, the submissions are not.
A submission is only opened here (size and type checks, never followed through a symbolic link: a link
to ``source/`` would hand in the instructor's solutions) and handed to the sandbox, which reads it.
"""
from __future__ import annotations

import ast
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

#: the biggest notebook file the grader reads (the course's own are under 2 MB with outputs)
MAX_NOTEBOOK_BYTES = 32 << 20
#: modules a notebook's import lines may bring into the sandbox's namespace (others, like the course package, stay out)
GRADING_MODULES = {"numpy", "torch", "math", "cmath", "itertools", "functools", "collections", "fractions", "operator"}
#: the namespace every graded notebook starts from, whatever its imports
BASE_PRELUDE = (("math", "import math"), ("np", "import numpy as np"))


class CourseError(ValueError):
    """The course folder or a source notebook is not what the grader needs; the message says what to fix."""


@dataclass(frozen=True)
class GradedCell:
    """One graded cell of a source notebook: the exercise it checks and the function it checks."""

    notebook: str
    grade_id: str
    points: float
    exercise: str   # a factory in lora_edu.course.exercise_bank
    function: str   # the name the student's solution defines


@dataclass(frozen=True)
class SourceNotebook:
    name: str
    graded: tuple[GradedCell, ...]
    solution_ids: tuple[str, ...]
    prelude: tuple[tuple[str, str], ...]
    siblings: tuple[str, ...] = ()  # every notebook of the assignment (a stray copy is none of them)


def _nbgrader(cell: dict) -> dict:
    """The cell's nbgrader metadata, or {} for anything that is not a dict all the way down (submissions are untrusted)."""
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    meta = meta.get("nbgrader") if isinstance(meta, dict) else None
    return meta if isinstance(meta, dict) else {}


def _source(cell: dict) -> str | None:
    source = cell.get("source")
    if isinstance(source, list) and all(isinstance(s, str) for s in source):
        return "".join(source)
    return source if isinstance(source, str) else None


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # IPython magics (the install cell), or a hostile submission
        return None


def _allowed_imports(node: ast.Import | ast.ImportFrom) -> dict[str, str]:
    """name -> one import statement binding it, for the names ``node`` imports from :data:`GRADING_MODULES`."""
    found = {}
    for alias in node.names:
        module = alias.name if isinstance(node, ast.Import) else node.module
        if not module or getattr(node, "level", 0) or alias.name == "*" or module.split(".")[0] not in GRADING_MODULES:
            continue
        bound = alias.asname or alias.name.split(".")[0]
        target = f"{alias.name} as {alias.asname}" if alias.asname else alias.name
        found[bound] = f"import {target}" if isinstance(node, ast.Import) else f"from {module} import {target}"
    return found


def read_source(path: Path) -> SourceNotebook:
    """The graded cells, solution cells and allowed imports of one instructor notebook."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    factories, prelude, graded, solutions = {}, dict(BASE_PRELUDE), [], []
    for cell in cells:
        tree = _parse(_source(cell) or "")
        for node in ast.walk(tree) if tree else ():
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                    and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute)
                    and isinstance(node.value.func.value, ast.Attribute) and node.value.func.value.attr == "exercise_bank"):
                factories[node.targets[0].id] = node.value.func.attr
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not _nbgrader(cell).get("solution"):
                prelude.update(_allowed_imports(node))
    for cell in cells:
        meta = _nbgrader(cell)
        if meta.get("solution"):
            solutions.append(str(meta.get("grade_id")))
        if not meta.get("grade") or meta.get("solution"):
            continue
        grade_id, source = str(meta.get("grade_id")), _source(cell) or ""
        match = re.search(r"\b(\w+)\.check\((\w+)\)", source)
        if not match or match.group(1) not in factories:
            raise CourseError(f"{path.name}: graded cell {grade_id!r} must call `<exercise>.check(<function>)` on an exercise "
                              f"made by `le.exercise_bank.<name>()` earlier in the notebook; it reads {source.strip()[:80]!r}")
        graded.append(GradedCell(path.name, grade_id, float(meta.get("points", 0)), factories[match.group(1)], match.group(2)))
    siblings = tuple(sorted(p.name for p in path.parent.glob("*.ipynb")))
    return SourceNotebook(path.name, tuple(graded), tuple(solutions), tuple(prelude.items()), siblings)


def open_submission(path: Path) -> BinaryIO:
    """A submitted notebook, opened for reading but not read; ``ValueError`` (with the reason shown to the student) else.

    Opened without following symbolic links, and only if it is a regular file of sane size with no other
    hard link (nbgrader's collect copies files; a link could be the instructor's ``source/`` notebook).
    Never parsed here: the sandbox reads it (:func:`lora_edu.grade.runner.read_notebook`), where a notebook
    built to take gigabytes to parse costs the student's own limits (issue 26).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block
    except OSError as exc:
        raise ValueError(f"the notebook could not be opened ({exc.strerror}; symbolic links are not accepted)") from None
    try:  # checked on the descriptor, before a file object is made of it (a directory cannot be one)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("the notebook is not a regular file")
        if info.st_nlink != 1:  # a hard link could be the instructor's own notebook
            raise ValueError("the notebook is a hard link to another file; submit a copy")
        if info.st_size > MAX_NOTEBOOK_BYTES:
            raise ValueError(f"the notebook is {info.st_size / 2**20:.0f} MiB; the grader reads at most {MAX_NOTEBOOK_BYTES >> 20} MiB")
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def real_dir(path: Path) -> bool:
    """A real directory, not a symbolic link (a link could point at source/ or at another student)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def find_course(course: Path, assignment: str) -> tuple[list[Path], dict[str, Path]]:
    """The source notebooks and each student's submission folder; ``CourseError`` naming what is missing."""
    if not re.fullmatch(r"[\w.-]+", assignment) or assignment in (".", ".."):
        raise CourseError(f"assignment name {assignment!r} is not a plain folder name")
    source = course / "source" / assignment
    if not course.is_dir():
        raise CourseError(f"course folder {course} does not exist")
    if not source.is_dir():
        raise CourseError(f"{source} does not exist: put the instructor's notebooks there (nbgrader's layout: source/<assignment>/)")
    notebooks = sorted(source.glob("*.ipynb"))
    if not notebooks:
        raise CourseError(f"{source} has no .ipynb notebooks")
    submitted = course / "submitted"
    if not real_dir(submitted):
        raise CourseError(f"{submitted} does not exist: collect submissions into submitted/<student_id>/{assignment}/ "
                          "(nbgrader collect, or unpack them there)")
    students = {p.name: p / assignment for p in sorted(submitted.iterdir())  # links too: they get a zero with the reason
                if not p.name.startswith(".") and (real_dir(p) or p.is_symlink())}
    if not students:
        raise CourseError(f"{submitted} has no student folders")
    return notebooks, students
