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

A shared prompt prefix, computed once (:class:`PrefixCache`). When every row begins with the same tokens (a chat
marker and an instruction), their states are the same in every row at every layer: a token sees only the tokens
before it, and the prefix has none but its own. So run the prefix alone, once, keep each layer's keys and values,
and run each row's own tokens after it, at positions p, p + 1, …, attending to the prefix's keys and values and to
their own earlier tokens: what inference servers call prefix caching. In the cache, the frozen layers run on the
prefix once instead of once per row; in a training step, the top layers (whose prefix states change with the
adapter) run on it once per batch instead of once per row, and the gradient reaches the adapter through the
prefix's keys and values too. The same sums in other shapes, so equal up to float rounding: the test
(``tests/core/test_layer_cache.py``) checks the loss and the gradients against :func:`reply_loss` on cached states.
The layers are called one by one (:func:`_run`), with the model's rotary embedding and an explicit mask, the way
LLaMA-like models (``rotary_emb``, ``norm``, attention through ``past_key_values.update``) run them.
"""
from __future__ import annotations

import copy
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
    keep = _labelled(labels)
    return _head_loss(model, final_states(model, attention_mask, input_ids=input_ids, hidden=hidden, k=k), labels, keep)


def _labelled(labels: torch.Tensor) -> torch.Tensor:
    """Where a position predicts a labelled token (position t predicts token t + 1)."""
    keep = labels[:, 1:] != IGNORE
    if not keep.any():
        raise CacheError("no token carries a label (all are -100): nothing to learn from this batch.")
    return keep


def _head_loss(model: nn.Module, states: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The mean cross-entropy of the labelled tokens, the head run only where ``keep`` (from :func:`_labelled`)."""
    logits = output_head(model)(states[:, :-1][keep])
    return F.cross_entropy(logits.float(), labels[:, 1:][keep])


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


class _PrefixKV:
    """What the attention layers take for transformers' cache: they call ``update(key, value, layer_idx)`` with a
    layer's new keys and values and attend to what it returns. A layer's first call (the prefix's pass) keeps them;
    every later call (the rows' passes) puts the prefix's in front of each row's own."""

    def __init__(self):
        self.kept: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.calls = 0

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        self.calls += 1
        if layer_idx not in self.kept:
            self.kept[layer_idx] = key, value
            return key, value
        grow = lambda old, new: torch.cat([old.expand(len(new), -1, -1, -1), new], dim=2)  # noqa: E731
        return grow(self.kept[layer_idx][0], key), grow(self.kept[layer_idx][1], value)


def _mask(body: nn.Module, attention_mask: torch.Tensor, start: int, dtype: torch.dtype) -> torch.Tensor:
    """Which keys each token sees (rows × 1 × tokens × (start + tokens)): the ``start`` prefix tokens, and its row's
    real tokens up to itself (causal; the right padding never), in the form the model's attention takes."""
    tokens = attention_mask.shape[1]
    own = torch.ones(tokens, tokens, dtype=torch.bool, device=attention_mask.device).tril() & attention_mask.bool()[:, None, :]
    seen = torch.cat([own.new_ones(len(own), tokens, start), own], dim=2)[:, None]
    kind = body.config._attn_implementation
    if kind == "sdpa":
        return seen
    if kind == "eager":
        return torch.zeros(seen.shape, dtype=dtype, device=seen.device).masked_fill(~seen, torch.finfo(dtype).min)
    raise CacheError(f"the shared prefix supports the 'sdpa' and 'eager' attention implementations, not {kind!r}: load the "
                     "model with attn_implementation='sdpa', or cache without the prefix.")


def _run(model: nn.Module, layers: list, hidden: torch.Tensor, start: int, attention_mask: torch.Tensor, kv: _PrefixKV):
    """``hidden`` (rows × tokens × hidden, at positions start, start + 1, …) through ``layers``, one by one as the
    model's forward calls them, attending to the prefix's keys and values kept in ``kv``."""
    body = _body(model)
    positions = torch.arange(start, start + hidden.shape[1], device=hidden.device)[None]
    rope, mask = body.rotary_emb(hidden, positions), _mask(body, attention_mask, start, hidden.dtype)
    calls = kv.calls
    for layer in layers:
        out = layer(hidden, attention_mask=mask, position_ids=positions, past_key_values=kv, position_embeddings=rope)
        hidden = out[0] if isinstance(out, tuple) else out
    if kv.calls - calls != len(layers):   # else the rows would silently attend without the prefix
        raise CacheError(f"{type(body).__name__}'s layers did not pass their keys and values to past_key_values.update, "
                         "as LLaMA's do in transformers 5: cache without the prefix for this model or version.")
    return hidden


def split_prefix(batch: dict, prefix: torch.Tensor) -> dict:
    """``batch``'s rows after their first ``len(prefix)`` tokens, once every row is checked to begin with ``prefix``,
    to carry no label on it or on the token right after it, and to have a token of its own."""
    p, ids, mask, labels = len(prefix), batch["input_ids"], batch["attention_mask"], batch["labels"]
    if p < 1 or ids.shape[1] <= p:
        raise CacheError(f"the shared prefix has {p} tokens and the rows {ids.shape[1]}: it needs at least one, and fewer than a row.")
    bad = ((ids[:, :p] != prefix.to(ids)) | (mask[:, :p] == 0)).any(1).nonzero().flatten().tolist()
    if bad:
        raise CacheError(f"rows {bad} do not begin with the shared prefix's {p} tokens: pass only rows that begin with it "
                         "(if their text does, the tokenizer joins the prefix's end with what follows: end the prefix where "
                         "it always splits, e.g. after a newline), or cache without the prefix.")
    if (labels[:, :p + 1] != IGNORE).any():
        raise CacheError("a label falls on the shared prefix or on the token right after it: the prefix must end at least one "
                         "unlabelled token before the first labelled one; use a shorter prefix.")
    if (mask[:, p:].sum(1) == 0).any():
        raise CacheError("a row has no token after the shared prefix: every row needs a token of its own.")
    return {key: value[:, p:] for key, value in batch.items()}


def prefix_tokens(tokenizer, prefix: str, prompts: list[str]) -> torch.Tensor:
    """The token ids of ``prefix`` (no special tokens added), once every prompt is checked to begin with it as text
    and as tokens: a tokenizer may join the prefix's last characters and the next ones into one token."""
    ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    for prompt in prompts:
        if not prompt.startswith(prefix):
            raise CacheError(f"the prompt {prompt!r} does not begin with the shared prefix {prefix!r}: pass only prompts "
                             "that begin with it, or cache without the prefix.")
        if tokenizer(prompt, add_special_tokens=False)["input_ids"][:len(ids)] != ids:
            raise CacheError(f"the prefix {prefix!r} tokenizes differently inside the prompt {prompt!r} (its last token joins "
                             "the text after it): end the prefix where the tokenizer always splits, e.g. after a newline "
                             "or a special token, or cache without the prefix.")
    return torch.tensor(ids)


class PrefixCache:
    """Rows that begin with the same tokens, cached for training the top ``k`` layers, the shared prefix computed once.

    ``batch`` (right-padded; labels -100 where no loss) must begin with ``prefix`` (token ids; see
    :func:`split_prefix`). Keeps the hidden states entering the top ``k`` layers: the prefix's once
    (``prefix_hidden``, 1 × p × hidden) and each row's own tokens' (``hidden``; ``batch`` holds those tokens).
    :meth:`loss` and :meth:`final_states` equal :func:`reply_loss` and :func:`final_states` on cached states of
    the whole rows, up to float rounding. The lower layers run on ``chunk`` rows of similar length at a time.
    """

    def __init__(self, model: nn.Module, k: int, batch: dict, prefix: torch.Tensor, chunk: int = 8):
        n = _check_k(model, k)
        self.k, self.batch = k, split_prefix(batch, prefix)
        ids, mask = self.batch["input_ids"], self.batch["attention_mask"]
        lower, embed, kv = list(decoder_layers(model))[:n - k], _body(model).get_input_embeddings(), _PrefixKV()
        lengths = mask.sum(1)
        order = torch.argsort(lengths, stable=True)
        with torch.no_grad():
            self.prefix_hidden = _run(model, lower, embed(prefix.to(ids)[None]), 0, torch.ones_like(prefix)[None], kv)
            self.hidden = self.prefix_hidden.new_zeros(*ids.shape, self.prefix_hidden.shape[-1])
            for start in range(0, len(order), chunk):
                rows = order[start:start + chunk]
                width = int(lengths[rows].max())
                self.hidden[rows, :width] = _run(model, lower, embed(ids[rows, :width]), len(prefix), mask[rows, :width], kv)

    def __len__(self) -> int:
        return len(self.hidden)

    def select(self, rows) -> PrefixCache:
        """The rows ``rows`` (a list of indices) only, sharing this cache's prefix states: no layer runs again."""
        part = copy.copy(self)
        part.hidden, part.batch = self.hidden[rows], {key: value[rows] for key, value in self.batch.items()}
        return part

    def final_states(self, model: nn.Module, rows=slice(None)) -> torch.Tensor:
        """The decoder's last hidden states of the rows' own tokens (after the prefix), through the top ``k`` layers:
        the prefix runs once (its keys and values for every row), then the rows, cut to their longest."""
        mask = self.batch["attention_mask"][rows]
        width = int(mask.sum(1).max())
        top, kv = list(decoder_layers(model))[-self.k:], _PrefixKV()
        _run(model, top, self.prefix_hidden, 0, torch.ones(self.prefix_hidden.shape[:2], dtype=mask.dtype), kv)
        states = _run(model, top, self.hidden[rows][:, :width], self.prefix_hidden.shape[1], mask[:, :width], kv)
        return _body(model).norm(states)

    def loss(self, model: nn.Module, rows=slice(None)) -> torch.Tensor:
        """:func:`reply_loss` of the rows ``rows``: the mean cross-entropy of their labelled tokens."""
        labels = self.batch["labels"][rows]
        keep = _labelled(labels)
        states = self.final_states(model, rows)
        return _head_loss(model, states, labels[:, :states.shape[1]], keep[:, :states.shape[1] - 1])
