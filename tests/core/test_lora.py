"""LoRALinear, add_lora, merge_lora, counting: behaviour, properties, and every bad input."""
import math
import warnings

import pytest
import torch
from helpers import assert_unchanged, snapshot, tiny_model
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lora_edu.core.lora import LoRAConfigError, LoRALinear, LoRAStateError, add_lora, count_parameters, lora_layers, merge_lora, trainable_parameters_line


def make_quietly(*args, **kw):
    """make(), with the warning for r > min(in, out) silenced: the properties hold for any rank."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make(*args, **kw)


def make(d_in=6, d_out=5, r=2, alpha=4.0, seed=0, **kw):
    torch.manual_seed(seed)
    layer = LoRALinear(nn.Linear(d_in, d_out), r=r, alpha=alpha, **kw)
    with torch.no_grad():
        layer.lora_B.normal_()
    return layer


# ---------------------------------------------------------------- behaviour

def test_initialisation_matches_peft_and_loralib():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(64, 32), r=4, alpha=8)
    assert layer.lora_A.shape == (4, 64) and layer.lora_B.shape == (32, 4)
    assert torch.all(layer.lora_B == 0)
    bound = 1 / math.sqrt(64)  # kaiming_uniform_(a=√5) on fan_in 64
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.abs().max() > 0.8 * bound
    assert layer.scaling == 2.0
    assert LoRALinear(nn.Linear(64, 32), r=4, alpha=8, use_rslora=True).scaling == pytest.approx(8 / 2)


def test_forward_formula_and_batch_shapes():
    layer = make()
    for shape in [(6,), (3, 6), (2, 3, 6), (2, 2, 2, 6)]:
        x = torch.randn(*shape)
        expected = layer.base(x) + (x @ layer.lora_A.T @ layer.lora_B.T) * layer.scaling
        assert torch.allclose(layer(x), expected, atol=1e-6)
        assert layer(x).shape == (*shape[:-1], 5)


def test_dropout_applies_to_the_adapter_input_only():
    layer = make(dropout=0.5).train()
    x = torch.randn(200, 6)
    torch.manual_seed(1)
    out = layer(x)
    layer.eval()
    assert not torch.allclose(out, layer(x))
    assert isinstance(layer.dropout, nn.Dropout) and isinstance(make().dropout, nn.Identity)


def test_merge_unmerge_and_flag():
    layer = make()
    x = torch.randn(4, 6)
    before, w0 = layer(x), layer.base.weight.clone()
    layer.merge()
    assert layer.merged and torch.allclose(layer(x), before, atol=1e-6)
    assert torch.allclose(layer.base.weight, w0 + layer.delta_weight(), atol=1e-6)
    layer.unmerge()
    assert not layer.merged and torch.allclose(layer.base.weight, w0, atol=1e-6)


def test_add_lora_by_names_suffixes_and_regex():
    m = add_lora(tiny_model(), ["q_proj", "v_proj"], r=2, alpha=4)
    assert sorted(lora_layers(m)) == ["0.q_proj", "0.v_proj", "1.q_proj", "1.v_proj"]
    m = add_lora(tiny_model(), r"1\.(q|v)_proj", r=2, alpha=4)
    assert sorted(lora_layers(m)) == ["1.q_proj", "1.v_proj"]
    m = add_lora(tiny_model(), ["0.up_proj"], r=2, alpha=4)
    assert list(lora_layers(m)) == ["0.up_proj"]


def test_add_lora_freezes_everything_else_and_training_touches_only_a_b():
    model = add_lora(tiny_model(), ["q_proj", "v_proj"], r=2, alpha=4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{i}.{m}.lora_{x}" for i in (0, 1) for m in ("q_proj", "v_proj") for x in "AB"}
    before = {n: p.clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 8)).pow(2).mean().backward()
        opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable


def test_merge_lora_puts_plain_linears_back_and_keeps_outputs():
    model = add_lora(tiny_model(), ["q_proj", "v_proj", "up_proj"], r=2, alpha=4)
    for layer in lora_layers(model).values():
        with torch.no_grad():
            layer.lora_B.normal_()
    x = torch.randn(3, 8)
    expected = model(x)
    merge_lora(model)
    assert not lora_layers(model) and type(model[0].q_proj) is nn.Linear
    assert torch.allclose(model(x), expected, atol=1e-5)


def test_count_parameters_and_peft_line():
    model = add_lora(tiny_model(), ["q_proj"], r=2, alpha=4)
    trainable, total = count_parameters(model)
    assert trainable == 2 * 2 * (8 + 8)
    assert total == sum(p.numel() for p in tiny_model().parameters()) + trainable
    assert trainable_parameters_line(model) == (
        f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")


def test_meta_device_counts_without_memory():
    with torch.device("meta"):
        model = add_lora(nn.Sequential(nn.Linear(4096, 4096)), ["0"], r=8, alpha=16)
    assert count_parameters(model) == (65_536, 4096 * 4096 + 4096 + 65_536)


# ---------------------------------------------------------------- properties (hypothesis)

shapes = st.tuples(st.integers(1, 24), st.integers(1, 24), st.integers(1, 8), st.integers(1, 5), st.integers(0, 2**16))


@settings(max_examples=60, deadline=None)
@given(shapes, st.floats(0.1, 64))
def test_merged_forward_equals_unmerged(shape, alpha):
    d_in, d_out, r, batch, seed = shape
    layer = make_quietly(d_in, d_out, r, alpha, seed)
    x = torch.randn(batch, d_in)
    unmerged = layer(x)
    layer.merge()
    assert torch.allclose(layer(x), unmerged, rtol=1e-5, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(shapes)
def test_merge_then_unmerge_restores_the_weight(shape):
    d_in, d_out, r, _, seed = shape
    layer = make_quietly(d_in, d_out, r, 2.0 * r, seed)
    w0 = layer.base.weight.clone()
    layer.merge()
    layer.unmerge()
    assert torch.allclose(layer.base.weight, w0, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(shapes)
def test_gradients_reach_only_a_and_b(shape):
    d_in, d_out, r, batch, seed = shape
    layer = make_quietly(d_in, d_out, r, 1.0, seed)
    layer(torch.randn(batch, d_in)).sum().backward()
    assert layer.base.weight.grad is None and layer.base.bias.grad is None
    assert layer.lora_A.grad is not None and layer.lora_B.grad is not None


@settings(max_examples=40, deadline=None)
@given(shapes)
def test_zero_b_at_init_means_the_base_output(shape):
    d_in, d_out, r, batch, seed = shape
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = LoRALinear(nn.Linear(d_in, d_out), r=r, alpha=3.0)
    x = torch.randn(batch, d_in)
    assert torch.equal(layer(x), layer.base(x))


# ---------------------------------------------------------------- bad input: clear error, nothing changed

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(r=0), LoRAConfigError, r"r must be a positive int \(the rank\), got 0; use e\.g\. r=8"),
    (dict(r=-3), LoRAConfigError, "got -3"),
    (dict(r=2.5), LoRAConfigError, "got 2.5 of type float"),
    (dict(r=True), LoRAConfigError, "of type bool"),
    (dict(alpha=0), LoRAConfigError, r"alpha must be a positive number \(the scale is alpha/r\), got 0"),
    (dict(alpha=-1.0), LoRAConfigError, "alpha must be a positive number"),
    (dict(alpha=float("nan")), LoRAConfigError, "alpha must be a positive number"),
    (dict(dropout=1.0), LoRAConfigError, r"dropout must be in \[0, 1\), got 1.0"),
    (dict(dropout=-0.1), LoRAConfigError, "dropout must be in"),
])
def test_bad_settings_on_add_lora_change_nothing(kwargs, error, match):
    model = tiny_model()
    before = snapshot(model)
    args = dict(r=2, alpha=4.0, dropout=0.0) | kwargs
    with pytest.raises(error, match=match):
        add_lora(model, ["q_proj"], **args)
    assert_unchanged(model, before)


def test_rank_above_min_in_out_warns_but_works():
    with pytest.warns(UserWarning, match=r"r=8 exceeds min\(in, out\)=4"):
        layer = LoRALinear(nn.Linear(4, 16), r=8, alpha=8)
    assert layer(torch.randn(2, 4)).shape == (2, 16)


def test_add_lora_warns_once_for_many_narrow_layers():
    with pytest.warns(UserWarning) as record:
        add_lora(tiny_model(layers=3), ["q_proj"], r=16, alpha=16)
    assert len([w for w in record if "exceeds" in str(w.message)]) == 1


def test_base_that_is_not_linear():
    with pytest.raises(LoRAConfigError, match="this layer is a Conv1d, not an nn.Linear or transformers. Conv1D"):
        LoRALinear(nn.Conv1d(3, 3, 1), r=1, alpha=1)
    model = tiny_model()
    before = snapshot(model)
    with pytest.raises(LoRAConfigError, match="'0.norm' is a LayerNorm, not an nn.Linear"):
        add_lora(model, ["norm"], r=1, alpha=1)
    assert_unchanged(model, before)


def test_targets_that_match_nothing_list_the_linear_layers():
    model = tiny_model()
    before = snapshot(model)
    with pytest.raises(LoRAConfigError, match=r"matched no module\. Linear layers in this model: \['down_proj', 'q_proj', 'up_proj', 'v_proj'\]"):
        add_lora(model, ["k_proj"], r=2, alpha=4)
    with pytest.raises(LoRAConfigError, match="target_modules is empty"):
        add_lora(model, [], r=2, alpha=4)
    assert_unchanged(model, before)


def test_wrapping_twice():
    model = add_lora(tiny_model(), ["q_proj"], r=2, alpha=4)
    before = snapshot(model)
    with pytest.raises(LoRAStateError, match="'0.q_proj' already has LoRA"):
        add_lora(model, ["q_proj"], r=2, alpha=4)
    with pytest.raises(LoRAStateError, match="already has LoRA"):
        add_lora(model, ["q_proj", "v_proj"], r=2, alpha=4)   # one of them wrapped: nothing happens to the other
    assert_unchanged(model, before)
    with pytest.raises(LoRAStateError, match="already a LoRALinear"):
        LoRALinear(model[0].q_proj, r=2, alpha=4)


def test_merging_twice_and_unmerging_unmerged_change_nothing():
    layer = make()
    with pytest.raises(LoRAStateError, match="not merged, so there is nothing to unmerge; call merge\\(\\) first"):
        layer.unmerge()
    layer.merge()
    before = snapshot(layer)
    with pytest.raises(LoRAStateError, match="already merged; merging again would add ΔW twice"):
        layer.merge()
    assert_unchanged(layer, before)


def test_merge_with_nan_adapter_leaves_weights_as_they_were():
    model = add_lora(tiny_model(), ["q_proj", "v_proj"], r=2, alpha=4)
    with torch.no_grad():
        model[1].v_proj.lora_B.fill_(float("nan"))
    before = snapshot(model)
    with pytest.raises(LoRAStateError, match="NaN or inf"):
        merge_lora(model)
    assert repr(model) == before[0]
    sd = model.state_dict()
    assert all(torch.equal(sd[k], before[1][k]) or torch.isnan(sd[k]).all() for k in sd)


def test_merge_lora_without_lora_layers():
    with pytest.raises(LoRAStateError, match="no LoRA layers to merge"):
        merge_lora(tiny_model())
