"""The learning-rate sweep behind notebook 07: LoRA and full fine-tuning, chosen on a validation split.

Run from the repository root:  .venv/bin/python benchmarks/sweep_07_lr.py   (94 s of CPU on the 2-core course machine)
It writes lora_edu/data/chat_task_sweep.json. The held-out ("test") questions are never used here:
the 40 training questions are split into 32 for training and 8 for validation
(:func:`lora_edu.lessons.chat_task.validation_split`), each learning rate trains for the notebook's
steps and batch size on the 32, and is scored on the 8. The chosen learning rate is the one with
the most validation replies in the format *and* right; ties go to the lower validation loss (the
mean loss on the 8 validation replies' tokens). The notebook then trains on all 40 with it.
Everything is deterministic (one thread, fixed seeds).
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import torch

from lora_edu.core import smollm2
from lora_edu.core.lora import add_lora
from lora_edu.course.seeding import seed_everything
from lora_edu.lessons import chat_task as ct

TARGETS = r"model\.layers\.(26|27|28|29)\.(self_attn|mlp)\.\w+_proj"   # the notebook's: every linear of the last 4 layers
R, ALPHA, STEPS, BATCH = 8, 16, 12, 4
LRS = {"LoRA": (1e-3, 3e-3, 1e-2), "full fine-tuning": (1e-4, 3e-4, 1e-3, 3e-3)}
OUT = Path(__file__).resolve().parents[1] / "lora_edu" / "data" / "chat_task_sweep.json"


def prepare(base, method: str):
    if method == "LoRA":
        return add_lora(copy.deepcopy(base), TARGETS, r=R, alpha=ALPHA)
    model = copy.deepcopy(base)
    for name, p in model.named_parameters():
        p.requires_grad_(re.fullmatch(TARGETS + r"\.weight", name) is not None)
    return model


def main() -> None:
    seed_everything(0)
    base, tokenizer = smollm2.load()
    train, val = ct.validation_split(ct.load_task()["train"])
    rows = []
    for method, lrs in LRS.items():
        for lr in lrs:
            torch.manual_seed(0)
            model = prepare(base, method)
            ct.train(model, tokenizer, train, steps=STEPS, lr=lr, batch_size=BATCH)
            replies = ct.generate(model, tokenizer, [ex["question"] for ex in val])
            with torch.no_grad():
                val_loss = model(**ct.encode(tokenizer, val)).loss.item()
            row = dict(method=method, lr=lr, val_loss=round(val_loss, 4),
                       **{k: round(v, 4) for k, v in ct.score(replies, [ex["answer"] for ex in val]).items()})
            rows.append(row)
            print(row, replies, flush=True)
    chosen = {m: min((r for r in rows if r["method"] == m), key=lambda r: (-r["correct"], r["val_loss"]))["lr"] for m in LRS}
    OUT.write_text(json.dumps(dict(
        about="Notebook 07's learning rates, chosen on a validation split of the training questions "
              "(benchmarks/sweep_07_lr.py): most replies in the format and right, ties to the lower validation loss.",
        targets=TARGETS, r=R, alpha=ALPHA, steps=STEPS, batch_size=BATCH, n_train=len(train), n_val=len(val),
        results=rows, chosen=chosen), indent=1) + "\n")
    print("chosen:", chosen)


if __name__ == "__main__":
    main()
