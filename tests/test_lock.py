"""The lock (lock/full.txt, lock/runtime.txt, written by tools/lock.py) is what every course environment installs.

- it was written from today's pyproject.toml and constraints-cpu.txt (a dependency added or narrowed without
  `make lock` fails here, before it can change what set-up installs);
- every package is pinned exactly, with at least one sha256, and every requirement of pyproject.toml is met
  by its pin;
- torch is in neither file (set-up takes the CPU build; its version is constraints-cpu.txt's) and neither are
  the CUDA wheels PyPI's torch would pull; runtime.txt leaves the host's kernel (IPython, ipykernel) alone;
- runtime.txt's pins are full.txt's (Binder and Colab run what CI tested);
- the environment these tests run in is the lock, exactly: a package at another version than its pin (a
  release made after the lock, a hand upgrade) fails here with the fix, rather than as a changed output.
"""
from __future__ import annotations

import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
lock = pytest.importorskip("lock", reason="tools/lock.py needs Python 3.11+ (tomllib)")

FULL, RUNTIME = lock.parse_lock(lock.FULL.read_text()), lock.parse_lock(lock.RUNTIME.read_text())
PROJECT = lock.tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def pins(path: Path) -> dict[str, list[tuple[str, str]]]:
    """{name: [(version, marker), ...]} (a package can appear once per marker)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]*))?", line)
        if match:
            out.setdefault(canonicalize_name(match.group(1)), []).append((match.group(2), (match.group(3) or "").strip()))
    return out


def applies_here(marker: str) -> bool:
    return not marker or Marker(marker).evaluate()


@pytest.mark.parametrize("path", [lock.FULL, lock.RUNTIME], ids=["full", "runtime"])
def test_lock_was_written_from_todays_inputs(path):
    assert lock.INPUTS_LINE + lock.inputs_digest() in path.read_text(), (
        f"{path.relative_to(ROOT)} was written from another pyproject.toml or constraints-cpu.txt: run `make lock` "
        "(keeps every pin that still fits) and commit the lock with the change")


@pytest.mark.parametrize("path", [lock.FULL, lock.RUNTIME], ids=["full", "runtime"])
def test_every_package_is_exact_and_hashed(path):
    text = path.read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9_.\-]+==)", text.split(lock.INPUTS_LINE, 1)[1].split("\n", 1)[1])
    assert len(blocks) > 10
    for block in blocks:
        assert re.match(r"^[A-Za-z0-9_.\-]+==\S+", block), block[:200]
        assert "--hash=sha256:" in block, f"no hash for {block.splitlines()[0]}"
    assert not re.search(r"^[A-Za-z0-9_.\-]+\s*(>=|<=|~=|>|<)", text, re.M), "a range in the lock"


@pytest.mark.parametrize("path", [lock.FULL, lock.RUNTIME], ids=["full", "runtime"])
def test_no_torch_and_no_cuda_wheels_in_the_lock(path):
    names = set(pins(path))
    assert "torch" not in names
    assert not {n for n in names if lock.CUDA_ONLY.match(n)}


def test_full_lock_meets_every_requirement_of_pyproject():
    locked = pins(lock.FULL)
    requirements = [*PROJECT["dependencies"], *(r for extra in PROJECT["optional-dependencies"].values() for r in extra)]
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name == "torch":
            continue
        assert name in locked, f"{name} is required by pyproject.toml but not locked: run `make lock`"
        for version, _ in locked[name]:
            assert req.specifier.contains(Version(version), prereleases=True), f"{name}=={version} does not meet {text}"


def test_runtime_lock_is_the_run_time_closure_at_full_locks_versions():
    full, runtime = pins(lock.FULL), pins(lock.RUNTIME)
    for name, entries in runtime.items():
        assert name in full, f"{name} is in runtime.txt but not full.txt"
        assert {v for v, _ in entries} <= {v for v, _ in full[name]}, f"{name}: runtime.txt {entries} vs full.txt {full[name]}"
    for text in PROJECT["dependencies"]:
        name = canonicalize_name(Requirement(text).name)
        assert name == "torch" or name in runtime, f"run-time dependency {name} missing from runtime.txt"
    assert not {"ipython", "ipykernel", "jupyterlab", "pytest", "nbgrader"} & set(runtime), "the host's kernel or a dev tool"


def test_this_environment_is_the_lock():
    """Every package the lock names for this platform is installed at its pinned version."""
    wrong = []
    for name, entries in pins(lock.FULL).items():
        wanted = [v for v, marker in entries if applies_here(marker)]
        if not wanted:
            continue
        try:
            installed = md.version(name)
        except md.PackageNotFoundError:
            installed = None
        if installed is None or Version(installed) != Version(wanted[0]):
            wrong.append(f"{name}: lock {wanted[0]}, installed {installed}")
    assert not wrong, ("this environment is not the lock (run `make setup`, which rebuilds .venv from lock/full.txt):\n  "
                       + "\n  ".join(wrong))
    torch_pin = re.search(r"^torch==(\S+)$", (ROOT / "constraints-cpu.txt").read_text(), re.M).group(1)
    assert Version(md.version("torch")).base_version == torch_pin
