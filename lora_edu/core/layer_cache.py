"""Train only the top layers of a decoder on cached outputs of the frozen layers below them.

The trick. When only the last ``k`` decoder layers train (LoRA or full fine-tuning), nothing below
them ever changes: the hidden states that enter layer ``L - k`` are the same at every step for the
same tokens. So compute them once, keep them, and let every training step run only the top ``k``
layers, the final norm and the output head. Each step then skips ``L - k`` layers forwards *and*
backwards (without the cache, the backward pass already stops at the lowest adapted layer, but the
forward pass still runs every layer).

Why it is exact. A decoder layer sees its input hidden states, the attention mask and the
positions, nothing else. With right padding and causal attention a token never attends to the
padding after it, so the cached states of the real tokens do not depend on how much padding their
batch had, and a batch of cached rows can be cut to its own longest row. The test
(``tests/core/test_layer_cache.py``) checks that the loss and the gradients of a cached step equal
the uncached step's.

Which models. Decoder-only transformers whose ``forward`` takes ``inputs_embeds`` and uses them as
the first hidden states unchanged, with the layers in one ``nn.ModuleList`` (LLaMA, Mistral, Qwen2,
SmolLM2, Gemma: ``model.model.layers``). A model whose ``forward`` changes ``inputs_embeds`` before
the first layer is not supported: :func:`check_cache_matches` finds that out on one batch, and
``lora_edu.finetune`` runs it before it trusts the cache.

The loss is the mean cross-entropy over the tokens whose label is not -100, computed with the output
head on those positions only (:func:`reply_loss`): for a short reply after a long prompt this is most
of a step's cost saved again, since the head (vocabulary × hidden) is the largest matrix in a small model.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100  # the label of a token that carries no loss (the prompt, the padding): PyTorch's and transformers' value


class CacheError(ValueError):
    """The model or the batch does not fit the trick; the message names the fix."""


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's list of decoder layers: the ``nn.ModuleList`` holding ``config.num_hidden_layers`` blocks.

    Works through PEFT's wrappers (``PeftModel``) and on any transformers model whose layers sit in one list.
    """
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == n and len(m) > 0]
    if n is None or len(lists) != 1:
        raise CacheError(f"could not find the decoder's one list of {n} layers in {type(model).__name__}; the trick needs a "
                         "transformers decoder-only model (e.g. LLaMA, Mistral, Qwen2, SmolLM2) with config.num_hidden_layers. "
                         "Train without the cache (top_k=None) for other models.")
    return lists[0]


def _check_k(model: nn.Module, k: int) -> int:
    n = len(decoder_layers(model))
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise CacheError(f"k (how many top layers train) must be an int from 1 to {n}, the model's layer count; got {k!r}.")
    return n


class _Stop(Exception):
    """Raised by the hook once the wanted hidden states are in hand: the layers above them need not run."""


@torch.no_grad()
def lower_outputs(model: nn.Module, k: int, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The hidden states entering the first of the top ``k`` layers (batch × tokens × hidden), computed once.

    Runs the embedding and the ``L - k`` lower layers only: a hook on layer ``L - k`` records its input
    and stops the forward pass there.
    """
    n = _check_k(model, k)
    layer = decoder_layers(model)[n - k]
    seen = {}

    def hook(module, args, kwargs):
        seen["h"] = args[0] if args else kwargs["hidden_states"]
        raise _Stop

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    return seen["h"].detach()


@contextmanager
def top_layers_only(model: nn.Module, k: int):
    """Inside the ``with``, the model's list of layers holds only its last ``k``: feed it cached hidden states
    as ``inputs_embeds`` and it runs those layers, the final norm and the head. The full list is put back on exit."""
    n = _check_k(model, k)
    layers = decoder_layers(model)
    kept = list(layers)
    layers._modules.clear()
    for i, layer in enumerate(kept[n - k:]):
        layers._modules[str(i)] = layer
    try:
        yield model
    finally:
        layers._modules.clear()
        for i, layer in enumerate(kept):
            layers._modules[str(i)] = layer


def output_head(model: nn.Module) -> nn.Module:
    head = model.get_output_embeddings()
    if head is None:
        raise CacheError(f"{type(model).__name__} has no output head (get_output_embeddings() is None); use a *ForCausalLM model.")
    return head


def _body(model: nn.Module) -> nn.Module:
    """The decoder without the head (``model.model`` for LLaMA), also through PEFT's wrapper."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.get_decoder()


def final_states(model: nn.Module, attention_mask: torch.Tensor, *, input_ids: torch.Tensor | None = None,
                 hidden: torch.Tensor | None = None, k: int | None = None) -> torch.Tensor:
    """The decoder's last hidden states (after its final norm, before the head), batch × tokens × hidden.

    Either uncached, from ``input_ids`` through every layer, or cached, from ``hidden`` (what
    :func:`lower_outputs` returned for the same rows) through the top ``k`` layers only.
    """
    if (input_ids is None) == (hidden is None) or (hidden is not None and k is None):
        raise CacheError("pass either input_ids (uncached) or hidden with k (cached), not both or neither.")
    body = _body(model)
    if hidden is None:
        return body(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    with top_layers_only(model, k):
        return body(inputs_embeds=hidden, attention_mask=attention_mask, use_cache=False).last_hidden_state


def reply_loss(model: nn.Module, labels: torch.Tensor, attention_mask: torch.Tensor, *, input_ids: torch.Tensor | None = None,
               hidden: torch.Tensor | None = None, k: int | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled tokens (label != -100), as ``model(**batch).loss`` computes it.

    Uncached from ``input_ids`` or cached from ``hidden`` and ``k``, as :func:`final_states`. The head
    runs only at the positions that predict a labelled token.
    """
    if (input_ids is None) == (hidden is None) or (hidden is not None and k is None):
        raise CacheError("pass either input_ids (uncached) or hidden with k (cached), not both or neither.")
    if hidden is not None:   # right padding: cut the batch to its longest row
        width = int(attention_mask.sum(1).max())
        hidden, attention_mask, labels = hidden[:, :width], attention_mask[:, :width], labels[:, :width]
    targets = labels[:, 1:]
    keep = targets != IGNORE                     # position t predicts token t + 1
    if not keep.any():
        raise CacheError("no token carries a label (all are -100): nothing to learn from this batch.")
    states = final_states(model, attention_mask, input_ids=input_ids, hidden=hidden, k=k)
    logits = output_head(model)(states[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep])


def check_cache_matches(model: nn.Module, k: int, batch: dict, atol: float = 1e-4) -> float:
    """Raise :class:`CacheError` unless the cached loss equals the uncached one on ``batch``; return the difference.

    One extra forward pass: cheap insurance before trusting the trick on a model it was not tested on.
    """
    with torch.no_grad():
        plain = reply_loss(model, batch["labels"], batch["attention_mask"], input_ids=batch["input_ids"])
        hidden = lower_outputs(model, k, batch["input_ids"], batch["attention_mask"])
        cached = reply_loss(model, batch["labels"], batch["attention_mask"], hidden=hidden, k=k)
    diff = abs(plain.item() - cached.item())
    if not diff <= atol:
        raise CacheError(f"the cached loss ({cached.item():.6f}) differs from the uncached one ({plain.item():.6f}) on "
                         f"{type(model).__name__}: this model changes its inputs inside forward. Train without the cache.")
    return diff
