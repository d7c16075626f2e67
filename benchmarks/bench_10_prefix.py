"""Notebook 10's shared prompt prefix, timed: the cache and a training step with the prefix computed once, against
the same without (every row runs its whole prompt).

Run from the repository root, on a quiet machine:
    .venv/bin/python benchmarks/bench_10_prefix.py      # writes lora_edu/data/routing_prefix_timing.json

One torch thread, as in the notebooks. Each round times, in CPU seconds of this process (``time.process_time``: with
one thread, the wall time of a quiet machine): caching all 64 messages (the training and held-out parts, as the
notebook does) with ``chat_task.CachedBatch`` and with ``routing_task.cache_messages``; and STEPS training steps
(forward, backward, AdamW step) of each, on the first batches that ``chat_task.train`` draws (seed 0, batches of 8).
Per kind the minimum over rounds (the least disturbed run) and the median are kept. Both kinds must give the same first
loss within 1e-6 relative (tests/lessons/test_routing_task.py checks the gradients and the routes).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import load_average, machine_info, min_median, seconds_per_step  # noqa: E402

from lora_edu.core import smollm2  # noqa: E402
from lora_edu.course.seeding import seed_everything  # noqa: E402
from lora_edu.lessons import chat_task as ct  # noqa: E402
from lora_edu.lessons import routing_task as rt  # noqa: E402

ROUNDS, STEPS = 5, 4
OUT = Path(__file__).resolve().parents[1] / "lora_edu" / "data" / "routing_prefix_timing.json"
KINDS = ("whole prompts", "shared prefix once")


def cache(kind: str, base, tokenizer, routing: dict) -> list:
    """The training and held-out messages cached as notebook 10 caches them, by ``kind``."""
    k, instruction = ct.RECIPE["top_layers"], routing["instruction"]
    if kind == KINDS[0]:
        return [ct.CachedBatch(base, k, rt.encode_routing(tokenizer, instruction, routing[part])) for part in ("train", "held_out")]
    return [rt.cache_messages(base, tokenizer, instruction, routing[part]) for part in ("train", "held_out")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    seed_everything(0)
    before = load_average()
    base, tokenizer = smollm2.load()
    routing = rt.load_routing()
    data = {kind: cache(kind, base, tokenizer, routing)[0] for kind in KINDS}
    order = torch.randperm(len(routing["train"]), generator=torch.Generator().manual_seed(0))
    batches = [order[i:i + ct.RECIPE["batch_size"]] for i in range(0, STEPS * ct.RECIPE["batch_size"], ct.RECIPE["batch_size"])]
    models = {kind: rt.add_router(copy.deepcopy(base), seed=0) for kind in KINDS}
    with torch.no_grad():
        first = {kind: data[kind].loss(models[kind], batches[0]).item() for kind in KINDS}
    difference = abs(first[KINDS[1]] - first[KINDS[0]]) / first[KINDS[0]]
    assert difference <= 1e-6, first
    times = {f"{what}, {kind}": [] for what in ("caching 64 messages", "a training step") for kind in KINDS}
    for r in range(args.rounds):
        for kind in KINDS:
            start = time.process_time()
            cache(kind, base, tokenizer, routing)
            times[f"caching 64 messages, {kind}"].append(time.process_time() - start)
            times[f"a training step, {kind}"].append(seconds_per_step(models[kind], partial(data[kind].loss, models[kind]), batches))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{name} {t[-1]:.3f} s" for name, t in times.items()), flush=True)
    seconds = {name: min_median(t) for name, t in times.items()}
    speedup = {what: round(seconds[f"{what}, {KINDS[0]}"]["min"] / seconds[f"{what}, {KINDS[1]}"]["min"], 2)
               for what in ("caching 64 messages", "a training step")}
    prefix = len(data[KINDS[1]].prefix_hidden[0])
    mask = data[KINDS[0]].batch["attention_mask"]
    prompt = (data[KINDS[0]].batch["labels"] == -100).logical_and(mask.bool()).sum(1).float().mean().item()
    args.out.write_text(json.dumps(dict(
        about="Notebook 10's cache and training step with the shared prompt prefix computed once, against whole prompts "
              "(benchmarks/bench_10_prefix.py): CPU seconds (time.process_time), min and median over rounds; one torch thread.",
        prefix_tokens=prefix, mean_prompt_tokens_train=round(prompt, 2), recipe=ct.RECIPE, rounds=args.rounds,
        steps_per_round=STEPS, seconds=seconds, speedup_min=speedup, first_loss=first, loss_difference_relative=difference,
        torch_threads=torch.get_num_threads(), machine=machine_info(), load_average_before=before,
        load_average_after=load_average()), indent=1) + "\n")
    print(f"speed-up (min over min): {speedup}; wrote {args.out}")


if __name__ == "__main__":
    main()
