"""Check that the course's packages are importable, and say plainly what is missing.

Notebook 00 calls :func:`check_environment` first, so a learner on a half-installed machine
learns what to install before a later notebook fails with an ImportError.

The list of packages is not written here: it is read from the installed package's metadata,
i.e. from ``pyproject.toml``'s ``dependencies``, the one place the course names them. This
module only adds what a learner wants to know beside each name: what the course uses it for.
"""
from __future__ import annotations

import importlib
import platform
import re
import sys
from importlib.metadata import PackageNotFoundError, requires

#: pip name -> what the course uses it for (tests/course/test_env_check.py: one entry per dependency)
PURPOSE = {
    "numpy": "arrays for the worked examples",
    "torch": "LoRA layers, autograd, training",
    "matplotlib": "plots",
    "ipywidgets": "sliders and the memory calculator",
    "tqdm": "progress bars during training",
    "peft": "Hugging Face PEFT, notebook 06",
    "transformers": "small LLaMA-style models, notebooks 01 and 06",
    "safetensors": "adapter files",
    "scikit-learn": "the bundled digits data set, notebooks 04 and 05",
    "bitsandbytes": "4-bit NF4 reference, notebooks 06 and 08",
    "gguf": "reads the real model's file, notebook 07",
}
#: pip names whose import name differs
IMPORT_NAME = {"scikit-learn": "sklearn"}


def requirement_name(requirement: str) -> str:
    """The distribution name of a requirement line ("torch>=2.2" -> "torch"), lower case."""
    return re.match(r"[A-Za-z0-9_.\-]+", requirement.strip()).group(0).lower()


def runtime_requirements() -> list[str]:
    """The pip names of the course's run-time dependencies (no extras), from the installed metadata."""
    try:
        lines = requires("lora-edu") or []
    except PackageNotFoundError:  # a source tree on sys.path that was never installed
        return list(PURPOSE)
    return [requirement_name(line) for line in lines if "extra ==" not in line and _applies_here(line)]


def _applies_here(line: str) -> bool:
    """False for a requirement whose platform marker excludes this machine (bitsandbytes on an Intel Mac)."""
    if ";" not in line:
        return True
    try:
        from packaging.markers import Marker
    except ImportError:  # packaging comes with pip and transformers; without it, check everything
        return True
    return Marker(line.split(";", 1)[1].strip()).evaluate()


def package_versions() -> dict[str, str | None]:
    """Map each run-time dependency (pip name) to its version, or ``None`` where it cannot be imported."""
    versions = {}
    for pip_name in runtime_requirements():
        try:
            module = importlib.import_module(IMPORT_NAME.get(pip_name, pip_name))
            versions[pip_name] = getattr(module, "__version__", "unknown")
        except Exception:  # ImportError, or a broken install raising something else
            versions[pip_name] = None
    return versions


def check_environment(verbose: bool = True) -> bool:
    """Print Python's and each package's version in this kernel; return True when nothing is missing."""
    versions = package_versions()
    missing = [name for name, version in versions.items() if version is None]
    if verbose:
        print(f"Python {platform.python_version()} ({'ok' if sys.version_info >= (3, 10) else 'too old: need 3.10+'})")
        for name, version in versions.items():
            print(f"  {name:<13} {version or 'MISSING':<10} {PURPOSE.get(name, '')}")
        if missing:
            names = " ".join(missing)
            print(f"\nMissing: {names}. Fix: run `make lab` from the course folder (it installs everything), "
                  f"or `pip install {names}` in this kernel's environment.")
        else:
            print("\nEverything the course needs is installed.")
    return not missing
