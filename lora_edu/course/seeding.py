"""One call that seeds every random source a notebook uses, so stored outputs are reproducible."""
from __future__ import annotations

import random

import numpy as np

#: PyTorch's intra-op threads for the course's tiny models (see :func:`seed_everything`).
TINY_MODEL_THREADS = 1


def seed_everything(seed: int = 0, threads: int | None = TINY_MODEL_THREADS, deterministic: bool = False) -> np.random.Generator:
    """Seed Python's, NumPy's and PyTorch's generators; return a fresh NumPy ``Generator``.

    The stored notebooks are reproducible digit for digit (nbval compares every printed digit) because the
    seeds and the thread count are fixed: on the CPU, with a fixed thread count, PyTorch's kernels give the same
    result on every run. ``deterministic=True`` also asks PyTorch for deterministic algorithms
    (``torch.use_deterministic_algorithms``): pass it on a GPU, where some kernels add in a varying order. It is
    off by default because on the CPU it changes no digit of the course (every notebook's stored outputs are the
    same without it) and costs time: turning it on imports PyTorch's compiler stack (1.5-4 s of each notebook's
    start on the course's 2-core machine) and fills the memory of every tensor ``torch.empty`` allocates with NaN.

    ``threads`` sets PyTorch's intra-op thread count (``None`` leaves it alone). One thread is
    the default for two reasons. Speed: the course's models are tiny. ``benchmarks/bench_threads.py``
    timed notebook 05's training on two cores: idle, two threads were at most 6% faster than one;
    with another process keeping one core busy, two threads fighting over the free core made full
    fine-tuning 76× slower (45.9 s against 0.60 s; ``lora_edu/data/bench_threads_quiet_2cores.json``,
    and 22–34× on the shared course machine, ``bench_threads.json``). Reproducibility: a reduction
    split over a different number of threads can round differently, so a fixed count gives the same
    digits on a laptop and on a 64-core server.
    """
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        if threads is not None:
            torch.set_num_threads(threads)
    except ImportError:  # the environment check reports a missing torch; seeding the rest still helps
        pass
    return np.random.default_rng(seed)
