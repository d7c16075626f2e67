"""Repository-wide pytest hooks: the notebooks' time budget, measured on every test run.

The chassis promises the whole course executes in at most 120 s on a 2-core machine and no
notebook takes over 30 s. nbval runs each notebook cell by cell; we add up the cells'
times (kernel start-up included) per notebook, print a table at the end of the run, and
fail the run when the budget is broken.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

NOTEBOOK_BUDGET_S = 30.0
COURSE_BUDGET_S = 120.0

_notebook_seconds: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        _notebook_seconds[path] += report.duration


def _budget_problems() -> list[str]:
    problems = [f"{nb} took {s:.1f} s (budget {NOTEBOOK_BUDGET_S:.0f} s)" for nb, s in _notebook_seconds.items() if s > NOTEBOOK_BUDGET_S]
    total = sum(_notebook_seconds.values())
    all_ran = len(_notebook_seconds) == len(list(Path(__file__).parent.glob("notebooks/*.ipynb")))
    if all_ran and total > COURSE_BUDGET_S:
        problems.append(f"the whole course took {total:.1f} s (budget {COURSE_BUDGET_S:.0f} s)")
    return problems


def pytest_terminal_summary(terminalreporter):
    if not _notebook_seconds:
        return
    tr = terminalreporter
    tr.section("notebook execution time (nbval, kernel start included)")
    for nb, seconds in sorted(_notebook_seconds.items()):
        tr.write_line(f"{nb:<45} {seconds:6.1f} s")
    tr.write_line(f"{'total':<45} {sum(_notebook_seconds.values()):6.1f} s   "
                  f"(budget: {COURSE_BUDGET_S:.0f} s in all, {NOTEBOOK_BUDGET_S:.0f} s a notebook)")
    for problem in _budget_problems():
        tr.write_line(f"OVER BUDGET: {problem}", red=True)


def pytest_sessionfinish(session, exitstatus):
    if _budget_problems() and exitstatus == 0:
        session.exitstatus = 1
