"""Detectors of adversarial scans, and the attacker who knows them (notebook 22).

Ma et al. 2021 (arXiv:1907.10456) report detection AUCs above 0.98 for simple detectors on medical adversarial
examples; Carlini & Wagner 2017 ("Adversarial Examples Are Not Easily Detected", AISec) show that such detectors
fall to an attacker who puts them in the loss. Both are measured here, on the victim's evaluation scans:

* :class:`MahalanobisDetector`: class-conditional Gaussians with one shared covariance on the victim's
  penultimate features, fitted on clean training scans (Lee et al. 2018, NeurIPS; the single-layer score without
  their input pre-processing or feature ensemble; the covariance by scikit-learn's Ledoit-Wolf estimator); the
  score is the smallest Mahalanobis distance to a class mean.
* :class:`BinaryDetector`: ART's ``BinaryInputDetector`` (Metzen et al. 2017's input detector), a small CNN trained
  to tell clean training scans from their PGD adversarial examples; the score is its adversarial logit minus its
  clean logit.

Both flag a scan when its score exceeds a threshold set at a false-alarm rate (5%) on clean **validation** scans,
patients apart from the evaluation scans (:meth:`Detector.calibrate`). :func:`suite_examples` gives the attack
suite's adversarial scans (the non-adaptive attacker, who ignores the detector); :func:`joint_pgd` is the adaptive
one: PGD on the classifier's cross-entropy minus ``w`` × the detector's standardised score, for several ``w``
(Carlini & Wagner's combined loss), the detector's threshold fixed. :func:`detection_outcomes` scores a scan as
defended when it is answered right clean and no adversarial candidate both fools the classifier and passes the
detector.
"""

from __future__ import annotations

import numpy as np

from .estimators import check_xy


def feature_model(model):
    """``x -> (penultimate features, logits)`` of a Keras logits model whose last layer is named ``logits``
    (:func:`octlib.models.build_cnn`)."""
    import keras

    from .models import float32_model

    model = float32_model(model)
    try:
        last = model.get_layer("logits")
    except ValueError:
        raise ValueError("`model` has no layer named 'logits': build it with octlib.models.build_cnn.") from None
    return keras.Model(model.inputs, [last.input, model.output])


class Detector:
    """A score (higher: more adversarial) and a threshold set on clean scans. Subclasses give :meth:`tf_score` (a
    TensorFlow function of the scans, for the adaptive attacker's gradient) and :meth:`score` (NumPy)."""

    name = "detector"
    threshold: float | None = None
    scale: float = 1.0
    false_alarm: float | None = None

    def tf_score(self, xt):  # pragma: no cover - abstract
        raise NotImplementedError

    def score(self, x, batch_size: int = 256) -> np.ndarray:
        import tensorflow as tf

        x = np.asarray(x, dtype=np.float32)
        out = [self.tf_score(tf.constant(x[i:i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
        return np.concatenate(out).astype(float) if out else np.zeros(0)

    def calibrate(self, x_clean, false_alarm: float = 0.05) -> Detector:
        """Set the threshold so that a share ``false_alarm`` of the clean scans ``x_clean`` (validation scans, never
        the evaluation scans) is flagged, and the scale the adaptive attacker standardises the score by (its sd on
        those scans)."""
        if not 0 < false_alarm < 1:
            raise ValueError(f"`false_alarm` must be in (0, 1), got {false_alarm!r}.")
        s = self.score(x_clean)
        if len(s) < 2:
            raise ValueError("Calibrating a detector needs at least 2 clean scans.")
        self.threshold = float(np.quantile(s, 1 - false_alarm, method="higher"))  # flags at most that share
        self.scale = float(np.std(s)) or 1.0
        self.false_alarm = float(false_alarm)
        return self

    def detect(self, x) -> np.ndarray:
        """Flagged as adversarial: score above the threshold of :meth:`calibrate`."""
        if self.threshold is None:
            raise ValueError(f"{self.name}: call calibrate(x_clean_validation) before detect.")
        return self.score(x) > self.threshold


class MahalanobisDetector(Detector):
    """Lee et al. 2018's Mahalanobis score on the victim's penultimate features (see the module docs)."""

    name = "Mahalanobis"

    def __init__(self, model):
        self.features = feature_model(model)
        self.means = self.precision = None

    def fit(self, x, y, batch_size: int = 256) -> MahalanobisDetector:
        """Class means and one shared (Ledoit-Wolf) covariance of the features of clean scans ``x`` with labels
        ``y``; every class must have at least 2 scans."""
        from sklearn.covariance import LedoitWolf

        x, y = check_xy(x, y)
        feats = np.concatenate([self.features([x[i:i + batch_size]], training=False)[0].numpy()
                                for i in range(0, len(x), batch_size)]).astype(np.float64)
        n_classes = int(self.features.outputs[1].shape[-1])
        counts = np.bincount(y, minlength=n_classes)
        if counts.min() < 2:
            raise ValueError(f"Every class needs at least 2 clean scans to fit the detector, got counts {counts}.")
        self.means = np.stack([feats[y == c].mean(axis=0) for c in range(n_classes)])
        self.precision = LedoitWolf().fit(feats - self.means[y]).precision_
        self._tf = None
        return self

    def tf_score(self, xt):
        import tensorflow as tf

        if self.means is None:
            raise ValueError("Mahalanobis detector: call fit(x_train, y_train) first.")
        if getattr(self, "_tf", None) is None:
            self._tf = (tf.constant(self.means, tf.float32), tf.constant(self.precision, tf.float32))
        means, precision = self._tf
        feats = tf.cast(self.features([xt], training=False)[0], tf.float32)
        diff = feats[:, None, :] - means[None]  # (N, C, D)
        dist = tf.einsum("ncd,de,nce->nc", diff, precision, diff)
        return tf.reduce_min(dist, axis=1)


class BinaryDetector(Detector):
    """ART's ``BinaryInputDetector`` over a small CNN (see the module docs); :meth:`fit` trains it on clean scans
    and their adversarial examples, balanced."""

    name = "binary input"

    def __init__(self, image_size: int, *, arch: str = "separable", seed: int = 0, learning_rate: float = 1e-3):
        import keras
        from art.defences.detector.evasion import BinaryInputDetector

        from .config import TrainConfig
        from .estimators import detector_classifier
        from .models import build_model

        keras.utils.set_random_seed(seed)
        cfg = TrainConfig(filters=(16, 32, 64), dropout=0.0, augment="none", input_norm="none")  # raw pixels
        self.network = build_model(arch, image_size, cfg, n_classes=2)
        self.classifier = detector_classifier(self.network, learning_rate=learning_rate)
        self.art = BinaryInputDetector(self.classifier)

    def fit(self, x_clean, x_adv, *, epochs: int = 10, batch_size: int = 64) -> BinaryDetector:
        x = np.concatenate([np.asarray(x_clean, np.float32), np.asarray(x_adv, np.float32)])
        y = np.eye(2, dtype=np.float32)[np.r_[np.zeros(len(x_clean), int), np.ones(len(x_adv), int)]]
        self.art.fit(x, y, batch_size=batch_size, nb_epochs=epochs)
        return self

    def tf_score(self, xt):
        import tensorflow as tf

        logits = tf.cast(self.network(xt, training=False), tf.float32)
        return logits[:, 1] - logits[:, 0]


def suite_examples(model, x, y, eps: float, suite, *, seed: int = 0):
    """The attack suite's adversarial scans at ``eps`` (L∞) on ``model``'s logits, the non-adaptive attacker's: the
    suite's attacks in order (:mod:`octlib.registry`) on the scans answered right and not yet fooled, each scan
    keeping the first example that fooled it (scans never fooled keep the last attack's). Returns ``(x_adv, fooled,
    fooled_by)``."""
    from . import registry
    from .estimators import art_classifier
    from .metrics import predict_logits

    x, y = check_xy(x, y)
    correct = predict_logits(model, x).argmax(axis=1) == y
    x_adv, fooled = x.copy(), np.zeros(len(y), dtype=bool)
    fooled_by = np.where(correct, "", "clean").astype(object)
    made = {}

    def clf(loss):
        if loss not in made:
            made[loss] = art_classifier(model, loss="cross_entropy" if loss == "scores" else loss)
        return made[loss]

    for name in suite.attacks:
        idx = np.flatnonzero(correct & ~fooled)
        if not len(idx):
            break
        xa = registry.get(name).craft(clf, x[idx], y[idx], eps, norm="inf", suite=suite, seed=seed,
                                      answer=lambda xs: predict_logits(model, xs).argmax(axis=1),
                                      score=lambda xs, idx=idx: np.zeros(len(xs)))[0]
        hit = predict_logits(model, xa).argmax(axis=1) != y[idx]
        x_adv[idx] = xa
        fooled[idx[hit]] = True
        fooled_by[idx[hit]] = name
    return x_adv, fooled, fooled_by


def joint_pgd(model, detector: Detector, x, y, eps: float, *, weight: float, steps: int, seed: int = 0):
    """The adaptive attacker (Carlini & Wagner 2017): L∞ PGD from a random start on the classifier's cross-entropy
    minus ``weight`` × the detector's score divided by its clean sd (:meth:`Detector.calibrate`), ``steps``
    sign-gradient steps of 2.5 ε / steps, projected on the ε-ball and [0, 1]. ``weight = 0`` is plain PGD."""
    import keras
    import tensorflow as tf

    from .models import float32_model

    x, y = check_xy(x, y)
    if not steps >= 1 or not weight >= 0:
        raise ValueError(f"`steps` must be >= 1 and `weight` >= 0, got {steps!r}, {weight!r}.")
    model = float32_model(model)
    onehot = tf.constant(np.eye(int(model.output_shape[-1]), dtype=np.float32)[y])
    xt = tf.constant(x)
    rng = np.random.default_rng(seed)
    x_adv = tf.clip_by_value(xt + tf.constant(rng.uniform(-eps, eps, x.shape).astype(np.float32)), 0.0, 1.0)
    step, w, scale = 2.5 * eps / steps, float(weight), float(detector.scale)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            loss = keras.losses.categorical_crossentropy(onehot, model(x_adv, training=False), from_logits=True)
            if w:
                loss = loss - w * detector.tf_score(x_adv) / scale
        x_adv = x_adv + step * tf.sign(tape.gradient(loss, x_adv))
        x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, xt - eps, xt + eps), 0.0, 1.0)
    return x_adv.numpy()


def detection_outcomes(model, detector: Detector, x, y, candidates) -> dict:
    """Per scan, against every adversarial batch of ``candidates`` (each ``(N, S, S, 1)``, the scans' adversarial
    versions): ``defended`` (answered right clean, and no candidate both fools the classifier and passes the
    detector), ``fooled`` (some candidate fools the classifier), ``evaded`` (some candidate fools it undetected),
    ``flagged_clean`` (the clean scan is flagged: a false alarm), ``loss`` (the classifier's highest cross-entropy
    over the clean scan and its candidates)."""
    from .metrics import cross_entropy, predict_logits

    x, y = check_xy(x, y)
    logits = predict_logits(model, x)
    correct, loss = logits.argmax(axis=1) == y, cross_entropy(y, logits, per_example=True)
    fooled, evaded = np.zeros(len(y), bool), np.zeros(len(y), bool)
    for xa in candidates:
        logits = predict_logits(model, xa)
        wrong = logits.argmax(axis=1) != y
        fooled |= wrong & correct
        evaded |= wrong & correct & ~detector.detect(xa)
        loss = np.maximum(loss, cross_entropy(y, logits, per_example=True))
    return {"defended": correct & ~evaded, "fooled": fooled, "evaded": evaded, "correct": correct,
            "flagged_clean": detector.detect(x), "loss": loss}


def detection_auc(detector: Detector, x_clean, x_adv, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """ROC AUC of the detector's score between clean scans (negatives) and adversarial scans (positives; pass only
    those that fooled the classifier), scikit-learn's, with a percentile bootstrap interval (both sets resampled).
    Returns ``{"auc", "ci_low", "ci_high", "n_clean", "n_adversarial"}``; NaN without both kinds."""
    from sklearn.metrics import roc_auc_score

    neg, pos = detector.score(x_clean), detector.score(x_adv)
    out = {"n_clean": int(len(neg)), "n_adversarial": int(len(pos))}
    if not len(neg) or not len(pos):
        return {**out, "auc": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    labels = np.r_[np.zeros(len(neg)), np.ones(len(pos))]
    auc = float(roc_auc_score(labels, np.r_[neg, pos]))
    rng = np.random.default_rng(seed)
    boots = [roc_auc_score(labels, np.r_[rng.choice(neg, len(neg)), rng.choice(pos, len(pos))])
             for _ in range(n_boot)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {**out, "auc": auc, "ci_low": float(lo), "ci_high": float(hi)}


#: The record rows of notebook 22, by attack name: who attacks the classifier behind the detector.
NON_ADAPTIVE = "non-adaptive: the suite's scans"
ADAPTIVE = "adaptive: PGD on loss − w · score"


def evaluate_detector(detector: Detector, model, scans, eps: float, suite_x_adv, suite_fooled, *, weights,
                      steps: int, seed: int = 0, name: str | None = None) -> dict:
    """One calibrated detector in front of ``model`` on the evaluation ``scans`` at L∞ ``eps``:

    * non-adaptive: the suite's adversarial scans (:func:`suite_examples`: ``suite_x_adv``, ``suite_fooled``),
      detection AUC against the clean scans, and per scan defended or not (:func:`detection_outcomes`);
    * adaptive: :func:`joint_pgd` at each weight of ``weights`` (0 is plain PGD), the suite's scans kept as a
      candidate too (the adaptive attacker may use them), so that the adaptive row is at most the non-adaptive one
      scan by scan, by construction; the AUC against the adaptive scans that fooled the classifier (the weight that
      left the most of them undetected).

    Returns ``{"rows"`` (records at ``eps``: ``kind="detector"``, attacks :data:`NON_ADAPTIVE` and
    :data:`ADAPTIVE`, ``robust`` = defended), ``"auc"`` (non-adaptive, adaptive), ``"false_alarms"`` (share of
    clean evaluation scans flagged), ``"evaded"`` (per weight: scans fooled undetected)``}``."""
    from .evaluation import outcome_rows
    from .metrics import cross_entropy, predict_logits
    from .threat import ThreatModel, to_255

    x, y = check_xy(scans.x, scans.y)
    name = name or (detector.name if detector.name.endswith("detector") else f"{detector.name} detector")
    logits = predict_logits(model, x)
    clean_pred, clean_loss = logits.argmax(axis=1), cross_entropy(y, logits, per_example=True)
    plain = detection_outcomes(model, detector, x, y, [suite_x_adv])
    auc_plain = detection_auc(detector, x, np.asarray(suite_x_adv)[np.asarray(suite_fooled, bool)], seed=seed)
    candidates, evaded = [np.asarray(suite_x_adv)], {}
    best, best_evaded = None, -1
    for k, w in enumerate(weights):
        xa = joint_pgd(model, detector, x, y, eps, weight=float(w), steps=steps, seed=seed + k)
        out = detection_outcomes(model, detector, x, y, [xa])
        evaded[float(w)] = int(out["evaded"].sum())
        if evaded[float(w)] > best_evaded:
            best, best_evaded = (xa, out["fooled"]), evaded[float(w)]
        candidates.append(xa)
    adaptive = detection_outcomes(model, detector, x, y, candidates)
    auc_adaptive = detection_auc(detector, x, best[0][best[1]], seed=seed) if best is not None else None
    threat = ThreatModel("inf", eps_255=(to_255(eps),), headline_255=to_255(eps))
    settings = {"detector": detector.name, "threshold": detector.threshold, "false_alarm_target": detector.false_alarm,
                "false_alarms": float(plain["flagged_clean"].mean()), "weights": [float(w) for w in weights],
                "steps": steps, "seed": seed}
    rows = []
    for attack, outcome, auc in ((NON_ADAPTIVE, plain, auc_plain), (ADAPTIVE, adaptive, auc_adaptive)):
        rows += outcome_rows(name, "detector", attack, threat, y, clean_pred, clean_loss, outcome["defended"][None],
                             outcome["loss"][None], scans.ids, scans.patients,
                             settings={**settings, "auc": auc, "fooled": int(outcome["fooled"].sum()),
                                       "evaded": int(outcome["evaded"].sum())})
    roc = {"non-adaptive": roc_points(detector, x, np.asarray(suite_x_adv)[np.asarray(suite_fooled, bool)]),
           "adaptive": roc_points(detector, x, best[0][best[1]]) if best is not None else None}
    return {"rows": rows, "auc": {"non-adaptive": auc_plain, "adaptive": auc_adaptive}, "roc": roc,
            "false_alarms": float(plain["flagged_clean"].mean()), "evaded": evaded,
            "defended": {"non-adaptive": plain["defended"], "adaptive": adaptive["defended"]}}


def roc_points(detector: Detector, x_clean, x_adv) -> dict | None:
    """The detector's ROC curve between clean (negative) and adversarial (positive) scans, scikit-learn's:
    ``{"fpr", "tpr"}`` lists, or ``None`` without both kinds."""
    from sklearn.metrics import roc_curve

    neg, pos = detector.score(x_clean), detector.score(x_adv)
    if not len(neg) or not len(pos):
        return None
    fpr, tpr, _ = roc_curve(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos])
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
