"""Notebook 07's learn/forget table under the other rule: each method at the learning rate its validation LOSS prefers.

Run from the repository root, one process per method, then merge:
    .venv/bin/python benchmarks/sweep_07_by_loss.py --method LoRA &
    .venv/bin/python benchmarks/sweep_07_by_loss.py --method "full fine-tuning" &
    wait; .venv/bin/python benchmarks/sweep_07_by_loss.py --merge

Why: chat_task.choose picks each method's rate by the share of validation replies right in the format; the first rule
of the recipe search picked by validation loss alone. The rule moves full fine-tuning's rate tenfold (3e-3 against
3e-4 in chat_task_sweep.json's validation runs), so the notebook shows the table under both rules. The rates are read
from the validation runs of lora_edu/data/chat_task_sweep.json (lowest mean validation loss); nothing here looks at the
held-out questions to choose. The held-out runs are those of benchmarks/sweep_07_lr.py (same seeds, same measure).
Writes lora_edu/data/chat_task_sweep_by_loss.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweep_07_lr as sweep  # noqa: E402

from lora_edu.lessons import chat_task as ct  # noqa: E402

OUT = sweep.ROOT / "lora_edu" / "data" / "chat_task_sweep_by_loss.json"


def loss_choice(method: str) -> float:
    """The rate with the lowest mean validation loss among the sweep file's validation runs of ``method``."""
    rows = [r for r in ct.load_sweep()["validation"] if r["method"] == method]
    lrs = sorted({r["lr"] for r in rows})
    return min(lrs, key=lambda lr: sum(r["val_loss"] for r in rows if r["lr"] == lr) / sum(r["lr"] == lr for r in rows))


def part(method: str) -> Path:
    return sweep.PARTS / f"sweep_07_by_loss_{method.replace(' ', '_')}.json"


def run(method: str) -> None:
    start = time.perf_counter()
    base, tokenizer, task, data, _, _ = sweep.setup()
    lr, rows = loss_choice(method), []
    for seed in sweep.SEEDS:
        rows.append(sweep.held_out_run(base, tokenizer, task, data, method, lr, seed))
        print(rows[-1], flush=True)
    sweep.PARTS.mkdir(exist_ok=True)
    part(method).write_text(json.dumps(dict(method=method, lr=lr, rows=rows, recipe=ct.RECIPE,
                                            seconds=round(time.perf_counter() - start)), indent=1) + "\n")


def merge() -> None:
    parts = [json.loads(part(m).read_text()) for m in ct.METHODS]
    assert all(p["recipe"] == ct.RECIPE for p in parts), "a part file was made with another recipe: run it again"
    OUT.write_text(json.dumps(dict(
        about="Each method at the learning rate with the lowest validation loss (benchmarks/sweep_07_by_loss.py), three "
              "seeds, measured as chat_task_sweep.json's held-out runs; the notebook's table uses chat_task.choose instead.",
        recipe=ct.RECIPE, chosen={p["method"]: p["lr"] for p in parts}, held_out=[r for p in parts for r in p["rows"]],
        seconds={p["method"]: p["seconds"] for p in parts}, machine=sweep.machine_info()), indent=1) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--method", choices=ct.METHODS)
    group.add_argument("--merge", action="store_true")
    args = parser.parse_args()
    merge() if args.merge else run(args.method)
