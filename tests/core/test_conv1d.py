"""LoRA on transformers' Conv1D (GPT-2's c_attn, c_proj, c_fc): the layer, add_lora, merging and adapter files, against PEFT."""
import json

import pytest
import torch
from helpers import assert_unchanged, snapshot
from safetensors.torch import load_file
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

from lora_edu.core.adapters import load_adapter, save_adapter
from lora_edu.core.lora import LoRAConfigError, LoRALinear, add_lora, count_parameters, lora_layers, merge_lora

TARGETS = [["c_attn"], ["c_attn", "c_proj", "c_fc"]]
IDS = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))


def gpt2(seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=32)
    return GPT2LMHeadModel(config).eval()


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def ours(targets, seed=1):
    """GPT-2 with lora_edu's LoRA on ``targets`` and a nonzero B, so the adapter changes the output."""
    model = add_lora(gpt2(), targets, r=4, alpha=8)
    torch.manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.normal_(std=0.1)
    return model


def peft_like(model, targets):
    """PEFT's get_peft_model on a fresh GPT-2, holding ``model``'s A and B."""
    from peft import LoraConfig, get_peft_model

    theirs = get_peft_model(gpt2(), LoraConfig(r=4, lora_alpha=8, target_modules=targets, fan_in_fan_out=True)).eval()
    with torch.no_grad():
        for name, layer in lora_layers(model).items():
            peft_layer = theirs.base_model.model.get_submodule(name)
            peft_layer.lora_A["default"].weight.copy_(layer.lora_A)
            peft_layer.lora_B["default"].weight.copy_(layer.lora_B)
    return theirs


# ---------------------------------------------------------------- the layer

def test_lora_linear_on_a_conv1d_layer():
    torch.manual_seed(0)
    layer = LoRALinear(Conv1D(nf=5, nx=6), r=2, alpha=4)
    assert layer.fan_in_fan_out and (layer.in_features, layer.out_features) == (6, 5)
    assert layer.lora_A.shape == (2, 6) and layer.lora_B.shape == (5, 2)   # the same as for nn.Linear(6, 5)
    assert "fan_in_fan_out=True" in repr(layer) and not LoRALinear(nn.Linear(6, 5), r=2, alpha=4).fan_in_fan_out
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 4, 6)
    assert torch.allclose(layer(x), layer.base(x) + x @ layer.lora_A.T @ layer.lora_B.T * layer.scaling, atol=1e-6)
    assert layer.delta_weight().shape == layer.base.weight.shape == (6, 5)
    w0, before = layer.base.weight.clone(), layer(x)
    layer.merge()
    assert torch.allclose(layer.base.weight, w0 + (layer.lora_B @ layer.lora_A).T * layer.scaling, atol=1e-6)
    assert torch.allclose(layer(x), before, atol=1e-5)
    layer.unmerge()
    assert torch.allclose(layer.base.weight, w0, atol=1e-6)


def test_fan_in_fan_out_that_contradicts_the_layer_is_an_error_and_changes_nothing():
    with pytest.raises(LoRAConfigError, match=r"this layer is a Linear, whose weight is \(out×in\), so fan_in_fan_out is False"):
        LoRALinear(nn.Linear(6, 5), r=2, alpha=4, fan_in_fan_out=True)
    model = gpt2()
    before = snapshot(model)
    with pytest.raises(LoRAConfigError, match=r"'transformer.h.0.attn.c_attn' is a Conv1D, whose weight is \(in×out\).*Leave fan_in_fan_out unset"):
        add_lora(model, ["c_attn"], r=4, alpha=8, fan_in_fan_out=False)
    with pytest.raises(LoRAConfigError, match="'lm_head' is a Linear"):
        add_lora(model, ["c_attn", "lm_head"], r=4, alpha=8, fan_in_fan_out=True)
    assert_unchanged(model, before)
    assert len(lora_layers(add_lora(model, ["c_attn"], r=4, alpha=8, fan_in_fan_out=True))) == 2


@pytest.mark.parametrize("module, name", [(nn.Conv2d(3, 3, 1), "a Conv2d"), (nn.Embedding(10, 4), "an Embedding")])
def test_unsupported_module_types_name_the_type_and_what_is_supported(module, name):
    model = nn.Sequential(nn.Linear(4, 4), module)
    before = snapshot(model)
    with pytest.raises(LoRAConfigError, match=rf"'1' is {name}, not an nn.Linear or transformers' Conv1D \(GPT-2's c_attn, c_proj, c_fc\)"):
        add_lora(model, ["0", "1"], r=2, alpha=4)
    assert_unchanged(model, before)
    with pytest.raises(LoRAConfigError, match=f"this layer is {name}, not an nn.Linear or transformers' Conv1D"):
        LoRALinear(module, r=2, alpha=4)


def test_gpt2_embedding_target_is_refused_and_unmatched_targets_list_conv1d_layers():
    model = gpt2()
    before = snapshot(model)
    with pytest.raises(LoRAConfigError, match="'transformer.wte' is an Embedding, not an nn.Linear or transformers' Conv1D"):
        add_lora(model, ["wte"], r=2, alpha=4)
    with pytest.raises(LoRAConfigError, match=r"Linear layers in this model: \['c_attn', 'c_fc', 'c_proj', 'lm_head'\]"):
        add_lora(model, ["q_proj"], r=2, alpha=4)
    assert_unchanged(model, before)


# ---------------------------------------------------------------- the model, against PEFT

@pytest.mark.parametrize("targets", TARGETS)
def test_trainable_parameter_count_matches_peft(targets):
    from peft import LoraConfig, get_peft_model

    theirs = get_peft_model(gpt2(), LoraConfig(r=4, lora_alpha=8, target_modules=targets, fan_in_fan_out=True))
    trainable, total = theirs.get_nb_trainable_parameters()
    assert count_parameters(add_lora(gpt2(), targets, r=4, alpha=8)) == (trainable, total)


@pytest.mark.parametrize("targets", TARGETS)
def test_same_logits_as_peft_with_the_same_weights(targets):
    model = ours(targets)
    assert not torch.allclose(logits(model), logits(gpt2()), atol=1e-3)   # the adapter does something
    assert torch.allclose(logits(model), logits(peft_like(model, targets)), atol=1e-5)


@pytest.mark.parametrize("targets", TARGETS)
def test_merge_equals_unmerged_and_peft_merge_and_unload(targets):
    model = ours(targets)
    unmerged = logits(model)
    merged_peft = peft_like(model, targets).merge_and_unload()
    merge_lora(model)
    assert not lora_layers(model) and isinstance(model.transformer.h[0].attn.c_attn, Conv1D)
    assert torch.allclose(logits(model), unmerged, atol=1e-5)
    assert torch.allclose(logits(model), logits(merged_peft), atol=1e-5)
    ours_sd, theirs_sd = model.state_dict(), merged_peft.state_dict()
    assert ours_sd.keys() == theirs_sd.keys() and all(torch.allclose(ours_sd[k], theirs_sd[k], atol=1e-6) for k in ours_sd)


@pytest.mark.parametrize("targets", TARGETS)
def test_adapter_files_match_peft_and_load_both_ways(tmp_path, targets):
    from peft import PeftModel

    model = ours(targets)
    theirs = peft_like(model, targets)
    save_adapter(model, tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "peft")
    config = {k: json.loads((tmp_path / d / "adapter_config.json").read_text()) for k, d in (("ours", "ours"), ("peft", "peft"))}
    for key in ("fan_in_fan_out", "r", "lora_alpha", "peft_type"):
        assert config["ours"][key] == config["peft"][key]
    assert config["ours"]["fan_in_fan_out"] is True and sorted(config["ours"]["target_modules"]) == sorted(targets)
    assert sorted(config["peft"]["target_modules"]) == sorted(targets)
    files = {d: load_file(tmp_path / d / "adapter_model.safetensors") for d in ("ours", "peft")}
    assert {k: v.shape for k, v in files["ours"].items()} == {k: v.shape for k, v in files["peft"].items()}
    assert files["ours"]["base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"].shape == (96, 4)

    peft_loaded = PeftModel.from_pretrained(gpt2(), tmp_path / "ours").eval()
    assert torch.allclose(logits(peft_loaded), logits(model), atol=1e-5)
    ours_loaded = load_adapter(gpt2(), tmp_path / "peft")
    assert all(layer.fan_in_fan_out for layer in lora_layers(ours_loaded).values())
    assert torch.allclose(logits(ours_loaded), logits(theirs), atol=1e-5)


def test_load_adapter_accepts_either_fan_in_fan_out_value(tmp_path):
    """PEFT corrects a wrong fan_in_fan_out per layer; lora_edu reads the layout from the layer's type."""
    model = ours(["c_attn"])
    folder = save_adapter(model, tmp_path)
    config = json.loads((folder / "adapter_config.json").read_text()) | {"fan_in_fan_out": False}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    assert torch.allclose(logits(load_adapter(gpt2(), folder)), logits(model), atol=1e-6)
