"""lora_edu.core.peft_tools: PEFT's layer built like ours, the benchmark's ablation, the committed results."""
import pytest
import torch

from lora_edu import LoRALinear
from lora_edu.core import peft_tools


def test_output_scaled_ablation_computes_the_same_layer():
    torch.manual_seed(0)
    ours = LoRALinear(torch.nn.Linear(32, 24), r=4, alpha=8)
    torch.nn.init.normal_(ours.lora_B)
    ablated = peft_tools.OutputScaledLoRALinear(torch.nn.Linear(32, 24), r=4, alpha=8)
    ablated.load_state_dict(ours.state_dict())
    x = torch.randn(5, 32, requires_grad=True)
    assert torch.allclose(ours(x), ablated(x), atol=1e-6)
    ours(x).sum().backward()
    grad_ours = ours.lora_A.grad.clone()
    ablated(x).sum().backward()
    assert torch.allclose(grad_ours, ablated.lora_A.grad, atol=1e-5)


@pytest.mark.parametrize("autocast, expected", [(False, torch.bfloat16), (True, torch.float32)])
def test_peft_adapter_dtype_follows_autocast(autocast, expected):
    layer = peft_tools.peft_lora_linear(torch.nn.Linear(16, 16, dtype=torch.bfloat16), 4, 8, autocast_adapter_dtype=autocast)
    assert peft_tools.adapter_dtype(layer) == expected
    assert layer(torch.randn(2, 16, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_committed_benchmarks_state_adapter_dtypes_and_overhead():
    for kind in ("gpu", "cpu"):
        res = peft_tools.benchmark_results(kind)
        assert all("lora_edu, output scaled" in row["median_s"] and row["adapter_dtype"] for row in res["rows"])
        assert peft_tools.extra_call_cost_us(res) > 0  # PEFT's forward does more per call than ours
