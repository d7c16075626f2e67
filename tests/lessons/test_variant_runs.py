"""Notebook 08's comparison runs: each method builds the variant it names, and the stored sweep is what the code computes."""
import pytest
import torch

from lora_edu import data as stored
from lora_edu.core.lora import LoRALinear
from lora_edu.core.nf4 import NF4Linear
from lora_edu.lessons import digits_task, variant_runs


@pytest.fixture(scope="module")
def base():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield digits_task.pretrained_model()
    torch.set_num_threads(threads)


def test_each_method_builds_its_variant(base):
    models = {m: variant_runs.build(base, m) for m in variant_runs.METHODS}
    assert models["rsLoRA"].fc1.scaling == 8 / 2 and models["LoRA"].fc1.scaling == 8 / 4
    assert models["DoRA"].fc1.use_dora and models["PiSSA"].fc1.init == "pissa"
    assert isinstance(models["QLoRA"].fc1.base, NF4Linear) and isinstance(models["QLoRA"].fc1, LoRALinear)
    assert not torch.equal(models["PiSSA"].fc1.base.weight, base.fc1.weight)  # PiSSA's residual base
    with pytest.raises(ValueError, match="not one of"):
        variant_runs.build(base, "VeRA")


def test_stored_sweep_reproduces(base):
    """The best run of each method, re-run, gets exactly the stored accuracy (float64, one thread)."""
    sweep = stored.load_json("variants_digits.json")
    data = digits_task.load_digits_task(rotate=True)
    best = variant_runs.best_per_method(sweep["results"])
    assert [b["method"] for b in best] == list(variant_runs.METHODS)
    for b in best[:2]:
        again = variant_runs.run(base, data, b["method"], b["lr"], epochs=sweep["epochs"])
        assert again == b  # validation and test accuracy, extra parameters: all exactly as stored


def test_rate_is_chosen_on_validation_not_test():
    """The choice uses the validation half; the two halves are disjoint and together the held-out 25 %."""
    data = digits_task.load_digits_task(rotate=True)
    (x_val, _), (x_test, _) = variant_runs.holdout_halves(data)
    assert len(x_val) + len(x_test) == len(data.x_test) and abs(len(x_val) - len(x_test)) <= 1
    rows = [dict(method="LoRA", lr=0.1, val_accuracy=0.5, accuracy=0.9), dict(method="LoRA", lr=0.01, val_accuracy=0.6, accuracy=0.7)]
    assert variant_runs.best_per_method(rows)[0]["lr"] == 0.01
