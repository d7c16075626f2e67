"""Notebook 07's learning rates and its learn/forget table: LoRA against full fine-tuning of the same weight matrices.

Run from the repository root:  .venv/bin/python benchmarks/sweep_07_lr.py
(about 15 minutes of one-thread CPU). It writes lora_edu/data/chat_task_sweep.json, which the notebook reads.

1. Validation. The training questions (lora_edu.lessons.chat_task.load_task) are split into a fitting
   part and a validation part (every fifth, chat_task.validation_split). For each method, each learning
   rate of LRS and each seed of SEEDS, a copy of the base model trains on the fitting part with the
   notebook's recipe (chat_task.RECIPE) and its loss on the validation replies is recorded. A method's
   learning rate is the one with the lowest validation loss, averaged over the seeds. The held-out
   questions play no part in this choice.
2. Held out. Each method, at its chosen rate, trains on every training question once per seed, as the
   notebook does (its live run is seed 0), and is measured on the held-out questions (replies in the
   format, right in the format, loss on the taught replies) and on plain prose (perplexity: forgetting).
3. Routing. The second adapter of the notebook (customer messages to four teams): its learning rate is
   chosen the same way, on every fifth training message set aside; then per seed the held-out accuracy.

A seed fixes LoRA's random A and the order of the batches (full fine-tuning has no random start, so
there only the order changes). Everything else is deterministic: one thread, greedy decoding.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import machine_info  # noqa: E402

from lora_edu.core import smollm2  # noqa: E402
from lora_edu.course.seeding import seed_everything  # noqa: E402
from lora_edu.lessons import chat_task as ct  # noqa: E402

LRS = {"LoRA": (1e-3, 2e-3, 4e-3, 8e-3), "full fine-tuning": (3e-5, 1e-4, 3e-4, 1e-3)}
SEEDS = (0, 1, 2)
OUT = Path(__file__).resolve().parents[1] / "lora_edu" / "data" / "chat_task_sweep.json"


def sweep_routing(base, tokenizer, k: int) -> dict:
    """The routing adapter's learning rate (lowest mean validation loss over the seeds) and its held-out accuracy per seed."""
    routing = ct.load_routing()
    encode = lambda messages: ct.CachedBatch(base, k, ct.encode_routing(tokenizer, routing["instruction"], messages))  # noqa: E731
    fit, val = ct.validation_split(routing["train"])
    fit_data, val_data, train_data, test_data = encode(fit), encode(val), encode(routing["train"]), encode(routing["held_out"])
    choices = ct.label_tokens(tokenizer, routing["labels"])
    truth = torch.tensor([routing["labels"].index(m["label"]) for m in routing["held_out"]])
    validation = []
    for lr in LRS["LoRA"]:
        for seed in SEEDS:
            model = ct.prepare(base, "LoRA", seed)
            ct.train(model, fit_data, steps=ct.RECIPE["steps"], lr=lr, batch_size=ct.RECIPE["batch_size"], seed=seed)
            with torch.no_grad():
                validation.append(dict(lr=lr, seed=seed, val_loss=round(val_data.loss(model).item(), 4)))
            print("routing", validation[-1], flush=True)
    mean = {lr: statistics.mean(r["val_loss"] for r in validation if r["lr"] == lr) for lr in LRS["LoRA"]}
    chosen = min(mean, key=mean.get)
    held_out = []
    for seed in SEEDS:
        model = ct.prepare(base, "LoRA", seed)
        ct.train(model, train_data, steps=ct.RECIPE["steps"], lr=chosen, batch_size=ct.RECIPE["batch_size"], seed=seed)
        held_out.append(dict(seed=seed, accuracy=round((ct.route(model, test_data, choices) == truth).float().mean().item(), 4)))
        print("routing", held_out[-1], flush=True)
    zero_shot = round((ct.route(base, test_data, choices) == truth).float().mean().item(), 4)
    return dict(n_fit=len(fit), n_val=len(val), n_train=len(routing["train"]), n_held_out=len(routing["held_out"]),
                validation=validation, chosen=chosen, zero_shot=zero_shot, held_out=held_out)


def main() -> None:
    start = time.perf_counter()
    seed_everything(0)
    base, tokenizer = smollm2.load()
    task = ct.load_task()
    k = ct.RECIPE["top_layers"]
    fit, val = ct.validation_split(task["train"])
    fit_data, val_data = (ct.CachedBatch(base, k, ct.encode(tokenizer, part)) for part in (fit, val))
    validation = []
    for method, lrs in LRS.items():
        for lr in lrs:
            for seed in SEEDS:
                model = ct.prepare(base, method, seed)
                losses = ct.train(model, fit_data, steps=ct.RECIPE["steps"], lr=lr, batch_size=ct.RECIPE["batch_size"], seed=seed)
                with torch.no_grad():
                    row = dict(method=method, lr=lr, seed=seed, val_loss=round(val_data.loss(model).item(), 4),
                               final_train_loss=round(losses[-1], 4))
                validation.append(row)
                print(row, flush=True)
    chosen = {}
    for method, lrs in LRS.items():
        mean = {lr: statistics.mean(r["val_loss"] for r in validation if r["method"] == method and r["lr"] == lr) for lr in lrs}
        chosen[method] = min(mean, key=mean.get)
    print("chosen:", chosen, flush=True)

    train_data = ct.CachedBatch(base, k, ct.encode(tokenizer, task["train"]))
    held_data = ct.CachedBatch(base, k, ct.encode(tokenizer, task["held_out"]))
    prose = ct.CachedBatch(base, k, ct.prose_batch(tokenizer, task["general_text"]))
    questions = [ex["question"] for ex in task["held_out"]]

    def measure(model) -> dict:
        scores = ct.score(ct.generate(model, tokenizer, questions), task["held_out"])
        with torch.no_grad():
            return dict(**{name: round(v, 4) for name, v in scores.items()}, held_out_loss=round(held_data.loss(model).item(), 4),
                        prose_perplexity=round(ct.perplexity(model, prose), 4))

    base_row = measure(base)
    print("base:", base_row, flush=True)
    held_out = []
    for method, lr in chosen.items():
        for seed in SEEDS:
            model = ct.prepare(base, method, seed)
            losses = ct.train(model, train_data, steps=ct.RECIPE["steps"], lr=lr, batch_size=ct.RECIPE["batch_size"], seed=seed)
            row = dict(method=method, lr=lr, seed=seed, final_train_loss=round(losses[-1], 4), **measure(model))
            held_out.append(row)
            print(row, flush=True)
    routing = sweep_routing(base, tokenizer, k)
    OUT.write_text(json.dumps(dict(
        about="Notebook 07's learning rates, chosen by validation loss, and LoRA against full fine-tuning of the same weight "
              "matrices on the held-out questions and on plain prose, over several seeds (benchmarks/sweep_07_lr.py).",
        recipe=ct.RECIPE, targets=ct.targets(len(base.model.layers)), n_fit=len(fit), n_val=len(val),
        n_train=len(task["train"]), n_held_out=len(task["held_out"]), lrs=LRS, seeds=list(SEEDS),
        validation=validation, chosen=chosen, base=base_row, held_out=held_out, routing=routing,
        machine=machine_info(), torch_threads=torch.get_num_threads(), seconds=round(time.perf_counter() - start)),
        indent=1) + "\n")
    print(f"wrote {OUT} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
