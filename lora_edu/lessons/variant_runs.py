"""Notebook 08's computations: each LoRA variant on the rotated-digits task, at a learning rate tuned per method;
and why bitsandbytes' CPU kernel and ours give different 8-bit scale codes (:func:`bitsandbytes_cpu_lookup_codes`).

Same task, model, rank, targets, epochs, batch order and Adam as notebook 05
(``digits_task``); only the variant changes. The learning rate is *selected* on a validation
half of the held-out 25 % and the accuracy *reported* on the other half (:func:`holdout_halves`),
so the reported number is not the one the choice was made on. Step times are not measured here
(timed once on a shared machine, LoRA and rsLoRA, identical work, came out far apart):
``benchmarks/bench_variants_step.py`` times these same models, repeated and interleaved.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from lora_edu.core.lora import add_lora, count_parameters
from lora_edu.core.nf4 import NF4Linear
from lora_edu.core.variants import loraplus_param_groups
from lora_edu.lessons import digits_task

METHODS = ("LoRA", "rsLoRA", "DoRA", "PiSSA", "LoRA+", "QLoRA")
#: bitsandbytes' compiled CPU quantizer looks codes up on this many evenly spaced points of [-1, 1]
#: (``kLUTSize`` in ``csrc/cpu_ops.cpp``, 0.50.1, line 499).
BNB_CPU_LUT_POINTS = 65536
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


def holdout_halves(data: digits_task.Split, seed: int = 0) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The held-out 25 % cut in two fixed halves: (x, y) for validation (choosing the learning rate), (x, y) for test.

    Choosing on the same numbers one reports inflates them (the best of several noisy scores
    is biased upwards); a separate validation half keeps the reported test accuracy honest.
    """
    order = torch.randperm(len(data.x_test), generator=torch.Generator().manual_seed(seed))
    val, test = order[: len(order) // 2], order[len(order) // 2:]
    return (data.x_test[val], data.y_test[val]), (data.x_test[test], data.y_test[test])


def train(model: nn.Module, data: digits_task.Split, epochs: int, lr: float, ratio: float | None = None, seed: int = 0) -> dict:
    """``digits_task.train``'s loop (same batches, Adam), with LoRA+ groups when ``ratio`` is given.

    Returns the accuracy on the validation half and on the test half of the held-out data.
    """
    generator = torch.Generator().manual_seed(seed)
    if ratio is None:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    else:
        groups = loraplus_param_groups(model, lr, ratio)
    opt = torch.optim.Adam(groups, lr=lr)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(data.x_train), generator=generator).split(128):
            opt.zero_grad()
            nn.functional.cross_entropy(model(data.x_train[batch]), data.y_train[batch]).backward()
            opt.step()
    model.eval()
    (x_val, y_val), (x_test, y_test) = holdout_halves(data)
    return dict(val_accuracy=digits_task.accuracy(model, x_val, y_val), accuracy=digits_task.accuracy(model, x_test, y_test))


def run(base: nn.Module, data: digits_task.Split, method: str, lr: float, epochs: int = 15, r: int = 4, seed: int = 0) -> dict:
    """One method at one learning rate: validation and test accuracy, extra (trainable) parameters."""
    torch.manual_seed(seed)
    model = build(base, method, r)
    result = train(model, data, epochs, lr, LORAPLUS_RATIO if method == "LoRA+" else None, seed)
    return dict(method=method, lr=lr, extra=count_parameters(model)[0], **result)


def sweep(base: nn.Module, data: digits_task.Split, lrs=(3e-3, 1e-2, 3e-2), methods=METHODS, **kw) -> list[dict]:
    """Every method at every learning rate; the notebook keeps each method's best."""
    return [run(base, data, m, lr, **kw) for m in methods for lr in lrs]


def best_per_method(results: list[dict]) -> list[dict]:
    """Each method's run with the highest *validation* accuracy (the first such learning rate on a tie)."""
    best: dict[str, dict] = {}
    for res in results:
        if res["method"] not in best or res["val_accuracy"] > best[res["method"]]["val_accuracy"]:
            best[res["method"]] = res
    return list(best.values())


def bitsandbytes_cpu_lookup_codes(values: torch.Tensor, code: torch.Tensor, blocksize: int = 256) -> torch.Tensor:
    """The 8-bit codes bitsandbytes' compiled CPU kernel gives ``values``: the nearest code of the nearest grid point.

    Why notebook 08 needs it: with double quantization, bitsandbytes (0.50.2, on a CPU) and
    :func:`lora_edu.core.nf4.nf4_quantize` agree on every 4-bit code but not on every 8-bit code of
    the block scales. Ours is the code nearest to the value. bitsandbytes' ``quantize_cpu_impl``
    (``csrc/cpu_ops.cpp`` at tag 0.50.1, lines 501-521, 569-572 and 575-665; unchanged since) does
    not search: it rounds each scaled value to the nearest of 65,536 evenly spaced points of
    [-1, 1] (``norm_to_lut_index``) and reads that point's nearest code from a table built once
    (``build_quantize_lut``). A value within half a grid step (1/65,535) of the midpoint between two
    codes can land on the other side of it, and where neighbouring codes lie closer together than
    a grid step (the dynamic code book near 0) the table cannot tell them apart. This re-implements
    those float32 steps; ``tests/lessons/test_variant_runs.py`` checks that it reproduces
    bitsandbytes' codes exactly.
    """
    code = code.float()
    n = BNB_CPU_LUT_POINTS
    midpoints = 0.5 * (code[:-1] + code[1:])
    points = -1.0 + (2.0 * torch.arange(n, dtype=torch.float32)) / (n - 1)
    table = torch.searchsorted(midpoints, points, side="left")       # how many midpoints lie below each point
    flat = values.detach().float().reshape(-1)
    out = []
    for block in flat.split(blocksize):
        absmax = block.abs().max()
        if absmax == 0:
            out.append(torch.zeros(len(block), dtype=torch.long))
            continue
        scaled = torch.clamp(block * (1.0 / absmax), -1.0, 1.0)
        index = ((scaled + 1.0) * 0.5 * (n - 1) + 0.5).to(torch.long)  # the C cast truncates (values are ≥ 0)
        out.append(table[index])
    return torch.cat(out).to(torch.uint8)
