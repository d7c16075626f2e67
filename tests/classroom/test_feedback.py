"""Feedback pages from the grader's CSV (lora_edu.classroom.feedback): marks, reasons escaped, lateness, nothing else."""
from __future__ import annotations

import csv
import json

import pytest

from lora_edu.classroom import feedback
from lora_edu.classroom.exchange import COLLECTED_FILE

ROWS = [
    ("ann", "00_start_here.ipynb", "ex00_a", 1.0, 1.0, "passed", "correct on the visible example and 9 hidden cases."),
    ("ann", "00_start_here.ipynb", "ex00_b", 0.0, 1.0, "failed", "<script>alert(1)</script> wrong values on hidden case 3"),
    ("ben", "00_start_here.ipynb", "ex00_a", 0.0, 1.0, "not attempted", "00_start_here.ipynb was not submitted"),
    ("ben", "00_start_here.ipynb", "ex00_b", 0.0, 1.0, "not attempted", "00_start_here.ipynb was not submitted"),
]


def course(tmp_path, due="2030-01-01T12:00:00", submitted=None):
    with open(tmp_path / feedback.FEEDBACK_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(("student_id", "notebook", "grade_id", "score", "max_score", "status", "message"))
        writer.writerows(ROWS)
    folder = tmp_path / "submitted" / "ann" / "lora"
    folder.mkdir(parents=True)
    (folder / "timestamp.txt").write_text("2030-01-01 11:00:00.000000 UTC")
    (folder / "submission_secret.txt").write_text("s3cret")
    (folder / COLLECTED_FILE).write_text(json.dumps({"submitted_utc": submitted or "2030-01-01T11:00:00", "due_utc": due}))
    return tmp_path


def test_pages_hold_marks_and_escaped_reasons_and_release_files(tmp_path):
    written = feedback.write_feedback(course(tmp_path), "lora")
    assert [p.relative_to(tmp_path).as_posix() for p in written] == ["feedback/ann/lora/00_start_here.html"]
    text = written[0].read_text()
    assert "1 / 2" in text and "on time" in text and "late" not in text
    assert "<script>" not in text and "&lt;script&gt;" in text
    for name in ("timestamp.txt", "submission_secret.txt"):   # what nbgrader's release_feedback reads beside the page
        assert (tmp_path / "feedback/ann/lora" / name).read_text() == (tmp_path / "submitted/ann/lora" / name).read_text()
    report = list(csv.DictReader(open(tmp_path / feedback.REPORT_CSV)))
    assert [(r["student_id"], r["score"], r["max_score"], r["minutes_late"]) for r in report] == [("ann", "1", "2", "0"), ("ben", "0", "2", "0")]


def test_late_is_the_minutes_after_the_due_date(tmp_path):
    feedback.write_feedback(course(tmp_path, submitted="2030-01-01T12:30:30"), "lora")
    text = (tmp_path / "feedback/ann/lora/00_start_here.html").read_text()
    assert "<strong>late</strong>, 30.5 minutes" in text
    assert next(csv.DictReader(open(tmp_path / feedback.REPORT_CSV)))["minutes_late"] == "30.5"


def test_unknown_times_are_said_not_guessed(tmp_path):
    (course(tmp_path) / "submitted/ann/lora" / COLLECTED_FILE).write_text("not json")
    feedback.write_feedback(tmp_path, "lora")
    assert "is not known" in (tmp_path / "feedback/ann/lora/00_start_here.html").read_text()


def test_no_grades_yet_is_a_clear_error_that_writes_nothing(tmp_path):
    with pytest.raises(feedback.FeedbackError, match="grade first"):
        feedback.write_feedback(tmp_path, "lora")
    assert list(tmp_path.iterdir()) == []
