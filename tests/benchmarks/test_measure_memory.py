"""benchmarks/measure_memory.py on the CPU: every case builds and steps; the 4-bit recipe's bytes are the calculator's."""
import sys
import warnings
from pathlib import Path

import pytest

from lora_edu.core import memory

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import measure_memory  # noqa: E402

TINY = measure_memory.TINY


def test_the_grid_measures_every_case_on_the_v2_shapes():
    runs = measure_memory.grid()
    assert len(runs) == 155 and len(set(runs)) == 155
    round2 = measure_memory.grid_round2()
    assert len(round2) == len(set(round2)) == 4 + 13 * 4 * 2
    for case in memory.MEASURED_CASES:
        shapes = {(b, s) for m, c, b, s in runs + round2 if c == case}
        assert set(measure_memory.V2_SHAPES) <= shapes, case
    assert {c for _, c, _, _ in round2} | set(measure_memory.V2_CASES) == set(memory.MEASURED_CASES)


def test_the_papers_casts_are_qlora_py_s():
    """qlora.py --bf16 (lines 396-405): adapters bf16, norms fp32, embedding and head bf16; 4-bit weights untouched."""
    pytest.importorskip("bitsandbytes")
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = measure_memory.build(TINY, memory.MEASURED_CASES["qlora_paper"], 16, "cpu", {})
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.bfloat16}
    assert {d for n, d in dtypes.items() if "norm" in n} == {torch.float32}
    assert {d for n, d in dtypes.items() if "embed_tokens" in n or "lm_head" in n} == {torch.bfloat16}
    assert {d for n, d in dtypes.items() if n.endswith("base_layer.weight")} == {torch.uint8}


@pytest.mark.parametrize("case", ["lora_all_ckpt", "full_bf16_keep_grads", "full_bf16_adamw8bit", "qlora_dq", "full_bf16_forloop",
                                  "lora_all_fused", "qlora_paper", "qlora_peft_r64"])
def test_a_case_runs_on_the_cpu_and_its_counts_are_the_calculators(case, tmp_path, monkeypatch):
    pytest.importorskip("bitsandbytes")
    monkeypatch.setattr(measure_memory.tempfile, "mkdtemp", lambda prefix="": str(tmp_path))
    settings = memory.MEASURED_CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' and bitsandbytes' deprecation notes on the CPU
        row = measure_memory.measure(TINY, settings, batch=2, seq_len=16, device="cpu", folders={})
    est = memory.estimate(TINY, batch_size=2, seq_len=16, **settings)
    assert row["trainable"] == est.trainable_params and row["grad_bytes"] == est.gradients
    if settings.get("quantization"):  # bitsandbytes' packed 4-bit weights and scales, byte for byte
        assert row["weight_bytes"] + row["quant_state_bytes"] == est.weights
    else:
        assert row["weight_bytes"] == est.weights
    if settings.get("optimizer") in ("adamw_8bit", "paged_adamw_32bit"):  # bitsandbytes' state (tiny tensors: fp32)
        assert row["optimizer_bytes"] == est.optimizer
