"""The study behind notebook 09's tables: every run of its analyses, 3 seeds, trained for 300 epochs.

Run from the repository root:  .venv/bin/python benchmarks/bench_paper_analyses.py
It writes lora_edu/data/paper_analyses_study.json. On the shared 2-core course machine, under a load
average of 10 to 18 from other work, it took 38 minutes (2,261 s, stored as ``wall_s``) with one process
per seed, about 3 CPU-minutes per seed; notebook 09 has 30 s, so it reads the stored runs and trains only
four again (which must give the stored numbers; so does ``tests/lessons/test_paper_analyses.py``).

What it trains (``paper_analyses.study_specs``), for seeds 0, 1, 2: the expressivity grid (5 target
sets × r 1, 4, 16), the fixed budget of 2,048 trainable numbers (7 target sets), `fc2` alone and all
three layers at the ranks of the forgetting analysis, full fine-tuning; all at notebook 05's learning
rate 0.01, and all layers at r = 16 with full fine-tuning again at 0.001. A seed sets A's random start
and the mini-batch order. Each run records, at every epoch up to 30 and then at 40 … 300, its test
accuracy on the rotated digits (the new task) and on the upright ones (the original task), as counts of
correct digits, and its mean training loss over that epoch. Float64 and one thread per process: the
numbers do not depend on the machine's load, only the wall time does.
"""
from __future__ import annotations

import json
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import torch

from lora_edu.lessons import digits_task
from lora_edu.lessons import paper_analyses as pa

OUT = Path(__file__).resolve().parents[1] / "lora_edu" / "data" / "paper_analyses_study.json"


def one_seed(seed: int) -> list[dict]:
    torch.set_num_threads(1)
    upright, rotated = digits_task.load_digits_task(rotate=False), digits_task.load_digits_task(rotate=True)
    torch.manual_seed(0)
    pretrained = digits_task.pretrained_model()
    records = []
    for lr, specs in pa.study_specs(pa.layer_shapes(pretrained), seed).items():
        runs = pa.train_runs(pretrained, rotated, specs, epochs=pa.STUDY_EPOCHS, lr=lr, original=upright,
                             eval_epochs=pa.STUDY_EVAL_EPOCHS)
        records += [pa.study_record(run, lr, len(rotated.y_test), len(upright.y_test)) for run in runs]
        print(f"seed {seed}, lr {lr:g}: {len(runs)} runs done", flush=True)
    return records


def main(processes: int = len(pa.STUDY_SEEDS)) -> None:
    start = time.perf_counter()
    with get_context("spawn").Pool(processes) as pool:
        per_seed = pool.map(one_seed, pa.STUDY_SEEDS)
    upright, rotated = digits_task.load_digits_task(rotate=False), digits_task.load_digits_task(rotate=True)
    OUT.write_text(json.dumps(dict(
        seeds=list(pa.STUDY_SEEDS), epochs=pa.STUDY_EPOCHS, eval_epochs=list(pa.STUDY_EVAL_EPOCHS),
        lrs=list(pa.STUDY_LRS), n_test_new=len(rotated.y_test), n_test_original=len(upright.y_test),
        torch=torch.__version__, wall_s=round(time.perf_counter() - start, 1),
        runs=[rec for records in per_seed for rec in records])) + "\n")
    print(f"wrote {OUT} ({sum(map(len, per_seed))} runs) in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else len(pa.STUDY_SEEDS))
