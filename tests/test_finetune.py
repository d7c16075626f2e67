"""python -m lora_edu.finetune: a CPU run on the cached SmolLM2 (a few steps), PEFT reads its adapter, and bad input
gets a clear error that names the fix and writes nothing."""
import csv
import json

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from lora_edu import finetune
from lora_edu.core import smollm2
from lora_edu.lessons import chat_task


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A 2-layer LLaMA with SmolLM2's tokenizer, saved as a model folder: the command's paths, fast."""
    folder = tmp_path_factory.mktemp("tiny")
    tokenizer = AutoTokenizer.from_pretrained(smollm2.model_dir())
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


QA = [{"prompt": chat_task.chat_prompt(q), "completion": chat_task.reply(a)}
      for q, a in [("What is the capital of France?", "Paris"), ("What colour is grass?", "green"),
                   ("How many legs does a dog have?", "4"), ("What is frozen water called?", "ice")]]


def test_a_few_steps_on_the_cached_smollm2_write_a_peft_adapter(tmp_path):
    from peft import PeftModel

    data = write_jsonl(tmp_path / "train.jsonl", QA)
    out = finetune.main(["--model", str(smollm2.model_dir()), "--data", str(data), "--out", str(tmp_path / "adapter"),
                         "--steps", "2", "--batch-size", "2", "--top-layers", "2", "--lr", "1e-3"])
    names = {p.name for p in out.iterdir()}
    assert names == {"adapter_model.safetensors", "adapter_config.json", "loss.csv", "loss.png", "finetune_args.json", "README.md"}
    with open(out / "loss.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["step", "loss"] and len(rows) == 3 and all(float(r[1]) > 0 for r in rows[1:])
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["layers_to_transform"] == [28, 29] and set(config["target_modules"]) == set(finetune.DEFAULT_TARGETS)
    model, _ = smollm2.load()
    peft_model = PeftModel.from_pretrained(model, out)
    trained = [n for n, p in peft_model.named_parameters() if "lora_B" in n and p.abs().sum() > 0]
    assert trained and all(".layers.28." in n or ".layers.29." in n for n in trained)
    settings = json.loads((out / "finetune_args.json").read_text())
    assert settings["steps"] == 2 and settings["top_layers"] == 2 and settings["device"] == "cpu"


def test_chat_messages_without_the_cache(tiny_model, tmp_path):
    rows = [{"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}]}] * 3
    out = finetune.main(["--model", str(tiny_model), "--data", str(write_jsonl(tmp_path / "chat.jsonl", rows)),
                         "--out", str(tmp_path / "out"), "--steps", "1", "--targets", "q_proj,v_proj", "--r", "2"])
    assert (out / "adapter_model.safetensors").is_file()


def test_the_encoded_batch_labels_only_the_completion(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    batch = finetune.encode(tokenizer, QA[:2])
    for row, example in enumerate(QA[:2]):
        target = tokenizer(example["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        labelled = batch["labels"][row][batch["labels"][row] != -100].tolist()
        assert labelled == target


@pytest.mark.parametrize("rows, message", [
    (None, "no data file at .*Fix: pass --data"),
    ('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": \n', r"line 2, is not valid JSON.*Fix"),
    ('{"question": "a"}\n', "neither prompt/completion nor messages.*Fix"),
    ('{"prompt": "a", "completion": ""}\n', "completion not empty"),
    ('{"messages": [{"role": "user", "content": "hi"}]}\n', "the last must be the assistant's"),
    ("\n\n", "holds no examples"),
])
def test_bad_data_is_refused_and_nothing_is_written(tmp_path, rows, message):
    data = tmp_path / "train.jsonl"
    if rows is not None:
        data.write_text(rows)
    out = tmp_path / "out"
    with pytest.raises(finetune.FinetuneError, match=message):
        finetune.main(["--model", "unused", "--data", str(data), "--out", str(out)])
    assert not out.exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--r", "0", "--r must be at least 1"), ("--r", "-4", "--r must be at least 1"),
    ("--alpha", "0", "--alpha must be positive"), ("--lr", "-1", "--lr must be positive"),
    ("--steps", "0", "--steps must be at least 1"), ("--top-layers", "0", "--top-layers must be at least 1"),
])
def test_bad_settings_are_refused_before_loading_anything(tmp_path, flag, value, message):
    data = write_jsonl(tmp_path / "train.jsonl", QA)
    with pytest.raises(finetune.FinetuneError, match=message):
        finetune.main(["--model", "never-loaded", "--data", str(data), "--out", str(tmp_path / "out"), flag, value])
    assert not (tmp_path / "out").exists()


def test_unknown_targets_and_too_many_layers_name_the_fix(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", QA)
    with pytest.raises(finetune.FinetuneError, match="no linear layer of LlamaForCausalLM is called c_attn.*--targets with some of: .*q_proj"):
        finetune.main(["--model", str(tiny_model), "--data", str(data), "--out", str(tmp_path / "out"), "--targets", "c_attn"])
    with pytest.raises(finetune.FinetuneError, match="more than the model's 2 layers"):
        finetune.main(["--model", str(tiny_model), "--data", str(data), "--out", str(tmp_path / "out"), "--top-layers", "3"])
    assert not (tmp_path / "out").exists()


def test_a_missing_model_and_an_occupied_folder_are_refused(tmp_path, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", QA)
    with pytest.raises(finetune.FinetuneError, match="could not load a causal language model from .*Fix: pass --model"):
        finetune.main(["--model", str(tmp_path / "no-such-model"), "--data", str(data), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    assert finetune.cli(["--model", "x", "--data", str(data), "--out", str(tmp_path / "taken")]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]


def test_writing_the_loss_curve_leaves_pyplots_backend_alone(tmp_path):
    """A notebook that runs the command in-process keeps showing its later figures inline (07 did not, once)."""
    import matplotlib

    class Saved:
        def save_pretrained(self, folder):
            folder.mkdir(parents=True)
            (folder / "adapter_config.json").write_text("{}")

    before = matplotlib.get_backend()
    finetune.write_outputs(Saved(), [3.0, 2.5, 2.0], {"r": 8, "model": "tiny"}, tmp_path / "out")
    assert matplotlib.get_backend() == before
    assert (tmp_path / "out" / "loss.png").stat().st_size > 0 and (tmp_path / "out" / "loss.csv").is_file()
