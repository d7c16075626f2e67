"""lora_edu.core.memory: exact parameter counts, the activation formula, and the GPU measurements."""

import matplotlib.pyplot
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
    """fp32 moments beside 16-bit weights: bitsandbytes' 32-bit AdamW keeps them (12 bytes); an fp32 master copy, 16."""
    est = estimate("llama-7b", method="full", weight_dtype="fp16", optimizer="paged_adamw_32bit")
    assert est.rule_of_thumb == 12 * 6_738_415_616 and est.peak == est.static      # in place: no step temporary
    master = estimate("llama-7b", method="full", weight_dtype="fp16", master_weights=True)
    assert master.rule_of_thumb == 16 * 6_738_415_616
    assert master == estimate("llama-7b", method="full", weight_dtype="fp16", optimizer_dtype="fp32", master_weights=True)
    assert estimate("llama-7b", method="full").rule_of_thumb == 8 * 6_738_415_616   # PyTorch's AdamW on bf16 weights


@pytest.mark.parametrize("kwargs", [dict(method="full", weight_dtype="bf16", optimizer_dtype="fp32"),
                                    dict(method="full", weight_dtype="fp32", optimizer_dtype="bf16"),
                                    dict(method="lora", adapter_dtype="bf16", optimizer_dtype="fp32")])
def test_torch_adamw_refuses_moments_of_another_dtype(kwargs):
    """torch.optim.AdamW makes its moments with zeros_like(p) and refuses to step p with moments of another dtype
    (the check below runs it); the calculator says so, and names the layouts that do keep fp32 moments."""
    with pytest.raises(ValueError, match=r"refuses to step them.*master_weights=True.*paged_adamw_32bit"):
        estimate("llama-7b", **kwargs)
    with pytest.raises(ValueError, match="its moments are fp32"):
        estimate("llama-7b", method="full", master_weights=True, optimizer_dtype="bf16")
    assert estimate("llama-7b", method="full", weight_dtype="fp32", optimizer_dtype="fp32") == estimate(
        "llama-7b", method="full", weight_dtype="fp32")


@pytest.mark.parametrize("kw", [dict(foreach=True), dict(foreach=False), dict(fused=True)])
def test_pytorch_adamw_itself_refuses_fp32_moments_beside_bf16_weights(kw):
    """What notebook 01 shows: each implementation makes bf16 moments for bf16 weights and stops at fp32 ones."""
    p = torch.nn.Parameter(torch.zeros(4, 4, dtype=torch.bfloat16))
    opt = torch.optim.AdamW([p], **kw)
    p.grad = torch.ones_like(p)
    opt.step()
    assert opt.state[p]["exp_avg"].dtype == opt.state[p]["exp_avg_sq"].dtype == torch.bfloat16
    opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"] = opt.state[p]["exp_avg"].float(), opt.state[p]["exp_avg_sq"].float()
    with pytest.raises(RuntimeError, match="expected"):
        opt.step()


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
    """Issue 16: every case, v1 and v2 (checkpointing, QLoRA, kept gradients, 8-bit AdamW): peak within 10%, static within 5%."""
    rows = memory_views.compare_with_measurements()
    assert len(rows) >= 150
    assert set(list(memory.MEASURED_CASES)[:15]) <= {r["case"] for r in rows} <= set(memory.MEASURED_CASES)
    for r in rows:
        if "params" in r:
            assert r["predicted_params"] == r["params"]
        else:  # 4-bit: packed weights and their scales, byte for byte
            assert r["predicted_weight_bytes"] == r["weight_bytes"], r
        if r["method"] != "inference":
            assert r["predicted_trainable"] == r["trainable"], r
        assert abs(r["predicted_peak"] / r["measured_peak"] - 1) <= 0.10, r
        if "measured_static" in r:
            assert abs(r["predicted_static"] / r["measured_static"] - 1) <= 0.05, r


def test_v2_grid_is_measured_across_sizes_and_shapes():
    rows = memory_views.compare_with_measurements()
    for case in ("full_bf16_ckpt", "lora_all_ckpt", "qlora", "qlora_dq", "full_bf16_keep_grads", "full_bf16_adamw8bit"):
        seen = {(r["model"], r["batch"], r["seq_len"]) for r in rows if r["case"] == case}
        assert len({m for m, _, _ in seen}) >= 3 and {(b, s) for _, b, s in seen} == {(4, 512), (2, 2048)}, case


def test_measurements_record_device_and_versions():
    m = memory_views.load_measurements()
    assert m["device"] and m["torch"] and m["transformers"] and m["peft"] and m["bitsandbytes"] and m["seq_len"] == 512
    sizes = sorted(r["params"] for r in m["runs"] if r["case"] == "full_fp32")
    assert sizes[0] < 70e6 and sizes[-1] > 3e9
    assert not any(r.get("oom") for r in m["runs"])


# Parameter counts of the real presets, from each model card's config.json (PRESET_SOURCES), against
# transformers' own classes on the meta device, and against the totals the model cards state.
@pytest.mark.parametrize("preset, cls, total", [
    ("llama-3-8b", "Llama", 8_030_261_248), ("mistral-7b", "Mistral", 7_241_732_096), ("qwen2.5-7b", "Qwen2", 7_615_616_512),
    ("llama-2-70b", "Llama", 68_976_648_192), ("llama-3.2-1b", "Llama", 1_235_814_400), ("llama-65b", "Llama", 65_285_660_672),
])
def test_presets_match_transformers_on_the_meta_device(preset, cls, total):
    import transformers

    a = memory.resolve_arch(preset)
    config = getattr(transformers, f"{cls}Config")(
        hidden_size=a.hidden_size, intermediate_size=a.intermediate_size, num_hidden_layers=a.num_hidden_layers,
        num_attention_heads=a.num_attention_heads, num_key_value_heads=a.kv_heads, vocab_size=a.vocab_size,
        tie_word_embeddings=a.tie_word_embeddings)
    with torch.device("meta"):
        model = getattr(transformers, f"{cls}ForCausalLM")(config)
    assert sum(p.numel() for p in model.parameters()) == parameter_counts(preset)["total"] == total
    assert preset in memory.PRESET_SOURCES


def test_reading_a_local_config_json(tmp_path):
    from transformers import Qwen2Config

    a = memory.resolve_arch("qwen2.5-7b")
    Qwen2Config(hidden_size=a.hidden_size, intermediate_size=a.intermediate_size, num_hidden_layers=a.num_hidden_layers,
                num_attention_heads=a.num_attention_heads, num_key_value_heads=a.kv_heads, vocab_size=a.vocab_size,
                tie_word_embeddings=False).save_pretrained(tmp_path)
    assert memory.resolve_arch(tmp_path / "config.json") == a == memory.resolve_arch(str(tmp_path))
    assert parameter_counts(str(tmp_path))["biases"] == 28 * (3584 + 2 * 512)
    (tmp_path / "bad.json").write_text('{"model_type": "gpt2", "n_embd": 768}')
    with pytest.raises(ValueError, match=r"model_type 'gpt2' is not LLaMA-shaped; this calculator reads \['llama', 'mistral', 'qwen2'\]"):
        memory.resolve_arch(str(tmp_path / "bad.json"))
    with pytest.raises(ValueError, match="no config.json at"):
        memory.resolve_arch(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="head_dim 256 differs"):
        memory.resolve_arch(dict(model_type="llama", head_dim=256, **memory.PRESETS["llama-7b"]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(quantization="nf8"), r"unknown quantization 'nf8'; choose one of \[None, 'nf4'\]"),
    (dict(method="full", quantization="nf4"), "4-bit weights cannot be trained"),
    (dict(method="lora", double_quant=True), "needs quantization='nf4'"),
    (dict(optimizer="sgd"), r"unknown optimizer 'sgd'; choose one of \['adamw', 'adamw_8bit', 'paged_adamw_32bit'\]"),
    (dict(adamw_impl="apex"), r"unknown adamw_impl 'apex'; choose one of \['foreach', 'for-loop', 'fused'\]"),
    (dict(optimizer="adamw_8bit", adamw_impl="fused"), "adamw_impl chooses torch.optim.AdamW's implementation"),
    (dict(method="lora", qlora_recipe="paper"), "qlora_recipe='paper' is the QLoRA paper's recipe for a 4-bit base"),
    (dict(method="lora", qlora_recipe="unsloth"), r"unknown qlora_recipe 'unsloth'; choose one of \['peft', 'paper'\]"),
    (dict(method="lora", lora_dropout=1.5), r"lora_dropout must be a probability in \[0, 1\)"),
    (dict(method="full", lora_dropout=0.1), "lora_dropout is the dropout before LoRA's adapters"),
    (dict(optimizer="adamw_8bit", optimizer_dtype="fp32"), "leave optimizer_dtype=None"),
    (dict(gradient_checkpointing="yes"), "gradient_checkpointing must be True or False"),
    (dict(set_to_none=None), "set_to_none must be True or False"),
])
def test_v2_bad_input_names_the_valid_choices(kwargs, match):
    with pytest.raises(ValueError, match=match):
        estimate("llama-7b", **kwargs)


def test_what_each_v2_option_changes():
    base = estimate("llama-3-8b", method="lora", lora_targets=LINEAR_MODULES, lora_r=16, batch_size=4, seq_len=2048)
    ckpt = estimate("llama-3-8b", method="lora", lora_targets=LINEAR_MODULES, lora_r=16, batch_size=4, seq_len=2048,
                    gradient_checkpointing=True)
    assert ckpt.activations < base.activations / 3 and ckpt.weights == base.weights
    q = dict(method="lora", lora_targets=LINEAR_MODULES, lora_r=16, quantization="nf4", gradient_checkpointing=True)
    nf4, dq = estimate("llama-3-8b", **q), estimate("llama-3-8b", **q, double_quant=True)
    n = parameter_counts("llama-3-8b")
    assert dq.weights < nf4.weights < 0.7 * base.weights
    assert abs((nf4.weights - dq.weights) / n["linear_in_blocks"] * 8 - (32 / 64 - 8 / 64 - 32 / (64 * 256))) < 1e-3  # QLoRA §3
    keep = estimate("llama-7b", method="full", set_to_none=False, batch_size=8)
    assert keep.peak > estimate("llama-7b", method="full", batch_size=8).peak
    adam8 = estimate("llama-7b", method="full", optimizer="adamw_8bit")
    assert abs(adam8.optimizer / adam8.trainable_params - 2 - 8 / 256) < 0.01


def test_largest_batch():
    card = 24 * memory.GiB
    settings = dict(method="lora", seq_len=512)
    b = memory.largest_batch("llama-7b", card, **settings)
    assert b >= 1 and estimate("llama-7b", batch_size=b, **settings).peak <= card < estimate("llama-7b", batch_size=b + 1, **settings).peak
    assert memory.largest_batch("llama-2-70b", card, method="full") == 0
    with pytest.raises(ValueError, match="memory_bytes must be a positive number"):
        memory.largest_batch("llama-7b", -1)
    with pytest.raises(ValueError, match="leave it out"):
        memory.largest_batch("llama-7b", card, batch_size=2)


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
    gpus = memory_views.GPUS_GIB
    labels = memory_views.gpu_line_labels(gpus, top=1100)  # the 70B panel's axis
    assert len(labels) == 1 and labels[0] == (gpus["80 GB"] * memory.GiB / memory.GB, "16, 24, 40, 80 GB cards (usable)")
    assert len(memory_views.gpu_line_labels(gpus, top=30)) == 4
    for top in (30, 120, 220, 1100):
        heights = [h for h, _ in memory_views.gpu_line_labels(gpus, top)]
        assert all(b - a >= 0.08 * top for a, b in zip(heights, heights[1:]))


def test_cards_are_their_usable_memory():
    """Issue 25, item 6: one table of cards, read on the cards measured (an 80 GB H100 gives PyTorch 81,079 MiB of
    nvidia-smi's 81,559); every verdict keeps the same margin, which holds the context and cuBLAS measured there."""
    card = memory.CARDS["80 GB"]
    round2 = memory_views.load_measurements("memory_measurements_round2.json")
    assert card.total == round2["total_memory"] == round2["card"]["total_memory"] and round2["device"] == "NVIDIA H100 80GB HBM3"
    assert card.source.startswith("NVIDIA H100 80GB HBM3: PyTorch's 81,079 MiB") and "81559," in round2["card"]["nvidia_smi"]
    assert round(card.total / 2**20) == 81_079 and card.usable == card.total - memory.CONTEXT_MARGIN
    taken = round2["card"]["total_memory"] - round2["card"]["free_after_cublas"]   # the context and cuBLAS, before any tensor
    assert round(taken / 2**20) == 719 and taken < memory.CONTEXT_MARGIN
    assert memory_views.gpu_bytes("80 GB") == card.usable == memory.usable_memory("80 GB")
    assert memory_views.gpu_bytes("24 GB") == 24 * 2**30 - memory.CONTEXT_MARGIN == memory.usable_memory(24)
    assert memory.CARDS["141 GB"].total == memory_views.load_measurements()["total_memory"]   # the H200 of round 1
    for bad in ("81 GB", 0, -2, True):
        with pytest.raises(ValueError, match="card"):
            memory.usable_memory(bad)
    (height, text), = memory_views.gpu_line_labels({"24 GB": 23}, top=30)
    assert abs(height - 23 * memory.GiB / memory.GB) < 1e-9 and text == "24 GB card (23.0 GiB usable = 24.7 GB)"
    calc = memory_views.memory_calculator()
    assert "Fits" in calc.verdict.value and "24 GB card (23.0 GiB usable)" in calc.verdict.value  # LoRA, LLaMA-7B, 1 × 512
    calc.controls["method"].value = "full"
    assert "Does not fit" in calc.verdict.value
    calc.controls["gpu"].value = "80 GB"         # bf16 weights and moments (PyTorch's default): ≈ 67 GB at the step
    assert "Fits" in calc.verdict.value and "80 GB card (78.2 GiB usable), at its peak (optimizer step)" in calc.verdict.value


def test_gpus_needed_keeps_the_margin():
    """Issue 25, item 6: gpus_needed reads the card's usable memory. Full fine-tuning of Llama-2-70B (PyTorch's AdamW,
    bf16 weights and moments) needs 9 80 GB cards at batch 1 × 512; at 1 × 2048 every GPU's unsharded activations
    bring the peak so near the card that the margin decides: 47 cards, where 80 GiB would say 39."""
    from lora_edu import sharding

    card80 = memory_views.gpu_bytes("80 GB")
    full = dict(method="full", batch_size=1, seq_len=512)
    n = sharding.gpus_needed("llama-2-70b", card80, **full)
    assert n == 9 and estimate("llama-2-70b", num_gpus=n, sharding="fsdp", **full).peak <= card80
    assert estimate("llama-2-70b", num_gpus=n - 1, sharding="fsdp", **full).peak > card80
    long = dict(full, seq_len=2048)
    assert sharding.gpus_needed("llama-2-70b", card80, **long) == 47
    assert sharding.gpus_needed("llama-2-70b", 80 * memory.GiB, **long) == 39


def test_calculator_toggles_checkpointing_and_4_bit():
    """Issue 16: the widget's checkpointing and 4-bit toggles reach estimate(); full + 4-bit says why it cannot be."""
    calc = memory_views.memory_calculator()
    calc.controls["batch"].value = 8
    peaks = []
    for ckpt, four_bit in ((False, False), (True, False), (True, True)):
        calc.controls["checkpointing"].value, calc.controls["four_bit"].value = ckpt, four_bit
        peaks.append(float(calc.verdict.value.split("Peak ≈ ")[1].split(" GB")[0]))
        expected = estimate("llama-7b", method="lora", batch_size=8, gradient_checkpointing=ckpt,
                            **(dict(quantization="nf4", double_quant=True) if four_bit else {}))
        assert f"Peak ≈ {expected.peak / memory.GB:.1f} GB" in calc.verdict.value
    assert peaks[0] > peaks[1] > peaks[2]
    calc.controls["method"].value = "full"
    assert "Cannot estimate: 4-bit weights cannot be trained" in calc.verdict.value


def test_static_snapshot_beside_the_widget():
    fig = memory_views.calculator_snapshot()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(memory_views.SNAPSHOT_SETTINGS)
    tops = [sum(p.get_height() for p in ax.patches if abs(p.get_x() + p.get_width() / 2 - i) < 0.01) for i in range(4)]
    for top, kw in zip(tops, memory_views.SNAPSHOT_SETTINGS.values()):
        assert abs(top - estimate("llama-3-8b", batch_size=4, seq_len=512, **kw).peak / memory.GB) < 1e-6


def test_methods_figure_draws_each_methods_peak_for_each_model():
    """Notebook 01's side-by-side picture: a panel per model, a bar per method of METHODS, as tall as its peak."""
    models = ("llama-7b", "llama-2-70b")
    fig = memory_views.methods_figure(models)
    assert len(fig.axes) == len(models)
    for ax, model in zip(fig.axes, models):
        assert [t.get_text() for t in ax.get_xticklabels()] == list(memory_views.METHODS)
        tops = [sum(p.get_height() for p in ax.patches if abs(p.get_x() + p.get_width() / 2 - i) < 0.01)
                for i in range(len(memory_views.METHODS))]
        for top, kw in zip(tops, memory_views.METHODS.values()):
            assert abs(top - estimate(model, weight_dtype="bf16", batch_size=1, seq_len=512, **kw).peak / memory.GB) < 1e-6
    assert memory_views.METHODS["LoRA"] is memory.RECIPES["LoRA"] and memory_views.METHODS["QLoRA"] is memory.RECIPES["QLoRA"]
    matplotlib.pyplot.close(fig)


def test_adamw_implementations_differ_only_in_the_steps_temporary():
    """Issue 25, item 2: foreach (PyTorch's default on CUDA) takes a temporary as large as the moments,
    the for-loop two of the largest tensor, fused none; everything else is the same."""
    kw = dict(method="full", weight_dtype="fp32", batch_size=1, seq_len=512)
    foreach, loop, fused = (estimate("llama-7b", adamw_impl=i, **kw) for i in memory.ADAMW_IMPLS)
    assert foreach == estimate("llama-7b", **kw)                         # foreach is the default
    assert foreach.rule_of_thumb == loop.rule_of_thumb == fused.rule_of_thumb
    n = parameter_counts("llama-7b")
    assert foreach.at_peak["other"] == 4 * n["total"] + memory.CUBLAS_WORKSPACE
    assert loop.at_peak["other"] == 2 * 4 * n["embedding"] + memory.CUBLAS_WORKSPACE   # the largest tensor: embedding
    assert foreach.peak_at == loop.peak_at == fused.peak_at == "optimizer step"
    assert fused.peak == fused.static and fused.at_peak["activations"] == 0
    assert memory.adamw_step_temporary([3, 5], 2, "for-loop") == 20 and memory.adamw_step_temporary([3, 5], 2, "foreach") == 16
    assert memory.adamw_step_temporary([3, 5], 2, "fused") == 0 == memory.adamw_step_temporary([], 2, "foreach")


@pytest.mark.parametrize("kwargs", [dict(method="full"), dict(method="full", batch_size=8, seq_len=4096),
                                    dict(method="lora", gradient_checkpointing=True, batch_size=4),
                                    dict(method="inference"), dict(memory.RECIPES["QLoRA, paper's code"], batch_size=4)])
def test_the_parts_alive_at_the_peak_add_up_to_it(kwargs):
    """Issue 25, item 1: the peak's parts are those alive at its moment (no activations at the optimizer step)."""
    est = estimate("llama-7b", **kwargs)
    assert sum(est.at_peak.values()) == est.peak and min(est.at_peak.values()) >= 0
    assert est.peak_at in ("end of the forward pass", "start of the backward pass", "optimizer step", "recomputed layer",
                           "inference")
    if est.peak_at == "optimizer step":
        assert est.at_peak["activations"] == 0 and est.at_peak["gradients"] == est.gradients
    assert memory_views.parts_gb(est) == {k: v / memory.GB for k, v in est.at_peak.items()}


def test_llama_65b_full_peak_is_at_the_step_not_the_activations():
    """Issue 25, item 1: the peak of full fine-tuning of LLaMA-65B at 1 × 512 falls at the optimizer step, with no
    activations: 10 bytes a parameter with PyTorch's AdamW on bf16 weights (foreach's bf16 temporary), 12 with
    bitsandbytes' 32-bit AdamW (the "more than 780 GB"), 20 with an fp32 master copy (foreach's fp32 temporary)."""
    n = parameter_counts("llama-65b")["total"]
    for kw, nbytes in ((dict(), 10), (dict(optimizer="paged_adamw_32bit"), 12), (dict(master_weights=True), 20)):
        est = estimate("llama-65b", method="full", weight_dtype="bf16", batch_size=1, seq_len=512, **kw)
        assert est.peak == nbytes * n + memory.CUBLAS_WORKSPACE and est.peak_at == "optimizer step"
        assert est.at_peak["activations"] == 0
    assert estimate("llama-65b", optimizer="paged_adamw_32bit").rule_of_thumb == 12 * n > 780 * memory.GB


def test_the_two_qlora_recipes():
    """Issue 25, item 3: PEFT's prepare_model_for_kbit_training (all else fp32) vs the paper's qlora.py --bf16."""
    n = parameter_counts("llama-65b")
    kw = dict(method="lora", lora_r=64, lora_targets=LINEAR_MODULES, quantization="nf4", double_quant=True,
              gradient_checkpointing=True)
    peft, paper = estimate("llama-65b", **kw), estimate("llama-65b", qlora_recipe="paper", **kw)
    q = memory.quantized_weight_bytes("llama-65b", True)
    lora = memory.lora_parameter_count("llama-65b", 64, LINEAR_MODULES)
    assert peft.weights == q + 4 * (n["total"] - n["linear_in_blocks"]) + 4 * lora
    assert paper.weights == q + 2 * (n["embedding"] + n["lm_head"]) + 4 * n["norms"] + 2 * lora
    assert paper.gradients == 2 * lora and paper.optimizer == 4 * lora           # bf16 adapters, AdamW's bf16 moments
    paged = estimate("llama-65b", qlora_recipe="paper", optimizer="paged_adamw_32bit", **kw)
    assert paged.optimizer == 8 * lora                                          # bitsandbytes' 32-bit state
    assert estimate("llama-65b", qlora_recipe="paper", adapter_dtype="fp32", **kw).weights == paper.weights + 2 * lora
    assert memory.MEASURED_CASES["qlora_dq"] == dict(memory.RECIPES["QLoRA"], weight_dtype="bf16")


def test_lora_dropout_keeps_a_copy_and_a_mask_per_adapter():
    per = lambda **kw: memory.activation_bytes_per_token_layer("llama-7b", "lora", **kw)  # noqa: E731
    h = 4096
    assert per(lora_dropout=0.05) - per() == 2 * (4 + 1) * h - 2 * 4 * h         # q, v: fp32 copies anyway, plus masks
    bf16 = dict(adapter_dtype="bf16", weight_dtype="bf16")
    assert per(lora_dropout=0.1, **bf16) - per(**bf16) == 2 * (2 + 1) * h - 2 * h  # shared bf16 input -> two copies + masks
