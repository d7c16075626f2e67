"""Write the course's lock files, lock/full.txt and lock/runtime.txt, with uv.

The course promises the same stored outputs on every machine, which holds only while every package is the
version the notebooks were executed with. pyproject.toml keeps honest ranges for people who `pip install
lora-edu`; the course's own environments install the lock instead: every package at an exact version with
the sha256 of each of its files, for Linux (x86-64, aarch64) and macOS (arm64) and every Python from 3.11
(one version a package: `--fork-strategy fewest`, so that one stored output fits every Python).

- lock/full.txt: everything set-up installs into .venv (`make lab`, `make test`, CI): the run-time
  packages, JupyterLab and RISE (`lab`), the test and authoring tools (`dev`), the website's builder (`site`),
  JupyterHub (`hub`: a class's environment is this lock too, deploy/install_class.py).
- lock/runtime.txt: what the notebooks need where a host brings its own Jupyter (Binder, Colab): the
  run-time packages and what they need, except the host's kernel (IPython, ipykernel and what only they
  need), which we must not replace under a running front end.

torch is in neither file. Its version is the one line of constraints-cpu.txt, and set-up takes the CPU
build from PyTorch's CPU index (PyPI's Linux wheel is the CUDA build, which pulls several GB of nvidia-*
wheels); uv resolves against PyPI's metadata, so torch's CUDA-only dependencies (nvidia-*, cuda-*, triton,
each needed by nothing but torch) are dropped with it. torch's other dependencies (sympy, networkx, ...)
stay locked.

    tools/lock.py            re-resolve after pyproject.toml changed, keeping every pin that still fits
    tools/lock.py --upgrade  re-resolve to the newest releases (`make upgrade` runs this, then re-executes)
    tools/lock.py --upgrade --hold FILE   the same, holding packages back to FILE's pins (e.g. transformers==5.23.0)

The lock changes only through this script (tests/test_lock.py checks that it matches pyproject.toml).
"""
from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
LOCK_DIR = ROOT / "lock"
FULL = LOCK_DIR / "full.txt"
RUNTIME = LOCK_DIR / "runtime.txt"
PYTHON_FLOOR = "3.11"   # the lock's oldest Python; `pip install lora-edu` keeps requires-python >= 3.10
ROOT_LABEL = "lora-edu (pyproject.toml)"
# Dropped with torch: PyPI's torch needs them on Linux; the CPU build does not.
CUDA_ONLY = re.compile(r"^(nvidia-.*|cuda-.*|triton)$")
# The host's kernel (Binder, Colab): never replaced by runtime.txt, nor what only it needs.
HOST_KERNEL = {"ipython", "ipykernel"}
INPUTS_LINE = "# inputs sha256: "


def inputs_digest() -> str:
    """A digest of what the lock is resolved from: pyproject's requirements and constraints-cpu.txt."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    text = repr((project["project"]["dependencies"], project["project"]["optional-dependencies"],
                 project["build-system"]["requires"], (ROOT / "constraints-cpu.txt").read_text()))
    return hashlib.sha256(text.encode()).hexdigest()


def parse_lock(text: str) -> dict[str, dict]:
    """{name: {"block": lines, "parents": set}} from uv's annotated output ('# via' comments)."""
    entries: dict[str, dict] = {}
    current = None
    in_via = False
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==", line)
        if match:
            name = match.group(1).lower()
            # Several blocks of one name (different markers) share one entry.
            current = entries.setdefault(name, {"block": [], "parents": set()})
            current["block"].append(line)
            in_via = False
            continue
        if current is None:
            continue
        current["block"].append(line)
        stripped = line.strip()
        if stripped.startswith("# via "):
            current["parents"].add(stripped[len("# via "):].strip().lower())
        elif stripped == "# via":
            in_via = True
        elif in_via and stripped.startswith("#   "):
            current["parents"].add(stripped[len("#   "):].strip().lower())
    return entries


def reachable(entries: dict[str, dict], stop: set[str]) -> set[str]:
    """Packages reachable from the project's own requirements without passing through `stop`."""
    children: dict[str, set[str]] = {}
    for name, entry in entries.items():
        for parent in entry["parents"]:
            children.setdefault(parent.split(" ")[0] if parent != ROOT_LABEL else ROOT_LABEL, set()).add(name)
    seen, todo = set(), [ROOT_LABEL]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in seen and child not in stop:
                seen.add(child)
                todo.append(child)
    return seen


def write_lock(path: Path, text: str, keep: set[str], note: str) -> None:
    entries = parse_lock(text)
    header = [line for line in text.splitlines() if not re.match(r"^[A-Za-z0-9_.\-]+==", line)][:2]
    body = [line for name in sorted(keep) for line in entries[name]["block"]]
    path.write_text("\n".join([*header, f"# {note}", INPUTS_LINE + inputs_digest(), *body]) + "\n")


def uv_compile(extras: list[str], output: Path, upgrade: bool, constraints: list[Path]) -> str:
    """Run uv and return its output (uv reads `output`'s pins as preferences unless upgrading)."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        sys.exit("tools/lock.py: uv is not installed; run `make setup` (the lock installs it) or `pip install uv`")
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    with tempfile.TemporaryDirectory() as tmp:
        build_in = Path(tmp) / "build.in"
        build_in.write_text("\n".join(build) + "\n")   # the editable install runs without build isolation
        scratch = Path(tmp) / output.name
        if output.exists() and not upgrade:
            shutil.copy(output, scratch)
        cmd = [uv, "pip", "compile", "pyproject.toml", str(build_in), *[f"--extra={e}" for e in extras],
               "--universal", "--fork-strategy", "fewest", "--python-version", PYTHON_FLOOR,
               "--generate-hashes", "--no-header", "--quiet", "--index-url", "https://pypi.org/simple",
               "-c", "constraints-cpu.txt", *[x for c in constraints for x in ("-c", str(c))], "-o", str(scratch)]
        if upgrade:
            cmd.append("--upgrade")
        subprocess.run(cmd, cwd=ROOT, check=True)
        text = scratch.read_text()
    command = "tools/lock.py" + (" --upgrade" if upgrade else "")
    return f"# Written by {command} (uv pip compile, one version a package for Python >= {PYTHON_FLOOR}, Linux and macOS).\n" \
           f"# Never edit by hand: change pyproject.toml and run `make lock`, or `make upgrade` for newer releases.\n" + text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upgrade", action="store_true", help="take the newest releases (else keep the pins that fit)")
    parser.add_argument("--hold", type=Path, action="append", default=[],
                        help="a constraints file of pins to hold for this resolution (repeatable)")
    args = parser.parse_args()
    LOCK_DIR.mkdir(exist_ok=True)

    full = uv_compile(["lab", "dev", "site", "hub"], FULL, args.upgrade, [p.resolve() for p in args.hold])
    entries = parse_lock(full)
    dropped = {n for n in entries if CUDA_ONLY.match(n)}
    bad = {n: e["parents"] for n in dropped for e in [entries[n]] if not e["parents"] <= dropped | {"torch"}}
    if bad:
        sys.exit(f"tools/lock.py: these CUDA-named packages are needed by more than torch, so cannot be dropped: {bad}")
    keep = set(entries) - dropped - {"torch"}
    write_lock(FULL, full, keep, "Everything set-up installs (.venv: make lab, make test, CI). torch: constraints-cpu.txt, CPU build.")

    # The run-time closure, at the versions of full.txt (its pins are the constraints).
    runtime = uv_compile([], RUNTIME, False, [FULL])
    entries = parse_lock(runtime)
    keep = {n for n in reachable(entries, stop=HOST_KERNEL) if n != "torch" and not CUDA_ONLY.match(n)}
    write_lock(RUNTIME, runtime, keep, "The notebooks' run-time packages for a host with its own Jupyter kernel "
               "(Binder, Colab): no torch, no IPython/ipykernel.")
    print(f"tools/lock.py: {FULL.relative_to(ROOT)} ({len(parse_lock(FULL.read_text()))} packages), "
          f"{RUNTIME.relative_to(ROOT)} ({len(parse_lock(RUNTIME.read_text()))} packages)")


if __name__ == "__main__":
    main()
