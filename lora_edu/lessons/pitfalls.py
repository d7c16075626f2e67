"""The six questions LoRA users ask most, each reproduced in seconds, offline, and then fixed (notebook 06).

Why a module: every pitfall is shown as the failure *and* the fix, and a unit test
(``tests/core/test_pitfalls.py``) pins both, so that a new PEFT or transformers release that
changes the behaviour breaks a test instead of silently falsifying the notebook. The models are
tiny and built from configs (random weights, seeded): nothing is downloaded.

The messages shown are the libraries' own. Warnings are *captured* (:func:`captured`) and
printed by the notebook, so a stored notebook shows them as text and never writes to stderr.
Versions this was written against: peft 0.21.2, transformers 5.23, bitsandbytes 0.50.2, torch 2.13.
"""
from __future__ import annotations

import contextlib
import copy
import io
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

#: One tiny LLaMA-style config, the same as notebook 06's: q/k/v/o projections and a gated MLP, all nn.Linear.
TINY_LLAMA = dict(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                  vocab_size=256, max_position_embeddings=32, tie_word_embeddings=False)
#: A tiny GPT-2: fused c_attn (q, k and v in one Conv1D), c_proj, c_fc. The token ids are set inside the
#: small vocabulary (GPT-2's default 50256 would make transformers log a config warning).
TINY_GPT2 = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=256, n_positions=32, bos_token_id=255, eos_token_id=255)


def tiny_llama(seed: int = 0, **overrides) -> nn.Module:
    """``LlamaForCausalLM`` from :data:`TINY_LLAMA` (with ``overrides``), weights seeded; in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**(TINY_LLAMA | overrides))).eval()


def tiny_gpt2(seed: int = 0) -> nn.Module:
    """``GPT2LMHeadModel`` from :data:`TINY_GPT2`, weights seeded; in eval mode."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(**TINY_GPT2)).eval()


@contextlib.contextmanager
def captured() -> Iterator[list[str]]:
    """Collect the warnings raised inside the block, each distinct message once, in order.

    Why: the point of several pitfalls *is* a library's warning. A notebook must show it, but a
    warning that reaches stderr fails the course's hygiene test and costs marks under nbgrader; so
    it is caught here and the notebook prints the list. transformers' deprecation notices
    (FutureWarning, e.g. ``is_gradient_checkpointing``), which are about transformers' own API and
    not the pitfall, are left out.
    """
    found: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield found
    for w in caught:
        text = str(w.message)
        if not issubclass(w.category, (FutureWarning, DeprecationWarning)) and text not in found:
            found.append(text)


def sorted_sets(text: str) -> str:
    """``text`` with every printed set of strings (``{'v_proj', 'q_proj'}``) in sorted order.

    Why: PEFT's messages print Python sets, whose order of strings changes from one process to the
    next (string hashing is randomised per process), and a stored notebook must print the same every run.
    """
    import re

    def ordered(match: re.Match) -> str:
        items = sorted(item.strip() for item in match.group(1).split(","))
        return "{" + ", ".join(items) + "}"

    return re.sub(r"\{('[^'{}]*'(?:, '[^'{}]*')*)\}", ordered, text)


def linear_modules(model: nn.Module, block: str | None = None) -> list[tuple[str, str, tuple[int, ...]]]:
    """(name, type, weight shape) of every layer LoRA can adapt (``nn.Linear``, ``Conv1D``, ``Linear4bit``).

    ``block`` keeps only names containing it (one block is enough to see the pattern), plus the output head.
    """
    from lora_edu.core.lora import is_lora_target

    rows = []
    for name, module in model.named_modules():
        if not (is_lora_target(module) or type(module).__name__ == "Linear4bit"):
            continue
        if block is None or block in name or "." not in name:
            rows.append((name, type(module).__name__, tuple(module.weight.shape)))
    return rows


def adapted(peft_model: nn.Module) -> list[str]:
    """Names of the modules PEFT put a LoRA layer on (those with a ``lora_A``), without PEFT's prefix."""
    return [name.removeprefix("base_model.model.") for name, m in peft_model.named_modules()
            if isinstance(getattr(m, "lora_A", None), nn.ModuleDict)]


def trainable(model: nn.Module) -> int:
    """How many parameters the optimizer would update (``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def peft_line(peft_model: nn.Module) -> str:
    """What PEFT's ``print_trainable_parameters()`` prints, as a string."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        peft_model.print_trainable_parameters()
    return buffer.getvalue().strip()


def randomize_lora_b(model: nn.Module, std: float = 0.05, seed: int = 1) -> nn.Module:
    """Give every PEFT ``lora_B`` random values (it starts at zero), a stand-in for training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * std)
    return model


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference of two tensors, as a float."""
    return (a.detach() - b.detach()).abs().max().item()



# ---------------------------------------------------------------- the same model, two ways (before the pitfalls)


def _peft_layers(peft_model: nn.Module, ours: nn.Module) -> dict:
    """PEFT's LoRA layer for each of ``ours``'s, by module name; a clear error where the two models differ."""
    from lora_edu.core.lora import lora_layers

    mine, theirs = set(lora_layers(ours)), set(adapted(peft_model))
    if not mine or mine != theirs:
        raise ValueError(f"the two models adapt different layers: lora_edu {sorted(mine)}, PEFT {sorted(theirs)}; wrap the "
                         "same base model with the same target_modules in both (lora_edu.add_lora and get_peft_model)")
    return {name: peft_model.base_model.model.get_submodule(name) for name in sorted(mine)}


def copy_peft_adapters(peft_model: nn.Module, ours: nn.Module, std: float = 0.05) -> nn.Module:
    """Give PEFT's ``lora_B`` random values (normal, ``std``, from torch's global generator), then copy every A and B into ``ours``.

    Why: both libraries start with B = 0, where any two LoRA layers agree; with a random B, equal outputs and
    gradients mean something. PEFT names the matrices ``…q_proj.lora_A.default.weight``, lora_edu ``…q_proj.lora_A``.
    ``ours`` is the same base model wrapped by ``lora_edu.add_lora`` with the same targets; otherwise a ValueError,
    and nothing changes. Returns ``ours``.
    """
    from lora_edu.core.lora import lora_layers

    pairs = _peft_layers(peft_model, ours)
    with torch.no_grad():
        for name, layer in lora_layers(ours).items():
            peft_layer = pairs[name]
            peft_layer.lora_B["default"].weight.normal_(std=std)
            layer.lora_A.copy_(peft_layer.lora_A["default"].weight)
            layer.lora_B.copy_(peft_layer.lora_B["default"].weight)
    return ours


def logit_agreement(ours: nn.Module, peft_model: nn.Module, ids: torch.Tensor) -> dict:
    """lora_edu's and PEFT's logits on the same token ids, and what each model's adapters add to the base model's.

    Why both: two models whose adapters change the logits only a little would agree on the logits even with
    different adapters, so the picture also compares the *changes* (adapted − base, the base from PEFT's
    ``disable_adapter()``). Both models must be in eval mode (dropout off), else a ValueError. Returns flat
    numpy arrays ``ours``, ``peft``, ``change_ours``, ``change_peft`` and the floats ``max_diff`` (largest
    |ours − PEFT|) and ``max_change`` (largest |change| the adapters make).
    """
    if ours.training or peft_model.training:
        raise ValueError("a model is in training mode, so dropout makes its logits random: call .eval() on both models first")
    with torch.no_grad():
        mine, theirs = ours(input_ids=ids).logits, peft_model(input_ids=ids).logits
        with peft_model.disable_adapter():
            base = peft_model(input_ids=ids).logits
    flat = lambda t: t.detach().flatten().numpy()  # noqa: E731
    return dict(ours=flat(mine), peft=flat(theirs), change_ours=flat(mine - base), change_peft=flat(theirs - base),
                max_diff=max_diff(mine, theirs), max_change=(mine - base).abs().max().item())


def max_adapter_grad_diff(ours: nn.Module, peft_model: nn.Module) -> float:
    """The largest absolute difference between the gradients of every A and B in ``ours`` and in PEFT's model (after backward)."""
    from lora_edu.core.lora import lora_layers

    pairs = _peft_layers(peft_model, ours)
    diffs = []
    for name, layer in lora_layers(ours).items():
        for mine, theirs in ((layer.lora_A, pairs[name].lora_A["default"].weight), (layer.lora_B, pairs[name].lora_B["default"].weight)):
            if mine.grad is None or theirs.grad is None:
                raise ValueError(f"{name}: no gradient to compare; call loss.backward() on both models first")
            diffs.append((mine.grad - theirs.grad).abs().max().item())
    return max(diffs)


# ---------------------------------------------------------------- 3. a new classification head


class DigitsClassifier(nn.Module):
    """The digits MLP's body (``fc1``, ``fc2``, from the pretrained model) with a *new* head, ``classifier``.

    Why this shape: ``AutoModelForSequenceClassification.from_pretrained`` loads a body and creates
    the head at random, anew on every load ("newly initialized" in its log). ``head_seed=None`` does
    the same here: the head is drawn from the global random state, so two loads get two heads.
    """

    def __init__(self, body: nn.Module, head_seed: int | None = None, classes: int = 10):
        super().__init__()
        self.fc1, self.fc2 = copy.deepcopy(body.fc1), copy.deepcopy(body.fc2)
        generator = None if head_seed is None else torch.Generator().manual_seed(head_seed)
        self.classifier = nn.Linear(self.fc2.out_features, classes, dtype=self.fc2.weight.dtype)
        with torch.no_grad():  # nn.Linear's own init, drawn from ``generator``
            bound = 1 / self.fc2.out_features ** 0.5
            self.classifier.weight.copy_(torch.empty_like(self.classifier.weight).uniform_(-bound, bound, generator=generator))
            self.classifier.bias.copy_(torch.empty_like(self.classifier.bias).uniform_(-bound, bound, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


# ---------------------------------------------------------------- 4. gradient checkpointing


def checkpointed_step(peft_model: nn.Module, ids: torch.Tensor) -> dict:
    """One forward and backward pass in training mode; what came back, without raising.

    Returns the warnings raised (captured), the error of ``backward()`` if any, and how many LoRA
    matrices received a gradient. Why not just call ``backward()``: the failure is the point, and
    the notebook must show its message rather than stop.
    """
    peft_model.train()
    peft_model.zero_grad(set_to_none=True)
    error = None
    with captured() as messages:
        out = peft_model(input_ids=ids, labels=ids, use_cache=False)
        try:
            out.loss.backward()
        except RuntimeError as exc:
            error = str(exc)
    lora = [p for n, p in peft_model.named_parameters() if "lora_" in n]
    peft_model.eval()
    return dict(warnings=messages, error=error, lora_with_grad=sum(p.grad is not None for p in lora), lora_total=len(lora))


# ---------------------------------------------------------------- 6. merging into a 4-bit base


def load_nf4(model: nn.Module, compute_dtype: torch.dtype = torch.float32) -> nn.Module:
    """``model`` reloaded through ``from_pretrained(..., quantization_config=BitsAndBytesConfig(load_in_4bit=True,
    bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype))``.

    Every ``nn.Linear`` but the output head becomes bitsandbytes' ``Linear4bit`` in NF4, the QLoRA
    format (named here because ``BitsAndBytesConfig``'s default type is ``"fp4"``), on the CPU:
    bitsandbytes 0.48 and newer quantize on the CPU. The model goes through a temporary folder so
    this is exactly the loading line used with a real checkpoint; the progress bars of saving and
    loading are switched off (they write to stderr).
    """
    from transformers import BitsAndBytesConfig
    from transformers.utils import logging as hf_logging

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            return type(model).from_pretrained(folder, quantization_config=config, device_map="cpu").eval()
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def merged_into_dequantized(peft_model: nn.Module, fp_model: nn.Module) -> nn.Module:
    """``fp_model`` (a full-precision copy of the architecture) with each adapted layer's weight set
    to dequantize(W₄) + ΔW: the merge a 4-bit base *would* get without requantizing.

    Why: it separates the two errors. It equals the unmerged 4-bit model up to float rounding, so
    any difference between ``merge_and_unload()`` on the 4-bit base and the unmerged model is the
    requantization of W₄ + ΔW, and nothing else.
    """
    import bitsandbytes as bnb
    from peft.utils.integrations import dequantize_bnb_weight

    merged, names = copy.deepcopy(fp_model), set(adapted(peft_model))
    with torch.no_grad():
        for name, module in peft_model.base_model.model.named_modules():
            if not isinstance(module, bnb.nn.Linear4bit):  # PEFT's LoRA layer keeps the 4-bit one as .base_layer
                continue
            target = name.removesuffix(".base_layer")
            w = dequantize_bnb_weight(module.weight, state=module.weight.quant_state).to(torch.float32)
            if target in names:
                w = w + peft_model.base_model.model.get_submodule(target).get_delta_weight("default")
            merged.get_submodule(target).weight.copy_(w)
    return merged.eval()


def save_load(peft_model: nn.Module, base: nn.Module, **load_kwargs) -> nn.Module:
    """Save ``peft_model``'s adapter with ``save_pretrained`` and load it onto ``base`` with ``PeftModel.from_pretrained``."""
    from peft import PeftModel

    with tempfile.TemporaryDirectory() as folder:
        peft_model.save_pretrained(folder)
        return PeftModel.from_pretrained(base, folder, **load_kwargs)


def saved_tensor_names(peft_model: nn.Module) -> list[str]:
    """The tensor names ``save_pretrained`` writes into ``adapter_model.safetensors``."""
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as folder:
        peft_model.save_pretrained(folder)
        return sorted(load_file(Path(folder) / "adapter_model.safetensors"))
