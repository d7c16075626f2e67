"""``le.memory`` and ``python -m lora_edu.memory``: the memory calculator, in a notebook and on the command line.

The calculator lives in one place, :mod:`lora_edu.core.memory`; every name this module does not
define itself (``estimate``, ``PRESETS``, ...) is read from there, live (PEP 562). Why a module
here at all: ``python -m lora_edu.memory`` needs one, and making it the module ``le.memory``
resolves to means ``import lora_edu.memory`` and ``le.memory`` are always the same object
(tests/core/test_memory_cli.py checks both orders).

    python -m lora_edu.memory --model llama-3-8b --method qlora --gpu-gb 24
    python -m lora_edu.memory --model path/to/config.json --method lora --seq-len 2048

prints the breakdown, the verdict for the card, and the largest batch that fits.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from lora_edu.core import memory as _core

#: What each command-line method means, as :func:`lora_edu.core.memory.estimate` settings: the course's
#: one definition of each (``lora_edu.core.memory.RECIPES``). "qlora" is QLoRA through PEFT
#: (``prepare_model_for_kbit_training``); "qlora-paper" the QLoRA paper's own code and 65B script.
METHOD_SETTINGS = {
    "full": dict(method="full"),
    "lora": dict(_core.RECIPES["LoRA"]),
    "qlora": dict(_core.RECIPES["QLoRA"]),
    "qlora-paper": dict(_core.RECIPES["QLoRA, paper's code"]),
    "inference": dict(method="inference"),
}


def __getattr__(name: str) -> Any:
    try:
        return getattr(_core, name)
    except AttributeError:
        raise AttributeError(f"module 'lora_edu.memory' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(dir(_core)))


def _model(value: str) -> str:
    try:
        _core.resolve_arch(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _positive(kind: type):
    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            number = None
        if number is None or number <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {value!r}")
        return number
    return parse


def _targets(value: str) -> tuple[str, ...]:
    targets = _core.LINEAR_MODULES if value == "all" else tuple(t for t in value.split(",") if t)
    try:
        return _core._check_targets(targets)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} Or 'all'.") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lora_edu.memory", description="Will fine-tuning this model fit my GPU? "
                                "Prints the memory breakdown of one training step, the verdict, and the largest batch that fits.")
    p.add_argument("--model", type=_model, required=True,
                   help=f"a preset ({', '.join(sorted(_core.PRESETS))}) or a path to a config.json (or its folder)")
    p.add_argument("--method", choices=list(METHOD_SETTINGS), default="lora",
                   help="qlora = NF4 base with double quantization, LoRA r=16 on every block linear, gradient checkpointing, "
                        "through PEFT; qlora-paper = the QLoRA paper's qlora.py and 65B script (r=64, bf16 adapters, "
                        "dropout 0.05, paged 32-bit AdamW)")
    p.add_argument("--gpu-gb", type=_positive(float), default=24.0,
                   help="the card's memory as sold, e.g. 24 (counted in GiB, as cards are); the CUDA context is taken off")
    p.add_argument("--batch", type=_positive(int), default=1)
    p.add_argument("--seq-len", type=_positive(int), default=512)
    p.add_argument("--dtype", choices=list(_core.DTYPE_BYTES), default="bf16", help="the base weights' dtype")
    p.add_argument("--lora-r", type=_positive(int), help="LoRA rank (default: 8 for lora, 16 for qlora)")
    p.add_argument("--targets", type=_targets, help="comma-separated modules, or 'all' (default: q_proj,v_proj for lora, all for qlora)")
    p.add_argument("--checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="gradient checkpointing (default: on for qlora, off otherwise)")
    p.add_argument("--double-quant", action=argparse.BooleanOptionalAction, default=None, help="qlora only (default: on)")
    p.add_argument("--optimizer", choices=list(_core.OPTIMIZERS), help="default: adamw (paged_adamw_32bit for qlora-paper)")
    p.add_argument("--adamw-impl", choices=list(_core.ADAMW_IMPLS), default="foreach",
                   help="torch.optim.AdamW's implementation (foreach: PyTorch's default on CUDA; for-loop: foreach=False; fused=True)")
    p.add_argument("--lora-dropout", type=float, help="dropout before the adapters (default: 0; 0.05 for qlora-paper)")
    p.add_argument("--keep-grads", action="store_true", help="zero_grad(set_to_none=False): gradients stay allocated between steps")
    return p


def settings_from_args(args: argparse.Namespace) -> dict:
    """The estimate() settings the command line's arguments mean (the method's defaults, then each option)."""
    settings = dict(METHOD_SETTINGS[args.method], weight_dtype=args.dtype, seq_len=args.seq_len, set_to_none=not args.keep_grads)
    if args.optimizer is not None:
        settings["optimizer"] = args.optimizer
    settings.setdefault("optimizer", "adamw")
    if args.adamw_impl != "foreach":
        settings["adamw_impl"] = args.adamw_impl
    if args.lora_dropout is not None:
        settings["lora_dropout"] = args.lora_dropout
    if args.lora_r is not None:
        settings["lora_r"] = args.lora_r
    if args.targets is not None:
        settings["lora_targets"] = args.targets
    if args.checkpointing is not None:
        settings["gradient_checkpointing"] = args.checkpointing
    if args.double_quant is not None:
        settings["double_quant"] = args.double_quant
    if settings["method"] == "inference":
        for key in ("gradient_checkpointing", "optimizer", "set_to_none", "adamw_impl", "lora_dropout"):
            settings.pop(key, None)
    return settings


def describe(settings: dict) -> str:
    """One line saying what is being estimated."""
    parts = []
    paper = settings.get("qlora_recipe") == "paper"
    if settings.get("quantization"):
        parts.append("NF4 base" + (" with double quantization" if settings.get("double_quant") else "")
                     + (" (the QLoRA paper's qlora.py --bf16 recipe)" if paper else
                        " (PEFT's prepare_model_for_kbit_training recipe)" if settings["method"] == "lora" else ""))
    else:
        parts.append(f"{settings['weight_dtype']} weights")
    if settings["method"] == "lora":
        targets = settings["lora_targets"]
        adapters = settings.get("adapter_dtype") or ("bf16" if paper else "fp32")
        dropout = f", dropout {settings['lora_dropout']:g}" if settings.get("lora_dropout") else ""
        parts.append(f"LoRA r={settings['lora_r']} on {'every block linear' if tuple(targets) == _core.LINEAR_MODULES else ','.join(targets)}"
                     f" ({adapters} adapters{dropout})")
    elif settings["method"] == "full":
        parts.append("full fine-tuning")
    else:
        parts.append("inference")
    if settings["method"] != "inference":
        optimizer = settings.get("optimizer", "adamw")
        parts.append({"adamw_8bit": "8-bit AdamW", "paged_adamw_32bit": "paged 32-bit AdamW (bitsandbytes)"}.get(
            optimizer, f"AdamW ({settings.get('adamw_impl', 'foreach')})"))
        parts.append("gradient checkpointing" if settings.get("gradient_checkpointing") else "no checkpointing")
        if not settings.get("set_to_none", True):
            parts.append("gradients kept between steps")
    return ", ".join(parts)


def report(model: str, settings: dict, batch: int, gpu_gib: float) -> str:
    """The text the command line prints."""
    arch = _core.resolve_arch(model)
    n = _core.parameter_counts(arch)["total"]
    est = _core.estimate(arch, batch_size=batch, **settings)
    card = _core.usable_memory(gpu_gib)
    source = _core.PRESET_SOURCES.get(model, "")
    lines = [f"{model}: {n:,} parameters" + (f" ({source})" if source else ""),
             f"{describe(settings)}; batch {batch} × {settings['seq_len']} tokens",
             ""]
    at = est.at_peak
    lines.append(f"The peak falls at the {est.peak_at}; alive then:")
    for name, key in (("weights", "weights"), ("gradients", "gradients"), ("optimizer state", "optimizer"),
                      ("activations", "activations"), ("other (transients, workspace)", "other")):
        lines.append(f"  {name:<30}{at[key] / _core.GB:9.2f} GB")
    lines.append(f"  {'peak':<30}{est.peak / _core.GB:9.2f} GB = {est.peak / _core.GiB:.2f} GiB")
    if at["activations"] != est.activations:
        lines.append(f"  (the saved activations, {est.activations / _core.GB:.2f} GB at the end of the forward pass, "
                     f"are {'freed by then' if not at['activations'] else 'partly freed by then'})")
    lines.append("")
    verdict = "FITS" if est.peak <= card else "DOES NOT FIT"
    lines.append(f"Verdict: {verdict} a {gpu_gib:g} GB card ({card / _core.GiB:.2f} GiB usable: {gpu_gib:g} GiB less "
                 f"{_core.CONTEXT_MARGIN / _core.GiB:g} GiB kept for the CUDA context and the allocator): "
                 + (f"{(card - est.peak) / _core.GiB:.2f} GiB to spare" if est.peak <= card else
                    f"{(est.peak - card) / _core.GiB:.2f} GiB over") + ".")
    best = _core.largest_batch(arch, card, **settings)
    lines.append(f"Largest batch of {settings['seq_len']}-token sequences that fits: {best}"
                 + (" (not even one)" if best == 0 else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = settings_from_args(args)
    try:
        text = report(args.model, settings, args.batch, args.gpu_gb)
    except ValueError as exc:  # a combination estimate() refuses (e.g. --double-quant without qlora)
        parser().error(str(exc))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
