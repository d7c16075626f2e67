"""The environment the tests run in (the one set-up made) has a CPU build of torch and no CUDA wheels.

A CUDA build of torch and its nvidia-* wheels cost several GB that the course never uses; set-up
takes torch from PyTorch's CPU index (tools/setup_env.sh) and this checks that it did.
"""
import importlib.metadata

import torch


def test_torch_is_a_cpu_build():
    assert torch.version.cuda is None, f"torch {torch.__version__} is a CUDA {torch.version.cuda} build"


def test_no_nvidia_distribution_is_installed():
    names = sorted({(d.metadata["Name"] or "") for d in importlib.metadata.distributions()})
    nvidia = [n for n in names if n.lower().startswith("nvidia-")]
    assert nvidia == [], f"CUDA wheels installed: {nvidia}"
