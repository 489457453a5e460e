"""python -m octlib: argument handling and early failure (the notebooks themselves run under nbval)."""

import json

import pytest

from octlib.__main__ import main
from octlib.data import OCTDataError
from octlib.runner import find_notebooks, run_series


def test_notebooks_are_found_in_order():
    names = [p.name for p in find_notebooks()]
    assert names == sorted(names) and names[0].startswith("00_")
    assert [p.name for p in find_notebooks(["10"])] == ["10_train_cnn.ipynb"]
    with pytest.raises(FileNotFoundError, match="No notebooks matching"):
        find_notebooks(["99"])


def test_bad_data_stops_before_any_notebook_runs(tmp_path):
    with pytest.raises(OCTDataError, match="OCTLIB_DATA|argument"):
        run_series("quick", str(tmp_path / "missing"), out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_data_command_prints_the_split_summary(small_layout, capsys):
    assert main(["data", "--data", str(small_layout), "--profile", "quick", "--policy", "pooled"]) == 0
    out = capsys.readouterr().out
    assert "leakage check" in out and "'ok': True" in out and "train" in out


def _tiny_series(folder):
    """One notebook that writes a figure and a result the way the series does."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "from octlib.plotting import save_fig\nfrom octlib.results import save_results\n"
        "fig, ax = plt.subplots()\nax.plot([0, 1])\nsave_fig(fig, '00_tiny')\nsave_results('00_tiny', {'x': 1})")]
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / "00_tiny.ipynb")
    return folder


@pytest.fixture
def run_env(monkeypatch):
    """run_series sets these for its kernels; put them back afterwards."""
    for var in ("OCTLIB_FIGURES", "OCTLIB_RESULTS", "OCTLIB_PROFILE", "OCTLIB_SPLIT_POLICY", "OCTLIB_DATA"):
        monkeypatch.setenv(var, "unset")  # recorded, so that the value run_series sets is undone afterwards
        monkeypatch.delenv(var)


def test_a_plain_run_writes_figures_into_its_own_run_folder(small_layout, tmp_path, run_env, monkeypatch):
    monkeypatch.setenv("OCTLIB_RESULTS", str(tmp_path / "results"))
    books = _tiny_series(tmp_path / "nbs")
    manifest = run_series("quick", str(small_layout), out_dir=tmp_path / "run", notebooks_dir=books,
                          progress=False, reference_root=tmp_path / "committed")
    assert (tmp_path / "run" / "figures" / "00_tiny.png").is_file()
    assert (tmp_path / "results" / "00_tiny.json").is_file()
    assert not (tmp_path / "committed").exists()
    assert manifest["reference"] is False and manifest["notebooks"][0]["status"] == "ok"


def test_the_reference_run_writes_figures_results_and_one_manifest_per_notebook(small_layout, tmp_path, run_env):
    books = _tiny_series(tmp_path / "nbs")
    ref = tmp_path / "committed"
    run_series("full", str(small_layout), out_dir=tmp_path / "run", notebooks_dir=books, progress=False,
               reference=True, reference_root=ref)
    assert (ref / "00_tiny.png").is_file() and (ref / "results" / "00_tiny.json").is_file()
    one = json.loads((ref / "manifests" / "00_tiny.json").read_text())
    assert one["profile"]["name"] == "full" and one["reference"] is True
    assert one["notebook"]["notebook"] == "00_tiny.ipynb" and one["notebook"]["seconds"] > 0
    assert one["data"]["fingerprint"]
    assert set(one["code"]) == {"commit", "dirty"}  # which code made the figures


def test_relative_folders_name_the_same_place_for_the_runner_and_its_kernels(small_layout, tmp_path, run_env,
                                                                           monkeypatch):
    # the kernels run in the notebooks' folder: a relative reference root or run folder must not land there
    books = _tiny_series(tmp_path / "nbs")
    monkeypatch.chdir(tmp_path)
    run_series("full", str(small_layout), out_dir="run", notebooks_dir=books, progress=False, reference=True,
               reference_root="runs/next")
    assert (tmp_path / "runs" / "next" / "00_tiny.png").is_file()
    assert (tmp_path / "runs" / "next" / "results" / "00_tiny.json").is_file()
    assert (tmp_path / "runs" / "next" / "manifests" / "00_tiny.json").is_file()
    assert not (books / "runs").exists()


def test_code_version_names_the_commit_and_uncommitted_code(tmp_path):
    import shutil
    import subprocess

    from octlib.provenance import code_version

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    assert code_version(tmp_path) == {"commit": None, "dirty": None}  # not a checkout: said so, no error
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    (tmp_path / "octlib").mkdir()
    (tmp_path / "octlib" / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert code_version(tmp_path) == {"commit": head, "dirty": False}
    (tmp_path / "figures").mkdir()  # what a run writes is not the code
    (tmp_path / "figures" / "f.png").write_text("png")
    assert code_version(tmp_path)["dirty"] is False
    (tmp_path / "octlib" / "a.py").write_text("x = 2\n")
    assert code_version(tmp_path) == {"commit": head, "dirty": True}


def test_the_reference_run_refuses_the_quick_profile(tmp_path, run_env):
    with pytest.raises(ValueError, match="full profile only"):
        run_series("quick", str(tmp_path / "missing"), out_dir=tmp_path / "run", reference=True)
    assert not (tmp_path / "run").exists()


def test_a_notebook_opened_by_hand_never_writes_the_committed_figures(monkeypatch):
    from octlib.config import figures_dir, reference_dir

    monkeypatch.delenv("OCTLIB_FIGURES", raising=False)
    assert figures_dir() != reference_dir() and figures_dir().parts[-3:] == ("runs", "interactive", "figures")


def test_cli_prints_bad_settings_and_data_as_messages_without_a_traceback(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "missing"
    assert main(["run", "--profile", "quick", "--data", str(missing), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(missing) in err and "Traceback" not in err and "--debug" in err
    assert not (tmp_path / "run").exists()
    # an unknown profile from the environment, and a reference run in the quick profile: one message each
    monkeypatch.setenv("OCTLIB_PROFILE", "fast")
    assert main(["data", "--data", str(missing)]) == 2
    assert "Unknown profile 'fast'" in capsys.readouterr().err
    monkeypatch.delenv("OCTLIB_PROFILE")
    assert main(["run", "--profile", "quick", "--reference", "--data", str(missing)]) == 2
    assert "full profile only" in capsys.readouterr().err
    assert main(["run", "--profile", "full", "--reference-root", str(tmp_path / "next"), "--data", str(missing)]) == 2
    assert "add --reference" in capsys.readouterr().err and not (tmp_path / "next").exists()
    # --debug shows the error itself
    with pytest.raises(OCTDataError):
        main(["--debug", "run", "--profile", "quick", "--data", str(missing), "--out", str(tmp_path / "run")])
    # --reference-root reaches the runner
    seen = {}
    monkeypatch.setattr("octlib.runner.run_series", lambda *a, **kw: seen.update(kw))
    assert main(["run", "--profile", "full", "--reference", "--reference-root", str(tmp_path / "next")]) == 0
    assert seen["reference"] is True and seen["reference_root"] == tmp_path / "next"


def test_cli_exit_code_and_message_from_a_subprocess(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "octlib", "data", "--data", str(tmp_path / "nowhere")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_a_run_is_quiet_unless_verbose(small_layout, tmp_path):
    """TensorFlow's INFO lines and the kernels' log lines stay out of a run's output; --verbose brings them back."""
    import os
    import subprocess
    import sys

    books = _tiny_series(tmp_path / "nbs")
    nb = books / "00_tiny.ipynb"
    text = nb.read_text().replace("import matplotlib\\n", "import matplotlib\\nimport tensorflow\\n", 1)
    nb.write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",)}
    env.update(OCTLIB_RESULTS=str(tmp_path / "results"), OCTLIB_FIGURES=str(tmp_path / "figs"))
    code = ("import sys; from pathlib import Path; from octlib.runner import run_series; run_series('quick', sys.argv[1], out_dir=sys.argv[2], "
            "notebooks_dir=Path(sys.argv[3]), progress=False, verbose=sys.argv[4] == '1')")
    outputs = {}
    for verbose in ("0", "1"):
        proc = subprocess.run([sys.executable, "-c", code, str(small_layout), str(tmp_path / f"run{verbose}"),
                               str(books), verbose], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs[verbose] = proc.stdout + proc.stderr
    quiet_out, verbose_out = outputs["0"], outputs["1"]
    assert "done in" in quiet_out and "All 1 notebooks ran" in quiet_out
    assert "[IPKernelApp]" not in quiet_out and "I0000" not in quiet_out, quiet_out[-2000:]
    assert "I0000" in verbose_out or "[IPKernelApp]" in verbose_out  # what --verbose brings back
    log = (tmp_path / "run0" / "00_tiny.kernel.log").read_text()  # the quiet run kept it beside the notebook
    assert "I0000" in log or "[IPKernelApp]" in log


def test_each_notebook_records_the_code_it_ran(small_layout, tmp_path, run_env, monkeypatch):
    """A long run outlasts commits and every notebook imports octlib afresh: each notebook's manifest names the code
    as it was when that notebook started, not when the run did."""
    import shutil

    from octlib import runner

    books = _tiny_series(tmp_path / "nbs")
    shutil.copy(books / "00_tiny.ipynb", books / "01_tiny.ipynb")
    commits = iter([f"commit-{k}" for k in range(10)])
    monkeypatch.setattr(runner, "code_version", lambda: {"commit": next(commits), "dirty": False})
    ref = tmp_path / "committed"
    manifest = run_series("full", str(small_layout), out_dir=tmp_path / "run", notebooks_dir=books, progress=False,
                          reference=True, reference_root=ref)
    assert manifest["code"]["commit"] == "commit-0"  # the run's start
    first, second = (json.loads((ref / "manifests" / f"{n}_tiny.json").read_text()) for n in ("00", "01"))
    assert first["code"]["commit"] == "commit-1" and second["code"]["commit"] == "commit-2"
    assert [e["code"]["commit"] for e in manifest["notebooks"]] == ["commit-1", "commit-2"]
