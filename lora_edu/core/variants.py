"""LoRA+ learning rates and mixed-adapter batches: the variants that act on a whole model, not inside one layer.

As in PEFT, the per-layer maths (DoRA, PiSSA, rsLoRA, a 4-bit base) lives in ``lora.LoRALinear``;
what spans layers or adapters lives here.

* :func:`loraplus_param_groups`: LoRA+ (Hayou et al. 2024, arXiv:2402.12354) trains B with a
  learning rate ``ratio`` times A's. The groups are the ones ``peft.optimizers.create_loraplus_optimizer``
  builds, by the same rule: a parameter named ``lora_B``, or any 1-D trainable parameter (a
  bias, DoRA's magnitude), gets ``lr·ratio``; everything else ``lr``.
* :func:`mixed_batch_forward`: one batch, a different adapter per row (S-LoRA / Punica style
  serving), with every adapter's A and B stacked and gathered per row, so the whole batch is
  two batched matmuls instead of one pass per adapter.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lora_edu.core.lora import LoRAConfigError, LoRALinear, LoRAStateError

#: The name PEFT uses for "no adapter" in ``adapter_names``.
BASE = "__base__"


def loraplus_param_groups(model: nn.Module, lr: float, ratio: float, weight_decay: float = 0.0) -> list[dict]:
    """Optimizer parameter groups for LoRA+: A-side at ``lr``, B-side at ``lr·ratio`` (pass them to any torch optimizer).

    Same grouping as ``create_loraplus_optimizer``: B-side = names containing ``lora_B`` and every
    1-D parameter; weight decay on all but biases and 1-D norm weights of the B side. Only
    trainable parameters are included; empty groups are left out.
    """
    for name, value in (("lr", lr), ("ratio", ratio)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise LoRAConfigError(f"{name} must be a positive number, got {value!r}; LoRA+ uses e.g. lr=1e-3, ratio=16.")
    groups = {"A": [], "B": [], "B_no_decay": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if "lora_B" in name or p.ndim == 1:
            groups["B_no_decay" if name.endswith("bias") or _in_norm_layer(model, name) else "B"].append(p)
        else:
            groups["A"].append(p)
    if not groups["A"] and not groups["B"]:
        raise LoRAConfigError("the model has no trainable parameters; add adapters (add_lora) before building LoRA+ groups.")
    settings = {"A": (lr, weight_decay), "B": (lr * ratio, weight_decay), "B_no_decay": (lr * ratio, 0.0)}
    return [{"params": params, "lr": settings[k][0], "weight_decay": settings[k][1]} for k, params in groups.items() if params]


def _in_norm_layer(model: nn.Module, name: str) -> bool:
    """Whether parameter ``name`` belongs to a LayerNorm (transformers excludes those from weight decay)."""
    owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    return isinstance(owner, nn.LayerNorm)


def mixed_batch_forward(adapters: dict[str, LoRALinear], x: torch.Tensor, adapter_names: Sequence[str]) -> torch.Tensor:
    """Row i of ``x`` through the shared base plus adapter ``adapter_names[i]`` (or ``"__base__"`` for none).

    Every adapter must wrap the *same* base layer. Ranks may differ: A and B are zero-padded to
    the largest rank, which adds exact zeros. The scaling is folded into B. Per row i with adapter
    a(i): y_i = base(x_i) + (x_i·A_a(i)ᵀ)·(s_a(i)·B_a(i))ᵀ.
    """
    if not adapters:
        raise LoRAConfigError("no adapters given; pass a dict {name: LoRALinear} of adapters that share one base layer.")
    layers = list(adapters.values())
    base = layers[0].base
    if any(layer.base is not base for layer in layers):
        raise LoRAConfigError("the adapters wrap different base layers; a mixed batch needs one shared base (wrap the same nn.Linear).")
    if any(layer.merged or layer.use_dora for layer in layers):
        raise LoRAStateError("a merged or DoRA adapter cannot join a mixed batch: its base weight or output scale is not shared. "
                             "Unmerge it, or serve DoRA adapters merged, one model each.")
    if len(adapter_names) != x.shape[0]:
        raise LoRAConfigError(f"adapter_names has {len(adapter_names)} names for a batch of {x.shape[0]} rows; give one per row.")
    names = [BASE, *adapters]
    unknown = sorted(set(adapter_names) - set(names))
    if unknown:
        raise LoRAConfigError(f"unknown adapter names {unknown}; use {names}.")
    r = max(layer.r for layer in layers)
    d_in, d_out = layers[0].in_features, layers[0].out_features
    A = x.new_zeros(len(names), r, d_in)   # slot 0: "__base__", all zeros
    B = x.new_zeros(len(names), d_out, r)
    for k, layer in enumerate(layers, start=1):
        A[k, : layer.r] = layer.lora_A
        B[k, :, : layer.r] = layer.lora_B * layer.scaling
    index = torch.tensor([names.index(n) for n in adapter_names], device=x.device)
    h = torch.einsum("b...i,bri->b...r", x, A[index])      # each row through its own A (Punica's "shrink")
    return base(x) + torch.einsum("b...r,bor->b...o", h, B[index])  # and its own B ("expand")
