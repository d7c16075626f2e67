"""Notebook 10's task: route short customer messages to the team that should answer them, a causal LM as a classifier.

The data is the ``routing`` part of notebook 07's data file (``lora_edu/data/chat_task.json``, written for the course,
MIT): 64 messages to an online shop, each labelled billing, shipping, technical or account. It stays in that file, one
file written for the course under one licence line, and is split by the same rule as 07's questions
(:func:`lora_edu.lessons.chat_task.held_out_half`: the sha256 of the text, odd means held out), never by hand.

**The classifier.** The prompt is the instruction (which names the four teams) and the message, in the chat format;
the model's choice is the team whose name's *first token* gets the highest logit where the reply starts
(:func:`route`). No text is generated, so every message gets exactly one of the four answers.

**Zero-shot against an adapter.** Zero-shot, the base model has only the instruction. The adapter is notebook 07's
recipe (:data:`lora_edu.lessons.chat_task.RECIPE`: the top two layers, r 8, alpha 16, its learning rate), trained with
PEFT (:func:`add_router`) on cached inputs of the frozen layers. Every prompt begins with the same tokens (the chat
marker and the instruction, about half of each prompt), so the cache computes them once (:func:`cache_messages`,
:class:`lora_edu.core.layer_cache.PrefixCache`): in the frozen layers once for all messages, in the trained layers
once per batch; the result equals :class:`lora_edu.lessons.chat_task.CachedBatch`'s up to float rounding.
The number of steps is the only thing chosen for this task: ``benchmarks/explore_10_routing.py`` chose it among
:data:`STEP_CHOICES` by three-fold cross-validation on the training messages alone (:func:`folds`), its rule declared
in the script before it ran; its record is ``lora_edu/data/routing_steps.json`` (:func:`load_steps_choice`).
"""
from __future__ import annotations

import json
from importlib.resources import files

import torch

from lora_edu.core import layer_cache
from lora_edu.lessons import chat_task

#: The step counts the cross-validation may choose among (``benchmarks/explore_10_routing.py``); nothing else is tuned.
STEP_CHOICES = (20, 40, 60)
#: How many folds the cross-validation splits the training messages into.
N_FOLDS = 3


def load_routing() -> dict:
    """``{"labels", "instruction", "train", "held_out"}``: the data file's customer messages, split by the hash rule."""
    routing = chat_task.load_data()["routing"]
    return {"labels": routing["labels"], "instruction": routing["instruction"],
            "train": [m for m in routing["messages"] if not chat_task.held_out_half(m["text"])],
            "held_out": [m for m in routing["messages"] if chat_task.held_out_half(m["text"])]}


def load_steps_choice() -> dict:
    """``benchmarks/explore_10_routing.py``'s record: each step count's cross-validated accuracy, and the one chosen."""
    return json.loads(files("lora_edu.data").joinpath("routing_steps.json").read_text(encoding="utf-8"))


def load_prefix_timing() -> dict:
    """``benchmarks/bench_10_prefix.py``'s record: the cache and a training step with the shared prefix computed once,
    against whole prompts, timed."""
    return json.loads(files("lora_edu.data").joinpath("routing_prefix_timing.json").read_text(encoding="utf-8"))


def routing_prompt(instruction: str, text: str) -> str:
    """The question put to the model: the instruction (naming the teams), then the message, in the chat format."""
    return chat_task.chat_prompt(f"{instruction}\n{text}")


def encode_routing(tokenizer, instruction: str, messages: list[dict]) -> dict[str, torch.Tensor]:
    """A right-padded batch whose reply is the team's name and the end marker; only the reply carries labels."""
    return chat_task._reply_batch(tokenizer, [(routing_prompt(instruction, m["text"]), m["label"]) for m in messages])


def prompt_prefix(instruction: str) -> str:
    """The text every routing prompt begins with: the chat marker and the instruction, up to the message."""
    prompt = routing_prompt(instruction, "\0")
    return prompt[:prompt.index("\0")]


def cache_messages(model, tokenizer, instruction: str, messages: list[dict],
                   k: int = chat_task.RECIPE["top_layers"]) -> layer_cache.PrefixCache:
    """The messages' batch (:func:`encode_routing`) cached for the top ``k`` layers, the shared prompt prefix computed
    once. Raises ``CacheError`` if the prefix does not tokenize the same inside every prompt."""
    prompts = [routing_prompt(instruction, m["text"]) for m in messages]
    prefix = layer_cache.prefix_tokens(tokenizer, prompt_prefix(instruction), prompts)
    return layer_cache.PrefixCache(model, k, encode_routing(tokenizer, instruction, messages), prefix)


def label_tokens(tokenizer, labels: list[str]) -> torch.Tensor:
    """The first token of each team's name: the model's choice is the one it gives the highest logit to."""
    first = [tokenizer(label, add_special_tokens=False)["input_ids"][0] for label in labels]
    if len(set(first)) != len(first):
        raise ValueError(f"two labels of {labels} start with the same token; rename one so that each starts differently.")
    return torch.tensor(first)


def truth(routing: dict, part: str) -> torch.Tensor:
    """The index (in ``routing["labels"]``) of each message's team, for ``part`` ``"train"`` or ``"held_out"``."""
    if part not in ("train", "held_out"):
        raise ValueError(f"part must be 'train' or 'held_out', got {part!r}.")
    return torch.tensor([routing["labels"].index(m["label"]) for m in routing[part]])


@torch.no_grad()
def route(model, data, choices: torch.Tensor) -> torch.Tensor:
    """The index of the label each row's model picks: the highest logit among ``choices`` (first tokens of the labels)
    where the reply starts, computed from ``data``'s cached states through the top layers (``data``: a
    :class:`~lora_edu.core.layer_cache.PrefixCache`, or a :class:`~lora_edu.lessons.chat_task.CachedBatch`)."""
    states = data.final_states(model)
    where = (data.batch["labels"] != layer_cache.IGNORE).int().argmax(1) - 1   # the last prompt token predicts the reply's first
    weights = layer_cache.output_head(model).weight[choices]
    return (states[torch.arange(len(where)), where] @ weights.T).argmax(1)


def add_router(model, seed: int = 0, adapter_name: str = "route", recipe: dict = chat_task.RECIPE):
    """Wrap ``model`` with a new PEFT LoRA adapter of notebook 07's recipe (its modules of the top layers, r, alpha),
    its A drawn with ``seed``. ``model`` itself gains the adapter (PEFT injects in place); ``disable_adapter()`` gives
    the base model back. Returns the ``PeftModel``."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=recipe["r"], lora_alpha=recipe["alpha"], lora_dropout=0.0,
                        target_modules=chat_task.targets(len(layer_cache.decoder_layers(model)), recipe))
    torch.manual_seed(seed)
    return get_peft_model(model, config, adapter_name=adapter_name)


def confusion(chosen: torch.Tensor, true: torch.Tensor, n_labels: int) -> torch.Tensor:
    """``n_labels`` × ``n_labels`` counts: row = the true team, column = the team chosen."""
    if chosen.shape != true.shape:
        raise ValueError(f"chosen and true must have the same shape, got {tuple(chosen.shape)} and {tuple(true.shape)}.")
    counts = torch.zeros(n_labels, n_labels, dtype=torch.long)
    counts.index_put_((true.long(), chosen.long()), torch.ones_like(true, dtype=torch.long), accumulate=True)
    return counts


def constant_shares(labels: list[str], held_out_labels: list[str]) -> dict[str, float]:
    """For each label, the share of held-out messages that a classifier always answering that label routes right:
    the floor a classifier that ignores the message reaches (the largest of them)."""
    if not labels or not held_out_labels:
        raise ValueError("need the labels and the held-out messages' labels to compute the constant classifiers' shares.")
    return {label: held_out_labels.count(label) / len(held_out_labels) for label in labels}


def folds(n: int, k: int = N_FOLDS) -> list[tuple[list[int], list[int]]]:
    """``k`` (fit, validation) index splits of ``n`` rows: row i validates in fold i mod k (rows are in the data
    file's order, which nobody chose by looking at a model)."""
    if not 2 <= k <= n:
        raise ValueError(f"need 2 <= k <= n, got k={k}, n={n}.")
    return [([i for i in range(n) if i % k != f], [i for i in range(n) if i % k == f]) for f in range(k)]


def choose_steps(accuracy: dict[int, float]) -> int:
    """The rule declared before the cross-validation ran: the step count with the highest validation accuracy, pooled
    over the folds (each training message counted once, when it was a validation message); a tie goes to the fewer
    steps (cheaper, and less to overfit 38 messages)."""
    return min(accuracy, key=lambda steps: (-accuracy[steps], steps))
