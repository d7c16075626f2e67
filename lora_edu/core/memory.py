"""How much GPU memory fine-tuning a LLaMA-style model takes: parameter counts and a calculator.

Why: LoRA exists because full fine-tuning stores, for every parameter, its weight, its gradient
and two AdamW moments. This module counts parameters exactly from the architecture (never typed
in) and estimates a training step's memory in bytes, part by part:

* **weights** — every parameter in ``weight_dtype`` (plus fp32 adapters for LoRA, PEFT's default);
* **gradients** — one per *trainable* parameter, in that parameter's dtype;
* **optimizer** — AdamW's two moments per trainable parameter (``torch.optim.AdamW`` keeps them in
  the dtype of the parameters it steps, and refuses to step a parameter whose moments have another
  dtype), plus an fp32 master copy of the weights, which AdamW then steps with fp32 moments, when
  ``master_weights=True`` (classic mixed precision);
* **activations** — what autograd saves during the forward pass for the backward pass
  (SDPA attention), per token and layer, derived from the LLaMA code in ``transformers`` and
  checked two ways: ``tests/core/test_memory.py`` counts autograd's saved tensors on a small
  model, and ``benchmarks/measure_memory.py`` measured them on a GPU; with gradient
  checkpointing, only each layer's input (plus one layer recomputed in the backward pass);
* **workspace** — memory the framework holds whatever the model: PyTorch allocates cuBLAS's
  workspaces (64 MiB on the measured GPU) through its caching allocator at the first matmul;
* **peak** — the largest of three moments of a step: the end of the forward pass (logits still
  alive), the start of the backward pass (the loss's gradient over the vocabulary), and the
  optimizer step (gradients plus one temporary of AdamW's multi-tensor update).

Calculator v2 (issue 16) adds, each measured on a GPU: gradient checkpointing, the QLoRA recipe
(4-bit NF4 block linears with their scales, double quantization, and the fp32 cast of everything
else that ``prepare_model_for_kbit_training`` makes), gradients kept between steps, bitsandbytes'
8-bit AdamW, presets counted from today's models' config.json files, reading a local config.json,
and :func:`largest_batch`. ``python -m lora_edu.memory`` is its command line (``lora_edu/memory.py``).

The measured comparison is in ``lora_edu/data/memory_measurements.json`` (notebook 01 plots it).
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

GB, GiB = 10**9, 2**30
CUBLAS_WORKSPACE = 64 * 2**20  # measured: memory_allocated() grows by 64 MiB at the first matmul on an H200

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
METHODS = ("full", "lora", "inference")
QUANTIZATIONS = (None, "nf4")
OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw_32bit")
#: torch.optim.AdamW's three implementations. Each allocates a different temporary in its step (read from
#: torch/optim/adam.py and measured, ``MEASURED_CASES``): ``foreach`` (PyTorch's default on CUDA) takes the
#: square root of *every* second moment at once (``torch._foreach_sqrt``), one temporary the size of all
#: the moments of one dtype; the for-loop (``foreach=False``) does it one tensor at a time, and
#: ``exp_avg_sq.sqrt() / bias_correction2_sqrt`` holds two temporaries of the largest tensor; ``fused=True``
#: updates in one kernel without a temporary.
ADAMW_IMPLS = ("foreach", "for-loop", "fused")
#: The QLoRA recipe: how the parameters left out of 4 bits, and the adapters, are stored and run.
#: "peft": PEFT's ``prepare_model_for_kbit_training`` (everything not 4-bit to fp32, fp32 adapters, no
#: autocast). "paper": the QLoRA paper's code, artidoro/qlora ``qlora.py`` ``get_accelerate_model`` with
#: ``--bf16`` (the same call, then LoRA layers to bf16, norms fp32, embedding and head back to bf16),
#: trained under bf16 autocast as the Hugging Face Trainer's ``--bf16`` runs it.
QLORA_RECIPES = ("peft", "paper")
LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
NF4_BLOCK = 64          # bitsandbytes' 4-bit block: one absmax scale per 64 weights (QLoRA §3)
DQ_BLOCK = 256          # double quantization: the 8-bit absmax scales in blocks of 256, one fp32 scale each
ADAM8_BLOCK = 256       # bitsandbytes' blockwise 8-bit optimizer state: one fp32 absmax per 256 values
ADAM8_MIN_SIZE = 4096   # ... for tensors of at least 4096 values; smaller ones keep fp32 state (min_8bit_size)

#: Architectures, each written once from its config.json on the Hugging Face Hub (the model card's
#: "Files" tab; the test builds each with transformers on the meta device and compares the counts).
PRESETS: dict[str, dict] = {
    # LLaMA-1 (arXiv:2302.13971, Table 2; huggyllama/llama-7b, -13b, -65b config.json).
    "llama-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, vocab_size=32000),
    "llama-13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40, vocab_size=32000),
    "llama-65b": dict(hidden_size=8192, intermediate_size=22016, num_hidden_layers=80, num_attention_heads=64, vocab_size=32000),
    # meta-llama/Llama-2-70b-hf config.json: grouped-query attention, 8 key/value heads.
    "llama-2-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                        num_key_value_heads=8, vocab_size=32000),
    # meta-llama/Meta-Llama-3-8B config.json: GQA, a 128,256-token vocabulary, untied head.
    "llama-3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256),
    # mistralai/Mistral-7B-v0.1 config.json.
    "mistral-7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=32000),
    # Qwen/Qwen2.5-7B config.json (Qwen2 architecture: biases on q, k and v, none on o).
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, qkv_bias=True),
    # meta-llama/Llama-3.2-1B config.json: GQA, the 128k vocabulary, tied embeddings (measured on the GPU).
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    # The sizes measured on a GPU (benchmarks/measure_memory.py): LLaMA shapes of 60 M to 3.4 B parameters.
    "llama-60m": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8, vocab_size=32000),
    "llama-130m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12, vocab_size=32000),
    "llama-370m": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=24, num_attention_heads=16, vocab_size=32000),
    "llama-1.3b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, vocab_size=32000),
    "llama-3.4b": dict(hidden_size=3200, intermediate_size=8640, num_hidden_layers=26, num_attention_heads=32, vocab_size=32000),
}
#: Where each real preset's numbers come from (shown by the command line and notebook 01).
PRESET_SOURCES = {
    "llama-7b": "huggyllama/llama-7b config.json; arXiv:2302.13971 Table 2",
    "llama-13b": "huggyllama/llama-13b config.json; arXiv:2302.13971 Table 2",
    "llama-65b": "huggyllama/llama-65b config.json; arXiv:2302.13971 Table 2",
    "llama-2-70b": "meta-llama/Llama-2-70b-hf config.json",
    "llama-3-8b": "meta-llama/Meta-Llama-3-8B config.json",
    "mistral-7b": "mistralai/Mistral-7B-v0.1 config.json",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B config.json",
    "llama-3.2-1b": "meta-llama/Llama-3.2-1B config.json",
}

#: The sizes measured on a GPU by benchmarks/measure_memory.py (keys of PRESETS).
MEASURED_MODELS = ("llama-60m", "llama-130m", "llama-370m", "llama-1.3b", "llama-3.4b", "llama-3.2-1b")

#: The cases benchmarks/measure_memory.py measures, as calculator settings; the benchmark builds
#: its models from these same settings, so the measurement and the prediction cannot drift apart.
#: The first 15 were measured in round 1 (an H200, ``lora_edu/data/memory_measurements.json``), the rest in round 2
#: (an H100, ``memory_measurements_round2.json``).
MEASURED_CASES = {
    "full_fp32": dict(method="full", weight_dtype="fp32"),
    "full_bf16": dict(method="full", weight_dtype="bf16"),
    "lora_qv": dict(method="lora", weight_dtype="bf16", lora_r=8, lora_targets=("q_proj", "v_proj")),
    "lora_all": dict(method="lora", weight_dtype="bf16", lora_r=16, lora_targets=LINEAR_MODULES),
    "infer_bf16": dict(method="inference", weight_dtype="bf16"),
    # Calculator v2 (issue 16): checkpointing, the QLoRA recipe, gradients kept, 8-bit AdamW.
    "full_bf16_ckpt": dict(method="full", weight_dtype="bf16", gradient_checkpointing=True),
    "lora_qv_ckpt": dict(method="lora", weight_dtype="bf16", lora_r=8, lora_targets=("q_proj", "v_proj"),
                         gradient_checkpointing=True),
    "lora_all_ckpt": dict(method="lora", weight_dtype="bf16", lora_r=16, lora_targets=LINEAR_MODULES,
                          gradient_checkpointing=True),
    "qlora": dict(method="lora", weight_dtype="bf16", lora_r=16, lora_targets=LINEAR_MODULES, quantization="nf4",
                  gradient_checkpointing=True),
    "qlora_dq": dict(method="lora", weight_dtype="bf16", lora_r=16, lora_targets=LINEAR_MODULES, quantization="nf4",
                     double_quant=True, gradient_checkpointing=True),
    "qlora_dq_no_ckpt": dict(method="lora", weight_dtype="bf16", lora_r=16, lora_targets=LINEAR_MODULES,
                             quantization="nf4", double_quant=True),
    "full_bf16_keep_grads": dict(method="full", weight_dtype="bf16", set_to_none=False),
    "lora_all_keep_grads": dict(method="lora", weight_dtype="bf16", lora_r=16, lora_targets=LINEAR_MODULES,
                                set_to_none=False),
    "full_bf16_adamw8bit": dict(method="full", weight_dtype="bf16", optimizer="adamw_8bit"),
    "lora_all_adamw8bit": dict(method="lora", weight_dtype="bf16", lora_r=16, lora_targets=LINEAR_MODULES,
                               optimizer="adamw_8bit"),
    # Round 2 (issue 25), measured by ``benchmarks/measure_memory.py --round 2`` on an H100 80GB HBM3 (108 runs).
    # PyTorch's three AdamW implementations, side by side ...
    "full_fp32_forloop": dict(method="full", weight_dtype="fp32", adamw_impl="for-loop"),
    "full_fp32_fused": dict(method="full", weight_dtype="fp32", adamw_impl="fused"),
    "full_bf16_forloop": dict(method="full", weight_dtype="bf16", adamw_impl="for-loop"),
    "full_bf16_fused": dict(method="full", weight_dtype="bf16", adamw_impl="fused"),
    "lora_all_forloop": dict(method="lora", weight_dtype="bf16", lora_r=16, lora_targets=LINEAR_MODULES, adamw_impl="for-loop"),
    "lora_all_fused": dict(method="lora", weight_dtype="bf16", lora_r=16, lora_targets=LINEAR_MODULES, adamw_impl="fused"),
    # ... and the QLoRA paper's own recipe (artidoro/qlora qlora.py with the 65B script's settings: r 64 on every
    # linear, dropout 0.05, NF4 with double quantization, --bf16, checkpointing, paged 32-bit AdamW).
    "qlora_paper": dict(method="lora", weight_dtype="bf16", lora_r=64, lora_targets=LINEAR_MODULES, quantization="nf4",
                        double_quant=True, gradient_checkpointing=True, qlora_recipe="paper", lora_dropout=0.05,
                        optimizer="paged_adamw_32bit"),
    "qlora_paper_no_ckpt": dict(method="lora", weight_dtype="bf16", lora_r=64, lora_targets=LINEAR_MODULES,
                                quantization="nf4", double_quant=True, qlora_recipe="paper", lora_dropout=0.05,
                                optimizer="paged_adamw_32bit"),
    "qlora_paper_adamw": dict(method="lora", weight_dtype="bf16", lora_r=64, lora_targets=LINEAR_MODULES, quantization="nf4",
                              double_quant=True, gradient_checkpointing=True, qlora_recipe="paper", lora_dropout=0.05),
    # PEFT's recipe at the same settings and with the same AdamW as qlora_paper_adamw: only the recipe differs.
    "qlora_peft_r64": dict(method="lora", weight_dtype="bf16", lora_r=64, lora_targets=LINEAR_MODULES, quantization="nf4",
                           double_quant=True, gradient_checkpointing=True, qlora_recipe="peft", lora_dropout=0.05),
}


#: The course's one definition of each method it names: the figures, the tables, the command line
#: (``python -m lora_edu.memory --method``) and notebook 01 all read these. "QLoRA" is LoRA on every
#: block linear over an NF4 base with double quantization and gradient checkpointing (QLoRA §3-4:
#: "LoRA on all linear transformer block layers are required to match full finetuning performance"),
#: at r = 16, through PEFT's ``prepare_model_for_kbit_training``; "QLoRA, paper's code" is what the
#: paper's own repository runs for its 65B model (artidoro/qlora ``scripts/finetune_guanaco_65b.sh``:
#: r = 64, dropout 0.05, ``--bf16``; ``qlora.py``'s default optimizer, paged 32-bit AdamW).
RECIPES = {
    "full fine-tuning": dict(method="full"),
    "LoRA": dict(method="lora", lora_r=8, lora_targets=("q_proj", "v_proj")),
    "QLoRA": dict(method="lora", lora_r=16, lora_targets=LINEAR_MODULES, quantization="nf4", double_quant=True,
                  gradient_checkpointing=True),
    "QLoRA, paper's code": dict(method="lora", lora_r=64, lora_targets=LINEAR_MODULES, quantization="nf4", double_quant=True,
                                gradient_checkpointing=True, qlora_recipe="paper", lora_dropout=0.05,
                                optimizer="paged_adamw_32bit"),
}


@dataclass(frozen=True)
class Card:
    """A GPU's memory as a training run can use it: ``total`` as CUDA reports it, less ``context``.

    ``total``: the card's global memory as CUDA reports it to PyTorch (``torch.cuda.get_device_properties(0)
    .total_memory``, the same number as ``deviceQuery``'s "Total amount of global memory"). That is what
    PyTorch allocates from; it is less than ``nvidia-smi``'s total, which includes memory the driver
    reserves (``nvidia-smi -q``: "Reserved"). ``context``: what is kept free for the CUDA context and the
    allocator (:data:`CONTEXT_MARGIN`). ``measured``: ``total`` was read on such a card; else it is the
    size the card is sold under, counted in GiB, which can be more than a card of that class reports.
    """

    name: str
    total: int
    context: int
    measured: bool
    source: str

    @property
    def usable(self) -> int:
        """Bytes left for the tensors of a training step: the card's memory less the margin."""
        return self.total - self.context


def usable_memory(card: Any) -> int:
    """The bytes a training run can use on ``card``: a name of :data:`CARDS` ("80 GB"), or a size sold in GB (counted in GiB)."""
    if isinstance(card, str):
        if card not in CARDS:
            raise ValueError(f"unknown card {card!r}; choose one of {list(CARDS)}, or pass its size in GB (e.g. 24).")
        return CARDS[card].usable
    if isinstance(card, bool) or not isinstance(card, (int, float)) or card <= 0:
        raise ValueError(f"a card is a name of CARDS ({list(CARDS)}) or a positive size in GB, got {card!r}.")
    return int(card * GiB) - CUDA_CONTEXT


#: What the course keeps free on every card for the CUDA context and the caching allocator's spare blocks,
#: on top of the peak (which counts tensors only). A margin the course chooses: on round 2's H100 the CUDA context
#: took 529 MiB and cuBLAS's handle and workspace 190 MiB more before any tensor (719 MiB, as nvidia-smi showed;
#: ``card`` in memory_measurements_round2.json), which leaves about 300 MiB for the allocator's spare blocks. It comes
#: off what CUDA reports (``Card.total``), which is already less than nvidia-smi's total (81,079 MiB against 81,559).
CONTEXT_MARGIN = 2**30
#: The one table of cards: each card's memory as read on it where it was, else its name counted in GiB.
CARDS = {
    **{name: Card(name, gib * GiB, CONTEXT_MARGIN, False, f"sold as {name}, counted as {gib} GiB, less the 1 GiB margin")
       for name, gib in (("16 GB", 16), ("24 GB", 24), ("40 GB", 40), ("48 GB", 48))},
    # Read on round 2's card (driver 580.159.04). Another H100 80GB HBM3 reads 27 MiB more (thamada/nvidia-smi,
    # nvsim/H100SXMx8_deviceQuery.py: "Total amount of global memory: 81106 MBytes (85045477376 bytes)"; nvidia-smi -q
    # on that machine: Total 81559 MiB, Reserved 454 MiB): the driver's reserve differs; the smaller one counts here.
    "80 GB": Card("80 GB", 85_017_493_504, CONTEXT_MARGIN, True,
                  "NVIDIA H100 80GB HBM3: PyTorch's 81,079 MiB in round 2's measurements (nvidia-smi: 81,559), less the 1 GiB margin"),
    "141 GB": Card("141 GB", 150_109_880_320, CONTEXT_MARGIN, True,
                   "NVIDIA H200: PyTorch's total_memory in round 1's measurements, less the 1 GiB margin"),
}
#: Kept for the command line's --gpu-gb: a card given by its size is counted in GiB, less the same margin.
CUDA_CONTEXT = CONTEXT_MARGIN


@dataclass(frozen=True)
class Arch:
    """A LLaMA-style decoder: RMSNorm, attention with q/k/v/o projections, a SwiGLU MLP.

    Mistral and Qwen2 are this shape too; Qwen2 adds biases to q, k and v (``qkv_bias``), and a
    LLaMA config's ``attention_bias`` puts one on o as well (``o_bias``).
    """

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    vocab_size: int
    num_key_value_heads: int | None = None
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False

    def __post_init__(self):
        for f in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
            value = getattr(self, f)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{f} must be a positive integer, got {value!r}.")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads}).")
        kv = self.kv_heads
        if isinstance(kv, bool) or not isinstance(kv, int) or kv <= 0 or self.num_attention_heads % kv:
            raise ValueError(f"num_key_value_heads must be a positive divisor of num_attention_heads, got {kv!r}.")
        for f in ("tie_word_embeddings", "qkv_bias", "o_bias"):
            if not isinstance(getattr(self, f), bool):
                raise ValueError(f"{f} must be True or False, got {getattr(self, f)!r}.")

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def kv_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads * self.kv_heads


#: config.json's model_type values this calculator reads, and the biases each architecture has.
CONFIG_TYPES = {"llama": {}, "mistral": {}, "qwen2": {"qkv_bias": True}}


def arch_from_config(config: Any) -> Arch:
    """An :class:`Arch` from a transformers config, a config.json's dict, or a path to config.json (or its folder).

    Why a path: ``python -m lora_edu.memory --model path/to/config.json`` answers for any local
    model without downloading it. Only LLaMA-shaped model types are read (``CONFIG_TYPES``); a
    config whose ``head_dim`` differs from hidden_size / heads is refused rather than miscounted.
    """
    if isinstance(config, (str, Path)):
        path = Path(config)
        path = path / "config.json" if path.is_dir() else path
        if not path.is_file():
            raise ValueError(f"no config.json at {str(path)!r}; pass a preset ({', '.join(sorted(PRESETS))}) or a config.json path.")
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}).") from None
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    model_type = get("model_type")
    if model_type is not None and model_type not in CONFIG_TYPES:
        raise ValueError(f"model_type {model_type!r} is not LLaMA-shaped; this calculator reads {sorted(CONFIG_TYPES)}.")
    names = [f.name for f in fields(Arch)]
    missing = [n for n in names[:5] if get(n) is None]
    if missing:
        raise ValueError(f"the config lacks {missing}; it needs {names[:5]}.")
    head_dim = get("head_dim")
    if head_dim not in (None, get("hidden_size") // get("num_attention_heads")):
        raise ValueError(f"head_dim {head_dim} differs from hidden_size / num_attention_heads; this calculator assumes they are equal.")
    values = {n: get(n) for n in names[:6] if get(n) is not None}
    values["tie_word_embeddings"] = bool(get("tie_word_embeddings", False))
    values.update(CONFIG_TYPES.get(model_type, {}))
    if get("attention_bias"):  # LlamaConfig: a bias on q, k, v and o
        values.update(qkv_bias=True, o_bias=True)
    return Arch(**values)


def resolve_arch(arch: Any) -> Arch:
    """Accept an :class:`Arch`, a dict of sizes, a preset name (``"llama-7b"``), a config.json path or a transformers config."""
    if isinstance(arch, Arch):
        return arch
    if isinstance(arch, Path) or (isinstance(arch, str) and (arch.endswith(".json") or "/" in arch or Path(arch).is_dir())):
        return arch_from_config(arch)
    if isinstance(arch, str):
        if arch not in PRESETS:
            raise ValueError(f"unknown preset {arch!r}; choose one of {sorted(PRESETS)}, a config.json path, or pass a dict of sizes.")
        return Arch(**PRESETS[arch])
    names = [f.name for f in fields(Arch)]
    if isinstance(arch, dict):
        if "model_type" in arch:
            return arch_from_config(arch)
        missing = [n for n in names[:5] if n not in arch]
        if missing:
            raise ValueError(f"architecture dict lacks {missing}; it needs {names[:5]}.")
        return Arch(**{n: arch[n] for n in names if n in arch})
    if all(hasattr(arch, n) for n in names[:5]):  # a transformers config, or anything shaped like one
        return arch_from_config(arch)
    raise TypeError(f"cannot read an architecture from {type(arch).__name__}; pass a preset name, a dict or a transformers config.")


def linear_shapes(arch: Any) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each linear layer in one decoder block."""
    a = resolve_arch(arch)
    h, m, kv = a.hidden_size, a.intermediate_size, a.kv_dim
    return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
            "gate_proj": (h, m), "up_proj": (h, m), "down_proj": (m, h)}


def parameter_counts(arch: Any) -> dict[str, int]:
    """Exact parameter counts by part; ``total`` matches ``sum(p.numel())`` of the transformers model.

    ``linear_in_blocks`` counts the block linears' weight matrices only (what 4-bit quantization
    stores in NF4); their biases, where an architecture has them, are ``biases``.
    """
    a = resolve_arch(arch)
    L, h, V = a.num_hidden_layers, a.hidden_size, a.vocab_size
    shapes = linear_shapes(a)
    attention = L * sum(i * o for n, (i, o) in shapes.items() if n in ("q_proj", "k_proj", "v_proj", "o_proj"))
    mlp = L * sum(i * o for n, (i, o) in shapes.items() if n in ("gate_proj", "up_proj", "down_proj"))
    biases = L * ((h + 2 * a.kv_dim if a.qkv_bias else 0) + (h if a.o_bias else 0))
    norms = L * 2 * h + h
    embedding = V * h
    lm_head = 0 if a.tie_word_embeddings else V * h
    return dict(embedding=embedding, attention=attention, mlp=mlp, biases=biases, norms=norms, lm_head=lm_head,
                linear_in_blocks=attention + mlp, total=embedding + attention + mlp + biases + norms + lm_head)


def _check_targets(targets: Iterable[str]) -> tuple[str, ...]:
    if isinstance(targets, str):
        targets = [targets]
    targets = tuple(targets)
    unknown = [t for t in targets if t not in LINEAR_MODULES]
    if unknown or not targets:
        raise ValueError(f"unknown LoRA target module(s) {unknown or targets}; choose from {list(LINEAR_MODULES)}.")
    return targets


def lora_parameter_count(arch: Any, r: int, targets: Iterable[str] = ("q_proj", "v_proj")) -> int:
    """Trainable parameters of LoRA at rank r on the named modules of every block: r·(in+out) each."""
    return sum(trainable_tensor_sizes(arch, "lora", r, targets))


def trainable_tensor_sizes(arch: Any, method: str, lora_r: int = 8, lora_targets: Iterable[str] = ("q_proj", "v_proj")) -> list[int]:
    """The number of values in each trainable tensor (the 8-bit optimizer treats small tensors apart)."""
    a = resolve_arch(arch)
    L, h = a.num_hidden_layers, a.hidden_size
    if method == "inference":
        return []
    if method == "lora":
        if isinstance(lora_r, bool) or not isinstance(lora_r, int) or lora_r <= 0:
            raise ValueError(f"lora_r must be a positive integer, got {lora_r!r}.")
        shapes = linear_shapes(a)
        return [n for _ in range(L) for t in _check_targets(lora_targets) for n in (lora_r * shapes[t][0], shapes[t][1] * lora_r)]
    block = [i * o for i, o in linear_shapes(a).values()] + [h, h]
    block += ([h, a.kv_dim, a.kv_dim] if a.qkv_bias else []) + ([h] if a.o_bias else [])
    head = [] if a.tie_word_embeddings else [a.vocab_size * h]
    return [a.vocab_size * h] + block * L + [h] + head


def quantized_weight_bytes(arch: Any, double_quant: bool = False) -> int:
    """Bytes of the block linears in bitsandbytes' 4-bit format: the packed weights and their scales.

    Two 4-bit values a byte; one fp32 absmax scale per 64 weights and the 16-value NF4 code
    (64 bytes) per matrix. Double quantization (QLoRA §3) stores the scales in 8 bits with one fp32
    scale per 256 of them, a 256-value fp32 code and an fp32 offset. Checked byte for byte against
    ``quant_state`` on a small model (tests/core/test_memory.py).
    """
    a = resolve_arch(arch)
    total = 0
    for i, o in linear_shapes(a).values():
        n = i * o
        blocks = -(-n // NF4_BLOCK)
        scales = blocks + 4 * -(-blocks // DQ_BLOCK) + 4 + 4 * 256 if double_quant else 4 * blocks
        total += -(-n // 2) + scales + 4 * 16
    return a.num_hidden_layers * total


@dataclass(frozen=True)
class MemoryEstimate:
    """A training step's (or inference's) memory, in bytes. ``total`` is the peak.

    ``weights`` ... ``activations`` are each part's full size; they are not all alive at once.
    ``peak_at`` names the moment of the step where the peak falls ("end of the forward pass", "start
    of the backward pass", "optimizer step", "recomputed layer" with checkpointing, "inference") and
    ``at_peak`` splits the peak into the parts alive *then* (weights, gradients, optimizer,
    activations, other = transients and workspace), adding up to ``peak`` exactly. At the optimizer
    step, for instance, the activations are already freed and AdamW's temporary is alive.
    """

    weights: int
    gradients: int
    optimizer: int
    activations: int
    workspace: int
    peak: int
    trainable_params: int
    total_params: int
    peak_at: str = ""
    at_peak: dict = field(default_factory=dict)
    step: int = 0  #: the optimizer step's moment: weights, gradients, optimizer state, its temporary, workspace

    @property
    def rule_of_thumb(self) -> int:
        """Weights + gradients + optimizer state: the usual back-of-the-envelope budget."""
        return self.weights + self.gradients + self.optimizer

    @property
    def static(self) -> int:
        """What stays allocated after an optimizer step: the rule of thumb plus the workspace."""
        return self.rule_of_thumb + self.workspace

    @property
    def total(self) -> int:
        return self.peak

    @property
    def transient(self) -> int:
        """What the peak holds beyond the static part and the saved activations."""
        return self.peak - self.static - self.activations


def _dtype_bytes(name: str, what: str) -> int:
    if name not in DTYPE_BYTES:
        raise ValueError(f"unknown {what} {name!r}; choose one of {list(DTYPE_BYTES)}.")
    return DTYPE_BYTES[name]


def activation_bytes_per_token_layer(arch: Any, method: str, weight_dtype: str = "bf16", lora_r: int = 8,
                                     lora_targets: Iterable[str] = ("q_proj", "v_proj"), adapter_dtype: str = "fp32",
                                     lora_dropout: float = 0.0, qlora_recipe: str = "peft") -> int:
    """Bytes autograd saves per token in one decoder block (SDPA attention, no checkpointing).

    Term by term, with p the weights' bytes per number:
    * the two RMSNorms upcast their input to fp32 and keep it (2·4h) with one fp32 1/rms each (8);
    * SDPA keeps q, k, v and its output (p·(2h + 2·kv)) and an fp32 log-sum-exp per head (4·heads);
    * the SwiGLU MLP keeps gate's output, SiLU's output and up's output (3p·m);
    * full fine-tuning also keeps what a weight's gradient needs: each RMSNorm's normalised input
      (2p·h) and each linear layer's input, shared by layers that read the same tensor
      (q/k/v: p·h, gate/up: p·h, down: p·m; o_proj reads SDPA's output, already kept);
    * LoRA keeps nothing for the frozen layers; each adapter keeps its input cast to the adapter's
      dtype (a copy each, 4·in, when that differs from the base's; otherwise the shared input once)
      and A's output (bytes·r). With ``lora_dropout`` > 0 each adapter keeps its own dropped-out
      input (bytes·in) and dropout's mask (one byte a number), shared with no other adapter.

    ``qlora_recipe="paper"`` (the QLoRA paper's code, :data:`QLORA_RECIPES`) is
    :func:`paper_recipe_bytes_per_token_layer`; ``weight_dtype`` is then ignored.
    """
    _check_choice("qlora_recipe", qlora_recipe, QLORA_RECIPES)
    if qlora_recipe == "paper" and method == "lora":
        return paper_recipe_bytes_per_token_layer(arch, lora_r, lora_targets, lora_dropout)
    a = resolve_arch(arch)
    p = _dtype_bytes(weight_dtype, "weight_dtype")
    h, m, kv = a.hidden_size, a.intermediate_size, a.kv_dim
    common = 2 * 4 * h + 8 + p * (2 * h + 2 * kv) + 4 * a.num_attention_heads + 3 * p * m
    if method == "inference":
        return 0
    if method == "full":
        return common + 2 * p * h + p * h + p * h + p * m
    return common + _adapter_bytes(a, p, lora_r, lora_targets, adapter_dtype, lora_dropout)


def _adapter_bytes(a: Arch, p: int, lora_r: int, lora_targets: Iterable[str], adapter_dtype: str, lora_dropout: float) -> int:
    """What LoRA's adapters keep per token in one block: their inputs (and dropout masks), and A's outputs."""
    q = _dtype_bytes(adapter_dtype, "adapter_dtype")
    targets = _check_targets(lora_targets)
    _check_dropout(lora_dropout)
    shapes = linear_shapes(a)
    group_input = {"q_proj": ("attn_in", p * a.hidden_size), "k_proj": ("attn_in", p * a.hidden_size),
                   "v_proj": ("attn_in", p * a.hidden_size), "o_proj": ("attn_out", 0), "gate_proj": ("mlp_in", p * a.hidden_size),
                   "up_proj": ("mlp_in", p * a.hidden_size), "down_proj": ("mlp_mid", p * a.intermediate_size)}
    if lora_dropout:
        inputs = sum((q + 1) * shapes[t][0] for t in targets)     # each its own dropped-out copy and 1-byte mask
    elif q != p:
        inputs = sum(q * shapes[t][0] for t in targets)
    else:
        inputs = sum(dict(group_input[t] for t in targets).values())
    return inputs + len(targets) * q * lora_r


def paper_recipe_bytes_per_token_layer(arch: Any, lora_r: int = 64, lora_targets: Iterable[str] = LINEAR_MODULES,
                                       lora_dropout: float = 0.0) -> int:
    """Bytes autograd saves per token in one decoder block under the QLoRA paper's recipe (``qlora_recipe="paper"``).

    The recipe (artidoro/qlora ``qlora.py`` with ``--bf16``) keeps the norms in fp32 and runs under bf16
    autocast. The norms' fp32 weights make their outputs fp32 and, from the first block's MLP on, the
    residual stream too, while autocast runs every matrix product and SDPA in bf16. So, per token:
    * the two RMSNorms keep their fp32 input and 1/rms (2·4h + 8), as with any recipe;
    * SDPA keeps bf16 q, k, v, its output (2·(2h + 2·kv)) and an fp32 log-sum-exp per head (4·heads);
    * the MLP's gate and up outputs are fp32 (the 4-bit layers return their input's dtype), so SiLU's
      input and output and up's output are kept in fp32 (3·4m);
    * each adapter keeps the bf16 copy autocast makes of its input (2·in; one per adapter: autocast
      does not share casts of activations), dropout's mask if any (1·in) and A's bf16 output (2r).
    The 4-bit layers keep nothing: bitsandbytes' ``MatMul4Bit`` saves only the packed weight.
    """
    a = resolve_arch(arch)
    h, m, kv = a.hidden_size, a.intermediate_size, a.kv_dim
    _check_dropout(lora_dropout)
    targets = _check_targets(lora_targets)
    shapes = linear_shapes(a)
    common = 2 * 4 * h + 8 + 2 * (2 * h + 2 * kv) + 4 * a.num_attention_heads + 3 * 4 * m
    adapters = sum((2 + (1 if lora_dropout else 0)) * shapes[t][0] for t in targets) + len(targets) * 2 * lora_r
    return common + adapters


def _check_dropout(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"lora_dropout must be a probability in [0, 1), got {value!r}.")


def activation_breakdown_per_token_layer(arch: Any, method: str, weight_dtype: str = "bf16", lora_r: int = 8,
                                        lora_targets: Iterable[str] = ("q_proj", "v_proj"),
                                        adapter_dtype: str = "fp32", lora_dropout: float = 0.0) -> dict[str, int]:
    """:func:`activation_bytes_per_token_layer` split into what each part is kept *for*.

    Why: "LoRA removes gradients and optimizer state, not activations" is half true. The parts:

    * ``backprop_through_block``: what the backward pass needs to send a gradient *through* the
      block (RMSNorm inputs, SDPA's q, k, v, output and log-sum-exp, the SwiGLU intermediates).
      Full fine-tuning and LoRA both keep it: LoRA's adapters in earlier layers need that gradient.
    * ``frozen_weight_gradients``: the inputs of the linear layers and the norms' normalised
      inputs, needed only for the *weights'* gradients. LoRA drops it: the weights are frozen.
    * ``adapter_inputs``: each adapter's own copy of its input (in the adapter's dtype; when that
      differs from the base's, one cast copy per adapter, not shared between q, k and v), and
      dropout's masks where ``lora_dropout`` > 0.
    * ``adapter_down_outputs``: A's output, r numbers per adapter.

    The parts add up to :func:`activation_bytes_per_token_layer` (a unit test checks it).
    """
    a = resolve_arch(arch)
    total = activation_bytes_per_token_layer(a, method, weight_dtype, lora_r, lora_targets, adapter_dtype, lora_dropout)
    if method == "inference":
        return dict(backprop_through_block=0, frozen_weight_gradients=0, adapter_inputs=0, adapter_down_outputs=0)
    p = _dtype_bytes(weight_dtype, "weight_dtype")
    h, m, kv = a.hidden_size, a.intermediate_size, a.kv_dim
    common = 2 * 4 * h + 8 + p * (2 * h + 2 * kv) + 4 * a.num_attention_heads + 3 * p * m
    if method == "full":
        return dict(backprop_through_block=common, frozen_weight_gradients=total - common, adapter_inputs=0,
                    adapter_down_outputs=0)
    down = len(_check_targets(lora_targets)) * _dtype_bytes(adapter_dtype, "adapter_dtype") * lora_r
    return dict(backprop_through_block=common, frozen_weight_gradients=0, adapter_inputs=total - common - down,
                adapter_down_outputs=down)


def attention_matrix_bytes_per_token_layer(arch: Any, seq_len: int, activation_dtype: str) -> int:
    """What SDPA's math kernel keeps beyond the fused kernels, per token and layer (0 where a fused kernel runs).

    Why: on the GPU, fp32 attention with grouped-query heads (the QLoRA recipe upcasts the residual
    stream to fp32) is served by neither FlashAttention (16-bit only) nor the memory-efficient kernel
    (no GQA): PyTorch falls back to the math kernel, which keeps the softmax's probabilities, one fp32
    number per head and key (``heads·seq_len``), and key and value repeated to every head.
    Measured on Llama-3.2-1B's shape (benchmarks/measure_memory.py, ``qlora_dq_no_ckpt``).
    """
    a = resolve_arch(arch)
    if _dtype_bytes(activation_dtype, "activation dtype") != 4 or a.kv_heads == a.num_attention_heads:
        return 0
    return 4 * a.num_attention_heads * seq_len + 4 * 2 * (a.hidden_size - a.kv_dim)


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {list(choices)}.")


def _check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}.")


def estimate(arch: Any, method: str = "full", weight_dtype: str = "bf16", batch_size: int = 1, seq_len: int = 512,
             lora_r: int = 8, lora_targets: Iterable[str] = ("q_proj", "v_proj"), adapter_dtype: str | None = None,
             optimizer_dtype: str | None = None, master_weights: bool = False,
             workspace: int = CUBLAS_WORKSPACE, gradient_checkpointing: bool = False, quantization: str | None = None,
             double_quant: bool = False, set_to_none: bool = True, optimizer: str = "adamw", adamw_impl: str = "foreach",
             qlora_recipe: str = "peft", lora_dropout: float = 0.0,
             num_gpus: int = 1, sharding: str | None = None) -> MemoryEstimate:
    """Estimate the memory of one training step (or of inference) with AdamW, in bytes.

    ``method``: "full" (every parameter trains), "lora" (frozen base in ``weight_dtype``,
    adapters in ``adapter_dtype``: fp32 by default, PEFT's; bf16 under the QLoRA paper's recipe) or
    "inference" (no gradients). ``optimizer_dtype``: dtype of AdamW's two moments; ``torch.optim.AdamW``
    keeps them in the dtype of the parameters it steps (the trainable weights'), and refuses any other,
    so only that dtype is accepted. ``master_weights``: keep an fp32 copy of the trainable weights, which
    AdamW steps with fp32 moments (classic fp16 mixed precision; ZeRO's 16 bytes a parameter). ``workspace``: bytes the framework holds besides tensors
    (0 to leave it out).

    Calculator v2, each measured on a GPU (``MEASURED_CASES``):

    * ``gradient_checkpointing``: transformers' non-reentrant checkpointing of every decoder layer.
      The forward pass keeps only each layer's input; the backward pass recomputes one layer at a
      time, so its activations are alive for one layer only.
    * ``quantization="nf4"`` with ``method="lora"``: QLoRA. The block linears are stored in 4 bits with
      their scales (:func:`quantized_weight_bytes`, ``double_quant`` for QLoRA's double quantization).
      ``qlora_recipe`` (:data:`QLORA_RECIPES`) says how the rest is stored: "peft", PEFT's
      ``prepare_model_for_kbit_training``, casts everything else (embedding, head, norms) to fp32, so
      the residual stream, the activations and the logits are fp32 too; "paper", the QLoRA paper's
      ``qlora.py --bf16``, keeps the embedding and head in bf16, the norms in fp32, the adapters in
      bf16, and runs under bf16 autocast (:func:`paper_recipe_bytes_per_token_layer`). With
      ``method="inference"``, the 4-bit model as loaded (no cast).
    * ``lora_dropout``: PEFT's dropout before each adapter (the QLoRA scripts use 0.05 or 0.1): each
      adapter keeps its own dropped-out input and a one-byte mask.
    * ``set_to_none=False``: ``zero_grad(set_to_none=False)`` keeps the gradients' memory through
      the next forward and backward pass.
    * ``optimizer``: "adamw" (``torch.optim.AdamW``, moments in the dtype of what it steps; ``adamw_impl`` picks its implementation,
      :data:`ADAMW_IMPLS`, and with it the step's temporary: ``foreach``, PyTorch's default on CUDA, one
      temporary the size of all the moments; ``for-loop``, two of the largest tensor; ``fused``, none);
      "adamw_8bit" (bitsandbytes' AdamW8bit: two 8-bit moments with one fp32 scale per 256 values, fp32
      moments for tensors under 4096 values, updated in place: no temporary); "paged_adamw_32bit"
      (bitsandbytes' PagedAdamW32bit, the QLoRA paper's default: two fp32 moments in CUDA managed
      memory, updated in place; counted as on the GPU, since pages leave it only under memory pressure).
    * ``num_gpus``, ``sharding`` ("fsdp" or "ddp"): memory *per GPU* of a run spread over ``num_gpus``
      GPUs (``batch_size`` per GPU); returns :class:`lora_edu.core.sharding.ShardedEstimate`.
    """
    if num_gpus != 1 or sharding is not None:  # memory per GPU of a run spread over num_gpus GPUs
        settings = {k: v for k, v in locals().items() if k not in ("arch", "num_gpus", "sharding")}
        from lora_edu.core import sharding as sharding_module  # here, not at the top: it imports this module

        return sharding_module.estimate(arch, num_gpus, sharding or "fsdp", **settings)
    _check_choice("method", method, METHODS)
    _check_choice("quantization", quantization, QUANTIZATIONS)
    _check_choice("optimizer", optimizer, OPTIMIZERS)
    _check_choice("adamw_impl", adamw_impl, ADAMW_IMPLS)
    _check_choice("qlora_recipe", qlora_recipe, QLORA_RECIPES)
    _check_dropout(lora_dropout)
    for name, value in (("gradient_checkpointing", gradient_checkpointing), ("double_quant", double_quant),
                        ("set_to_none", set_to_none), ("master_weights", master_weights)):
        _check_flag(name, value)
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if quantization and method == "full":
        raise ValueError("4-bit weights cannot be trained: quantization='nf4' needs method='lora' (QLoRA) or 'inference'.")
    if double_quant and not quantization:
        raise ValueError("double_quant quantizes the 4-bit scales: it needs quantization='nf4'.")
    paper = qlora_recipe == "paper"
    if paper and not (quantization and method == "lora"):
        raise ValueError("qlora_recipe='paper' is the QLoRA paper's recipe for a 4-bit base: it needs method='lora' and quantization='nf4'.")
    if optimizer != "adamw" and (optimizer_dtype or master_weights):
        raise ValueError(f"optimizer={optimizer!r} keeps its own moments: leave optimizer_dtype=None and master_weights=False.")
    if optimizer == "adamw" and optimizer_dtype and not master_weights and method != "inference":
        stepped = (adapter_dtype or ("bf16" if qlora_recipe == "paper" else "fp32")) if method == "lora" else weight_dtype
        if _dtype_bytes(optimizer_dtype, "optimizer_dtype") != _dtype_bytes(stepped, "the trainable weights' dtype"):
            raise ValueError(
                f"torch.optim.AdamW keeps its moments in the dtype of the parameters it steps ({stepped}) and refuses to "
                f"step them with {optimizer_dtype} moments. For fp32 moments beside 16-bit weights, keep an fp32 master "
                "copy (master_weights=True) or use an optimizer that stores fp32 state for 16-bit weights "
                "(optimizer='paged_adamw_32bit', bitsandbytes' 32-bit AdamW).")
    if master_weights and optimizer_dtype not in (None, "fp32"):
        raise ValueError(f"master_weights=True: AdamW steps the fp32 master copy, so its moments are fp32; leave "
                         f"optimizer_dtype=None or 'fp32', not {optimizer_dtype!r}.")
    if optimizer != "adamw" and adamw_impl != "foreach":
        raise ValueError(f"adamw_impl chooses torch.optim.AdamW's implementation: it needs optimizer='adamw', not {optimizer!r}.")
    if lora_dropout and method != "lora":
        raise ValueError("lora_dropout is the dropout before LoRA's adapters: it needs method='lora'.")
    adapter_dtype = adapter_dtype or ("bf16" if paper else "fp32")
    a = resolve_arch(arch)
    p = _dtype_bytes(weight_dtype, "weight_dtype")
    counts = parameter_counts(a)
    tokens = batch_size * seq_len
    logits_fp32 = 4 * tokens * a.vocab_size

    sizes = trainable_tensor_sizes(a, method, lora_r, lora_targets)
    trainable = sum(sizes)
    if quantization and paper:   # qlora.py: embedding and head bf16, norms fp32, biases (inside LoRA layers) bf16
        base = (quantized_weight_bytes(a, double_quant) + 2 * (counts["embedding"] + counts["lm_head"] + counts["biases"])
                + 4 * counts["norms"])
    elif quantization:           # PEFT: everything left out of 4 bits in fp32 (loaded as is for inference)
        rest = counts["total"] - counts["linear_in_blocks"]   # embedding, head, norms, biases
        base = quantized_weight_bytes(a, double_quant) + rest * (4 if method == "lora" else p)
    else:
        base = counts["total"] * p
    if method == "lora":
        train_bytes = _dtype_bytes(adapter_dtype, "adapter_dtype")
        weights = base + trainable * train_bytes
    else:
        train_bytes = p
        weights = base
    if method == "inference":
        # No autograd: the peak is the weights plus the logits (and their fp32 copy in generation code).
        transient = tokens * a.vocab_size * p + tokens * (4 * a.hidden_size + 3 * a.intermediate_size) * p
        parts = dict(weights=weights, gradients=0, optimizer=0, activations=0, other=transient + workspace)
        return MemoryEstimate(weights, 0, 0, 0, workspace, weights + workspace + transient, 0, counts["total"],
                              "inference", parts)

    if optimizer == "adamw_8bit":
        optimizer_state = sum(2 * n + 8 * -(-n // ADAM8_BLOCK) + 2 * 256 * 4 if n >= ADAM8_MIN_SIZE else 8 * n for n in sizes)
        step_temporary = 0                                                     # bitsandbytes updates in place
    elif optimizer == "paged_adamw_32bit":
        optimizer_state = 8 * trainable                                        # two fp32 moments, whatever the dtype
        step_temporary = 0
    else:
        opt_bytes = 4 if master_weights else _dtype_bytes(optimizer_dtype, "optimizer_dtype") if optimizer_dtype else train_bytes
        optimizer_state = trainable * 2 * opt_bytes + (trainable * 4 if master_weights else 0)
        step_temporary = adamw_step_temporary(sizes, opt_bytes, adamw_impl)
    gradients = trainable * train_bytes

    # The residual stream's dtype: fp32 under either QLoRA recipe (PEFT's casts; the paper's fp32 norms).
    act_dtype = "fp32" if quantization else weight_dtype
    pa = _dtype_bytes(act_dtype, "weight_dtype")
    per_layer = (activation_bytes_per_token_layer(a, method, act_dtype, lora_r, lora_targets, adapter_dtype, lora_dropout,
                                                  qlora_recipe)
                 + attention_matrix_bytes_per_token_layer(a, seq_len, "bf16" if paper else act_dtype))
    head = (4 * a.hidden_size + (2 * pa * a.hidden_size if method == "full" else 0)) * tokens  # final norm (+ head input)
    checkpoints = a.num_hidden_layers * tokens * a.hidden_size * pa                           # each layer's input
    blocks = checkpoints if gradient_checkpointing else tokens * per_layer * a.num_hidden_layers
    activations = blocks + head + logits_fp32  # log-softmax output, fp32

    # Transients on top of weights + optimizer state + saved activations (+ gradients kept from the last step):
    kept = 0 if set_to_none else gradients
    logits_bytes = 2 if paper else pa                                          # the paper's bf16 head under autocast
    logits_fwd = tokens * a.vocab_size * logits_bytes + (logits_fp32 if logits_bytes != 4 else 0)  # logits, fp32 copy
    loss_bwd = 2 * logits_fp32                                                 # gradients over the vocabulary
    # Each moment: (gradients alive, activations alive, transients), over weights + optimizer state.
    moments = {"end of the forward pass": (kept, activations, logits_fwd),
               "start of the backward pass": (kept, activations, loss_bwd),     # the loss's gradient over the vocabulary
               "optimizer step": (gradients, 0, step_temporary)}                # activations freed, AdamW's temporary
    if gradient_checkpointing:  # a layer recomputed late in the backward pass, every gradient already there
        moments["recomputed layer"] = (gradients, checkpoints + tokens * (per_layer + 2 * a.hidden_size * pa), 0)
    peak_at = max(moments, key=lambda k: sum(moments[k]))   # the first of equal moments, as listed
    grads_alive, acts_alive, transient = moments[peak_at]
    peak = weights + optimizer_state + grads_alive + acts_alive + transient + workspace
    parts = dict(weights=weights, gradients=grads_alive, optimizer=optimizer_state, activations=acts_alive,
                 other=transient + workspace)
    total_params = counts["total"] + (trainable if method == "lora" else 0)
    step = weights + optimizer_state + sum(moments["optimizer step"]) + workspace
    return MemoryEstimate(weights, gradients, optimizer_state, activations, workspace, peak, trainable, total_params,
                          peak_at, parts, step)


def adamw_step_temporary(sizes: list[int], moment_bytes: int, impl: str = "foreach") -> int:
    """The largest temporary ``torch.optim.AdamW.step`` allocates, in bytes, for trainable tensors of ``sizes`` numbers.

    From torch/optim/adam.py (``_multi_tensor_adam``, ``_single_tensor_adam``, ``_fused_adam``), checked on
    the GPU (``MEASURED_CASES``, ``*_forloop`` and ``*_fused``): ``foreach`` computes
    ``torch._foreach_sqrt(exp_avg_sqs)`` for every tensor of a dtype at once, one temporary as large as
    all the second moments; ``for-loop`` computes ``exp_avg_sq.sqrt() / bias_correction2_sqrt`` one
    tensor at a time, two temporaries of the largest tensor alive together; ``fused`` none.
    """
    _check_choice("adamw_impl", impl, ADAMW_IMPLS)
    if not sizes or impl == "fused":
        return 0
    return moment_bytes * (sum(sizes) if impl == "foreach" else 2 * max(sizes))


def largest_batch(arch: Any, memory_bytes: int, limit: int = 4096, **settings) -> int:
    """The largest batch size whose estimated peak fits in ``memory_bytes`` (0 if not even batch 1 does).

    ``settings`` are :func:`estimate`'s (``method``, ``seq_len``, ...). The peak grows with the
    batch, so a binary search over 1..``limit`` finds it in a dozen estimates.
    """
    if isinstance(memory_bytes, bool) or not isinstance(memory_bytes, (int, float)) or memory_bytes <= 0:
        raise ValueError(f"memory_bytes must be a positive number of bytes, got {memory_bytes!r}.")
    if "batch_size" in settings:
        raise ValueError("largest_batch chooses batch_size itself: leave it out of the settings.")
    fits = lambda b: estimate(arch, batch_size=b, **settings).peak <= memory_bytes  # noqa: E731
    if not fits(1):
        return 0
    lo, hi = 1, limit
    if fits(hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo
