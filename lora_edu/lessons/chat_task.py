"""Notebook 07's task: teach a chat model to answer in a set format, and measure what it learned and forgot.

The data set (``lora_edu/data/chat_task.json``) was written for the course: short questions
with one-word answers that SmolLM2-135M-Instruct mostly knows already, so training only has to
change *how* it answers. The taught reply is a JSON object, ``{"answer": "Paris"}``, a format a
program can read and a learner can see at a glance; a second format (``xml``:
``<answer>Paris</answer>``) gives a second adapter to switch to. The held-out questions never appear in training. The file's
``general_text`` (plain encyclopaedic prose, also written for the course) measures forgetting as
perplexity.

Prompts use the model's chat markers without a system turn (its template would add a
20-token default system prompt to every example, tripling the cost of a training step).
Training sequences are right-padded and only the reply's tokens carry a loss; generation pads
on the left, as decoder-only generation needs.
"""
from __future__ import annotations

import json
import math
import re
from importlib.resources import files

import torch

FORMATS = ("json", "xml")


def load_task() -> dict:
    """``{"train": [...], "test": [...], "general_text": str}``; each example is ``{"question", "answer"}``."""
    return json.loads(files("lora_edu.data").joinpath("chat_task.json").read_text(encoding="utf-8"))


def load_sweep() -> dict:
    """The learning-rate sweep of ``benchmarks/sweep_07_lr.py`` (``lora_edu/data/chat_task_sweep.json``): its set-up,
    every run's validation scores, and ``chosen``, the learning rate it picked for each method."""
    return json.loads(files("lora_edu.data").joinpath("chat_task_sweep.json").read_text(encoding="utf-8"))


def validation_split(examples: list[dict], every: int = 5) -> tuple[list[dict], list[dict]]:
    """``(train, validation)``: every ``every``-th example (the 5th, 10th, …) is set aside for validation.

    Choices such as the learning rate are made on this split (``benchmarks/sweep_07_lr.py``), never on
    the held-out questions, which only measure the final model. Taking every fifth keeps each kind of
    question (capitals, colours, counts, …) in both parts.
    """
    if every < 2 or len(examples) < every:
        raise ValueError(f"need every >= 2 and at least `every` examples; got every={every}, {len(examples)} examples.")
    return ([ex for i, ex in enumerate(examples) if (i + 1) % every],
            [ex for i, ex in enumerate(examples) if (i + 1) % every == 0])


def chat_prompt(question: str) -> str:
    """The model's chat format for one user turn, ending where the assistant's reply starts."""
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def reply(answer: str, fmt: str = "json") -> str:
    """The taught reply: ``{"answer": "Paris"}`` (``json``) or ``<answer>Paris</answer>`` (``xml``)."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}.")
    return json.dumps({"answer": answer}) if fmt == "json" else f"<answer>{answer}</answer>"


def parse_reply(text: str, fmt: str = "json") -> str | None:
    """The answer inside a reply written in ``fmt``, or None if the reply does not follow the format."""
    text = text.strip()
    if fmt == "json":
        try:
            value = json.loads(text)
        except ValueError:
            return None
        return str(value["answer"]) if isinstance(value, dict) and set(value) == {"answer"} else None
    if fmt == "xml":
        found = re.fullmatch(r"<answer>([^<>]+)</answer>", text)
        return found.group(1) if found else None
    raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}.")


def score(replies: list[str], answers: list[str], fmt: str = "json") -> dict[str, float]:
    """Shares of replies: in the taught format (``format``), in it *and* right (``correct``), and holding the right
    answer anywhere, in any format (``mentions``: what the model knows, whatever the wording)."""
    if len(replies) != len(answers) or not replies:
        raise ValueError(f"need as many replies as answers, at least one; got {len(replies)} and {len(answers)}.")
    parsed = [parse_reply(r, fmt) for r in replies]
    return {"format": sum(p is not None for p in parsed) / len(parsed),
            "correct": sum(p is not None and p.lower() == a.lower() for p, a in zip(parsed, answers)) / len(parsed),
            "mentions": sum(re.search(rf"\b{re.escape(a)}\b", r, re.IGNORECASE) is not None for r, a in zip(replies, answers)) / len(replies)}


def encode(tokenizer, examples: list[dict], fmt: str = "json") -> dict[str, torch.Tensor]:
    """A right-padded training batch; ``labels`` are -100 on the prompt and the padding (no loss there)."""
    eos = tokenizer.eos_token_id
    rows = []
    for ex in examples:
        prompt = tokenizer(chat_prompt(ex["question"]), add_special_tokens=False)["input_ids"]
        target = tokenizer(reply(ex["answer"], fmt), add_special_tokens=False)["input_ids"] + [eos]
        rows.append((prompt + target, [-100] * len(prompt) + target))
    width = max(len(ids) for ids, _ in rows)
    pad = lambda seq, value: seq + [value] * (width - len(seq))  # noqa: E731
    return {"input_ids": torch.tensor([pad(ids, eos) for ids, _ in rows]),
            "attention_mask": torch.tensor([pad([1] * len(ids), 0) for ids, _ in rows]),
            "labels": torch.tensor([pad(labels, -100) for _, labels in rows])}


@torch.no_grad()
def generate(model, tokenizer, questions: list[str], max_new_tokens: int = 10) -> list[str]:
    """Greedy replies (deterministic), one batch, left-padded; special tokens dropped."""
    tokenizer.padding_side = "left"
    batch = tokenizer([chat_prompt(q) for q in questions], return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in out[:, batch["input_ids"].shape[1]:]]


@torch.no_grad()
def perplexity(model, tokenizer, text: str) -> float:
    """exp(mean next-token cross-entropy) of ``text``: how surprised the model is by ordinary prose."""
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    return math.exp(model(input_ids=ids, labels=ids).loss.item())


def train(model, tokenizer, examples: list[dict], steps: int, lr: float, batch_size: int = 4, fmt: str = "json",
          seed: int = 0, desc: str | None = None) -> list[float]:
    """AdamW on the model's trainable parameters; returns the loss of every step.

    Batches are drawn without replacement in an order fixed by ``seed`` (a new permutation each
    pass), so a run is reproducible. A tqdm progress bar is shown when ``desc`` is given.
    """
    from tqdm.auto import tqdm

    if steps < 1 or batch_size < 1 or not examples:
        raise ValueError(f"need steps >= 1, batch_size >= 1 and examples; got steps={steps}, batch_size={batch_size}, "
                         f"{len(examples)} examples.")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters: add LoRA (le.add_lora) or unfreeze some weights first.")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc=desc, leave=True) if desc else range(steps):
        if len(order) < batch_size:
            order += torch.randperm(len(examples), generator=gen).tolist()
        picked, order = order[:batch_size], order[batch_size:]
        loss = model(**encode(tokenizer, [examples[i] for i in picked], fmt)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses
