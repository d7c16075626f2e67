"""Repository-wide pytest hooks: each notebook's execution time, printed on every test run.

nbval runs each notebook cell by cell; we add up the cells' times (kernel start-up included)
per notebook and print a table against the budgets of ``lora_edu.course.course_map`` (30 s a
notebook, 120 s for the seven-notebook course). A test run must not fail because the machine
is busy (with one core taken by another process notebook 04 once took 55.9 s), so the run
fails only on a gross regression: a notebook, or the whole course, over
``GROSS_REGRESSION_FACTOR`` (3) times its budget. Measuring against the budget itself is the
benchmark's job: ``make bench`` (``benchmarks/bench_course.py``) repeats the course and reports
min and median.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from lora_edu.course import course_map

_notebook_seconds: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _notebook_seconds[path] += report.duration


def _verdicts() -> list[tuple[str, str]]:
    all_ran = len(_notebook_seconds) == len(list(Path(__file__).parent.glob("notebooks/*.ipynb")))
    return course_map.time_verdicts(dict(_notebook_seconds), whole_course=all_ran)


def pytest_terminal_summary(terminalreporter):
    if not _notebook_seconds:
        return
    tr = terminalreporter
    factor = course_map.GROSS_REGRESSION_FACTOR
    tr.section("notebook execution time (nbval, kernel start included)")
    for nb, seconds in sorted(_notebook_seconds.items()):
        tr.write_line(f"{nb:<45} {seconds:6.1f} s   (budget {course_map.notebook_budget_s(nb):.0f} s)")
    tr.write_line(f"{'total':<45} {sum(_notebook_seconds.values()):6.1f} s   "
                  f"(budget {course_map.course_budget_s():.0f} s for the whole course)")
    verdicts = _verdicts()
    for level, message in verdicts:
        if level == "gross":
            tr.write_line(f"GROSS REGRESSION (fails the run): {message}", red=True)
        else:
            tr.write_line(f"over budget (not a failure; a busy machine does this): {message}", yellow=True)
    if any(level == "over" for level, _ in verdicts):
        tr.write_line(f"The run fails only past {factor:g} × a budget; `make bench` measures the course repeatedly.")


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 0 and any(level == "gross" for level, _ in _verdicts()):
        session.exitstatus = 1
