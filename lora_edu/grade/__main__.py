"""``python -m lora_edu.grade COURSE_DIR ASSIGNMENT``: grade every submission in nbgrader's layout."""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from lora_edu.grade.course_folder import CourseError
from lora_edu.grade.grader import FEEDBACK_FILE, GRADES_FILE, grade


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lora_edu.grade",
        description="Grade COURSE_DIR/submitted/<student>/ASSIGNMENT/*.ipynb against COURSE_DIR/source/ASSIGNMENT/*.ipynb. "
                    f"Student code runs sandboxed; marks go to COURSE_DIR/{GRADES_FILE}, reasons to COURSE_DIR/{FEEDBACK_FILE}.")
    parser.add_argument("course_dir", type=Path, help="the nbgrader course folder (holds source/ and submitted/)")
    parser.add_argument("assignment", help="the assignment's folder name, e.g. lora")
    parser.add_argument("--jobs", type=int, default=None, help="submissions graded at once (default: one per CPU core)")
    parser.add_argument("--seed", type=int, default=None,
                        help="re-use a run's seed to reproduce it (default: a fresh secret seed each run)")
    parser.add_argument("--no-sandbox", action="store_true",
                        help="where bubblewrap is missing (macOS): run student code unsandboxed; see the README for what remains")
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")
    try:
        run = grade(args.course_dir, args.assignment, seed=args.seed, jobs=args.jobs, sandboxed=not args.no_sandbox)
    except CourseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    totals = defaultdict(lambda: [0.0, 0.0])
    for mark in run.marks:
        totals[mark.student_id][0] += mark.score
        totals[mark.student_id][1] += mark.max_score
    for student, (score, max_score) in totals.items():
        print(f"{student:>24}  {score:g} / {max_score:g}")
    where = "in a bubblewrap sandbox" if run.sandboxed else "WITHOUT a sandbox (--no-sandbox)"
    print(f"graded {len(totals)} students, {len(run.marks)} cells, student code {where}, in {run.seconds:.1f} s; "
          f"seed {run.seed} (pass --seed to reproduce)")
    if run.regraded_alone:
        print(f"{run.regraded_alone} submission(s) stopped by a wall-clock limit were graded again alone; the second verdict counts")
    print(f"wrote {args.course_dir / GRADES_FILE} and {args.course_dir / FEEDBACK_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
