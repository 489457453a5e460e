"""Evaluation shared by every notebook: accuracy with a 95% CI, cross-entropy loss, per-class scores, confusion
matrix, one-vs-rest ROC AUC, and Kermany's urgent-referral view (CNV or DME = urgent).

Functions take integer labels and **logits** (``from_logits=True``, the default) or probabilities, as NumPy
arrays, and return plain numbers, lists and dicts that the results store writes as they are.
"""

from __future__ import annotations

import numpy as np

from .labels import CLASSES, ROUTINE_CLASSES, URGENT_CLASSES

URGENT = np.array([CLASSES.index(c) for c in URGENT_CLASSES])


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, numerically stable."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _probs(scores: np.ndarray, from_logits: bool) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(CLASSES):
        raise ValueError(f"scores must have shape (N, {len(CLASSES)}), got {scores.shape}.")
    return softmax(scores) if from_logits else scores


def _labels(y, n: int | None = None) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2:  # one-hot
        y = y.argmax(axis=1)
    y = y.astype(np.int64)
    if n is not None and len(y) != n:
        raise ValueError(f"{len(y)} labels for {n} predictions.")
    if len(y) and (y.min() < 0 or y.max() >= len(CLASSES)):
        raise ValueError(f"labels must be in 0..{len(CLASSES) - 1}.")
    return y


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (good near 0 and 1, unlike the normal approximation)."""
    if n == 0:
        return (float("nan"), float("nan"))
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    # exact bounds at the ends (the formula gives them up to rounding, which could put 0 outside [lo, hi])
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (float(lo), float(hi))


def accuracy(y_true, y_pred) -> dict:
    """``{"value", "ci_low", "ci_high", "n"}``: accuracy with its 95% Wilson interval."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    k = int((y_true == y_pred).sum())
    lo, hi = wilson_interval(k, len(y_true))
    return {"value": k / len(y_true) if len(y_true) else float("nan"), "ci_low": lo, "ci_high": hi,
            "n": int(len(y_true))}


def cross_entropy(y_true, scores, *, from_logits: bool = True, per_example: bool = False):
    """Mean (or per-example) categorical cross-entropy in nats."""
    y = _labels(y_true)
    if from_logits:
        z = np.asarray(scores, dtype=np.float64)
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    else:
        log_p = np.log(np.clip(np.asarray(scores, dtype=np.float64), 1e-12, 1.0))
    losses = -log_p[np.arange(len(y)), y]
    return losses if per_example else float(losses.mean())


def urgent(labels) -> np.ndarray:
    """True where the class is urgent (CNV or DME)."""
    return np.isin(np.asarray(labels), URGENT)


def urgent_referral(y_true, scores, *, from_logits: bool = True) -> dict:
    """Kermany's binary view: urgent (CNV/DME) vs not, from the top-class prediction.

    Sensitivity = urgent scans predicted urgent; specificity = non-urgent scans predicted non-urgent; AUC uses
    p(CNV) + p(DME) as the score.
    """
    from sklearn.metrics import roc_auc_score

    y = _labels(y_true)
    probs = _probs(scores, from_logits)
    truth, pred = urgent(y), urgent(probs.argmax(axis=1))
    tp, fn = int((truth & pred).sum()), int((truth & ~pred).sum())
    tn, fp = int((~truth & ~pred).sum()), int((~truth & pred).sum())
    sens_ci, spec_ci = wilson_interval(tp, tp + fn), wilson_interval(tn, tn + fp)
    auc = roc_auc_score(truth, probs[:, URGENT].sum(axis=1)) if 0 < truth.sum() < len(truth) else float("nan")
    return {
        "sensitivity": tp / (tp + fn) if tp + fn else float("nan"), "sensitivity_ci": list(sens_ci),
        "specificity": tn / (tn + fp) if tn + fp else float("nan"), "specificity_ci": list(spec_ci),
        "auc": float(auc), "tp": tp, "fn": fn, "tn": tn, "fp": fp,
    }


def classification_report(y_true, scores, *, from_logits: bool = True) -> dict:
    """Everything a notebook reports about one set of predictions.

    Returns a dict with ``accuracy`` (value, 95% CI, n), ``loss`` (mean cross-entropy), ``per_class``
    (precision, recall, F1, support per class name), ``confusion`` (rows: true class, columns: predicted, in
    :data:`~octlib.config.CLASSES` order), ``roc_auc`` (one-vs-rest per class and macro; NaN where a class is
    absent) and ``urgent`` (see :func:`urgent_referral`).
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    probs = _probs(scores, from_logits)
    y = _labels(y_true, len(probs))
    pred = probs.argmax(axis=1)
    labels = list(range(len(CLASSES)))
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    aucs = {}
    for k, cls in enumerate(CLASSES):
        present = (y == k)
        aucs[cls] = float(roc_auc_score(present, probs[:, k])) if 0 < present.sum() < len(y) else float("nan")
    finite = [v for v in aucs.values() if np.isfinite(v)]
    return {
        "accuracy": accuracy(y, pred),
        "loss": cross_entropy(y, probs, from_logits=False),
        "per_class": {cls: {"precision": float(prec[k]), "recall": float(rec[k]), "f1": float(f1[k]),
                            "support": int(support[k])} for k, cls in enumerate(CLASSES)},
        "confusion": confusion_matrix(y, pred, labels=labels).tolist(),
        "roc_auc": {**aucs, "macro": float(np.mean(finite)) if finite else float("nan")},
        "urgent": urgent_referral(y, probs, from_logits=False),
    }


def predict_logits(model, x: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """Logits of a Keras model on ``x`` (float32 in [0, 1]), batched, as float64 NumPy.

    Calls the model eagerly batch by batch: unlike ``model.predict`` this never retraces for a new final-batch
    size, and for a small CNN it is as fast.
    """
    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0:
        return np.zeros((0, len(CLASSES)))
    return np.concatenate([np.asarray(model(x[i:i + batch_size], training=False), dtype=np.float64)
                           for i in range(0, len(x), batch_size)])


def score_model(model, x: np.ndarray, y, *, batch_size: int = 256) -> dict:
    """:func:`classification_report` of a logits model on ``(x, y)``."""
    return classification_report(y, predict_logits(model, x, batch_size=batch_size))


def report_table(reports: dict):
    """Side-by-side summary (rows: named reports) with accuracy and CI, loss, macro AUC, urgent sens./spec."""
    import pandas as pd

    rows = {}
    for name, r in reports.items():
        rows[name] = {
            "accuracy": r["accuracy"]["value"], "95% CI": f"{r['accuracy']['ci_low']:.3f}–{r['accuracy']['ci_high']:.3f}",
            "n": r["accuracy"]["n"], "loss": r["loss"], "macro AUC": r["roc_auc"]["macro"],
            "urgent sensitivity": r["urgent"]["sensitivity"], "urgent specificity": r["urgent"]["specificity"],
        }
    return pd.DataFrame(rows).T


def most_confident_errors(y_true, scores, n: int = 12, *, from_logits: bool = True) -> np.ndarray:
    """Indices of the ``n`` wrong predictions with the highest predicted-class probability, most confident first."""
    probs = _probs(scores, from_logits)
    y = _labels(y_true, len(probs))
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != y)
    return wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")][:n]


def majority_rate(y_true) -> float:
    """Accuracy of always answering the most frequent class of ``y_true``."""
    counts = np.bincount(_labels(y_true), minlength=len(CLASSES))
    return float(counts.max() / counts.sum())


def perturbation_stats(x_clean: np.ndarray, x_adv: np.ndarray) -> dict:
    """Per-image L2 and L-infinity norms of ``x_adv - x_clean`` and PSNR/SSIM of ``x_adv`` against ``x_clean``
    (data range 1), as arrays. PSNR is infinite for an unchanged image."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    x_clean, x_adv = np.asarray(x_clean, dtype=np.float64), np.asarray(x_adv, dtype=np.float64)
    delta = (x_adv - x_clean).reshape(len(x_clean), -1)
    l2, linf = np.linalg.norm(delta, axis=1), np.abs(delta).max(axis=1) if delta.size else np.zeros(0)
    psnr, ssim = [], []
    for a, b in zip(x_clean[..., 0], x_adv[..., 0]):
        psnr.append(np.inf if np.array_equal(a, b) else peak_signal_noise_ratio(a, b, data_range=1.0))
        ssim.append(structural_similarity(a, b, data_range=1.0))
    return {"l2": l2, "linf": linf, "psnr": np.array(psnr), "ssim": np.array(ssim)}


def _summary(values: np.ndarray) -> dict:
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if not len(finite):
        return {"mean": float("nan"), "median": float("nan"), "max": float("nan"), "n_infinite": int(len(v))}
    return {"mean": float(finite.mean()), "median": float(np.median(finite)), "max": float(finite.max()),
            "n_infinite": int(len(v) - len(finite))}


def attack_report(y_true, logits_clean, logits_adv, x_clean, x_adv) -> dict:
    """The evaluation every attack notebook reports, clean vs adversarial.

    Returns ``clean`` / ``adversarial`` accuracy (95% CI), ``loss_clean`` / ``loss_adversarial`` (mean
    cross-entropy), ``accuracy_drop``, ``loss_increase``, ``success_rate`` among images the model got right
    (``success_denominator`` of them), ``per_class_accuracy`` (adversarial), ``confusion_adversarial``,
    ``urgent_flip`` (urgent scans, CNV/DME, correctly called urgent when clean and called DRUSEN/NORMAL under
    attack: ``rate`` = flips / denominator), norms (``l2``, ``linf``) and image quality (``psnr``, ``ssim``) as
    mean/median/max, and the per-image ``l2`` / ``linf`` lists.
    """
    from sklearn.metrics import confusion_matrix

    y = _labels(y_true)
    pc, pa = np.asarray(logits_clean).argmax(axis=1), np.asarray(logits_adv).argmax(axis=1)
    correct = pc == y
    fooled = correct & (pa != y)
    urgent_ok = urgent(y) & urgent(pc)
    flips = urgent_ok & ~urgent(pa)
    clean_acc, adv_acc = accuracy(y, pc), accuracy(y, pa)
    loss_clean, loss_adv = cross_entropy(y, logits_clean), cross_entropy(y, logits_adv)
    stats = perturbation_stats(x_clean, x_adv)
    return {
        "n": int(len(y)), "clean": clean_acc, "adversarial": adv_acc,
        "loss_clean": loss_clean, "loss_adversarial": loss_adv,
        "accuracy_drop": clean_acc["value"] - adv_acc["value"], "loss_increase": loss_adv - loss_clean,
        "success_rate": float(fooled.sum() / correct.sum()) if correct.any() else float("nan"),
        "success_denominator": int(correct.sum()),
        "per_class_accuracy": {cls: float((pa[y == k] == k).mean()) if np.any(y == k) else float("nan")
                               for k, cls in enumerate(CLASSES)},
        "confusion_adversarial": confusion_matrix(y, pa, labels=list(range(len(CLASSES)))).tolist(),
        "urgent_flip": {"rate": float(flips.sum() / urgent_ok.sum()) if urgent_ok.any() else float("nan"),
                        "flips": int(flips.sum()), "denominator": int(urgent_ok.sum())},
        "l2": _summary(stats["l2"]), "linf": _summary(stats["linf"]),
        "psnr": _summary(stats["psnr"]), "ssim": _summary(stats["ssim"]),
        "per_image": {"l2": stats["l2"].tolist(), "linf": stats["linf"].tolist()},
    }


def extraction_report(y_true, logits_victim, logits_thief) -> dict:
    """How good a stolen copy is, on the evaluation split (patients neither model trained on).

    Returns the copy's ``accuracy`` (95% CI) and ``loss`` (mean cross-entropy against the true labels), the
    victim's ``victim_accuracy`` and ``victim_loss`` on the same scans, ``relative_accuracy`` (copy / victim),
    ``fidelity`` (share of scans where the copy's top class equals the victim's, 95% CI), ``urgent_agreement``
    (share where both make the same urgent / non-urgent call, CNV/DME vs DRUSEN/NORMAL) and
    ``fidelity_victim_correct`` (fidelity on the scans the victim gets right).
    """
    y = _labels(y_true)
    pv, pt = np.asarray(logits_victim).argmax(axis=1), np.asarray(logits_thief).argmax(axis=1)
    if len(pv) != len(y) or len(pt) != len(y):
        raise ValueError(f"{len(y)} labels, {len(pv)} victim and {len(pt)} thief predictions: they must match.")
    thief_acc, victim_acc = accuracy(y, pt), accuracy(y, pv)
    ok = pv == y
    return {
        "n": int(len(y)), "accuracy": thief_acc, "loss": cross_entropy(y, logits_thief),
        "victim_accuracy": victim_acc, "victim_loss": cross_entropy(y, logits_victim),
        "relative_accuracy": thief_acc["value"] / victim_acc["value"] if victim_acc["value"] else float("nan"),
        "fidelity": accuracy(pv, pt),
        "urgent_agreement": float((urgent(pv) == urgent(pt)).mean()) if len(y) else float("nan"),
        "fidelity_victim_correct": float((pt[ok] == pv[ok]).mean()) if ok.any() else float("nan"),
    }


def extraction_baselines(logits_victim) -> dict:
    """What a copy gets without learning anything, on the evaluation scans: ``chance`` (a uniform guess: 1/4
    agreement in expectation), ``majority`` (always answering the victim's commonest answer: fidelity),
    ``always_urgent`` and ``always_non_urgent`` (urgent-call agreement of a copy that always, or never, refers),
    and the victim's answer shares."""
    pv = np.asarray(logits_victim).argmax(axis=1)
    share = np.bincount(pv, minlength=len(CLASSES)) / max(len(pv), 1)
    urgent_share = float(urgent(pv).mean()) if len(pv) else float("nan")
    return {"n": int(len(pv)), "chance": 1 / len(CLASSES), "majority": float(share.max()),
            "majority_class": CLASSES[int(share.argmax())], "always_urgent": urgent_share,
            "always_non_urgent": 1 - urgent_share, "answer_shares": dict(zip(CLASSES, map(float, share)))}


def mean_sd(rows, by, values):
    """Mean, sample standard deviation and count of ``values`` over the rows that share the ``by`` columns
    (e.g. seeds of one attack x budget): a DataFrame with ``<value>_mean``, ``<value>_sd``, ``n_seeds``."""
    import pandas as pd

    frame = pd.DataFrame(list(rows))
    grouped = frame.groupby(list(by), sort=True, dropna=False)[list(values)]
    out = grouped.agg(["mean", "std"])
    out.columns = [f"{v}_{stat.replace('std', 'sd')}" for v, stat in out.columns]
    out["n_seeds"] = grouped.size()
    return out.reset_index()


def budget_to_reach(budgets, values, threshold: float = 0.9):
    """The smallest budget whose value reaches ``threshold`` and stays there for every larger budget, or
    ``None`` when it never does."""
    pairs = sorted(zip(budgets, values))
    for i, (budget, _) in enumerate(pairs):
        if all(v is not None and np.isfinite(v) and v >= threshold for _, v in pairs[i:]):
            return budget
    return None


def expected_calibration_error(y_true, probs, *, n_bins: int = 15) -> dict:
    """Expected calibration error of top-class confidence (Guo et al. 2017): the bin-size-weighted mean of
    |accuracy - mean confidence| over ``n_bins`` equal-width confidence bins. ``probs`` are probabilities (rows
    sum to 1). Returns ``{"ece", "bins": [{"low", "high", "n", "accuracy", "confidence"}]}``."""
    y = _labels(y_true)
    probs = _probs(probs, from_logits=False)
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        sel = which == b
        n = int(sel.sum())
        acc = float((pred[sel] == y[sel]).mean()) if n else float("nan")
        mean_conf = float(conf[sel].mean()) if n else float("nan")
        if n:
            ece += n / len(y) * abs(acc - mean_conf)
        bins.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": n, "accuracy": acc,
                     "confidence": mean_conf})
    return {"ece": float(ece), "bins": bins}


def answers_report(y_true, answers) -> dict:
    """What honest users receive from an API that answers ``answers`` (probabilities or one-hot labels): the
    accuracy of its top class (95% CI), the mean cross-entropy of its probabilities (clipped at 1e-12, so a wrong
    one-hot answer costs 27.6 nats) and the expected calibration error."""
    y = _labels(y_true)
    answers = np.asarray(answers, dtype=np.float64)
    return {"accuracy": accuracy(y, answers.argmax(axis=1)), "loss": cross_entropy(y, answers, from_logits=False),
            "ece": expected_calibration_error(y, answers)["ece"]}


def honest_columns(report: dict) -> dict:
    """An :func:`answers_report` as the flat ``honest_accuracy``, ``honest_loss``, ``honest_ece`` columns of an
    extraction record (what a defence costs honest users, beside how much a thief steals)."""
    return {"honest_accuracy": report["accuracy"]["value"], "honest_loss": report["loss"], "honest_ece": report["ece"]}


def minimal_attack_curve(y_true, logits_clean, logits_adv, l2, eps_grid) -> list[dict]:
    """Accuracy under an L2 budget for a minimal-perturbation attack (DeepFool, HopSkipJump), per ε of
    ``eps_grid``: a scan counts as correct when the model is right on it clean and the attack either failed or
    needed a perturbation larger than ε. Returns ``[{"eps", "accuracy" (95% CI), "fooled"}]``."""
    y = _labels(y_true)
    pc, pa = np.asarray(logits_clean).argmax(axis=1), np.asarray(logits_adv).argmax(axis=1)
    l2 = np.asarray(l2, dtype=np.float64)
    out = []
    for eps in eps_grid:
        fooled = (pc == y) & (pa != y) & (l2 <= eps)
        out.append({"eps": float(eps), "accuracy": accuracy(y, np.where(fooled, -1, pc)),
                    "fooled": int(fooled.sum())})
    return out


def outcome_breakdown(y_true, clean_pred, adv_pred, robust) -> dict:
    """Per-scan outcomes of an evaluation read clinically: ``per_class`` robust accuracy (by true class, over the
    ``per_class_n`` scans of that class) and
    ``urgent_flip``: among urgent scans (CNV/DME) called urgent when clean, the share called non-urgent
    (DRUSEN/NORMAL) under attack (``rate``, ``flips``, ``denominator``, Wilson interval)."""
    y = _labels(y_true)
    clean_pred, adv_pred, robust = np.asarray(clean_pred), np.asarray(adv_pred), np.asarray(robust, dtype=bool)
    urgent_ok = urgent(y) & urgent(clean_pred)
    flips = urgent_ok & ~urgent(adv_pred)
    lo, hi = wilson_interval(int(flips.sum()), int(urgent_ok.sum()))
    return {"per_class": {cls: float(robust[y == k].mean()) if np.any(y == k) else float("nan")
                          for k, cls in enumerate(CLASSES)},
            "per_class_n": {cls: int(np.sum(y == k)) for k, cls in enumerate(CLASSES)},
            "urgent_flip": {"rate": float(flips.sum() / urgent_ok.sum()) if urgent_ok.any() else float("nan"),
                            "flips": int(flips.sum()), "denominator": int(urgent_ok.sum()), "ci_low": lo,
                            "ci_high": hi}}


def flip_curve(l2, flipped, radii) -> list[dict]:
    """For a minimal-perturbation attack (DeepFool) on correctly classified scans: the share flipped within each
    L2 radius (``flipped`` scans with ``l2 <= r``), with its Wilson interval. Not an accuracy: DeepFool pushes a
    scan away from its *predicted* class, so it is read only on scans the model gets right."""
    l2, flipped = np.asarray(l2, dtype=float), np.asarray(flipped, dtype=bool)
    out = []
    for r in radii:
        k = int((flipped & (l2 <= r)).sum())
        lo, hi = wilson_interval(k, len(l2))
        out.append({"radius": float(r), "flipped": k / len(l2) if len(l2) else float("nan"), "ci_low": lo,
                    "ci_high": hi, "n": int(len(l2))})
    return out


# Referral scenarios of a targeted attack: the scans it starts from and the classes it must reach.
REFERRAL_SCENARIOS = {
    # an urgent scan (CNV or DME) read as a routine class (DRUSEN or NORMAL): the patient is not referred
    "missed referral": {"sources": tuple(URGENT_CLASSES), "targets": ROUTINE_CLASSES},
    # a routine scan (DRUSEN or NORMAL) read as urgent: a needless urgent referral (either urgent class counts)
    "false referral": {"sources": ROUTINE_CLASSES, "targets": tuple(URGENT_CLASSES)},
}


def rate(successes, *, denominator=None) -> dict:
    """A per-scan proportion with its Wilson 95% interval: ``rate``, ``ci_low``, ``ci_high``, ``k``, ``n``
    (``successes`` is a boolean array over the ``n`` scans, or a count with ``denominator``)."""
    if denominator is None:
        s = np.asarray(successes, dtype=bool)
        k, n = int(s.sum()), int(s.size)
    else:
        k, n = int(successes), int(denominator)
    lo, hi = wilson_interval(k, n)
    return {"rate": k / n if n else float("nan"), "ci_low": lo, "ci_high": hi, "k": k, "n": n}


def _scenario(scenario: str) -> dict:
    if scenario not in REFERRAL_SCENARIOS:
        raise ValueError(f"Unknown scenario {scenario!r}; use one of {list(REFERRAL_SCENARIOS)}.")
    spec = REFERRAL_SCENARIOS[scenario]
    return {"sources": np.array([CLASSES.index(c) for c in spec["sources"]]),
            "targets": np.array([CLASSES.index(c) for c in spec["targets"]])}


def scenario_scans(y_true, scenario: str) -> np.ndarray:
    """The scans a referral ``scenario`` (:data:`REFERRAL_SCENARIOS`) counts: every scan of its source classes,
    whatever the model answers when clean (boolean mask). A scan whose clean answer already is a target counts as
    reached at every ε (a clean miss), so that a model that fails on clean scans is not rewarded by a smaller
    denominator."""
    return np.isin(_labels(y_true), _scenario(scenario)["sources"])


def reached(answers, scenario: str) -> np.ndarray:
    """Where an answer is one of the ``scenario``'s targets (DRUSEN or NORMAL for a missed referral, CNV or DME for
    a false one): the referral error, per scan."""
    return np.isin(np.asarray(answers), _scenario(scenario)["targets"])
