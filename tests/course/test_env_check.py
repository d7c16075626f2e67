"""The environment check reads the dependency list from the package metadata (pyproject's, the one list)."""
import pytest

from lora_edu.course import env_check

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11+")


def pyproject_dependencies(root):
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    return [env_check.requirement_name(dep) for dep in project["dependencies"]]


def test_checks_exactly_pyprojects_runtime_dependencies(pytestconfig):
    names = pyproject_dependencies(pytestconfig.rootpath)
    assert sorted(env_check.runtime_requirements()) == sorted(names)
    assert sorted(env_check.PURPOSE) == sorted(names), "every dependency needs a one-line purpose for learners"


def test_reports_a_missing_package_with_the_fix(monkeypatch, capsys):
    monkeypatch.setattr(env_check, "runtime_requirements", lambda: ["numpy", "no-such-package-xyz"])
    assert env_check.check_environment() is False
    out = capsys.readouterr().out
    assert "no-such-package-xyz MISSING" in out and "pip install no-such-package-xyz" in out and "make lab" in out


def test_all_present_here():
    assert env_check.check_environment(verbose=False)


def test_a_requirement_whose_marker_excludes_this_machine_is_not_checked():
    assert env_check._applies_here("numpy>=1.26")
    assert env_check._applies_here("bitsandbytes>=0.49; python_version >= '3'")
    assert not env_check._applies_here("bitsandbytes>=0.49; python_version < '3'")
