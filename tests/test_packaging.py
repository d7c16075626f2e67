"""One list of dependencies (pyproject.toml), and every other way in agrees with it.

- environment.yml (conda) asks conda-forge for pyproject's run-time packages and its `lab` extra,
  same names and ranges, and installs the course and its `dev` extra with pip;
- binder/ (repo2docker) installs the course at the lock's run-time versions (lock/runtime.txt), with
  PyTorch's CPU index (tests/test_lock.py checks the lock itself);
- set-up pins one exact torch (constraints-cpu.txt), takes it from the CPU index on Linux, and installs the
  rest from lock/full.txt;
- the repository URL is written once (pyproject's [project.urls]): the README's Binder and Colab
  badges and every notebook's install cell use it.
"""
import json
import re
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from packaging.specifiers import SpecifierSet

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11+")
ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CONDA_TO_PIP = {"pytorch-cpu": "torch", "pytorch": "torch"}
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
FIRST_NOTEBOOK = "notebooks/00_start_here.ipynb"


def _split(requirement: str) -> tuple[str, str]:
    """(normalised name, version range); a platform marker (after ';') is not part of the range."""
    name, spec = re.match(r"\s*([A-Za-z0-9_.\-]+)\s*([^;]*)", requirement).groups()
    return name.lower().replace("_", "-"), spec.replace(" ", "")


def pip_requirements(*groups: str) -> dict[str, str]:
    """pyproject's requirements: '' is `dependencies`, other names are extras."""
    reqs = [r for g in groups for r in (PROJECT["dependencies"] if g == "" else PROJECT["optional-dependencies"][g])]
    return dict(_split(r) for r in reqs)


def _environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def conda_requirements() -> dict[str, str]:
    out = {}
    for dep in _environment()["dependencies"]:
        if isinstance(dep, str):
            name, spec = _split(dep)
            if name not in ("python", "pip"):
                out[CONDA_TO_PIP.get(name, name)] = spec
    return out


def test_dependencies_are_the_run_time_packages_only():
    runtime = pip_requirements("")
    assert "torch" in runtime and "jupyterlab" not in runtime
    assert not set(runtime) & set(pip_requirements("dev")), "a test tool among the run-time dependencies"
    assert set(pip_requirements("lab")) == {"jupyterlab", "jupyterlab-rise"}


def test_conda_asks_for_pyprojects_run_time_packages_and_lab():
    assert conda_requirements() == pip_requirements("", "lab")


def test_conda_installs_the_course_and_its_dev_tools_with_pip():
    env = _environment()
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section == ["-e .[dev,site]"], "the test tools and the site's builder (its test runs in `make test`)"
    # conda-forge's `playwright` is the Node.js CLI: no dev tool may be asked of conda.
    assert not set(conda_requirements()) & set(pip_requirements("dev", "site"))
    assert "pytorch-cpu" in {_split(d)[0] for d in env["dependencies"] if isinstance(d, str)}


def test_setup_pins_one_exact_torch_within_pyprojects_range():
    pins = re.findall(r"^torch==(\S+)\s*$", (ROOT / "constraints-cpu.txt").read_text(), re.M)
    assert len(pins) == 1 and re.fullmatch(r"\d+(\.\d+){2}", pins[0]), "constraints-cpu.txt must pin torch==X.Y.Z"
    torch_range = pip_requirements("")["torch"]
    assert not torch_range.startswith("==")
    assert pins[0] in SpecifierSet(torch_range)
    assert f"{pins[0]}+cpu" in SpecifierSet(f"=={pins[0]}"), "the CPU index's local version must meet the pin"


def test_setup_takes_torch_from_the_cpu_index_on_linux():
    script = (ROOT / "tools" / "install_locked.sh").read_text()
    assert f"TORCH_CPU_INDEX=${{TORCH_CPU_INDEX:-{TORCH_CPU_INDEX}}}" in script
    linux = script.split('if [ "$(uname -s)" = Linux ]; then', 1)[1].split("\nelse\n", 1)[0]
    assert 'pip_install --no-deps --index-url "$TORCH_CPU_INDEX" "$torch_pin"' in linux
    assert "unreachable" in linux
    assert 'pip_install --require-hashes --no-deps -r "$LOCK"' in script      # the lock, hashes checked
    assert "torch.version.cuda is not None" in script                          # set-up checks what it installed
    setup = (ROOT / "tools" / "setup_env.sh").read_text()
    assert 'bash tools/install_locked.sh "$VENV/bin/python" lock/full.txt --editable' in setup
    # The stamp's inputs: a change to any of them rebuilds .venv.
    assert "cat pyproject.toml constraints-cpu.txt lock/full.txt tools/setup_env.sh tools/install_locked.sh | sha256sum" in setup


def test_binder_installs_the_runtime_lock():
    """repo2docker reads binder/ only; postBuild installs lock/runtime.txt (no test tools, no host kernel)."""
    requirements = [line for line in (ROOT / "binder" / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    assert requirements == [], "binder/requirements.txt installs nothing: pip would resolve what the lock leaves out"
    post = (ROOT / "binder" / "postBuild").read_text()
    assert "bash tools/install_locked.sh python lock/runtime.txt --no-check" in post
    assert "python -m lora_edu.core.smollm2" in post
    runtime = (ROOT / "lock" / "runtime.txt").read_text()
    dev_tools = {"pytest", "nbgrader", "playwright", "nbval", "hypothesis", "ruff", "uv", "nbclient"}  # pyyaml: transformers needs it
    assert not any(re.search(rf"^{re.escape(tool)}==", runtime, re.M) for tool in dev_tools)
    python = (ROOT / "binder" / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.\d+", python) and python.split("-")[1] in SpecifierSet(PROJECT["requires-python"])
    assert python.split("-")[1] in SpecifierSet(">=3.11"), "the lock is for Python 3.11 and newer"


def _owner_and_name() -> str:
    url = PROJECT["urls"]["Repository"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url), url
    return url.removeprefix("https://github.com/")


def test_readme_badges_open_notebook_00_at_pyprojects_repository():
    readme = (ROOT / "README.md").read_text()
    repo = _owner_and_name()
    assert (ROOT / FIRST_NOTEBOOK).exists()
    binder = f"https://mybinder.org/v2/gh/{repo}/HEAD?labpath={quote(FIRST_NOTEBOOK, safe='')}"
    colab = f"https://colab.research.google.com/github/{repo}/blob/main/{FIRST_NOTEBOOK}"
    assert f"({binder})" in readme, f"README needs a Binder badge linking to {binder}"
    assert f"({colab})" in readme, f"README needs a Colab badge linking to {colab}"
    # No other address of the course's repository in the README.
    for found in re.findall(r"github\.com/([\w.-]+/[\w.-]+)", readme):
        if found.split("/")[0] == repo.split("/")[0]:
            assert found == repo


@pytest.mark.parametrize("notebook", sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_notebook_install_cell_uses_pyprojects_repository_and_the_lock(notebook):
    cells = json.loads((ROOT / "notebooks" / notebook).read_text())["cells"]
    first_code = "".join(next(c for c in cells if c["cell_type"] == "code")["source"])
    repo = PROJECT["urls"]["Repository"]
    raw = repo.replace("https://github.com/", "https://raw.githubusercontent.com/") + "/main/lock/runtime.txt"
    assert "except ModuleNotFoundError:" in first_code, first_code
    assert f"%pip install --quiet --no-deps --require-hashes -r {raw}\n" in first_code, first_code
    assert f'%pip install --quiet --no-deps "{PROJECT["name"]} @ git+{repo}"' in first_code, first_code


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make lab" in readme
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)
