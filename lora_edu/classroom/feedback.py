"""Feedback a student can fetch, from the trusted grader's marks: ``python -m lora_edu.classroom feedback COURSE ASSIGNMENT``.

nbgrader's ``generate_feedback`` renders the notebooks its own ``autograde`` ran, as the instructor, with the
marks the graded cells displayed: neither is used in a class graded by ``python -m lora_edu.grade``. This writes,
for each collected submission, one page per notebook from the grader's ``grades_feedback.csv``: each graded
cell's mark and the grader's reason (what the notebook's check would have said), the time it was handed in
and whether that was after the due date. The pages go where nbgrader's ``release_feedback`` looks
(``feedback/<student>/<assignment>/<notebook>.html``, with the submission's ``timestamp.txt`` and
``submission_secret.txt``), so releasing and fetching stay nbgrader's commands.

What a page shows is only the grader's messages and the student's own name and marks: never the cases drawn
for grading (a message names the *visible* example's inputs and, for a hidden case, only its number and the
values expected and returned), never the seed, never another student.

It also writes ``class_report.csv`` in the course folder: one row per student with the total, the time handed
in (the later of the time the student's submission claims and the time the server saw it change, see
:mod:`.exchange`) and how many minutes late, for the instructor's gradebook.
"""
from __future__ import annotations

import csv
import datetime as dt
import html
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from lora_edu.classroom.exchange import COLLECTED_FILE

FEEDBACK_CSV, REPORT_CSV = "grades_feedback.csv", "class_report.csv"
REPORT_COLUMNS = ("student_id", "score", "max_score", "submitted_utc", "due_utc", "minutes_late")


class FeedbackError(ValueError):
    """The course folder lacks what feedback needs; the message says what to run first."""


@dataclass(frozen=True)
class Handed:
    """When one student's collected submission was handed in, against the due date (naive UTC, nbgrader's convention)."""

    submitted: dt.datetime | None
    due: dt.datetime | None

    @property
    def minutes_late(self) -> float:
        if self.submitted is None or self.due is None or self.submitted <= self.due:
            return 0.0
        return round((self.submitted - self.due).total_seconds() / 60, 1)


def handed(folder: Path) -> Handed:
    """Read the collection record (:data:`COLLECTED_FILE`) of one submission folder; unknown times are None."""
    try:
        record = json.loads((folder / COLLECTED_FILE).read_text())
    except (OSError, ValueError):
        return Handed(None, None)

    def when(key):
        value = record.get(key) if isinstance(record, dict) else None
        try:
            return dt.datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            return None
    return Handed(when("submitted_utc"), when("due_utc"))


def _marks(course: Path) -> dict[str, dict[str, list[dict]]]:
    """student -> notebook -> rows of grades_feedback.csv."""
    path = course / FEEDBACK_CSV
    if not path.is_file():
        raise FeedbackError(f"{path} does not exist: grade first (python -m lora_edu.grade {course} ASSIGNMENT)")
    out: dict[str, dict[str, list[dict]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["student_id"], {}).setdefault(row["notebook"], []).append(row)
    return out


def page(student: str, assignment: str, notebook: str, rows: list[dict], when: Handed) -> str:
    """One notebook's feedback page: the marks and the grader's reasons, escaped."""
    score = sum(float(r["score"]) for r in rows)
    top = sum(float(r["max_score"]) for r in rows)
    if when.submitted is None:
        timing = "The time you handed this in is not known."
    elif when.minutes_late:
        timing = f"Handed in {when.submitted:%Y-%m-%d %H:%M} UTC: <strong>late</strong>, {when.minutes_late:g} minutes after the due date."
    else:
        timing = f"Handed in {when.submitted:%Y-%m-%d %H:%M} UTC" + (", on time." if when.due else ".")
    cells = "\n".join(
        f"<tr><td>{html.escape(r['grade_id'])}</td><td>{float(r['score']):g} / {float(r['max_score']):g}</td>"
        f"<td>{html.escape(r['status'])}</td><td>{html.escape(r['message'])}</td></tr>" for r in rows)
    esc = html.escape
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Feedback: {esc(assignment)}/{esc(notebook)}</title></head>\n"
            f"<body>\n<h1>Feedback on {esc(notebook)} ({esc(assignment)})</h1>\n<p>For {esc(student)}. {timing}</p>\n"
            f"<p>Score: <strong>{score:g} / {top:g}</strong>. Marks come from the course's grader, which ran your answer cells "
            "on fresh cases; each reason is what the notebook's check would have told you.</p>\n"
            f"<table border='1' cellpadding='4'>\n<tr><th>Exercise cell</th><th>Mark</th><th>Status</th><th>Reason</th></tr>\n{cells}\n"
            "</table>\n</body></html>\n")


def write_feedback(course: Path, assignment: str) -> list[Path]:
    """Write every collected student's feedback pages and the class report; return the pages written."""
    course = Path(course)
    marks = _marks(course)
    submitted = course / "submitted"
    written, report = [], []
    for student in sorted(marks):
        folder = submitted / student / assignment
        when = handed(folder)
        total = [0.0, 0.0]
        out = course / "feedback" / student / assignment
        for notebook, rows in sorted(marks[student].items()):
            total[0] += sum(float(r["score"]) for r in rows)
            total[1] += sum(float(r["max_score"]) for r in rows)
            stamps = [folder / name for name in ("timestamp.txt", "submission_secret.txt")]
            if not all(p.is_file() and not p.is_symlink() for p in stamps):
                continue  # nothing handed in through the exchange: nowhere to release feedback to
            out.mkdir(parents=True, exist_ok=True)
            for p in stamps:
                shutil.copyfile(p, out / p.name)
            target = out / f"{Path(notebook).stem}.html"
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_text(page(student, assignment, notebook, rows, when), encoding="utf-8")
            os.replace(tmp, target)
            written.append(target)
        report.append((student, f"{total[0]:g}", f"{total[1]:g}", when.submitted.isoformat() if when.submitted else "",
                       when.due.isoformat() if when.due else "", f"{when.minutes_late:g}"))
    with open(course / REPORT_CSV, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(REPORT_COLUMNS)
        writer.writerows(report)
    return written
