"""lora_edu.lessons.chat_task: the data and its rules, the taught format, its scores, the batches and the sweep's record."""
import hashlib
import inspect
import json

import pytest
import torch

from lora_edu.lessons import chat_task


def test_the_data_file_is_written_for_the_course_and_well_formed():
    data = chat_task.load_data()
    assert data["licence"] == "MIT" and "Written for the course" in data["about"]
    questions = [q["question"] for q in data["questions"]]
    assert len(questions) == 740 and len({q.lower() for q in questions}) == 740   # no question twice, in any case
    sets = [chat_task.question_set(q) for q in data["questions"]]
    assert sets == sorted(sets) and sets.count(1) == 312 and sets.count(2) == 428   # set 1 first, as the base replies are stored
    for q in data["questions"]:
        assert set(q) in ({"question", "answers", "topic"}, {"question", "answers", "topic", "set"})
        assert q["answers"] and all(a.strip() == a and a for a in q["answers"])
        assert not chat_task.is_right(q["question"], q["answers"]), f"the answer is in the question: {q['question']}"
    assert len(data["general_text"].split()) > 100


def test_the_halves_are_decided_by_the_hash_alone():
    q = "What is the capital of France?"
    assert chat_task.held_out_half(q) == (int(hashlib.sha256(q.encode()).hexdigest(), 16) % 2 == 1)
    halves = [chat_task.held_out_half(q["question"]) for q in chat_task.load_data()["questions"]]
    assert 0.4 < sum(halves) / len(halves) < 0.6


def test_the_task_follows_its_declared_rules():
    task, base = chat_task.load_task(), chat_task.load_base_replies()
    assert base["prose_tokens"] == chat_task.PROSE_TOKENS and base["opening"] == chat_task.OPENING
    questions = chat_task.load_data()["questions"]
    role = {q["question"]: chat_task.ROLES[chat_task.question_set(q), chat_task.held_out_half(q["question"])] for q in questions}
    # Rule 1: set 1's even half trains, set 2's odd half is held out, the other two halves validate.
    for name, part in (("train", "train"), ("validation", "validation"), ("held_out", "held_out")):
        assert all(role[ex["question"]] == part for ex in task[name]), name
    in_format = lambda q: chat_task.is_right(chat_task.field_of(base["replies"][q["question"]]["in_format"]), q["answers"])  # noqa: E731
    in_prose = lambda q: chat_task.is_right(base["replies"][q["question"]]["prose"], q["answers"])  # noqa: E731
    for ex in task["train"] + task["validation"] + task["held_out"]:   # the taught reply (the format's opening) is right
        assert ex["base_field"] == chat_task.field_of(base["replies"][ex["question"]]["in_format"]) and in_format(ex)
    # Rule 2: training keeps every question of its half whose taught reply is right; validation and held out need both ways.
    hashed = lambda qs: sorted((q["question"] for q in qs), key=chat_task.question_hash)  # noqa: E731
    assert [ex["question"] for ex in task["train"]] == hashed(q for q in questions if role[q["question"]] == "train" and in_format(q))
    assert [ex["question"] for ex in task["validation"]] == hashed(
        q for q in questions if role[q["question"]] == "validation" and in_format(q) and in_prose(q))
    known = hashed(q for q in questions if role[q["question"]] == "held_out" and in_format(q) and in_prose(q))
    # Rule 3: the first HELD_OUT_SIZE known held-out questions in hash order; at least 40 (issue 27).
    assert [ex["question"] for ex in task["held_out"]] == known[:chat_task.HELD_OUT_SIZE] and len(task["held_out"]) >= 40
    assert task["counts"]["held_out_half_right_both_ways"] == len(known)
    assert task["counts"]["train_half"] == len(task["train"]) + task["counts"]["train_half_wrong_in_format"]
    # Set 1's training questions are the ones every earlier record trained on (chat_task_recipe.json, chat_task_cv.json).
    assert len(task["train"]) == 67


def test_is_right_matches_whole_words_only():
    assert chat_task.is_right("The capital of Italy is Rome.", ["Rome"])
    assert chat_task.is_right("It is rome", ["Rome"])
    assert not chat_task.is_right("Romeo and Juliet", ["Rome"])
    assert chat_task.is_right("The capital of India is New Delhi", ["New Delhi", "Delhi"])
    assert chat_task.is_right("about 4 legs", ["4", "four"]) and not chat_task.is_right("24 hours", ["4", "four"])
    with pytest.raises(ValueError, match="at least one accepted answer"):
        chat_task.is_right("x", [])


def test_field_of_is_the_first_clause():
    assert chat_task.field_of('The capital of Japan is Tokyo.", "description":') == "The capital of Japan is Tokyo"
    assert chat_task.field_of('Italian"}') == "Italian"
    assert chat_task.field_of("A cat has four legs, which is") == "A cat has four legs"
    assert chat_task.field_of("no end in sight ") == "no end in sight"


def test_reply_and_parse_round_trip():
    for answer in ("Paris", 'The "Big" Apple', "Brasília"):
        assert chat_task.parse_reply(chat_task.reply(answer)) == answer
    assert chat_task.reply("Paris").startswith(chat_task.OPENING)
    ex = chat_task.load_task()["train"][0]
    assert chat_task.parse_reply(chat_task.taught_reply(ex)) == ex["base_field"]


def test_parse_refuses_other_formats():
    assert chat_task.parse_reply("The capital is Paris.") is None
    assert chat_task.parse_reply('{"answer": "{"answer') is None
    assert chat_task.parse_reply('{"reply": "Paris"}') is None
    assert chat_task.parse_reply('{"answer": 4}') is None
    assert chat_task.parse_reply('{"answer": "Paris", "extra": 1}') is None


def test_score():
    examples = [{"answers": ["Paris"]}] * 3
    got = chat_task.score(['{"answer": "paris"}', '{"answer": "Lyon, not Paris"}', "Paris"], examples)
    assert got == {"format": 2 / 3, "right_in_format": 2 / 3, "right_anywhere": 1.0}
    assert chat_task.score(['{"answer": "Lyon"}'], examples[:1]) == {"format": 1.0, "right_in_format": 0.0, "right_anywhere": 0.0}
    with pytest.raises(ValueError, match="one reply per example"):
        chat_task.score(["x"], [])


def test_bad_input():
    class Rows(chat_task.CachedBatch):
        def __init__(self):   # no model needed: train checks its arguments first
            self.hidden = torch.zeros(2, 3, 4)

    with pytest.raises(ValueError, match="no trainable parameters"):
        chat_task.train(torch.nn.Linear(2, 2).requires_grad_(False), Rows(), steps=1, lr=0.1)
    with pytest.raises(ValueError, match="steps >= 1"):
        chat_task.train(torch.nn.Linear(2, 2), Rows(), steps=0, lr=0.1)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no module name matches"):
        chat_task.unfreeze_targets(model, r"model\.layers\.0\.q_proj")
    assert all(p.requires_grad for p in model.parameters()), "a bad regex froze the model"


class _Tokenizer:
    """Characters as token ids: enough to check padding and masking."""
    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_encode_masks_the_prompt_and_padding():
    examples = [{"question": "a", "base_field": "b"}, {"question": "abc", "base_field": "b"}]
    batch = chat_task.encode(_Tokenizer(), examples)
    prompt_short, prompt_long = (len(chat_task.chat_prompt(q)) for q in ("a", "abc"))
    target = [ord(c) for c in '{"answer": "b"}'] + [0]
    n = len(target)
    assert batch["labels"][0, prompt_short:prompt_short + n].tolist() == target
    assert (batch["labels"][0, :prompt_short] == -100).all() and (batch["labels"][0, prompt_short + n:] == -100).all()
    assert batch["attention_mask"][0].sum() == prompt_short + n and batch["attention_mask"][1].all()
    assert batch["labels"][1, prompt_long:].tolist() == target


def test_validation_split_keeps_the_held_out_set_apart():
    train = chat_task.load_task()["train"]
    fit, val = chat_task.validation_split(train)
    assert len(val) == len(train) // 3 and val == train[2::3]
    assert not {ex["question"] for ex in fit} & {ex["question"] for ex in val}
    with pytest.raises(ValueError, match="every >= 2"):
        chat_task.validation_split(train[:2])


def test_a_cached_batch_computes_the_uncached_loss_on_smollm2():
    """The notebook's trick on the real model: the training set cached in chunks, a step's loss and gradients as without it."""
    from lora_edu.core import layer_cache, smollm2

    model, tokenizer = smollm2.load()
    batch = chat_task.encode(tokenizer, chat_task.load_task()["train"][:12])
    data = chat_task.CachedBatch(model, chat_task.RECIPE["top_layers"], batch, chunk=5)
    lora = chat_task.prepare(model, "LoRA", seed=0)
    rows = torch.tensor([11, 0, 6, 3])
    cached = data.loss(lora, rows)
    cached.backward()
    grads = [p.grad.clone() for p in lora.parameters() if p.requires_grad]
    lora.zero_grad()
    width = int(batch["attention_mask"][rows].sum(1).max())
    plain = layer_cache.reply_loss(lora, batch["labels"][rows, :width], batch["attention_mask"][rows, :width],
                                   input_ids=batch["input_ids"][rows, :width])
    plain.backward()
    torch.testing.assert_close(cached, plain, rtol=0, atol=1e-6)
    for g, p in zip(grads, [p for p in lora.parameters() if p.requires_grad]):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-7)
    flags = [p.requires_grad for p in model.parameters()]
    full = chat_task.prepare(model, "full fine-tuning")
    trained = {n for n, p in full.named_parameters() if p.requires_grad}
    top = range(model.config.num_hidden_layers - chat_task.RECIPE["top_layers"], model.config.num_hidden_layers)
    assert len(trained) == 7 * len(top) and all(any(f".layers.{i}." in n for i in top) for n in trained)   # 7 matrices a layer
    adapted = {n.removesuffix("lora_A") + "weight" for n, _ in lora.named_parameters() if n.endswith("lora_A")}
    assert adapted == trained, "LoRA adapts other matrices than full fine-tuning trains"
    assert [p.requires_grad for p in model.parameters()] == flags, "prepare changed the base model"


def test_prepare_copies_only_the_adapted_weights_and_leaves_the_base_model_as_it_was():
    """prepare shares every weight it does not adapt with the base model; training, merging and .to() on the copy
    must still leave the base model's values and flags unchanged."""
    import re

    from lora_edu.core import smollm2
    from lora_edu.core.lora import merge_lora

    model, tokenizer = smollm2.load()
    values = {n: p.detach().clone() for n, p in model.named_parameters()}
    flags = [p.requires_grad for p in model.parameters()]
    data = chat_task.CachedBatch(model, chat_task.RECIPE["top_layers"], chat_task.encode(tokenizer, chat_task.load_task()["train"][:8]))
    base_storage = {p.data_ptr() for p in model.parameters()}
    names = chat_task.targets(model.config.num_hidden_layers)
    adapted = {f"{n}.weight" for n, _ in model.named_modules() if re.fullmatch(names, n)}
    assert len(adapted) == 7 * chat_task.RECIPE["top_layers"]   # seven weight matrices a layer
    for method in chat_task.METHODS:
        prepared = chat_task.prepare(model, method, seed=0)
        own = {n.replace(".base.", ".") for n, p in prepared.named_parameters() if p.data_ptr() not in base_storage}
        lora = {n for n in own if ".lora_" in n}
        assert own - lora == adapted, f"{method} copied other weights than the adapted ones: {sorted(own ^ adapted)[:4]}"
        assert all(p.data_ptr() not in base_storage for p in prepared.parameters() if p.requires_grad)
        chat_task.train(prepared, data, steps=2, lr=1e-2, batch_size=4)   # full fine-tuning writes to the copied weights
        if method == "LoRA":
            merge_lora(prepared)   # writes B·A into the copied weights
        prepared.to(torch.float64)
    assert all(torch.equal(values[n], p) for n, p in model.named_parameters()), "a copy changed the base model's weights"
    assert [p.requires_grad for p in model.parameters()] == flags and next(model.parameters()).dtype == torch.float32


def test_generate_gives_the_tokens_of_transformers_generate_and_lets_ended_rows_go():
    """chat_task.generate drops a row when it ends; every row's tokens must stay those of model.generate on the batch."""
    from lora_edu.core import smollm2

    model, tokenizer = smollm2.load()
    questions = [ex["question"] for ex in chat_task.load_task()["held_out"][:6]] + ["What is the capital of France?"]
    widths = []
    hook = model.model.embed_tokens.register_forward_pre_hook(lambda module, args: widths.append(args[0].shape[0]))
    for tokens, begin, strip in ((chat_task.PROSE_TOKENS, "", True), (chat_task.FORMAT_TOKENS, chat_task.OPENING, False),
                                 (1, "", True)):
        tokenizer.padding_side = "left"
        batch = tokenizer([chat_task.chat_prompt(q) + begin for q in questions], return_tensors="pt", padding=True,
                          add_special_tokens=False)
        out = model.generate(**batch, max_new_tokens=tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        new = out[:, batch["input_ids"].shape[1]:]
        expected = [tokenizer.decode(row, skip_special_tokens=True) for row in new]
        widths.clear()
        assert chat_task.generate(model, tokenizer, questions, max_new_tokens=tokens, begin=begin, strip=strip) == \
            ([t.strip() for t in expected] if strip else expected)
        ended = (new == tokenizer.eos_token_id).any(1)
        if tokens > 1:
            assert ended.any() and not ended.all(), "the check needs rows that end early and rows that do not"
            assert widths[0] == len(questions) and min(widths) < len(questions), f"the batch did not shrink: {widths}"
    hook.remove()
    for bad in ([], ["What is 2 + 2?"]):
        with pytest.raises(ValueError, match="at least one question and max_new_tokens >= 1"):
            chat_task.generate(model, tokenizer, bad, max_new_tokens=0 if bad else 4)


def test_choose_prefers_right_in_format_then_the_lower_loss():
    runs = [{"lr": 1, "val_loss": 0.3, "val_right_in_format": 0.8}, {"lr": 2, "val_loss": 0.4, "val_right_in_format": 0.9},
            {"lr": 3, "val_loss": 0.2, "val_right_in_format": 0.9}, {"lr": 3, "val_loss": 0.6, "val_right_in_format": 0.9}]
    assert chat_task.choose(runs) == 2   # lr 3 ties on the share, its mean loss (0.4) does not beat lr 2's (0.4): the first kept
    assert chat_task.choose(runs[:3]) == 3
    with pytest.raises(ValueError, match="no validation runs"):
        chat_task.choose([])


def test_the_sweep_chose_each_methods_learning_rate_by_validation():
    sweep = chat_task.load_sweep()
    for method, lr in sweep["chosen"].items():
        rows = [r for r in sweep["validation"] if r["method"] == method]
        assert len({r["lr"] for r in rows}) >= 3 and {r["seed"] for r in rows} == set(sweep["validation_seeds"])
        assert chat_task.choose(rows) == lr
        grid = {r["lr"] for r in rows}
        assert min(grid) < lr < max(grid), f"{method}'s chosen rate is at the edge of its grid"
    for method in sweep["chosen"]:
        held = [r for r in sweep["held_out"] if r["method"] == method]
        assert len({r["seed"] for r in held}) >= 3 and all(r["lr"] == sweep["chosen"][method] for r in held)
    json.dumps(sweep)


def test_no_taught_reply_is_cut_off_by_the_reply_length():
    """REPLY_TOKENS bounds every reply in the taught format (opening, answer field, closing, end marker)."""
    from transformers import AutoTokenizer

    from lora_edu.core import smollm2

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2.model_dir()))
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    assert chat_task.REPLY_TOKENS == count(chat_task.OPENING) + chat_task.FORMAT_TOKENS + count('"}') + 1
    task = chat_task.load_task()
    longest = max(count(chat_task.taught_reply(ex)) + 1 for ex in task["train"] + task["held_out"])
    assert longest <= chat_task.REPLY_TOKENS
    assert inspect.signature(chat_task.generate).parameters["max_new_tokens"].default == chat_task.REPLY_TOKENS
