"""``python -m lora_edu.classroom feedback COURSE_DIR ASSIGNMENT``: feedback pages from the grader's marks (see .feedback)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lora_edu.classroom.feedback import REPORT_CSV, FeedbackError, write_feedback


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lora_edu.classroom",
                                     description="A class on one server: tools around nbgrader's exchange and the course's grader.")
    sub = parser.add_subparsers(dest="command", required=True)
    fb = sub.add_parser("feedback", help="write feedback/<student>/<assignment>/*.html from grades_feedback.csv "
                                         "(then: nbgrader release_feedback ASSIGNMENT)")
    fb.add_argument("course_dir", type=Path)
    fb.add_argument("assignment")
    args = parser.parse_args(argv)
    try:
        pages = write_feedback(args.course_dir, args.assignment)
    except FeedbackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(pages)} feedback page(s) under {args.course_dir / 'feedback'} and {args.course_dir / REPORT_CSV}; "
          f"release them with: nbgrader release_feedback {args.assignment}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
