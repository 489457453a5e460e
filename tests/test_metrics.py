"""octlib.metrics against hand-computed values and scikit-learn."""

import numpy as np
import pytest

from octlib import metrics


def test_wilson_interval_known_values():
    lo, hi = metrics.wilson_interval(81, 100)
    assert lo == pytest.approx(0.7222, abs=1e-3) and hi == pytest.approx(0.8748, abs=1e-3)
    assert metrics.wilson_interval(0, 10)[0] == 0.0 and metrics.wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_cross_entropy_from_logits_matches_probabilities():
    rng = np.random.default_rng(0)
    logits, y = rng.normal(size=(50, 4)), rng.integers(0, 4, 50)
    p = metrics.softmax(logits)
    assert metrics.cross_entropy(y, logits) == pytest.approx(-np.log(p[np.arange(50), y]).mean())
    assert metrics.cross_entropy(y, p, from_logits=False) == pytest.approx(metrics.cross_entropy(y, logits))
    assert metrics.cross_entropy(y, np.eye(4)[y] * 1e3) < 1e-6  # confident and right: ~0 loss


def test_report_on_a_known_confusion():
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    pred = np.array([0, 3, 1, 1, 2, 0, 3, 3])  # one CNV read as NORMAL (urgent missed), one DRUSEN as CNV
    logits = np.eye(4)[pred] * 5.0
    r = metrics.classification_report(y, logits)
    assert r["accuracy"]["value"] == 0.75 and r["accuracy"]["n"] == 8
    assert r["accuracy"]["ci_low"] < 0.75 < r["accuracy"]["ci_high"]
    assert r["confusion"][0] == [1, 0, 0, 1] and r["confusion"][2] == [1, 0, 1, 0]
    assert r["per_class"]["CNV"]["recall"] == 0.5 and r["per_class"]["CNV"]["precision"] == 0.5
    u = r["urgent"]
    assert (u["tp"], u["fn"], u["tn"], u["fp"]) == (3, 1, 3, 1)
    assert u["sensitivity"] == 0.75 and u["specificity"] == 0.75
    assert 0 <= r["roc_auc"]["macro"] <= 1


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        metrics.classification_report([0, 1], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="labels"):
        metrics.classification_report([0, 1, 2], np.zeros((2, 4)))


def test_sweep_table_has_a_row_per_eps_and_refuses_mismatches():
    y = np.array([0, 1, 2, 3])
    clean = np.eye(4)[y] * 5
    x = np.zeros((4, 8, 8, 1), np.float32)
    reps = [metrics.attack_report(y, clean, np.eye(4)[[1, 1, 2, 3]] * 5, x, x + 0.01) for _ in range(2)]
    table = metrics.sweep_table([1 / 255, 2 / 255], {"PGD": reps})
    assert table["ε"].tolist() == ["1/255 (0.0039)", "2/255 (0.0078)"]
    assert table["PGD acc"].tolist() == [0.75, 0.75] and table["PGD success"].tolist() == [0.25, 0.25]
    with pytest.raises(ValueError, match="PGD: 2 reports for 3"):
        metrics.sweep_table([1, 2, 3], {"PGD": reps})
