"""LoRA from scratch: ``LoRALinear``, ``add_lora``, ``merge_lora`` and parameter counting.

Convention (PEFT's, used across the course): a linear layer maps ``in`` features to ``out``
features with weight W (out×in). LoRA adds ΔW = B·A with A (r×in) and B (out×r), scaled by
α/r, so the layer computes ``base(x) + (dropout(x)·Aᵀ·Bᵀ)·scaling``.

GPT-2's layers (``c_attn``, ``c_proj``, ``c_fc``) are transformers' ``Conv1D``: a linear layer
whose weight is stored transposed, (in×out). A and B keep the shapes above either way (so adapter
files look the same); only merging must transpose ΔW. PEFT calls this ``fan_in_fan_out=True``.

Two variants live in the same class (notebook 08), as in PEFT: ``use_dora=True`` (DoRA,
arXiv:2402.09353) and ``init="pissa"`` (PiSSA, arXiv:2404.02948). The base may also be a frozen
4-bit :class:`~lora_edu.core.nf4.NF4Linear`, which makes the layer QLoRA's.

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

from lora_edu.core.nf4 import NF4Linear


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
INITS = ("default", "pissa")


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
    """Whether :class:`LoRALinear` can wrap ``module``: an ``nn.Linear``, a transformers ``Conv1D`` or an ``NF4Linear``."""
    return isinstance(module, (nn.Linear, NF4Linear)) or is_fan_in_fan_out(module)


def in_out_features(module: nn.Module) -> tuple[int, int]:
    """(in, out) of an ``nn.Linear``, a ``Conv1D`` or a :class:`LoRALinear`, read from the weight's shape."""
    if isinstance(module, LoRALinear):
        module = module.base
    if isinstance(module, NF4Linear):
        return module.in_features, module.out_features
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
    ``use_rslora=True`` scales by α/√r instead (rank-stabilised LoRA, arXiv:2312.03732).

    ``use_dora=True`` (DoRA): the adapted weight W + s·B·A is split into a direction, its rows
    divided by their norms, and a trainable magnitude ``lora_magnitude`` (one number per output
    feature, starting at those norms, so the layer starts equal to ``base``). The norms are
    treated as constants in the backward pass (DoRA §4.3, as PEFT does). See :meth:`enable_dora`.

    ``init="pissa"`` (PiSSA): A and B start from the r principal singular directions of W,
    B·A·s = U_r·S_r·V_rᵀ, and the base keeps the residual W − s·B·A, so the output is unchanged
    but the base weight is *no longer the original* (as PEFT's ``init_lora_weights="pissa"``).

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
                 fan_in_fan_out: bool | None = None, use_dora: bool = False, init: str = "default"):
        super().__init__()
        check_lora_target(base, fan_in_fan_out)
        check_lora_settings(r, alpha, dropout)
        if init not in INITS:
            raise LoRAConfigError(f"init={init!r} is not one of {INITS}; use 'default' (A random, B zero) or 'pissa'.")
        if init == "pissa" and isinstance(base, NF4Linear):
            raise LoRAConfigError("PiSSA needs the float weight for its SVD; initialise on the float nn.Linear, "
                                  "then quantize the residual base (as PEFT advises).")
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
        dtype, device = (base.compute_dtype, base.quantized.codes.device) if isinstance(base, NF4Linear) else (base.weight.dtype, base.weight.device)
        self.lora_A = nn.Parameter(torch.empty(r, d_in, dtype=dtype, device=device))
        self.lora_B = nn.Parameter(torch.zeros(d_out, r, dtype=dtype, device=device))
        if device.type != "meta":
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged, self.init, self.use_dora = False, init, False
        if init == "pissa":
            self._pissa_init()
        if use_dora:
            self.enable_dora()

    def base_weight(self) -> torch.Tensor:
        """The frozen weight as (out×in), whatever its storage: transposed back for ``Conv1D``, dequantized for NF4."""
        if isinstance(self.base, NF4Linear):
            return self.base.dequantized_weight()
        return self.base.weight.T if self.fan_in_fan_out else self.base.weight

    @torch.no_grad()
    def _pissa_init(self) -> None:
        """PiSSA: A, B from the top-r singular triplets of W; the base keeps the residual W − s·B·A.

        W = U·S·Vᵀ; with S_r the r largest singular values, B = U_r·√(S_r/s) (out×r) and
        A = √(S_r/s)·V_rᵀ (r×in), so s·B·A is W's best rank-r approximation (Eckart–Young) and the
        residual keeps the rest. The same steps as PEFT's ``pissa_init``, including the SVD in float32
        for 16-bit weights; a float64 weight stays float64 (PEFT refuses one).
        """
        w = self.base_weight()
        work = w.to(torch.promote_types(w.dtype, torch.float32))
        U, S, Vh = torch.linalg.svd(work, full_matrices=False)
        root = torch.sqrt(S[: self.r] / self.scaling)
        B, A = U[:, : self.r] @ torch.diag(root), torch.diag(root) @ Vh[: self.r]
        self.lora_A.copy_(A)
        self.lora_B.copy_(B)
        residual = (work - self.scaling * B @ A).to(w.dtype)
        self.base.weight.copy_(residual.T if self.fan_in_fan_out else residual)

    @torch.no_grad()
    def enable_dora(self) -> None:
        """Turn this layer into DoRA: add the trainable magnitude m = ‖W + s·B·A‖ per output row.

        Starting m at the current norms keeps the output unchanged, also for an adapter that was
        already trained. Refused on a merged layer: W would already hold s·B·A, and the norms,
        hence m, would count ΔW twice.
        """
        if self.merged:
            raise LoRAStateError("this layer is merged, so its base weight already holds ΔW and DoRA's magnitude would count it "
                                 "twice; call unmerge() first, then enable_dora().")
        if self.use_dora:
            raise LoRAStateError("DoRA is already enabled on this layer (it has lora_magnitude); enable it once.")
        norms = self._adapted_weight().norm(dim=1)
        self.lora_magnitude = nn.Parameter(norms.to(self.lora_A.dtype))
        self.use_dora = True

    def _adapted_weight(self) -> torch.Tensor:
        """W + s·B·A as (out×in), with B·A detached: DoRA's norms are constants for the gradient (DoRA §4.3)."""
        return self.base_weight() + self.scaling * (self.lora_B @ self.lora_A).detach()

    @property
    def in_features(self) -> int:
        return self.lora_A.shape[1]

    @property
    def out_features(self) -> int:
        return self.lora_B.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        if self.use_dora:
            return self._dora_forward(x)
        h = F.linear(self.dropout(x), self.lora_A)                    # (..., r): down to rank r
        # Scale B (out×r numbers) rather than the output (tokens×out numbers): the same result
        # as PEFT's (…)·scaling, one full pass over the output cheaper (benchmarks/).
        return self.base(x) + F.linear(h, self.lora_B * self.scaling)

    def _dora_forward(self, x: torch.Tensor) -> torch.Tensor:
        """(m/‖W + s·B·A‖)·(W + s·B·A)·x + bias, computed as PEFT does, without forming the new weight.

        base(x) is used as it is and corrected by (m/n − 1)·W·x: with dropout in training, W·x is
        recomputed on the dropped-out x, as PEFT does.
        """
        scale = self.lora_magnitude / self._adapted_weight().norm(dim=1).detach()  # m/n, one per output feature
        xd = self.dropout(x)
        result = self.base(x)
        bias = getattr(self.base, "bias", None)
        if self.training and not isinstance(self.dropout, nn.Identity):
            plain = F.linear(xd, self.base_weight())
        else:
            plain = result if bias is None else result - bias
        lora = F.linear(F.linear(xd, self.lora_A), self.lora_B) * self.scaling
        return result + (scale - 1) * plain + scale * lora

    def delta_weight(self) -> torch.Tensor:
        """ΔW = scaling·B·A, shaped like the base weight so that merging is ``weight += ΔW``.

        That is (out×in) for ``nn.Linear`` and the transpose, (in×out), for a ``Conv1D``, as
        PEFT's ``get_delta_weight`` returns it. The forward pass never needs the transpose:
        x·Aᵀ·Bᵀ is the same whichever way the base stores its weight.
        """
        delta = (self.lora_B @ self.lora_A) * self.scaling
        return delta.T if self.fan_in_fan_out else delta

    def _checked_delta(self) -> torch.Tensor:
        if isinstance(self.base, NF4Linear):
            raise LoRAStateError("the base is 4-bit (NF4Linear): W + ΔW cannot be stored in NF4 without new rounding. "
                                 "Dequantize into an nn.Linear (base.dequantized_weight()) and merge there.")
        delta = self.delta_weight().detach()
        if not torch.isfinite(delta).all() or (self.use_dora and not torch.isfinite(self.lora_magnitude).all()):
            raise LoRAStateError("the adapter holds NaN or inf; merging would corrupt the base weight. Re-initialise or reload A and B.")
        return delta.to(self.base.weight.dtype)

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """The base weight with the adapter folded in, in the base's layout: W + ΔW, or for DoRA (m/‖W + ΔW‖)·(W + ΔW)."""
        delta = self._checked_delta()
        merged = self.base.weight + delta
        if self.use_dora:
            rows = self._adapted_weight().norm(dim=1)
            scale = (self.lora_magnitude / rows).to(merged.dtype)
            merged = merged * (scale.unsqueeze(0) if self.fan_in_fan_out else scale.unsqueeze(1))
        return merged

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ΔW into the base weight, so inference costs one matmul. Undo with :meth:`unmerge`."""
        if self.merged:
            raise LoRAStateError("already merged; merging again would add ΔW twice. Call unmerge() first if you trained further.")
        merged = self.merged_weight()
        if self.use_dora:  # unmerging needs W back: keep it (PEFT keeps the norms instead)
            self._unmerged = self.base.weight.detach().clone()
            self.base.weight.copy_(merged)
        else:
            self.base.weight += self._checked_delta()
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract ΔW from the base weight again (restores it up to float rounding; exactly for DoRA)."""
        if not self.merged:
            raise LoRAStateError("not merged, so there is nothing to unmerge; call merge() first.")
        if self.use_dora:
            self.base.weight.copy_(self._unmerged)
            del self._unmerged
        else:
            self.base.weight -= self._checked_delta()
        self.merged = False

    def extra_repr(self) -> str:
        layout = ", fan_in_fan_out=True" if self.fan_in_fan_out else ""
        variant = (", use_dora=True" if self.use_dora else "") + (f", init={self.init!r}" if self.init != "default" else "")
        return (f"in={self.in_features}, out={self.out_features}, r={self.r}, alpha={self.alpha:g}, scaling={self.scaling:g}"
                f"{layout}{variant}, merged={self.merged}")


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
             *, use_rslora: bool = False, fan_in_fan_out: bool | None = None, use_dora: bool = False,
             init: str = "default") -> nn.Module:
    """Wrap the matching ``nn.Linear`` (or ``Conv1D``) modules in :class:`LoRALinear`, in place; freeze the rest.

    ``target_modules`` is a list of names or name suffixes (``["q_proj", "v_proj"]``) or a
    regex matched against the whole module name (``r".*\\.(q|v)_proj"``), as in PEFT.
    ``fan_in_fan_out`` is read from each layer's type (True for GPT-2's ``Conv1D``); pass it only
    to assert that every target has that layout (see :class:`LoRALinear`). ``use_dora`` and
    ``init`` are passed to each :class:`LoRALinear` (DoRA, PiSSA).
    Every check runs before the first module is replaced.
    """
    check_lora_settings(r, alpha, dropout)
    if init not in INITS:
        raise LoRAConfigError(f"init={init!r} is not one of {INITS}; use 'default' (A random, B zero) or 'pissa'.")
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
        new = [(n, LoRALinear(m, r, alpha, dropout, use_rslora=use_rslora, use_dora=use_dora, init=init)) for n, m in matches]
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
    merged = {n: (None if m.merged else m.merged_weight()) for n, m in layers.items()}
    for name, layer in layers.items():
        if merged[name] is not None:
            layer.base.weight.copy_(merged[name])
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
