"""Where LoRA saves training time: matmul FLOPs counted, forward / backward / optimizer step timed.

Training a linear layer y = x·Wᵀ (W out×in) costs three matmuls of the same size:

* forward, y = x·Wᵀ;
* backward, the gradient for the input, dL/dx = dL/dy·W (skipped for the first layer, whose
  input needs no gradient);
* backward, the gradient for the weight, dL/dW = (dL/dy)ᵀ·x.

Freezing W (LoRA) removes the third one, about a third of the layer's training FLOPs, and the
optimizer no longer touches W at all. The adapter adds small matmuls of rank r: forward
x·Aᵀ then ·Bᵀ, backward the gradients of A, of B and of the rank-r activation, and (except in
the first layer) the input gradient through A. Hu et al. (2021, §4.2) report a 25% speed-up on
GPT-3 175B "as we do not need to calculate the gradient for the vast majority of the parameters".

:func:`linear_training_flops` gives that count in closed form; :func:`count_flops` measures it
with PyTorch's own ``FlopCounterMode`` (the unit tests check that both agree); :func:`time_steps`
times the three phases. Timings depend on the machine and on what else runs on it, so the
course prints them only behind the ⏱ marker that its nbval sanitizer masks.
"""
from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from lora_edu.core.lora import add_lora


def linear_stack(width: int = 1024, depth: int = 4, dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Sequential:
    """``depth`` square ``nn.Linear(width, width)`` layers, each followed by a ReLU.

    Big enough that arithmetic, not Python's per-operation overhead, sets the time of a step:
    a 1024×1024 matmul on a batch of 128 is 0.27 GFLOP.
    """
    layers: list[nn.Module] = []
    with torch.random.fork_rng(devices=[]):  # seeded weights, and the caller's random stream left as it was
        torch.manual_seed(seed)
        for _ in range(depth):
            layers += [nn.Linear(width, width, dtype=dtype), nn.ReLU()]
    return nn.Sequential(*layers)


def linear_names(model: nn.Module) -> list[str]:
    """The names of the ``nn.Linear`` modules (targets for :func:`lora_edu.add_lora`)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def linear_training_flops(batch: int, width: int, depth: int, r: int | None = None) -> dict[str, int]:
    """Matmul FLOPs (2 per multiply-add) of one training step of :func:`linear_stack`.

    ``r=None``: full fine-tuning. Otherwise LoRA of rank ``r`` on every layer (base weights
    frozen). Returns ``forward`` and ``backward``; element-wise work (ReLU, bias, loss, the
    α/r scaling) is not counted, as in ``torch.utils.flop_counter``.
    """
    big = 2 * batch * width * width        # one width×width matmul on the batch
    inner = depth - 1                      # layers whose input needs a gradient
    if r is None:
        return dict(forward=depth * big, backward=depth * big + inner * big)
    small = 2 * batch * width * r          # one matmul with a rank-r factor
    forward = depth * (big + 2 * small)    # base, then x·Aᵀ and ·Bᵀ
    # backward: input gradient through W (inner layers), gradients of the rank-r activation,
    # of A and of B (every layer), input gradient through A (inner layers). No dL/dW.
    backward = inner * big + depth * 3 * small + inner * small
    return dict(forward=forward, backward=backward)


def count_flops(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, int]:
    """Matmul FLOPs of one forward and one backward pass (MSE loss against ``y``), counted by PyTorch."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss = nn.functional.mse_loss(model(x), y)
    forward = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        loss.backward()
    backward = counter.get_total_flops()
    model.zero_grad(set_to_none=True)
    return dict(forward=forward, backward=backward)


def full_and_lora(width: int = 1024, depth: int = 4, r: int = 8, alpha: float = 16, seed: int = 0) -> dict[str, nn.Module]:
    """The same :func:`linear_stack` twice: trained in full, and with LoRA rank ``r`` on every layer."""
    full, lora = linear_stack(width, depth, seed=seed), linear_stack(width, depth, seed=seed)
    add_lora(lora, linear_names(lora), r=r, alpha=alpha)
    return {"full fine-tuning": full, f"LoRA r={r}": lora}


def time_steps(models: dict[str, nn.Module], x: torch.Tensor, y: torch.Tensor, repeats: int = 7, warmup: int = 1,
               lr: float = 1e-4) -> dict[str, dict[str, float]]:
    """Median seconds of forward, backward and Adam step for each model, measured interleaved.

    Each repeat runs one step of every model in turn, so a burst of load from another process
    slows all of them alike; the median drops the outliers. The first ``warmup`` repeats (memory
    allocation, Adam's state being created) are not counted.
    """
    optimizers = {name: torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=lr) for name, m in models.items()}
    samples = {name: {"forward": [], "backward": [], "step": []} for name in models}
    for repeat in range(warmup + repeats):
        for name, model in models.items():
            opt = optimizers[name]
            opt.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            loss = nn.functional.mse_loss(model(x), y)
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
            t3 = time.perf_counter()
            if repeat >= warmup:
                for phase, seconds in zip(("forward", "backward", "step"), (t1 - t0, t2 - t1, t3 - t2)):
                    samples[name][phase].append(seconds)
    return {name: {phase: statistics.median(s) for phase, s in phases.items()} for name, phases in samples.items()}
