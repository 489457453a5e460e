"""Colab from one setting: `python -m octlib colab --repo owner/name` repoints pyproject, badges and install cells."""

import json
import shutil
from pathlib import Path

import pytest

from octlib.__main__ import main
from octlib.colab import repository, set_repository

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def copy(tmp_path):
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks")
    return tmp_path


def test_one_command_repoints_every_badge_and_install_cell(copy):
    old = repository(copy)
    changed = set_repository("someone/fork-of-it", copy)
    assert len(changed) == 1 + len(list((copy / "notebooks").glob("*.ipynb")))
    assert repository(copy) == "someone/fork-of-it"
    for path in (copy / "notebooks").glob("*.ipynb"):
        cells = json.loads(path.read_text())["cells"]
        badge, install = "".join(cells[0]["source"]), "".join(cells[1]["source"])
        assert f"colab.research.google.com/github/someone/fork-of-it/blob/main/notebooks/{path.name}" in badge
        assert "git+https://github.com/someone/fork-of-it.git" in install and old not in badge + install
        rest = json.loads((REPO / "notebooks" / path.name).read_text())["cells"][2:]
        assert cells[2:] == rest  # nothing else touched
    assert set_repository("someone/fork-of-it", copy) == []  # already there
    set_repository(old, copy)  # and back, byte for byte
    for path in (copy / "notebooks").glob("*.ipynb"):
        assert path.read_bytes() == (REPO / "notebooks" / path.name).read_bytes()
    assert (copy / "pyproject.toml").read_bytes() == (REPO / "pyproject.toml").read_bytes()


def test_a_bad_slug_is_refused_by_name(copy, monkeypatch, capsys):
    with pytest.raises(ValueError, match="owner/name"):
        set_repository("https://github.com/a/b", copy)
    monkeypatch.chdir(copy)
    monkeypatch.setattr("octlib.colab.project_root", lambda: copy)
    assert main(["colab", "--repo", "not a slug"]) == 2
    assert "`--repo` must be a GitHub owner/name" in capsys.readouterr().err
    assert main(["colab", "--repo", "me/mine"]) == 0 and repository(copy) == "me/mine"
