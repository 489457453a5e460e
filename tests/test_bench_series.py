"""benchmarks/bench_series.py: a later machine's store keeps the earlier record's cached training for the notebooks
not rerun since, and only for those."""

import importlib.util

from octlib.config import project_root


def _bench(monkeypatch):
    folder = project_root() / "benchmarks"
    monkeypatch.syspath_prepend(str(folder))  # the benchmark imports its sibling _common
    spec = importlib.util.spec_from_file_location("bench_series", folder / "bench_series.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_carry_cached_keeps_the_previous_record_only_for_notebooks_not_rerun(monkeypatch):
    bench = _bench(monkeypatch)
    previous = {"runs": [{"manifest": "figures/manifests/10_train_cnn.json", "started": "T1"},
                         {"manifest": "figures/manifests/43_defence_gaussian_noise.json", "started": "T2"}],
                "cached_training_seconds": {"10_train_cnn.ipynb": {"cnn-a": 1028.0},
                                            "43_defence_gaussian_noise.ipynb": {"cnn-old": 9.0}}}
    runs = [{"manifest": "figures/manifests/10_train_cnn.json", "started": "T1"},  # not rerun
            {"manifest": "figures/manifests/43_defence_gaussian_noise.json", "started": "T3"}]  # rerun here
    cached = {"10_train_cnn.ipynb": {}, "43_defence_gaussian_noise.ipynb": {"cnn-noise": 851.0}}
    unknown = {"cnn-ls": "10_train_cnn.ipynb", "cnn-x": "43_defence_gaussian_noise.ipynb"}
    cached, unknown, carried = bench.carry_cached(previous, runs, cached, unknown)
    assert cached == {"10_train_cnn.ipynb": {"cnn-a": 1028.0}, "43_defence_gaussian_noise.ipynb": {"cnn-noise": 851.0}}
    assert unknown == {"cnn-x": "43_defence_gaussian_noise.ipynb"} and carried == ["10_train_cnn.ipynb"]
