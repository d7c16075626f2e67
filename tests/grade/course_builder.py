"""Build nbgrader-style course folders for the grader's tests: source notebooks and student submissions."""
import shutil
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
sys.path.insert(0, str(ROOT / "tools"))
from student_versions import student_version  # noqa: E402


def make_course(folder: Path, notebooks=NOTEBOOKS, assignment: str = "lora") -> Path:
    """``folder`` with source/<assignment>/ holding ``notebooks`` and an empty submitted/."""
    (folder / "source" / assignment).mkdir(parents=True)
    (folder / "submitted").mkdir()
    for path in notebooks:
        shutil.copy(path, folder / "source" / assignment / path.name)
    return folder


def submit(course: Path, student: str, notebooks=NOTEBOOKS, *, solutions: dict | None = None, solved: bool = False,
           assignment: str = "lora") -> Path:
    """Submit ``student``'s copies: the released (blank) version, or the instructor's (``solved``), with the
    solution cells named in ``solutions`` (grade_id -> code) replaced. Returns the submission folder."""
    folder = course / "submitted" / student / assignment
    folder.mkdir(parents=True)
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        nb = nb if solved else student_version(nb)
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if solutions and grade_id in solutions:
                cell.source = solutions[grade_id]
        nbformat.write(nb, folder / path.name)
    return folder
