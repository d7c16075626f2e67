"""The course's exercises, one factory per exercise, grouped by notebook.

A notebook does ``ex = exercise_bank.lora_param_count()`` and the learner calls
``ex.check(answer)``. Reference answers and hidden-case generators live here, not in the
notebooks, so that the student versions (solutions stripped) still check properly.
"""
from __future__ import annotations

import numpy as np

from lora_edu.exercises import FunctionExercise

# ---------------------------------------------------------------- notebook 00


def lora_param_count() -> FunctionExercise:
    """00: LoRA's trainable parameters for one d×k weight at rank r."""
    return FunctionExercise(
        "lora_param_count",
        reference=lambda d, k, r: r * (d + k),
        example=dict(d=4096, k=4096, r=8),
        random_case=lambda rng: dict(d=int(rng.integers(8, 5000)), k=int(rng.integers(8, 5000)), r=int(rng.integers(1, 65))),
        hint="A is r×k and B is d×r. Count the entries of each and add them.",
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
        why="12 bytes a parameter: 84 GB for 7 B parameters, before a single activation is stored.",
    )
