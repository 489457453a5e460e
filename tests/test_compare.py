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
