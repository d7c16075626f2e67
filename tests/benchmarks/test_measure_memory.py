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
    for case in memory.MEASURED_CASES:
        shapes = {(b, s) for m, c, b, s in runs if c == case}
        assert set(measure_memory.V2_SHAPES) <= shapes, case


@pytest.mark.parametrize("case", ["lora_all_ckpt", "full_bf16_keep_grads", "full_bf16_adamw8bit", "qlora_dq"])
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
    if settings.get("optimizer") == "adamw_8bit":  # bitsandbytes' state: tiny tensors keep fp32 moments
        assert row["optimizer_bytes"] == est.optimizer
