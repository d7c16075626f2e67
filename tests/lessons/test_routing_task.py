"""lora_edu.lessons.routing_task: the messages and their split, the classifier's read-out, the baseline, the folds,
the step rule and its record, the PEFT adapter (moved from chat_task with notebook 07's routing deep dive), the cache
with the prompts' shared prefix computed once."""
import copy

import pytest
import torch

from lora_edu.core import layer_cache
from lora_edu.lessons import chat_task, routing_task


class _Tokenizer:
    """Characters as token ids: enough to check padding, masking and first tokens."""
    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_the_messages_are_written_for_the_course_and_split_by_the_hash():
    data = chat_task.load_data()["routing"]
    assert "Written for the course (MIT)" in data["about"] and chat_task.load_data()["licence"] == "MIT"
    routing = routing_task.load_routing()
    assert routing["labels"] == ["billing", "shipping", "technical", "account"]
    assert all(label in routing["instruction"] for label in routing["labels"])
    train, held = routing["train"], routing["held_out"]
    assert len(train) + len(held) == len(data["messages"]) == 64 and (len(train), len(held)) == (38, 26)
    assert all(chat_task.held_out_half(m["text"]) for m in held) and not any(chat_task.held_out_half(m["text"]) for m in train)
    texts = [m["text"] for m in data["messages"]]
    assert len(set(texts)) == len(texts) and all(m["label"] in routing["labels"] for m in data["messages"])
    assert train == [m for m in data["messages"] if m in train], "training messages keep the data file's order"


def test_encode_routing_labels_only_the_team_and_the_end_marker():
    batch = routing_task.encode_routing(_Tokenizer(), "Route:", [{"text": "a", "label": "billing"}, {"text": "abc", "label": "account"}])
    prompt = len(routing_task.routing_prompt("Route:", "a"))
    assert routing_task.routing_prompt("Route:", "a") == chat_task.chat_prompt("Route:\na")
    assert batch["labels"][0, prompt:prompt + 8].tolist() == [ord(c) for c in "billing"] + [0]
    assert (batch["labels"][0, :prompt] == -100).all()


def test_label_tokens_need_distinct_first_tokens():
    assert routing_task.label_tokens(_Tokenizer(), ["billing", "shipping"]).tolist() == [ord("b"), ord("s")]
    with pytest.raises(ValueError, match="start with the same token"):
        routing_task.label_tokens(_Tokenizer(), ["billing", "bank"])


def test_truth_confusion_and_the_constant_classifiers():
    routing = routing_task.load_routing()
    truth = routing_task.truth(routing, "held_out")
    assert [routing["labels"][i] for i in truth] == [m["label"] for m in routing["held_out"]]
    with pytest.raises(ValueError, match="'train' or 'held_out'"):
        routing_task.truth(routing, "test")
    counts = routing_task.confusion(torch.tensor([0, 1, 1, 3]), torch.tensor([0, 0, 1, 3]), 4)
    assert counts.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
    assert counts.sum() == 4 and counts.trace() == 3
    with pytest.raises(ValueError, match="same shape"):
        routing_task.confusion(torch.tensor([0]), torch.tensor([0, 1]), 4)
    shares = routing_task.constant_shares(["a", "b", "c"], ["a", "b", "b", "a"])
    assert shares == {"a": 0.5, "b": 0.5, "c": 0.0}
    floor = routing_task.constant_shares(routing["labels"], [m["label"] for m in routing["held_out"]])
    assert sum(floor.values()) == pytest.approx(1) and max(floor.values()) == max(
        [m["label"] for m in routing["held_out"]].count(label) for label in routing["labels"]) / len(routing["held_out"])
    with pytest.raises(ValueError, match="need the labels"):
        routing_task.constant_shares([], ["a"])


def test_folds_validate_every_row_once():
    splits = routing_task.folds(38)
    assert len(splits) == routing_task.N_FOLDS == 3
    validated = sorted(i for _, val in splits for i in val)
    assert validated == list(range(38))
    for fit, val in splits:
        assert not set(fit) & set(val) and len(fit) + len(val) == 38
    with pytest.raises(ValueError, match="2 <= k <= n"):
        routing_task.folds(2, k=3)


def test_choose_steps_takes_the_most_right_then_the_fewer_steps():
    assert routing_task.choose_steps({20: 0.5, 40: 0.6, 60: 0.6}) == 40
    assert routing_task.choose_steps({20: 0.7, 40: 0.6, 60: 0.6}) == 20
    assert routing_task.choose_steps({60: 0.8, 20: 0.8}) == 20


def test_the_stored_choice_follows_its_declared_rule():
    """benchmarks/explore_10_routing.py's record: three folds over the 38 training messages, each step count of
    STEP_CHOICES once per fold, and the step count choose_steps picks from the pooled counts."""
    record = routing_task.load_steps_choice()
    n = len(routing_task.load_routing()["train"])
    assert record["n_train"] == n and record["folds"] == routing_task.N_FOLDS
    assert record["step_choices"] == list(routing_task.STEP_CHOICES) and record["recipe"] == chat_task.RECIPE
    assert record["lr"] == chat_task.load_sweep()["chosen"]["LoRA"]
    for steps in routing_task.STEP_CHOICES:
        runs = [r for r in record["runs"] if r["steps"] == steps]
        assert sorted(r["fold"] for r in runs) == [0, 1, 2] and sum(r["n_val"] for r in runs) == n
        assert record["right"][str(steps)] == sum(r["right"] for r in runs)
    accuracy = {steps: record["right"][str(steps)] / n for steps in routing_task.STEP_CHOICES}
    assert record["chosen"] == routing_task.choose_steps(accuracy) in routing_task.STEP_CHOICES
    assert "on the training messages only" in record["about"]


@pytest.fixture(scope="module")
def smollm2_model():
    from lora_edu.core import smollm2

    return smollm2.load()


def test_the_router_on_smollm2_starts_as_the_base_model_and_disables_back_to_it(smollm2_model):
    """add_router: PEFT LoRA of 07's recipe on the top two layers; B starts at zero, so before training it routes as the
    base model does; after a step, disable_adapter() gives the base model's choices back."""
    base, tokenizer = smollm2_model
    routing = routing_task.load_routing()
    choices = routing_task.label_tokens(tokenizer, routing["labels"])
    data = chat_task.CachedBatch(base, chat_task.RECIPE["top_layers"],
                                 routing_task.encode_routing(tokenizer, routing["instruction"], routing["held_out"][:6]))
    zero_shot = routing_task.route(base, data, choices)
    router = routing_task.add_router(copy.deepcopy(base), seed=0)
    trained = {n for n, p in router.named_parameters() if p.requires_grad}
    top = range(base.config.num_hidden_layers - chat_task.RECIPE["top_layers"], base.config.num_hidden_layers)
    assert len(trained) == 2 * 7 * len(top) and all(any(f".layers.{i}." in n for i in top) for n in trained)
    assert torch.equal(routing_task.route(router, data, choices), zero_shot)
    chat_task.train(router, data, steps=2, lr=0.01, batch_size=3)
    with router.disable_adapter():
        assert torch.equal(routing_task.route(router, data, choices), zero_shot)


def test_every_prompt_begins_with_the_shared_prefix_as_tokens(smollm2_model):
    """The prefix is the chat marker and the instruction, up to the message: 17 tokens, the same inside every prompt
    (it ends with a new line, where SmolLM2's tokenizer always splits)."""
    _, tokenizer = smollm2_model
    routing = routing_task.load_routing()
    prefix = routing_task.prompt_prefix(routing["instruction"])
    assert prefix == f"<|im_start|>user\n{routing['instruction']}\n"
    messages = routing["train"] + routing["held_out"]
    ids = layer_cache.prefix_tokens(tokenizer, prefix, [routing_task.routing_prompt(routing["instruction"], m["text"]) for m in messages])
    assert len(ids) == 17


class _JoinsNewLineAndW(_Tokenizer):
    """Joins a new line and a following 'W' into one token: a prefix ending with a new line is then unstable."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text.replace("\nW", "\0")]}


def test_cache_messages_refuses_a_prefix_that_tokenizes_differently():
    messages = [{"text": "My parcel is late.", "label": "shipping"}, {"text": "Where is my refund?", "label": "billing"}]
    with pytest.raises(layer_cache.CacheError, match="tokenizes differently inside the prompt .*Where is my refund.*end the prefix"):
        routing_task.cache_messages(None, _JoinsNewLineAndW(), "Route:", messages)


def test_the_shared_prefix_on_smollm2_gives_the_cached_loss_gradients_and_routes(smollm2_model):
    """cache_messages (the prompt's 17 shared tokens computed once) against chat_task.CachedBatch (whole prompts), on 8
    training messages: the same loss and adapter gradients within float32 rounding (relative, on each tensor's norm:
    1e-6 for the loss, 2e-5 for a gradient, as tests/core/test_layer_cache.py), and the same routes, adapter on and off."""
    base, tokenizer = smollm2_model
    routing = routing_task.load_routing()
    choices = routing_task.label_tokens(tokenizer, routing["labels"])
    messages = routing["train"][:8]
    plain = chat_task.CachedBatch(base, 2, routing_task.encode_routing(tokenizer, routing["instruction"], messages))
    shared = routing_task.cache_messages(base, tokenizer, routing["instruction"], messages)
    router = routing_task.add_router(copy.deepcopy(base), seed=0)
    with torch.no_grad():   # a non-zero B, so that every adapter parameter gets a gradient
        for name, p in router.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    twin = copy.deepcopy(router)
    loss, loss_shared = plain.loss(router), shared.loss(twin)
    assert abs(loss_shared.item() - loss.item()) <= 1e-6 * loss.item()
    loss.backward()
    loss_shared.backward()
    grads = {name: p.grad for name, p in router.named_parameters() if p.requires_grad}
    assert len(grads) == 28 and all((p.grad - grads[name]).norm() <= 2e-5 * grads[name].norm()
                                    for name, p in twin.named_parameters() if p.requires_grad)
    assert torch.equal(routing_task.route(twin, shared, choices), routing_task.route(router, plain, choices))
    assert torch.equal(routing_task.route(base, shared, choices), routing_task.route(base, plain, choices))
