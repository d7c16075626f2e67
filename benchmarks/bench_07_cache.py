"""Notebook 07's cache trick, timed: a LoRA step on cached lower-layer outputs against the same step without the cache.

Run from the repository root, on a quiet machine:
    .venv/bin/python benchmarks/bench_07_cache.py          # writes lora_edu/data/chat_task_cache_timing.json

One torch thread, as in the notebooks. Each round times STEPS training steps of each kind (forward,
backward, AdamW step) on the notebook's batches (chat_task.RECIPE: batch size, top layers, LoRA), and
the one-off cost of caching the training set, in CPU seconds of this process (``time.process_time``:
with one thread, the wall time of a quiet machine, and less disturbed by other processes on a busy
one); per kind the minimum over rounds (the least disturbed run) and the median are kept, per step.
The loss of the first cached step must equal the uncached one.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import load_average, machine_info, min_median, seconds_per_step  # noqa: E402

from lora_edu.core import layer_cache, smollm2  # noqa: E402
from lora_edu.course.seeding import seed_everything  # noqa: E402
from lora_edu.lessons import chat_task as ct  # noqa: E402

ROUNDS, STEPS = 5, 3
OUT = Path(__file__).resolve().parents[1] / "lora_edu" / "data" / "chat_task_cache_timing.json"


def step_loss(model, data: ct.CachedBatch, cached: bool):
    """A batch's loss, from the cache or through all the layers (``loss_of`` for ``seconds_per_step``)."""
    b = data.batch
    if cached:
        return lambda rows: data.loss(model, rows)
    return lambda rows: layer_cache.reply_loss(model, b["labels"][rows], b["attention_mask"][rows], input_ids=b["input_ids"][rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    seed_everything(0)
    before = load_average()
    base, tokenizer = smollm2.load()
    task = ct.load_task()
    k = ct.RECIPE["top_layers"]
    batch = ct.encode(tokenizer, task["train"])
    data = ct.CachedBatch(base, k, batch)
    model = ct.prepare(base, "LoRA", seed=0)
    rows = torch.arange(ct.RECIPE["batch_size"])
    with torch.no_grad():
        plain = layer_cache.reply_loss(model, batch["labels"][rows], batch["attention_mask"][rows], input_ids=batch["input_ids"][rows])
        difference = abs(plain.item() - data.loss(model, rows).item())
    assert difference < 1e-5, difference
    times = {"uncached step": [], "cached step": [], "caching the training set": []}
    for r in range(args.rounds):
        times["uncached step"].append(seconds_per_step(model, step_loss(model, data, cached=False), [rows] * STEPS))
        times["cached step"].append(seconds_per_step(model, step_loss(model, data, cached=True), [rows] * STEPS))
        start = time.process_time()
        ct.CachedBatch(base, k, batch)
        times["caching the training set"].append(time.process_time() - start)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{name} {t[-1]:.3f} s" for name, t in times.items()), flush=True)
    seconds = {name: min_median(t) for name, t in times.items()}
    speedup = seconds["uncached step"]["min"] / seconds["cached step"]["min"]
    args.out.write_text(json.dumps(dict(
        about="A training step of notebook 07's LoRA on cached lower-layer outputs against the same step without the cache "
              "(benchmarks/bench_07_cache.py): CPU seconds (time.process_time) per step, min and median over rounds; one torch thread.",
        recipe=ct.RECIPE, n_train=len(task["train"]), rounds=args.rounds, steps_per_round=STEPS, seconds=seconds,
        speedup_min=round(speedup, 2), loss_difference=difference, torch_threads=torch.get_num_threads(),
        machine=machine_info(), load_average_before=before, load_average_after=load_average()), indent=1) + "\n")
    print(f"speed-up {speedup:.1f}× (min over min); wrote {args.out}")


if __name__ == "__main__":
    main()
