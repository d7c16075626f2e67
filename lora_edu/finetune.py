"""``python -m lora_edu.finetune``: notebook 07's recipe, with PEFT, for any causal language model and JSONL file.

    python -m lora_edu.finetune --model HuggingFaceTB/SmolLM2-135M-Instruct --data train.jsonl --out my-adapter
    python -m lora_edu.finetune --model PATH/TO/MODEL/FOLDER --data train.jsonl --out my-adapter --steps 200

``--model`` is a model folder or a Hugging Face Hub id (downloaded by transformers; here, offline, a folder).
Each line of ``--data`` is one example, either ``{"prompt": "...", "completion": "..."}`` (the text is
``prompt + completion``, nothing added) or ``{"messages": [{"role": "user", "content": "..."}, ...,
{"role": "assistant", "content": "..."}]}`` (the tokenizer's chat template writes everything before the
last assistant message). Only the completion's tokens, and the end-of-text token after them, carry a loss.

What it writes into ``--out``, once training has finished (nothing before, and nothing on bad input):
``adapter_model.safetensors`` and ``adapter_config.json`` (PEFT's format: ``PeftModel.from_pretrained(model,
OUT)`` or ``le.adapters.load_adapter`` read it), ``loss.csv`` and ``loss.png`` (the loss of every step) and
``finetune_args.json`` (the settings, to repeat the run).

The recipe: LoRA (rank ``--r``, scale ``--alpha``/r) on the linear layers named by ``--targets`` (default:
every attention and MLP projection), AdamW, batches drawn without replacement in a seeded order.
``--top-layers K`` adapts only the last K layers and trains on cached outputs of the frozen layers below
them (``lora_edu.core.layer_cache``): much faster when K is small, and exact; it is checked against the
uncached loss on the first batch before it is trusted. Runs on a GPU when there is one (``--device``).
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from lora_edu.core import layer_cache

#: The linear layers of a LLaMA-style block (SmolLM2, LLaMA, Mistral, Qwen2): every attention and MLP projection.
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class FinetuneError(ValueError):
    """Bad input: the message names the problem and the fix. Raised before anything is written."""


# ------------------------------------------------------------------ the data


def read_jsonl(path: str | Path) -> list[dict]:
    """The examples of a JSONL file, each checked: ``{"prompt", "completion"}`` or ``{"messages": [...]}``."""
    path = Path(path)
    if not path.is_file():
        raise FinetuneError(f"no data file at {str(path)!r}. Fix: pass --data with the path of a JSONL file "
                            '(one JSON object a line, e.g. {"prompt": "Q: 2+2?\\nA:", "completion": " 4"}).')
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except ValueError as err:
            raise FinetuneError(f"{path.name}, line {number}, is not valid JSON ({err.msg}). Fix: write one JSON object a line.") from None
        examples.append(_check_example(example, f"{path.name}, line {number}"))
    if not examples:
        raise FinetuneError(f"{path.name} holds no examples. Fix: write one JSON object a line.")
    return examples


def _check_example(example, where: str) -> dict:
    fix = ('Fix: write {"prompt": "...", "completion": "..."} or {"messages": [{"role": "user", "content": "..."}, '
           '{"role": "assistant", "content": "..."}]}.')
    if isinstance(example, dict) and set(example) >= {"prompt", "completion"}:
        if isinstance(example["prompt"], str) and isinstance(example["completion"], str) and example["completion"]:
            return example
        raise FinetuneError(f"{where}: prompt and completion must be strings, the completion not empty. {fix}")
    if isinstance(example, dict) and isinstance(example.get("messages"), list) and example["messages"]:
        messages = example["messages"]
        if all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages) \
                and messages[-1]["role"] == "assistant":
            return example
        raise FinetuneError(f"{where}: each message needs a role and a content (strings), and the last must be the "
                            f"assistant's (the part that is learnt). {fix}")
    raise FinetuneError(f"{where} has neither prompt/completion nor messages. {fix}")


def _texts(tokenizer, example: dict) -> tuple[str, str]:
    """(prompt, completion) as text: the completion is what the model learns to write."""
    if "prompt" in example:
        return example["prompt"], example["completion"]
    messages = example["messages"]
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    return prompt, messages[-1]["content"]


def encode(tokenizer, examples: list[dict], max_length: int = 512) -> dict[str, torch.Tensor]:
    """One right-padded batch of every example; labels -100 on the prompt and the padding.

    The completion ends with the end-of-text token, so the model learns to stop. Rows longer than
    ``max_length`` tokens are cut from the left (the prompt's start goes first).
    """
    eos = tokenizer.eos_token_id
    rows = []
    for example in examples:
        prompt, completion = _texts(tokenizer, example)
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [eos]
        ids, labels = (p + c)[-max_length:], ([layer_cache.IGNORE] * len(p) + c)[-max_length:]
        rows.append((ids, labels))
    width = max(len(ids) for ids, _ in rows)
    pad = lambda seq, value: seq + [value] * (width - len(seq))  # noqa: E731
    return {"input_ids": torch.tensor([pad(ids, eos) for ids, _ in rows]),
            "attention_mask": torch.tensor([pad([1] * len(ids), 0) for ids, _ in rows]),
            "labels": torch.tensor([pad(labels, layer_cache.IGNORE) for _, labels in rows])}


# ------------------------------------------------------------------ the model


def check_settings(args: argparse.Namespace) -> None:
    """Every setting that can be checked without the model; raises :class:`FinetuneError`."""
    for name, low in (("r", 1), ("steps", 1), ("batch_size", 1), ("max_length", 2)):
        value = getattr(args, name)
        if value < low:
            raise FinetuneError(f"--{name.replace('_', '-')} must be at least {low}, got {value}. Fix: e.g. --r 8, --steps 100.")
    for name in ("alpha", "lr"):
        if not getattr(args, name) > 0:
            raise FinetuneError(f"--{name} must be positive, got {getattr(args, name)}. Fix: e.g. --alpha 16 --lr 1e-3.")
    if args.top_layers is not None and args.top_layers < 1:
        raise FinetuneError(f"--top-layers must be at least 1, got {args.top_layers}. Fix: leave it out to adapt every layer.")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FinetuneError(f"--out {str(out)!r} exists and is not an empty folder. Fix: name a new folder (nothing is overwritten).")


def load_model(name: str, device: str, dtype: torch.dtype):
    """``(model, tokenizer)`` from a folder or a Hub id, like any ``from_pretrained`` call."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    except (OSError, ValueError) as err:
        raise FinetuneError(f"could not load a causal language model from {name!r} ({str(err).splitlines()[0]}). Fix: pass "
                            "--model with a model folder (config.json, weights, tokenizer) or a Hugging Face Hub id, "
                            "with internet access for a Hub id.") from None
    if tokenizer.eos_token_id is None:
        raise FinetuneError(f"{name}'s tokenizer has no end-of-text token, so a completion could not end. Fix: use a model whose tokenizer sets eos_token.")
    return model.to(device), tokenizer


def lora_config(model, targets: list[str], r: int, alpha: float, top_layers: int | None):
    """PEFT's ``LoraConfig``, after checking that every target names linear layers of ``model``."""
    from peft import LoraConfig

    linear = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    unknown = [t for t in targets if t not in linear]
    if unknown:
        raise FinetuneError(f"no linear layer of {type(model).__name__} is called {', '.join(unknown)}. "
                            f"Fix: pass --targets with some of: {', '.join(sorted(linear))}.")
    layers = None
    if top_layers is not None:
        n = len(layer_cache.decoder_layers(model))
        if top_layers > n:
            raise FinetuneError(f"--top-layers {top_layers} is more than the model's {n} layers. Fix: pass at most {n}.")
        layers = list(range(n - top_layers, n))
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets), layers_to_transform=layers,
                      task_type="CAUSAL_LM")


# ------------------------------------------------------------------ training


def train(model, batch: dict[str, torch.Tensor], steps: int, lr: float, batch_size: int, seed: int,
          top_layers: int | None) -> list[float]:
    """AdamW on the adapter; the loss of every step. With ``top_layers``, on cached lower-layer outputs."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    hidden = None
    if top_layers is not None:
        first = slice(0, min(batch_size, len(batch["labels"])))
        layer_cache.check_cache_matches(model, top_layers, {k: v[first] for k, v in batch.items()})
        hidden = layer_cache.lower_outputs(model, top_layers, batch["input_ids"], batch["attention_mask"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    losses = []
    model.train()
    bar = tqdm(range(steps), desc="finetune", leave=True)
    for _ in bar:
        if len(order) < batch_size:
            order += torch.randperm(len(batch["labels"]), generator=generator).tolist()
        rows, order = torch.tensor(order[:batch_size], device=device), order[batch_size:]
        if hidden is None:
            loss = layer_cache.reply_loss(model, batch["labels"][rows], batch["attention_mask"][rows], input_ids=batch["input_ids"][rows])
        else:
            loss = layer_cache.reply_loss(model, batch["labels"][rows], batch["attention_mask"][rows], hidden=hidden[rows], k=top_layers)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    model.eval()
    return losses


def write_outputs(model, losses: list[float], settings: dict, out: Path) -> None:
    """Adapter (PEFT's ``save_pretrained``), loss curve and settings: written to a temporary folder, then moved into place.

    The curve is drawn on a bare ``Figure`` with its own Agg canvas, never through pyplot: switching pyplot's backend
    here would silently stop a notebook that calls this from showing its later figures inline.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        folder = Path(tmp) / "adapter"
        model.save_pretrained(folder)
        with open(folder / "loss.csv", "w", newline="") as f:
            csv.writer(f).writerows([("step", "loss"), *((i + 1, f"{x:.6f}") for i, x in enumerate(losses))])
        fig = Figure(figsize=(5, 3))
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.plot(range(1, len(losses) + 1), losses)
        ax.set(xlabel="step", ylabel="loss (completion tokens)", title=f"LoRA r={settings['r']} on {Path(settings['model']).name}")
        fig.tight_layout()
        fig.savefig(folder / "loss.png", dpi=100)
        (folder / "finetune_args.json").write_text(json.dumps(settings, indent=1) + "\n")
        if out.exists():
            out.rmdir()  # an empty folder (check_settings refused any other)
        shutil.move(str(folder), out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lora_edu.finetune", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="model folder or Hugging Face Hub id")
    p.add_argument("--data", required=True, help="JSONL file: prompt/completion or messages, one example a line")
    p.add_argument("--out", required=True, help="new folder for the adapter, loss.csv, loss.png")
    p.add_argument("--r", type=int, default=8, help="LoRA rank")
    p.add_argument("--alpha", type=float, default=16.0, help="LoRA alpha (the update is scaled by alpha/r)")
    p.add_argument("--targets", default=",".join(DEFAULT_TARGETS), help="comma-separated names of the linear layers to adapt")
    p.add_argument("--top-layers", type=int, default=None, help="adapt only the last K layers, on cached lower-layer outputs")
    p.add_argument("--steps", type=int, default=100, help="AdamW steps")
    p.add_argument("--batch-size", type=int, default=8, help="examples a step")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate, constant over the steps")
    p.add_argument("--max-length", type=int, default=512, help="longest example, in tokens")
    p.add_argument("--seed", type=int, default=0, help="seeds the LoRA A matrices and the order of the batches")
    p.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda, mps")
    return p


def main(argv: list[str] | None = None) -> Path:
    """Run the command; return the output folder. Bad input raises :class:`FinetuneError` before anything is written."""
    from peft import get_peft_model

    args = parser().parse_args(argv)
    check_settings(args)
    examples = read_jsonl(args.data)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    torch.manual_seed(args.seed)
    model, tokenizer = load_model(args.model, device, dtype)
    config = lora_config(model, targets, args.r, args.alpha, args.top_layers)
    batch = encode(tokenizer, examples, args.max_length)
    model = get_peft_model(model, config)
    trainable, total = model.get_nb_trainable_parameters()
    print(f"{len(examples)} examples from {Path(args.data).name}; LoRA r={args.r}, alpha={args.alpha:g} on {', '.join(targets)}"
          f"{f' of the last {args.top_layers} layers (cached lower layers)' if args.top_layers else ''}: "
          f"{trainable:,} of {total:,} parameters train; {device}, {str(dtype).replace('torch.', '')}")
    start = time.perf_counter()
    losses = train(model, batch, args.steps, args.lr, args.batch_size, args.seed, args.top_layers)
    settings = {**vars(args), "targets": targets, "device": device, "dtype": str(dtype).replace("torch.", ""),
                "examples": len(examples), "seconds": round(time.perf_counter() - start, 1)}
    out = Path(args.out)
    write_outputs(model, losses, settings, out)
    print(f"loss {losses[0]:.4f} → {losses[-1]:.4f} in {args.steps} steps; wrote {out}/ "
          "(adapter_model.safetensors, adapter_config.json, loss.csv, loss.png, finetune_args.json)")
    return out


def cli(argv: list[str] | None = None) -> int:
    try:
        main(argv)
    except FinetuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
