"""Measure the GPU memory of fine-tuning LLaMA-style models, to prove notebook 01's calculator.

Run on a CUDA machine (no download: every model is built from a config, random init):

    python benchmarks/measure_memory.py --out lora_edu/data/memory_measurements.json

Check it anywhere first (a tiny config on the CPU; every case is built and stepped, no memory is read):

    python benchmarks/measure_memory.py --dry-run

Two grids, one row per (model, case, batch × sequence), with SDPA attention:

* calculator v1 (``V1_CASES``, batch 1 and 4 × 512, models of 60 M to 3.4 B parameters): full
  fine-tuning in fp32 and bf16, LoRA on q,v (r=8) and on every linear layer (r=16) over a frozen
  bf16 base with fp32 adapters (PEFT's default), bf16 inference;
* calculator v2 (every case of ``MEASURED_CASES``, batch 4 × 512 and 2 × 2048, models of 370 M to
  3.4 B parameters and Llama-3.2-1B's shape: GQA, a 128k vocabulary, tied embeddings): the v1 cases
  plus transformers' gradient checkpointing (non-reentrant, every decoder layer), the QLoRA recipe
  (``BitsAndBytesConfig(load_in_4bit, nf4, bf16 compute[, double quant])`` →
  ``prepare_model_for_kbit_training`` → ``get_peft_model``), gradients kept between steps
  (``zero_grad(set_to_none=False)``) and bitsandbytes' 8-bit AdamW.

Each training case runs one step first (so the optimizer's state exists), then measures the
"static" memory after a step and the peak of a second step, phase by phase (forward, backward,
optimizer step), with ``torch.cuda.max_memory_allocated``. A case that runs out of memory is
recorded as such, not skipped silently. The QLoRA recipe loads through ``from_pretrained`` (the
only way transformers quantizes), so those models are first saved, random, to a local folder.
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from lora_edu.core.memory import MEASURED_CASES, PRESETS  # the one table of sizes and cases

V1_MODELS = ("llama-60m", "llama-130m", "llama-370m", "llama-1.3b", "llama-3.4b")
V1_CASES = ("full_fp32", "full_bf16", "lora_qv", "lora_all", "infer_bf16")
V1_SHAPES = ((1, 512), (4, 512))
V2_MODELS = ("llama-370m", "llama-1.3b", "llama-3.4b", "llama-3.2-1b")
V2_SHAPES = ((4, 512), (2, 2048))
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LLAMA_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "vocab_size", "tie_word_embeddings")


def grid() -> list[tuple[str, str, int, int]]:
    """(model, case, batch, seq_len) of every run, v1 grid first."""
    runs = [(m, c, b, s) for m in V1_MODELS for c in V1_CASES for b, s in V1_SHAPES]
    runs += [(m, c, b, s) for m in V2_MODELS for c in MEASURED_CASES for b, s in V2_SHAPES
             if not (c in V1_CASES and m in V1_MODELS and (b, s) in V1_SHAPES)]
    return runs


def llama_config(arch: dict, seq_len: int):
    from transformers import LlamaConfig

    arch = {"num_key_value_heads": arch["num_attention_heads"], "tie_word_embeddings": False, **arch}
    return LlamaConfig(max_position_embeddings=seq_len, use_cache=False, attn_implementation="sdpa",
                       **{k: arch[k] for k in LLAMA_KEYS})


def _enable_checkpointing(model) -> None:
    """transformers' checkpointing of every decoder layer, non-reentrant (its default); the method was renamed in v5."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def build(arch: dict, case: dict, seq_len: int, device: str, folders: dict):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    config = llama_config(arch, seq_len)
    torch.manual_seed(0)
    if case.get("quantization"):
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        key = json.dumps(arch, sort_keys=True)
        if key not in folders:  # the recipe starts from a checkpoint: save a random bf16 one, once per model
            folders[key] = tempfile.mkdtemp(prefix="lora_edu_qlora_")
            with torch.device(device):
                LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folders[key])
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
        bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=case["quantization"],
                                 bnb_4bit_compute_dtype=torch.bfloat16,
                                 bnb_4bit_use_double_quant=case.get("double_quant", False))
        model = LlamaForCausalLM.from_pretrained(folders[key], quantization_config=bnb, dtype=torch.bfloat16,
                                                 device_map={"": 0 if device == "cuda" else "cpu"})
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=case.get("gradient_checkpointing", False),
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        with torch.device(device):
            model = LlamaForCausalLM(config).to(DTYPES[case["weight_dtype"]])
        if case.get("gradient_checkpointing"):
            _enable_checkpointing(model)
    if case["method"] == "lora":
        r = case["lora_r"]
        model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=list(case["lora_targets"]),
                                                 bias="none", task_type="CAUSAL_LM"))
    model.train(case["method"] != "inference")  # checkpointing acts only in training mode
    return model


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def quant_state_bytes(model) -> int:
    """bitsandbytes' 4-bit block scales (absmax, code; with double quantization their own scales), not parameters."""
    total = 0
    for p in model.parameters():
        state = getattr(p, "quant_state", None)
        while state is not None:
            total += tensor_bytes(t for t in (state.absmax, state.code, getattr(state, "offset", None)) if torch.is_tensor(t))
            state = getattr(state, "state2", None)
    return total


class Meter:
    """torch.cuda's counters, or zeros on the CPU (the dry run checks the code path, not the numbers)."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"

    def now(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.memory_allocated()
        return 0

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return 0


def make_optimizer(case: dict, params):
    if case.get("optimizer", "adamw") == "adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=1e-5)
    return torch.optim.AdamW(params, lr=1e-5)


def measure(arch: dict, case: dict, batch: int, seq_len: int, device: str = "cuda", folders: dict | None = None) -> dict:
    meter = Meter(device)
    model = build(arch, case, seq_len, device, {} if folders is None else folders)
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    ids = torch.randint(0, arch["vocab_size"], (batch, seq_len), device=device)
    row = dict(params=sum(p.numel() for p in params), trainable=sum(p.numel() for p in trainable),
               weight_bytes=tensor_bytes(params), buffer_bytes=tensor_bytes(model.buffers()),
               quant_state_bytes=quant_state_bytes(model), after_load=meter.now())

    if case["method"] == "inference":
        meter.reset()
        with torch.no_grad():
            model(input_ids=ids).logits.sum().item()
        row.update(peak=meter.peak())
        return row

    opt = make_optimizer(case, trainable)

    def forward():
        return model(input_ids=ids, labels=ids).loss

    forward().backward()                         # step 1: creates gradients and the optimizer's state
    opt.step()
    row.update(static_after_step=meter.now(), grad_bytes=tensor_bytes(p.grad for p in trainable),
               optimizer_bytes=tensor_bytes(t for s in opt.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0))
    opt.zero_grad(set_to_none=case.get("set_to_none", True))
    row["before_step2"] = meter.now()

    peaks = {}
    meter.reset()
    loss = forward()
    row["after_forward"], peaks["forward"] = meter.now(), meter.peak()
    meter.reset()
    loss.backward()
    del loss
    row["after_backward"], peaks["backward"] = meter.now(), meter.peak()
    meter.reset()
    opt.step()
    peaks["step"] = meter.peak()
    row.update(peak_forward=peaks["forward"], peak_backward=peaks["backward"], peak_step=peaks["step"], peak=max(peaks.values()))
    del opt
    return row


TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=100, tie_word_embeddings=True)


def dry_run() -> list[dict]:
    """Every case on a tiny GQA model with tied embeddings, on the CPU: builds, two steps, the row's keys."""
    rows, folders = [], {}
    for name, case in MEASURED_CASES.items():
        if case.get("optimizer") == "adamw_8bit" or case.get("quantization"):
            try:
                import bitsandbytes  # noqa: F401
            except ImportError:
                continue
        row = measure(TINY, case, batch=2, seq_len=16, device="cpu", folders=folders)
        rows.append(dict(row, case=name))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="lora_edu/data/memory_measurements.json")
    parser.add_argument("--models", nargs="*", help="only these models (default: both grids)")
    parser.add_argument("--cases", nargs="*", help="only these cases")
    parser.add_argument("--dry-run", action="store_true", help="every case on a tiny model on the CPU; writes nothing")
    args = parser.parse_args()
    if args.dry_run:
        for row in dry_run():
            print(json.dumps(row))
        return
    import peft
    import transformers

    try:
        import bitsandbytes
        bnb_version = bitsandbytes.__version__
    except ImportError:
        bnb_version = None
    runs = [r for r in grid() if (not args.models or r[0] in args.models) and (not args.cases or r[1] in args.cases)]
    results = dict(device=torch.cuda.get_device_name(), total_memory=torch.cuda.get_device_properties(0).total_memory,
                   torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__,
                   bitsandbytes=bnb_version, python=platform.python_version(), seq_len=512,
                   optimizer="torch.optim.AdamW (default: foreach), or bitsandbytes.optim.AdamW8bit where the case says",
                   attention="sdpa", models={m: PRESETS[m] for m in dict.fromkeys(r[0] for r in runs)},
                   cases={c: MEASURED_CASES[c] for c in dict.fromkeys(r[1] for r in runs)}, runs=[])
    folders: dict = {}
    for name, case_name, batch, seq_len in runs:
        gc.collect()
        torch.cuda.empty_cache()
        start = time.perf_counter()
        try:
            row = measure(PRESETS[name], MEASURED_CASES[case_name], batch, seq_len, folders=folders)
        except torch.OutOfMemoryError:
            row = dict(oom=True)
        row.update(model=name, case=case_name, batch=batch, seq_len=seq_len, seconds=round(time.perf_counter() - start, 2))
        results["runs"].append(row)
        print(json.dumps(row), flush=True)
        gc.collect()
        torch.cuda.empty_cache()
        Path(args.out).write_text(json.dumps(results, indent=1))  # after every run: a timeout keeps what was measured
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
