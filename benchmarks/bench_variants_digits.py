"""The learning-rate sweep behind notebook 08's table: each LoRA variant on the rotated digits.

Run from the repository root:  .venv/bin/python benchmarks/bench_variants_digits.py
It writes lora_edu/data/variants_digits.json (validation and test accuracies, extra parameters).
Accuracies are deterministic (float64, one thread, fixed seeds): the notebook re-runs each
method's best learning rate (chosen on the validation half) and checks it gets the stored numbers.
"""
from __future__ import annotations

import json
from pathlib import Path

from lora_edu.course.seeding import seed_everything
from lora_edu.lessons import digits_task, variant_runs

LRS = (3e-3, 1e-2, 3e-2, 1e-1)
EPOCHS = 15
OUT = Path(__file__).resolve().parents[1] / "lora_edu" / "data" / "variants_digits.json"


def main() -> None:
    seed_everything(0)
    base = digits_task.pretrained_model()
    data = digits_task.load_digits_task(rotate=True)
    results = variant_runs.sweep(base, data, lrs=LRS, epochs=EPOCHS)
    OUT.write_text(json.dumps(dict(
        epochs=EPOCHS, r=4, lrs=list(LRS), loraplus_ratio=variant_runs.LORAPLUS_RATIO,
        results=results), indent=1) + "\n")
    for res in variant_runs.best_per_method(results):
        print(res)


if __name__ == "__main__":
    main()
