"""How notebook 07's recipe (top layers, steps) was chosen: LoRA variants scored on the validation split only.

Run from the repository root:  .venv/bin/python benchmarks/explore_07_recipe.py '[{"top_layers": 4, "steps": 60, "lr": 0.002}, ...]'
Each configuration overrides chat_task.RECIPE, trains seed 0 on the fitting part of the training questions
(chat_task.validation_split: two thirds) and prints one JSON line: the loss on the validation replies, CPU seconds of
training and of generation, and the validation replies' scores (22 questions). The choice among the lines is
chat_task.choose (the most validation replies right in the format, ties broken by the lower loss). The held-out
questions are never touched. The lines of the runs that chose the recipe are kept in
lora_edu/data/chat_task_recipe.json ("runs"), with the rule applied to them ("rule", "chosen") and its history.
"""
import json
import sys
import time

import torch

from lora_edu.core import smollm2
from lora_edu.course.seeding import seed_everything
from lora_edu.lessons import chat_task as ct


def main() -> None:
    seed_everything(0)
    base, tok = smollm2.load()
    task = ct.load_task()
    fit, val = ct.validation_split(task["train"])
    caches = {}
    for cfg in json.loads(sys.argv[1]):
        recipe = dict(ct.RECIPE, **{k: v for k, v in cfg.items() if k != "lr"})
        k = recipe["top_layers"]
        if k not in caches:
            caches[k] = [ct.CachedBatch(base, k, ct.encode(tok, part)) for part in (fit, val)]
        fit_data, val_data = caches[k]
        model = ct.prepare(base, "LoRA", 0, recipe)
        start = time.process_time()
        ct.train(model, fit_data, steps=recipe["steps"], lr=cfg["lr"], batch_size=recipe["batch_size"], seed=0)
        train_s = time.process_time() - start
        with torch.no_grad():
            val_loss = val_data.loss(model).item()
        start = time.process_time()
        replies = ct.generate(model, tok, [ex["question"] for ex in val])
        gen_s = time.process_time() - start
        scores = ct.score(replies, val)
        print(json.dumps(dict(cfg=cfg, val_loss=round(val_loss, 4), train_s=round(train_s, 1), gen_s=round(gen_s, 1),
                              **{a: round(b, 3) for a, b in scores.items()})), flush=True)


if __name__ == "__main__":
    main()
