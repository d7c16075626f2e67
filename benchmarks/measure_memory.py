"""Measure the GPU memory of fine-tuning LLaMA-style models, to prove notebook 01's calculator.

Run on a CUDA machine (no download: every model is built from a config, random init):

    python benchmarks/measure_memory.py --out lora_edu/data/memory_measurements.json

For each model size (about 60 M to 3 B parameters), batch 1 and 4, sequence 512, SDPA attention,
no gradient checkpointing, it reads ``torch.cuda.max_memory_allocated`` for

  (a) full_fp32   full fine-tuning in fp32, AdamW
  (b) full_bf16   full fine-tuning with bf16 weights, gradients and AdamW state
  (c) lora_qv     LoRA r=8 on q_proj, v_proj over a frozen bf16 base, fp32 adapters (PEFT's default)
  (d) lora_all    LoRA r=16 on every linear layer but the output head, same dtypes as (c)
  (e) infer_bf16  bf16 inference (no grad)

Each training case runs one step first (so AdamW's state exists), then measures the "static"
memory after a step (weights + gradients + optimizer state) and the peak of a second step,
phase by phase (forward, backward, optimizer step). Where a case runs out of memory it is
recorded as such, not skipped silently.
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import time

import torch

from lora_edu.core.memory import MEASURED_CASES, MEASURED_MODELS, PRESETS  # the one table of sizes and cases

SEQ_LEN = 512
BATCHES = (1, 4)
MODELS = {name: PRESETS[name] for name in MEASURED_MODELS}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def build(arch: dict, case: dict):
    from transformers import LlamaConfig, LlamaForCausalLM

    arch = {"num_key_value_heads": arch["num_attention_heads"], **arch}
    config = LlamaConfig(max_position_embeddings=SEQ_LEN, tie_word_embeddings=False, use_cache=False,
                         attn_implementation="sdpa", **arch)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(DTYPES[case["weight_dtype"]])
    if case["method"] == "lora":
        from peft import LoraConfig, get_peft_model

        r = case["lora_r"]
        model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=list(case["lora_targets"]),
                                                 bias="none", task_type="CAUSAL_LM"))
    return model


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def measure(arch: dict, case: dict, batch: int) -> dict:
    mib = torch.cuda.memory_allocated
    model = build(arch, case)
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    ids = torch.randint(0, 32000, (batch, SEQ_LEN), device="cuda")
    torch.cuda.synchronize()
    row = dict(params=sum(p.numel() for p in params), trainable=sum(p.numel() for p in trainable),
               weight_bytes=tensor_bytes(params), after_load=mib())

    if case["method"] == "inference":
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            model(input_ids=ids).logits.sum().item()
        row.update(peak=torch.cuda.max_memory_allocated())
        return row

    opt = torch.optim.AdamW(trainable, lr=1e-5)

    def forward():
        return model(input_ids=ids, labels=ids).loss

    forward().backward()                         # step 1: creates gradients and AdamW state
    opt.step()
    torch.cuda.synchronize()
    row.update(static_after_step=mib(), grad_bytes=tensor_bytes(p.grad for p in trainable),
               optimizer_bytes=tensor_bytes(t for s in opt.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0))
    opt.zero_grad(set_to_none=True)
    row["before_step2"] = mib()

    peaks = {}
    torch.cuda.reset_peak_memory_stats()
    loss = forward()
    torch.cuda.synchronize()
    row["after_forward"], peaks["forward"] = mib(), torch.cuda.max_memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    loss.backward()
    del loss
    torch.cuda.synchronize()
    row["after_backward"], peaks["backward"] = mib(), torch.cuda.max_memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    opt.step()
    torch.cuda.synchronize()
    peaks["step"] = torch.cuda.max_memory_allocated()
    row.update(peak_forward=peaks["forward"], peak_backward=peaks["backward"], peak_step=peaks["step"], peak=max(peaks.values()))
    del opt
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="lora_edu/data/memory_measurements.json")
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    args = parser.parse_args()
    import peft
    import transformers

    results = dict(device=torch.cuda.get_device_name(), total_memory=torch.cuda.get_device_properties(0).total_memory,
                   torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__,
                   python=platform.python_version(), seq_len=SEQ_LEN, optimizer="torch.optim.AdamW (default: foreach)",
                   attention="sdpa", gradient_checkpointing=False, models=MODELS, cases=MEASURED_CASES,
                   runs=[])
    for name in args.models:
        for case_name, case in MEASURED_CASES.items():
            for batch in BATCHES:
                gc.collect()
                torch.cuda.empty_cache()
                start = time.perf_counter()
                try:
                    row = measure(MODELS[name], case, batch)
                except torch.OutOfMemoryError:
                    row = dict(oom=True)
                row.update(model=name, case=case_name, batch=batch, seconds=round(time.perf_counter() - start, 2))
                results["runs"].append(row)
                print(json.dumps(row), flush=True)
                gc.collect()
                torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
