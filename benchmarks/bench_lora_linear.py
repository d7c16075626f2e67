"""Time lora_edu.LoRALinear against PEFT's LoRA Linear and a plain nn.Linear, with an ablation.

    python benchmarks/bench_lora_linear.py --device cpu  --out lora_edu/data/bench_lora_linear_cpu.json
    python benchmarks/bench_lora_linear.py --device cuda --out lora_edu/data/bench_lora_linear_gpu.json

Shapes are a realistic fine-tuning batch: 2048 tokens through a 4096×4096 (attention) and a
4096×11008 (MLP) layer, at r = 8 and 64; fp32 on CPU, bf16 on GPU. All LoRA layers hold the
same weights. Variants are timed round-robin (one run of each per round, the order rotating,
so drift in the machine's speed hits all alike) after warm-up; the minimum and the median of
the timed rounds are kept.

Variants (adapter dtype in brackets):
* ``nn.Linear``: the frozen base alone;
* ``lora_edu``: ``LoRALinear``, which multiplies B (out×r numbers) by α/r [base dtype];
* ``lora_edu, output scaled``: the ablation, ``OutputScaledLoRALinear``: the same module with
  one change, the adapter's output (tokens×out numbers) multiplied by α/r, as PEFT does [base dtype];
* ``peft``: PEFT's ``Linear`` built directly, adapters in the base's dtype, as
  ``get_peft_model(..., autocast_adapter_dtype=False)`` gives [base dtype];
* ``peft, fp32 adapters`` (only when the base is not fp32): PEFT's default through
  ``get_peft_model`` (``autocast_adapter_dtype=True`` upcasts bf16 adapters to fp32);
* ``lora_edu merged`` / ``peft merged``: ΔW folded into the weight.

Modes: ``forward`` (inference, under no_grad) and ``forward_backward`` (the input requires
grad, as in any layer but the first, and a dense random upstream gradient flows back: not
``out.sum()``, whose broadcast gradient makes every matmul copy it first). On the GPU each
timing covers 10 back-to-back calls with one synchronize, as layers run inside a model.

Per-call overhead: the same variants on a tiny layer (8 tokens, 64×64, r = 8), where the
arithmetic is negligible, timed over many calls: what is left is each module's fixed cost
per call (Python code, dispatch, kernel launches).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from bench_common import cpu_name  # benchmarks/ is on sys.path when a script there runs
from torch import nn

from lora_edu.core.lora import LoRALinear
from lora_edu.core.peft_tools import OutputScaledLoRALinear, adapter_dtype, peft_lora_linear

SHAPES = [(4096, 4096), (4096, 11008)]
RANKS = [8, 64]
TOKENS = 2048
TINY = dict(d_in=64, d_out=64, r=8, tokens=8)


def make_layers(d_in: int, d_out: int, r: int, dtype, device) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    plain = nn.Linear(d_in, d_out, dtype=dtype, device=device)
    ours = LoRALinear(nn.Linear(d_in, d_out, dtype=dtype, device=device), r=r, alpha=2 * r)
    with torch.no_grad():
        ours.lora_B.normal_()
    ablated = OutputScaledLoRALinear(nn.Linear(d_in, d_out, dtype=dtype, device=device), r=r, alpha=2 * r)
    ablated.load_state_dict(ours.state_dict())

    def peft_copy(autocast: bool) -> nn.Module:
        layer = peft_lora_linear(nn.Linear(d_in, d_out, dtype=dtype, device=device), r, 2 * r, autocast_adapter_dtype=autocast)
        with torch.no_grad():
            layer.base_layer.weight.copy_(ours.base.weight)
            layer.base_layer.bias.copy_(ours.base.bias)
            layer.lora_A["default"].weight.copy_(ours.lora_A)
            layer.lora_B["default"].weight.copy_(ours.lora_B)
        return layer

    theirs = peft_copy(False)
    ours_merged = LoRALinear(nn.Linear(d_in, d_out, dtype=dtype, device=device), r=r, alpha=2 * r)
    ours_merged.load_state_dict(ours.state_dict())
    ours_merged.merge()
    theirs_merged = peft_copy(False)
    theirs_merged.merge()
    layers = {"nn.Linear": plain, "lora_edu": ours, "lora_edu, output scaled": ablated, "peft": theirs}
    if dtype != torch.float32:
        layers["peft, fp32 adapters"] = peft_copy(True)
    layers.update({"lora_edu merged": ours_merged, "peft merged": theirs_merged})
    for layer in layers.values():  # a frozen base everywhere, as in fine-tuning
        for p in (layer.base_layer if hasattr(layer, "base_layer") else getattr(layer, "base", layer)).parameters():
            p.requires_grad_(False)
    return layers


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


def time_variants(layers: dict[str, nn.Module], x, grad, mode: str, repeats: int, warmup: int, calls: int, device: str):
    """Round-robin timings: {variant: [seconds per call, one per timed round]}."""
    times = {name: [] for name in layers}
    names = list(layers)
    for i in range(warmup + repeats):
        order = names[i % len(names):] + names[:i % len(names)]  # rotate: no variant always runs first
        for name in order:
            layers[name].zero_grad(set_to_none=True)
            t = run_batch(layers[name], x, grad, mode, calls, device)
            if i >= warmup:
                times[name].append(t)
    return times


def summarise(times: dict[str, list[float]]) -> tuple[dict, dict]:
    return ({n: statistics.median(ts) for n, ts in times.items()}, {n: min(ts) for n, ts in times.items()})


def bench(device: str, repeats: int, warmup: int, calls: int = 1) -> list[dict]:
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    rows = []
    for d_in, d_out in SHAPES:
        for r in RANKS:
            layers = make_layers(d_in, d_out, r, dtype, device)
            x = torch.randn(TOKENS, d_in, dtype=dtype, device=device)
            with torch.no_grad():  # every LoRA variant computes the same layer, up to rounding
                ours = layers["lora_edu"](x).float()
                scale = ours.abs().max().item()
                deviation = {name: (layer(x).float() - ours).abs().max().item() / scale
                             for name, layer in layers.items() if name != "nn.Linear"}
                assert max(deviation["lora_edu, output scaled"], deviation["peft"]) < 1e-2, deviation
            for mode in ("forward", "forward_backward"):
                xin = x.clone().requires_grad_(mode == "forward_backward")
                grad = torch.randn(TOKENS, d_out, dtype=dtype, device=device)
                med, low = summarise(time_variants(layers, xin, grad, mode, repeats, warmup, calls, device))
                row = dict(d_in=d_in, d_out=d_out, r=r, tokens=TOKENS, mode=mode, dtype=str(dtype),
                           adapter_dtype={n: str(adapter_dtype(m)) for n, m in layers.items() if hasattr(m, "lora_A")},
                           max_deviation_from_lora_edu=deviation, median_s=med, min_s=low,
                           ratio_lora_edu_over_peft=med["lora_edu"] / med["peft"],
                           ratio_lora_edu_over_output_scaled=med["lora_edu"] / med["lora_edu, output scaled"],
                           ratio_output_scaled_over_peft=med["lora_edu, output scaled"] / med["peft"],
                           ratio_merged_over_linear=med["lora_edu merged"] / med["nn.Linear"],
                           ratio_unmerged_over_linear=med["lora_edu"] / med["nn.Linear"],
                           extra_flops_fraction=r * (d_in + d_out) / (d_in * d_out))
                if "peft, fp32 adapters" in med:
                    row["ratio_peft_fp32_adapters_over_peft"] = med["peft, fp32 adapters"] / med["peft"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def per_call_overhead(device: str, repeats: int, calls: int) -> list[dict]:
    """Each variant's time per call on a tiny layer, in microseconds: its fixed per-call cost."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    layers = make_layers(TINY["d_in"], TINY["d_out"], TINY["r"], dtype, device)
    x = torch.randn(TINY["tokens"], TINY["d_in"], dtype=dtype, device=device)
    out = []
    for mode in ("forward", "forward_backward"):
        xin = x.clone().requires_grad_(mode == "forward_backward")
        grad = torch.randn(TINY["tokens"], TINY["d_out"], dtype=dtype, device=device)
        med, low = summarise(time_variants(layers, xin, grad, mode, repeats, 2, calls, device))
        row = dict(TINY, mode=mode, dtype=str(dtype), calls_per_timing=calls,
                   median_us={n: t * 1e6 for n, t in med.items()}, min_us={n: t * 1e6 for n, t in low.items()})
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default: 7 on CPU, 100 on GPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default: 2 on CPU, 10 on GPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = args.device == "cuda"
    repeats = args.repeats or (100 if gpu else 7)
    warmup = args.warmup or (10 if gpu else 2)
    import peft

    calls = 10 if gpu else 1
    rows = bench(args.device, repeats, warmup, calls)
    overhead = per_call_overhead(args.device, repeats=21, calls=200)
    meta = dict(device=torch.cuda.get_device_name() if gpu else cpu_name(), host_cpu=cpu_name(), machine=platform.machine(),
                cpu_threads=torch.get_num_threads(), torch=torch.__version__, peft=peft.__version__,
                python=platform.python_version(), repeats=repeats, warmup=warmup, calls_per_timing=calls,
                statistics="median_s and min_s over the timed rounds; ratios use medians")
    with open(args.out, "w") as f:
        json.dump(dict(meta=meta, rows=rows, per_call_overhead=overhead), f, indent=1)
        f.write("\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
