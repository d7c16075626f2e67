"""``python -m lora_edu.grade COURSE_DIR ASSIGNMENT``: grade every submission in nbgrader's layout."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from lora_edu.grade import sandbox
from lora_edu.grade.course_folder import CourseError
from lora_edu.grade.grader import FEEDBACK_FILE, GRADES_FILE, PROGRESS_FILE, RUN_FILE, TOTALS_FILE, grade, shown_name


def read_seed(path: Path) -> int:
    """The seed in ``path``: a run's JSON record (its "seed") or a file holding only the number."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"--seed-file {path}: cannot read it ({exc.strerror})") from None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    value = value.get("seed") if isinstance(value, dict) else value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"--seed-file {path}: no seed in it (expected {RUN_FILE}, with its \"seed\", or a file holding one integer)")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lora_edu.grade",
        description="Grade COURSE_DIR/submitted/<student>/ASSIGNMENT/*.ipynb against COURSE_DIR/source/ASSIGNMENT/*.ipynb. "
                    f"Student code runs sandboxed; marks go to COURSE_DIR/{GRADES_FILE}, reasons to {FEEDBACK_FILE}, "
                    f"totals to {TOTALS_FILE}, the seed and settings to {RUN_FILE}.")
    parser.add_argument("course_dir", type=Path, help="the nbgrader course folder (holds source/ and submitted/)")
    parser.add_argument("assignment", help="the assignment's folder name, e.g. lora")
    parser.add_argument("--jobs", type=int, default=None, help="submissions graded at once (default: one per CPU core)")
    parser.add_argument("--seed", type=int, default=None,
                        help="re-use a run's seed to reproduce its cases exactly (default: fresh secret cases each run, "
                             "which is what late work and appeals should get; see the README)")
    parser.add_argument("--seed-file", type=Path, default=None,
                        help=f"read the seed to re-use from a file: a run's {RUN_FILE} or a file holding the number. On a shared "
                             "server prefer it to --seed, whose value every account sees in the process list (ps, /proc) while "
                             "the grader runs")
    parser.add_argument("--resume", action="store_true",
                        help=f"carry on an interrupted run from COURSE_DIR/{PROGRESS_FILE} (same seed; what it graded is kept)")
    parser.add_argument("--student-seconds", type=float, default=sandbox.DEFAULT_LIMITS.student_seconds,
                        help="each student's budget of their code's own time (CPU and asleep, not waiting for a CPU) over all "
                             "notebooks; notebooks after it are not run (default: %(default)g s; the course's solutions need about 8)")
    parser.add_argument("--no-sandbox", action="store_true",
                        help="where bubblewrap is missing (macOS): run student code unsandboxed; see the README for what remains")
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be at least 1, not {args.jobs}")
    if not args.student_seconds > 0:
        parser.error(f"--student-seconds must be positive, not {args.student_seconds:g}")
    if args.seed_file is not None:
        if args.seed is not None:
            parser.error("give --seed or --seed-file, not both")
        try:
            args.seed = read_seed(args.seed_file)
        except ValueError as exc:
            parser.error(str(exc))
    limits = dataclasses.replace(sandbox.DEFAULT_LIMITS, student_seconds=args.student_seconds)
    try:
        run = grade(args.course_dir, args.assignment, seed=args.seed, jobs=args.jobs, sandboxed=not args.no_sandbox,
                    resume=args.resume, limits=limits)
    except CourseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for student, (score, max_score) in run.totals().items():
        print(f"{shown_name(student):>24}  {score:g} / {max_score:g}")
    where = "in a bubblewrap sandbox" if run.sandboxed else "WITHOUT a sandbox (--no-sandbox)"
    print(f"graded {len(run.totals())} students, {len(run.marks)} cells, student code {where}, in {run.seconds:.1f} s; "
          f"seed {run.seed} (pass --seed to reproduce)")
    if run.resumed:
        print(f"{run.resumed} submission(s) came from the interrupted run's progress file")
    if run.regraded_alone:
        print(f"{len(run.regraded_alone)} submission(s) stopped by a wall-clock limit while starved of CPU were graded again alone; "
              "the second verdict counts")
    written = ", ".join(str(args.course_dir / name) for name in (GRADES_FILE, FEEDBACK_FILE, TOTALS_FILE, RUN_FILE))
    print(f"wrote {written} (each run rewrites them; students without a folder in submitted/ are not listed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
