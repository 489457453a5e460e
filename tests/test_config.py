import pytest

from octlib.config import get_profile, project_root, set_seed


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("OCTLIB_PROFILE", "full")
    assert get_profile().name == "full" and get_profile("quick").name == "quick"


def test_unknown_profile_names_the_variable(monkeypatch):
    monkeypatch.setenv("OCTLIB_PROFILE", "fast")
    with pytest.raises(ValueError, match="OCTLIB_PROFILE"):
        get_profile()


def test_overrides_are_checked():
    assert get_profile("quick", image_size=32).image_size == 32
    with pytest.raises(ValueError, match="Unknown profile setting"):
        get_profile("quick", imagesize=32)


def test_project_root_is_the_checkout():
    assert (project_root() / "pyproject.toml").is_file()


def test_set_seed_validates():
    with pytest.raises(ValueError, match="`seed`"):
        set_seed(-1)
