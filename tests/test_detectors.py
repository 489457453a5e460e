"""Detectors and the attacker who knows them, on models whose answers and scores are known in closed form."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from octlib import detectors  # noqa: E402
from octlib.config import SuiteConfig  # noqa: E402
from octlib.evaluation import Scans  # noqa: E402
from octlib.records import check_row  # noqa: E402

S = 8
P = S * S
RIGHT = np.zeros((S, S, 1), np.float32)
RIGHT[:, S // 2:] = 1.0  # the right half of the scan


def right_half_model():
    """logits = (10 · mean of the right half, 5, -100, -100): class 0 iff the right half's mean is above 0.5."""
    inputs = keras.Input((S, S, 1))
    dense = keras.layers.Dense(4, name="logits")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    w = np.zeros((P, 4), np.float32)
    w[:, 0] = 10.0 * RIGHT.reshape(-1) / RIGHT.sum()
    dense.set_weights([w, np.array([0.0, 5.0, -100.0, -100.0], np.float32)])
    return model


class Darkness(detectors.Detector):
    """Flags scans darker than clean ones: score = 0.5 - mean over every pixel."""

    name = "darkness"

    def tf_score(self, xt):
        return 0.5 - tf.reduce_mean(xt, axis=[1, 2, 3])


def uniform(levels):
    return np.stack([np.full((S, S, 1), v, np.float32) for v in levels])


def test_the_adaptive_attacker_evades_what_the_detector_catches_from_the_non_adaptive_one():
    """Uniform scans at v in [0.52, 0.54]; ε = 0.1. PGD on the classifier darkens the right half by ε (the left
    half has no gradient), so every scan is fooled and its mean drops by ε/2: the darkness detector, calibrated on
    clean scans at 0.50-0.60 (threshold near 0.505), flags all of them. With the detector in the loss, the left half is brightened by ε
    while the right half is still darkened: fooled, mean unchanged, not flagged."""
    model = right_half_model()
    detector = Darkness().calibrate(uniform(np.linspace(0.50, 0.60, 41)), false_alarm=0.05)
    x, y = uniform([0.52, 0.53, 0.54]), np.zeros(3, int)
    scans = Scans(x, y, np.array(["a", "b", "c"]), np.arange(3), 3)
    eps = 0.1
    suite = SuiteConfig(attacks=("FGSM", "PGD"), eps_255=(25.5,), headline_255=25.5, n_scans=None, pgd_steps=5,
                        pgd_restarts=1, batch_size=8)
    x_adv, fooled, fooled_by = detectors.suite_examples(model, x, y, eps, suite)
    assert fooled.all() and set(fooled_by) == {"FGSM"}
    np.testing.assert_allclose(x_adv[:, :, S // 2:], x[:, :, S // 2:] - eps, atol=1e-6)  # right half darkened
    np.testing.assert_allclose(x_adv[:, :, :S // 2], x[:, :, :S // 2], atol=1e-6)  # left half untouched
    assert detector.detect(x_adv).all() and not detector.detect(x).any()
    joint = detectors.joint_pgd(model, detector, x, y, eps, weight=0.1, steps=5)
    assert np.abs(joint - x).max() <= eps + 1e-6
    assert (joint[:, :, :S // 2] > x[:, :, :S // 2]).all() and (joint[:, :, S // 2:] < x[:, :, S // 2:]).all()
    out = detectors.evaluate_detector(detector, model, scans, eps, x_adv, fooled, weights=(0.0, 0.1), steps=5)
    rows = {r["attack"]: r for r in out["rows"]}
    assert rows[detectors.NON_ADAPTIVE]["robust_accuracy"] == 1.0  # fooled, but every one caught
    assert rows[detectors.ADAPTIVE]["robust_accuracy"] == 0.0  # fooled and passed
    assert out["evaded"] == {0.0: 0, 0.1: 3} and out["false_alarms"] == 0.0
    assert out["auc"]["non-adaptive"]["auc"] == 1.0 and out["auc"]["adaptive"]["auc"] <= 0.5
    assert (out["defended"]["adaptive"] <= out["defended"]["non-adaptive"]).all()  # the suite's scans kept
    for r in out["rows"]:
        check_row(r)
        assert r["kind"] == "detector" and r["settings"]["false_alarms"] == 0.0
    # the comparison's table: beside the victim's suite row without a detector (every scan fooled)
    import pandas as pd

    from octlib import compare
    from octlib.evaluation import outcome_rows
    from octlib.threat import ThreatModel

    undefended = outcome_rows("undefended", "none", "suite", ThreatModel("inf", eps_255=(25.5,), headline_255=25.5),
                              y, np.zeros(3, int), np.zeros(3), np.zeros((1, 3), bool), np.ones((1, 3)), scans.ids,
                              scans.patients)
    table = compare.detector_table(pd.DataFrame(out["rows"] + undefended), 25.5).iloc[0]
    assert table["detector"] == "darkness detector" and table["n"] == 3 and table["robust, no detector"] == 0.0
    assert (table["defended (non-adaptive)"], table["defended (adaptive)"]) == (1.0, 0.0)
    assert table["p (adaptive vs non-adaptive)"] == 0.25 and table["AUC (suite's scans)"].startswith("1.000")


def test_calibration_sets_the_false_alarm_rate_on_clean_scans():
    detector = Darkness()
    with pytest.raises(ValueError, match="calibrate"):
        detector.detect(uniform([0.5]))
    clean = uniform(np.linspace(0.3, 0.7, 200))
    detector.calibrate(clean, false_alarm=0.1)
    assert detector.detect(clean).mean() <= 0.1 and detector.detect(clean).mean() >= 0.09
    assert detector.scale == pytest.approx(np.std(0.5 - np.linspace(0.3, 0.7, 200)), rel=1e-4)
    with pytest.raises(ValueError, match="false_alarm"):
        detector.calibrate(clean, false_alarm=1.0)


def test_mahalanobis_score_is_the_smallest_distance_to_a_class_mean_on_the_penultimate_features():
    inputs = keras.Input((S, S, 1))
    feats = keras.layers.Dense(3, name="features")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4, name="logits")(feats))
    rng = np.random.default_rng(0)
    x = rng.random((40, S, S, 1)).astype(np.float32)
    y = np.arange(40) % 4
    det = detectors.MahalanobisDetector(model).fit(x, y)
    f = keras.Model(model.inputs, model.get_layer("features").output)(x).numpy().astype(np.float64)
    means = np.stack([f[y == c].mean(0) for c in range(4)])
    d = np.stack([np.einsum("nd,de,ne->n", f - m, det.precision, f - m) for m in means], axis=1)
    np.testing.assert_allclose(det.score(x), d.min(axis=1), rtol=1e-4, atol=1e-4)
    assert det.precision.shape == (3, 3)
    with pytest.raises(ValueError, match="at least 2"):
        detectors.MahalanobisDetector(model).fit(x[:5], y[:5])
    with pytest.raises(ValueError, match="logits"):
        detectors.feature_model(keras.Sequential([keras.Input((S, S, 1)), keras.layers.Flatten()]))


def test_the_binary_detector_learns_to_tell_shifted_scans_apart():
    """ART's BinaryInputDetector over a small CNN, trained on clean scans and the same scans brightened by 0.3:
    it separates held-out pairs (AUC above 0.9), and its score is the adversarial logit minus the clean one."""
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.0, 0.6, (64, 16, 16, 1)).astype(np.float32)
    det = detectors.BinaryDetector(16, seed=0).fit(clean[:48], np.clip(clean[:48] + 0.3, 0, 1), epochs=15,
                                                    batch_size=16)
    auc = detectors.detection_auc(det, clean[48:], np.clip(clean[48:] + 0.3, 0, 1), n_boot=50)
    assert auc["auc"] > 0.9 and auc["n_clean"] == auc["n_adversarial"] == 16
    logits = det.network(clean[:4], training=False).numpy()
    np.testing.assert_allclose(det.score(clean[:4]), logits[:, 1] - logits[:, 0], rtol=1e-5, atol=1e-5)
