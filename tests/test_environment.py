"""environment.yml and pyproject.toml must describe the same install."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def load():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    return pyproject, env


def test_conda_python_matches_requires_python():
    pyproject, env = load()
    conda_python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    version = conda_python.split("=")[1]
    assert pyproject["project"]["requires-python"] == f">={version},<3.{int(version.split('.')[1]) + 1}"


def test_pip_section_installs_the_dev_extra_of_this_project():
    pyproject, env = load()
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert pip_section == ['-e ".[dev]"'] or pip_section == ["-e .[dev]"]
    assert "dev" in pyproject["project"]["optional-dependencies"]


def test_no_conda_package_contradicts_a_pin():
    pyproject, env = load()
    deps = pyproject["project"]["dependencies"] + [d for extra in pyproject["project"]["optional-dependencies"]
                                                   .values() for d in extra]
    pins = {m[1].lower(): m[2] for d in deps if (m := re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==(\S+)", d))}
    for dep in env["dependencies"]:
        if isinstance(dep, str) and "=" in dep:
            name, version = re.split(r"=+", dep, maxsplit=1)
            if name.lower() in pins:
                assert pins[name.lower()] == version, f"environment.yml pins {dep}, pyproject {pins[name.lower()]}"


def test_every_dependency_is_pinned():
    pyproject, _ = load()
    for dep in pyproject["project"]["dependencies"]:
        assert "==" in dep, f"{dep} is not pinned in pyproject.toml"
