"""Save and load LoRA adapters in PEFT's on-disk format, so PEFT and ``lora_edu`` read each other's.

A PEFT adapter folder holds ``adapter_config.json`` (r, lora_alpha, target_modules, …) and
``adapter_model.safetensors`` with one tensor per matrix, named as PEFT names them:
``base_model.model.<module name>.lora_A.weight`` (r×in) and ``….lora_B.weight`` (out×r).
Those shapes hold for GPT-2's ``Conv1D`` layers too; PEFT then writes ``fan_in_fan_out: true``,
which only says how the *base* weight is stored. lora_edu reads that layout from each layer's
type, so ``load_adapter`` accepts either value, as PEFT does (it warns and corrects it per layer).

``load_adapter`` validates everything (folder, files, config, every tensor's module and shape)
before it touches the model: a failed load leaves the model exactly as it was.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from lora_edu.core.lora import LoRAConfigError, LoRALinear, LoRAStateError, add_lora, in_out_features, is_lora_target, lora_layers

CONFIG_NAME, WEIGHTS_NAME = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."


class AdapterLoadError(ValueError):
    """An adapter folder that cannot be loaded into this model; the message says why and what to do."""


def _common(layers: dict[str, LoRALinear], attribute: str):
    values = {getattr(layer, attribute) for layer in layers.values()}
    if len(values) > 1:
        raise LoRAConfigError(f"the LoRA layers differ in {attribute} ({sorted(values)}); PEFT's format needs one value. "
                              "Save models whose layers share r, alpha and dropout.")
    return values.pop()


def _target_modules(model: nn.Module, names: list[str]) -> list[str]:
    """Short suffixes (``q_proj``) when they pick exactly these layers, else the full names."""
    suffixes = sorted({n.rsplit(".", 1)[-1] for n in names})
    picked = {n for n, m in model.named_modules() if (is_lora_target(m) or isinstance(m, LoRALinear)) and n.rsplit(".", 1)[-1] in suffixes}
    return suffixes if picked == set(names) else sorted(names)


def _fan_in_fan_out(layers: dict[str, LoRALinear]) -> bool:
    """True when the layers are ``Conv1D``, as PEFT writes it for GPT-2.

    PEFT's config holds one value for all layers; for a mix (GPT-2's Conv1D blocks plus its
    ``nn.Linear`` lm_head) either value loads correctly in PEFT, which corrects it per layer.
    """
    return any(layer.fan_in_fan_out for layer in layers.values())


def save_adapter(model: nn.Module, directory: str | Path, base_model_name_or_path: str | None = None) -> Path:
    """Write the model's LoRA layers as a PEFT adapter folder; return the folder."""
    from safetensors.torch import save_file

    layers = lora_layers(model)
    if not layers:
        raise LoRAStateError("this model has no LoRA layers to save; add them with add_lora first.")
    merged = [n for n, m in layers.items() if m.merged]
    if merged:
        raise LoRAStateError(f"{merged[0]!r} is merged into its base weight; unmerge() before saving, or the adapter would be applied twice.")
    # The file holds lora_A and lora_B only: refuse the variants whose state that would not capture.
    dora = [n for n, m in layers.items() if m.use_dora]
    if dora:
        raise LoRAStateError(f"{dora[0]!r} uses DoRA; save_adapter writes plain LoRA (lora_A, lora_B) and would drop its "
                             "magnitude vector. Save a DoRA model with PEFT (LoraConfig(use_dora=True), save_pretrained).")
    pissa = [n for n, m in layers.items() if m.init == "pissa"]
    if pissa:
        raise LoRAStateError(f"{pissa[0]!r} was initialised with PiSSA, which moved W's principal part out of the base weight: "
                             "an adapter file alone, loaded onto the original base, gives another model. Save the whole "
                             "state_dict, or convert the adapter to plain LoRA with PEFT (notebook 06, pitfall 5).")
    dropout = {m.dropout.p if isinstance(m.dropout, nn.Dropout) else 0.0 for m in layers.values()}
    if len(dropout) > 1:
        raise LoRAConfigError("the LoRA layers differ in dropout; PEFT's format needs one value.")
    config = dict(
        peft_type="LORA", task_type=None, base_model_name_or_path=base_model_name_or_path, inference_mode=True,
        r=_common(layers, "r"), lora_alpha=_common(layers, "alpha"), lora_dropout=dropout.pop(),
        use_rslora=_common(layers, "use_rslora"), target_modules=_target_modules(model, list(layers)),
        bias="none", fan_in_fan_out=_fan_in_fan_out(layers), init_lora_weights=True, modules_to_save=None,
    )
    tensors = {}
    for name, layer in layers.items():
        tensors[f"{PREFIX}{name}.lora_A.weight"] = layer.lora_A.detach().contiguous().clone()
        tensors[f"{PREFIX}{name}.lora_B.weight"] = layer.lora_B.detach().contiguous().clone()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    save_file(tensors, directory / WEIGHTS_NAME)
    return directory


def _read(directory: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    if not directory.is_dir():
        raise AdapterLoadError(f"no adapter folder at {str(directory)!r}; pass the folder that save_adapter or PEFT's "
                               f"save_pretrained wrote (it holds {CONFIG_NAME} and {WEIGHTS_NAME}).")
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (directory / n).is_file()]
    if missing:
        raise AdapterLoadError(f"{str(directory)!r} lacks {missing}; an adapter folder holds {CONFIG_NAME} and {WEIGHTS_NAME}.")
    try:
        config = json.loads((directory / CONFIG_NAME).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterLoadError(f"{CONFIG_NAME} is not valid JSON ({exc}); the file is damaged: save the adapter again.") from None
    try:
        tensors = load_file(directory / WEIGHTS_NAME)
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise AdapterLoadError(f"cannot read {WEIGHTS_NAME} ({type(exc).__name__}: {exc}); the file is damaged: save the adapter again.") from None
    return config, tensors


def _check_config(config: dict) -> None:
    if config.get("peft_type") != "LORA":
        raise AdapterLoadError(f"this is a {config.get('peft_type')!r} adapter, not LoRA; lora_edu loads LoRA adapters only.")
    unsupported = {"use_dora": False, "bias": "none", "modules_to_save": None, "rank_pattern": {},
                   "alpha_pattern": {}}
    for key, plain in unsupported.items():
        if config.get(key, plain) not in (plain, None, [], {}):
            raise AdapterLoadError(f"the adapter uses {key}={config[key]!r}, which lora_edu's LoRALinear does not implement; "
                                   "load it with PEFT (notebook 06 shows how).")
    r = config.get("r")
    if not isinstance(r, int) or r <= 0 or not isinstance(config.get("lora_alpha"), (int, float)):
        raise AdapterLoadError(f"{CONFIG_NAME} needs a positive int r and a number lora_alpha, got r={r!r}, "
                               f"lora_alpha={config.get('lora_alpha')!r}.")


def _adapter_weights(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{module name: {"A": tensor, "B": tensor}} from PEFT's tensor names."""
    by_module: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if not key.startswith(PREFIX) or not key.endswith((".lora_A.weight", ".lora_B.weight")):
            raise AdapterLoadError(f"unexpected tensor {key!r}; expected names like {PREFIX}<module>.lora_A.weight.")
        module, kind = key[len(PREFIX):].rsplit(".", 2)[0], key.rsplit(".", 2)[1][-1]
        by_module.setdefault(module, {})[kind] = value
    incomplete = [m for m, w in by_module.items() if set(w) != {"A", "B"}]
    if incomplete:
        raise AdapterLoadError(f"module {incomplete[0]!r} has only one of lora_A and lora_B; the file is incomplete.")
    return by_module


def load_adapter(model: nn.Module, directory: str | Path) -> nn.Module:
    """Load a PEFT-format LoRA adapter into ``model`` (adding LoRA layers if it has none); return it.

    A model that already has LoRA layers must have them exactly where the adapter has weights,
    with the same rank. Nothing is changed unless every check passes.
    """
    config, tensors = _read(Path(directory))
    _check_config(config)
    weights = _adapter_weights(tensors)
    r = config["r"]
    existing = lora_layers(model)
    modules = dict(model.named_modules())
    lacking = sorted(set(weights) - set(modules))
    if lacking:
        raise AdapterLoadError(f"the adapter has weights for modules this model lacks: {lacking[:3]}"
                               f"{' …' if len(lacking) > 3 else ''}; was it trained on another architecture?")
    if existing and set(existing) != set(weights):
        extra = sorted(set(existing) - set(weights))[:3]
        raise AdapterLoadError(f"this model's LoRA layers {extra} have no weights in the adapter; load into a model "
                               "without LoRA layers (load_adapter adds them) or with LoRA on the same modules.")
    for name, w in weights.items():
        layer = modules[name]
        if isinstance(layer, LoRALinear) and (layer.r, layer.alpha) != (r, config["lora_alpha"]):
            raise AdapterLoadError(f"the adapter has r={r}, lora_alpha={config['lora_alpha']:g} but {name!r} has r={layer.r}, "
                                   f"alpha={layer.alpha:g}; load into a model without LoRA layers, or add_lora with the adapter's values first.")
        if isinstance(layer, LoRALinear) and layer.merged:
            raise AdapterLoadError(f"{name!r} is merged; unmerge() first, or the merged weight would keep the old adapter.")
        if not (is_lora_target(layer) or isinstance(layer, LoRALinear)):
            raise AdapterLoadError(f"{name!r} is a {type(layer).__name__}, not a linear layer (nn.Linear or transformers' Conv1D).")
        d_in, d_out = in_out_features(layer)
        expected = {"A": (r, d_in), "B": (d_out, r)}
        for kind in "AB":
            if tuple(w[kind].shape) != expected[kind]:
                raise AdapterLoadError(f"lora_{kind} of {name!r} has shape {tuple(w[kind].shape)}, but this model needs "
                                       f"{expected[kind]} (r={r}, in={d_in}, out={d_out}).")
    if not existing:
        add_lora(model, sorted(weights), r=r, alpha=config["lora_alpha"], dropout=config.get("lora_dropout", 0.0) or 0.0,
                 use_rslora=bool(config.get("use_rslora", False)))
    with torch.no_grad():
        for name, layer in lora_layers(model).items():
            layer.lora_A.copy_(weights[name]["A"])
            layer.lora_B.copy_(weights[name]["B"])
    return model
