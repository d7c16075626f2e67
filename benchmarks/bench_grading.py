"""Time to grade a class, what one sleeping student costs it, and the grader's peak memory under attack.

    .venv/bin/python benchmarks/bench_grading.py                 # all three, 3 rounds; writes lora_edu/data/bench_grading.json
    .venv/bin/python benchmarks/bench_grading.py --students 5 --repeats 1 --out /tmp/quick.json

1. **The class** (the README's "time to grade a class"): 30 students × every notebook of the course, a mix
   an instructor meets: a third hand in the solutions, a third the untouched release, a third wrong answers
   (every function returns 0). Each round grades the whole class with ``lora_edu.grade.grader.grade`` (one
   sandboxed process per student and notebook, as many computing at once as the machine has cores) and
   records the wall-clock seconds.
2. **One sleeping student** (issue 26, attack 2): the same class plus one student whose every answer cell
   turns off its timers, ignores SIGALRM and sleeps. Rounds alternate with rounds of the class alone; the
   cost is the difference of the medians (and of the minimums).
3. **The grader's peak memory** (issue 26, attack 1): the peak resident memory (``VmHWM``) of the grader's
   own process, not of its sandboxes, grading one honest student alone, then that student beside one whose
   notebook is the largest the grader accepts (``MAX_NOTEBOOK_BYTES``), filled with a non-answer cell of
   ``x;x;…`` (the old grader's ``ast.parse`` took 0.9 GiB per MiB of it), and one who floods the report pipe
   with 18 MiB. Each in a fresh process.

min and median over the rounds, the raw times, the load before each round and the machine go into the result.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import load_average, machine_info, min_median

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "grade"))
from course_builder import NOTEBOOKS, make_course, submit  # noqa: E402

from lora_edu.grade.course_folder import MAX_NOTEBOOK_BYTES, read_source  # noqa: E402
from lora_edu.grade.grader import RUN_FILE, grade  # noqa: E402

OUT = ROOT / "lora_edu" / "data" / "bench_grading.json"
#: an answer cell that turns off the grader's per-call timers and sleeps (issue 26's "ignores SIGALRM and sleeps")
SLEEPER = "import signal, time\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nsignal.setitimer(signal.ITIMER_REAL, 0)\ntime.sleep(10**6)\n"
#: an answer cell that writes 18 MiB to every file descriptor it can (the report pipe among them), then answers wrong
FLOOD = ("import os\nfor fd in range(3, 64):\n    try:\n        for _ in range(18):\n            os.write(fd, b'[' * (1 << 20))\n"
         "    except OSError:\n        pass\n")


def _answers(code: str | None) -> dict:
    """Every answer cell of the course replaced by ``code`` (None: wrong answers under the right names)."""
    cells = {}
    for path in NOTEBOOKS:
        source = read_source(path)
        for sid, cell in zip(source.solution_ids, source.graded):
            cells[sid] = code if code is not None else f"def {cell.function}(*args, **kwargs):\n    return 0\n"
    return cells


def build_class(folder: Path, students: int, *, sleeper: bool = False) -> Path:
    course = make_course(folder)
    for n in range(students):
        kind = ("solved", "blank", "wrong")[n % 3]
        if kind == "solved":
            submit(course, f"student{n:02d}", solved=True)
        elif kind == "blank":
            submit(course, f"student{n:02d}")
        else:  # wrong answers under the right names
            submit(course, f"student{n:02d}", solutions=_answers(None))
    if sleeper:  # named to sit in the middle of the class (students are graded in name order)
        submit(course, f"student{students // 2:02d}_sleeper", solutions=_answers(SLEEPER))
    return course


def _timed(course: Path, load: list) -> tuple[float, object]:
    load.append(load_average())
    start = time.perf_counter()
    run = grade(course, "lora")
    return time.perf_counter() - start, run


def bench_class(tmp: Path, students: int, repeats: int) -> dict:
    rounds, load = [], []
    course = build_class(tmp / "class", students)
    for r in range(repeats):
        seconds, run = _timed(course, load)
        rounds.append(seconds)
        print(f"class round {r + 1}/{repeats}: {seconds:.1f} s, {len(run.marks)} cells graded, "
              f"{sum(m.score for m in run.marks):g} marks given", flush=True)
    used = json.loads((course / RUN_FILE).read_text())["student_seconds_used"]  # own time (CPU + asleep), last round
    return dict(raw_s=rounds, seconds=min_median(rounds), load_average_before_rounds=load,
                own_seconds_per_student={kind: max(v for s, v in used.items() if int(s[7:9]) % 3 == n)
                                         for n, kind in enumerate(("solved (most)", "blank (most)", "wrong (most)"))})


def bench_sleeper(tmp: Path, students: int, repeats: int) -> dict:
    """Rounds of the class alone and of the class with one sleeping student, alternating."""
    courses = {"alone": build_class(tmp / "alone", students), "with_sleeper": build_class(tmp / "sleeper", students, sleeper=True)}
    raw, load, notes = {"alone": [], "with_sleeper": []}, [], []
    for r in range(repeats):
        for name, course in courses.items():
            seconds, run = _timed(course, load)
            raw[name].append(seconds)
            slept = [m for m in run.marks if m.student_id.endswith("_sleeper")]
            if slept:
                notes.append(dict(sleeper_marks=sum(m.score for m in slept), regraded_alone=len(run.regraded_alone),
                                  sleeper_message=slept[0].message[-200:]))
            print(f"sleeper round {r + 1}/{repeats}, {name}: {seconds:.1f} s", flush=True)
    alone, slept = min_median(raw["alone"]), min_median(raw["with_sleeper"])
    return dict(raw_s=raw, seconds={"alone": alone, "with_sleeper": slept},
                cost_s={"min": slept["min"] - alone["min"], "median": slept["median"] - alone["median"]},
                load_average_before_rounds=load, sleeper_rounds=notes)


_PEAK = ("import json, sys; from pathlib import Path; from lora_edu.grade.grader import grade; run = grade(Path(sys.argv[1]), 'lora'); "
         "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]; "
         "print(json.dumps(dict(peak_kib=int(peak), seconds=run.seconds, marks=sum(m.score for m in run.marks))))")


def _peak(course: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", _PEAK, str(course)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_memory(tmp: Path, repeats: int) -> dict:
    first = [NOTEBOOKS[0]]
    plain = make_course(tmp / "plain", first)
    submit(plain, "honest", first, solved=True)
    attacked = make_course(tmp / "attacked", first)
    submit(attacked, "honest", first, solved=True)
    submit(attacked, "flooder", first, solutions={sid: FLOOD for sid in read_source(first[0]).solution_ids})
    path = submit(attacked, "bomber", first, solved=True) / first[0].name
    nb = json.loads(path.read_text())
    cell = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": ""}
    nb["cells"].append(cell)
    room = MAX_NOTEBOOK_BYTES - len(json.dumps(nb).encode())  # the largest notebook the grader accepts, to the byte
    cell["source"] = "x;" * (room // 2)
    path.write_text(json.dumps(nb))
    size = path.stat().st_size
    assert size <= MAX_NOTEBOOK_BYTES, size
    runs = {"one honest student": [], "with the largest notebook and a report flood": []}
    for r in range(repeats):
        for name, course in zip(runs, (plain, attacked)):
            runs[name].append(_peak(course))
            print(f"memory round {r + 1}/{repeats}, {name}: peak {runs[name][-1]['peak_kib'] / 1024:.0f} MiB", flush=True)
    peaks = {name: [p["peak_kib"] / 1024 for p in rs] for name, rs in runs.items()}
    return dict(bomb_notebook_bytes=size, max_notebook_bytes=MAX_NOTEBOOK_BYTES, flood_bytes=18 << 20,
                peak_mib={name: min_median(v) for name, v in peaks.items()}, raw=runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=("class", "sleeper", "memory"), action="append",
                        help="run only these parts (repeatable; default: all three)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    parts = args.only or ["class", "sleeper", "memory"]
    result = dict(what=f"grade {args.students} students x {len(NOTEBOOKS)} notebooks (one third solved, blank, wrong), "
                       "bubblewrap sandbox, one process per student and notebook, jobs = cores",
                  students=args.students, notebooks=len(NOTEBOOKS), repeats=args.repeats, machine=machine_info())
    with tempfile.TemporaryDirectory(prefix="bench_grading_") as tmp:
        tmp = Path(tmp)
        if "class" in parts:
            result |= bench_class(tmp, args.students, args.repeats)
        if "sleeper" in parts:
            result["sleeper"] = bench_sleeper(tmp, args.students, args.repeats)
        if "memory" in parts:
            result["memory"] = bench_memory(tmp, args.repeats)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if "class" in parts:
        print(f"class: min {result['seconds']['min']:.1f} s, median {result['seconds']['median']:.1f} s")
    if "sleeper" in parts:
        print(f"one sleeping student costs the class {result['sleeper']['cost_s']['median']:.1f} s (median; "
              f"min {result['sleeper']['cost_s']['min']:.1f} s)")
    if "memory" in parts:
        print("grader peak memory: " + "; ".join(f"{k}: {v['median']:.0f} MiB" for k, v in result["memory"]["peak_mib"].items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
