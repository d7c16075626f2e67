"""The course's execution time against its budget: every notebook, executed repeatedly.

    make bench                                           # = the line below
    .venv/bin/python benchmarks/bench_course.py          # 3 rounds; writes lora_edu/data/bench_course.json
    .venv/bin/python benchmarks/bench_course.py --busy-core --out /tmp/busy.json   # with one core kept busy

The test run only prints each notebook's time and fails on a gross regression (3 × a budget),
because one run on a shared machine says little; this is where the budget is measured. Each
round executes every notebook top to bottom with nbclient (kernel start included, as under
nbval; its shutdown after the last cell timed apart, ``teardown_s``, and not counted: see
execute_copy), in a temporary copy of ``notebooks/``: the tracked notebooks are read, never
written, and whatever a notebook writes lands in the copy. Rounds run the notebooks in the same order;
per notebook the minimum (the least disturbed run) and the median are reported, and for the
course the sum of minima and the sum of medians, against the budgets in
``lora_edu.course.course_map`` (30 s a notebook, 120 s for notebooks 00..06). ``--busy-core``
keeps one core busy with a separate spinning process for the whole measurement (killed at the
end, and bounded in time in any case): the busy machine of issue 11.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from bench_common import busy_core, load_average, machine_info, min_median, stop_on_sigterm
from nbclient import NotebookClient

from lora_edu.course import course_map
from lora_edu.course.seeding import TINY_MODEL_THREADS

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "lora_edu" / "data" / "bench_course.json"


def execute_copy(source: Path, folder: Path) -> tuple[float, float]:
    """Execute ``source`` (a tracked notebook, only read) with ``folder`` as working directory.

    Returns (seconds from the kernel's start to the end of the last cell, seconds of the kernel's shutdown). The
    first is the notebook's time: what a learner waits for after "Restart & Run All". The shutdown comes after the
    last output, so it is timed apart and not counted: it is Python's teardown of the kernel's modules (about 2 s
    once transformers or PEFT is imported), and even an empty kernel now and then takes 3 s more to stop.
    """
    nb = nbformat.read(source, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(folder)}})
    start = time.perf_counter()
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        end = time.perf_counter()
    return end - start, time.perf_counter() - end


def measure(notebooks: list[Path], repeats: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Raw seconds per notebook name, one per round: (the notebook's time, its kernel's shutdown)."""
    raw: dict[str, list[float]] = {nb.name: [] for nb in notebooks}
    teardown: dict[str, list[float]] = {nb.name: [] for nb in notebooks}
    with tempfile.TemporaryDirectory(prefix="bench_course_") as tmp:
        copy = Path(tmp) / "notebooks"
        shutil.copytree(ROOT / "notebooks", copy, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        for rnd in range(repeats):
            for nb in notebooks:
                run, down = execute_copy(copy / nb.name, copy)
                raw[nb.name].append(run)
                teardown[nb.name].append(down)
                print(f"round {rnd + 1}/{repeats}  {nb.name:<32} {run:6.1f} s (then {down:.1f} s to shut the kernel down)", flush=True)
    return raw, teardown


def verdict(seconds: float, budget: float) -> str:
    if seconds > course_map.GROSS_REGRESSION_FACTOR * budget:
        return f"OVER {course_map.GROSS_REGRESSION_FACTOR:g}x"
    return "over" if seconds > budget else "ok"


def summarize(raw: dict[str, list[float]], whole_course: bool) -> dict:
    """Per notebook min/median against its budget; for the course, sums of minima and of medians."""
    notebooks = {name: dict(budget_s=course_map.notebook_budget_s(name), **min_median(times)) for name, times in raw.items()}
    for row in notebooks.values():
        row["verdict"] = verdict(row["median"], row["budget_s"])
    course = dict(sum_of_min=sum(r["min"] for r in notebooks.values()),
                  sum_of_median=sum(r["median"] for r in notebooks.values()),
                  budget_s=course_map.course_budget_s() if whole_course else None)
    rounds = [sum(times[i] for times in raw.values()) for i in range(len(next(iter(raw.values()))))]
    course["rounds"] = rounds
    course["median_round"] = statistics.median(rounds)
    course["verdict"] = verdict(course["sum_of_median"], course["budget_s"]) if whole_course else "not judged (subset)"
    return dict(notebooks=notebooks, course=course)


def table(summary: dict, info: dict, repeats: int, busy: bool) -> str:
    lines = [f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, torch {info.get('torch')}, "
             f"torch threads in the notebooks: {TINY_MODEL_THREADS} (seed_everything)",
             f"{repeats} rounds, {'one core kept busy by another process' if busy else 'no extra load started'}; "
             f"verdict on the median",
             f"{'notebook':<32}{'min':>8}{'median':>9}{'budget':>8}  verdict"]
    for name, row in summary["notebooks"].items():
        lines.append(f"{name:<32}{row['min']:>7.1f}s{row['median']:>8.1f}s{row['budget_s']:>7.0f}s  {row['verdict']}")
    c = summary["course"]
    budget = f"{c['budget_s']:>7.0f}s" if c["budget_s"] is not None else f"{'-':>8}"
    lines.append(f"{'course (sums)':<32}{c['sum_of_min']:>7.1f}s{c['sum_of_median']:>8.1f}s{budget}  {c['verdict']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--busy-core", action="store_true", help="keep one core busy with another process throughout")
    parser.add_argument("--notebooks", nargs="*", help="only these notebooks (names or paths); default all")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    all_notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    chosen = [nb for nb in all_notebooks if not args.notebooks or nb.name in {Path(n).name for n in args.notebooks}]
    if not chosen:
        sys.exit(f"no such notebooks: {args.notebooks}")
    stop_on_sigterm()
    info = machine_info()
    load_before, start = load_average(), time.perf_counter()
    # Bounded: the spinner exits by itself once the rounds would have run past 3 x the course budget each.
    limit = args.repeats * course_map.GROSS_REGRESSION_FACTOR * course_map.course_budget_s() + 60
    with busy_core(enabled=args.busy_core, limit_s=limit):
        raw, teardown = measure(chosen, args.repeats)
    summary = summarize(raw, whole_course=len(chosen) == len(all_notebooks))
    result = dict(machine=info, torch_threads_in_notebooks=TINY_MODEL_THREADS, repeats=args.repeats,
                  busy_core=args.busy_core, load_average_before=load_before, load_average_after=load_average(),
                  wall_s=round(time.perf_counter() - start, 1), **summary, raw=raw, teardown_s=teardown)
    print(table(summary, info, args.repeats, args.busy_core))
    print(f"load average (1, 5, 15 min) before {load_before}, after {result['load_average_after']}")
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
