"""Time lora_edu.LoRALinear against PEFT's LoRA Linear and a plain nn.Linear.

    python benchmarks/bench_lora_linear.py --device cpu  --out lora_edu/data/bench_lora_linear_cpu.json
    python benchmarks/bench_lora_linear.py --device cuda --out lora_edu/data/bench_lora_linear_gpu.json

Shapes are a realistic fine-tuning batch: 2048 tokens through a 4096×4096 (attention) and a
4096×11008 (MLP) layer, at r = 8 and 64; fp32 on CPU, bf16 on GPU. Both LoRA layers hold the
same weights. Variants are timed round-robin (one run of each per round, the order rotating,
so drift in the machine's speed hits all alike) after warm-up, and the median is kept.

Modes: ``forward`` (inference, under no_grad) and ``forward_backward`` (the input requires
grad, as in any layer but the first, and a dense random upstream gradient flows back: not
``out.sum()``, whose broadcast gradient makes every matmul copy it first). On the GPU each
timing covers 10 back-to-back calls with one synchronize, as layers run inside a model.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch import nn

from lora_edu.core.lora import LoRALinear
from lora_edu.core.peft_tools import peft_lora_linear

SHAPES = [(4096, 4096), (4096, 11008)]
RANKS = [8, 64]
TOKENS = 2048


def make_layers(d_in: int, d_out: int, r: int, dtype, device) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    plain = nn.Linear(d_in, d_out, dtype=dtype, device=device)
    ours = LoRALinear(nn.Linear(d_in, d_out, dtype=dtype, device=device), r=r, alpha=2 * r)
    theirs = peft_lora_linear(nn.Linear(d_in, d_out, dtype=dtype, device=device), r, 2 * r)
    with torch.no_grad():
        ours.lora_B.normal_()
        theirs.base_layer.weight.copy_(ours.base.weight)
        theirs.base_layer.bias.copy_(ours.base.bias)
        theirs.lora_A["default"].weight.copy_(ours.lora_A)
        theirs.lora_B["default"].weight.copy_(ours.lora_B)
    ours_merged = LoRALinear(nn.Linear(d_in, d_out, dtype=dtype, device=device), r=r, alpha=2 * r)
    ours_merged.load_state_dict(ours.state_dict())
    ours_merged.merge()
    theirs_merged = peft_lora_linear(nn.Linear(d_in, d_out, dtype=dtype, device=device), r, 2 * r)
    theirs_merged.load_state_dict(theirs.state_dict())
    theirs_merged.merge()
    for layer in (plain, theirs, theirs_merged):  # a frozen base everywhere, as in fine-tuning
        for p in (layer.base_layer if hasattr(layer, "base_layer") else layer).parameters():
            p.requires_grad_(False)
    return {"nn.Linear": plain, "lora_edu": ours, "peft": theirs, "lora_edu merged": ours_merged, "peft merged": theirs_merged}


def run_batch(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor, mode: str, calls: int, device: str) -> float:
    """Seconds per call over ``calls`` back-to-back calls, synchronising once (as a model's layers run)."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        if mode == "forward":
            with torch.no_grad():
                layer(x)
        else:
            x.grad = None
            layer(x).backward(grad)  # a dense upstream gradient, as inside a network (not .sum()'s broadcast)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls


def bench(device: str, repeats: int, warmup: int, calls: int = 1) -> list[dict]:
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    rows = []
    for d_in, d_out in SHAPES:
        for r in RANKS:
            layers = make_layers(d_in, d_out, r, dtype, device)
            x = torch.randn(TOKENS, d_in, dtype=dtype, device=device)
            with torch.no_grad():
                ref = layers["nn.Linear"](x)
                assert torch.allclose(layers["lora_edu"](x), layers["peft"](x), rtol=1e-2, atol=1e-2 * ref.abs().max().item())
            for mode in ("forward", "forward_backward"):
                xin = x.clone().requires_grad_(mode == "forward_backward")
                grad = torch.randn(TOKENS, d_out, dtype=dtype, device=device)
                times = {name: [] for name in layers}
                names = list(layers)
                for i in range(warmup + repeats):
                    order = names[i % len(names):] + names[:i % len(names)]  # rotate: no variant always runs first
                    for name in order:
                        layers[name].zero_grad(set_to_none=True)
                        t = run_batch(layers[name], xin, grad, mode, calls, device)
                        if i >= warmup:
                            times[name].append(t)
                med = {name: statistics.median(ts) for name, ts in times.items()}
                row = dict(d_in=d_in, d_out=d_out, r=r, tokens=TOKENS, mode=mode, dtype=str(dtype), median_s=med,
                           ratio_lora_edu_over_peft=med["lora_edu"] / med["peft"],
                           ratio_merged_over_linear=med["lora_edu merged"] / med["nn.Linear"],
                           ratio_unmerged_over_linear=med["lora_edu"] / med["nn.Linear"],
                           extra_flops_fraction=r * (d_in + d_out) / (d_in * d_out))
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def cpu_name() -> str:
    """The CPU's model name where Linux tells it (platform.processor() is often empty there)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default: 7 on CPU, 50 on GPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default: 2 on CPU, 10 on GPU)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    gpu = args.device == "cuda"
    repeats = args.repeats or (50 if gpu else 7)
    warmup = args.warmup or (10 if gpu else 2)
    import peft

    calls = 10 if gpu else 1
    rows = bench(args.device, repeats, warmup, calls)
    meta = dict(device=torch.cuda.get_device_name() if gpu else cpu_name(),
                cpu_threads=torch.get_num_threads(), torch=torch.__version__, peft=peft.__version__,
                python=platform.python_version(), repeats=repeats, warmup=warmup, calls_per_timing=calls)
    with open(args.out, "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
