"""seed_everything: the same seed gives the same draws everywhere; torch runs on the thread count asked for."""
import random

import numpy as np
import torch

from lora_edu.course.seeding import TINY_MODEL_THREADS, seed_everything


def draws(seed):
    rng = seed_everything(seed)
    return random.random(), np.random.rand(), rng.normal(), torch.rand(1).item()


def test_same_seed_same_draws_other_seed_other_draws():
    assert draws(3) == draws(3)
    assert draws(3) != draws(4)


def test_thread_count():
    before, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        seed_everything(0)
        assert torch.get_num_threads() == TINY_MODEL_THREADS == 1
        seed_everything(0, threads=2)
        assert torch.get_num_threads() == 2
        seed_everything(0, threads=None)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(deterministic)


def test_deterministic_algorithms_only_when_asked():
    """Off by default (on the CPU it changes no digit and costs seconds of start-up); on when asked, e.g. on a GPU."""
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(False)
        seed_everything(0)
        assert not torch.are_deterministic_algorithms_enabled()
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before)
