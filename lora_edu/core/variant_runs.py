"""Notebook 08's comparison: each LoRA variant on the rotated-digits task, at a learning rate tuned per method.

Same task, model, rank, targets, epochs, batch order and Adam as notebook 05
(``digits_task``); only the variant changes. The step time is CPU time per optimizer step
(forward, backward, step), the median over the run's steps, with torch on one thread.
"""
from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn

from lora_edu.core import digits_task
from lora_edu.core.lora import add_lora, count_parameters
from lora_edu.core.nf4 import NF4Linear
from lora_edu.core.variants import loraplus_param_groups

METHODS = ("LoRA", "rsLoRA", "DoRA", "PiSSA", "LoRA+", "QLoRA")
#: LoRA+'s ratio ηB/ηA used in notebook 08 (PEFT's docstring asks for a ratio ≥ 1).
LORAPLUS_RATIO = 16


def build(base: nn.Module, method: str, r: int = 4, targets=("fc1", "fc2")) -> nn.Module:
    """A copy of ``base`` with the variant's adapters on ``targets`` (α = 2r throughout, as in notebook 05)."""
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {METHODS}.")
    model = copy.deepcopy(base)
    if method == "QLoRA":  # the frozen base of the adapted layers in NF4 (blocksize 64, double quantization)
        for name in targets:
            setattr(model, name, NF4Linear(getattr(model, name), 64, double_quant=True, compute_dtype=digits_task.DTYPE))
    kwargs = dict(use_rslora=method == "rsLoRA", use_dora=method == "DoRA", init="pissa" if method == "PiSSA" else "default")
    return add_lora(model, list(targets), r=r, alpha=2 * r, **kwargs)


def train(model: nn.Module, data: digits_task.Split, epochs: int, lr: float, ratio: float | None = None, seed: int = 0) -> dict:
    """``digits_task.train``'s loop (same batches, Adam), with LoRA+ groups when ``ratio`` is given; times each step."""
    generator = torch.Generator().manual_seed(seed)
    if ratio is None:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    else:
        groups = loraplus_param_groups(model, lr, ratio)
    opt = torch.optim.Adam(groups, lr=lr)
    steps = []
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(data.x_train), generator=generator).split(128):
            start = time.process_time()
            opt.zero_grad()
            nn.functional.cross_entropy(model(data.x_train[batch]), data.y_train[batch]).backward()
            opt.step()
            steps.append(time.process_time() - start)
    model.eval()
    return dict(accuracy=digits_task.accuracy(model, data.x_test, data.y_test), step_ms=1e3 * statistics.median(steps))


def run(base: nn.Module, data: digits_task.Split, method: str, lr: float, epochs: int = 15, r: int = 4, seed: int = 0) -> dict:
    """One method at one learning rate: accuracy, extra (trainable) parameters, median step time."""
    torch.manual_seed(seed)
    model = build(base, method, r)
    result = train(model, data, epochs, lr, LORAPLUS_RATIO if method == "LoRA+" else None, seed)
    return dict(method=method, lr=lr, extra=count_parameters(model)[0], **result)


def sweep(base: nn.Module, data: digits_task.Split, lrs=(3e-3, 1e-2, 3e-2), methods=METHODS, **kw) -> list[dict]:
    """Every method at every learning rate; the notebook keeps each method's best."""
    return [run(base, data, m, lr, **kw) for m in methods for lr in lrs]


def best_per_method(results: list[dict]) -> list[dict]:
    """Each method's run with the highest test accuracy (the first such learning rate on a tie)."""
    best: dict[str, dict] = {}
    for res in results:
        if res["method"] not in best or res["accuracy"] > best[res["method"]]["accuracy"]:
            best[res["method"]] = res
    return list(best.values())
