"""Notebook 05's build exercises through the real grader and sandbox: honest 1, wrong 0, forgeries 0.

The learner's class and functions of a model run in the sandbox through a probe (lora_edu/course/probes.py,
copied there); only a record of numbers comes back, and the grader judges it against references it computed
itself. The forgeries below replace the probe inside the sandbox (student code can): they still score 0,
because the right numbers need the right computation on hidden inputs, or adapters that work on held-out
digits the sandbox never sees.
"""
import re

import pytest
from course_builder import ROOT, make_course, submit

from lora_edu.course import build_exercises as bx
from lora_edu.grade import sandbox
from lora_edu.grade.course_folder import read_source
from lora_edu.grade.grader import _Notebook, grade

NB05 = [ROOT / "notebooks" / "05_lora_from_scratch.ipynb"]
BUILD = ("ex05_lora_linear", "ex05_add_lora", "ex05_train_adapters", "ex05_adapt_digits")
LIMITS = sandbox.Limits(wall_seconds=180)

#: a forger that replaces the layer probe: right structure, but outputs from the base layer alone (no adapter math)
FORGE_LAYER = '''import probes, torch
def _forged(answer, x, W, b, A, B, grad_out, r, alpha):
    import torch
    d_out, d_in = W.shape
    y0 = x @ W.T + b
    A0 = (torch.rand(r, d_in, dtype=W.dtype) * 2 - 1) / d_in ** 0.5
    wide = (torch.rand(8, 256, dtype=W.dtype) * 2 - 1) / 16
    return {"A0": A0, "B0": torch.zeros(d_out, r, dtype=W.dtype), "scaling": alpha / r, "trainable": [r * (d_in + d_out), 0],
            "y0": y0, "y": y0, "grad_A": torch.zeros(r, d_in), "grad_B": torch.zeros(d_out, r), "base_grad": 0.0,
            "W_merged": W, "y_merged": y0, "W_unmerged": W, "y_unmerged": y0, "A_wide": wide, "B_wide": torch.zeros(16, 8)}
probes.lora_layer.__code__ = _forged.__code__
''' + bx.SOLUTION_LORA_LINEAR.replace("return self.base(x) + self.scaling", "return self.base(x) + 0 * self.scaling")

#: a forger that replaces the capstone probe: reports the pretrained weights and random adapters of the allowed size
FORGE_CAPSTONE = '''import probes, torch
def _forged(answer, fc1_weight, fc1_bias, fc2_weight, fc2_bias, head_weight, head_bias, x_train, y_train):
    import torch
    record = {}
    for name, W, b in (("fc1", fc1_weight, fc1_bias), ("fc2", fc2_weight, fc2_bias)):
        record |= {name + ".A": torch.randn(4, W.shape[1], dtype=W.dtype), name + ".B": torch.randn(W.shape[0], 4, dtype=W.dtype),
                   name + ".scaling": 2.0, name + ".W": W, name + ".b": b}
    return record | {"head.W": head_weight, "head.b": head_bias}
probes.capstone.__code__ = _forged.__code__
''' + bx.SOLUTION_ADAPT_DIGITS

#: a 5a class right on the visible example (W 4×6, r = 3, alpha = 4; the probe's wide layer is 16×256) that raises, on a
#: hidden case, a ValueError carrying that case's inputs: the probe turns it into a ProbeError quoting them (issue 26, #4)
LEAK_LAYER = bx.SOLUTION_LORA_LINEAR.replace(
    "        super().__init__()\n",
    "        super().__init__()\n"
    "        if (tuple(base.weight.shape), r, alpha) not in (((4, 6), 3, 4.0), ((16, 256), 8, 16)):\n"
    "            raise ValueError('LEAK r=%d alpha=%g W=%s' % (r, alpha, ' '.join(str(int(abs(w) * 1e6)) for w in base.weight.flatten().tolist())))\n",
    1)

#: a forged 5c probe that reads every case from the job file and raises a ProbeError quoting the hidden ones
LEAK_LOOP = """import json, sys, probes
def _forged(answer, W1, b1, W2, b2, x, y, steps, lr):
    import json, sys, probes
    job = json.load(open(sys.argv[1]))
    cases = [c for task in job["calls"] if task["function"] == "train_adapters" for c in task["cases"][1:]]
    raise probes.ProbeError("LEAK " + " ".join(str(int(abs(c["W1"]["data"][0]) * 1e6)) for c in cases))
probes.train_loop.__code__ = _forged.__code__
""" + bx.SOLUTION_TRAIN_ADAPTERS

#: a forged 5b probe whose record carries the hidden inputs as text, where numbers belong
LEAK_INJECT = """import json, sys, probes
def _forged(answer, widths, cross_attention, seed, targets, r, alpha, x):
    import json, sys
    job = json.load(open(sys.argv[1]))
    cases = [c for task in job["calls"] if task["function"] == "add_lora" for c in task["cases"][1:]]
    return {"wrapped": "LEAK " + " ".join(str(int(abs(c["x"]["data"][0]) * 1e6)) for c in cases), "trainable": 0, "out": x}
probes.inject.__code__ = _forged.__code__
""" + bx.SOLUTION_ADD_LORA

#: a forged capstone probe whose adapters' shapes (37 and 38: any number it likes) would carry a message
LEAK_CAPSTONE = """import probes, torch
def _forged(answer, fc1_weight, fc1_bias, fc2_weight, fc2_bias, head_weight, head_bias, x_train, y_train):
    import torch
    return {"fc1.A": torch.zeros(37, 64, dtype=torch.float64), "fc1.B": torch.zeros(128, 38, dtype=torch.float64),
            "fc1.scaling": 1.0, "fc1.W": fc1_weight, "fc1.b": fc1_bias, "fc2.W": fc2_weight, "fc2.b": fc2_bias,
            "head.W": head_weight, "head.b": head_bias}
probes.capstone.__code__ = _forged.__code__
""" + bx.SOLUTION_ADAPT_DIGITS

#: grade_id -> (the leaking answer cell, the plain words its feedback must contain)
LEAKS = {"ex05_lora_linear": (LEAK_LAYER, "on hidden case 1: the check stopped at a problem with your class"),
         "ex05_train_adapters": (LEAK_LOOP, "on the visible example: the check stopped at a problem with your function"),
         "ex05_add_lora": (LEAK_INJECT, "on the visible example: wrapped is not numbers."),
         "ex05_adapt_digits": (LEAK_CAPSTONE, "fc1's lora_A and lora_B do not fit its weight")}

#: grade_id -> (answer cell, words the feedback must contain)
WRONG = {
    "ex05_lora_linear": (bx.SOLUTION_LORA_LINEAR.replace("        if self.merged:\n            return self.base(x)\n", ""),
                         "after merge() the output changed"),
    "ex05_add_lora": (bx.SOLUTION_ADD_LORA.replace('name == t or name.endswith("." + t)', "t in name"), "only contains a target"),
    "ex05_train_adapters": (bx.SOLUTION_TRAIN_ADAPTERS.replace("        optimizer.zero_grad()\n", ""), "zero_grad"),
    "ex05_adapt_digits": (bx.SOLUTION_ADAPT_DIGITS.replace("steps=300", "steps=5"), "the target is 70%"),
}
FORGED = {"ex05_lora_linear": (FORGE_LAYER, "with A and B set, the output is not"),
          "ex05_adapt_digits": (FORGE_CAPSTONE, "the target is 70%")}

#: review 04-06 round 2: attacks that scored 1 in this sandbox (seed 5) before the fix, each a cell that imports at its top,
#: where a limit of the cell (30 s), not of the call (5 s), pays for the import
#: PEFT's LoRA layer wrapped (PEFT is hidden in the sandbox now)
LIBRARY = """from peft import LoraConfig as _LoraConfig
from peft.tuners.lora import Linear as _PeftLinear


class LoRALinear(nn.Module):
    def __init__(self, base, r, alpha):
        super().__init__()
        for p in base.parameters():
            p.requires_grad_(False)
        self.inner = _PeftLinear(base, "default", config=_LoraConfig(r=r, lora_alpha=alpha), r=r, lora_alpha=alpha)
        self.base, self.scaling = base, alpha / r
        self.lora_A, self.lora_B = self.inner.lora_A["default"].weight, self.inner.lora_B["default"].weight

    def forward(self, x):
        return self.inner(x)

    def merge(self):
        self.inner.merge()

    def unmerge(self):
        self.inner.unmerge()
"""
#: the capstone trained on every digit of the task, the held-out ones included (scikit-learn is hidden in the sandbox now)
TEST_DIGITS = """from sklearn.datasets import load_digits as _load_digits


def adapt_digits(model, x_train, y_train):
    digits = _load_digits()
    images = [np.rot90(digits.images / 16.0, k=k, axes=(1, 2)) for k in (1, 2, 3)] + [digits.images[:, :, ::-1] / 16.0]
    every = [torch.tensor(np.ascontiguousarray(im).reshape(len(im), -1)) for im in images]
    x_all = next(x for x in every if any(torch.equal(x_train[0], row) for row in x))
    add_lora(model, ["fc1", "fc2"], r=4, alpha=8)
    train_adapters(model, x_all, torch.tensor(digits.target), steps=300, lr=0.02)
    return model
"""
#: grade_id -> (answer cell, words the feedback must contain): the other wrong answers that scored 1 before the fix
WRONG_TOO = {
    "ex05_lora_linear": (bx.SOLUTION_LORA_LINEAR.replace("self.scaling = alpha / r", "self.scaling = alpha // r"),
                         "self.scaling must be alpha / r"),
    "ex05_add_lora": (bx.SOLUTION_ADD_LORA.replace(
        'names = [name for name, module in model.named_modules()\n             if isinstance(module, nn.Linear) and any(name == t '
        'or name.endswith("." + t) for t in targets)]',
        'names = [name for t in targets for name, module in model.named_modules()\n             if isinstance(module, nn.Linear) '
        'and (name == t or name.endswith("." + t))]'), "on the visible example: the check stopped at a problem with your function"),
    "ex05_adapt_digits": (TEST_DIGITS, "ModuleNotFoundError"),
}


@pytest.fixture(scope="module")
def marks(tmp_path_factory):
    course = make_course(tmp_path_factory.mktemp("course"), NB05)
    submit(course, "honest", NB05, solved=True)
    submit(course, "blank", NB05)
    solved = {gid: getattr(bx, f"SOLUTION_{name}") for gid, name in zip(BUILD, ("LORA_LINEAR", "ADD_LORA", "TRAIN_ADAPTERS", "ADAPT_DIGITS"))}
    submit(course, "wrong", NB05, solutions=solved | {gid: code for gid, (code, _) in WRONG.items()})
    submit(course, "forger", NB05, solutions=solved | {gid: code for gid, (code, _) in FORGED.items()})
    submit(course, "leaker", NB05, solutions=solved | {gid: code for gid, (code, _) in LEAKS.items()})
    submit(course, "wrong_too", NB05, solutions=solved | {gid: code for gid, (code, _) in WRONG_TOO.items()})
    submit(course, "library", NB05, solutions=solved | {"ex05_lora_linear": LIBRARY})
    run = grade(course, "lora", seed=5, jobs=2, limits=LIMITS)
    return {(m.student_id, m.grade_id.removesuffix("_check")): m for m in run.marks} | {"run": run}


def test_notebook_05_grades_its_build_exercises_by_probe():
    graded = {cell.grade_id: cell for cell in read_source(NB05[0]).graded}
    assert [f"{gid}_check" in graded for gid in BUILD] == [True] * 4
    assert graded["ex05_lora_linear_check"].function == "LoRALinear" and graded["ex05_lora_linear_check"].exercise == "lora_linear_class"


def test_the_probes_reach_the_sandbox_though_the_course_package_is_hidden_there(marks):
    """probes.py is copied beside the grading script (it imports nothing of the course), while lora_edu stays hidden:
    the honest marks below come from probes run in that sandbox."""
    assert "lora_edu" in sandbox.HIDDEN_MODULES and "peft" in sandbox.HIDDEN_MODULES
    assert [p.name for p in sandbox.SANDBOX_FILES] == ["runner.py", "answer_calls.py", "probes.py"]
    assert marks["run"].sandboxed and all(marks["honest", gid].score == 1.0 for gid in BUILD)


def test_the_honest_notebook_gets_every_mark_and_the_blank_none(marks):
    for gid in BUILD:
        honest, blank = marks["honest", gid], marks["blank", gid]
        assert honest.score == honest.max_score == 1.0, honest.message
        assert blank.score == 0.0 and blank.status == "not attempted", blank.message


@pytest.mark.parametrize("grade_id", list(WRONG))
def test_a_wrong_answer_scores_zero_with_its_reason(marks, grade_id):
    mark = marks["wrong", grade_id]
    assert mark.score == 0.0 and WRONG[grade_id][1] in mark.message, mark.message


@pytest.mark.parametrize("grade_id", list(FORGED))
def test_a_forged_probe_scores_zero(marks, grade_id):
    mark = marks["forger", grade_id]
    assert mark.score == 0.0 and FORGED[grade_id][1] in mark.message, mark.message


def test_the_forger_still_gets_the_exercises_it_did_not_forge(marks):
    """Forging one probe breaks nothing else: the honest answers of the same notebook keep their marks."""
    assert marks["forger", "ex05_add_lora"].score == 1.0 and marks["forger", "ex05_train_adapters"].score == 1.0


def _hidden_numbers(run, student: str) -> dict[str, set[int]]:
    """grade_id -> the numbers the leaks above make of ``student``'s hidden cases (each entry's |value|·10⁶, as an int)."""
    cases = _Notebook(read_source(NB05[0]), run.seed, 0, LIMITS).cases(student)
    first = {"ex05_lora_linear": lambda c: c["W"].flatten().tolist(), "ex05_train_adapters": lambda c: [c["W1"][0, 0].item()],
             "ex05_add_lora": lambda c: [c["x"][0, 0].item()]}
    return {gid: {int(abs(v) * 1e6) for _, case in cases[f"{gid}_check"][1:] for v in values(case)} - set(range(100))
            for gid, values in first.items()}


@pytest.mark.parametrize("grade_id", list(LEAKS))
def test_an_attack_on_a_probe_gets_plain_feedback_and_zero(marks, grade_id):
    """Issue 26 on notebook 05: a probe's error text, a record's text and its shapes are the student's, and never reach the
    feedback; the class that leaks its hidden inputs through the probe's error, the forged probes that quote the job file,
    and the record that speaks in shapes all score 0 with a plain reason, beside the honest student's full marks."""
    mark, honest = marks["leaker", grade_id], marks["honest", grade_id]
    assert mark.score == 0.0 and mark.status == "failed" and LEAKS[grade_id][1] in mark.message, mark.message
    assert "LEAK" not in mark.message and "37" not in mark.message and "38" not in mark.message, mark.message
    secret = _hidden_numbers(marks["run"], "leaker").get(grade_id, set())
    assert not {int(n) for n in re.findall(r"\d{3,}", mark.message)} & secret, mark.message
    assert honest.score == honest.max_score == 1.0, honest.message


def test_the_leaks_would_have_carried_the_secret_numbers(marks):
    """The check above is not empty: the hidden cases hold numbers the leaks would have printed."""
    secret = _hidden_numbers(marks["run"], "leaker")
    assert all(len(secret[gid]) >= 2 for gid in ("ex05_lora_linear", "ex05_train_adapters", "ex05_add_lora")), secret


def test_probe_feedback_is_plain_for_every_student(marks):
    """No feedback on notebook 05 quotes a probe's words with the case in them (``LoRALinear(base, r=3, alpha=8)``) or a shape."""
    for key, mark in marks.items():
        if key != "run":
            assert not re.search(r"\b(r|alpha)=\d|shape \(", mark.message), mark.message
@pytest.mark.parametrize("grade_id", list(WRONG_TOO))
def test_answers_that_scored_one_before_review_0406_score_zero(marks, grade_id):
    """Whole-number α/r, a layer wrapped twice, a capstone trained on the held-out digits: each scored 1 before the fix."""
    mark = marks["wrong_too", grade_id]
    assert mark.score == 0.0 and WRONG_TOO[grade_id][1] in mark.message, mark.message


def test_peft_is_hidden_in_the_sandbox(marks):
    """A thin wrapper around PEFT's LoRA layer answered 5a in the sandbox; PEFT is hidden there now."""
    mark = marks["library", "ex05_lora_linear"]
    assert mark.score == 0.0 and "peft" in mark.message, mark.message
