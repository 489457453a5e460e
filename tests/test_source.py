"""The one data setting: OCTLIB_DATA or the `data` argument."""

import pytest

from octlib.config import get_profile
from octlib.data import OCTDataError, resolve_source


def test_argument_beats_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OCTLIB_DATA", "octmnist-128")
    assert resolve_source().size == 128 and resolve_source().origin == "OCTLIB_DATA"
    src = resolve_source(tmp_path)
    assert src.kind == "folder" and src.path == tmp_path.resolve() and src.origin == "argument"


@pytest.mark.parametrize("spec,size", [("octmnist", 28), ("OCTMNIST-64", 64), ("octmnist_224", 224)])
def test_octmnist_names(spec, size):
    src = resolve_source(spec)
    assert (src.kind, src.size) == ("octmnist", size)


def test_default_is_octmnist_at_profile_size(monkeypatch):
    monkeypatch.delenv("OCTLIB_DATA", raising=False)
    assert resolve_source(profile=get_profile("full")).size == 128
    assert resolve_source(profile=get_profile("quick")).spec == "octmnist-64"


def test_bad_settings_name_the_setting_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("OCTLIB_DATA", str(tmp_path / "missing"))
    with pytest.raises(OCTDataError, match="OCTLIB_DATA=") as err:
        resolve_source()
    assert "oct2017-sample" in str(err.value)
    with pytest.raises(OCTDataError, match="sizes are"):
        resolve_source("octmnist-100")
