"""lora_edu.core.memory: exact parameter counts, the activation formula, and the GPU measurements."""

import pytest
import torch
from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

from lora_edu import memory, memory_views
from lora_edu.core.memory import LINEAR_MODULES, estimate, parameter_counts


def test_llama_7b_counts():
    counts = parameter_counts("llama-7b")
    assert counts["total"] == 6_738_415_616
    assert counts["linear_in_blocks"] == 6_476_005_376
    assert memory.lora_parameter_count("llama-7b", 8, ["q_proj", "v_proj"]) == 4_194_304
    assert estimate("llama-7b", method="lora", lora_r=8).total_params == 6_742_609_920


@pytest.mark.parametrize("arch", ["llama-7b", "llama-60m", dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                                               num_attention_heads=8, num_key_value_heads=2, vocab_size=100)])
def test_counts_match_transformers_on_the_meta_device(arch):
    a = memory.resolve_arch(arch)
    config = LlamaConfig(hidden_size=a.hidden_size, intermediate_size=a.intermediate_size, num_hidden_layers=a.num_hidden_layers,
                         num_attention_heads=a.num_attention_heads, num_key_value_heads=a.kv_heads, vocab_size=a.vocab_size,
                         tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == parameter_counts(a)["total"]


def test_real_loading_path_offline(tmp_path):
    """What a user does with a real model (AutoConfig.from_pretrained), from a local folder."""
    LlamaConfig(**memory.PRESETS["llama-7b"], tie_word_embeddings=False).save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert estimate(config, method="lora") == estimate("llama-7b", method="lora")


def test_popular_budget_is_twelve_bytes_a_parameter():
    est = estimate("llama-7b", method="full", weight_dtype="fp16", optimizer_dtype="fp32")
    assert est.rule_of_thumb == 12 * 6_738_415_616
    master = estimate("llama-7b", method="full", weight_dtype="fp16", optimizer_dtype="fp32", master_weights=True)
    assert master.rule_of_thumb == 16 * 6_738_415_616


def test_lora_and_inference_have_no_base_gradients():
    lora = estimate("llama-7b", method="lora")
    assert lora.gradients == 4 * 4_194_304 and lora.optimizer == 8 * 4_194_304
    inference = estimate("llama-7b", method="inference")
    assert inference.gradients == inference.optimizer == inference.activations == 0


def test_activations_grow_linearly_with_tokens():
    a = estimate("llama-7b", batch_size=1, seq_len=512).activations
    assert estimate("llama-7b", batch_size=4, seq_len=512).activations == 4 * a
    assert estimate("llama-7b", batch_size=2, seq_len=1024).activations == 4 * a


@pytest.mark.parametrize("kwargs, match", [
    (dict(arch=dict(hidden_size=-1, intermediate_size=2, num_hidden_layers=1, num_attention_heads=1, vocab_size=3)), "hidden_size must be a positive integer"),
    (dict(arch="llama-7b", weight_dtype="fp8"), r"unknown weight_dtype 'fp8'; choose one of \['fp32', 'bf16', 'fp16'\]"),
    (dict(arch="llama-7b", method="lora", lora_r=0), "lora_r must be a positive integer"),
    (dict(arch="llama-7b", method="lora", lora_targets=["qproj"]), r"unknown LoRA target module\(s\) \['qproj'\]; choose from \['q_proj'"),
    (dict(arch="llama-7b", method="prefix"), r"unknown method 'prefix'; choose one of \['full', 'lora', 'inference'\]"),
    (dict(arch="llama-8b"), r"unknown preset 'llama-8b'; choose one of"),
    (dict(arch="llama-7b", batch_size=0), "batch_size must be a positive integer"),
    (dict(arch=dict(hidden_size=10, intermediate_size=2, num_hidden_layers=1, num_attention_heads=3, vocab_size=3)), "divisible"),
])
def test_bad_input_names_the_valid_choices(kwargs, match):
    with pytest.raises(ValueError, match=match):
        estimate(**kwargs)


def _saved_bytes_per_token_layer(dtype, lora=None, h=64, m=176, nh=4, b=2, s=16):
    """Count what autograd saves (distinct storages) in a 2-layer minus a 1-layer model."""
    def saved(layers):
        torch.manual_seed(0)
        config = LlamaConfig(hidden_size=h, intermediate_size=m, num_hidden_layers=layers, num_attention_heads=nh,
                             vocab_size=50, max_position_embeddings=s, attn_implementation="sdpa", use_cache=False)
        model = LlamaForCausalLM(config).to(dtype)
        if lora:
            from peft import LoraConfig, get_peft_model
            model = get_peft_model(model, LoraConfig(r=lora[0], lora_alpha=16, target_modules=list(lora[1])))
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        storages = {}

        def pack(t):
            st = t.untyped_storage()
            if st.data_ptr() not in params:
                storages[st.data_ptr()] = st.nbytes()
            return t

        ids = torch.randint(0, 50, (b, s))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=ids, labels=ids)
        return sum(storages.values())
    return (saved(2) - saved(1)) / (b * s)


@pytest.mark.parametrize("method, dtype, lora", [
    ("full", "fp32", None), ("full", "bf16", None),
    ("lora", "bf16", (8, ("q_proj", "v_proj"))), ("lora", "bf16", (4, LINEAR_MODULES)), ("lora", "fp32", (8, ("q_proj", "v_proj"))),
])
def test_activation_formula_equals_autograds_saved_tensors(method, dtype, lora):
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    arch = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=1, num_attention_heads=4, vocab_size=50)
    kwargs = dict(lora_r=lora[0], lora_targets=lora[1]) if lora else {}
    predicted = memory.activation_bytes_per_token_layer(arch, method, dtype, **kwargs)
    assert predicted == _saved_bytes_per_token_layer(torch_dtype, lora)


def test_calculator_matches_the_gpu_measurements():
    rows = memory_views.compare_with_measurements()
    assert len(rows) >= 40
    for r in rows:
        assert r["predicted_params"] == r["params"]
        assert abs(r["predicted_peak"] / r["measured_peak"] - 1) <= 0.10, r
        if "measured_static" in r:
            assert abs(r["predicted_static"] / r["measured_static"] - 1) <= 0.05, r


def test_measurements_record_device_and_versions():
    m = memory_views.load_measurements()
    assert m["device"] and m["torch"] and m["transformers"] and m["peft"] and m["seq_len"] == 512
    sizes = sorted(r["params"] for r in m["runs"] if r["case"] == "full_fp32")
    assert sizes[0] < 70e6 and sizes[-1] > 3e9


def test_calculator_widget_changes_its_verdict():
    """What a redraw shows; how fast it redraws is measured in notebook 01, not asserted in a test."""
    calc = memory_views.memory_calculator()
    before = calc.verdict.value
    calc.controls["batch"].value = 16
    assert calc.verdict.value != before and "Peak" in calc.verdict.value
    calc.controls["preset"].value = "custom"
    assert "Peak" in calc.verdict.value


@pytest.mark.parametrize("kwargs", [dict(method="full"), dict(method="lora"), dict(method="lora", adapter_dtype="bf16"),
                                    dict(method="lora", lora_targets=LINEAR_MODULES, lora_r=16),
                                    dict(method="lora", weight_dtype="fp32", lora_targets=("q_proj", "down_proj")),
                                    dict(method="inference")])
@pytest.mark.parametrize("arch", ["llama-7b", "llama-2-70b", "llama-60m"])
def test_activation_breakdown_adds_up(arch, kwargs):
    parts = memory.activation_breakdown_per_token_layer(arch, **kwargs)
    assert sum(parts.values()) == memory.activation_bytes_per_token_layer(arch, **kwargs)
    assert min(parts.values()) >= 0


def test_what_lora_does_to_activations():
    """Issue 12, item 8: LoRA drops the frozen weights' inputs but adds its adapters' (fp32) inputs."""
    per = lambda **kw: memory.activation_bytes_per_token_layer("llama-7b", **kw)  # noqa: E731
    full, qv32, qv16 = per(method="full"), per(method="lora"), per(method="lora", adapter_dtype="bf16")
    all32 = per(method="lora", lora_targets=LINEAR_MODULES)
    assert (full, qv32, qv16, all32) == (186_504, 164_552, 139_944, 274_280)
    assert qv16 < qv32 < full < all32
    parts = memory.activation_breakdown_per_token_layer("llama-7b", "lora")
    assert parts["frozen_weight_gradients"] == 0 and parts["adapter_inputs"] == 2 * 4 * 4096  # two fp32 copies of x


def test_gpu_line_labels_never_crowd():
    labels = memory_views.gpu_line_labels(memory_views.GPUS_GIB, top=1100)  # the 70B panel's axis
    assert len(labels) == 1 and labels[0] == (80 * memory.GiB / memory.GB, "16, 24, 40, 80 GB cards (GiB)")
    assert len(memory_views.gpu_line_labels(memory_views.GPUS_GIB, top=30)) == 4
    for top in (30, 120, 220, 1100):
        heights = [h for h, _ in memory_views.gpu_line_labels(memory_views.GPUS_GIB, top)]
        assert all(b - a >= 0.08 * top for a, b in zip(heights, heights[1:]))


def test_gpu_sizes_are_gib():
    """Review item 6: an "80 GB" card holds 80 GiB; the verdict compares the peak with that."""
    assert memory_views.gpu_bytes("80 GB") == 80 * 2**30 and memory_views.gpu_bytes("24 GB") == 24 * 2**30
    (height, text), = memory_views.gpu_line_labels({"24 GB": 24}, top=30)
    assert abs(height - 25.77) < 0.01 and text == "24 GB card (24 GiB = 25.8 GB)"
    calc = memory_views.memory_calculator()
    assert "Fits" in calc.verdict.value and "24 GB card (24 GiB)" in calc.verdict.value  # LoRA, LLaMA-7B, 1 × 512
    calc.controls["method"].value = "full"
    assert "Does not fit" in calc.verdict.value
    calc.controls["gpu"].value = "80 GB"         # bf16 weights and moments (PyTorch's default): ≈ 67 GB
    assert "Fits" in calc.verdict.value and "80 GB card (80 GiB)" in calc.verdict.value
