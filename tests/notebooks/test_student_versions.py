"""Classroom path: student versions and nbgrader's generate_assignment + autograde on the course.

Proves what an instructor relies on: every notebook releases; the solution version scores full
marks; the untouched student version runs top to bottom and scores zero, failing only in its graded
cells (``mark()`` asserts under autograde, so hiding the number earns nothing either); and
``tools/student_versions.py`` writes the same code that nbgrader releases.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from student_versions import STUB, strip_solutions, student_version  # noqa: E402

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_strip_solutions_keeps_indent_and_uses_nbgraders_stub():
    src = "def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION\n"
    assert strip_solutions(src) == "def f(x):\n    " + STUB[0] + "\n    " + STUB[1] + "\n"


@pytest.mark.parametrize("bad", ["### BEGIN SOLUTION\nx = 1", "x = 1\n### END SOLUTION",
                                 "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION"])
def test_strip_solutions_rejects_unbalanced_markers(bad):
    with pytest.raises(ValueError, match="SOLUTION"):
        strip_solutions(bad)


def test_student_versions_keep_no_outputs_and_no_stale_widget_state():
    """Executed notebooks store their widgets' state (for GitHub); a copy without outputs must not."""
    stored = [nbformat.read(path, as_version=4) for path in NOTEBOOKS]
    assert any("widgets" in nb.metadata for nb in stored), "the check below has a widget state to drop"
    for path, nb in zip(NOTEBOOKS, stored):
        had_widgets = "widgets" in nb.metadata
        student = student_version(nb)
        assert ("widgets" in nb.metadata) == had_widgets, "student_version must not change the notebook it is given"
        assert "widgets" not in student.metadata, path.name
        assert student.metadata.get("kernelspec") == nb.metadata.get("kernelspec"), path.name
        assert all(not c.get("outputs") and c.get("execution_count") is None
                   for c in student.cells if c.cell_type == "code"), path.name


def test_every_solution_cell_is_marked_for_nbgrader():
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            has_solution = "### BEGIN SOLUTION" in cell.source
            meta = cell.metadata.get("nbgrader", {})
            assert has_solution == bool(meta.get("solution")), f"{path.name}: {cell.source[:50]!r}"
            if meta.get("grade"):
                assert meta.get("locked") and meta.get("points", 0) > 0
                assert cell.source.rstrip().endswith(".mark()"), "graded cells end with the check's mark(): it asserts under nbgrader"


def _nbgrader(course: Path, *args: str) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_nbgrader_releases_and_autogrades_every_notebook(tmp_path):
    from nbgrader.api import Gradebook

    course = tmp_path / "course"
    (course / "source" / "lora").mkdir(parents=True)
    for path in NOTEBOOKS:
        shutil.copy(path, course / "source" / "lora" / path.name)
    (course / "nbgrader_config.py").write_text("c = get_config()\nc.ExecutePreprocessor.timeout = 300\n")
    _nbgrader(course, "generate_assignment", "lora", "--force")

    release = course / "release" / "lora"
    for path in NOTEBOOKS:
        ours = student_version(nbformat.read(path, as_version=4))
        theirs = nbformat.read(release / path.name, as_version=4)
        assert [c.source for c in ours.cells if c.cell_type == "code"] == \
               [c.source for c in theirs.cells if c.cell_type == "code"], path.name

    for student, folder in [("solution", course / "source" / "lora"), ("blank", release)]:
        shutil.copytree(folder, course / "submitted" / student / "lora")
    # a wrong answer that hides the graded cell's number: nbgrader gives full credit to a cell with no number
    # and no error, so the check's mark() must raise under autograde
    hider = nbformat.read(release / NOTEBOOKS[0].name, as_version=4)
    for cell in hider.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = "get_ipython().ast_node_interactivity = 'none'\ndef lora_params(d, k, r):\n    return 0\n"
    (course / "submitted" / "hider" / "lora").mkdir(parents=True)
    nbformat.write(hider, course / "submitted" / "hider" / "lora" / NOTEBOOKS[0].name)
    _nbgrader(course, "autograde", "lora", "--force")

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        full = gb.find_submission("lora", "solution")
        blank = gb.find_submission("lora", "blank")
        assert full.max_score > 0 and full.score == full.max_score
        assert blank.score == 0
        assert gb.find_submission("lora", "hider").score == 0
    for path in (course / "autograded" / "blank" / "lora").glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            errors = [o for o in cell.get("outputs", []) if o.output_type == "error"]
            graded = cell.metadata.get("nbgrader", {}).get("grade")
            # under autograde only the graded cells fail, each with the check's reason (mark() asserts)
            assert all(graded and e.ename == "AssertionError" and "not attempted" in e.evalue for e in errors), \
                f"student version of {path.name} failed in {cell.source[:60]!r}"
