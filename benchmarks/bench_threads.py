"""How many PyTorch threads for the course's tiny models? Notebook 05's training, 1 against 2 threads.

    .venv/bin/python benchmarks/bench_threads.py            # writes lora_edu/data/bench_threads.json

Times what notebook 05 runs, with the same functions: ``digits_task.adapt`` on the rotated
digits, full fine-tuning and LoRA (r = 4 on fc1 and fc2), 30 epochs, float64; the time is
``adapt``'s own ``seconds`` (the training loop), which the notebook prints. Each case runs with
``torch.set_num_threads(1)`` and ``(2)``, on an otherwise idle machine and with one core kept
busy by a separate spinning process (``bench_common.busy_core``). All conditions are run
round-robin, one run of each per round with the thread order alternating, so drift in the
machine's speed (other people's jobs on a shared machine) hits every condition alike; min and
median over the rounds are reported. ``lora_edu.seed_everything`` defaults to the thread count
this measurement supports.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import torch
from bench_common import busy_core, load_average, machine_info, min_median, stop_on_sigterm

from lora_edu.course.seeding import TINY_MODEL_THREADS
from lora_edu.lessons import digits_task

THREADS = (1, 2)
CASES = {"full fine-tuning": dict(method="full"), "LoRA r=4": dict(method="lora", r=4)}
CONDITIONS = ("idle", "one core busy")
OUT = Path(__file__).resolve().parents[1] / "lora_edu" / "data" / "bench_threads.json"


def measure(repeats: int) -> dict:
    """Raw seconds: ``raw[condition][threads][case]`` is a list of ``repeats`` timings."""
    torch.set_num_threads(1)
    pretrained = digits_task.pretrained_model()
    rotated = digits_task.load_digits_task(rotate=True)
    raw = {c: {str(t): {case: [] for case in CASES} for t in THREADS} for c in CONDITIONS}
    for threads in THREADS:  # warm-up: first-call costs (allocator, thread pool start) out of the timings
        torch.set_num_threads(threads)
        digits_task.adapt(pretrained, rotated, "lora", r=4, epochs=2)
    for rnd in range(repeats):
        for condition in CONDITIONS:
            with busy_core(enabled=condition != "idle", limit_s=900):
                for threads in THREADS if rnd % 2 == 0 else THREADS[::-1]:
                    torch.set_num_threads(threads)
                    for case, kwargs in CASES.items():
                        seconds = digits_task.adapt(pretrained, rotated, **kwargs)["seconds"]
                        raw[condition][str(threads)][case].append(seconds)
        print(f"round {rnd + 1}/{repeats} done", flush=True, file=sys.__stdout__)
    torch.set_num_threads(TINY_MODEL_THREADS)
    return raw


def summarize(raw: dict) -> list[dict]:
    return [dict(condition=c, threads=int(t), case=case, **min_median(times))
            for c, by_threads in raw.items() for t, by_case in by_threads.items() for case, times in by_case.items()]


def table(rows: list[dict]) -> str:
    lines = [f"{'condition':<15}{'case':<18}{'threads':>8}{'min':>9}{'median':>9}"]
    for row in sorted(rows, key=lambda r: (r["condition"] != "idle", r["case"], r["threads"])):
        lines.append(f"{row['condition']:<15}{row['case']:<18}{row['threads']:>8}{row['min']:>8.2f}s{row['median']:>8.2f}s")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    stop_on_sigterm()
    info = machine_info()  # before measure() sets the thread count
    load_before, start = load_average(), time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # adapt() draws tqdm bars, as in the notebook; not shown here
        raw = measure(args.repeats)
    rows = summarize(raw)
    result = dict(machine=info, repeats=args.repeats, load_average_before=load_before,
                  load_average_after=load_average(), wall_s=round(time.perf_counter() - start, 1),
                  what="digits_task.adapt on the rotated digits (notebook 05), 30 epochs; seconds of the training loop",
                  summary=rows, raw=raw)
    print(table(rows))
    print(f"load average (1, 5, 15 min) before {load_before}, after {result['load_average_after']}")
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
