"""Defences that are not a training setting: output post-processors, input noise, randomized smoothing. (The ART
estimators they wrap, the victim API's answer formats :class:`~octlib.estimators.Softmax` and
:class:`~octlib.estimators.LabelOnly` among them, live in :mod:`octlib.estimators`.)

(Training-side defences, label smoothing, Gaussian-noise training and PGD adversarial training (notebooks 42, 43
and 45), are :class:`octlib.config.TrainConfig` settings cached like the victim, built by
:func:`octlib.artifacts.get_or_train_defence`; see :mod:`octlib.training`.)

**Output side.** A post-processor changes what the model *answers*, not what it computes: ART applies it in
``predict`` only, never in ``loss_gradient`` or ``class_gradient``, so it cannot stop a white-box attack
(notebook 41 shows it, scan by scan).

* :class:`~octlib.estimators.LabelOnly` answers the top class only, as a one-hot row ("reinforcing class labels"):
  ART 1.20.1's ``ClassLabels`` marks every row's winning class in every row of a batch (upstream PR #2824), so a
  victim wrapped with it looks like chance; this one is correct row by row (tested against a row-by-row loop and
  against the bug).
* :class:`OutputNoise`: Gaussian noise of standard deviation σ on the probabilities, then clipped and renormalised.
  Unlike ART's ``GaussianNoise`` it draws from its own seeded generator and never returns NaN (ART's divides by
  the row sum after setting negative entries to 0, which is 0 when all of them fall below 0).
* ART's ``ReverseSigmoid`` (Lee et al. 2019, arXiv:1806.00054), the published reference against probability-based
  theft, is used as it is: it is correct on batches.

:func:`output_defences` builds the named set the notebooks compare; :func:`octlib.evaluation.api_target` scores
the attack suite through one of them.

**Input transforms** (notebook 23): :func:`input_transforms` builds JPEG compression, bit-depth reduction and
median smoothing as ART pre-processors; :func:`octlib.evaluation.transform_evaluations` attacks them through the
transform (BPDA) and ignoring it.

**Input noise** (notebooks 43 and 44): :func:`~octlib.estimators.noise_classifier` classifies K noisy copies of each
scan and gives plain (one draw) or EOT gradients; :class:`ExpectedNoiseAnswer` scores its answer in expectation;
:func:`~octlib.estimators.smoothed_classifier`, :func:`smoothed_predictions`,
:func:`certified_accuracy` and :func:`max_certifiable_radius` cover randomized smoothing (Cohen et al. 2019), and
:func:`certify` puts them together: the certified curve next to an empirical L2 PGD + EOT at the same radii;
:func:`certify_from_counts` certifies any grouping of the classes from the same noisy copies (notebook 54's
referral decision, :func:`octlib.clinical.certified_referral`).
"""

from __future__ import annotations

import numpy as np
from art.defences.postprocessor import Postprocessor

from .estimators import noise_classifier, smoothed_classifier, traced_softmax


class OutputNoise(Postprocessor):
    """Add N(0, σ²) to each probability, clip at a floor of 1e-6, renormalise each row to sum 1.

    Fresh noise on every call (an attacker who repeats a query can average it away: a cost this defence cannot
    avoid), from a generator seeded once at construction, so a run is reproducible.
    """

    params = ["sigma"]
    #: fresh noise on every call: a thief that repeats a query can average it away
    randomized = True

    def __init__(self, sigma: float = 0.1, seed: int = 0, apply_fit: bool = False, apply_predict: bool = True):
        super().__init__(is_fitted=True, apply_fit=apply_fit, apply_predict=apply_predict)
        self.sigma = sigma
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._check_params()

    def __call__(self, preds: np.ndarray) -> np.ndarray:
        preds = np.asarray(preds, dtype=np.float64)
        return self.apply(preds, self._rng.normal(0.0, self.sigma, preds.shape))

    @staticmethod
    def apply(preds: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """The answer to probabilities ``preds`` with the noise ``noise`` (broadcast to ``preds``' shape)."""
        noisy = np.clip(np.asarray(preds, dtype=np.float64) + noise, 1e-6, None)
        return (noisy / noisy.sum(axis=-1, keepdims=True)).astype(np.float32)

    def noise_bank(self, draws: int, n_classes: int, seed: int = 0) -> np.ndarray:
        """``draws`` noise rows ``(draws, 1, n_classes)``, drawn once from ``seed`` (not from this defence's own
        generator): with :meth:`apply`, each one is a draw of the answer that is the same for every scan and every
        call, so the answer in expectation (:func:`api_expected_votes`) is a function of the scan."""
        return np.random.default_rng(seed).normal(0.0, self.sigma, (draws, 1, n_classes))

    def _check_params(self) -> None:
        if not (isinstance(self.sigma, (int, float)) and self.sigma > 0):
            raise ValueError(f"`sigma` (noise on probabilities) must be > 0, got {self.sigma!r}.")


def output_defences(noise_sigmas=(0.1, 0.3), *, reverse_sigmoid=(1.0, 0.1), seed: int = 0) -> dict:
    """The output-side defences compared in notebooks 40 and 41, by name: ``none`` (probabilities), ``label-only``,
    ``output noise σ=...`` for each σ, ``reverse-sigmoid β=...,γ=...``. Each value is ``(answers, post-processors)`` for
    :func:`octlib.estimators.victim_api`; call again for fresh noise generators."""
    from art.defences.postprocessor import ReverseSigmoid

    out = {"none": ("probabilities", []), "label-only": ("labels", [])}
    for sigma in noise_sigmas:
        out[f"output noise σ={sigma:g}"] = ("probabilities", [OutputNoise(sigma, seed=seed)])
    if reverse_sigmoid:
        beta, gamma = reverse_sigmoid
        out[f"reverse-sigmoid β={beta:g},γ={gamma:g}"] = ("probabilities", [ReverseSigmoid(beta=beta, gamma=gamma)])
    return out


#: The input transforms :func:`input_transforms` builds, by key.
INPUT_TRANSFORMS = ("jpeg", "bits", "median")


def input_transforms(names=INPUT_TRANSFORMS, *, jpeg_quality: int = 75, squeeze_bits: int = 5,
                     median_window: int = 3) -> dict:
    """The input-transform defences of notebook 23, by name, as ART pre-processors on [0, 1] scans (channels last):
    JPEG compression at ``jpeg_quality`` (Dziugaite et al. 2016; Das et al. 2017), bit-depth reduction to
    ``squeeze_bits`` bits and median smoothing over a ``median_window`` square (the two squeezers of Xu et al. 2018,
    "Feature Squeezing", NDSS). None is random, so none needs EOT; all are non-differentiable or nearly so, and
    ART passes the gradient through them unchanged (BPDA, :func:`octlib.evaluation.input_target`). ``names``: which
    of :data:`INPUT_TRANSFORMS` to build, in that order."""
    from art.defences.preprocessor import FeatureSqueezing, JpegCompression, SpatialSmoothing

    bad = []
    if not isinstance(jpeg_quality, (int, np.integer)) or not 1 <= jpeg_quality <= 95:
        bad.append(f"`jpeg_quality` must be an integer in [1, 95], got {jpeg_quality!r}")
    if not isinstance(squeeze_bits, (int, np.integer)) or not 1 <= squeeze_bits <= 7:
        bad.append(f"`squeeze_bits` must be an integer in [1, 7] (8 bits changes nothing), got {squeeze_bits!r}")
    if not isinstance(median_window, (int, np.integer)) or not 2 <= median_window <= 9:
        bad.append(f"`median_window` must be an integer in [2, 9] pixels, got {median_window!r}")
    unknown = [n for n in names if n not in INPUT_TRANSFORMS]
    if unknown or not names:
        bad.append(f"`names` must be some of {INPUT_TRANSFORMS}, got {tuple(names)!r}")
    if bad:
        raise ValueError("; ".join(bad) + ".")
    build = {"jpeg": lambda: (f"JPEG q={jpeg_quality}", JpegCompression(
                 clip_values=(0.0, 1.0), quality=int(jpeg_quality), channels_first=False)),
             "bits": lambda: (f"bit depth {squeeze_bits}", FeatureSqueezing(clip_values=(0.0, 1.0),
                                                                           bit_depth=int(squeeze_bits))),
             "median": lambda: (f"median {median_window}×{median_window}", SpatialSmoothing(
                 window_size=int(median_window), channels_first=False, clip_values=(0.0, 1.0)))}
    return dict(build[n]() for n in INPUT_TRANSFORMS if n in names)


def majority_vote(answers, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per scan, the class most of ``answers`` (``(draws, N)`` classes) name and the vote counts ``(N, n_classes)``;
    a tie goes to the lowest class index, so the result is a function of the votes alone."""
    answers = np.asarray(answers, dtype=np.int64)
    if answers.ndim != 2:
        raise ValueError(f"`answers` must be (draws, N) classes, got shape {answers.shape}.")
    counts = np.stack([(answers == c).sum(axis=0) for c in range(n_classes)], axis=1)
    return counts.argmax(axis=1), counts


class ExpectedNoiseAnswer:
    """The answer of the inference-noise defence **in expectation**, as a deterministic function of the scan.

    The defence answers the top class of the mean softmax over K noisy copies, with fresh noise on every call, so
    one call is one random draw of its answer and two calls can disagree. Scored through one draw, a comparison
    of two attacks (PGD against FGSM, EOT against the plain attack) moves with the draw, and on another CPU with
    another floating-point path it moves differently. Here every scan is answered ``draws`` times, each time with
    K copies, and scored by the **majority** of those answers (the defence's answer in expectation), with the
    share of draws that answer each class kept beside it (the per-draw accuracy a single client query gets).

    The ``draws`` × K noise images are drawn **once**, from ``seed``, and added to every scan on every call
    (common random numbers): the answer to a scan does not depend on the call, on the batch it came in or on the
    other scans, so it cannot change between two calls by chance (``tests/test_defences.py`` checks it). The
    attacks never see these draws: they craft through :func:`~octlib.estimators.noise_classifier`'s fresh noise.

    ``scores(x)`` is the log of the softmax averaged over all ``draws`` × K copies: the defence's expected
    probabilities, whose cross-entropy is the loss under attack. One forward pass of the copies serves
    ``votes``, ``answer`` and ``scores``; the last few inputs are remembered, so asking for the answer and then the
    loss of the same scans costs one pass.
    """

    def __init__(self, model, sigma: float, samples: int, draws: int = 100, *, seed: int = 0, batch_size: int = 256,
                 remember: int = 4):
        if not sigma > 0 or not isinstance(samples, (int, np.integer)) or samples < 1:
            raise ValueError(f"`sigma` must be > 0 and `samples` an integer >= 1, got {sigma!r}, {samples!r}.")
        if not isinstance(draws, (int, np.integer)) or draws < 1:
            raise ValueError(f"`draws` (answers per scan scored by majority) must be an integer >= 1, got {draws!r}.")
        self.model, self.sigma, self.samples, self.draws = model, float(sigma), int(samples), int(draws)
        self.seed, self.batch_size, self.remember = seed, int(batch_size), int(remember)
        shape = (self.draws * self.samples, *tuple(model.input_shape[1:]))
        self.noise = (np.random.default_rng(seed).standard_normal(shape) * self.sigma).astype(np.float32)
        self._memo: dict = {}
        self._softmax = traced_softmax(model)

    @property
    def settings(self) -> dict:
        return {"answer": "majority over fixed draws", "answer_draws": self.draws, "answer_seed": self.seed}

    def _pass(self, x) -> tuple[np.ndarray, np.ndarray]:
        import hashlib

        import tensorflow as tf

        x = np.ascontiguousarray(x, dtype=np.float32)
        key = (x.shape, hashlib.sha1(x.tobytes()).hexdigest())
        if key in self._memo:
            return self._memo[key]
        copies = len(self.noise)
        per_chunk = 1  # one scan's copies at a time: its answer cannot depend on the scans around it
        votes, means = [], []
        noise = tf.constant(self.noise)
        for i in range(0, len(x), per_chunk):
            chunk = tf.constant(x[i:i + per_chunk])
            batch = tf.reshape(chunk[:, None] + noise[None], (-1, *x.shape[1:]))
            probs = np.concatenate([self._softmax(batch[j:j + self.batch_size]).numpy()
                                    for j in range(0, int(batch.shape[0]), self.batch_size)])
            probs = probs.astype(np.float64).reshape(len(chunk), self.draws, self.samples, -1)
            votes.append(probs.mean(axis=2).argmax(axis=-1).T)  # (draws, scans): each draw's K-copy answer
            means.append(probs.mean(axis=(1, 2)))
        n_classes = int(self.model.output_shape[-1])
        out = (np.concatenate(votes, axis=1) if votes else np.zeros((self.draws, 0), dtype=np.int64),
               np.concatenate(means) if means else np.zeros((0, n_classes)))
        if self.remember > 0:
            if len(self._memo) >= self.remember:
                self._memo.pop(next(iter(self._memo)))
            self._memo[key] = out
        return out

    def votes(self, x) -> np.ndarray:
        """``(draws, N)``: the class each draw of the defence answers for each scan."""
        return self._pass(x)[0]

    def answer(self, x) -> np.ndarray:
        """The majority answer per scan (:func:`majority_vote`)."""
        return majority_vote(self.votes(x), int(self.model.output_shape[-1]))[0]

    def scores(self, x) -> np.ndarray:
        """Log of the softmax averaged over every copy: use as logits (float32)."""
        return np.log(np.clip(self._pass(x)[1], 1e-12, None)).astype(np.float32)


def api_expected_votes(api, logits, draws: int = 100, *, seed: int = 0) -> np.ndarray:
    """``(draws, N)``: the class an API (:func:`octlib.estimators.victim_api`) answers for each scan on each of
    ``draws`` fixed draws of its randomized post-processors (those with ``randomized = True``, e.g.
    :class:`OutputNoise`), given the model's ``logits``; a deterministic post-processor is applied as it is. The
    draws come from ``seed`` and are the same for every scan and call (see :class:`ExpectedNoiseAnswer`), so the
    majority of these votes is the API's answer in expectation, a function of the scan."""
    preds = np.broadcast_to(np.asarray(logits, dtype=np.float64), (draws, *np.shape(logits)))
    for k, d in enumerate(getattr(api, "postprocessing_defences", None) or []):
        if not getattr(d, "apply_predict", True):
            continue
        if getattr(d, "randomized", False):
            preds = d.apply(preds, d.noise_bank(draws, preds.shape[-1], seed=seed + k))
        else:
            preds = np.stack([d(p) for p in preds])
    return np.asarray(preds).argmax(axis=-1)


def smoothed_predictions(scores) -> np.ndarray:
    """Class per row of a randomized-smoothing ``predict``, ``-1`` where it abstained (an all-zero row, which a
    plain ``argmax`` would read as class 0, CNV)."""
    scores = np.asarray(scores)
    return np.where(scores.sum(axis=1) > 0, scores.argmax(axis=1), -1)


def certified_accuracy(y_true, predictions, radii, grid) -> list[dict]:
    """Certified accuracy at each L2 radius of ``grid``: the share of scans whose certified class is right with
    a certified radius of at least r. Abstentions (``-1``) count as errors. Returns
    ``[{"radius", "certified_accuracy", "abstained"}]``."""
    y, pred, radii = np.asarray(y_true), np.asarray(predictions), np.asarray(radii, dtype=float)
    return [{"radius": float(r), "certified_accuracy": float(np.mean((pred == y) & (radii >= r))),
             "abstained": int((pred == -1).sum())} for r in grid]


def max_certifiable_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest L2 radius randomized smoothing can certify with ``n`` samples at failure probability
    ``alpha``: every sample votes for the class, so the Clopper-Pearson lower bound is (alpha)^(1/n) and the
    radius σ·Φ⁻¹ of it. Radii beyond this are certified for no scan, whatever the model."""
    from scipy.stats import norm

    return float(sigma * norm.ppf(alpha ** (1.0 / n)))


def certify_from_counts(select, estimate, *, sigma: float, n: int, alpha: float, groups=None):
    """Cohen et al.'s CERTIFY from the counts of :meth:`ChunkedSmoothing.certify_counts
    <octlib.estimators.smoothed_classifier>` (``(N, classes)`` each): per scan, the group with the most of the
    ``select`` votes, the one-sided (1 − α) Clopper-Pearson lower bound p_A of its share of the ``n`` ``estimate``
    votes, and the L2 radius σ·Φ⁻¹(p_A); an abstention (``-1``, radius 0) where p_A < 0.5. ``groups``: a partition
    of the classes into decisions, e.g. ``[(CNV, DME), (DRUSEN, NORMAL)]`` as indices; the smoothed classifier
    then answers the group whose noisy copies are most often classified into it, and the certificate is for that
    decision (Cohen et al.'s theorem holds for any base classifier, so for the grouped one too). ``None``: each
    class its own group, which is ART's ``certify`` (tested). Returns ``(answer, radius)``: group (or class)
    indices and radii."""
    from scipy.stats import norm
    from statsmodels.stats.proportion import proportion_confint

    select, estimate = np.asarray(select, dtype=np.int64), np.asarray(estimate, dtype=np.int64)
    if select.shape != estimate.shape or select.ndim != 2:
        raise ValueError(f"`select` {select.shape} and `estimate` {estimate.shape} must be (N, classes) counts.")
    n_classes = select.shape[1]
    groups = [(c,) for c in range(n_classes)] if groups is None else [tuple(int(c) for c in g) for g in groups]
    members = sorted(c for g in groups for c in g)
    if members != list(range(n_classes)):
        raise ValueError(f"`groups` must split the classes 0..{n_classes - 1} into disjoint groups, got {groups}.")
    if np.any(estimate.sum(axis=1) != n):
        raise ValueError(f"Every row of `estimate` must count n = {n} noisy copies.")
    pick = np.stack([select[:, list(g)].sum(axis=1) for g in groups], axis=1).argmax(axis=1)
    top = np.stack([estimate[:, list(g)].sum(axis=1) for g in groups], axis=1)[np.arange(len(pick)), pick]
    p_a = np.asarray(proportion_confint(top, n, alpha=2 * alpha, method="beta")[0], dtype=float).reshape(-1)
    certified = p_a >= 0.5
    radius = np.where(certified, sigma * norm.ppf(np.clip(p_a, 0.5, 1.0)), 0.0)
    return np.where(certified, pick, -1), radius


def certify(model, sigma: float, x, y, *, n0: int, n: int, alpha: float, radii, eot_samples: int, pgd_steps: int,
            seed: int = 0, batch_size: int = 1000, empirical_radii=None) -> dict:
    """Randomized smoothing of ``model`` with noise σ on scans ``(x, y)``: the certified-accuracy curve over
    ``radii`` (abstentions are errors) and, next to it, the **empirical** accuracy of the *same* smoothed classifier
    (same ``n0``, ``n``, ``alpha``: its answer is CERTIFY's class, an abstention an error) under an L2 PGD with EOT
    (``eot_samples`` draws, ``pgd_steps`` steps, no random start) at each radius of ``empirical_radii``, which
    must lie above the certificate. ART's smoothing draws from NumPy's global generator: it is seeded here with
    ``seed``, once, before certifying.

    ``empirical_radii`` (``None``: the radii of ``radii`` up to the largest radius ``n`` samples can certify,
    :func:`max_certifiable_radius`; beyond it the certificate is zero for every scan and there is nothing to
    check) are attacked in increasing order, each only on the scans still answered right at the radius before:
    a perturbation that fooled a scan within a smaller radius lies within every larger one, so such a scan is
    fooled there too (one CERTIFY of n samples per scan and radius is what the empirical check costs).

    The certified curve stops at the largest radius ``n`` and ``alpha`` can certify: radii of ``radii`` beyond it are
    listed in ``"beyond_max_radius"``, not plotted as zeros (a zero there is the sample size's, not the model's).

    Returns ``{"curve", "beyond_max_radius", "empirical" (radius 0, then each empirical radius), "abstained",
    "median_radius" (of the correct certified scans), "max_radius", "certify_s", "n0", "n", "alpha", "n_scans", "pred", "radius" (per
    scan), "empirical_correct" (per empirical radius, per scan), "empirical_s", "seed", "counts"}``; ``counts``
    (``select`` and ``estimate`` per scan, :meth:`certify_counts <octlib.estimators.smoothed_classifier>`) are what
    CERTIFY decided on: any grouping of the classes is certified from them without new draws
    (:func:`stored_counts`, notebook 54).
    """
    import time

    from .attacks import pgd

    x, y = np.asarray(x, dtype=np.float32), np.asarray(y)
    radii = [float(r) for r in radii]
    max_radius = max_certifiable_radius(sigma, n, alpha)
    if empirical_radii is None:
        empirical_radii = [r for r in radii if 0 < r <= max_radius]
    empirical_radii = [float(r) for r in empirical_radii]
    if any(r <= 0 for r in empirical_radii) or empirical_radii != sorted(set(empirical_radii)):
        raise ValueError(f"`empirical_radii` must be increasing positive L2 radii, got {empirical_radii}.")
    smoothed = smoothed_classifier(model, sigma, n0=n0, alpha=alpha)
    np.random.seed(seed)
    t0 = time.perf_counter()
    select, estimate = smoothed.certify_counts(x, n, batch_size=batch_size)  # ART's draws, in ART's order
    pred, radius = certify_from_counts(select, estimate, sigma=sigma, n=n, alpha=alpha)  # = ART's certify
    certify_s = time.perf_counter() - t0
    attacker = noise_classifier(model, sigma, eot_samples, seed=seed + 1)
    correct = pred == y
    empirical = [{"radius": 0.0, "accuracy": float(np.mean(correct)), "abstained": int((pred == -1).sum()),
                  "attacked": 0}]
    empirical_correct = [correct.astype(int).tolist()]
    alive = correct.copy()
    for r in empirical_radii:
        idx = np.flatnonzero(alive)
        abstained = 0
        if len(idx):
            x_adv = pgd(attacker, x[idx], y[idx], r, norm="2", steps=pgd_steps, restarts=0, seed=seed,
                        progress=False).x_adv
            answers = smoothed.certify(x_adv, n=n, batch_size=batch_size)[0]
            alive[idx] = answers == y[idx]
            abstained = int((answers == -1).sum())
        empirical_correct.append(alive.astype(int).tolist())
        empirical.append({"radius": r, "accuracy": float(np.mean(alive)), "abstained": abstained,
                          "attacked": int(len(idx))})
    return {"curve": certified_accuracy(y, pred, radius, [r for r in radii if r <= max_radius]),
            "beyond_max_radius": [r for r in radii if r > max_radius], "empirical": empirical,
            "abstained": int((pred == -1).sum()),
            "median_radius": float(np.median(radius[correct])) if correct.any() else 0.0,
            "max_radius": max_radius, "certify_s": certify_s, "n0": n0, "n": n,
            "alpha": alpha, "n_scans": len(y), "pred": np.asarray(pred).tolist(), "radius": np.asarray(radius).tolist(),
            "empirical_correct": empirical_correct, "empirical_s": time.perf_counter() - t0 - certify_s,
            "seed": seed, "counts": {"select": select.tolist(), "estimate": estimate.tolist()}}


def stored_counts(sigma: float, *, artifact: str, scan_ids, n0: int, n: int, alpha: float, seed: int,
                  name: str = "46_defence_randomized_smoothing", results_dir=None):
    """The CERTIFY counts notebook 46 stored for the smoothed ``artifact`` at noise ``sigma`` (:func:`certify`'s
    ``counts``), when they were drawn for exactly these scans (``scan_ids``, in order), ``n0``, ``n``, ``alpha`` and
    ``seed``: files are the interface between notebooks, so notebook 54 certifies the referral decision from the
    same noisy copies instead of drawing n of them per scan again. Returns ``((select, estimate), reason)`` or
    ``(None, reason)`` saying what differs (the caller then draws its own)."""
    from .results import ResultsError, load_results

    try:
        metrics = load_results(name, results_dir)["metrics"]
    except (FileNotFoundError, ResultsError) as exc:
        return None, f"no counts from {name} ({exc})"
    key = next((k for k in (metrics.get("certified") or {}) if np.isclose(float(k), float(sigma))), None)
    if key is None:
        return None, f"{name} certified no σ = {sigma:g}"
    stored, ids = metrics["certified"][key], [str(i) for i in metrics.get("scan_ids") or []]
    wanted = {"artifact": artifact, "n0": n0, "n": n, "alpha": alpha, "seed": seed}
    found = {"artifact": (metrics.get("artifacts") or {}).get(key), **{k: stored.get(k) for k in list(wanted)[1:]}}
    differ = [f"{k} {found[k]!r} (wanted {v!r})" for k, v in wanted.items() if found[k] != v]
    if ids != [str(i) for i in scan_ids]:
        differ.append("the scans")
    if "counts" not in stored:
        differ.append("no counts stored")
    if differ:
        return None, f"{name}'s certificate differs: " + ", ".join(differ)
    counts = stored["counts"]
    return (np.asarray(counts["select"], dtype=np.int64), np.asarray(counts["estimate"], dtype=np.int64)), \
        f"the counts {name} drew for these {len(ids)} scans (σ = {sigma:g}, n0 = {n0}, n = {n}, α = {alpha})"
