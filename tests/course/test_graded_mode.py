"""The graded-course switch (issue 26, attack 5): solution() refuses and references are sealed; self-study keeps both."""
import inspect

import pytest

from lora_edu.course import exercise_bank, graded


@pytest.fixture
def graded_on(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(graded.ENV_VAR, "1")


def test_self_study_shows_the_solution_and_the_reference(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(graded.ENV_VAR, raising=False)
    ex = exercise_bank.lora_param_count()
    ex.solution()
    assert "return r * (d + k)" in capsys.readouterr().out
    assert "r * (d + k)" in inspect.getsource(ex.reference)


def test_graded_mode_refuses_the_solution_and_seals_the_reference(graded_on, capsys):
    ex = exercise_bank.lora_param_count()
    ex.solution()
    out = capsys.readouterr().out
    assert "solutions are off in this graded course" in out and "r * (d + k)" not in out
    assert "not shown in a graded course" in repr(ex.reference) and ex._solution is None
    with pytest.raises(TypeError):
        inspect.getsource(ex.reference)


def test_graded_mode_still_checks_answers(graded_on):
    ex = exercise_bank.lora_param_count()
    assert ex.check(lambda d, k, r: r * (d + k)).passed
    assert not ex.check(lambda d, k, r: d * k).passed
    assert exercise_bank.predict_trainable().check(lambda: 4 * (64 + 128) + 4 * (128 + 128)).passed


@pytest.mark.parametrize("value,on", [("1", True), ("yes", True), ("0", False), ("", False), ("false", False)])
def test_the_environment_variable_turns_it_on(monkeypatch, tmp_path, value, on):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(graded.ENV_VAR, value)
    assert graded.graded_course() is on


def test_a_marker_file_beside_the_notebooks_turns_it_on(monkeypatch, tmp_path):
    """nbgrader's generate_assignment releases the file with the notebooks, so a student's kernel finds it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(graded.ENV_VAR, raising=False)
    assert not graded.graded_course()
    (tmp_path / graded.MARKER_FILE).write_text("graded\n")
    assert graded.graded_course()


def test_nbgraders_release_carries_the_marker_file_with_the_notebooks(tmp_path):
    """The README's way to turn graded mode on for students: the file in source/<assignment>/ reaches release/<assignment>/."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    notebook = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("00_*.ipynb"))[0]
    source = tmp_path / "source" / "lora"
    source.mkdir(parents=True)
    shutil.copy(notebook, source / notebook.name)
    (source / graded.MARKER_FILE).write_text("graded course: solutions are off\n")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "lora", "--force"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (tmp_path / "release" / "lora" / graded.MARKER_FILE).is_file()
    assert (tmp_path / "release" / "lora" / notebook.name).is_file()
