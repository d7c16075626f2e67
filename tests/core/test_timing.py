"""lora_edu.core.timing: the FLOP count LoRA's speed-up rests on, and the timing harness."""
import pytest
import torch

from lora_edu.core import timing


@pytest.mark.parametrize("batch, width, depth, r", [(4, 16, 1, 2), (8, 32, 3, 4), (5, 24, 4, 1)])
def test_closed_form_flops_equal_pytorchs_count(batch, width, depth, r):
    models = timing.full_and_lora(width, depth, r=r, alpha=2 * r)
    x, y = torch.randn(batch, width), torch.randn(batch, width)
    full, lora = models.values()
    assert timing.count_flops(full, x, y) == timing.linear_training_flops(batch, width, depth)
    assert timing.count_flops(lora, x, y) == timing.linear_training_flops(batch, width, depth, r=r)


def test_lora_skips_the_weight_gradient_matmuls():
    """Full backward = LoRA backward + one width×width matmul per layer − the adapters' small matmuls."""
    b, d, L, r = 16, 64, 3, 4
    full, lora = timing.linear_training_flops(b, d, L), timing.linear_training_flops(b, d, L, r=r)
    big, small = 2 * b * d * d, 2 * b * d * r
    assert full["backward"] - lora["backward"] == L * big - (3 * L + (L - 1)) * small
    # about a third of a layer's training FLOPs (forward + input gradient + weight gradient) goes
    assert timing.linear_training_flops(b, d, 1)["backward"] == big  # first layer: weight gradient only
    assert timing.linear_training_flops(b, d, 1, r=r)["backward"] == 3 * small


def test_frozen_weights_get_no_gradient_and_adapters_do():
    models = timing.full_and_lora(16, 2, r=2, alpha=4)
    x = torch.randn(3, 16)
    for model in models.values():
        model(x).sum().backward()
    full, lora = models.values()
    assert all(m.weight.grad is not None for m in full if isinstance(m, torch.nn.Linear))
    lora_layers = [m for m in lora if hasattr(m, "lora_A")]
    assert len(lora_layers) == 2
    assert all(m.base.weight.grad is None and m.base.bias.grad is None for m in lora_layers)
    assert all(m.lora_A.grad is not None and m.lora_B.grad is not None for m in lora_layers)


def test_time_steps_reports_medians_of_three_phases():
    models = timing.full_and_lora(32, 2, r=2, alpha=4)
    times = timing.time_steps(models, torch.randn(8, 32), torch.randn(8, 32), repeats=3)
    assert set(times) == set(models)
    for phases in times.values():
        assert set(phases) == {"forward", "backward", "step"} and all(s > 0 for s in phases.values())


def test_time_steps_trains_only_the_trainable_parameters():
    models = timing.full_and_lora(16, 1, r=2, alpha=4)
    lora = models["LoRA r=2"]
    before = {n: p.detach().clone() for n, p in lora.named_parameters()}
    timing.time_steps(models, torch.randn(4, 16), torch.randn(4, 16), repeats=2, lr=0.1)
    changed = sorted(n for n, p in lora.named_parameters() if not torch.equal(p, before[n]))
    assert changed == ["0.lora_A", "0.lora_B"]


def test_linear_stack_is_seeded_and_leaves_the_global_random_stream_alone():
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    a = timing.linear_stack(8, 2, seed=5)
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(a[0].weight, timing.linear_stack(8, 2, seed=5)[0].weight)
