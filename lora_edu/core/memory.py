"""How much GPU memory fine-tuning a LLaMA-style model takes: parameter counts and a calculator.

Why: LoRA exists because full fine-tuning stores, for every parameter, its weight, its gradient
and two AdamW moments. This module counts parameters exactly from the architecture (never typed
in) and estimates a training step's memory in bytes, part by part:

* **weights** — every parameter in ``weight_dtype`` (plus fp32 adapters for LoRA, PEFT's default);
* **gradients** — one per *trainable* parameter, in that parameter's dtype;
* **optimizer** — AdamW's two moments per trainable parameter (PyTorch keeps them in the
  parameter's dtype unless ``optimizer_dtype`` says otherwise), plus fp32 master weights when
  ``master_weights=True`` (classic mixed precision);
* **activations** — what autograd saves during the forward pass for the backward pass
  (SDPA attention, no gradient checkpointing), per token and layer, derived from the LLaMA code
  in ``transformers`` and checked two ways: ``tests/test_memory.py`` counts autograd's saved
  tensors on a small model, and ``benchmarks/measure_memory.py`` measured them on a GPU;
* **workspace** — memory the framework holds whatever the model: PyTorch allocates cuBLAS's
  workspaces (64 MiB on the measured GPU) through its caching allocator at the first matmul;
* **peak** — the largest of three moments of a step: the end of the forward pass (logits still
  alive), the start of the backward pass (the loss's gradient over the vocabulary), and the
  optimizer step (gradients plus one temporary of AdamW's multi-tensor update).

The measured comparison is in ``lora_edu/data/memory_measurements.json`` (notebook 01 plots it).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

GB, GiB = 10**9, 2**30
CUBLAS_WORKSPACE = 64 * 2**20  # measured: memory_allocated() grows by 64 MiB at the first matmul on an H200

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
METHODS = ("full", "lora", "inference")
LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

PRESETS: dict[str, dict[str, int]] = {
    "llama-7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, vocab_size=32000),
    "llama-13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40, vocab_size=32000),
    "llama-2-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                        num_key_value_heads=8, vocab_size=32000),
    # The sizes measured on a GPU (benchmarks/measure_memory.py).
    "llama-60m": dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8, vocab_size=32000),
    "llama-130m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12, vocab_size=32000),
    "llama-370m": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=24, num_attention_heads=16, vocab_size=32000),
    "llama-1.3b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, vocab_size=32000),
    "llama-3.4b": dict(hidden_size=3200, intermediate_size=8640, num_hidden_layers=26, num_attention_heads=32, vocab_size=32000),
}


#: The sizes measured on a GPU by benchmarks/measure_memory.py (keys of PRESETS).
MEASURED_MODELS = ("llama-60m", "llama-130m", "llama-370m", "llama-1.3b", "llama-3.4b")

#: The cases benchmarks/measure_memory.py measures, as calculator settings; the benchmark builds
#: its models from these same settings, so the measurement and the prediction cannot drift apart.
MEASURED_CASES = {
    "full_fp32": dict(method="full", weight_dtype="fp32"),
    "full_bf16": dict(method="full", weight_dtype="bf16"),
    "lora_qv": dict(method="lora", weight_dtype="bf16", lora_r=8, lora_targets=("q_proj", "v_proj")),
    "lora_all": dict(method="lora", weight_dtype="bf16", lora_r=16, lora_targets=LINEAR_MODULES),
    "infer_bf16": dict(method="inference", weight_dtype="bf16"),
}


@dataclass(frozen=True)
class Arch:
    """A LLaMA-style decoder: RMSNorm, attention with q/k/v/o projections, a SwiGLU MLP, untied head."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    vocab_size: int
    num_key_value_heads: int | None = None
    tie_word_embeddings: bool = False

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

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def kv_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads * self.kv_heads


def resolve_arch(arch: Any) -> Arch:
    """Accept an :class:`Arch`, a dict, a preset name (``"llama-7b"``) or a transformers config."""
    if isinstance(arch, Arch):
        return arch
    if isinstance(arch, str):
        if arch not in PRESETS:
            raise ValueError(f"unknown preset {arch!r}; choose one of {sorted(PRESETS)} or pass a dict of sizes.")
        return Arch(**PRESETS[arch])
    names = [f.name for f in fields(Arch)]
    if isinstance(arch, dict):
        missing = [n for n in names[:5] if n not in arch]
        if missing:
            raise ValueError(f"architecture dict lacks {missing}; it needs {names[:5]}.")
        return Arch(**{n: arch[n] for n in names if n in arch})
    if all(hasattr(arch, n) for n in names[:5]):  # a transformers config, or anything shaped like one
        return Arch(**{n: getattr(arch, n) for n in names if getattr(arch, n, None) is not None})
    raise TypeError(f"cannot read an architecture from {type(arch).__name__}; pass a preset name, a dict or a transformers config.")


def linear_shapes(arch: Any) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each linear layer in one decoder block."""
    a = resolve_arch(arch)
    h, m, kv = a.hidden_size, a.intermediate_size, a.kv_dim
    return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
            "gate_proj": (h, m), "up_proj": (h, m), "down_proj": (m, h)}


def parameter_counts(arch: Any) -> dict[str, int]:
    """Exact parameter counts by part; ``total`` matches ``sum(p.numel())`` of the transformers model."""
    a = resolve_arch(arch)
    L, h, V = a.num_hidden_layers, a.hidden_size, a.vocab_size
    shapes = linear_shapes(a)
    attention = L * sum(i * o for n, (i, o) in shapes.items() if n in ("q_proj", "k_proj", "v_proj", "o_proj"))
    mlp = L * sum(i * o for n, (i, o) in shapes.items() if n in ("gate_proj", "up_proj", "down_proj"))
    norms = L * 2 * h + h
    embedding = V * h
    lm_head = 0 if a.tie_word_embeddings else V * h
    return dict(embedding=embedding, attention=attention, mlp=mlp, norms=norms, lm_head=lm_head,
                linear_in_blocks=attention + mlp, total=embedding + attention + mlp + norms + lm_head)


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
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ValueError(f"lora_r must be a positive integer, got {r!r}.")
    a = resolve_arch(arch)
    shapes = linear_shapes(a)
    return a.num_hidden_layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in _check_targets(targets))


@dataclass(frozen=True)
class MemoryEstimate:
    """A training step's (or inference's) memory, in bytes. ``total`` is the peak."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    workspace: int
    peak: int
    trainable_params: int
    total_params: int

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
                                     lora_targets: Iterable[str] = ("q_proj", "v_proj"), adapter_dtype: str = "fp32") -> int:
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
      and A's output (bytes·r).
    """
    a = resolve_arch(arch)
    p = _dtype_bytes(weight_dtype, "weight_dtype")
    h, m, kv = a.hidden_size, a.intermediate_size, a.kv_dim
    common = 2 * 4 * h + 8 + p * (2 * h + 2 * kv) + 4 * a.num_attention_heads + 3 * p * m
    if method == "inference":
        return 0
    if method == "full":
        return common + 2 * p * h + p * h + p * h + p * m
    q = _dtype_bytes(adapter_dtype, "adapter_dtype")
    targets = _check_targets(lora_targets)
    shapes = linear_shapes(a)
    group_input = {"q_proj": ("attn_in", p * h), "k_proj": ("attn_in", p * h), "v_proj": ("attn_in", p * h),
                   "o_proj": ("attn_out", 0), "gate_proj": ("mlp_in", p * h), "up_proj": ("mlp_in", p * h),
                   "down_proj": ("mlp_mid", p * m)}
    if q != p:
        inputs = sum(q * shapes[t][0] for t in targets)
    else:
        inputs = sum(dict(group_input[t] for t in targets).values())
    return common + inputs + len(targets) * q * lora_r


def activation_breakdown_per_token_layer(arch: Any, method: str, weight_dtype: str = "bf16", lora_r: int = 8,
                                        lora_targets: Iterable[str] = ("q_proj", "v_proj"),
                                        adapter_dtype: str = "fp32") -> dict[str, int]:
    """:func:`activation_bytes_per_token_layer` split into what each part is kept *for*.

    Why: "LoRA removes gradients and optimizer state, not activations" is half true. The parts:

    * ``backprop_through_block``: what the backward pass needs to send a gradient *through* the
      block (RMSNorm inputs, SDPA's q, k, v, output and log-sum-exp, the SwiGLU intermediates).
      Full fine-tuning and LoRA both keep it: LoRA's adapters in earlier layers need that gradient.
    * ``frozen_weight_gradients``: the inputs of the linear layers and the norms' normalised
      inputs, needed only for the *weights'* gradients. LoRA drops it: the weights are frozen.
    * ``adapter_inputs``: each adapter's own copy of its input (in the adapter's dtype; when that
      differs from the base's, one cast copy per adapter, not shared between q, k and v).
    * ``adapter_down_outputs``: A's output, r numbers per adapter.

    The parts add up to :func:`activation_bytes_per_token_layer` (a unit test checks it).
    """
    a = resolve_arch(arch)
    total = activation_bytes_per_token_layer(a, method, weight_dtype, lora_r, lora_targets, adapter_dtype)
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


def estimate(arch: Any, method: str = "full", weight_dtype: str = "bf16", batch_size: int = 1, seq_len: int = 512,
             lora_r: int = 8, lora_targets: Iterable[str] = ("q_proj", "v_proj"), adapter_dtype: str = "fp32",
             optimizer_dtype: str | None = None, master_weights: bool = False,
             workspace: int = CUBLAS_WORKSPACE) -> MemoryEstimate:
    """Estimate the memory of one training step (or of inference) with AdamW, in bytes.

    ``method``: "full" (every parameter trains), "lora" (frozen base in ``weight_dtype``,
    adapters in ``adapter_dtype``) or "inference" (no gradients). ``optimizer_dtype``: dtype of
    AdamW's two moments (default: the trainable parameters' own, as PyTorch does).
    ``master_weights``: keep an fp32 copy of trainable weights (classic fp16 mixed precision).
    ``workspace``: bytes the framework holds besides tensors (0 to leave it out).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}.")
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    a = resolve_arch(arch)
    p = _dtype_bytes(weight_dtype, "weight_dtype")
    counts = parameter_counts(a)
    tokens = batch_size * seq_len
    logits_fp32 = 4 * tokens * a.vocab_size

    if method == "lora":
        q = _dtype_bytes(adapter_dtype, "adapter_dtype")
        trainable = lora_parameter_count(a, lora_r, lora_targets)
        train_bytes = q
        weights = counts["total"] * p + trainable * q
    else:
        trainable = counts["total"] if method == "full" else 0
        train_bytes = p
        weights = counts["total"] * p
    if method == "inference":
        # No autograd: the peak is the weights plus the logits (and their fp32 copy in generation code).
        transient = tokens * a.vocab_size * p + tokens * (4 * a.hidden_size + 3 * a.intermediate_size) * p
        return MemoryEstimate(weights, 0, 0, 0, workspace, weights + workspace + transient, 0, counts["total"])

    opt_bytes = _dtype_bytes(optimizer_dtype, "optimizer_dtype") if optimizer_dtype else train_bytes
    gradients = trainable * train_bytes
    optimizer = trainable * 2 * opt_bytes + (trainable * 4 if master_weights else 0)

    per_layer = activation_bytes_per_token_layer(a, method, weight_dtype, lora_r, lora_targets, adapter_dtype)
    head = (4 * a.hidden_size + (2 * p * a.hidden_size if method == "full" else 0)) * tokens  # final norm (+ head input)
    activations = tokens * per_layer * a.num_hidden_layers + head + logits_fp32  # log-softmax output, fp32

    # Transients on top of weights + optimizer state + saved activations:
    logits_fwd = tokens * a.vocab_size * p + (logits_fp32 if p != 4 else 0)  # the logits, and their fp32 copy
    loss_bwd = 2 * logits_fp32                                                # gradients over the vocabulary
    peak_forward = weights + optimizer + activations + logits_fwd
    peak_backward = weights + optimizer + activations + loss_bwd
    peak_step = weights + gradients + optimizer + trainable * opt_bytes       # AdamW foreach: one temporary
    peak = max(peak_forward, peak_backward, peak_step) + workspace
    total_params = counts["total"] + (trainable if method == "lora" else 0)
    return MemoryEstimate(weights, gradients, optimizer, activations, workspace, peak, trainable, total_params)
