"""Check that the course's packages are importable, and say plainly what is missing.

Notebook 00 calls :func:`check_environment` first, so a learner on a half-installed machine
learns what to install before a later notebook fails with an ImportError.
"""
from __future__ import annotations

import importlib
import platform
import sys

#: import name -> (pip name, what the course uses it for)
REQUIRED = {
    "numpy": ("numpy", "arrays for the worked examples"),
    "torch": ("torch", "LoRA layers, autograd, training"),
    "matplotlib": ("matplotlib", "plots"),
    "ipywidgets": ("ipywidgets", "sliders and the memory calculator"),
    "tqdm": ("tqdm", "progress bars during training"),
    "peft": ("peft", "Hugging Face PEFT, notebook 06"),
    "transformers": ("transformers", "small LLaMA-style models, notebooks 01 and 06"),
    "safetensors": ("safetensors", "adapter files"),
    "sklearn": ("scikit-learn", "the bundled digits data set, notebook 05"),
}


def package_versions() -> dict[str, str | None]:
    """Map each required import name to its version, or ``None`` where it cannot be imported."""
    versions = {}
    for module in REQUIRED:
        try:
            versions[module] = getattr(importlib.import_module(module), "__version__", "unknown")
        except Exception:  # ImportError, or a broken install raising something else
            versions[module] = None
    return versions


def check_environment(verbose: bool = True) -> bool:
    """Print Python's and each package's version; return True when nothing is missing."""
    versions = package_versions()
    missing = [m for m, v in versions.items() if v is None]
    if verbose:
        print(f"Python {platform.python_version()} ({'ok' if sys.version_info >= (3, 10) else 'too old: need 3.10+'})")
        for module, version in versions.items():
            pip_name, purpose = REQUIRED[module]
            print(f"  {pip_name:<13} {version or 'MISSING':<10} {purpose}")
        if missing:
            names = " ".join(REQUIRED[m][0] for m in missing)
            print(f"\nMissing: {names}. Fix: run `make lab` from the course folder (it installs everything), "
                  f"or `pip install {names}` in this kernel's environment.")
        else:
            print("\nEverything the course needs is installed.")
    return not missing
