"""Small bridges to Hugging Face PEFT, shared by notebook 06 and the layer benchmark."""
from __future__ import annotations

from torch import nn


def peft_lora_linear(base: nn.Linear, r: int, alpha: float) -> nn.Module:
    """PEFT's LoRA ``Linear`` around ``base``, adapter name "default".

    PEFT 0.18 and newer also want the ``LoraConfig``; older versions take r and alpha alone.
    """
    from peft import LoraConfig
    from peft.tuners.lora import Linear

    try:
        return Linear(base, "default", config=LoraConfig(r=r, lora_alpha=alpha), r=r, lora_alpha=alpha)
    except TypeError:
        return Linear(base, "default", r=r, lora_alpha=alpha)
