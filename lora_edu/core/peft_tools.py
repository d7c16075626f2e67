"""Small bridges to Hugging Face PEFT, shared by notebook 06 and the layer benchmark.

Also the one-line ablation of ``LoRALinear`` that the benchmark needs to test *why* the two
layers differ in speed (:class:`OutputScaledLoRALinear`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lora_edu.core.lora import LoRALinear


def peft_lora_linear(base: nn.Linear, r: int, alpha: float, *, autocast_adapter_dtype: bool = False) -> nn.Module:
    """PEFT's LoRA ``Linear`` around ``base``, adapter name "default".

    Built directly, the adapters get the base layer's dtype: that is what
    ``get_peft_model(..., autocast_adapter_dtype=False)`` gives. ``autocast_adapter_dtype=True``
    applies PEFT's own cast (``peft.tuners.tuners_utils.cast_adapter_dtype``), which is what
    ``get_peft_model`` does by default: fp16/bf16 adapters become fp32, fp32 ones stay fp32.
    PEFT 0.18 and newer also want the ``LoraConfig``; older versions take r and alpha alone.
    """
    from peft import LoraConfig
    from peft.tuners.lora import Linear

    try:
        layer = Linear(base, "default", config=LoraConfig(r=r, lora_alpha=alpha), r=r, lora_alpha=alpha)
    except TypeError:
        layer = Linear(base, "default", r=r, lora_alpha=alpha)
    if autocast_adapter_dtype:
        from peft.tuners.tuners_utils import cast_adapter_dtype

        cast_adapter_dtype(layer, "default", autocast_adapter_dtype=True)
    return layer


def adapter_dtype(layer: nn.Module) -> torch.dtype:
    """The dtype of a LoRA layer's A matrix, for ``LoRALinear`` and PEFT's ``Linear`` alike."""
    a = layer.lora_A
    return (a["default"].weight if isinstance(a, nn.ModuleDict) else a).dtype


class OutputScaledLoRALinear(LoRALinear):
    """``LoRALinear`` with one change: it multiplies the adapter's *output* (tokens×out numbers)
    by α/r, as PEFT does, instead of B (out×r numbers).

    Why it exists: notebook 06 once said ``LoRALinear`` is faster than PEFT *because* it scales
    B. Only an ablation can back a cause, so ``benchmarks/bench_lora_linear.py`` times this class
    against ``LoRALinear`` (same weights, same everything else). The result is identical up to
    rounding.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        h = F.linear(self.dropout(x), self.lora_A)
        return self.base(x) + F.linear(h, self.lora_B) * self.scaling


def benchmark_results(kind: str) -> dict:
    """The committed layer benchmark ("gpu" or "cpu"), written by ``benchmarks/bench_lora_linear.py``."""
    from lora_edu.data import load_json

    return load_json(f"bench_lora_linear_{kind}.json")


def extra_call_cost_us(results: dict, mode: str = "forward", variant: str = "peft") -> float:
    """``variant``'s extra time per call over ``lora_edu`` on the benchmark's tiny layer, in µs (medians).

    On a 64×64 layer with 8 tokens the arithmetic is negligible, so the difference is fixed
    per-call work: PEFT's forward checks its arguments, loops over active adapters, casts the
    input to the adapter's dtype and the result back.
    """
    row = next(r for r in results["per_call_overhead"] if r["mode"] == mode)
    return row["median_us"][variant] - row["median_us"]["lora_edu"]
