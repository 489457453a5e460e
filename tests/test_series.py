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


def test_records_are_selected_by_role_not_by_a_prefix_of_their_names():
    import pandas as pd

    assert series.named("clinical") == [n for n in series.NOTEBOOKS if n.startswith("5")]
    assert series.role("22_evasion_detectors") == series.role("23_defence_input_transforms") == "defence"
    assert series.role("20_attack_fgsm") == "evasion" and series.role("32_attack_augmented_thieves") == "extraction"
    assert {series.role(n) for n in series.NOTEBOOKS} == set(series.ROLES)
    frame = pd.DataFrame({"result": ["20_attack_fgsm", "50_attack_targeted_referral", "23_defence_input_transforms",
                                     "5_not_a_notebook"]})
    assert compare.of_role(frame, "clinical").tolist() == [False, True, False, False]
    assert compare.of_role(frame, "evasion", "defence").tolist() == [True, False, True, False]
    suite, clinical = compare.split_clinical(frame)
    assert list(clinical["result"]) == ["50_attack_targeted_referral"] and len(suite) == 3
    with pytest.raises(KeyError, match="Unknown role"):
        series.named("attacks")
