"""The series registry: the one list of notebook names that the runner, compare and library messages use."""

import re
from pathlib import Path

import pytest

from octlib import artifacts, compare, series
from octlib.config import project_root


def test_registry_lists_exactly_the_notebooks_in_run_order():
    on_disk = sorted(p.stem for p in (project_root() / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert list(series.NOTEBOOKS) == on_disk
    series.check_folder(project_root() / "notebooks")


def test_check_folder_names_the_unlisted_and_the_missing_notebook(tmp_path):
    for name in list(series.NOTEBOOKS)[1:]:
        (tmp_path / f"{name}.ipynb").write_text("{}")
    (tmp_path / "99_new_study.ipynb").write_text("{}")
    with pytest.raises(FileNotFoundError) as err:
        series.check_folder(tmp_path)
    message = str(err.value)
    assert "99_new_study.ipynb is in" in message and "add one line" in message
    assert f"{next(iter(series.NOTEBOOKS))}.ipynb is listed" in message


def test_every_trained_kind_names_a_registered_notebook():
    for kind in (*artifacts.DEFENCE_KINDS, "victim", "seed", "shift"):
        assert series.trainer(kind).removeprefix("notebooks/").removesuffix(".ipynb") in series.NOTEBOOKS
    with pytest.raises(KeyError, match="use one of"):
        series.trainer("dropout")
    with pytest.raises(KeyError, match="not a notebook of the series"):
        series.notebook("12_missing")


def test_compare_reads_the_records_the_registry_says_are_written():
    assert compare.PRODUCERS == {n: f"{n}.ipynb" for n, (_, writes) in series.NOTEBOOKS.items() if writes}
    assert "90_comparison" not in compare.PRODUCERS and "20_attack_fgsm" in compare.PRODUCERS


def test_no_library_message_names_a_notebook_file_outside_the_registry():
    """Notebook names live in octlib/series.py only: a literal ``NN_name.ipynb`` or ``notebooks/NN_`` elsewhere in
    octlib's code (docstrings and comments aside) would go stale when the series changes."""
    offenders = []
    for path in sorted((project_root() / "octlib").rglob("*.py")):
        if path.name == "series.py":
            continue
        for k, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\b\d\d_[a-z_]+\.ipynb|notebooks/\d\d_", code) and '"""' not in code:
                offenders.append(f"{path.name}:{k}: {line.strip()}")
    assert offenders == []


def test_a_missing_defence_model_names_the_notebook_that_trains_it(tmp_path, monkeypatch):
    """``retrain="never"`` on a model that is not there points at its own notebook, not the victim's."""
    class Splits:
        info = {"policy": "official", "fingerprint": "f"}
    monkeypatch.setattr(artifacts, "artifact_key", lambda *a, **k: ("k" * 12, {}))
    with pytest.raises(artifacts.ArtifactError, match=r"notebooks/45_defence_adversarial_training\.ipynb"):
        artifacts.get_or_train(Splits(), None, name="cnn-official-pgdat4", retrain="never", root=tmp_path,
                               kind="adversarial")
