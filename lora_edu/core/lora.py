"""LoRA from scratch: ``LoRALinear``, ``add_lora``, ``merge_lora`` and parameter counting.

Convention (PEFT's, used across the course): a linear layer maps ``in`` features to ``out``
features with weight W (out×in). LoRA adds ΔW = B·A with A (r×in) and B (out×r), scaled by
α/r, so the layer computes ``base(x) + (dropout(x)·Aᵀ·Bᵀ)·scaling``.

GPT-2's layers (``c_attn``, ``c_proj``, ``c_fc``) are transformers' ``Conv1D``: a linear layer
whose weight is stored transposed, (in×out). A and B keep the shapes above either way (so adapter
files look the same); only merging must transpose ΔW. PEFT calls this ``fan_in_fan_out=True``.

Bad input raises :class:`LoRAConfigError` (a ValueError) or :class:`LoRAStateError` (a
RuntimeError) with a message that names the fix, and always before anything is changed:
a failed call leaves the model exactly as it was.
"""
from __future__ import annotations

import math
import re
import sys
import warnings
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


class LoRAConfigError(ValueError):
    """A LoRA setting that cannot work (rank, alpha, dropout, target modules)."""


class LoRAStateError(RuntimeError):
    """An operation that does not fit the layer's state (merging twice, wrapping twice)."""


def check_lora_settings(r, alpha, dropout) -> None:
    """Validate r, alpha and dropout; raise :class:`LoRAConfigError` naming the fix."""
    if isinstance(r, bool) or not isinstance(r, int):
        raise LoRAConfigError(f"r must be a positive int (the rank), got {r!r} of type {type(r).__name__}; use e.g. r=8.")
    if r <= 0:
        raise LoRAConfigError(f"r must be a positive int (the rank), got {r}; use e.g. r=8.")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise LoRAConfigError(f"alpha must be a positive number (the scale is alpha/r), got {alpha!r}; a common choice is alpha=2*r.")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise LoRAConfigError(f"dropout must be in [0, 1), got {dropout!r}; use 0.0 for none or e.g. 0.05.")


SUPPORTED = "nn.Linear or transformers' Conv1D (GPT-2's c_attn, c_proj, c_fc)"


def _conv1d_class() -> type | None:
    """transformers' ``Conv1D`` class, or None if transformers was never imported.

    transformers is slow to import and lora_edu.core must work without it. A ``Conv1D`` object
    can only exist once its module has been imported, so looking in ``sys.modules`` is enough.
    """
    return getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)


def is_fan_in_fan_out(module: nn.Module) -> bool:
    """True for a ``Conv1D``, whose weight is (in×out), the transpose of ``nn.Linear``'s (out×in)."""
    conv1d = _conv1d_class()
    return conv1d is not None and isinstance(module, conv1d)


def is_lora_target(module: nn.Module) -> bool:
    """Whether :class:`LoRALinear` can wrap ``module``: an ``nn.Linear`` or a transformers ``Conv1D``."""
    return isinstance(module, nn.Linear) or is_fan_in_fan_out(module)


def in_out_features(module: nn.Module) -> tuple[int, int]:
    """(in, out) of an ``nn.Linear``, a ``Conv1D`` or a :class:`LoRALinear`, read from the weight's shape."""
    if isinstance(module, LoRALinear):
        module = module.base
    d0, d1 = module.weight.shape
    return (d0, d1) if is_fan_in_fan_out(module) else (d1, d0)


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` (or transformers ``Conv1D``) plus a trainable low-rank update B·A, scaled by α/r.

    ``A`` (r×in, the down-projection, applied to x first) starts Kaiming-uniform with a=√5 and
    ``B`` (out×r, the up-projection, applied last) starts at zero, so at initialisation the layer
    computes exactly what ``base`` computes. This is PEFT's default (``init_lora_weights=True``,
    ``LoraLayer.reset_lora_parameters``) and Microsoft's loralib (``loralib/layers.py``), i.e. the
    init of an ``nn.Linear`` weight. The paper (Hu et al. 2021, §4.1) describes A as random
    *Gaussian*; PEFT offers that as ``init_lora_weights="gaussian"`` (std 1/r). Either way the
    zero sits on B, the matrix applied last: B then gets a non-zero gradient at the first step
    while A's gradient is zero (it is multiplied by B).
    ``use_rslora=True`` scales by α/√r instead (rank-stabilised LoRA).

    A rank larger than min(in, out) gives a *warning*, not an error: ΔW (out×in) can never have
    rank above min(in, out), so the extra parameters add nothing, but the result is still
    correct, PEFT allows it, and a model-wide ``add_lora(..., r=64)`` should not fail because
    one small layer is narrower than 64.

    ``base`` may also be a transformers ``Conv1D`` (GPT-2). The layer reads the weight's layout
    from the type and records it as ``fan_in_fan_out`` (True for ``Conv1D``); there is nothing to
    set. Passing ``fan_in_fan_out`` is allowed, to state what you expect, but a value that
    contradicts the layer is an error (:class:`LoRAConfigError`), not PEFT's behaviour of warning
    and overriding it: a wrong layout would silently merge a transposed ΔW.
    """

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0, *, use_rslora: bool = False,
                 fan_in_fan_out: bool | None = None):
        super().__init__()
        check_lora_target(base, fan_in_fan_out)
        check_lora_settings(r, alpha, dropout)
        d_in, d_out = in_out_features(base)
        if r > min(d_in, d_out):
            warnings.warn(
                f"r={r} exceeds min(in, out)={min(d_in, d_out)}: ΔW's rank cannot exceed that, "
                "so the extra rank only adds parameters; consider a smaller r.", stacklevel=2)
        self.base, self.fan_in_fan_out = base, is_fan_in_fan_out(base)
        for p in base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha, self.use_rslora = r, float(alpha), use_rslora
        self.scaling = alpha / math.sqrt(r) if use_rslora else alpha / r
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, d_in, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(d_out, r, dtype=w.dtype, device=w.device))
        if w.device.type != "meta":
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    @property
    def in_features(self) -> int:
        return self.lora_A.shape[1]

    @property
    def out_features(self) -> int:
        return self.lora_B.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        h = F.linear(self.dropout(x), self.lora_A)                    # (..., r): down to rank r
        # Scale B (out×r numbers) rather than the output (tokens×out numbers): the same result
        # as PEFT's (…)·scaling, one full pass over the output cheaper (benchmarks/).
        return self.base(x) + F.linear(h, self.lora_B * self.scaling)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = scaling·B·A, shaped like the base weight so that merging is ``weight += ΔW``.

        That is (out×in) for ``nn.Linear`` and the transpose, (in×out), for a ``Conv1D``, as
        PEFT's ``get_delta_weight`` returns it. The forward pass never needs the transpose:
        x·Aᵀ·Bᵀ is the same whichever way the base stores its weight.
        """
        delta = (self.lora_B @ self.lora_A) * self.scaling
        return delta.T if self.fan_in_fan_out else delta

    def _checked_delta(self) -> torch.Tensor:
        delta = self.delta_weight().detach()
        if not torch.isfinite(delta).all():
            raise LoRAStateError("the adapter holds NaN or inf; merging would corrupt the base weight. Re-initialise or reload A and B.")
        return delta.to(self.base.weight.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ΔW into the base weight, so inference costs one matmul. Undo with :meth:`unmerge`."""
        if self.merged:
            raise LoRAStateError("already merged; merging again would add ΔW twice. Call unmerge() first if you trained further.")
        self.base.weight += self._checked_delta()
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract ΔW from the base weight again (restores it up to float rounding)."""
        if not self.merged:
            raise LoRAStateError("not merged, so there is nothing to unmerge; call merge() first.")
        self.base.weight -= self._checked_delta()
        self.merged = False

    def extra_repr(self) -> str:
        layout = ", fan_in_fan_out=True" if self.fan_in_fan_out else ""
        return (f"in={self.in_features}, out={self.out_features}, r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:g}"
                f"{layout}, merged={self.merged}")


def check_lora_target(module: nn.Module, fan_in_fan_out: bool | None = None, name: str = "") -> None:
    """Raise unless :class:`LoRALinear` can wrap ``module`` with the stated ``fan_in_fan_out`` (None: any)."""
    where = repr(name) if name else "this layer"
    kind = type(module).__name__
    a_kind = f"{'an' if kind[0] in 'AEIOU' else 'a'} {kind}"
    if isinstance(module, LoRALinear):
        raise LoRAStateError(f"{where} is already a LoRALinear; wrap the original layer once (see its .base).")
    if not is_lora_target(module):
        raise LoRAConfigError(f"{where} is {a_kind}, not an {SUPPORTED}, the layers LoRALinear wraps; "
                              "target only those (e.g. q_proj, or c_attn on GPT-2).")
    if fan_in_fan_out is not None and bool(fan_in_fan_out) != is_fan_in_fan_out(module):
        layout = "(in×out), so fan_in_fan_out is True" if is_fan_in_fan_out(module) else "(out×in), so fan_in_fan_out is False"
        raise LoRAConfigError(f"{where} is {a_kind}, whose weight is {layout}, but fan_in_fan_out={fan_in_fan_out!r} was "
                              "passed. Leave fan_in_fan_out unset: lora_edu reads it from each layer's type.")


def _matches(name: str, target_modules: str | Iterable[str]) -> bool:
    """PEFT's rule: a string is a regex that must match the whole name; a list matches names or suffixes."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, name) is not None
    return any(name == t or name.endswith("." + t) for t in target_modules)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def add_lora(model: nn.Module, target_modules: str | Iterable[str], r: int, alpha: float, dropout: float = 0.0,
             *, use_rslora: bool = False, fan_in_fan_out: bool | None = None) -> nn.Module:
    """Wrap the matching ``nn.Linear`` (or ``Conv1D``) modules in :class:`LoRALinear`, in place; freeze the rest.

    ``target_modules`` is a list of names or name suffixes (``["q_proj", "v_proj"]``) or a
    regex matched against the whole module name (``r".*\\.(q|v)_proj"``), as in PEFT.
    ``fan_in_fan_out`` is read from each layer's type (True for GPT-2's ``Conv1D``); pass it only
    to assert that every target has that layout (see :class:`LoRALinear`).
    Every check runs before the first module is replaced.
    """
    check_lora_settings(r, alpha, dropout)
    if not isinstance(target_modules, str):
        target_modules = list(target_modules)
        if not target_modules:
            raise LoRAConfigError("target_modules is empty; name the layers to adapt, e.g. ['q_proj', 'v_proj'].")
    matches = [(n, m) for n, m in model.named_modules() if n and _matches(n, target_modules)]
    wrapped = [n for n, m in matches if isinstance(m, LoRALinear) or (n.endswith(".base") and isinstance(model.get_submodule(n[:-5]), LoRALinear))]
    if wrapped:
        raise LoRAStateError(f"{wrapped[0]!r} already has LoRA; wrapping a layer twice is not supported. Merge it (merge_lora) or start from a fresh model.")
    for n, m in matches:
        check_lora_target(m, fan_in_fan_out, n)
    if not matches:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if is_lora_target(m)})
        raise LoRAConfigError(f"target_modules {target_modules!r} matched no module. Linear layers in this model: {names}.")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new = [(n, LoRALinear(m, r, alpha, dropout, use_rslora=use_rslora)) for n, m in matches]
    for w in {str(w.message): w for w in caught}.values():  # one warning per distinct message, not per layer
        warnings.warn(w.message, stacklevel=2)
    for p in model.parameters():
        p.requires_grad_(False)
    for name, module in new:
        _set_submodule(model, name, module)
    return model


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The model's LoRA layers by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain ``nn.Linear`` (or ``Conv1D``) modules back.

    Each ΔW is computed and checked before any weight changes, so a failure changes nothing.
    """
    layers = lora_layers(model)
    if not layers:
        raise LoRAStateError("this model has no LoRA layers to merge; add them with add_lora first.")
    deltas = {n: (None if m.merged else m._checked_delta()) for n, m in layers.items()}
    for name, layer in layers.items():
        if deltas[name] is not None:
            layer.base.weight += deltas[name]
        _set_submodule(model, name, layer.base)
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; works on the meta device too."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def trainable_parameters_line(model: nn.Module) -> str:
    """The line PEFT's ``print_trainable_parameters`` prints, computed for any model."""
    trainable, total = count_parameters(model)
    return f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"


def print_trainable_parameters(model: nn.Module) -> None:
    """Print :func:`trainable_parameters_line`, in PEFT's format."""
    print(trainable_parameters_line(model))
