"""The Colab path: notebook 00 opened where the course is not installed installs it itself.

We build a wheel of this checkout, make a clean virtual environment in a temporary folder (no
checkout around it, no PYTHONPATH, nothing but ipykernel and torch installed: Colab brings both),
copy notebook 00 there alone, point its install cell at the wheel instead of the git URL and at
this checkout's lock/runtime.txt instead of its raw address on the code host (the two differences
from Colab, which fetches them), and execute it top to bottom with the clean environment's Python
as the kernel. The first cell must install the lock (hashes checked) and `lora-edu` into that
environment, and the rest of the notebook must run; afterwards every package of the lock is at its
pinned version.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11+")
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "00_start_here.ipynb"
CONSTRAINTS = ROOT / "constraints-cpu.txt"
RUNTIME_LOCK = ROOT / "lock" / "runtime.txt"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
REPO_URL = PROJECT["urls"]["Repository"]
INSTALL_TARGET = f"lora-edu @ git+{REPO_URL}"


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _clean_env() -> dict[str, str]:
    """The machine's environment without anything that would point Python at this checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _cpu_index_reachable() -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(f"{TORCH_CPU_INDEX}/torch/", method="HEAD"), timeout=5)
        return True
    except OSError:
        return False


def _pinned_torch() -> str:
    return re.search(r"^torch==(\S+)$", CONSTRAINTS.read_text(), re.M).group(1)


def _torch_source_env(python: Path, cwd: Path, env: dict[str, str]) -> dict[str, str]:
    """Where pip may take a CPU torch: pip's own configuration (find-links), else PyTorch's CPU
    index; skip the test where neither has one rather than download CUDA torch."""
    report = subprocess.run(
        [str(python), "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index", "--ignore-installed",
         "--quiet", "--report", "-", f"torch=={_pinned_torch()}"],
        cwd=cwd, env=env, capture_output=True, text=True)
    if report.returncode == 0 and "+cpu" in report.stdout:
        return {}
    if _cpu_index_reachable():
        configured = subprocess.run([str(python), "-m", "pip", "config", "get", "global.extra-index-url"],
                                    cwd=cwd, env=env, capture_output=True, text=True).stdout.split()
        extra = env.get("PIP_EXTRA_INDEX_URL", "").split() or configured
        return {"PIP_EXTRA_INDEX_URL": " ".join([*extra, TORCH_CPU_INDEX])}
    pytest.skip(f"no CPU build of torch=={_pinned_torch()} in pip's find-links and {TORCH_CPU_INDEX} unreachable")


@pytest.mark.slow
def test_notebook_00_installs_the_course_into_a_clean_environment(tmp_path):
    started = time.perf_counter()
    env = _clean_env()
    work, venv, wheels = tmp_path / "work", tmp_path / "venv", tmp_path / "wheels"
    work.mkdir()

    # A wheel of this checkout, standing in for the repository that Colab's pip would fetch.
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(ROOT)], work, env)
    (wheel,) = wheels.glob("lora_edu-*.whl")

    # A clean environment with nothing but a kernel and torch (Colab's own); Python's standard venv.
    base_python = getattr(sys, "_base_executable", sys.executable)
    _run([base_python, "-m", "venv", str(venv)], work, env)
    python = venv / "bin" / "python"
    pip_env = {**env, **_torch_source_env(python, work, env)}
    _run([str(python), "-m", "pip", "install", "--quiet", "ipykernel", f"torch=={_pinned_torch()}", "-c", str(CONSTRAINTS)],
         work, pip_env)
    probe = subprocess.run([str(python), "-c", "import lora_edu"], cwd=work, env=env, capture_output=True, text=True)
    assert "ModuleNotFoundError" in probe.stderr, "the clean environment must not see the course before the notebook runs"

    prepared = time.perf_counter()

    # Notebook 00 alone, its install cell pointed at the wheel.
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert INSTALL_TARGET in first_code.source, \
        f"notebook 00's first code cell should install {INSTALL_TARGET!r}:\n{first_code.source}"
    raw_lock = REPO_URL.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/lock/runtime.txt"
    assert raw_lock in first_code.source, first_code.source
    first_code.source = first_code.source.replace(f"git+{REPO_URL}", wheel.as_uri()).replace(raw_lock, str(RUNTIME_LOCK))
    nb_path = work / NOTEBOOK.name
    nbformat.write(nb, nb_path)

    # The clean environment's Python as the kernel, in the temporary folder.
    kernel_env = {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    spec_dir = tmp_path / "kernels" / "clean-venv"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "clean venv", "language": "python", "env": kernel_env,
    }))
    km = KernelManager(kernel_name="clean-venv",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(spec_dir.parent)]))
    client = nbclient.NotebookClient(nb, km=km, timeout=900, resources={"metadata": {"path": str(work)}})
    client.execute(env=env)   # raises CellExecutionError, with the cell and traceback, on any error
    executed = time.perf_counter()

    # The cell installed the course (and a CPU torch) into the clean environment.
    shown = _run([str(python), "-c",
                  "import importlib.metadata as md, lora_edu, torch; "
                  "print(md.version('lora-edu')); print(lora_edu.__file__); print(torch.version.cuda)"],
                 work, env).split("\n")
    assert shown[0] == PROJECT["version"]
    assert Path(shown[1]).is_relative_to(venv), f"lora_edu imported from {shown[1]}, not from the clean venv"
    assert shown[2] == "None", "the notebook's install pulled a CUDA build of torch"
    # Every package of the runtime lock that applies here is now at its pinned version.
    from packaging.markers import Marker
    pinned = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]*))?", RUNTIME_LOCK.read_text(), re.M)
    wanted = {name: version for name, version, marker in pinned if not marker.strip() or Marker(marker.strip()).evaluate()}
    installed = json.loads(_run([str(python), "-c", "import importlib.metadata as md, json, sys; "
                                 "print(json.dumps({n: md.version(n) for n in sys.argv[1:]}))", *wanted], work, env))
    assert installed == wanted
    print(f"\nColab path: wheel and clean venv {prepared - started:.0f} s, notebook 00 with its install "
          f"{executed - prepared:.0f} s, in all {time.perf_counter() - started:.0f} s")
