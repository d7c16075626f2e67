"""docs/cheat_sheet.md: one page; every place it cites is a section of that notebook; every number is the package's."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHEET = ROOT / "docs" / "cheat_sheet.md"
#: "[05](../notebooks/05_lora_from_scratch.ipynb) *Step by step*": a notebook and a section of it
CITATION = re.compile(r"\[(\d\d)\]\(\.\./notebooks/((\d\d)_[a-z0-9_]+\.ipynb)\) \*([^*]+)\*")


def text() -> str:
    return " ".join(SHEET.read_text(encoding="utf-8").split())


def headings(notebook: str) -> list[str]:
    cells = json.loads((ROOT / "notebooks" / notebook).read_text())["cells"]
    return [re.sub(r"^#{2,3} ", "", line).strip() for c in cells if c["cell_type"] == "markdown"
            for line in "".join(c["source"]).split("\n") if re.match(r"#{2,3} ", line)]


def test_one_page_with_the_sections_the_issue_asks_for():
    sheet = SHEET.read_text(encoding="utf-8")
    assert len(sheet.split()) <= 900 and len(sheet.splitlines()) <= 80, "one page"
    for section in ("## The layer", "## Counts", "## Init", "## α and r", "## Target modules", "## Merge", "## Memory rule of thumb"):
        assert section in sheet, section


def test_every_citation_names_a_notebook_and_one_of_its_sections():
    found = CITATION.findall(text())
    assert len(found) >= 15
    for label, notebook, number, section in found:
        assert label == number and (ROOT / "notebooks" / notebook).is_file(), notebook
        assert any(h.startswith(section) for h in headings(notebook)), f"{notebook} has no section {section!r}"
    # each bullet and table row says where it is taught
    body = SHEET.read_text(encoding="utf-8").split("\n## ", 1)[1]
    items = re.split(r"\n(?=- |\| [^-|])", body)
    untaught = [i.strip()[:60] for i in items if (i.startswith("- ") or i.startswith("| ")) and not CITATION.search(" ".join(i.split()))
                and not i.startswith("| |")]
    assert not untaught, f"rules without the place that teaches them: {untaught}"


def test_the_readme_and_notebook_00_link_it():
    assert "(docs/cheat_sheet.md)" in (ROOT / "README.md").read_text()
    assert "(../docs/cheat_sheet.md)" in (ROOT / "notebooks" / "00_start_here.ipynb").read_text()


def test_the_numbers_are_the_packages():
    from lora_edu import memory
    from lora_edu.core.memory import DQ_BLOCK, GB
    from lora_edu.course import exercise_bank

    t = text()
    d = 4096
    assert "a 4096×4096 weight at r = 8 trains 65,536, 0.39% of 16,777,216" in t
    assert exercise_bank.lora_param_count().reference(d=d, k=d, r=8) == 65_536 and f"{65_536 / d**2:.2%}" == "0.39%"
    assert f"{memory.lora_parameter_count('llama-7b', r=8, targets=['q_proj', 'v_proj']):,} trainable numbers" in t
    assert f"{exercise_bank.training_state_gb().reference(n_params=7 * 10**9):.0f} GB for 7 × 10⁹ parameters" in t
    assert "12 bytes a parameter" in t and "counts 18 bytes" in t and 2 + 2 + 4 + 4 == 12
    assert memory.DTYPE_BYTES["bf16"] == 2 and "2 bytes a parameter in bf16" in t
    base = dict(batch_size=1, seq_len=512)
    full, lora, qlora = (memory.estimate("llama-7b", **memory.RECIPES[name], **base).peak / GB
                         for name in ("full fine-tuning", "LoRA", "QLoRA"))
    assert memory.RECIPES["QLoRA"]["lora_r"] == 16 and memory.RECIPES["QLoRA"]["lora_targets"] == memory.LINEAR_MODULES
    assert (f"{full:.1f} GB to fully fine-tune (bf16 weights, PyTorch's AdamW with its default foreach step), {lora:.1f} GB "
            f"with LoRA r = 8 on q, v, {qlora:.1f} GB with QLoRA (r = 16 on every linear layer, NF4 base, double "
            "quantization, gradient checkpointing)") in " ".join(t.split())
    bits = 4 + 8 / 64 + 32 / (64 * DQ_BLOCK)
    assert f"{bits:.3f} bits a weight" in t and DQ_BLOCK == 256
    linear = memory.parameter_counts("llama-7b")["linear_in_blocks"]
    assert memory.quantized_weight_bytes("llama-7b", double_quant=True) * 8 / linear == pytest.approx(bits, rel=1e-3)
    assert "python -m lora_edu.memory --model llama-3-8b --method qlora --gpu-gb 24" in (ROOT / "README.md").read_text()
