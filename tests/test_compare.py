"""The comparison layer reads only the results store: provenance, exports, missing results. (The evasion
comparison built from evaluation records is tested in tests/test_evaluation.py.)"""

import pytest

from octlib import compare
from octlib.results import save_results


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("OCTLIB_RESULTS", str(tmp_path / "results"))
    data = {"fingerprint": "ab" * 32, "source": "sample"}
    for name in ("20_attack_fgsm", "40_defence_class_labels"):
        save_results(name, {"victim": "cnn-a", "records": []}, settings={"profile": "quick"}, data=data)
    return tmp_path


def test_missing_results_are_listed_with_their_notebook(store):
    study, missing = compare.load_study()
    assert set(study) == {"20_attack_fgsm", "40_defence_class_labels"}
    assert ("43_defence_gaussian_noise", "43_defence_gaussian_noise.ipynb") in missing

def test_export_writes_csv_markdown_latex(store, tmp_path):
    import pandas as pd

    df = pd.DataFrame({"defence": ["noise σ=0.1", "a_b & c"], "acc": [0.5, None]})
    paths = compare.export_table(df, "t", tmp_path / "out", caption="ε = 2/255")
    assert [p.suffix for p in paths] == [".csv", ".md", ".tex"]
    assert "| noise σ=0.1 | 0.500 |" in paths[1].read_text() and "| a_b & c | – |" in paths[1].read_text()
    tex = paths[2].read_text()
    assert r"a\_b \& c & --" in tex and r"\toprule" in tex and r"$\varepsilon$" in tex
    assert pd.read_csv(paths[0])["acc"].isna().sum() == 1


def test_provenance_and_consistency_name_what_is_mixed(tmp_path, monkeypatch):
    monkeypatch.setenv("OCTLIB_RESULTS", str(tmp_path))
    data = {"fingerprint": "ab" * 32, "source": "sample"}
    save_results("20_attack_fgsm", {"victim": "cnn-a", "n_attacked": 668}, settings={"profile": "full"}, data=data)
    save_results("30_attack_copycat", {"victim": "cnn-b"}, settings={"profile": "quick"}, data=data)
    save_results("40_defence_class_labels", {"victim": "cnn-b", "n_attacked": 48, "defences": {}},
                 settings={"profile": "quick"}, data=data)
    study, _ = compare.load_study()
    table = compare.provenance(study).set_index("result")
    assert table.loc["20_attack_fgsm", "profile"] == "full" and table.loc["20_attack_fgsm", "n attacked"] == 668
    assert table.loc["30_attack_copycat", "data"] == "ab" * 6
    assert compare.profiles(study) == "full (20); quick (30, 40)"
    notes = compare.consistency(study)
    assert len(notes) == 2
    assert notes[0] == "The results mix profiles: full: 20_attack_fgsm; quick: 30_attack_copycat, " \
                       "40_defence_class_labels."
    assert notes[1].startswith("The results mix victim models: cnn-a: 20_attack_fgsm; cnn-b:")


def test_consistency_names_one_victim_trained_twice(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("OCTLIB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("OCTLIB_ARTIFACTS", str(tmp_path / "artifacts"))
    sidecar = tmp_path / "artifacts" / "cnn-a" / "model.json"
    sidecar.parent.mkdir(parents=True)
    data, settings = {"fingerprint": "ab" * 32}, {"profile": "full"}
    save_results("21_attack_deepfool", {"victim": "cnn-a"}, settings=settings, data=data)  # before the digest
    sidecar.write_text(json.dumps({"weights_sha256": "11" * 32}))
    save_results("20_attack_fgsm", {"victim": "cnn-a"}, settings=settings, data=data)
    save_results("10_train_cnn", {"victim_policy": "pooled", "pooled": {"artifact": "cnn-a"}}, settings=settings,
                 data=data)
    study, _ = compare.load_study()
    assert study["20_attack_fgsm"]["victim_weights"] == study["10_train_cnn"]["victim_weights"] == "11" * 32
    assert compare.consistency(study) == [(
        "Only some results name their victim's weights (10_train_cnn, 20_attack_fgsm); 21_attack_deepfool predate "
        "the weights digest, so the same victim cannot be shown: rerun them on this victim.")]
    sidecar.write_text(json.dumps({"weights_sha256": "22" * 32}))  # retrained under the same name
    save_results("21_attack_deepfool", {"victim": "cnn-a"}, settings=settings, data=data)
    notes = compare.consistency(compare.load_study()[0])
    assert notes == [("The results mix victim weights (the same victim name trained more than once): cnn-a weights "
                      "111111111111: 10_train_cnn, 20_attack_fgsm; cnn-a weights 222222222222: 21_attack_deepfool.")]


def test_consistency_is_quiet_when_everything_matches(store):
    study, _ = compare.load_study()
    assert compare.consistency(study) == []


def test_profile_is_read_from_a_whole_profile_stored_as_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("OCTLIB_RESULTS", str(tmp_path))
    from octlib.config import get_profile

    save_results("10_train_cnn", {"victim_policy": "official"}, settings=get_profile("full"))
    assert compare.provenance(compare.load_study()[0])["profile"].tolist() == ["full"]


def test_the_comparison_refuses_another_profile_or_a_different_victim_in_training(store, tmp_path):
    from octlib.results import ResultsError

    study, _ = compare.load_study()
    compare.require_one_study(study, profile="quick")  # one study: passes
    with pytest.raises(ResultsError, match="Not from the full profile: 20_attack_fgsm, 40_defence_class_labels"):
        compare.require_one_study(study, profile="full")
    data = {"fingerprint": "ab" * 32, "source": "sample"}
    save_results("10_train_cnn", {"victim_policy": "pooled", "pooled": {"artifact": "cnn-other"}},
                 settings={"name": "quick", "image_size": 64}, data=data)
    study, _ = compare.load_study()
    with pytest.raises(ResultsError, match="victim models: cnn-a: 20_attack_fgsm, 40_defence_class_labels; "
                                           "cnn-other: 10_train_cnn"):
        compare.require_one_study(study, profile="quick")


def test_seed_spread_table_reads_notebook_12s_spread(tmp_path, monkeypatch):
    monkeypatch.setenv("OCTLIB_RESULTS", str(tmp_path))
    one = {"mean": 0.9, "sd": 0.01, "min": 0.89, "max": 0.91, "n": 3}
    spread = {"n_scans": 300, "summary": {"clean_accuracy": one, "robust_accuracy": {"0.5": one, "2": one},
                                          "test_accuracy": one},
              "per_seed": {0: {"clean_accuracy": 0.9, "robust_accuracy": {"0.5": 0.5, "2": 0.1}, "test_accuracy": 0.93}}}
    save_results("12_seed_spread", {"victim": "cnn-a", "seed_spread": spread}, settings={"profile": "full"})
    study, _ = compare.load_study()
    table = compare.seed_spread_table(study)
    assert list(table.columns) == ["mean", "sd", "min", "max", "seeds"] and (table["seeds"] == 3).all()
    assert list(table.index) == ["clean accuracy (300 evaluation scans)", "test-split accuracy",
                                 "robust accuracy at 0.5/255 (0.0020), 300 scans",
                                 "robust accuracy at 2/255 (0.0078), 300 scans"]
    assert compare.seed_spread_table({}).empty
    per_seed, _ = compare.seed_spread_tables(spread)
    assert list(per_seed.columns) == ["test-split acc", "clean acc (300 scans)", "robust acc 0.5/255",
                                      "robust acc 2/255"] and per_seed.loc[0, "test-split acc"] == 0.93


def test_smoothing_table_reads_the_l2_rows_at_one_radius():
    import numpy as np
    import pandas as pd

    from octlib import evaluation
    from octlib.compare import smoothing_table

    y = np.array([0, 1, 2, 3])
    scans = evaluation.Scans(np.zeros((4, 8, 8, 1), np.float32), y, np.array(list("abcd")), np.array([1, 1, 2, 3]), 8)
    certified = {"curve": [{"radius": 0.0}, {"radius": 0.25}, {"radius": 0.5}], "pred": [0, 1, 2, 0],
                 "radius": [0.3, 0.6, 0.1, 0.9], "empirical": [{"radius": 0.0}, {"radius": 0.25}],
                 "empirical_correct": [[1, 1, 1, 0], [1, 1, 0, 0]], "n0": 8, "n": 50, "alpha": 0.001}
    frame = pd.DataFrame(evaluation.smoothing_records("rs", certified, scans, cert_radius=0.25))
    table = smoothing_table(frame, 0.25)
    assert list(table["attack"]) == ["certified", "L2 PGD + EOT"] and (table["n"] == 4).all()
    assert list(table["accuracy"]) == [0.5, 0.5] and (table["clean (smoothed) acc"] == 0.75).all()
    assert smoothing_table(frame, 0.5)["attack"].tolist() == ["certified"]  # no empirical check beyond it
    assert smoothing_table(frame, 0.1).empty and list(smoothing_table(frame, 0.1).columns)[0] == "model"


def test_universal_table_gives_accuracy_under_the_perturbation_beside_the_robust_outcome():
    import pandas as pd

    y = [0, 0, 1, 1]
    row = {"model": "undefended", "attack": "UAP · fit on OCT", "norm": "inf", "eps": 16 / 255, "eps_255": 16.0,
           "eps_label": "16/255 (0.0627)", "n": 4, "fooling_rate": 0.5, "y": y,
           "clean_pred": [0, 0, 1, 0],  # scan 3 wrong clean ...
           "pred": [0, 1, 1, 1],  # ... and right under the perturbation, which fooled scan 1
           "robust": [1, 0, 1, 0], "robust_accuracy": 0.5}
    table = compare.clinical_tables(pd.DataFrame([row]), 2)["universal"]
    assert table["accuracy under the perturbation"].tolist() == [0.75]
    assert table["right clean and still right"].tolist() == [0.5]
