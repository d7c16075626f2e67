"""DoRA, PiSSA, rsLoRA, LoRA+, mixed-adapter batches and QLoRA from scratch, each against PEFT (0.21.2) / bitsandbytes.

Float64 throughout where PEFT allows it, so "equal" means equal to ~1e-12: the same maths in a
different order of operations, not a looser approximation.
"""
import copy

import pytest
import torch
from torch import nn

from lora_edu.core.lora import LoRAConfigError, LoRALinear, LoRAStateError, add_lora, merge_lora
from lora_edu.core.nf4 import NF4Linear
from lora_edu.core.variants import loraplus_param_groups, mixed_batch_forward

peft = pytest.importorskip("peft")
TOL = dict(atol=1e-12, rtol=1e-10)


class Net(nn.Module):
    def __init__(self, dtype=torch.float64):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(12, 10, dtype=dtype), nn.Linear(10, 6, dtype=dtype)
        self.norm = nn.LayerNorm(6, dtype=dtype)

    def forward(self, x):
        return self.norm(self.fc2(torch.relu(self.fc1(x))))


def pair(seed=0, r=3, alpha=6, dtype=torch.float64, **peft_kw):
    """A PEFT model and a lora_edu model with identical weights (PEFT's B made non-zero first)."""
    torch.manual_seed(seed)
    base = Net(dtype)
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=["fc1", "fc2"], **peft_kw)
    ref = peft.get_peft_model(copy.deepcopy(base), config, autocast_adapter_dtype=False)
    ours = copy.deepcopy(base)
    add_lora(ours, ["fc1", "fc2"], r=r, alpha=alpha, use_rslora=peft_kw.get("use_rslora", False))
    for name in ("fc1", "fc2"):
        theirs, mine = ref.base_model.model.get_submodule(name), getattr(ours, name)
        with torch.no_grad():
            theirs.lora_B["default"].weight.normal_(0, 0.1)
            mine.base.weight.copy_(theirs.base_layer.weight)
            mine.lora_A.copy_(theirs.lora_A["default"].weight)
            mine.lora_B.copy_(theirs.lora_B["default"].weight)
    return ref, ours


def grads(model):
    return {n.replace("base_model.model.", "").replace(".default", "").replace(".weight", "")
            .replace("lora_magnitude_vector", "lora_magnitude"): p.grad for n, p in model.named_parameters() if p.requires_grad}


def test_rslora_scale_is_alpha_over_sqrt_r_as_in_peft():
    ref, ours = pair(use_rslora=True, r=4, alpha=8)
    assert ours.fc1.scaling == ref.base_model.model.fc1.scaling["default"] == 8 / 2
    x = torch.randn(5, 12, dtype=torch.float64)
    assert torch.allclose(ours(x), ref(x), **TOL)


def test_dora_equals_peft_outputs_gradients_and_merged_weights():
    ref, ours = pair(use_dora=True)
    for name in ("fc1", "fc2"):
        theirs, mine = ref.base_model.model.get_submodule(name), getattr(ours, name)
        mine.enable_dora()  # then the magnitude PEFT holds (perturbed, as if trained) is copied over
        with torch.no_grad():
            theirs.lora_magnitude_vector["default"].weight.mul_(torch.linspace(0.8, 1.2, mine.out_features, dtype=torch.float64))
            mine.lora_magnitude.copy_(theirs.lora_magnitude_vector["default"].weight)
    x = torch.randn(7, 12, dtype=torch.float64)
    out, out_ref = ours(x), ref(x)
    assert torch.allclose(out, out_ref, **TOL)
    out.square().sum().backward()
    out_ref.square().sum().backward()
    g, g_ref = grads(ours), grads(ref)
    assert set(g) == set(g_ref) and len(g) == 6  # A, B and the magnitude of each layer
    for name in g:
        assert torch.allclose(g[name], g_ref[name], **TOL), name
    merged_ref = ref.merge_and_unload()
    merge_lora(ours)
    for name in ("fc1", "fc2"):
        assert torch.allclose(getattr(ours, name).weight, merged_ref.get_submodule(name).weight, **TOL)


def test_dora_starts_equal_to_the_base_and_detaches_the_norm():
    torch.manual_seed(0)
    base = nn.Linear(8, 5, dtype=torch.float64)
    layer = LoRALinear(copy.deepcopy(base), 2, 4, use_dora=True)
    x = torch.randn(3, 8, dtype=torch.float64)
    assert torch.allclose(layer(x), base(x), **TOL)
    assert torch.allclose(layer.lora_magnitude, base.weight.norm(dim=1), **TOL)
    with torch.no_grad():
        layer.lora_B.normal_()
    # with the norm detached, the output is linear in m: the gradient of sum(out) w.r.t. m is sum over rows of (direction · x)
    layer(x).sum().backward()
    direction = layer._adapted_weight() / layer._adapted_weight().norm(dim=1, keepdim=True)
    assert torch.allclose(layer.lora_magnitude.grad, (x @ direction.T).sum(0), **TOL)
    layer.merge()
    layer.unmerge()
    assert torch.equal(layer.base.weight, base.weight)


def test_dora_on_a_merged_layer_is_refused_and_changes_nothing():
    layer = LoRALinear(nn.Linear(8, 5), 2, 4)
    layer.merge()
    before = layer.base.weight.clone()
    with pytest.raises(LoRAStateError, match="unmerge\\(\\) first"):
        layer.enable_dora()
    assert torch.equal(layer.base.weight, before) and not layer.use_dora and not hasattr(layer, "lora_magnitude")


def test_pissa_equals_peft():
    tol = dict(atol=1e-6, rtol=1e-5)  # float32: PEFT refuses PiSSA on a float64 weight
    torch.manual_seed(1)
    base = Net(torch.float32)
    ref = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=3, lora_alpha=6, target_modules=["fc1"], init_lora_weights="pissa"),
                              autocast_adapter_dtype=False)
    ours = copy.deepcopy(base)
    ours.fc1 = LoRALinear(ours.fc1, 3, 6, init="pissa")
    theirs = ref.base_model.model.fc1
    assert torch.equal(ours.fc1.lora_A, theirs.lora_A["default"].weight) and torch.equal(ours.fc1.lora_B, theirs.lora_B["default"].weight)
    assert torch.allclose(ours.fc1.base.weight, theirs.base_layer.weight, **tol)
    x = torch.randn(4, 12)
    assert torch.allclose(ours(x), base(x), **tol)  # the output is unchanged at the start ...
    assert not torch.allclose(ours.fc1.base(x), base.fc1(x), atol=1e-3)  # ... but the base is not the original
    with pytest.raises(TypeError, match="float32, float16, or bfloat16"):
        peft.get_peft_model(Net(), peft.LoraConfig(r=3, lora_alpha=6, target_modules=["fc1"], init_lora_weights="pissa"))
    # s·B·A is the best rank-3 approximation of W (Eckart–Young); in float64 here, to float64 rounding
    base = Net(torch.float64)
    layer = LoRALinear(copy.deepcopy(base.fc1), 3, 6, init="pissa")
    U, S, Vh = torch.linalg.svd(base.fc1.weight, full_matrices=False)
    assert torch.allclose(layer.delta_weight(), U[:, :3] @ torch.diag(S[:3]) @ Vh[:3], **TOL)
    assert torch.allclose(layer.base.weight + layer.delta_weight(), base.fc1.weight, **TOL)


def test_pissa_on_conv1d_and_bad_init():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    conv = transformers.pytorch_utils.Conv1D(6, 10)  # weight (in=10, out=6)
    original = conv.weight.detach().clone()
    layer = LoRALinear(conv, 2, 4, init="pissa")
    assert torch.allclose(layer.base.weight + layer.delta_weight(), original, atol=1e-6)
    with pytest.raises(LoRAConfigError, match="'default'.*'pissa'"):
        LoRALinear(nn.Linear(4, 4), 2, 4, init="olora")


def test_loraplus_groups_equal_peft_create_loraplus_optimizer():
    from peft.optimizers import create_loraplus_optimizer

    ref, _ = pair(use_dora=True)
    for p in ref.base_model.model.norm.parameters():
        p.requires_grad_(True)
    opt = create_loraplus_optimizer(ref, torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=16, loraplus_weight_decay=0.01)
    expected = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    groups = loraplus_param_groups(ref, lr=1e-3, ratio=16, weight_decay=0.01)
    got = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert got == expected and len(got) == 8
    assert sorted({lr for lr, _ in got.values()}) == [1e-3, 16e-3]
    # on lora_edu's own model: B and DoRA's magnitude at lr·ratio, A at lr
    _, ours = pair()
    ours.fc1.enable_dora()
    lrs = {n: g["lr"] for g in loraplus_param_groups(ours, 1e-3, 16) for n, p in ours.named_parameters() if any(p is q for q in g["params"])}
    assert lrs == {"fc1.lora_A": 1e-3, "fc1.lora_B": 16e-3, "fc1.lora_magnitude": 16e-3, "fc2.lora_A": 1e-3, "fc2.lora_B": 16e-3}
    with pytest.raises(LoRAConfigError, match="ratio must be a positive number"):
        loraplus_param_groups(ours, 1e-3, 0)


def test_mixed_batch_equals_each_adapter_alone_and_peft_adapter_names():
    torch.manual_seed(0)
    base = nn.Linear(12, 10, dtype=torch.float64)
    ref = peft.get_peft_model(nn.Sequential(copy.deepcopy(base)), peft.LoraConfig(r=2, lora_alpha=4, target_modules=["0"]),
                              autocast_adapter_dtype=False)
    ref.add_adapter("b", peft.LoraConfig(r=4, lora_alpha=4, target_modules=["0"]))
    shared = copy.deepcopy(base)
    adapters = {"default": LoRALinear(shared, 2, 4), "b": LoRALinear(shared, 4, 4)}
    layer = ref.base_model.model[0]
    for name, mine in adapters.items():
        with torch.no_grad():
            layer.lora_B[name].weight.normal_()
            mine.lora_A.copy_(layer.lora_A[name].weight)
            mine.lora_B.copy_(layer.lora_B[name].weight)
    x = torch.randn(6, 12, dtype=torch.float64)
    names = ["b", "default", "__base__", "b", "default", "b"]
    out = mixed_batch_forward(adapters, x, names)
    for i, n in enumerate(names):
        alone = base(x[i]) if n == "__base__" else adapters[n](x[i])
        assert torch.allclose(out[i], alone, **TOL)
    ref.eval()
    with torch.no_grad():
        assert torch.allclose(out, ref(x, adapter_names=names), **TOL)
    with pytest.raises(LoRAConfigError, match="unknown adapter names \\['c'\\]"):
        mixed_batch_forward(adapters, x, ["c"] * 6)
    with pytest.raises(LoRAConfigError, match="one per row"):
        mixed_batch_forward(adapters, x, ["b"])
    with pytest.raises(LoRAConfigError, match="different base"):
        mixed_batch_forward({"a": LoRALinear(nn.Linear(12, 10), 2, 4), **adapters}, x, names)


def test_qlora_lora_over_a_frozen_nf4_base_trains_on_cpu_and_equals_peft_on_linear4bit():
    bnb = pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    linear = nn.Linear(64, 16)
    layer = LoRALinear(NF4Linear(linear, 64, double_quant=True), 4, 8)
    x, y = torch.randn(32, 64), torch.randn(32, 16)
    opt = torch.optim.Adam([p for p in layer.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.mse_loss(layer(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]
    with pytest.raises(LoRAStateError, match="Dequantize into an nn.Linear"):
        layer.merge()
    # the same adapter on bitsandbytes' Linear4bit through PEFT: same output and gradients (to float32 rounding)
    q4 = bnb.nn.Linear4bit(64, 16, compute_dtype=torch.float32, quant_type="nf4", compress_statistics=False)
    q4.load_state_dict(linear.state_dict())
    q4 = q4.to("cpu")
    ref = peft.get_peft_model(nn.Sequential(q4), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["0"]))
    ours = LoRALinear(NF4Linear(linear, 64, double_quant=False), 4, 8)
    theirs = ref.base_model.model[0]
    with torch.no_grad():
        theirs.lora_B["default"].weight.normal_(0, 0.1)
        ours.lora_A.copy_(theirs.lora_A["default"].weight)
        ours.lora_B.copy_(theirs.lora_B["default"].weight)
    out, out_ref = ours(x), ref(x)
    assert torch.allclose(out, out_ref, atol=1e-5, rtol=1e-5)
    out.sum().backward()
    out_ref.sum().backward()
    assert torch.allclose(ours.lora_B.grad, theirs.lora_B["default"].weight.grad, atol=1e-4, rtol=1e-5)
    assert torch.allclose(ours.lora_A.grad, theirs.lora_A["default"].weight.grad, atol=1e-4, rtol=1e-5)
    with pytest.raises(LoRAConfigError, match="PiSSA needs the float weight"):
        LoRALinear(NF4Linear(linear), 4, 8, init="pissa")
