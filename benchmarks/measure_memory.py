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

Round 2 (``--round 2``, issue 25; every case of ``ROUND2_CASES`` on the v2 models and shapes, on one
card): PyTorch's three AdamW implementations (``foreach``, the default on CUDA; the for-loop,
``foreach=False``; ``fused=True``) on full fine-tuning and LoRA, the QLoRA paper's own recipe
(artidoro/qlora ``qlora.py``, ``get_accelerate_model`` with ``--bf16``: adapters cast to bf16, norms to
fp32, embedding and head back to bf16, the forward pass under bf16 autocast as the Trainer's ``--bf16``
runs it, bitsandbytes' paged 32-bit AdamW) beside PEFT's (``prepare_model_for_kbit_training``), full
fine-tuning and LoRA of LLaMA-7B itself, the card's memory as PyTorch and nvidia-smi report it, and a
census of what autograd saves per decoder layer under each QLoRA recipe. It writes
``lora_edu/data/memory_measurements_round2.json``:

    python benchmarks/measure_memory.py --round 2

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
from collections import Counter
from pathlib import Path

import torch

from lora_edu.core.memory import MEASURED_CASES, PRESETS  # the one table of sizes and cases

V1_MODELS = ("llama-60m", "llama-130m", "llama-370m", "llama-1.3b", "llama-3.4b")
V1_CASES = ("full_fp32", "full_bf16", "lora_qv", "lora_all", "infer_bf16")
V1_SHAPES = ((1, 512), (4, 512))
V2_MODELS = ("llama-370m", "llama-1.3b", "llama-3.4b", "llama-3.2-1b")
V2_SHAPES = ((4, 512), (2, 2048))
V2_CASES = tuple(MEASURED_CASES)[:15]  # calculator v2's cases (issue 16); later rounds add theirs after them
#: Round 2 (issue 25): the AdamW implementations, the QLoRA paper's recipe, and PEFT's at the paper's rank (same
#: AdamW), each beside the v1 cases they vary, re-measured on the same card.
ROUND2_CASES = ("full_fp32", "full_fp32_forloop", "full_fp32_fused", "full_bf16", "full_bf16_forloop", "full_bf16_fused",
                "lora_all", "lora_all_forloop", "lora_all_fused", "qlora_paper", "qlora_paper_no_ckpt", "qlora_paper_adamw",
                "qlora_peft_r64")
#: LLaMA-7B itself at 1 × 512 (fits one 80 GB card with bf16 moments): the notebook's own model, measured.
ROUND2_7B = tuple(("llama-7b", c, 1, 512) for c in ("full_bf16", "full_bf16_forloop", "full_bf16_fused", "lora_qv"))
#: Small shapes whose saved tensors ``census`` lists, layer by layer (MHA, then GQA).
CENSUS_ARCHS = {"mha": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=1, num_attention_heads=4,
                            num_key_value_heads=4, vocab_size=1000, tie_word_embeddings=False),
                "gqa": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=1, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=1000, tie_word_embeddings=False)}
CENSUS_CASES = ("qlora_paper_no_ckpt", "qlora_peft_r64", "lora_all")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LLAMA_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "vocab_size", "tie_word_embeddings")


def grid() -> list[tuple[str, str, int, int]]:
    """(model, case, batch, seq_len) of every run, v1 grid first."""
    runs = [(m, c, b, s) for m in V1_MODELS for c in V1_CASES for b, s in V1_SHAPES]
    runs += [(m, c, b, s) for m in V2_MODELS for c in V2_CASES for b, s in V2_SHAPES
             if not (c in V1_CASES and m in V1_MODELS and (b, s) in V1_SHAPES)]
    return runs


def grid_round2() -> list[tuple[str, str, int, int]]:
    """(model, case, batch, seq_len) of round 2: LLaMA-7B first, then every case of ``ROUND2_CASES``."""
    return list(ROUND2_7B) + [(m, c, b, s) for c in ROUND2_CASES for m in V2_MODELS for b, s in V2_SHAPES]


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
        model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=case.get("lora_dropout", 0.0),
                                                 target_modules=list(case["lora_targets"]), bias="none", task_type="CAUSAL_LM"))
    if case.get("qlora_recipe") == "paper":
        paper_casts(model)
    model.train(case["method"] != "inference")  # checkpointing acts only in training mode
    return model


def paper_casts(model) -> None:
    """What artidoro/qlora's ``get_accelerate_model`` does after ``get_peft_model`` with ``--bf16`` (qlora.py, lines 396-405).

    LoRA layers to bf16, every module whose name holds "norm" to fp32, and ``lm_head`` / ``embed_tokens``
    back to bf16 where ``prepare_model_for_kbit_training`` had made them fp32. Written from the
    repository's code (read, not copied): the same three rules, in the same order.
    """
    from peft.tuners.lora import LoraLayer

    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            module.to(torch.bfloat16)
        if "norm" in name:
            module.to(torch.float32)
        if ("lm_head" in name or "embed_tokens" in name) and getattr(module, "weight", None) is not None:
            if module.weight.dtype == torch.float32:
                module.to(torch.bfloat16)


def autocast(case: dict, device: str):
    """The forward pass's autocast: bf16 for the QLoRA paper's recipe (the Trainer's ``--bf16``), none otherwise."""
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=case.get("qlora_recipe") == "paper")


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

    def peak_reserved(self) -> int:
        """What the caching allocator held at most: the peak plus its spare blocks (what the card must hold)."""
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_reserved()
        return 0


#: torch.optim.AdamW's arguments for each implementation (``foreach``: PyTorch's default on CUDA, said explicitly).
ADAMW_IMPL_ARGS = {"foreach": dict(foreach=True), "for-loop": dict(foreach=False), "fused": dict(fused=True)}


def make_optimizer(case: dict, params):
    name = case.get("optimizer", "adamw")
    if name in ("adamw_8bit", "paged_adamw_32bit"):
        import bitsandbytes as bnb

        cls = bnb.optim.AdamW8bit if name == "adamw_8bit" else bnb.optim.PagedAdamW32bit
        return cls(params, lr=1e-5)
    impl = case.get("adamw_impl")
    return torch.optim.AdamW(params, lr=1e-5, **(ADAMW_IMPL_ARGS[impl] if impl else {}))


def paged_bytes(opt) -> int:
    """bitsandbytes' paged optimizer state: CUDA managed memory, outside PyTorch's allocator and its counters."""
    return tensor_bytes(t for s in opt.state.values() for t in s.values() if torch.is_tensor(t) and getattr(t, "is_paged", False))


def measure(arch: dict, case: dict, batch: int, seq_len: int, device: str = "cuda", folders: dict | None = None) -> dict:
    meter = Meter(device)
    resident_before = meter.now()   # what earlier work left allocated in this process: 0 when the run is clean
    model = build(arch, case, seq_len, device, {} if folders is None else folders)
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    ids = torch.randint(0, arch["vocab_size"], (batch, seq_len), device=device)
    row = dict(params=sum(p.numel() for p in params), trainable=sum(p.numel() for p in trainable),
               weight_bytes=tensor_bytes(params), buffer_bytes=tensor_bytes(model.buffers()),
               quant_state_bytes=quant_state_bytes(model), after_load=meter.now(), resident_before=resident_before)

    if case["method"] == "inference":
        meter.reset()
        with torch.no_grad():
            model(input_ids=ids).logits.sum().item()
        row.update(peak=meter.peak())
        return row

    opt = make_optimizer(case, trainable)

    def forward():
        with autocast(case, device):
            return model(input_ids=ids, labels=ids).loss

    forward().backward()                         # step 1: creates gradients and the optimizer's state
    opt.step()
    row.update(static_after_step=meter.now(), grad_bytes=tensor_bytes(p.grad for p in trainable),
               optimizer_bytes=tensor_bytes(t for s in opt.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0),
               paged_bytes=paged_bytes(opt), trainable_dtypes=sorted({str(p.dtype) for p in trainable}))
    opt.zero_grad(set_to_none=case.get("set_to_none", True))
    row["before_step2"] = meter.now()

    peaks, reserved = {}, []
    meter.reset()
    loss = forward()
    row["after_forward"], peaks["forward"] = meter.now(), meter.peak()
    reserved.append(meter.peak_reserved())
    meter.reset()
    loss.backward()
    del loss
    row["after_backward"], peaks["backward"] = meter.now(), meter.peak()
    reserved.append(meter.peak_reserved())
    meter.reset()
    opt.step()
    peaks["step"] = meter.peak()
    reserved.append(meter.peak_reserved())
    row.update(peak_forward=peaks["forward"], peak_backward=peaks["backward"], peak_step=peaks["step"], peak=max(peaks.values()),
               peak_reserved=max(reserved))
    del opt
    return row


def saved_tensors(arch: dict, case: dict, batch: int, seq_len: int, device: str, folders: dict) -> Counter:
    """What autograd saves in one forward pass (distinct storages, parameters excluded), as a Counter of
    (dtype, shape, bytes); checkpointing off, the case's own autocast."""
    case = dict(case, gradient_checkpointing=False)
    model = build(arch, case, seq_len, device, folders)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, tuple] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params and st.nbytes():
            seen.setdefault(st.data_ptr(), (str(t.dtype).replace("torch.", ""), tuple(t.shape), st.nbytes()))
        return t

    torch.manual_seed(0)
    ids = torch.randint(0, arch["vocab_size"], (batch, seq_len), device=device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(case, device):
        loss = model(input_ids=ids, labels=ids).loss
    del loss, model
    return Counter(seen.values())


def census(case_name: str, arch: dict, batch: int = 2, seq_len: int = 64, device: str = "cuda") -> dict:
    """Bytes autograd saves per token in one decoder layer (a 2-layer model minus a 1-layer one), and the tensors."""
    case = MEASURED_CASES[case_name]
    one = saved_tensors(dict(arch, num_hidden_layers=1), case, batch, seq_len, device, {})
    two = saved_tensors(dict(arch, num_hidden_layers=2), case, batch, seq_len, device, {})
    layer = two - one
    extra = sum(n * b for (_, _, b), n in layer.items())
    missing = sum(n * b for (_, _, b), n in (one - two).items())
    return dict(case=case_name, arch=arch, batch=batch, seq_len=seq_len,
                bytes_per_token_layer=(extra - missing) / (batch * seq_len),
                layer_tensors=sorted([dtype, list(shape), b, n] for (dtype, shape, b), n in layer.items()),
                removed_tensors=sorted([dtype, list(shape), b, n] for (dtype, shape, b), n in (one - two).items()),
                one_layer_model=sorted([dtype, list(shape), b, n] for (dtype, shape, b), n in one.items()))


def card_facts() -> dict:
    """The card's memory as PyTorch and nvidia-smi report it, and what the CUDA context and cuBLAS take."""
    import subprocess

    props = torch.cuda.get_device_properties(0)
    torch.cuda.init()
    torch.empty(1, device="cuda")                      # creates the CUDA context, allocates (almost) nothing
    torch.cuda.synchronize()
    free_ctx, total = torch.cuda.mem_get_info()
    a = torch.randn(256, 256, device="cuda")
    (a @ a).sum().item()                              # cuBLAS: its handle and workspace
    torch.cuda.synchronize()
    free_blas, _ = torch.cuda.mem_get_info()
    allocated_blas = torch.cuda.memory_allocated()
    del a
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,memory.used,memory.free,driver_version",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        smi = f"nvidia-smi failed: {exc}"
    return dict(name=props.name, total_memory=props.total_memory, mem_get_info_total=total,
                free_after_context=free_ctx, free_after_cublas=free_blas, allocated_after_cublas=allocated_blas,
                nvidia_smi=smi)


def _release() -> None:
    """Free what the last case left, cuBLAS's workspaces too (as a fresh training process would start)."""
    gc.collect()
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None and torch.cuda.is_available():
        clear()
    torch.cuda.empty_cache()


def _card_facts_in_child() -> dict:
    """:func:`card_facts` in a fresh process, so that nothing it allocates stays in the measuring one."""
    import subprocess
    import sys

    code = "import json, sys; sys.path.insert(0, 'benchmarks'); import measure_memory; print(json.dumps(measure_memory.card_facts()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


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
    parser.add_argument("--round", type=int, choices=(1, 2), default=1,
                        help="1: the v1 and v2 grids (155 runs); 2: issue 25's cases, the card and the census")
    parser.add_argument("--out", help="default: lora_edu/data/memory_measurements.json (round 1), "
                                      "memory_measurements_round2.json (round 2)")
    parser.add_argument("--models", nargs="*", help="only these models (default: the round's grid)")
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
    out = Path(args.out or f"lora_edu/data/memory_measurements{'_round2' if args.round == 2 else ''}.json")
    # The card's facts in a child process: probing them here left cuBLAS's workspace (32 MiB) allocated in this process,
    # and a first round-2 run counted it in every case (26-32 MiB above round 1's numbers for the same case).
    card = _card_facts_in_child() if args.round == 2 else None
    every = grid_round2() if args.round == 2 else grid()
    runs = [r for r in every if (not args.models or r[0] in args.models) and (not args.cases or r[1] in args.cases)]
    results = dict(device=torch.cuda.get_device_name(), total_memory=torch.cuda.get_device_properties(0).total_memory,
                   torch=torch.__version__, transformers=transformers.__version__, peft=peft.__version__,
                   bitsandbytes=bnb_version, python=platform.python_version(), seq_len=512,
                   optimizer="torch.optim.AdamW (default: foreach; the case's adamw_impl where it names one), or "
                             "bitsandbytes.optim.AdamW8bit / PagedAdamW32bit where the case says",
                   attention="sdpa", models={m: PRESETS[m] for m in dict.fromkeys(r[0] for r in runs)},
                   cases={c: MEASURED_CASES[c] for c in dict.fromkeys(r[1] for r in runs)}, runs=[])
    if card:
        results["card"] = card
        print(json.dumps(card), flush=True)
        out.write_text(json.dumps(results, indent=1))
    folders: dict = {}
    for name, case_name, batch, seq_len in runs:
        _release()
        start = time.perf_counter()
        try:
            row = measure(PRESETS[name], MEASURED_CASES[case_name], batch, seq_len, folders=folders)
        except torch.OutOfMemoryError:
            row = dict(oom=True)
        except Exception as exc:  # noqa: BLE001 - recorded, not hidden: the next runs still matter
            if args.round == 1:
                raise
            row = dict(error=repr(exc))
        row.update(model=name, case=case_name, batch=batch, seq_len=seq_len, seconds=round(time.perf_counter() - start, 2))
        results["runs"].append(row)
        print(json.dumps(row), flush=True)
        _release()
        out.write_text(json.dumps(results, indent=1))  # after every run: a timeout keeps what was measured
    if card:  # after the runs: its matmuls would otherwise leave cuBLAS's workspace allocated during them
        results["census"] = []
        for case_name in CENSUS_CASES:
            for arch in CENSUS_ARCHS.values():
                try:
                    row = census(case_name, arch)
                except Exception as exc:  # noqa: BLE001 - a census that fails is recorded, the runs go on
                    row = dict(case=case_name, arch=arch, error=repr(exc))
                results["census"].append(row)
                print(json.dumps({k: v for k, v in row.items() if k not in ("layer_tensors", "one_layer_model")}), flush=True)
                gc.collect()
                torch.cuda.empty_cache()
        out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
