"""Step time of each LoRA variant in notebook 08's table: one full training step on the rotated digits.

Run from the repository root:  .venv/bin/python benchmarks/bench_variants_step.py
It writes lora_edu/data/variants_step_times.json (about 20 seconds on one core).

Each method's model is built by ``variant_runs.build`` (so QLoRA's fc1/fc2 base is NF4, blocksize 64,
double quantization), its optimizer as ``variant_runs.train`` builds it (Adam; LoRA+'s parameter
groups), at the learning rate the sweep chose for it. A step is what that loop does per batch:
zero_grad, forward, cross-entropy, backward, Adam step, on one batch of 128 training digits
(the loop's batch size), the same batch for every method. Everything is in the dtype notebook 08
trains in (``digits_task.DTYPE``: float64, and QLoRA dequantizes its NF4 base to it), with torch at
the notebooks' thread count. Why repeated and interleaved: timed once on a shared machine,
LoRA and rsLoRA (identical work, only the scale differs) came out 3.63 against 2.33 ms. Here
every method is warmed up, then timed for ``STEPS`` steps per round, all methods in each round in
a rotating order, so that a burst of load from other processes hits all methods alike; the
minimum (the least disturbed round) and the median per step are kept, with the raw rounds.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from bench_common import load_average, machine_info, min_median
from torch import nn

from lora_edu.core.variants import loraplus_param_groups
from lora_edu.course.seeding import TINY_MODEL_THREADS, seed_everything
from lora_edu.lessons import digits_task, variant_runs

ROUNDS, STEPS, WARMUP_STEPS, BATCH = 11, 100, 20, 128
OUT = Path(__file__).resolve().parents[1] / "lora_edu" / "data" / "variants_step_times.json"


def make_step(base: nn.Module, method: str, lr: float, x: torch.Tensor, y: torch.Tensor):
    """The model and optimizer ``variant_runs.run`` trains with, and a function doing one step of its loop."""
    torch.manual_seed(0)
    model = variant_runs.build(base, method)
    if method == "LoRA+":
        groups = loraplus_param_groups(model, lr, variant_runs.LORAPLUS_RATIO)
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    opt = torch.optim.Adam(groups, lr=lr)
    model.train()

    def step() -> None:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def main() -> None:
    machine = machine_info()  # before seeding, so torch_default_threads is the machine's default, not ours
    seed_everything(0)  # also torch.set_num_threads(TINY_MODEL_THREADS), as in the notebooks
    base = digits_task.pretrained_model()
    data = digits_task.load_digits_task(rotate=True)
    batch = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(0))[:BATCH]
    x, y = data.x_train[batch], data.y_train[batch]
    lrs = {b["method"]: b["lr"] for b in variant_runs.best_per_method(
        json.loads((OUT.parent / "variants_digits.json").read_text())["results"])}
    steps = {m: make_step(base, m, lrs[m], x, y) for m in variant_runs.METHODS}
    for step in steps.values():
        for _ in range(WARMUP_STEPS):
            step()
    load_before = load_average()
    raw: dict[str, list[float]] = {m: [] for m in variant_runs.METHODS}
    for rnd in range(ROUNDS):
        order = variant_runs.METHODS[rnd % len(steps):] + variant_runs.METHODS[: rnd % len(steps)]
        for m in order:
            t0 = time.perf_counter()
            for _ in range(STEPS):
                steps[m]()
            raw[m].append((time.perf_counter() - t0) / STEPS * 1e3)
    result = dict(
        machine=machine, load_average_before=load_before, load_average_after=load_average(),
        torch_threads=torch.get_num_threads(), torch_threads_in_notebooks=TINY_MODEL_THREADS,
        dtype=str(digits_task.DTYPE).replace("torch.", ""),
        qlora_base="NF4, blocksize 64, double quantization, dequantized to the compute dtype",
        batch_size=BATCH, r=4, targets=["fc1", "fc2"], optimizer="Adam (LoRA+: B and 1-D parameters at lr x 16)",
        step="zero_grad, forward, cross_entropy, backward, optimizer step",
        warmup_steps=WARMUP_STEPS, rounds=ROUNDS, steps_per_round=STEPS, clock="time.perf_counter (wall)",
        lr=lrs, ms_per_step={m: {k: round(v, 4) for k, v in min_median(t).items()} for m, t in raw.items()},
        raw_ms_per_step={m: [round(v, 4) for v in t] for m, t in raw.items()})
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'method':8s} {'min ms':>8s} {'median ms':>10s}   ({result['machine']['cpu']}, load {load_before})")
    for m, t in result["ms_per_step"].items():
        print(f"{m:8s} {t['min']:8.3f} {t['median']:10.3f}")


if __name__ == "__main__":
    main()
