"""The course's exercises, one factory per exercise, grouped by notebook.

A notebook does ``ex = exercise_bank.lora_param_count()`` and the learner calls
``ex.check(answer)``. Reference answers and hidden-case generators live here, not in the
notebooks, so that the student versions (solutions stripped) still check properly.
"""
from __future__ import annotations

import numpy as np

from lora_edu.course.exercises import FunctionExercise

# ---------------------------------------------------------------- notebook 00


def lora_param_count() -> FunctionExercise:
    """00: LoRA's trainable parameters for one d×k weight at rank r."""
    return FunctionExercise(
        "lora_param_count",
        reference=lambda d, k, r: r * (d + k),
        example=dict(d=4096, k=4096, r=8),
        random_case=lambda rng: dict(d=int(rng.integers(8, 5000)), k=int(rng.integers(8, 5000)), r=int(rng.integers(1, 65))),
        hint="In the paper's and PEFT's convention (notebook 00's): A = lora_A is r×k (r×in, the down-projection) "
             "and B = lora_B is d×r (out×r, the up-projection). Count the entries of each and add them.",
        solution="def lora_params(d, k, r):\n    return r * (d + k)",
        why="At d = k = 4096 and r = 8 that is 65,536 numbers instead of 16,777,216: this is LoRA's whole saving.",
    )


# ---------------------------------------------------------------- notebook 01


def training_state_gb() -> FunctionExercise:
    """01: the popular budget of full fine-tuning, by hand: fp16 weights + fp16 grads + two fp32 moments."""
    return FunctionExercise(
        "training_state_gb",
        reference=lambda n_params: n_params * (2 + 2 + 4 + 4) / 1e9,
        example=dict(n_params=7_000_000_000),
        random_case=lambda rng: dict(n_params=int(rng.integers(10**6, 10**11))),
        rtol=1e-9,
        hint="Bytes per parameter: weight (fp16), gradient (fp16), AdamW's first and second moments (fp32 each). "
             "Multiply by the number of parameters and divide by 10⁹ for decimal GB.",
        solution="def training_state_gb(n_params):\n    return n_params * (2 + 2 + 4 + 4) / 1e9",
        why="12 bytes a parameter (the popular figure; the Transformers guide counts 18 with fp32 gradients and "
            "master weights): 84 GB for 7 × 10⁹ parameters, before a single activation is stored.",
    )


# ---------------------------------------------------------------- notebooks 02 and 03


def _step_case(rng: np.random.Generator) -> dict:
    """Fresh shapes and values for the worked-example exercises (row vectors, y = x·(W + B·A))."""
    k, d, r, n = (int(v) for v in (rng.integers(2, 7), rng.integers(2, 7), rng.integers(1, 4), rng.integers(1, 4)))
    return dict(x=rng.normal(size=(n, k)), W=rng.normal(size=(k, d)), A=rng.normal(size=(r, d)),
                B=rng.normal(size=(k, r)), y_true=rng.normal(size=(n, d)))


def delta_w() -> FunctionExercise:
    """02: ΔW = B·A in the source's convention."""
    from lora_edu.core.worked_example import example

    ex = example()
    return FunctionExercise(
        "delta_w",
        reference=lambda A, B: B @ A,
        example=dict(A=ex["A"], B=ex["B"]),
        random_case=lambda rng: {k: v for k, v in _step_case(rng).items() if k in ("A", "B")},
        hint="Row vectors, as in notebooks 02–03: B is k×r (applied first, the down-projection: PEFT's lora_A is Bᵀ) "
             "and A is r×d (applied last, the up-projection: lora_B is Aᵀ). Their product B·A is k×d, the shape of W. "
             "NumPy's matrix product is @.",
        solution="def delta_w(A, B):\n    return B @ A",
        why="ΔW has W's shape but only rank r: it is what LoRA adds to the frozen weight.",
    )


def grad_b() -> FunctionExercise:
    """03: ∇B = G·Aᵀ with G = xᵀ(y − y_true)."""
    from lora_edu.core.worked_example import example, gradients

    ex = example()
    return FunctionExercise(
        "grad_B",
        reference=lambda x, W, A, B, y_true: gradients(x, W, A, B, y_true)["grad_B"],
        example=ex,
        random_case=_step_case,
        hint="Row vectors, as in notebooks 02–03: B is k×r (applied first, the down-projection: PEFT's lora_A is Bᵀ) "
             "and A is r×d (applied last, the up-projection: lora_B is Aᵀ). "
             "First y = x·(W + B·A), then G = xᵀ·(y − y_true), which is ∂L/∂W_eff. W_eff depends on B through B·A, "
             "so ∂L/∂B = G·Aᵀ (check the shapes: k×d times d×r).",
        solution="def grad_B(x, W, A, B, y_true):\n    y = x @ (W + B @ A)\n    G = x.T @ (y - y_true)\n    return G @ A.T",
        why="∇B = G·Aᵀ needs A: from LoRA's start (A, the up-projection, is zero) it is zero at the first step, "
            "so A moves first and B (the down-projection) follows.",
    )


def one_step() -> FunctionExercise:
    """03: one gradient-descent step, returning the new A and B stacked as (A_new, B_new)."""
    from lora_edu.core.worked_example import LEARNING_RATE, example, gradient_step

    def reference(x, W, A, B, y_true):
        s = gradient_step(x, W, A, B, y_true, lr=LEARNING_RATE)
        return np.concatenate([s["A_new"].ravel(), s["B_new"].ravel()])

    return FunctionExercise(
        "one_step",
        reference=reference,
        example=example(),
        random_case=_step_case,
        hint="Row vectors, as in notebooks 02–03: B is k×r (applied first, the down-projection: PEFT's lora_A is Bᵀ) "
             "and A is r×d (applied last, the up-projection: lora_B is Aᵀ). "
             "Compute both gradients from the *same* (old) A and B, then A − η·∇A and B − η·∇B with η = 0.1. "
             "Return np.concatenate([A_new.ravel(), B_new.ravel()]). Do not change A or B in place.",
        solution=("def one_step(x, W, A, B, y_true, lr=0.1):\n    y = x @ (W + B @ A)\n    G = x.T @ (y - y_true)\n"
                  "    A_new, B_new = A - lr * (B.T @ G), B - lr * (G @ A.T)\n"
                  "    return np.concatenate([A_new.ravel(), B_new.ravel()])"),
        why="That is all a LoRA training step is: the frozen W only shapes the error, only A and B change.",
    )


# ---------------------------------------------------------------- notebook 05


def _layer_case(rng: np.random.Generator) -> dict:
    """A fresh LoRA layer (PyTorch convention): x (batch×in), W (out×in), b (out), A (r×in), B (out×r)."""
    import torch

    d_in, d_out, r, n = (int(v) for v in (rng.integers(2, 12), rng.integers(2, 12), rng.integers(1, 5), rng.integers(1, 6)))
    t = lambda *shape: torch.tensor(rng.normal(size=shape))  # noqa: E731
    return dict(x=t(n, d_in), W=t(d_out, d_in), b=t(d_out), A=t(r, d_in), B=t(d_out, r), scaling=float(rng.uniform(0.25, 4)))


def lora_forward() -> FunctionExercise:
    """05: the LoRA forward pass, PyTorch convention."""
    rng = np.random.default_rng(5)
    return FunctionExercise(
        "lora_forward",
        reference=lambda x, W, b, A, B, scaling: x @ W.T + b + scaling * (x @ A.T) @ B.T,
        example=_layer_case(rng) | dict(scaling=2.0),
        random_case=_layer_case,
        hint="nn.Linear computes x·Wᵀ + b. LoRA adds scaling·(x·Aᵀ)·Bᵀ: down to r with Aᵀ, back up with Bᵀ. "
             "Computing x·Aᵀ first keeps it cheap.",
        solution="def lora_forward(x, W, b, A, B, scaling):\n    return x @ W.T + b + scaling * (x @ A.T) @ B.T",
        why="(x·Aᵀ)·Bᵀ costs r·(in + out) multiply-adds per input and never forms the out×in matrix ΔW.",
    )


def merge_weight() -> FunctionExercise:
    """05: merging: the weight a plain nn.Linear needs to compute what the LoRA layer computes."""
    rng = np.random.default_rng(6)

    def case(rng):
        c = _layer_case(rng)
        return {k: c[k] for k in ("W", "A", "B", "scaling")}

    return FunctionExercise(
        "merge_weight",
        reference=lambda W, A, B, scaling: W + scaling * B @ A,
        example=case(rng),
        random_case=case,
        hint="ΔW = scaling·B·A has W's shape (out×in). Return a new tensor: do not add into W in place.",
        solution="def merge_weight(W, A, B, scaling):\n    return W + scaling * (B @ A)",
        why="After merging, inference costs exactly what the base model costs: one matmul, no adapter.",
    )


# ---------------------------------------------------------------- notebook 04


def smallest_rank() -> FunctionExercise:
    """04: the smallest rank whose best approximation reaches a relative error."""
    from lora_edu.core.lowrank import smallest_rank as reference

    def case(rng):
        n = int(rng.integers(3, 40))
        return dict(singular_values=np.sort(rng.exponential(size=n))[::-1], max_error=float(rng.uniform(0.01, 0.9)))

    return FunctionExercise(
        "smallest_rank",
        reference=lambda singular_values, max_error: reference(singular_values, max_error),
        example=dict(singular_values=np.array([4.0, 2.0, 1.0, 0.5, 0.25]), max_error=0.2),
        random_case=case,
        hint="By Eckart–Young the rank-r error is sqrt(σ²_{r+1} + σ²_{r+2} + …) / sqrt(σ²_1 + σ²_2 + …). Try r = 0, 1, 2, … "
             "and return the first r whose error is at most max_error.",
        solution=("def smallest_rank(singular_values, max_error):\n    s2 = np.asarray(singular_values, float) ** 2\n"
                  "    for r in range(len(s2) + 1):\n        if np.sqrt(s2[r:].sum() / s2.sum()) <= max_error:\n            return r"),
        why="The singular values tell you, before any training, the smallest rank that approximates this matrix "
            "to a given relative error (Eckart–Young); what rank a task needs is another question.",
    )


# ---------------------------------------------------------------- notebook 06


def lora_qv_trainable() -> FunctionExercise:
    """06: what PEFT's printout says for LoRA on q_proj and v_proj of a LLaMA-style model."""
    return FunctionExercise(
        "lora_qv_trainable",
        reference=lambda hidden_size, num_layers, r: num_layers * 2 * r * (hidden_size + hidden_size),
        example=dict(hidden_size=4096, num_layers=32, r=8),
        random_case=lambda rng: dict(hidden_size=int(rng.integers(1, 64)) * 64, num_layers=int(rng.integers(1, 81)),
                                     r=int(rng.choice([1, 2, 4, 8, 16, 32, 64]))),
        hint="q_proj and v_proj are hidden×hidden in LLaMA (with as many key/value heads as heads). "
             "Each gets A (r×hidden) and B (hidden×r), in every layer.",
        solution="def lora_qv_trainable(hidden_size, num_layers, r):\n    return num_layers * 2 * r * (hidden_size + hidden_size)",
        why="For LLaMA-7B that is the 4,194,304 of the much-quoted print_trainable_parameters() line, a training "
            "log with alpaca-lora's finetune.py settings.",
    )

#: Notebook 06's bug hunt: nn.Linear's merge applied to a Conv1D weight (pitfall 1). Shown, run and fixed there.
BUGGY_MERGE_CONV1D = '''def merge_conv1d_buggy(W, A, B, scaling):
    """Merge LoRA into a GPT-2 Conv1D weight W. A is r×in (lora_A), B is out×r (lora_B)."""
    return W + scaling * (B @ A)
'''


def _conv1d_case(rng: np.random.Generator, square: bool | None = None) -> dict:
    """A Conv1D weight W (in×out, GPT-2's layout), lora_A (r×in), lora_B (out×r) and a scaling; square half the time."""
    import torch

    d_in, d_out, r = (int(v) for v in (rng.integers(2, 10), rng.integers(2, 10), rng.integers(1, 4)))
    if square if square is not None else rng.random() < 0.5:
        d_out = d_in
    t = lambda *shape: torch.tensor(rng.normal(size=shape))  # noqa: E731
    return dict(W=t(d_in, d_out), A=t(r, d_in), B=t(d_out, r), scaling=float(rng.uniform(0.25, 4)))


def merge_conv1d() -> FunctionExercise:
    """06, bug hunt: the merge of a LoRA into a transformers Conv1D weight, which is stored in×out."""
    return FunctionExercise(
        "merge_conv1d",
        reference=lambda W, A, B, scaling: W + scaling * (B @ A).T,
        example=_conv1d_case(np.random.default_rng(61), square=True),
        random_case=_conv1d_case,
        hint="A Conv1D computes x·W + b: its W is in×out, the transpose of nn.Linear's out×in. B·A is out×in "
             "(nn.Linear's layout), so it must be turned into W's layout before it is added. "
             "On a square layer the buggy sum raises no error: compare the shapes of W and B·A on a non-square one.",
        solution="def merge_conv1d(W, A, B, scaling):\n    return W + scaling * (B @ A).T",
        why="That transpose is what PEFT's fan_in_fan_out=True does (transpose(lora_B @ lora_A, fan_in_fan_out) in "
            "peft/tuners/lora/layer.py). Without it a square layer such as GPT-2's attention c_proj merges "
            "without an error and computes something else.",
    )
