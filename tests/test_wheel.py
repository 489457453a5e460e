"""The Colab install path, proven here: build the wheel and sdist, install the wheel (not editable) into a fresh
virtual environment with no checkout on its path, through the notebooks' own install cell (its git URL pointed at
the wheel), and run notebooks 00 and 20 (quick) from a folder outside the repository.

The fresh environment sees this environment's third-party packages through a path entry (so no 2 GB reinstall and
no network for them) but not its editable octlib: the `octlib` it imports must be the wheel's copy. pip runs with
`PIP_NO_INDEX=1`, so the install cell can only succeed if the wheel's requirements are already satisfied.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.sample]


def _run(cmd, **kw):
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--wheel", "--sdist", "--outdir", out, REPO], timeout=600)
    return out


def test_wheel_and_sdist_ship_the_package_and_nothing_of_the_checkout(dist):
    wheel = next(dist.glob("octlib-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "octlib/__init__.py" in names and "octlib/data/folder.py" in names
    assert not [n for n in names if n.startswith(("notebooks/", "tests/", "figures/", "benchmarks/"))]
    sources = [p.relative_to(REPO / "octlib").as_posix() for p in (REPO / "octlib").rglob("*.py")]
    assert {f"octlib/{s}" for s in sources} <= set(names), "a module of octlib/ is missing from the wheel"
    assert "octlib/templates/report.html.j2" in names  # package data: the report's template
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert requires and not [r for r in requires if "==" in r], "the wheel must declare ranges, not exact pins"
    assert next(dist.glob("octlib-*.tar.gz"))


def test_install_cell_installs_the_wheel_and_notebooks_00_and_20_run_outside_the_repo(dist, tmp_path, sample_root):
    wheel = next(dist.glob("octlib-*.whl"))
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "outer-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    # the notebooks' install cell, as Colab would run it, with the repository URL pointed at the wheel
    install = nbformat.read(REPO / "notebooks" / "00_data_exploration.ipynb", as_version=4).cells[1].source
    url = re.search(r"git\+(https://\S+?\.git)", install)
    assert url, install
    cell = install.replace(f"git+{url.group(1)}", wheel.as_uri())
    runner = ("import sys, types; sys.modules['google.colab'] = types.ModuleType('google.colab')\n"
              "from IPython.core.interactiveshell import InteractiveShell\n"
              f"shell = InteractiveShell.instance(); result = shell.run_cell({cell!r})\n"
              "sys.exit(0 if result.success else 1)\n")
    work = tmp_path / "outside"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCTLIB_", "PYTHONPATH", "VIRTUAL_ENV"))}
    env.update({"PIP_NO_INDEX": "1", "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"})
    _run([python, "-c", runner], cwd=work, env=env, timeout=600)
    shown = _run([python, "-m", "pip", "show", "-f", "octlib"], cwd=work, env=env).stdout
    assert f"Location: {site}" in shown and "Editable project location" not in shown

    # the other path: no public repository, the wheel uploaded to the session (Colab's working folder); the cell
    # runs unchanged, and with no network (PIP_NO_INDEX, no git server) only the uploaded wheel can install it
    _run([python, "-m", "pip", "uninstall", "-y", "-q", "octlib"], cwd=work, env=env)
    shutil.copy(wheel, work)
    unchanged = runner.replace(repr(cell), repr(install))
    _run([python, "-c", unchanged], cwd=work, env=env, timeout=600)
    (work / wheel.name).unlink()
    shown = _run([python, "-m", "pip", "show", "-f", "octlib"], cwd=work, env=env).stdout
    assert f"Location: {site}" in shown and "Editable project location" not in shown

    where = _run([python, "-c", "import octlib, octlib.config as c; print(octlib.__file__); "
                  "print(c.project_root())"], cwd=work, env=env).stdout.split()
    assert Path(where[0]).is_relative_to(site) and Path(where[1]) == work.resolve()

    _run([python, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3"], env=env)
    kernel = json.loads((venv / "share" / "jupyter" / "kernels" / "python3" / "kernel.json").read_text())
    assert Path(kernel["argv"][0]).parent == python.parent  # the notebooks run on the fresh environment
    env.update({"JUPYTER_PATH": str(venv / "share" / "jupyter"), "OCTLIB_DATA": str(sample_root),
                "OCTLIB_PROFILE": "quick", "TF_CPP_MIN_LOG_LEVEL": "2"})
    for name in ("00_data_exploration", "20_attack_fgsm"):
        shutil.copy(REPO / "notebooks" / f"{name}.ipynb", work)
        _run([python, "-m", "papermill", f"{name}.ipynb", f"{name}.out.ipynb", "-k", "python3",
              "--no-progress-bar"], cwd=work, env=env, timeout=900)
        executed = json.loads((work / f"{name}.out.ipynb").read_text())
        errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors
    # everything the notebooks wrote is under the outside folder, in the default layout of an installed package
    assert (work / "results" / "20_attack_fgsm.json").is_file()
    assert list((work / "artifacts").glob("cnn-*/model.keras"))
    assert list((work / "runs" / "interactive" / "figures").glob("20_*.png"))
