"""python -m octlib: argument handling and early failure (the notebooks themselves run under nbval)."""

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
