"""Time to grade a class: 30 students × every notebook of the course, sandboxed, repeated.

    .venv/bin/python benchmarks/bench_grading.py                 # 3 rounds; writes lora_edu/data/bench_grading.json
    .venv/bin/python benchmarks/bench_grading.py --students 5 --repeats 1 --out /tmp/quick.json

The class is a mix an instructor meets: a third hand in the solutions, a third the untouched release,
a third wrong answers (every function returns 0). Each round grades the whole class with
``lora_edu.grade.grader.grade`` (one sandboxed process per student and notebook, as many at once as
the machine has cores) and records the wall-clock seconds; min and median over the rounds, and the
machine, go into the result.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench_common import load_average, machine_info, min_median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "grade"))
from course_builder import NOTEBOOKS, make_course, submit  # noqa: E402

from lora_edu.grade.course_folder import read_source  # noqa: E402
from lora_edu.grade.grader import grade  # noqa: E402

OUT = ROOT / "lora_edu" / "data" / "bench_grading.json"


def build_class(folder: Path, students: int) -> Path:
    course = make_course(folder)
    wrong = {sid: "def f(*args, **kwargs):\n    return 0\n" for path in NOTEBOOKS for sid in read_source(path).solution_ids}
    for n in range(students):
        kind = ("solved", "blank", "wrong")[n % 3]
        if kind == "solved":
            submit(course, f"student{n:02d}", solved=True)
        elif kind == "blank":
            submit(course, f"student{n:02d}")
        else:  # wrong answers under the right names
            cells = {}
            for path in NOTEBOOKS:
                source = read_source(path)
                for sid, cell in zip(source.solution_ids, source.graded):
                    cells[sid] = wrong[sid].replace("def f", f"def {cell.function}")
            submit(course, f"student{n:02d}", solutions=cells)
    return course


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rounds, load = [], []
    with tempfile.TemporaryDirectory(prefix="bench_grading_") as tmp:
        course = build_class(Path(tmp) / "course", args.students)
        for r in range(args.repeats):
            load.append(load_average())
            start = time.perf_counter()
            run = grade(course, "lora")
            rounds.append(time.perf_counter() - start)
            full = sum(m.score for m in run.marks)
            print(f"round {r + 1}/{args.repeats}: {rounds[-1]:.1f} s, {len(run.marks)} cells graded, {full:g} marks given", flush=True)
    result = dict(what=f"grade {args.students} students x {len(NOTEBOOKS)} notebooks (one third solved, blank, wrong), "
                       "bubblewrap sandbox, one process per student and notebook, jobs = cores",
                  students=args.students, notebooks=len(NOTEBOOKS), repeats=args.repeats, raw_s=rounds,
                  seconds=min_median(rounds), load_average_before_rounds=load, machine=machine_info())
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"min {result['seconds']['min']:.1f} s, median {result['seconds']['median']:.1f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
