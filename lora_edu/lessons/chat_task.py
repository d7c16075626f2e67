"""Notebook 07's task: teach a chat model to answer in a set format what it already knows, and measure it.

The data (``lora_edu/data/chat_task.json``, written for the course, MIT) is a pool of short questions,
each with every accepted wording of its answer, in two sets: set 1, the first 312, and set 2, 428 more
written after held-out scores on set 1 had been seen while the recipe was being chosen (:func:`question_set`).
What trains, what validates and what is held out is decided by rules, never by hand, and never by looking at a
trained model:

1. **Roles.** A question's half is decided by the sha256 of its text (:func:`held_out_half`: odd or even), an
   even split that depends on nothing else. Set 1's even half trains. Set 2's odd half is held out: trained models
   first answered it after a first choice of the learning rate, which the grid's later extension kept
   (``benchmarks/sweep_07_lr.py``). The other two halves (set 1's odd half, the
   held-out questions of set 1, and set 2's even half) validate: the recipe's choices are made on them.
2. **Knowledge the model has.** ``benchmarks/build_07_task.py`` asked the base model every question
   once, in its own words (greedy, :data:`PROSE_TOKENS` new tokens), and stored the replies in
   ``chat_task_base.json``. A held-out or validation question must be answered right (:func:`is_right`) both ways,
   in its own words and when its reply is begun in the format; a training question must be answered right when
   begun in the format, since that answer is its taught reply (:func:`taught_reply`): the task isolates the
   *format*, a behaviour the base model lacks, on facts it has.
3. **Size.** The held-out set is the first :data:`HELD_OUT_SIZE` such questions in the order of their
   hashes (a fixed, arbitrary order): enough questions for a score, few enough for the notebook's time budget.

The taught reply is a JSON object, ``{"answer": "Paris"}``, a format a program can read. Prompts
use the model's chat markers without a system turn (its template would add a 20-token default system
prompt to every example). Training sequences are right-padded and only the reply's tokens carry a loss;
generation pads on the left, as decoder-only generation needs. Training runs on cached hidden states of
the frozen lower layers (:mod:`lora_edu.core.layer_cache`).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from functools import cache
from importlib.resources import files

import torch

from lora_edu.core import layer_cache

#: New tokens in the base model's replies when the rules measure what it knows (prose, and begun in the format).
PROSE_TOKENS = 16
#: How every reply in the taught format begins: a JSON object with one field, "answer".
OPENING = '{"answer": "'
#: New tokens the base model wrote after :data:`OPENING` when rule 2 was measured (``benchmarks/build_07_task.py``).
FORMAT_TOKENS = 24
#: New tokens for a whole reply in the taught format: the opening (4 tokens), at most FORMAT_TOKENS of answer, the
#: closing ``"}`` (1 token) and the end marker (1), so that no taught reply can be cut off (the longest is 29 with its end marker).
REPLY_TOKENS = 4 + FORMAT_TOKENS + 1 + 1
#: How many held-out questions the notebook scores, at most.
HELD_OUT_SIZE = 48
#: Rule 1: a question's role, by its set (:func:`question_set`) and whether its hash is odd (:func:`held_out_half`).
ROLES = {(1, False): "train", (1, True): "validation", (2, False): "validation", (2, True): "held_out"}
#: The notebook's recipe, read by benchmarks/sweep_07_lr.py and the tests from here: LoRA of rank ``r`` and scale
#: ``alpha``/r on the ``modules`` of the last ``top_layers`` layers, ``steps`` AdamW steps of ``batch_size`` examples.
RECIPE = {"top_layers": 2, "modules": r"(self_attn|mlp)\.\w+_proj", "r": 8, "alpha": 16, "steps": 60, "batch_size": 8}
METHODS = ("LoRA", "full fine-tuning")


def _data_file(name: str) -> dict:
    return json.loads(files("lora_edu.data").joinpath(name).read_text(encoding="utf-8"))


@cache
def load_data() -> dict:
    """The data file as written: ``{"about", "licence", "questions": [{"question", "answers", "topic"}], "general_text"}``."""
    return _data_file("chat_task.json")


def load_base_replies() -> dict:
    """``benchmarks/build_07_task.py``'s record: how the base model answered every question in prose (``replies``)."""
    return _data_file("chat_task_base.json")


def load_sweep() -> dict:
    """``benchmarks/sweep_07_lr.py``'s record: learning rates chosen on the validation questions (chat_task.choose), and the learn/forget seeds."""
    return _data_file("chat_task_sweep.json")


def load_recipe_runs() -> dict:
    """``benchmarks/explore_07_recipe.py``'s record: LoRA variants (top layers, steps, rate) scored on the validation split."""
    return _data_file("chat_task_recipe.json")


def load_cache_timing() -> dict:
    """``benchmarks/bench_07_cache.py``'s record: a cached training step against an uncached one, timed."""
    return _data_file("chat_task_cache_timing.json")


def question_hash(question: str) -> str:
    return hashlib.sha256(question.encode("utf-8")).hexdigest()


def question_set(question: dict) -> int:
    """Which set of the data file ``question`` belongs to: 1, the first 312 questions (every question without a
    ``set`` field), or 2, the 428 written after held-out scores on set 1 had been seen (``"set": 2``)."""
    return question.get("set", 1)


def held_out_half(question: str) -> bool:
    """Rule 1's split: whether the sha256 of ``question``'s text (UTF-8) is an odd number (the half that is held out
    in set 2, and that validates in set 1; notebook 10 holds out its odd messages)."""
    return int(question_hash(question), 16) % 2 == 1


def first_match(text: str, answers: list[str]):
    """The earliest whole-word occurrence of an accepted answer in ``text`` (a ``re.Match``), or None."""
    found = [m for a in answers if (m := re.search(rf"(?<!\w){re.escape(a)}(?!\w)", text, re.IGNORECASE))]
    return min(found, key=lambda m: m.start(), default=None)


def is_right(text: str, answers: list[str]) -> bool:
    """Whether ``text`` contains one of the accepted ``answers`` as a whole word (or words), ignoring case."""
    if not answers:
        raise ValueError("need at least one accepted answer.")
    return first_match(text, answers) is not None


def field_of(continuation: str) -> str:
    """The answer the base model wrote when its reply was begun with :data:`OPENING`: its first clause,
    the text before the first ``" , . ; ! ?`` or new line (where it closed the string, or its first statement ended)."""
    end = re.search(r'[",.;!?\n]', continuation)
    return (continuation[:end.start()] if end else continuation).strip()


def load_task() -> dict:
    """``{"train", "validation", "held_out", "general_text", "counts"}`` built by the three rules of this module's docstring.

    Each example is a question of the data file (``question``, ``answers``, ``topic``, and ``set`` in set 2) plus how
    the base model answered it: ``base_reply`` (in its own words) and ``base_field`` (the answer field it wrote when
    its reply was begun in the format), which is also the reply it is taught (:func:`taught_reply`). Each list is in
    hash order. ``train`` holds set 1's even half where the taught reply is right (its ``base_field`` holds an accepted
    answer): the taught-reply condition of rule 2 without its prose condition, which exists to make the held-out
    comparison with the base model's own words fair and says nothing about what a reply teaches.
    """
    base = load_base_replies()
    questions = load_data()["questions"]
    if (base["prose_tokens"], base["format_tokens"], base["opening"], base["n_questions"]) != (PROSE_TOKENS, FORMAT_TOKENS, OPENING, len(questions)):
        raise RuntimeError("chat_task_base.json is out of date with the data, PROSE_TOKENS or OPENING: "
                           "run `python benchmarks/build_07_task.py` to rebuild it.")
    examples = [dict(q, base_reply=base["replies"][q["question"]]["prose"],
                     base_field=field_of(base["replies"][q["question"]]["in_format"])) for q in questions]
    in_format = lambda ex: is_right(ex["base_field"], ex["answers"])  # noqa: E731
    in_prose = lambda ex: is_right(ex["base_reply"], ex["answers"])  # noqa: E731
    role = lambda ex: ROLES[question_set(ex), held_out_half(ex["question"])]  # noqa: E731
    ordered = lambda exs: sorted(exs, key=lambda ex: question_hash(ex["question"]))  # noqa: E731
    held = [ex for ex in examples if role(ex) == "held_out"]
    return {"train": ordered(ex for ex in examples if role(ex) == "train" and in_format(ex)),
            "validation": ordered(ex for ex in examples if role(ex) == "validation" and in_format(ex) and in_prose(ex)),
            "held_out": ordered(ex for ex in held if in_format(ex) and in_prose(ex))[:HELD_OUT_SIZE],
            "general_text": load_data()["general_text"],
            "counts": {"questions": len(questions), "set_2": sum(question_set(q) == 2 for q in questions),
                       "held_out_half": len(held), "held_out_half_right_in_prose": sum(map(in_prose, held)),
                       "held_out_half_right_both_ways": sum(in_prose(ex) and in_format(ex) for ex in held),
                       "train_half": sum(role(ex) == "train" for ex in examples),
                       "train_half_wrong_in_format": sum(role(ex) == "train" and not in_format(ex) for ex in examples)}}


def validation_split(examples: list[dict], every: int = 3) -> tuple[list[dict], list[dict]]:
    """``(train, validation)``: every ``every``-th example (the 3rd, 6th, …) is set aside for validation.

    The split of the first recipe search (``benchmarks/explore_07_recipe.py``: 22 of the 67 training questions set
    aside), before set 2 gave the task a validation set of its own (``load_task()["validation"]``, rule 1).
    """
    if every < 2 or len(examples) < every:
        raise ValueError(f"need every >= 2 and at least `every` examples; got every={every}, {len(examples)} examples.")
    return ([ex for i, ex in enumerate(examples) if (i + 1) % every],
            [ex for i, ex in enumerate(examples) if (i + 1) % every == 0])


def choose(runs: list[dict], key: str = "lr", share: str = "val_right_in_format"):
    """The setting (``run[key]``) that validation prefers: the highest share of validation replies right in the format
    (``share``, what the held-out line reports), ties broken by the lower validation loss (``val_loss``),
    each averaged over the runs (seeds) of a setting. A share moves in steps of one reply, so ties happen."""
    if not runs:
        raise ValueError("no validation runs to choose from: run the sweep first.")
    groups: dict[str, list[dict]] = {}   # a setting's runs, keyed by its JSON (settings may be dicts), first seen first
    for r in runs:
        groups.setdefault(json.dumps(r[key], sort_keys=True), []).append(r)
    mean = lambda rs, field: sum(r[field] for r in rs) / len(rs)  # noqa: E731
    return min(groups.values(), key=lambda rs: (-round(mean(rs, share), 6), mean(rs, "val_loss")))[0][key]


def chat_prompt(question: str) -> str:
    """The model's chat format for one user turn, ending where the assistant's reply starts."""
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def reply(answer: str) -> str:
    """A reply in the taught format: ``{"answer": "Paris"}`` (it begins with :data:`OPENING`)."""
    return json.dumps({"answer": answer}, ensure_ascii=False)


def taught_reply(example: dict) -> str:
    """What the model is taught to write for ``example``: its own answer field (``base_field``), in the format."""
    return reply(example["base_field"])


def parse_reply(text: str) -> str | None:
    """The answer inside a reply in the taught format, or None if the reply does not follow it."""
    try:
        value = json.loads(text.strip())
    except ValueError:
        return None
    return value["answer"] if isinstance(value, dict) and set(value) == {"answer"} and isinstance(value["answer"], str) else None


def score(replies: list[str], examples: list[dict]) -> dict[str, float]:
    """Shares of replies: in the taught format (``format``), in it and right (``right_in_format``: the answer field
    holds an accepted answer), and right anywhere, whatever the wording (``right_anywhere``)."""
    if len(replies) != len(examples) or not replies:
        raise ValueError(f"need one reply per example, at least one; got {len(replies)} replies and {len(examples)} examples.")
    parsed = [parse_reply(r) for r in replies]
    n = len(replies)
    return {"format": sum(p is not None for p in parsed) / n,
            "right_in_format": sum(p is not None and is_right(p, ex["answers"]) for p, ex in zip(parsed, examples)) / n,
            "right_anywhere": sum(is_right(r, ex["answers"]) for r, ex in zip(replies, examples)) / n}


def encode(tokenizer, examples: list[dict]) -> dict[str, torch.Tensor]:
    """A right-padded training batch; ``labels`` are -100 on the prompt and the padding (no loss there).

    The target is :func:`taught_reply`, ended by the end-of-turn marker, so the model learns to stop.
    """
    return _reply_batch(tokenizer, [(chat_prompt(ex["question"]), taught_reply(ex)) for ex in examples])


def _reply_batch(tokenizer, pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """(prompt, reply) pairs as one right-padded batch: each reply ends with the end marker, and only the replies
    carry labels (``layer_cache.IGNORE`` on the prompts and the padding)."""
    eos = tokenizer.eos_token_id
    rows = []
    for prompt_text, reply in pairs:
        prompt = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        target = tokenizer(reply, add_special_tokens=False)["input_ids"] + [eos]
        rows.append((prompt + target, [layer_cache.IGNORE] * len(prompt) + target))
    width = max(len(ids) for ids, _ in rows)
    pad = lambda seq, value: seq + [value] * (width - len(seq))  # noqa: E731
    return {"input_ids": torch.tensor([pad(ids, eos) for ids, _ in rows]),
            "attention_mask": torch.tensor([pad([1] * len(ids), 0) for ids, _ in rows]),
            "labels": torch.tensor([pad(labels, layer_cache.IGNORE) for _, labels in rows])}


@torch.no_grad()
def generate(model, tokenizer, questions: list[str], max_new_tokens: int = REPLY_TOKENS, begin: str = "",
             strip: bool = True) -> list[str]:
    """Greedy replies (deterministic), one batch, left-padded; special tokens dropped.

    ``begin``: text the reply is begun with (given, not generated); only the continuation is returned.

    Why not ``model.generate(do_sample=False)``: it computes every row until the last one ends, and most replies end
    in half the tokens allowed. Here a row leaves the batch (and the cache) when it ends. Every row's tokens are those
    ``generate`` gives on the same batch, up to the rounding of the smaller batches that follow: none flipped in the
    test, in the 1,480 stored base replies (``benchmarks/build_07_task.py`` rewrote them byte for byte) or in
    ``benchmarks/sweep_07_lr.py``'s 24 trained models (every score in ``chat_task_sweep.json`` came out the same).
    """
    from transformers import DynamicCache

    if not questions or max_new_tokens < 1:
        raise ValueError(f"need at least one question and max_new_tokens >= 1; got {len(questions)} questions and "
                         f"max_new_tokens={max_new_tokens}.")
    tokenizer.padding_side = "left"
    batch = tokenizer([chat_prompt(q) + begin for q in questions], return_tensors="pt", padding=True, add_special_tokens=False)
    eos, n = tokenizer.eos_token_id, len(questions)
    new = torch.full((n, max_new_tokens), eos)   # an ended row's later tokens: the end marker, as generate pads
    rows, mask, step_ids, cache = torch.arange(n), batch["attention_mask"], batch["input_ids"], DynamicCache(config=model.config)
    for t in range(max_new_tokens):
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)[:, -step_ids.shape[1]:]   # as generate numbers them
        logits = model(input_ids=step_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                       use_cache=True, logits_to_keep=1).logits
        token = logits[:, -1].float().argmax(-1)
        new[rows, t] = token
        going = (token != eos).nonzero().squeeze(1)
        if len(going) == 0:
            break
        if len(going) < len(rows):   # ended rows leave the batch, and the cache
            cache.batch_select_indices(going)
            rows, mask, token = rows[going], mask[going], token[going]
        mask, step_ids = torch.cat([mask, mask.new_ones(len(rows), 1)], 1), token[:, None]
    texts = [tokenizer.decode(row, skip_special_tokens=True) for row in new]
    return [t.strip() for t in texts] if strip else texts


class CachedBatch:
    """A fixed set of training rows with the hidden states entering the top ``k`` layers, computed once.

    ``loss(rows)`` runs only the top ``k`` layers and the head for those rows: the training step of
    :func:`train`. Any model whose layers below the top ``k`` equal ``model``'s can use the same cache
    (LoRA or full fine-tuning of the top ``k`` layers, of a copy of ``model``). The lower layers run on
    rows of similar length together, ``chunk`` at a time, so that little of their work goes into padding.
    """

    def __init__(self, model, k: int, batch: dict[str, torch.Tensor], chunk: int = 8):
        self.k, self.batch = k, batch
        lengths = batch["attention_mask"].sum(1)
        order = torch.argsort(lengths, stable=True)
        self.hidden = None
        for start in range(0, len(order), chunk):
            rows = order[start:start + chunk]
            width = int(lengths[rows].max())
            part = layer_cache.lower_outputs(model, k, batch["input_ids"][rows, :width], batch["attention_mask"][rows, :width])
            if self.hidden is None:
                self.hidden = part.new_zeros(len(order), batch["input_ids"].shape[1], part.shape[-1])
            self.hidden[rows, :width] = part

    def __len__(self) -> int:
        return len(self.hidden)

    def loss(self, model, rows=slice(None)) -> torch.Tensor:
        return layer_cache.reply_loss(model, self.batch["labels"][rows], self.batch["attention_mask"][rows],
                                      hidden=self.hidden[rows], k=self.k)

    def final_states(self, model, rows=slice(None)) -> torch.Tensor:
        """The decoder's last hidden states of the rows, through the top ``k`` layers from the cache."""
        return layer_cache.final_states(model, self.batch["attention_mask"][rows], hidden=self.hidden[rows], k=self.k)


def train(model, data: CachedBatch, steps: int, lr: float, batch_size: int = 8, seed: int = 0,
          desc: str | None = None) -> list[float]:
    """AdamW on the model's trainable parameters, on cached hidden states; returns the loss of every step.

    The learning rate falls linearly from ``lr`` to zero over the steps (the default schedule of
    transformers' ``Trainer``): large steps while the format is being learnt, small ones at the end. Batches are
    drawn without replacement in an order fixed by ``seed`` (a new permutation each pass), so a run is reproducible.
    A tqdm progress bar is shown when ``desc`` is given.
    """
    from tqdm.auto import tqdm

    if steps < 1 or batch_size < 1 or len(data) < 1:
        raise ValueError(f"need steps >= 1, batch_size >= 1 and examples; got steps={steps}, batch_size={batch_size}, "
                         f"{len(data)} examples.")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters: add LoRA (le.add_lora) or unfreeze some weights first.")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    losses = []
    model.train()
    for _ in tqdm(range(steps), desc=desc, leave=True) if desc else range(steps):
        if len(order) < batch_size:
            order += torch.randperm(len(data), generator=gen).tolist()
        picked, order = order[:batch_size], order[batch_size:]
        loss = data.loss(model, torch.tensor(picked))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return losses


def targets(n_layers: int, recipe: dict = RECIPE) -> str:
    """The regex (over module names, as in PEFT) of the weight matrices the recipe adapts: its modules in the top layers."""
    top = "|".join(str(i) for i in range(n_layers - recipe["top_layers"], n_layers))
    return rf"model\.layers\.({top})\.{recipe['modules']}"


def target_weights(model, targets: str) -> list:
    """The weights of the modules whose names match the regex ``targets`` (the whole name, as PEFT matches a string):
    what :func:`prepare` copies and :func:`unfreeze_targets` trains."""
    return [module.weight for name, module in model.named_modules() if re.fullmatch(targets, name)]


def prepare(base, method: str, seed: int = 0, recipe: dict = RECIPE):
    """A copy of ``base`` ready to train by ``method``: ``"LoRA"`` (A drawn with ``seed``) or ``"full fine-tuning"``
    of the same weight matrices. ``base`` itself is never changed.

    Only the weight matrices the recipe adapts (or trains) are copied. Every other weight (the embedding, the lower
    layers, the norms: about 95 % of SmolLM2's) is shared with ``base``, as a frozen parameter of the copy's own, so a
    copy costs about 28 MB instead of 538 MB, and no time to fill them. Training, ``merge_lora`` and ``.to()`` to
    another dtype or device write only to the copy. What would reach ``base``: unfreezing a shared weight of the copy
    and training it, ``load_state_dict`` into the copy, an in-place write (``weight.data.mul_``); and an in-place
    change to ``base`` reaches every copy made before it.
    """
    import copy

    from torch import nn

    from lora_edu.core.lora import add_lora

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    names = targets(len(layer_cache.decoder_layers(base)), recipe)
    copied = {id(weight) for weight in target_weights(base, names)}
    shared = {id(p): nn.Parameter(p.detach(), requires_grad=False) for p in base.parameters() if id(p) not in copied}
    model = copy.deepcopy(base, memo=shared)
    torch.manual_seed(seed)
    if method == "LoRA":
        return add_lora(model, names, r=recipe["r"], alpha=recipe["alpha"])
    unfreeze_targets(model, names)
    return model


def unfreeze_targets(model, targets: str) -> int:
    """Full fine-tuning of exactly the weight matrices LoRA would adapt: those of the modules whose names match the
    regex ``targets`` train, everything else is frozen. Returns how many parameters train. A regex that matches no
    module raises before anything is frozen."""
    weights = target_weights(model, targets)
    if not weights:
        raise ValueError(f"no module name matches {targets!r}; names look like 'model.layers.29.mlp.up_proj'.")
    model.requires_grad_(False)
    for weight in weights:
        weight.requires_grad_(True)
    return sum(weight.numel() for weight in weights)


@torch.no_grad()
def perplexity(model, data: CachedBatch) -> float:
    """exp(mean next-token cross-entropy) over ``data``'s labelled tokens: how surprised the model is by them."""
    return math.exp(data.loss(model).item())


def prose_batch(tokenizer, text: str) -> dict[str, torch.Tensor]:
    """One row of plain text in which every token after the first carries a loss: for :func:`perplexity`."""
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
