"""The grader on the whole course: honest solutions get every mark, the released blanks none, and bad input is refused."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from course_builder import NOTEBOOKS, make_course, submit

from lora_edu.course import exercise_bank
from lora_edu.grade import sandbox
from lora_edu.grade.course_folder import read_source
from lora_edu.grade.grader import FEEDBACK_FILE, GRADES_FILE, grade


def test_every_graded_cell_of_the_course_names_its_exercise_and_function():
    graded = [cell for path in NOTEBOOKS for cell in read_source(path).graded]
    ungraded = [path.name for path in NOTEBOOKS if not read_source(path).graded]
    assert ungraded == ["10_classifying_messages.ipynb"], "every notebook but the optional 10 (predict-first only) is graded"
    from lora_edu.course import exercise_bank
    for cell in graded:
        assert callable(getattr(exercise_bank, cell.exercise)), cell
        assert cell.points == 1.0 and cell.function.isidentifier()


def test_solutions_score_full_marks_and_blanks_zero_on_every_notebook(tmp_path):
    course = make_course(tmp_path / "course")
    submit(course, "solved", solved=True)
    submit(course, "blank")
    result = subprocess.run([sys.executable, "-m", "lora_edu.grade", str(course), "lora"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    n = sum(len(read_source(path).graded) for path in NOTEBOOKS)  # every graded cell of the course, each worth 1
    with open(course / FEEDBACK_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    lost = [(r["notebook"], r["grade_id"], r["message"]) for r in rows if r["student_id"] == "solved" and r["status"] != "passed"]
    assert f"solved  {n} / {n}" in result.stdout, (result.stdout, lost)
    assert f"blank  0 / {n}" in result.stdout and "bubblewrap sandbox" in result.stdout
    assert {r["status"] for r in rows if r["student_id"] == "blank"} == {"not attempted"}
    assert all("YOUR CODE HERE" in r["message"] for r in rows if r["student_id"] == "blank")


@pytest.mark.parametrize("layout,words", [
    ("missing", "does not exist"),
    ("no source", "put the instructor's notebooks there"),
    ("no submitted", "collect submissions into submitted/"),
    ("no students", "has no student folders"),
])
def test_a_course_folder_the_grader_cannot_use_is_refused_and_nothing_is_written(tmp_path, layout, words):
    course = tmp_path / "course"
    if layout != "missing":
        make_course(course, NOTEBOOKS[:1])
        if layout == "no source":
            (course / "source" / "lora" / NOTEBOOKS[0].name).unlink()
            (course / "source" / "lora").rmdir()
        if layout == "no submitted":
            (course / "submitted").rmdir()
    result = subprocess.run([sys.executable, "-m", "lora_edu.grade", str(course), "lora"], capture_output=True, text=True)
    assert result.returncode == 2 and words in result.stderr and result.stderr.startswith("error: ")
    assert not (course / GRADES_FILE).exists() and not (course / FEEDBACK_FILE).exists()


def test_an_assignment_name_that_is_a_path_is_refused(tmp_path):
    make_course(tmp_path, NOTEBOOKS[:1])
    with pytest.raises(ValueError, match="not a plain folder name"):
        grade(tmp_path, "../lora")


def test_jobs_must_be_positive(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lora_edu.grade", str(tmp_path), "lora", "--jobs", "0"], capture_output=True, text=True)
    assert result.returncode == 2 and "--jobs must be at least 1" in result.stderr


def test_without_bubblewrap_the_grader_refuses_and_says_what_to_do(tmp_path, monkeypatch):
    make_course(tmp_path, NOTEBOOKS[:1])
    submit(tmp_path, "alice", NOTEBOOKS[:1], solved=True)
    monkeypatch.setattr(sandbox, "bubblewrap", lambda: None)
    with pytest.raises(ValueError, match="apt-get install bubblewrap.*--no-sandbox"):
        grade(tmp_path, "lora")
    assert not (tmp_path / GRADES_FILE).exists()


def test_no_sandbox_mode_still_grades_in_a_separate_process(tmp_path):
    make_course(tmp_path, NOTEBOOKS[:1])
    submit(tmp_path, "alice", NOTEBOOKS[:1], solved=True)
    submit(tmp_path, "bob", NOTEBOOKS[:1], solutions={"ex00_lora_params": "import os\nos._exit(3)"})
    run = grade(tmp_path, "lora", sandboxed=False)
    marks = {m.student_id: m for m in run.marks}
    assert marks["alice"].score == 1.0 and marks["bob"].score == 0.0
    assert "exited with code 3" in marks["bob"].message


def test_the_readme_states_the_limits_the_grader_uses():
    from course_builder import ROOT

    from lora_edu.grade.course_folder import MAX_NOTEBOOK_BYTES

    readme = " ".join((ROOT / "README.md").read_text().split())
    limits = sandbox.DEFAULT_LIMITS
    for phrase in (f"{limits.call_cpu_seconds:g} s a call, {limits.cell_cpu_seconds:g} s an answer cell, {limits.cpu_seconds:g} s a process",
                   f"{limits.call_wall_seconds:g} s a call, {limits.cell_wall_seconds:g} s an answer cell, {limits.wall_seconds:g} s a process",
                   f"asleep (neither computing nor waiting for a CPU) for {limits.idle_seconds:g} s after its set-up",
                   f"one asleep for {sandbox.IDLE_WINDOW:g} s hands its CPU slot",
                   f"Each student has {limits.student_seconds:g} s of their own time",
                   f"{limits.memory_bytes >> 30} GiB and files at {limits.file_bytes >> 20} MiB",
                   f"each line at most {limits.report_line_bytes >> 20} MiB and {limits.report_bytes >> 20} MiB or {limits.report_lines:,} lines in all",
                   f"over {MAX_NOTEBOOK_BYTES >> 20} MiB", f"at most {MAX_NOTEBOOK_BYTES >> 20} MiB) and hands it to the sandbox unread"):
        assert phrase in readme, phrase
    for name in ("gguf", "bitsandbytes", "peft"):
        assert name in sandbox.HIDDEN_MODULES and name in readme


@pytest.mark.parametrize("usage,again", [(sandbox.Usage(seconds=30, cpu=2, queued=25), True),   # starved of CPU
                                         (sandbox.Usage(seconds=30, cpu=2, queued=1), False),   # slept
                                         (None, True)])                                         # no statistics: as before
def test_only_a_submission_starved_of_cpu_is_graded_again_alone(tmp_path, monkeypatch, usage, again):
    """Another submission may have starved it of CPU: then the second verdict, taken alone, counts; one that slept is not rerun."""
    from lora_edu.course import answer_calls

    make_course(tmp_path, NOTEBOOKS[:1])
    submit(tmp_path, "alice", NOTEBOOKS[:1], solved=True)
    real_run, calls = sandbox.run, []

    def stopped_first(job, **kwargs):
        if not job["calls"]:  # the preflight run, with no student code
            return real_run(job, **kwargs)
        calls.append(job)
        if len(calls) == 1:
            waited = dict(status=answer_calls.WALL_LIMIT, answer=None, error="", changed=[], notes=[], cpu_seconds=0.01)
            events = [{"ready": True}, {"notebook": {"answer_cells": 2, "elsewhere": []}},
                      {"grade_id": "ex00_lora_params_check", "case": 0, "outcome": waited}, {"done": True}]
            return sandbox.RunResult(events, "", 0, False, True, None, usage)
        return real_run(job, **kwargs)

    monkeypatch.setattr(sandbox, "run", stopped_first)
    run = grade(tmp_path, "lora")
    assert len(calls) == (2 if again else 1) and len(run.regraded_alone) == int(again)
    assert (run.marks[0].score == 1.0) == again, run.marks[0].message


def test_a_regrade_alone_is_bounded_by_the_students_time_left(tmp_path, monkeypatch):
    """Red team 2: a process that spins with its timers off looks starved beside others; alone, only its budget is left to it."""
    from lora_edu.course import answer_calls

    make_course(tmp_path, NOTEBOOKS[:1])
    submit(tmp_path, "spinner", NOTEBOOKS[:1], solved=True)
    real_run, seen = sandbox.run, []

    def spins(job, *, limits, **kwargs):
        if not job["calls"]:
            return real_run(job, limits=limits, **kwargs)
        seen.append(limits.wall_seconds)
        waited = dict(status=answer_calls.WALL_LIMIT, answer=None, error="", changed=[], notes=[], cpu_seconds=0.01)
        events = [{"ready": True}, {"notebook": {"answer_cells": 2, "elsewhere": []}},
                  {"grade_id": "ex00_lora_params_check", "case": 0, "outcome": waited}]
        return sandbox.RunResult(events, "", None, True, True, "wall", sandbox.Usage(seconds=limits.wall_seconds, cpu=3, queued=12))

    monkeypatch.setattr(sandbox, "run", spins)
    run = grade(tmp_path, "lora", limits=sandbox.Limits(wall_seconds=15, student_seconds=10))
    assert seen == [15, 10 - 3 + 5] and run.regraded_alone == [("spinner", NOTEBOOKS[0].name)]
    seen.clear()
    grade(tmp_path, "lora", limits=sandbox.Limits(wall_seconds=15, student_seconds=3))
    assert seen == [15], "a student whose time is used up is not graded again"


def test_starved_and_asleep_are_told_apart_by_where_the_time_went():
    assert sandbox.Usage(seconds=40, cpu=5, queued=30).starved()
    assert not sandbox.Usage(seconds=40, cpu=5, queued=3).starved()        # 32 s asleep: it slept
    assert not sandbox.Usage(seconds=40, cpu=36, queued=4).starved()       # computing, hardly queued
    assert sandbox.Usage(seconds=40, cpu=5, queued=30).own == pytest.approx(10)


def test_the_idle_limit_stops_a_sleeper_and_the_usage_says_it_slept(tmp_path):
    job = {"prelude": [], "solution_ids": [], "cpu_seconds": 2, "wall_seconds": 60, "cell_cpu_seconds": 5, "calls": []}
    limits = sandbox.Limits(idle_seconds=3, wall_seconds=60)
    notebook = {"cells": [{"cell_type": "code", "metadata": {"nbgrader": {"grade_id": "a"}},
                           "source": "import signal, time\nsignal.setitimer(signal.ITIMER_REAL, 0)\ntime.sleep(1000)"}]}
    (tmp_path / "nb.ipynb").write_text(json.dumps(notebook))
    with open(tmp_path / "nb.ipynb", "rb") as f:
        result = sandbox.run(job | {"solution_ids": ["a"]}, limits=limits, submission=f)
    assert result.stopped == "idle" and result.usage is not None and result.usage.asleep >= 3
    assert not result.usage.starved() and result.usage.seconds < 30


def test_a_student_over_the_time_budget_gets_the_rest_not_run(tmp_path, monkeypatch):
    # A process asleep for IDLE_WINDOW hands its slot to the next submission, which would then start before the first
    # one's time is counted (on a machine whose disk makes an import wait): here the notebooks run strictly one by one.
    monkeypatch.setattr(sandbox, "IDLE_WINDOW", 1e9)
    make_course(tmp_path, NOTEBOOKS[:2])
    submit(tmp_path, "alice", NOTEBOOKS[:2], solved=True)
    run = grade(tmp_path, "lora", jobs=1, limits=sandbox.Limits(student_seconds=0.01))
    first, second = ([m for m in run.marks if m.notebook == nb.name] for nb in NOTEBOOKS[:2])
    assert all(m.score == 1.0 for m in first)
    assert all(m.score == 0.0 and "used up the 0.01 s" in m.message for m in second)


def test_an_interrupted_run_loses_nothing_graded_and_resumes_with_its_seed(tmp_path):
    """Issue 26: the grader killed mid-run (out of memory, say) keeps what it graded; --resume finishes the run."""
    import os
    import signal
    import time

    from lora_edu.grade.grader import PROGRESS_FILE, RUN_FILE

    make_course(tmp_path, NOTEBOOKS[:1])
    for student in ("alice", "bob", "carol", "dave"):
        submit(tmp_path, student, NOTEBOOKS[:1], solved=True)
    progress = tmp_path / PROGRESS_FILE
    grader = subprocess.Popen([sys.executable, "-m", "lora_edu.grade", str(tmp_path), "lora", "--jobs", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and grader.poll() is None:
        if progress.exists() and len(progress.read_text().splitlines()) >= 2:  # the header and one graded submission
            os.kill(grader.pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    grader.wait()
    assert grader.returncode == -signal.SIGKILL, "the run finished before it could be interrupted"
    assert not (tmp_path / GRADES_FILE).exists()
    header, *graded = (json.loads(line) for line in progress.read_text().splitlines())
    run = grade(tmp_path, "lora", resume=True)
    assert run.seed == header["seed"] and run.resumed == len(graded) >= 1
    assert sorted(run.totals()) == ["alice", "bob", "carol", "dave"] and all(s == m for s, m in run.totals().values())
    assert not progress.exists() and json.loads((tmp_path / RUN_FILE).read_text())["resumed"] == len(graded)
    with pytest.raises(ValueError, match="no interrupted run to resume"):
        grade(tmp_path, "lora", resume=True)


def test_the_graders_memory_stays_bounded_by_a_parse_bomb_and_a_report_flood(tmp_path):
    """Issue 26, attack 1: an 8 MiB non-answer cell took the old grader to 7.37 GiB; a flood of the report, 1.02 GiB.

    The grader's own peak memory (VmHWM of its process, not of the sandboxes) with both in one run stays
    within 300 MiB of a run without them: the notebook is parsed in the sandbox, the report line by line.
    """
    def peak_mib(course: Path) -> float:
        code = ("import sys; from lora_edu.grade.grader import grade; grade(__import__('pathlib').Path(sys.argv[1]), 'lora'); "
                "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])")
        out = subprocess.run([sys.executable, "-c", code, str(course)], capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        return int(out.stdout.split()[-1]) / 1024

    plain = make_course(tmp_path / "plain", NOTEBOOKS[:1])
    submit(plain, "alice", NOTEBOOKS[:1], solved=True)
    bombed = make_course(tmp_path / "bombed", NOTEBOOKS[:1])
    submit(bombed, "alice", NOTEBOOKS[:1], solved=True)
    flood = "import os\nfor fd in range(3, 64):\n    try:\n        for _ in range(18):\n            os.write(fd, b'[' * (1 << 20))\n" \
            "    except OSError:\n        pass\ndef lora_params(d, k, r):\n    return 0\n"
    submit(bombed, "flooder", NOTEBOOKS[:1], solutions={"ex00_lora_params": flood})
    path = submit(bombed, "bomber", NOTEBOOKS[:1], solved=True) / NOTEBOOKS[0].name
    nb = json.loads(path.read_text())
    nb["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": "x;" * (4 << 20)})
    path.write_text(json.dumps(nb))
    assert path.stat().st_size > 8 << 20
    baseline, attacked = peak_mib(plain), peak_mib(bombed)
    assert attacked - baseline < 300, (baseline, attacked)
    with open(bombed / FEEDBACK_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(float(r["score"]) == 1.0 for r in rows if r["student_id"] == "bomber"), rows


def test_the_seccomp_filter_is_built_for_the_machines_the_course_runs_on():
    from lora_edu.grade import seccomp

    for machine in ("x86_64", "aarch64"):
        program = seccomp.filter_program(machine)
        assert program and len(program) % 8 == 0 and len(program) // 8 < 64
    assert seccomp.filter_program("sparc") is None


def test_feedback_names_a_function_defined_outside_the_answer_cell_and_a_misnamed_notebook(tmp_path):
    import json

    import nbformat

    from lora_edu.grade.grader import RUN_FILE, TOTALS_FILE

    make_course(tmp_path, NOTEBOOKS[:2])
    folder = submit(tmp_path, "frank", NOTEBOOKS[:1], solutions={"ex00_lora_params": "# moved below\n"})
    nb = nbformat.read(folder / NOTEBOOKS[0].name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("def lora_params(d, k, r):\n    return r * (d + k)\n"))
    nbformat.write(nb, folder / NOTEBOOKS[0].name)
    (folder / "01_memory_cost-Copy1.ipynb").write_text("{}")
    submit(tmp_path, "=cmd", NOTEBOOKS[:2], solved=True)
    run = grade(tmp_path, "lora", seed=7)
    marks = {(m.student_id, m.grade_id): m for m in run.marks}  # a notebook has several graded cells
    assert "You defined lora_params in another cell" in marks["frank", "ex00_lora_params_check"].message
    misnamed = [m for m in run.marks if m.student_id == "frank" and m.notebook.startswith("01")]
    assert misnamed and all("found 01_memory_cost-Copy1.ipynb: rename it to 01_memory_cost.ipynb" in m.message for m in misnamed)
    with open(tmp_path / TOTALS_FILE, newline="") as f:
        totals = {row["student_id"]: float(row["score"]) for row in csv.DictReader(f)}
    both = sum(len(read_source(path).graded) for path in NOTEBOOKS[:2])
    assert totals == {"frank": 0.0, "'=cmd": float(both)}, "a spreadsheet must not run a student id as a formula"
    record = json.loads((tmp_path / RUN_FILE).read_text())
    assert record["seed"] == 7 and record["sandboxed"] and record["seccomp"] and record["limits"]["cpu_seconds"] == 120


def test_scratch_space_is_mounted_before_the_environment_so_a_venv_below_tmp_stays_visible(tmp_path):
    cmd = sandbox._bwrap_command("bwrap", tmp_path, None, 9, sandbox.DEFAULT_LIMITS)
    assert cmd.index("/tmp") < cmd.index("--ro-bind"), "a --tmpfs /tmp after the binds would hide a venv in /tmp (a fresh clone there)"


def test_a_broken_sandbox_stops_the_run_instead_of_giving_everyone_zero(tmp_path, monkeypatch):
    from lora_edu.grade.course_folder import CourseError
    from lora_edu.grade.grader import GRADES_FILE

    make_course(tmp_path, NOTEBOOKS[:1])
    submit(tmp_path, "alice", NOTEBOOKS[:1], solved=True)
    monkeypatch.setattr(sandbox, "run", lambda job, **kw: sandbox.RunResult([], "python: can't open file", 2, False, True))
    with pytest.raises(CourseError, match="(?s)the sandbox could not run the grading script.*can.t open file"):
        grade(tmp_path, "lora")
    assert not (tmp_path / GRADES_FILE).exists()


#: issue 13's exercises that are not a formula: (grade_id, a wrong answer, words its feedback must contain)
WRONG_ANSWERS = {
    "ex00_predict_trainable": ("def predict_trainable():\n    return 1792 + 128 + 128\n", "your prediction is not what"),
    "ex02_torch_style_output": (exercise_bank.BUGGY_TORCH_STYLE, "wrong values on the visible example"),  # the planted bug
    "ex03_predict_alpha_doubling": ("def predict_alpha_doubling():\n    return [2, 2]\n", "your prediction is not what"),
    "ex04_lora_plan": ("def lora_plan(d, k, budget):\n    return [budget // (d + k) + 1, 16, 0.02]\n", "does not meet the target"),
    "ex05_outputs_around_merge": (exercise_bank.BUGGY_MERGE, "wrong values on the visible example"),    # the planted bug
}


def test_predictions_bug_hunts_and_the_open_task_grade_honest_and_wrong_answers_through_the_real_grader(tmp_path):
    from course_builder import ROOT

    names = ("00_start_here", "02_worked_example", "03_gradient_step", "04_rank_and_alpha", "05_lora_from_scratch")
    notebooks = [ROOT / "notebooks" / f"{name}.ipynb" for name in names]
    make_course(tmp_path, notebooks)
    submit(tmp_path, "honest", notebooks, solved=True)
    submit(tmp_path, "wrong", notebooks, solutions={gid: code for gid, (code, _) in WRONG_ANSWERS.items()})
    run = grade(tmp_path, "lora", seed=11)
    marks = {(m.student_id, m.grade_id): m for m in run.marks}
    for grade_id, (_, words) in WRONG_ANSWERS.items():
        honest, wrong = marks["honest", f"{grade_id}_check"], marks["wrong", f"{grade_id}_check"]
        assert honest.score == 1.0, honest.message
        assert wrong.score == 0.0 and wrong.status == "failed" and words in wrong.message, wrong.message


def test_judges_run_with_one_thread_of_maths_and_the_settings_come_back():
    """Grading threads judge side by side: BLAS and torch one thread each (OpenBLAS's pool hung a judge's SVD)."""
    import torch
    from threadpoolctl import threadpool_info

    from lora_edu.grade.grader import _one_thread_maths

    before = torch.get_num_threads()
    with _one_thread_maths():
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert torch.get_num_threads() == before
