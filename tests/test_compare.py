"""The comparison layer reads only the results store: rows, summary, heatmap matrices, exports, missing results."""

import numpy as np
import pytest

from octlib import compare
from octlib.results import save_results


def curve(accs, losses, clean=(0.7, 0.9), eps=(1, 2, 4)):
    """Stored per-ε points; drop and increase against ``clean`` (accuracy, loss) on the attacked scans."""
    return [{"eps": e / 255, "eps_255": e, "accuracy": a, "loss": l, "accuracy_drop": clean[0] - a,
             "loss_increase": l - clean[1]} for e, a, l in zip(eps, accs, losses)]


def run(fid, queries=100, attack="copycat"):
    return {"status": "ok", "attack": attack, "queries": queries, "fidelity": {"value": fid}}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("OCTLIB_RESULTS", str(tmp_path / "results"))
    none_ref = {"clean": {"accuracy": {"value": 0.7}, "loss": 0.9},
                "evasion": {"FGSM": curve([0.5, 0.3, 0.2], [1.5, 2.5, 3.0]),
                            "PGD": curve([0.4, 0.1, 0.0], [1.8, 4.0, 6.0])},
                "deepfool": {"accuracy": 0.02}}
    save_results("40_defence_class_labels", {"n_attacked": 64, "defences": {
        "none": {"kind": "output", "clean": {"accuracy": {"value": 0.7}, "loss": 0.9},
                 "evasion": {}, "extraction": [run(0.6), run(0.75, 300)], "label_smoothing_reference": none_ref},
        "label-only": {"kind": "output", "clean": {"accuracy": {"value": 0.7}, "loss": 8.0},
                       "evasion": {"PGD": curve([0.4, 0.1, 0.0], [9, 12, 15], (0.7, 8.0))},
                       "extraction": [run(0.7, 300)]},
        "label smoothing 0.1": {"kind": "training", "clean": {"accuracy": {"value": 0.68}, "loss": 0.8},
                                "evasion": {"PGD": curve([0.5, 0.3, 0.1], [1, 2, 3], (0.68, 0.8)),
                                            "PGD-margin": curve([0.45, 0.15, 0.0], [1, 2.2, 3.5], (0.68, 0.8))},
                                "extraction": []}}}, settings={})
    save_results("41_defence_gaussian_noise", {"n_attacked": 64, "defences": {
        "none": {"kind": "none", "clean": {"accuracy": {"value": 0.7}, "loss": 0.9},
                 "evasion": {"PGD": curve([0.4, 0.1, 0.0], [1.8, 4.0, 6.0])}},
        "inference noise σ=0.12 (EOT)": {
            "kind": "inference noise", "clean": {"accuracy": {"value": 0.6}, "loss": 1.0},
            "evasion": {"PGD": curve([0.55, 0.4, 0.2], [1.1, 1.5, 2.0])},
            "certified": {"curve": [{"radius": 0.0, "certified_accuracy": 0.5},
                                    {"radius": 0.25, "certified_accuracy": 0.3}], "n_scans": 32}}}}, settings={})
    return tmp_path


def test_rows_put_every_defence_on_one_footing(store):
    study, missing = compare.load_study()
    assert ("30_attack_copycat", "30_attack_copycat.ipynb") in missing
    rows = {r["defence"]: r for r in compare.defence_rows(study)}
    assert set(rows) == {"undefended", "label-only", "label smoothing 0.1", "inference noise σ=0.12 (EOT)"}
    assert rows["undefended"]["notebook"] == "40" and rows["undefended"]["deepfool_accuracy"] == 0.02
    assert rows["undefended"]["fidelity"] == 0.75 and rows["undefended"]["fidelity_queries"] == 300


def test_summary_takes_the_strongest_attack(store):
    rows = compare.defence_rows(compare.load_study()[0])
    table = compare.summary_table(rows, 2, 0.25).set_index("defence")
    assert table.loc["label smoothing 0.1", "strongest attack"] == "PGD-margin"
    assert table.loc["label smoothing 0.1", "strongest acc @2/255"] == pytest.approx(0.15)
    assert table.loc["label smoothing 0.1", "accuracy drop"] == pytest.approx(0.68 - 0.15)
    assert table.loc["undefended", "loss increase"] == pytest.approx(4.0 - 0.9)
    assert table.loc["undefended", "clean acc (attacked scans)"] == pytest.approx(0.7)
    assert table.loc["inference noise σ=0.12 (EOT)", "certified acc @L2 0.25"] == 0.3
    drops = compare.drop_matrix(rows, 2)
    assert drops.loc["undefended", "PGD"] == pytest.approx(0.6) and np.isnan(drops.loc["label-only", "FGSM"])
    assert compare.drop_matrix(rows, 2, "loss_increase").loc["label-only", "PGD"] == pytest.approx(4.0)


def test_reading_fills_in_numbers(store):
    study = compare.load_study()[0]
    text = compare.reading(compare.defence_rows(study), study, 2, 0.25)
    assert "from 0.700 to 0.100" in text and "certifies 0.300 of 32 scans" in text
    assert "inference noise σ=0.12 (EOT)" in text  # the most robust at 2/255 (0.4)


def test_export_writes_csv_markdown_latex(store, tmp_path):
    import pandas as pd

    df = pd.DataFrame({"defence": ["noise σ=0.1", "a_b & c"], "acc": [0.5, None]})
    paths = compare.export_table(df, "t", tmp_path / "out", caption="ε = 2/255")
    assert [p.suffix for p in paths] == [".csv", ".md", ".tex"]
    assert "| noise σ=0.1 | 0.500 |" in paths[1].read_text() and "| a_b & c | – |" in paths[1].read_text()
    tex = paths[2].read_text()
    assert r"a\_b \& c & --" in tex and r"\toprule" in tex and r"$\varepsilon$" in tex
    assert pd.read_csv(paths[0])["acc"].isna().sum() == 1


def answered(acc, loss, clean=(0.7, 0.9)):
    """One :func:`octlib.defences.answers_under_attack` result."""
    return {"clean": {"accuracy": {"value": clean[0]}, "loss": clean[1]},
            "adversarial": {"accuracy": {"value": acc}, "loss": loss},
            "accuracy_drop": clean[0] - acc, "loss_increase": loss - clean[1]}


def attack_report(eps_255, acc, loss, clean=(0.7, 0.9)):
    """The fields of an :meth:`octlib.attacks.AttackRun.report` that the results store keeps."""
    return {"params": {"eps": eps_255 / 255, "eps_255": eps_255},
            "adversarial": {"value": acc, "ci_low": acc - 0.1, "ci_high": acc + 0.1}, "loss_adversarial": loss,
            "accuracy_drop": clean[0] - acc, "loss_increase": loss - clean[1], "urgent_flip": {"rate": 0.1},
            "success_rate": 0.5, "n": 64}


def test_entries_written_by_defence_entry_are_what_the_rows_read(tmp_path, monkeypatch):
    monkeypatch.setenv("OCTLIB_RESULTS", str(tmp_path))
    eps = (1 / 255, 2 / 255)
    output = compare.defence_entry("output", {"accuracy": {"value": 0.7}, "loss": 8.0},
                                   {"PGD": compare.answered_points(eps, [answered(0.4, 9.0), answered(0.1, 12.0)])},
                                   extraction=[run(0.7, 300)], answers="labels")
    trained = compare.defence_entry("noise training", {"accuracy": {"value": 0.6}, "loss": 1.1},
                                    {"PGD": [attack_report(1, 0.5, 1.3), attack_report(2, 0.45, 1.6)]})
    save_results("41_defence_gaussian_noise", {"n_attacked": 64, "defences": {"label-only": output,
                                                                             "noise-trained σ=0.12": trained}},
                 settings={})
    rows = {r["defence"]: r for r in compare.defence_rows(compare.load_study()[0])}
    assert rows["label-only"]["curves"]["PGD"][1] == {"eps_255": 2.0, "accuracy": 0.1, "loss": 12.0,
                                                       "accuracy_drop": pytest.approx(0.6),
                                                       "loss_increase": pytest.approx(11.1), "urgent_flip": None}
    assert rows["label-only"]["fidelity"] == 0.7 and output["answers"] == "labels"
    assert compare.strongest(rows["noise-trained σ=0.12"], 2) == ("PGD", 0.45)
    assert rows["noise-trained σ=0.12"]["curves"]["PGD"][0]["urgent_flip"] == 0.1


@pytest.mark.parametrize("kind, clean, evasion, match", [
    ("noise", {"accuracy": 0.7, "loss": 0.9}, {}, "unknown kind"),
    ("none", {"accuracy": 0.7}, {}, r"`clean` lacks \['loss'\]"),
    ("none", {"accuracy": 0.7, "loss": 0.9}, {"PGD": [{"eps_255": 1, "accuracy": 0.5}]},
     r"evasion\['PGD'\]\[0\] lacks \['loss', 'accuracy_drop', 'loss_increase'\]"),
])
def test_defence_entry_names_what_is_wrong(kind, clean, evasion, match):
    with pytest.raises(ValueError, match=match):
        compare.defence_entry(kind, clean, evasion)


def test_answered_points_needs_one_answer_per_eps():
    with pytest.raises(ValueError, match="2 answers for 1 ε"):
        compare.answered_points([1 / 255], [answered(0.4, 9.0), answered(0.1, 12.0)])


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


def test_consistency_is_quiet_when_everything_matches(store):
    study, _ = compare.load_study()
    assert compare.consistency(study) == []


def test_profile_is_read_from_a_whole_profile_stored_as_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("OCTLIB_RESULTS", str(tmp_path))
    from octlib.config import get_profile

    save_results("10_train_cnn", {"victim_policy": "official"}, settings=get_profile("full"))
    assert compare.provenance(compare.load_study()[0])["profile"].tolist() == ["full"]
