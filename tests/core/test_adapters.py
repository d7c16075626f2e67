"""save_adapter / load_adapter: PEFT's format both ways, and every bad folder leaves the model as it was."""
import json

import pytest
import torch
from helpers import assert_unchanged, snapshot, tiny_model
from transformers import LlamaConfig, LlamaForCausalLM

from lora_edu.core.adapters import AdapterLoadError, load_adapter, save_adapter
from lora_edu.core.lora import LoRAStateError, add_lora, lora_layers


def trained(seed=0, targets=("q_proj", "v_proj"), r=2):
    model = add_lora(tiny_model(), list(targets), r=r, alpha=4)
    torch.manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.normal_()
    return model


def test_round_trip_into_a_plain_model(tmp_path):
    model = trained()
    save_adapter(model, tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 2 and config["target_modules"] == ["q_proj", "v_proj"]
    fresh = load_adapter(tiny_model(), tmp_path / "a")
    x = torch.randn(3, 8)
    assert torch.allclose(fresh(x), model(x), atol=1e-6)


def test_regex_wrapped_subset_saves_full_names(tmp_path):
    model = add_lora(tiny_model(), r"1\.q_proj", r=2, alpha=4)
    save_adapter(model, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["target_modules"] == ["1.q_proj"]
    assert list(lora_layers(load_adapter(tiny_model(), tmp_path))) == ["1.q_proj"]


def test_saving_a_merged_or_plain_model_is_refused(tmp_path):
    with pytest.raises(LoRAStateError, match="no LoRA layers to save"):
        save_adapter(tiny_model(), tmp_path)
    model = trained()
    model[0].q_proj.merge()
    with pytest.raises(LoRAStateError, match="merged into its base weight; unmerge"):
        save_adapter(model, tmp_path)


@pytest.mark.parametrize("variant, message", [(dict(use_dora=True), "uses DoRA"), (dict(init="pissa"), "initialised with PiSSA")])
def test_saving_dora_or_pissa_is_refused_and_writes_nothing(tmp_path, variant, message):
    """A file of lora_A and lora_B alone would lose DoRA's magnitude or PiSSA's changed base: refuse, write nothing."""
    model = add_lora(tiny_model(), ["q_proj"], r=2, alpha=4, **variant)
    with pytest.raises(LoRAStateError, match=message):
        save_adapter(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _bad_folder_cases(tmp_path):
    good = save_adapter(trained(), tmp_path / "good")
    cases = {}
    cases["missing folder"] = (tmp_path / "nowhere", "no adapter folder at")
    (tmp_path / "empty").mkdir()
    cases["missing files"] = (tmp_path / "empty", r"lacks \['adapter_config.json', 'adapter_model.safetensors'\]")
    corrupt = save_adapter(trained(), tmp_path / "corrupt")
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 10)
    cases["corrupt weights"] = (corrupt, "cannot read adapter_model.safetensors .* damaged")
    badjson = save_adapter(trained(), tmp_path / "badjson")
    (badjson / "adapter_config.json").write_text("{not json")
    cases["corrupt config"] = (badjson, "adapter_config.json is not valid JSON")
    rank = save_adapter(trained(r=3), tmp_path / "rank")
    cases["wrong rank into existing LoRA"] = (rank, "the adapter has r=3, lora_alpha=4 but '0.q_proj' has r=2")
    shapes = save_adapter(add_lora(tiny_model(d=6), ["q_proj", "v_proj"], r=2, alpha=4), tmp_path / "shapes")
    cases["wrong shapes"] = (shapes, r"lora_A of '0.q_proj' has shape \(2, 6\), but this model needs \(2, 8\)")
    lacks = save_adapter(add_lora(tiny_model(layers=3), ["q_proj", "v_proj"], r=2, alpha=4), tmp_path / "lacks")
    cases["modules the model lacks"] = (lacks, r"weights for modules this model lacks: \['2.q_proj', '2.v_proj'\]")
    dora = save_adapter(trained(), tmp_path / "dora")
    cfg = json.loads((dora / "adapter_config.json").read_text()) | {"use_dora": True}
    (dora / "adapter_config.json").write_text(json.dumps(cfg))
    cases["unsupported option"] = (dora, "use_dora=True, which lora_edu's LoRALinear does not implement")
    return good, cases


@pytest.mark.parametrize("into", ["plain model", "model with LoRA"])
def test_bad_folders_give_clear_errors_and_change_nothing(tmp_path, into):
    good, cases = _bad_folder_cases(tmp_path)
    for what, (folder, match) in cases.items():
        model = tiny_model() if into == "plain model" else trained(seed=5)
        if into == "plain model" and what == "wrong rank into existing LoRA":
            continue  # into a plain model a rank-3 adapter is fine: load_adapter adds r=3 layers
        before = snapshot(model)
        with pytest.raises(AdapterLoadError, match=match):
            load_adapter(model, folder)
        assert_unchanged(model, before)


def _tiny_llama(seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=100,
                         max_position_embeddings=16, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def test_peft_loads_what_lora_edu_saves_and_the_other_way_round(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    ids = torch.randint(0, 100, (2, 8))
    ours = add_lora(_tiny_llama(), ["q_proj", "v_proj"], r=4, alpha=8)
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in lora_layers(ours).values():
            layer.lora_B.normal_(std=0.1)
    save_adapter(ours, tmp_path / "ours")
    theirs = PeftModel.from_pretrained(_tiny_llama(), tmp_path / "ours")
    assert torch.allclose(theirs(input_ids=ids).logits, ours(input_ids=ids).logits, atol=1e-5)

    peft_model = get_peft_model(_tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                          init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "peft")
    loaded = load_adapter(_tiny_llama(), tmp_path / "peft")
    assert torch.allclose(loaded(input_ids=ids).logits, peft_model(input_ids=ids).logits, atol=1e-5)
