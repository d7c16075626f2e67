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
