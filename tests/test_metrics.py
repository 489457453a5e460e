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


def test_flip_curve_reads_deepfool_on_correct_scans_only():
    curve = metrics.flip_curve([0.05, 0.2, 0.4, 9.0], [True, True, True, False], [0.1, 0.3, 1.0])
    assert [p["flipped"] for p in curve] == [0.25, 0.5, 0.75] and curve[0]["n"] == 4
    assert all(p["ci_low"] <= p["flipped"] <= p["ci_high"] for p in curve)


def test_outcome_breakdown_counts_missed_referrals():
    y = np.array([0, 1, 3, 0, 1])  # CNV, DME, NORMAL, CNV, DME
    clean = np.array([0, 1, 3, 0, 3])  # the last urgent scan is already missed when clean: not counted
    adv = np.array([3, 0, 0, 2, 3])  # CNV->NORMAL and CNV->DRUSEN are missed referrals; DME->CNV is not
    out = metrics.outcome_breakdown(y, clean, adv, robust=[0, 0, 0, 0, 0])
    assert out["urgent_flip"]["flips"] == 2 and out["urgent_flip"]["denominator"] == 3
    assert out["urgent_flip"]["rate"] == 2 / 3 and out["per_class"]["CNV"] == 0.0
    assert np.isnan(out["per_class"]["DRUSEN"])
    assert out["per_class_n"] == {c: int(np.sum(np.asarray(y) == k)) for k, c in enumerate(metrics.CLASSES)}


def test_referral_scenarios_count_every_source_scan_and_either_target():
    from octlib.metrics import rate, reached, scenario_scans

    #              CNV CNV DME NORMAL NORMAL NORMAL DRUSEN
    y = np.array([0, 0, 1, 3, 3, 3, 2])
    np.testing.assert_array_equal(scenario_scans(y, "missed referral"), [1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(scenario_scans(y, "false referral"), [0, 0, 0, 1, 1, 1, 1])  # DRUSEN too
    answers = np.array([3, 2, 0, 1, 2, 0, 3])
    np.testing.assert_array_equal(reached(answers, "missed referral"), [1, 1, 0, 0, 1, 0, 1])  # DRUSEN or NORMAL
    np.testing.assert_array_equal(reached(answers, "false referral"), [0, 0, 1, 1, 0, 1, 0])  # CNV or DME
    counted = scenario_scans(y, "false referral")
    r = rate(reached(answers, "false referral")[counted])
    assert (r["k"], r["n"], r["rate"]) == (2, 4, 0.5) and r["ci_low"] < 0.5 < r["ci_high"]
    assert rate(0, denominator=10)["ci_low"] == 0.0 and rate(10, denominator=10)["ci_high"] == 1.0
    with pytest.raises(ValueError, match="scenario"):
        reached(answers, "missed")
