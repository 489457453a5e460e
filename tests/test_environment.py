"""environment.yml, pyproject.toml and constraints.txt must describe the same install: pyproject holds compatible
ranges (a Colab install keeps Colab's numpy, pandas and TensorFlow), constraints.txt the exact set tested here."""

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]


def load():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    return pyproject, env


def constraints() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = Version(version)
    return pins


def requirements(pyproject, extras=True) -> list[Requirement]:
    deps = list(pyproject["project"]["dependencies"])
    if extras:
        deps += [d for extra in pyproject["project"]["optional-dependencies"].values() for d in extra]
    return [Requirement(d) for d in deps]


def test_conda_python_satisfies_requires_python():
    pyproject, env = load()
    conda_python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    version = conda_python.split("=")[1]
    assert Version(version) in Requirement(f"python{pyproject['project']['requires-python']}").specifier


def test_pip_section_installs_the_dev_extra_with_the_constraints():
    pyproject, env = load()
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert pip_section == ["-c constraints.txt", '-e ".[dev]"']
    assert "dev" in pyproject["project"]["optional-dependencies"]
    assert '-c constraints.txt -e ".[dev]"' in (REPO / "Makefile").read_text()


def test_requirements_are_ranges_and_the_constraints_satisfy_them():
    pyproject, _ = load()
    pins = constraints()
    for req in requirements(pyproject):
        if req.name == "octlib":
            continue
        assert not any(s.operator == "==" for s in req.specifier), f"{req} is an exact pin: use a range in " \
            "pyproject.toml and put the exact version in constraints.txt"
        assert any(s.operator == ">=" for s in req.specifier), f"{req} needs a lower bound"
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name == "tensorflow":  # the [gpu] extra; the tested set is tensorflow-cpu
            name = "tensorflow-cpu"
        assert name in pins, f"constraints.txt has no pin for {req.name}"
        assert pins[name] in req.specifier, f"constraints.txt pins {name}=={pins[name]}, outside {req}"


def test_colab_like_versions_are_kept():
    # The releases a 2025 Colab runtime preinstalled (numpy 2.0, pandas 2.2, scikit-learn 1.6, Keras 3.10,
    # TensorFlow 2.19, matplotlib 3.10): installing octlib there must not replace them.
    pyproject, _ = load()
    colab = {"numpy": "2.0.2", "pandas": "2.2.2", "scikit-learn": "1.6.1", "keras": "3.10.0",
             "tensorflow": "2.19.0", "matplotlib": "3.10.0", "scipy": "1.16.1", "pillow": "11.3.0",
             "h5py": "3.14.0", "tqdm": "4.67.1", "statsmodels": "0.14.5", "seaborn": "0.13.2"}
    reqs = {r.name: r for r in requirements(pyproject)}
    reqs["tensorflow"] = next(r for r in requirements(pyproject) if r.name == "tensorflow")
    for name, version in colab.items():
        assert Version(version) in reqs[name].specifier, f"{reqs[name]} would replace Colab's {name} {version}"


def test_no_conda_package_contradicts_a_pin():
    _, env = load()
    pins = constraints()
    for dep in env["dependencies"]:
        if isinstance(dep, str) and "=" in dep:
            name, version = re.split(r"=+", dep, maxsplit=1)
            if name.lower() in pins:
                assert str(pins[name.lower()]) == version, f"environment.yml pins {dep}, constraints {pins[name]}"
