"""Train a LLaMA-style model under FSDP2 on N processes and record each rank's memory, for lora_edu.core.sharding.

Launch with torchrun (no download: every model is built from a config, random init):

    torchrun --nproc-per-node 2 benchmarks/fsdp_lora.py --device cuda --out lora_edu/data/fsdp_measurements.json
    torchrun --nproc-per-node 2 benchmarks/fsdp_lora.py --device cpu --models tiny --out /tmp/fsdp_cpu.json

Each decoder layer is its own ``fully_shard`` group and the whole model the root (FSDP2's usual
wrapping, full sharding, no mixed-precision policy: the weights are built in the case's dtype, as
``benchmarks/measure_memory.py`` builds them), LoRA through PEFT (``lora_edu``'s ``add_lora`` with
``--lora-impl lora_edu``: adapters in the base's dtype), AdamW. One step first (so AdamW's state
exists), then each rank records its shards after the step: the bytes of its parameters, gradients
and optimizer state (storage actually allocated, and the numbers held) and, on a GPU,
``torch.cuda.memory_allocated`` then and the peak (``max_memory_allocated``) of a second step,
phase by phase (all in this process: the cuBLAS workspace included, as in the calculator; what
was allocated before the case began is recorded as ``baseline``).
``--device cpu`` uses the gloo backend and records the shards only (no peak):
``tests/core/test_sharding.py`` runs it so, on 2 processes. ``--backend gloo`` on cuda lets
two ranks share one GPU (each process's allocations are its own), a rehearsal of the two-GPU
run on a one-GPU machine. Rank 0 writes the JSON.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time

import torch
import torch.distributed as dist

from lora_edu.core.memory import MEASURED_CASES, PRESETS

#: A tiny LLaMA whose every dim-0 size is odd or small, so that sharding over 2 ranks pads
#: (vocabulary 101, MLP 77, LoRA rank 3) and ranks hold different amounts: the CPU test's model.
TINY = dict(hidden_size=48, intermediate_size=77, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=101)
TINY_CASES = {
    "full_fp32": dict(method="full", weight_dtype="fp32"),
    "lora_fp32": dict(method="lora", weight_dtype="fp32", adapter_dtype="fp32", lora_r=3,
                      lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")),
}
GPU_MODELS = ("llama-370m", "llama-1.3b")
GPU_CASES = ("full_bf16", "lora_qv", "lora_all", "full_bf16_ckpt", "lora_all_ckpt")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _supported(case: dict) -> bool:
    """Cases this script can run as the calculator describes them: training, torch's AdamW, no 4-bit weights, set_to_none."""
    keys = {"method", "weight_dtype", "adapter_dtype", "lora_r", "lora_targets", "gradient_checkpointing"}
    return case["method"] != "inference" and set(case) <= keys


def build(arch: dict, case: dict, device: torch.device, seq_len: int, lora_impl: str):
    """The case's model on ``device`` (random init, seed 0), LoRA applied, not yet sharded."""
    from transformers import LlamaConfig, LlamaForCausalLM

    arch = {"num_key_value_heads": arch["num_attention_heads"], **arch}
    config = LlamaConfig(max_position_embeddings=seq_len, tie_word_embeddings=False, use_cache=False,
                         attn_implementation="sdpa", **arch)
    torch.manual_seed(0)
    with device:
        model = LlamaForCausalLM(config).to(DTYPES[case["weight_dtype"]])
    if case.get("gradient_checkpointing"):
        from measure_memory import _enable_checkpointing  # the single-GPU benchmark's way (this folder is on sys.path)

        _enable_checkpointing(model)
    model.train()
    if case["method"] == "lora":
        r, targets = case["lora_r"], list(case["lora_targets"])
        if lora_impl == "peft":
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=targets,
                                                     bias="none", task_type="CAUSAL_LM"))
        else:
            from lora_edu.core.lora import add_lora

            add_lora(model, targets, r=r, alpha=2 * r)
    return model


def calculator_settings(case: dict, lora_impl: str) -> dict:
    """The case as lora_edu.core.memory.estimate settings (lora_edu's adapters take the base's dtype)."""
    settings = dict(case)
    if case["method"] == "lora" and lora_impl == "lora_edu":
        settings["adapter_dtype"] = case["weight_dtype"]
    return settings


def shard(model, mesh) -> None:
    """FSDP2 as usually applied to a decoder: each layer a group, the whole model the root."""
    from torch.distributed.fsdp import fully_shard

    for layer in model.get_decoder().layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def shard_bytes(model, optimizer) -> dict:
    """This rank's parameters, gradients and optimizer state: storage allocated and numbers held.

    Parameters and gradients are views of padded buffers (FSDP2 allocates ceil(rows/N) rows on
    every rank), so their bytes are their distinct storages'; AdamW's moments are tensors of the
    local rows, counted as they are (the 0-dim ``step`` counters left out, as in measure_memory).
    """
    def storages(tensors) -> int:
        seen = {}
        for t in tensors:
            s = t.untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
        return sum(seen.values())

    params = [_local(p) for p in model.parameters()]
    trainable = [p for p in model.parameters() if p.requires_grad]
    grads = [_local(p.grad) for p in trainable if p.grad is not None]
    states = [_local(t) for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    return dict(weights=storages(params), gradients=storages(grads), optimizer=sum(t.numel() * t.element_size() for t in states),
                params_held=sum(p.numel() for p in params), trainable_held=sum(_local(p).numel() for p in trainable),
                grads_held=sum(g.numel() for g in grads))


def measure(name: str, arch: dict, case_name: str, case: dict, batch: int, seq_len: int, device: torch.device, mesh,
            lora_impl: str) -> dict:
    """One case on this rank: a step, its shards after the step, and (GPU) the peak of a second step."""
    cuda = device.type == "cuda"
    gc.collect()  # FSDP's hooks make reference cycles: the last case's model is freed only by the collector
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.synchronize()
        baseline = torch.cuda.memory_allocated()  # recorded: the cuBLAS workspace once a matmul has run, else 0
    model = build(arch, case, device, seq_len, lora_impl)
    shard(model, mesh)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    torch.manual_seed(1)  # the same batch on every rank: the measurement, not the data, matters
    ids = torch.randint(0, arch["vocab_size"], (batch, seq_len), device=device)

    def step(peaks: dict | None = None):
        def phase(name):
            if cuda and peaks is not None:
                torch.cuda.synchronize()
                peaks[name] = torch.cuda.max_memory_allocated()
                torch.cuda.reset_peak_memory_stats()
        if cuda and peaks is not None:
            torch.cuda.reset_peak_memory_stats()
        loss = model(input_ids=ids, labels=ids).loss
        phase("peak_forward")
        loss.backward()
        del loss
        phase("peak_backward")
        optimizer.step()
        phase("peak_step")

    step()
    row = dict(model=name, case=case_name, batch=batch, seq_len=seq_len, rank=dist.get_rank(),
               settings=calculator_settings(case, lora_impl), **shard_bytes(model, optimizer))
    if cuda:
        torch.cuda.synchronize()
        row.update(baseline=baseline, static_after_step=torch.cuda.memory_allocated())
        optimizer.zero_grad(set_to_none=True)
        peaks = {}
        step(peaks)
        row.update(peaks, peak=max(peaks.values()))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--models", nargs="*", default=None, help=f"preset names or 'tiny' (default: {GPU_MODELS} on cuda, tiny on cpu)")
    parser.add_argument("--cases", nargs="*", default=None, help=f"default: {GPU_CASES} on cuda, {list(TINY_CASES)} on cpu")
    parser.add_argument("--batches", nargs="*", type=int, default=None, help="per-GPU batch sizes (default: 1 4 on cuda, 2 on cpu)")
    parser.add_argument("--seq-len", type=int, default=None, help="default: 512 on cuda, 8 on cpu")
    parser.add_argument("--lora-impl", choices=("peft", "lora_edu"), default="peft")
    parser.add_argument("--backend", choices=("nccl", "gloo"), default=None,
                        help="default: nccl on cuda, gloo on cpu; gloo on cuda lets several ranks share one GPU (a rehearsal)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    cuda = args.device == "cuda"
    models = args.models or (list(GPU_MODELS) if cuda else ["tiny"])
    cases = {**MEASURED_CASES, **TINY_CASES}
    case_names = args.cases or (list(GPU_CASES) if cuda else list(TINY_CASES))
    batches = args.batches or ([1, 4] if cuda else [2])
    seq_len = args.seq_len or (512 if cuda else 8)
    unknown = [m for m in models if m != "tiny" and m not in PRESETS] + [c for c in case_names if c not in cases]
    unknown += [c for c in case_names if c in cases and not _supported(cases[c])]
    if unknown:
        trainable = sorted(c for c, v in cases.items() if _supported(v))
        parser.error(f"unknown or unsupported model(s) or case(s) {unknown}; models: 'tiny' or {sorted(PRESETS)}; "
                     f"cases (training with torch's AdamW, no 4-bit weights): {trainable}")
    if "LOCAL_RANK" not in os.environ:
        parser.error("launch with torchrun, e.g. torchrun --nproc-per-node 2 benchmarks/fsdp_lora.py --device cpu --out x.json")

    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group(args.backend or ("nccl" if cuda else "gloo"))
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        torch.set_num_threads(1)
        device = torch.device("cpu")
    world = dist.get_world_size()
    mesh = init_device_mesh(args.device, (world,))
    rows = []
    for name in models:
        arch = TINY if name == "tiny" else PRESETS[name]
        for case_name in case_names:
            for batch in batches:
                start = time.perf_counter()
                try:
                    row = measure(name, arch, case_name, cases[case_name], batch, seq_len, device, mesh, args.lora_impl)
                except torch.OutOfMemoryError:
                    row = dict(model=name, case=case_name, batch=batch, seq_len=seq_len, rank=dist.get_rank(), oom=True)
                row["seconds"] = round(time.perf_counter() - start, 2)
                gathered = [None] * world
                dist.all_gather_object(gathered, row)
                rows.extend(gathered)
                if dist.get_rank() == 0:
                    print(json.dumps(gathered), flush=True)
                if cuda:
                    torch.cuda.empty_cache()
    if dist.get_rank() == 0:
        import transformers

        result = dict(device=torch.cuda.get_device_name() if cuda else platform.processor() or platform.machine(),
                      backend=dist.get_backend(), num_gpus=world, torch=torch.__version__, transformers=transformers.__version__,
                      python=platform.python_version(), lora_impl=args.lora_impl, sharding="fsdp",
                      wrapping="fully_shard per decoder layer + root, FULL_SHARD, no MixedPrecisionPolicy",
                      optimizer="torch.optim.AdamW (default: foreach)", attention="sdpa",
                      models={m: (TINY if m == "tiny" else PRESETS[m]) for m in models}, runs=rows)
        if cuda:
            result.update(total_memory=torch.cuda.get_device_properties(0).total_memory, gpus_seen=torch.cuda.device_count(),
                          ranks_per_gpu=-(-world // torch.cuda.device_count()))
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.out}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
