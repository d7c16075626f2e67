"""tools/learner_copies.py: learner copies in work/, reset with a backup, and the servers' command lines.

Runs on temporary folders (a small course of two notebooks, and the real course for the content
checks); the browser test (test_browser.py) starts the servers these command lines describe.
"""
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import learner_copies as lc  # noqa: E402
from student_versions import STUB  # noqa: E402

SOLVED = "def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"


def _notebook(title: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"m": {}}, "version_major": 2}}
    code = nbformat.v4.new_code_cell(SOLVED, execution_count=1)
    code.outputs = [nbformat.v4.new_output("stream", text="done\n")]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}"), code]
    return nb


@pytest.fixture
def course(tmp_path):
    src = tmp_path / "notebooks"
    src.mkdir()
    for name in ("00_start_here", "03_gradient_step"):
        nbformat.write(_notebook(name), src / f"{name}.ipynb")
    return src, tmp_path / "work"


def _code(path: Path) -> list[str]:
    return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_create_writes_student_versions_without_solutions_outputs_or_widget_state(course):
    src, work = course
    created, kept = lc.create(src, work)
    assert [p.name for p in created] == ["00_start_here.ipynb", "03_gradient_step.ipynb"] and kept == []
    nb = nbformat.read(work / "03_gradient_step.ipynb", as_version=4)
    code = nb.cells[1]
    assert "BEGIN SOLUTION" not in code.source and STUB[1] in code.source
    assert code.outputs == [] and code.execution_count is None
    assert "widgets" not in nb.metadata
    assert not list(work.glob(".*.tmp")), "no temporary file is left behind"


def test_create_never_overwrites_a_learners_work_and_adds_new_notebooks(course):
    src, work = course
    lc.create(src, work)
    mine = work / "03_gradient_step.ipynb"
    mine.write_text(mine.read_text().replace("raise NotImplementedError()", "return 2 * x"))
    nbformat.write(_notebook("07_new"), src / "07_new.ipynb")  # the course grows
    created, kept = lc.create(src, work)
    assert [p.name for p in created] == ["07_new.ipynb"]
    assert [p.name for p in kept] == ["00_start_here.ipynb", "03_gradient_step.ipynb"]
    assert "return 2 * x" in _code(mine)[0]


def test_reset_one_notebook_keeps_a_backup_of_the_learners_file(course):
    src, work = course
    lc.create(src, work)
    mine = work / "03_gradient_step.ipynb"
    edited = mine.read_text().replace("raise NotImplementedError()", "return 2 * x")
    mine.write_text(edited)
    untouched = (work / "00_start_here.ipynb").read_text()
    [(path, backup)] = lc.reset("03", src, work, now=0)
    assert path == mine and backup.name.startswith("03_gradient_step.ipynb.bak-")
    assert backup.read_text() == edited
    assert STUB[1] in _code(mine)[0]
    assert (work / "00_start_here.ipynb").read_text() == untouched, "only the named notebook is reset"
    [(_, second)] = lc.reset("03", src, work, now=0)  # same second: a new name, the first backup stays
    assert second != backup and backup.exists()


def test_reset_all_backs_up_every_copy_and_creates_missing_ones(course):
    src, work = course
    lc.create(src, work)
    (work / "00_start_here.ipynb").unlink()
    done = {path.name: backup for path, backup in lc.reset("all", src, work)}
    assert set(done) == {"00_start_here.ipynb", "03_gradient_step.ipynb"}
    assert done["00_start_here.ipynb"] is None and done["03_gradient_step.ipynb"].exists()
    assert (work / "00_start_here.ipynb").exists()


@pytest.mark.parametrize("name", ["03", "3", "03_gradient_step", "03_gradient_step.ipynb", "work/03_gradient_step.ipynb"])
def test_resolve_accepts_a_number_a_stem_or_a_file_name(course, name):
    src, _ = course
    assert [p.name for p in lc.resolve(name, src)] == ["03_gradient_step.ipynb"]


@pytest.mark.parametrize("name", ["9", "gradient", "", "07"])
def test_resolve_names_the_valid_notebooks_for_an_unknown_one(course, name):
    src, _ = course
    with pytest.raises(lc.UnknownNotebook) as err:
        lc.resolve(name, src)
    assert "00, 03" in str(err.value) and "03_gradient_step.ipynb" in str(err.value)


def test_command_line_reset_needs_a_notebook_and_rejects_unknown_ones(course, capsys):
    src, work = course
    assert lc.main(["--src", str(src), "--work", str(work), "reset"]) == 2
    assert "make reset NB=03" in capsys.readouterr().err and not work.exists()
    assert lc.main(["--src", str(src), "--work", str(work), "reset", "42"]) == 2
    assert "03_gradient_step.ipynb" in capsys.readouterr().err
    assert lc.main(["--src", str(src), "--work", str(work), "create"]) == 0
    assert "created: " in capsys.readouterr().out
    assert lc.main(["--src", str(src), "--work", str(work), "create"]) == 0
    assert "kept" in capsys.readouterr().out
    assert lc.main(["--src", str(src), "--work", str(work), "reset", "0"]) == 0
    assert "previous version is saved as" in capsys.readouterr().out


def test_the_real_course_has_learner_copies_without_solutions(tmp_path):
    created, _ = lc.create(lc.NOTEBOOKS, tmp_path)
    assert len(created) == len(lc.course_notebooks()) >= 7
    for path in created:
        text, course_text = path.read_text(), (lc.NOTEBOOKS / path.name).read_text()
        assert "### BEGIN SOLUTION" not in text and "widget-state" not in text, path.name
        assert text.count("raise NotImplementedError()") >= course_text.count("### BEGIN SOLUTION"), path.name
    assert "raise NotImplementedError()" in (tmp_path / lc.FIRST_NOTEBOOK).read_text()


def _nbgrader_server_extensions() -> set[str]:
    """The server extensions nbgrader enables in this environment (its own config file)."""
    path = Path(sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.d" / "nbgrader.json"
    return {k for k, on in json.loads(path.read_text())["ServerApp"]["jpserver_extensions"].items() if on}


def test_learner_config_turns_off_every_nbgrader_extension_installed(tmp_path):
    config = lc.prepare_learner_config(tmp_path)
    server = json.loads((config / "jupyter_server_config.json").read_text())["ServerApp"]["jpserver_extensions"]
    installed = _nbgrader_server_extensions()
    assert len(installed) == 4 and {k for k, on in server.items() if not on} >= installed
    lab_ext = json.loads((Path(sys.prefix) / "share/jupyter/labextensions/@jupyter/nbgrader/package.json").read_text())
    page = json.loads((config / "labconfig" / "page_config.json").read_text())
    assert page["disabledExtensions"] == {lab_ext["name"]: True}


def test_learner_config_is_refreshed_but_a_learners_settings_are_kept(tmp_path):
    config = lc.prepare_learner_config(tmp_path)
    settings = next((config / "lab" / "user-settings").rglob("*.jupyterlab-settings"))
    settings.write_text('{"fetchNews": "true"}')
    (config / "labconfig" / "page_config.json").write_text("{}")
    lc.prepare_learner_config(tmp_path)
    assert settings.read_text() == '{"fetchNews": "true"}'
    assert "@jupyter/nbgrader" in (config / "labconfig" / "page_config.json").read_text()


@pytest.mark.parametrize("uid", [0, 1000])
def test_learner_server_command(tmp_path, monkeypatch, uid):
    monkeypatch.setattr(os, "geteuid", lambda: uid)
    (tmp_path / lc.FIRST_NOTEBOOK).write_text("{}")
    argv, env = lc.server_command("learner", tmp_path, extra=["--no-browser"], env={"PATH": "/usr/bin"})
    assert argv[:3] == [sys.executable, "-m", "jupyterlab"]
    assert f"--ServerApp.root_dir={tmp_path.resolve()}" in argv and "--no-browser" in argv
    assert ("--allow-root" in argv) == (uid == 0)
    assert argv[-1] == str(tmp_path.resolve() / lc.FIRST_NOTEBOOK), "the page opens on notebook 00"
    assert env["JUPYTER_CONFIG_DIR"] == str(tmp_path.resolve() / ".jupyter")
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent), "nbgrader finds alembic"


def test_instructor_server_command_uses_the_instructors_own_config(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    argv, env = lc.server_command("instructor", env={"PATH": "/usr/bin", "JUPYTER_CONFIG_DIR": "/x"})
    assert f"--ServerApp.root_dir={lc.NOTEBOOKS}" in argv and "--allow-root" in argv
    assert "JUPYTER_CONFIG_DIR" not in env
    with pytest.raises(ValueError):
        lc.server_command("student")
