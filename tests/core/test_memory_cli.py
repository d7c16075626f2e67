"""python -m lora_edu.memory (issue 16): the output, bad values, and le.memory's one module."""
import importlib
import subprocess
import sys

import pytest

from lora_edu import memory as cli_module
from lora_edu.core import memory as core


def run(*args):
    return subprocess.run([sys.executable, "-m", "lora_edu.memory", *args], capture_output=True, text=True, timeout=120)


def test_llama3_8b_qlora_on_24_gb():
    out = run("--model", "llama-3-8b", "--method", "qlora", "--gpu-gb", "24")
    assert out.returncode == 0 and out.stderr == ""
    settings = dict(cli_module.METHOD_SETTINGS["qlora"], weight_dtype="bf16", seq_len=512, optimizer="adamw", set_to_none=True)
    est = core.estimate("llama-3-8b", batch_size=1, **settings)
    card = core.usable_memory(24)
    best = core.largest_batch("llama-3-8b", card, **settings)
    text = out.stdout
    assert "llama-3-8b: 8,030,261,248 parameters (meta-llama/Meta-Llama-3-8B config.json)" in text
    assert ("NF4 base with double quantization (PEFT's prepare_model_for_kbit_training recipe), LoRA r=16 on every block "
            "linear (fp32 adapters), AdamW (foreach), gradient checkpointing") in text
    assert f"The peak falls at the {est.peak_at}; alive then:" in text
    assert f"{est.peak / core.GB:9.2f} GB = {est.peak / core.GiB:.2f} GiB" in text
    assert f"Verdict: FITS a 24 GB card ({card / core.GiB:.2f} GiB usable" in text
    assert f"Largest batch of 512-token sequences that fits: {best}" in text
    assert best > 1 and core.estimate("llama-3-8b", batch_size=best + 1, **settings).peak > card == 24 * core.GiB - core.CONTEXT_MARGIN


def test_the_papers_qlora_and_adamw_implementations():
    """Issue 25: --method qlora-paper is the paper's 65B script; --adamw-impl picks AdamW's implementation."""
    text = cli_module.report("llama-65b", cli_module.settings_from_args(cli_module.parser().parse_args(
        ["--model", "llama-65b", "--method", "qlora-paper"])), 1, 48)
    assert ("NF4 base with double quantization (the QLoRA paper's qlora.py --bf16 recipe), LoRA r=64 on every block linear "
            "(bf16 adapters, dropout 0.05), paged 32-bit AdamW (bitsandbytes), gradient checkpointing") in text
    args = cli_module.parser().parse_args(["--model", "llama-7b", "--method", "full", "--adamw-impl", "fused"])
    s = cli_module.settings_from_args(args)
    assert s["adamw_impl"] == "fused" and "AdamW (fused)" in cli_module.describe(s)
    text = cli_module.report("llama-7b", s, 1, 80)
    est = core.estimate("llama-7b", batch_size=1, **s)
    assert "The peak falls at the optimizer step; alive then:" in text and est.at_peak["activations"] == 0
    assert f"(the saved activations, {est.activations / core.GB:.2f} GB at the end of the forward pass, are freed by then)" in text


def test_does_not_fit_and_options():
    text = cli_module.report("llama-2-70b", cli_module.settings_from_args(cli_module.parser().parse_args(
        ["--model", "llama-2-70b", "--method", "full"])), 1, 80)
    assert "DOES NOT FIT a 80 GB card" in text and "fits: 0 (not even one)" in text
    args = cli_module.parser().parse_args(["--model", "llama-7b", "--method", "qlora", "--no-checkpointing", "--no-double-quant",
                                           "--optimizer", "adamw_8bit", "--keep-grads", "--targets", "q_proj,v_proj", "--lora-r", "4"])
    s = cli_module.settings_from_args(args)
    assert (s["gradient_checkpointing"], s["double_quant"], s["optimizer"], s["set_to_none"], s["lora_targets"], s["lora_r"]) == (
        False, False, "adamw_8bit", False, ("q_proj", "v_proj"), 4)
    assert "inference" in cli_module.report("llama-7b", cli_module.settings_from_args(
        cli_module.parser().parse_args(["--model", "llama-7b", "--method", "inference"])), 1, 16)


@pytest.mark.parametrize("args, message", [
    (["--model", "llama-8b"], "unknown preset 'llama-8b'; choose one of ['llama-1.3b'"),
    (["--model", "llama-7b", "--method", "prefix"], "invalid choice: 'prefix' (choose from"),
    (["--model", "llama-7b", "--gpu-gb", "-3"], "expected a positive float, got '-3'"),
    (["--model", "llama-7b", "--targets", "qproj"], "unknown LoRA target module(s) ['qproj']; choose from"),
    (["--model", "llama-7b", "--double-quant"], "double_quant quantizes the 4-bit scales: it needs quantization='nf4'"),
    (["--model", "llama-7b", "--optimizer", "adamw_8bit", "--adamw-impl", "fused"], "adamw_impl chooses torch.optim.AdamW's"),
    (["--model", "llama-7b", "--method", "full", "--lora-dropout", "0.1"], "lora_dropout is the dropout before LoRA's adapters"),
    (["--model", "no/such/config.json"], "no config.json at 'no/such/config.json'"),
])
def test_bad_values_name_the_valid_choices(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_module.main(args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_config_json_path(tmp_path):
    from transformers import LlamaConfig

    LlamaConfig(**core.PRESETS["llama-7b"], tie_word_embeddings=False).save_pretrained(tmp_path)
    out = run("--model", str(tmp_path / "config.json"), "--method", "lora", "--gpu-gb", "24")
    assert out.returncode == 0 and "6,738,415,616 parameters" in out.stdout


def test_le_memory_is_one_module_whatever_the_import_order():
    """le.memory, `import lora_edu.memory` and `python -m lora_edu.memory` are one module; its names are core's, live."""
    code = ("import lora_edu as le; a = le.memory; import lora_edu.memory as b; import lora_edu.core.memory as c; "
            "assert a is b and a.estimate is c.estimate and a.PRESETS is c.PRESETS and le.memory is b; print('ok')")
    for order in (code, code.replace("a = le.memory; import lora_edu.memory as b", "import lora_edu.memory as b; a = le.memory")):
        out = subprocess.run([sys.executable, "-c", order], capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "ok", out.stderr
    assert importlib.import_module("lora_edu.memory") is cli_module
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        cli_module.nope  # noqa: B018


def test_readme_shows_the_current_output_and_errors():
    """The README's calculator section: its printed output is today's, and its error figures are the data's."""
    from pathlib import Path

    from lora_edu import memory_views

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Will it fit my GPU? (the memory calculator)")[1].split("\n## ")[0]
    shown = section.split("```text\n")[1].split("\n```")[0]
    assert shown == run("--model", "llama-3-8b", "--method", "qlora", "--gpu-gb", "24").stdout.rstrip("\n")
    rows = memory_views.compare_with_measurements()
    err = lambda train: max(abs(r["predicted_peak"] / r["measured_peak"] - 1) for r in rows  # noqa: E731
                            if (r["method"] != "inference") == train)
    flat = " ".join(section.split())
    training = sorted((abs(r["predicted_peak"] / r["measured_peak"] - 1) for r in rows if r["method"] != "inference"), reverse=True)
    assert f"{len(rows)} runs on models" in flat and f"every peak within {err(True):.1%} for training" in flat
    assert f"every other within {training[1]:.1%}), {err(False):.0%} for inference" in flat
