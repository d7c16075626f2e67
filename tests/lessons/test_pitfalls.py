"""The six pitfalls of notebook 06: each failure happens with the message the notebook shows, and each fix works.

Pinned against peft 0.21.2 and transformers 5.23: a release that changes one of these behaviours
fails here first, and the notebook's prose must then change with it.
"""
import pytest
import torch
from peft import LoraConfig, get_peft_model

from lora_edu.core.lora import add_lora, trainable_parameters_line
from lora_edu.lessons import pitfalls as P
from lora_edu.lessons.digits_task import accuracy, load_digits_task, pretrained_model, train

IDS = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
QV = dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])


def logits(model, **kwargs):
    with torch.no_grad():
        return model(input_ids=IDS, **kwargs).logits


def test_captured_collects_warnings_once_and_leaves_out_deprecations(recwarn):
    import warnings

    with P.captured() as messages:
        for _ in range(2):
            warnings.warn("the pitfall", stacklevel=1)
        warnings.warn("an API rename", FutureWarning, stacklevel=1)
    assert messages == ["the pitfall"] and len(recwarn) == 0



# ---------------------------------------------------------------- the same model, two ways


def test_copied_adapters_give_the_same_logits_and_gradients_and_a_mismatch_is_refused():
    ours = add_lora(P.tiny_llama(), ["q_proj", "v_proj"], r=8, alpha=16)
    theirs = get_peft_model(P.tiny_llama(), LoraConfig(**QV)).eval()
    torch.manual_seed(0)
    assert P.copy_peft_adapters(theirs, ours) is ours
    b = theirs.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight
    assert b.abs().max() > 0 and torch.equal(ours.model.layers[0].self_attn.q_proj.lora_B, b)
    out_ours, out_theirs = ours(input_ids=IDS, labels=IDS), theirs(input_ids=IDS, labels=IDS)
    assert torch.allclose(out_ours.logits, out_theirs.logits, atol=1e-5)
    with pytest.raises(ValueError, match="backward"):
        P.max_adapter_grad_diff(ours, theirs)
    out_ours.loss.backward()
    out_theirs.loss.backward()
    assert P.max_adapter_grad_diff(ours, theirs) < 1e-6
    only_q = add_lora(P.tiny_llama(), ["q_proj"], r=8, alpha=16)
    before = [p.clone() for p in only_q.parameters()]
    with pytest.raises(ValueError, match="adapt different layers"):
        P.copy_peft_adapters(theirs, only_q)
    assert all(torch.equal(a, b) for a, b in zip(before, only_q.parameters()))   # nothing changed


# ---------------------------------------------------------------- 1. module names


def test_1_gpt2_has_conv1d_not_q_proj_and_peft_sets_fan_in_fan_out():
    rows = P.linear_modules(P.tiny_gpt2(), block=".h.0.")
    assert [(n.rsplit(".", 1)[-1], t) for n, t, _ in rows] == [("c_attn", "Conv1D"), ("c_proj", "Conv1D"), ("c_fc", "Conv1D"),
                                                                ("c_proj", "Conv1D"), ("lm_head", "Linear")]
    assert rows[0][2] == (64, 192)   # Conv1D stores W as in×out: 64 in, 3×64 out (q, k and v fused)
    with pytest.raises(ValueError, match=r"Target modules \{.*\} not found in the base model"):
        get_peft_model(P.tiny_gpt2(), LoraConfig(**QV))
    with P.captured() as messages:
        model = get_peft_model(P.tiny_gpt2(), LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"]))
    assert messages == ["fan_in_fan_out is set to False but the target module is `Conv1D`. Setting fan_in_fan_out to True."]
    assert model.peft_config["default"].fan_in_fan_out and model.base_model.model.transformer.h[0].attn.c_attn.fan_in_fan_out
    with P.captured() as messages:   # the fix: say it, and PEFT has nothing to correct
        get_peft_model(P.tiny_gpt2(), LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"], fan_in_fan_out=True))
    assert messages == []
    assert trainable_parameters_line(add_lora(P.tiny_gpt2(), ["c_attn"], r=8, alpha=16)) == P.peft_line(model)


@pytest.mark.parametrize("build, adapted", [
    (P.tiny_gpt2, ["c_attn", "c_fc", "c_proj"]),
    (P.tiny_llama, ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]),
])
def test_1_all_linear_takes_every_linear_layer_but_the_output_head(build, adapted):
    with P.captured():
        model = get_peft_model(build(), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    names = P.adapted(model)
    assert sorted({n.rsplit(".", 1)[-1] for n in names}) == adapted and "lm_head" not in names


# ---------------------------------------------------------------- 2. a loaded adapter does not train


def test_2_from_pretrained_loads_frozen_and_is_trainable_fixes_it():
    trained = P.randomize_lora_b(get_peft_model(P.tiny_llama(), LoraConfig(**QV)))
    loaded = P.save_load(trained, P.tiny_llama())
    assert P.peft_line(loaded) == "trainable params: 0 || all params: 136,000 || trainable%: 0.0000"
    with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
        torch.optim.AdamW([p for p in loaded.parameters() if p.requires_grad])
    with pytest.raises(RuntimeError, match="element 0 of tensors does not require grad and does not have a grad_fn"):
        loaded(input_ids=IDS, labels=IDS).loss.backward()
    fixed = P.save_load(trained, P.tiny_llama(), is_trainable=True)
    assert P.trainable(fixed) == 4096 and torch.allclose(logits(fixed), logits(trained), atol=1e-6)


# ---------------------------------------------------------------- 3. a reloaded classifier is random


@pytest.fixture(scope="module")
def digits():
    return pretrained_model(epochs=10), load_digits_task(rotate=True)


@pytest.mark.parametrize("modules_to_save", [None, ["classifier"]])
def test_3_the_new_head_is_saved_only_with_modules_to_save(digits, modules_to_save):
    body, data = digits
    torch.manual_seed(1)
    model = get_peft_model(P.DigitsClassifier(body), LoraConfig(r=4, lora_alpha=8, target_modules=["fc1", "fc2"],
                                                                  modules_to_save=modules_to_save))
    train(model, data, epochs=10)
    before = accuracy(model, data.x_test, data.y_test)
    reloaded = P.save_load(model, P.DigitsClassifier(body)).eval()
    after = accuracy(reloaded, data.x_test, data.y_test)
    saved_head = any("classifier" in n for n in P.saved_tensor_names(model))
    with torch.no_grad():
        same = torch.equal(model(data.x_test), reloaded(data.x_test))
    if modules_to_save is None:
        assert not saved_head and not same and after < before - 0.3
    else:
        assert saved_head and same and after == before > 0.8


def test_3_a_head_drawn_anew_on_each_load_differs():
    body = pretrained_model(epochs=1)
    assert not torch.equal(P.DigitsClassifier(body).classifier.weight, P.DigitsClassifier(body).classifier.weight)
    assert torch.equal(P.DigitsClassifier(body, head_seed=3).classifier.weight, P.DigitsClassifier(body, head_seed=3).classifier.weight)


# ---------------------------------------------------------------- 4. gradient checkpointing


def lora_llama():
    return P.randomize_lora_b(get_peft_model(P.tiny_llama(), LoraConfig(**QV)))


def test_4_reentrant_checkpointing_without_the_input_hook_gives_lora_no_gradient():
    plain = P.checkpointed_step(lora_llama(), IDS)
    assert plain == dict(warnings=[], error=None, lora_with_grad=8, lora_total=8)
    model = lora_llama()
    model.base_model.model.activation_checkpointing_enable({"use_reentrant": True})
    assert P.checkpointed_step(model, IDS) == plain          # transformers 5.23 adds the hook itself for text models
    model.base_model.model.disable_input_require_grads()    # the state older versions left a get_peft_model model in
    broken = P.checkpointed_step(model, IDS)
    assert broken["warnings"] == ["None of the inputs have requires_grad=True. Gradients will be None"]
    assert broken["error"] == "element 0 of tensors does not require grad and does not have a grad_fn"
    assert broken["lora_with_grad"] == 0
    model.base_model.model.enable_input_require_grads()     # fix 1
    assert P.checkpointed_step(model, IDS) == plain
    other = lora_llama()
    other.base_model.model.activation_checkpointing_enable({"use_reentrant": False})   # fix 2 (5.23's default)
    other.base_model.model.disable_input_require_grads()
    assert P.checkpointed_step(other, IDS) == plain


def test_4_default_is_non_reentrant_in_this_transformers():
    model = P.tiny_llama()
    model.activation_checkpointing_enable()
    layer = model.model.layers[0]
    assert layer.gradient_checkpointing and layer._gradient_checkpointing_func.keywords == {"use_reentrant": False}


# ---------------------------------------------------------------- 5. PiSSA changes the base weights


def test_5_pissa_disable_adapter_is_not_the_original_and_conversion_fixes_it(tmp_path):
    from peft import PeftModel

    original = logits(P.tiny_llama())
    pissa = get_peft_model(P.tiny_llama(), LoraConfig(**QV, init_lora_weights="pissa"))
    with pissa.disable_adapter():
        off = logits(pissa)
    assert P.max_diff(logits(pissa), original) < 1e-5 and P.max_diff(off, original) > 0.1
    pissa.peft_config["default"].init_lora_weights = True
    pissa.save_pretrained(tmp_path / "init")
    P.randomize_lora_b(pissa, std=0.01)   # stands in for training: A and B move
    trained = logits(pissa)
    pissa.save_pretrained(tmp_path / "lora", path_initial_model_for_weight_conversion=str(tmp_path / "init"))
    converted = PeftModel.from_pretrained(P.tiny_llama(), tmp_path / "lora").eval()
    assert converted.peft_config["default"].r == 16   # the difference of two rank-8 products: rank up to 2r
    assert P.max_diff(logits(converted), trained) < 1e-5
    with converted.disable_adapter():
        assert P.max_diff(logits(converted), original) == 0


# ---------------------------------------------------------------- 6. merging into a 4-bit base


def test_6_merging_into_nf4_requantizes_and_a_dequantized_merge_does_not():
    import bitsandbytes as bnb

    fp = P.tiny_llama()
    quantized = P.load_nf4(P.tiny_llama())
    assert isinstance(quantized.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit) and quantized.is_loaded_in_4bit
    model = P.randomize_lora_b(get_peft_model(quantized, LoraConfig(**QV))).eval()
    unmerged = logits(model)
    dequantized = logits(P.merged_into_dequantized(model, fp))
    with P.captured() as messages:
        merged = logits(model.merge_and_unload())
    assert messages == ["Merge lora module to 4-bit linear may get different generations due to rounding errors."]
    assert P.max_diff(dequantized, unmerged) < 1e-5 < 1e-2 < P.max_diff(merged, unmerged)


def test_load_nf4_leaves_progress_bars_as_they_were():
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    P.load_nf4(P.tiny_llama())
    assert hf_logging.is_progress_bar_enabled() == before


def test_sorted_sets_orders_printed_sets_of_strings_only():
    assert P.sorted_sets("Target modules {'v_proj', 'q_proj'} not found; {'a'}; {1: 2}") == \
        "Target modules {'q_proj', 'v_proj'} not found; {'a'}; {1: 2}"


def test_exercise_6b_the_notebook_shows_the_banks_buggy_merge_and_the_check_rejects_it():
    import json
    from pathlib import Path

    from lora_edu.course import exercise_bank as bank

    cells = ["".join(c["source"]) for c in json.loads(
        (Path(__file__).resolve().parents[2] / "notebooks" / "06_peft_comparison.ipynb").read_text())["cells"]]
    assert any(c.startswith(bank.BUGGY_MERGE_CONV1D) for c in cells)
    namespace = {}
    exec(bank.BUGGY_MERGE_CONV1D, namespace)  # noqa: S102 - the course's own buggy example
    result = bank.merge_conv1d().check(namespace["merge_conv1d_buggy"])
    assert not result.passed and "on the visible example" in result.message   # square: no error, wrong values
    assert bank.merge_conv1d().check(lambda W, A, B, scaling: W + scaling * (B @ A).T).passed


def test_logit_agreement_compares_the_logits_and_what_the_adapters_add():
    """Notebook 06's picture: equal logits to 1e-5, and the adapters' own change (not just the base) equal too."""
    base = P.tiny_llama()
    ours = add_lora(P.tiny_llama(), ["q_proj", "v_proj"], r=8, alpha=16)
    theirs = get_peft_model(base, LoraConfig(**QV))
    torch.manual_seed(0)
    P.copy_peft_adapters(theirs, ours)
    ours.eval(), theirs.eval()
    got = P.logit_agreement(ours, theirs, IDS)
    assert got["ours"].shape == got["peft"].shape == (2 * 16 * 256,)
    assert got["max_diff"] < 1e-5 and abs(got["max_diff"] - abs(got["ours"] - got["peft"]).max()) < 1e-12
    assert got["max_change"] > 100 * got["max_diff"]            # the adapters change the logits: the check means something
    assert abs(got["change_ours"] - got["change_peft"]).max() < 1e-5
    theirs.train()
    with pytest.raises(ValueError, match="call .eval"):
        P.logit_agreement(ours, theirs, IDS)
