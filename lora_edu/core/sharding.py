"""Memory per GPU when one training run is spread over N GPUs: FSDP (``fully_shard``) or DDP.

Why: when a model's training peak exceeds one GPU (notebook 01: LLaMA-2-70B), the work is split
over several GPUs by a data-parallel engine. PyTorch has two, and they split memory differently:

* **DDP** (``torch.nn.parallel.DistributedDataParallel``) keeps a whole copy of the weights,
  gradients and optimizer state on every GPU and all-reduces the gradients in buckets (25 MiB
  each by default, ``bucket_cap_mb``). It saves nothing per GPU; it adds the buckets, which
  together hold one flat copy of every gradient unless ``gradient_as_bucket_view=True`` (the DDP
  docstring: "the saved memory size will be equal to the total gradients size").
* **FSDP** (FSDP2, ``torch.distributed.fsdp.fully_shard``, full sharding, one group per decoder
  layer plus the root) keeps 1/N of every parameter, gradient and optimizer state on each GPU
  and gathers a layer's whole parameters only while that layer runs.

What FSDP2 allocates, read from its source (``torch/distributed/fsdp/_fully_shard/``, torch 2.13):

* **Sharded parameters** (``_fsdp_param.py``, ``FSDPParam._init_sharded_param``): each parameter
  is split along dim 0 with ``torch.chunk`` (``_fsdp_common._chunk_with_empty``): with
  c = ceil(rows / N), rank k holds rows [k·c, min((k+1)·c, rows)), possibly none, but every rank
  *allocates* c rows ("0th always padded") and its parameter is a view of the first ones. So a
  rank stores ceil(rows/N)·(other dims) numbers of each parameter: the padding to a multiple of N.
* **Sharded gradients** (``_fsdp_collectives.py``, ``foreach_reduce``): the reduce-scatter's
  output is one flat buffer per group of the padded shards' size, and each gradient is a view
  of it: padded too. Only parameters that require a gradient take part (LoRA: the adapters).
* **Optimizer state**: AdamW creates its moments with ``torch.zeros_like`` of the sharded
  parameter, i.e. of its *local* rows: not padded, so the last ranks may hold a little less.
* **Gathered parameters in flight** (``foreach_all_gather`` / ``foreach_all_gather_copy_out``,
  and the note "Overlapping all-gather copy-in and all-gather" in ``_fsdp_param_group.py``): a
  group's all-gather fills a flat buffer of its padded full size, copied out into one tensor per
  parameter that the layer computes with; in the forward pass the flat buffer is freed only after
  the next group's copy-out, and the backward pass gathers one group ahead. This module counts
  ``1 + prefetch`` layers' worth (``prefetch=1``: the layer running and the one gathered next).
* **The root** (``_fsdp_state.py``, ``_lazy_init``): the root group (embedding, final norm and
  output head when every decoder layer is its own group) is not resharded after the forward pass,
  so its gathered parameters stay from the forward pass to the end of the backward pass. Its
  inputs (token ids) need no gradient, so its gradients are reduce-scattered only in the final
  backward callback (``_root_post_backward_final_callback``): with full fine-tuning the root's
  unsharded gradients wait until then.
* **Reduce-scatter buffers**: a layer's gradients as autograd produced them, and the padded
  reduce-scatter input (one retained: ``reduce_scatter_max_input_buffers = 1``).

Everything not about sharding (bytes per weight, gradient and optimizer number; activations and
logits; the workspace) is read from :func:`lora_edu.core.memory.estimate`, so no fact is stated
twice. ``batch_size`` is the batch *per GPU*: in data parallelism each GPU runs its own batch.
The peak is the larger of two moments, as in ``memory``: the forward/backward moment (saved
activations and logits plus the gathered layers and gradient buffers, counted together: a little
pessimistic, since they peak at slightly different times; with gradient checkpointing or
``set_to_none=False`` it holds this GPU's gradient shards too) and the optimizer step.
QLoRA's 4-bit weights are sharded as bytes spread evenly over their numbers (bitsandbytes packs
them; FSDP2 over 4-bit weights has not been measured here).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from lora_edu.core import memory

SHARDINGS = ("fsdp", "ddp")
DDP_BUCKET_CAP_MB = 25  # torch.nn.parallel.DistributedDataParallel's default bucket_cap_mb (MiB); sets the count of buckets, not their total

#: The per-GPU batch at which :func:`_forward_extra` reads the slope of memory.estimate's
#: forward/backward moments: large enough for them to be the peak for any model.
_LARGE_BATCH = 2**20


@dataclass(frozen=True)
class ParamShape:
    """One parameter tensor of the model, as FSDP sees it (``group``: "root" or "layer")."""

    name: str
    shape: tuple[int, ...]
    group: str
    adapter: bool  # a LoRA matrix (else part of the base model)


def model_params(arch: Any, lora_r: int | None = None, lora_targets=("q_proj", "v_proj")) -> list[ParamShape]:
    """The parameter tensors of the root and of one decoder layer, with PyTorch's shapes.

    ``nn.Linear`` stores its weight (out×in), so a projection's dim 0 (the one FSDP shards) is its
    output size; PEFT's ``lora_A`` is r×in (down) and ``lora_B`` out×r (up). Shapes come from
    :func:`memory.linear_shapes`; the total is checked against :func:`memory.parameter_counts`.
    """
    a = memory.resolve_arch(arch)
    h, V = a.hidden_size, a.vocab_size
    root = [ParamShape("model.embed_tokens.weight", (V, h), "root", False), ParamShape("model.norm.weight", (h,), "root", False)]
    if not a.tie_word_embeddings:
        root.append(ParamShape("lm_head.weight", (V, h), "root", False))
    shapes = memory.linear_shapes(a)
    layer = [ParamShape(f"{n}.weight", (o, i), "layer", False) for n, (i, o) in shapes.items()]
    layer += [ParamShape(f"{n}.weight", (h,), "layer", False) for n in ("input_layernorm", "post_attention_layernorm")]
    biases = (("q_proj", "k_proj", "v_proj") if a.qkv_bias else ()) + (("o_proj",) if a.o_bias else ())
    layer += [ParamShape(f"{n}.bias", (shapes[n][1],), "layer", False) for n in biases]  # Qwen2: q, k, v
    if lora_r is not None:
        for t in ((lora_targets,) if isinstance(lora_targets, str) else tuple(lora_targets)):
            i, o = shapes[t]
            layer += [ParamShape(f"{t}.lora_A.weight", (lora_r, i), "layer", True), ParamShape(f"{t}.lora_B.weight", (o, lora_r), "layer", True)]
    base = sum(math.prod(p.shape) for p in root) + a.num_hidden_layers * sum(math.prod(p.shape) for p in layer if not p.adapter)
    if base != memory.parameter_counts(a)["total"]:  # pragma: no cover - the two descriptions of LLaMA disagree
        raise AssertionError(f"sharding.model_params counts {base} parameters, memory.parameter_counts {memory.parameter_counts(a)['total']}")
    return root + layer


def _check_gpus(num_gpus: int, sharding: str, rank: int = 0) -> None:
    if isinstance(num_gpus, bool) or not isinstance(num_gpus, int) or num_gpus < 1:
        raise ValueError(f"num_gpus must be a positive integer (1 = one GPU), got {num_gpus!r}.")
    if sharding not in SHARDINGS:
        raise ValueError(f"unknown sharding {sharding!r}; choose one of {list(SHARDINGS)}.")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_gpus:
        raise ValueError(f"rank must be an integer in [0, {num_gpus - 1}] for num_gpus={num_gpus}, got {rank!r}.")


def shard_rows(rows: int, num_gpus: int, rank: int) -> tuple[int, int]:
    """(rows rank ``rank`` holds, rows every rank allocates) when FSDP2 shards ``rows`` over ``num_gpus``.

    ``torch.chunk`` with chunks of c = ceil(rows/N): rank k holds rows [k·c, min((k+1)·c, rows));
    every rank allocates c rows (``_fsdp_param.py``: "0th always padded").
    """
    _check_gpus(num_gpus, "fsdp", rank)
    c = -(-rows // num_gpus)
    return max(0, min(c, rows - rank * c)), c


def shard_numel(shape: tuple[int, ...], num_gpus: int, rank: int = 0) -> tuple[int, int]:
    """(numbers held, numbers allocated) of one parameter on ``rank``: :func:`shard_rows` times the other dims."""
    held, allocated = shard_rows(shape[0], num_gpus, rank)
    rest = math.prod(shape[1:])
    return held * rest, allocated * rest


@dataclass(frozen=True)
class ShardedEstimate:
    """Memory of one GPU (``rank``) when training on ``num_gpus`` GPUs, in bytes. ``total`` is the peak.

    Static (held after an optimizer step): ``weights``, ``gradients``, ``optimizer`` (this rank's
    shards under FSDP, whole copies under DDP), ``buckets`` (DDP's gradient buckets) and the
    ``workspace``. Held for part of a step: ``unsharded`` (FSDP's gathered parameters: the root
    and ``1 + prefetch`` layers), ``grad_buffers`` (FSDP: a layer's gradients before and during the
    reduce-scatter, and the root's with full fine-tuning) and ``activations`` (at the per-GPU batch).
    The field names match :class:`memory.MemoryEstimate`'s, so the same figures draw either.
    """

    num_gpus: int
    sharding: str
    rank: int
    weights: int
    gradients: int
    optimizer: int
    buckets: int
    workspace: int
    unsharded: int
    grad_buffers: int
    activations: int
    peak: int
    trainable_params: int
    total_params: int

    @property
    def rule_of_thumb(self) -> int:
        """Weights + gradients + optimizer state on this GPU."""
        return self.weights + self.gradients + self.optimizer

    @property
    def static(self) -> int:
        """What stays allocated on this GPU after an optimizer step."""
        return self.rule_of_thumb + self.buckets + self.workspace

    @property
    def total(self) -> int:
        return self.peak

    @property
    def transient(self) -> int:
        """What the peak holds beyond the static part and the saved activations."""
        return self.peak - self.static - self.activations


@dataclass(frozen=True)
class _OneGpu:
    """What :func:`memory.estimate` says about one GPU, in the terms sharding needs (independent of N)."""

    est: memory.MemoryEstimate
    params: list[ParamShape]
    layers: int
    linear_bytes: Fraction    # bytes of a number of a block's linear layers (fractional for 4-bit weights)
    other_bytes: Fraction     # bytes of a number of the embedding, head and norms
    adapter_bytes: Fraction   # bytes of an adapter number
    grad_bytes: Fraction      # bytes of a gradient, per trainable number
    optimizer_bytes: Fraction  # bytes of optimizer state, per trainable number
    base_trains: bool         # full fine-tuning: the base model's numbers train
    forward_extra: int        # the forward/backward moment minus weights, optimizer state and gradients
    grads_in_forward: bool    # that moment holds the gradients (kept, or a checkpointed layer's recompute)
    step_temporary: int | None  # the optimizer step's temporaries; None where that moment is never the peak


def _accepts(name: str) -> bool:
    return name in inspect.signature(memory.estimate).parameters


def _forward_extra(kwargs: dict, batch: int) -> int:
    """memory.estimate's largest forward/backward moment at ``batch``, minus weights, optimizer state and gradients.

    Those moments hold weights + optimizer state (+ the gradients, where kept or where a
    checkpointed layer is recomputed) + what grows with the batch (activations, logits). With
    ``set_to_none=False`` every one of them holds the gradients, so their maximum is
    weights + optimizer + gradients + slope·batch: read the slope at batches so large that these
    moments, not the optimizer step, are the peak. That recovers them at any batch without
    restating memory's formulas; the linearity is checked, so a change there is noticed.
    """
    probe = dict(kwargs, set_to_none=False) if _accepts("set_to_none") else kwargs
    b = _LARGE_BATCH
    e1, e2, e3 = (memory.estimate(**probe, batch_size=k * b) for k in (1, 2, 3))
    slope, rem = divmod(e2.peak - e1.peak, b)
    if rem or e3.peak - e2.peak != e2.peak - e1.peak:  # pragma: no cover - guards a change in memory.py
        raise AssertionError("memory.estimate's peak is no longer linear in batch_size at large batches; revisit sharding._forward_extra.")
    kept = e1.gradients if _accepts("set_to_none") else 0
    return e1.peak - e1.workspace - e1.weights - e1.optimizer - kept - (b - batch) * slope


def _one_gpu(arch: Any, **estimate_kwargs) -> _OneGpu:
    """Everything per GPU that does not depend on N: bytes per number and the moments' parts."""
    kwargs = dict(arch=arch, **estimate_kwargs)
    batch = kwargs.pop("batch_size", 1)
    est = memory.estimate(**kwargs, batch_size=batch)
    a = memory.resolve_arch(arch)
    counts = memory.parameter_counts(a)
    n_adapters = est.total_params - counts["total"]
    params = model_params(a, kwargs.get("lora_r", 8) if n_adapters else None, kwargs.get("lora_targets", ("q_proj", "v_proj")))
    if a.num_hidden_layers * sum(math.prod(p.shape) for p in params if p.adapter) != n_adapters:  # pragma: no cover
        raise AssertionError(f"sharding.model_params and memory.estimate disagree on the adapters' size for {kwargs}")
    t = est.trainable_params
    grad_b = Fraction(est.gradients, t) if t else Fraction(0)
    opt_b = Fraction(est.optimizer, t) if t else Fraction(0)
    adapter_b = grad_b  # memory: a gradient is kept in its parameter's dtype
    base = est.weights - n_adapters * adapter_b
    n_linear, n_other = counts["linear_in_blocks"], counts["total"] - counts["linear_in_blocks"]
    if kwargs.get("quantization"):  # 4-bit block linears (packed weights and scales, spread over their numbers)
        linear_b = Fraction(memory.quantized_weight_bytes(a, kwargs.get("double_quant", False)), n_linear)
        other_b = (base - n_linear * linear_b) / n_other
    else:
        linear_b = other_b = base / counts["total"]
    base_trains = t == counts["total"] and n_adapters == 0

    forward_extra = _forward_extra(kwargs, batch)
    grads_in_forward = not kwargs.get("set_to_none", True) or bool(kwargs.get("gradient_checkpointing", False))
    one_gpu_peak = est.peak - est.workspace
    forward = est.weights + est.optimizer + (est.gradients if grads_in_forward else 0) + forward_extra
    # If the step is not the peak on one GPU it is not on any rank either: it holds the gradients
    # and temporaries (at most their one-GPU sizes) where the forward/backward moment holds
    # forward_extra, at least as large, plus the gathered layers.
    step_temporary = one_gpu_peak - est.weights - est.gradients - est.optimizer if one_gpu_peak > forward else None
    return _OneGpu(est, params, a.num_hidden_layers, linear_b, other_b, adapter_b, grad_b, opt_b, base_trains,
                   forward_extra, grads_in_forward, step_temporary)


def _bytes(x: Fraction) -> int:
    return math.ceil(x)


def _fsdp(g: _OneGpu, num_gpus: int, rank: int, prefetch: int) -> ShardedEstimate:
    est, N = g.est, num_gpus
    weights = gradients = optimizer = Fraction(0)
    held_trainable = 0  # trainable numbers this rank holds (for the optimizer step's temporaries)
    unsharded = {"root": Fraction(0), "layer": Fraction(0)}
    grad_buffers = {"root": Fraction(0), "layer": Fraction(0)}
    for p in g.params:
        copies = 1 if p.group == "root" else g.layers
        held, allocated = shard_numel(p.shape, N, rank)
        size = g.adapter_bytes if p.adapter else g.linear_bytes if p.name.endswith("_proj.weight") else g.other_bytes
        trains = p.adapter or g.base_trains
        weights += copies * allocated * size
        unsharded[p.group] += allocated * N * size           # the all-gather output is the padded full size
        if trains:
            gradients += copies * allocated * g.grad_bytes   # views of the padded reduce-scatter output
            optimizer += copies * held * g.optimizer_bytes   # zeros_like of the local rows
            held_trainable += copies * held
            if p.group == "root":   # reduce-scattered only at the end of the backward pass
                grad_buffers["root"] += math.prod(p.shape) * g.grad_bytes
            else:                   # autograd's gradient + the padded reduce-scatter input
                grad_buffers["layer"] += (math.prod(p.shape) + allocated * N) * g.grad_bytes
    gathered = unsharded["root"] + (1 + prefetch) * unsharded["layer"]
    buffers = grad_buffers["root"] + grad_buffers["layer"]
    forward = weights + optimizer + (gradients if g.grads_in_forward else 0) + gathered + buffers + g.forward_extra
    peak = forward
    if g.step_temporary is not None:
        share = Fraction(held_trainable, est.trainable_params) if est.trainable_params else Fraction(0)
        peak = max(forward, weights + gradients + optimizer + g.step_temporary * share)
    return ShardedEstimate(N, "fsdp", rank, _bytes(weights), _bytes(gradients), _bytes(optimizer), 0, est.workspace,
                           _bytes(gathered), _bytes(buffers), est.activations, _bytes(peak) + est.workspace,
                           est.trainable_params, est.total_params)


def _ddp(g: _OneGpu, num_gpus: int, rank: int, gradient_as_bucket_view: bool) -> ShardedEstimate:
    est = g.est
    buckets = 0 if gradient_as_bucket_view else est.gradients
    return ShardedEstimate(num_gpus, "ddp", rank, est.weights, est.gradients, est.optimizer, buckets, est.workspace,
                           0, 0, est.activations, est.peak + buckets, est.trainable_params, est.total_params)


def estimate(arch: Any, num_gpus: int, sharding: str = "fsdp", *, rank: int = 0, prefetch: int = 1,
             gradient_as_bucket_view: bool = False, **estimate_kwargs) -> ShardedEstimate:
    """Memory of GPU ``rank`` when training on ``num_gpus`` GPUs with ``sharding`` ("fsdp" or "ddp"), in bytes.

    ``estimate_kwargs`` are :func:`memory.estimate`'s (``method``, ``weight_dtype``, ``batch_size``
    (per GPU), ``seq_len``, ``lora_r``, ...). ``rank`` matters only for FSDP's optimizer state
    (rank 0 holds the most); ``prefetch``: layers gathered ahead of the one running (FSDP2: 1);
    ``gradient_as_bucket_view``: DDP's option that makes gradients views of its buckets.
    With ``num_gpus=1`` the static part equals :func:`memory.estimate`'s.
    """
    _check_gpus(num_gpus, sharding, rank)
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
        raise ValueError(f"prefetch must be a non-negative integer (FSDP2 gathers 1 layer ahead), got {prefetch!r}.")
    g = _one_gpu(arch, **estimate_kwargs)
    return _fsdp(g, num_gpus, rank, prefetch) if sharding == "fsdp" else _ddp(g, num_gpus, rank, gradient_as_bucket_view)


def gpus_needed(arch: Any, gpu_memory: int, sharding: str = "fsdp", *, max_gpus: int = 1024, **estimate_kwargs) -> int | None:
    """The smallest number of GPUs on which every GPU's peak fits ``gpu_memory`` bytes; None if none up to ``max_gpus`` does.

    ``gpu_memory`` in bytes, e.g. ``le.memory_views.gpu_bytes("80 GB")`` (the card's usable memory, ``le.memory.CARDS``). One GPU means
    plain training (:func:`memory.estimate`, no engine); from two on, ``sharding``'s memory per GPU.
    DDP never lowers the memory per GPU, so it gives 1 or None. Under FSDP the shards shrink as
    1/N but the activations at the per-GPU batch, the gathered layers and the workspace do not:
    past some N adding GPUs no longer helps, and None says so.
    """
    if isinstance(gpu_memory, bool) or not isinstance(gpu_memory, int) or gpu_memory <= 0:
        raise ValueError(f"gpu_memory must be a positive number of bytes, e.g. le.memory_views.gpu_bytes('80 GB'), got {gpu_memory!r}.")
    _check_gpus(max_gpus, sharding)
    if memory.estimate(arch, **estimate_kwargs).peak <= gpu_memory:
        return 1
    g = _one_gpu(arch, **estimate_kwargs)
    for n in range(2, max_gpus + 1):
        e = _fsdp(g, n, 0, 1) if sharding == "fsdp" else _ddp(g, n, 0, False)
        if e.peak <= gpu_memory:
            return n
    return None
