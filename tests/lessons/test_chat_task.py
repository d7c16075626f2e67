"""lora_edu.lessons.chat_task: the course's data set, the taught formats, their scores, and the batches."""
import pytest
import torch

from lora_edu.lessons import chat_task


def test_data_set_is_split_and_held_out():
    task = chat_task.load_task()
    assert len(task["train"]) == 40 and len(task["test"]) == 12
    train_q = {ex["question"] for ex in task["train"]}
    assert not train_q & {ex["question"] for ex in task["test"]}, "a held-out question is in the training set"
    assert all(" " not in ex["answer"] for ex in task["train"] + task["test"]), "answers are one word"
    assert len(task["general_text"].split()) > 100


@pytest.mark.parametrize("fmt", chat_task.FORMATS)
def test_reply_and_parse_round_trip(fmt):
    assert chat_task.parse_reply(chat_task.reply("Paris", fmt), fmt) == "Paris"


def test_parse_refuses_other_formats():
    assert chat_task.parse_reply("The capital is Paris.", "json") is None
    assert chat_task.parse_reply('{"answer": "{"answer', "json") is None
    assert chat_task.parse_reply('{"reply": "Paris"}', "json") is None
    assert chat_task.parse_reply("The capital is Paris.", "xml") is None
    assert chat_task.parse_reply("<answer>Paris</answer><answer>", "xml") is None


def test_score():
    got = chat_task.score(['{"answer": "paris"}', '{"answer": "Lyon"}', "Paris"], ["Paris", "Paris", "Paris"])
    assert got == {"format": 2 / 3, "correct": 1 / 3, "mentions": 2 / 3}
    assert chat_task.score(["Parisian food", "It is Paris."], ["Paris", "Paris"])["mentions"] == 1 / 2


def test_bad_input():
    with pytest.raises(ValueError, match="fmt must be one of"):
        chat_task.reply("Paris", "yaml")
    with pytest.raises(ValueError, match="as many replies as answers"):
        chat_task.score(["x"], [])
    with pytest.raises(ValueError, match="no trainable parameters"):
        chat_task.train(torch.nn.Linear(2, 2).requires_grad_(False), None, [{"question": "q", "answer": "a"}], steps=1, lr=0.1)
    with pytest.raises(ValueError, match="steps >= 1"):
        chat_task.train(torch.nn.Linear(2, 2), None, [{"question": "q", "answer": "a"}], steps=0, lr=0.1)


class _Tokenizer:
    """Characters as token ids: enough to check padding and masking."""
    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_encode_masks_the_prompt_and_padding():
    batch = chat_task.encode(_Tokenizer(), [{"question": "a", "answer": "b"}, {"question": "abc", "answer": "b"}], fmt="json")
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
    assert (len(fit), len(val)) == (32, 8) and val == train[4::5]
    assert not {ex["question"] for ex in fit} & {ex["question"] for ex in val}
    with pytest.raises(ValueError, match="every >= 2"):
        chat_task.validation_split(train[:3])


def test_the_sweep_file_chose_each_methods_best_on_validation():
    sweep = chat_task.load_sweep()
    for method, lr in sweep["chosen"].items():
        rows = [r for r in sweep["results"] if r["method"] == method]
        best = min(rows, key=lambda r: (-r["correct"], r["val_loss"]))
        assert best["lr"] == lr and len(rows) >= 3
    assert (sweep["n_train"], sweep["n_val"]) == (32, 8)
