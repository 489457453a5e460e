"""Evasion attacks through ART, run over a dataset in batches with a progress bar.

Threat model of this module: white-box. The attacker knows the weights and gets gradients of the cross-entropy
(FGSM, PGD, L-infinity) or of the logits (DeepFool, L2), and perturbs a scan within [0, 1]. ε is always given in
[0, 1] pixel units and reported in both [0, 1] and /255 (:func:`eps_label`).

Every function returns an :class:`AttackRun` (adversarial images, clean and adversarial logits, parameters,
runtime) whose :meth:`AttackRun.report` gives the shared evaluation of :func:`octlib.metrics.attack_report`.

References: FGSM, Goodfellow et al. 2015 (arXiv:1412.6572); PGD, Madry et al. 2018 (arXiv:1706.06083);
DeepFool, Moosavi-Dezfooli et al. 2016 (arXiv:1511.04599); ART, Nicolae et al. 2018 (arXiv:1807.01069).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .labels import CLASSES
from .estimators import check_xy, loss_name
from .threat import check_eps, eps_label, to_255



@dataclass
class AttackRun:
    """One attack on one set of images."""

    attack: str
    params: dict
    x_adv: np.ndarray
    y: np.ndarray
    logits_clean: np.ndarray
    logits_adv: np.ndarray
    runtime_s: float
    extra: dict = field(default_factory=dict)

    def report(self, x_clean: np.ndarray, predict=None) -> dict:
        """:func:`octlib.metrics.attack_report` of this run, plus parameters and runtime.

        ``predict`` scores the clean and adversarial scans with another classifier's answers (logits or
        log-probabilities), e.g. a randomised defence that answers with the average of noisy copies; by default
        the run's own model logits are used.
        """
        from .metrics import attack_report

        clean, adv = (self.logits_clean, self.logits_adv) if predict is None else (predict(x_clean),
                                                                                    predict(self.x_adv))
        rep = attack_report(self.y, clean, adv, x_clean, self.x_adv)
        return {"attack": self.attack, "params": self.params, "runtime_s": self.runtime_s,
                "ms_per_image": 1000 * self.runtime_s / max(len(self.y), 1), **rep}


def _chunks(n: int, size: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    starts = range(0, n, size)
    return tqdm(starts, desc=desc, disable=not progress, unit="batch", leave=False)


def _run(attack, name: str, params: dict, classifier, x, y, batch_size: int, progress: bool, logits_clean=None,
         on_chunk=None, attack_labels=None) -> AttackRun:
    """Run ``attack`` over ``x`` in batches; ART gets ``attack_labels`` (targets of a targeted attack) when given,
    else the true labels ``y``."""
    from .metrics import predict_logits

    x, y = check_xy(x, y)
    labels = y if attack_labels is None else attack_labels
    model = classifier.model
    if logits_clean is None:
        logits_clean = predict_logits(model, x)
    t0 = time.perf_counter()
    parts = []
    for i in _chunks(len(x), batch_size, f"{name} {params.get('eps_label', '')}".strip(), progress):
        xb, yb = x[i:i + batch_size], np.eye(len(CLASSES), dtype=np.float32)[labels[i:i + batch_size]]
        parts.append(attack.generate(xb, yb) if on_chunk is None else on_chunk(attack, xb, yb))
    x_adv = np.concatenate(parts).astype(np.float32) if parts else np.zeros_like(x)
    runtime = time.perf_counter() - t0
    return AttackRun(attack=name, params=params, x_adv=x_adv, y=y, logits_clean=logits_clean,
                     logits_adv=predict_logits(model, x_adv), runtime_s=runtime,
                     extra={} if attack_labels is None else {"target": np.asarray(attack_labels)})


def fgsm(classifier, x, y, eps: float, *, batch_size: int = 128, progress: bool = True,
         logits_clean=None) -> AttackRun:
    """FGSM, L-infinity, untargeted, with the true labels (no label leaking): ``x + ε·sign(∇x loss)``, clipped.

    Args:
        classifier: from :func:`octlib.estimators.art_classifier`.
        x: float32 ``(N, S, S, 1)`` in [0, 1]; y: integer labels.
        eps: perturbation budget in [0, 1] pixel units (e.g. ``2 / 255``).
        batch_size: images per batch.
        logits_clean: the model's clean logits on ``x`` if already computed.
    """
    from art.attacks.evasion import FastGradientMethod

    eps = check_eps(eps)
    attack = FastGradientMethod(classifier, norm=np.inf, eps=eps, eps_step=eps, batch_size=batch_size)
    return _run(attack, "FGSM", {"eps": eps, "eps_255": to_255(eps), "eps_label": eps_label(eps), "norm": "inf"},
                classifier, x, y, batch_size, progress, logits_clean)


def pgd(classifier, x, y, eps: float, *, steps: int = 20, step_size: float | None = None, restarts: int = 1,
        norm: str = "inf", batch_size: int = 128, seed: int = 0, progress: bool = True,
        logits_clean=None, target=None) -> AttackRun:
    """PGD (Madry et al.) on the classifier's loss (cross-entropy unless it says otherwise), ``restarts`` random
    starts in the ε-ball; untargeted, or targeted at ``target`` (descends the loss of the target class).

    Args:
        eps: budget: for ``norm="inf"`` the per-pixel bound in [0, 1] pixel units; for ``norm="2"`` the L2 norm
            of the whole perturbation (pixels in [0, 1]), e.g. a certified radius.
        steps: iterations per start.
        step_size: per-step size (same units as ``eps``); default ``2.5 * eps / steps``.
        restarts: random starts (ART keeps, per image, a start that succeeds); 0 starts at ``x``.
        norm: ``inf`` or ``2``.
        seed: seeds the random starts.
        target: a class index or name, or one per scan: a targeted attack that succeeds when the model answers
            the target (per referral scenario: :func:`octlib.metrics.reached`); ``extra["target"]`` keeps the targets.
    """
    from art.attacks.evasion import ProjectedGradientDescent

    if norm not in ("inf", "2"):
        raise ValueError(f"`norm` must be 'inf' or '2', got {norm!r}.")
    if norm == "2":
        if not isinstance(eps, (int, float, np.floating)) or not eps > 0:
            raise ValueError(f"`eps` (an L2 radius) must be > 0, got {eps!r}.")
        eps = float(eps)
    else:
        eps = check_eps(eps)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps` must be an integer >= 1, got {steps!r}.")
    if not isinstance(restarts, int) or restarts < 0:
        raise ValueError(f"`restarts` must be an integer >= 0, got {restarts!r}.")
    if step_size is None:
        step_size = 2.5 * eps / steps
    elif norm == "inf":
        step_size = check_eps(step_size, "step_size")
    targets = None if target is None else target_labels(target, len(np.asarray(y).reshape(-1)))
    np.random.seed(seed)
    attack = ProjectedGradientDescent(classifier, norm=np.inf if norm == "inf" else 2, eps=eps, eps_step=step_size,
                                      max_iter=steps, num_random_init=restarts, batch_size=batch_size, verbose=False,
                                      targeted=targets is not None)
    loss = loss_name(classifier)
    label = eps_label(eps) if norm == "inf" else f"L2 {eps:g}"
    params = {"eps": eps, "eps_255": to_255(eps) if norm == "inf" else None, "eps_label": label, "norm": norm,
              "steps": steps, "step_size": step_size, "restarts": restarts, "seed": seed, "loss": loss,
              "targeted": targets is not None}
    name = "PGD" if loss == "cross_entropy" else "PGD-margin"
    return _run(attack, name if targets is None else f"{name} targeted", params, classifier, x, y, batch_size,
                progress, logits_clean, attack_labels=targets)


def pgd_linf_steps(model, x, y, x_start, eps: float, steps: int, step_size: float, *, loss: str = "cross_entropy"):
    """PGD's L∞ iteration in TensorFlow ops, for use inside a traced training step: from ``x_start``, ``steps``
    sign-gradient ascents of ``step_size`` on the cross-entropy of ``model``'s logits (cast to float32, so a
    mixed-precision model is attacked in float32 on every device) against one-hot ``y``, each projected on the
    ε-ball around ``x`` and on [0, 1]. It is the iteration :func:`pgd` runs through ART's
    ``ProjectedGradientDescent`` (from the same start they agree: ``tests/test_training.py``), used by the PGD
    adversarial trainer (:func:`octlib.training.adversarial_trainer`). With ``loss="kl"``, ``y`` holds the clean
    scans' probabilities and the ascent is on KL(y ‖ softmax(logits)), TRADES' inner maximisation
    (:func:`octlib.training.trades_trainer`). Returns the adversarial batch (no gradient flows back through it)."""
    import keras
    import tensorflow as tf

    if loss not in ("cross_entropy", "kl"):
        raise ValueError(f"`loss` must be 'cross_entropy' or 'kl', got {loss!r}.")
    x_adv = x_start
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            logits = tf.cast(model(x_adv, training=False), tf.float32)
            if loss == "kl":
                value = keras.losses.kl_divergence(y, tf.nn.softmax(logits))
            else:
                value = keras.losses.categorical_crossentropy(y, logits, from_logits=True)
        x_adv = x_adv + step_size * tf.sign(tape.gradient(value, x_adv))
        x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, x - eps, x + eps), 0.0, 1.0)
    return tf.stop_gradient(x_adv)


def target_labels(target, n: int) -> np.ndarray:
    """Targets of a targeted attack as ``n`` class indices: one class (index or name) for every scan, or one per
    scan."""
    if isinstance(target, str) or np.isscalar(target):
        names = {c.lower(): i for i, c in enumerate(CLASSES)}
        idx = names.get(str(target).lower()) if isinstance(target, str) else int(target)
        if idx is None or not 0 <= idx < len(CLASSES):
            raise ValueError(f"`target` must be a class index in [0, {len(CLASSES) - 1}] or one of {CLASSES}, "
                             f"got {target!r}.")
        return np.full(n, idx, dtype=np.int64)
    t = np.asarray(target).astype(np.int64).reshape(-1)
    if len(t) != n or t.min(initial=0) < 0 or t.max(initial=0) >= len(CLASSES):
        raise ValueError(f"`target` must give {n} class indices in [0, {len(CLASSES) - 1}], got {len(t)} values.")
    return t


def deepfool(classifier, x, y, *, max_iter: int = 50, overshoot: float = 0.02, batch_size: int = 128,
             progress: bool = True, logits_clean=None) -> AttackRun:
    """DeepFool (L2, minimal perturbation) on the logits over all classes, batched.

    DeepFool has no ε: it moves each scan just past the nearest linearised decision boundary of the model's own
    prediction, with ``overshoot``. The run records, per image, the iterations after which the returned
    (overshot) image changes class (``extra["iterations"]``; ``max_iter`` + 1: not within ``max_iter``).

    Args:
        max_iter: iterations at most.
        overshoot: relative overshoot past the boundary (ART's ``epsilon``).
        batch_size: images per batch; ART's default of 1 is ~30x slower on CPU.
    """
    from art.attacks.evasion import DeepFool

    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"`max_iter` must be an integer >= 1, got {max_iter!r}.")
    if overshoot < 0:
        raise ValueError(f"`overshoot` must be >= 0, got {overshoot!r}.")
    attack = DeepFool(classifier, max_iter=max_iter, epsilon=overshoot, nb_grads=len(CLASSES),
                      batch_size=batch_size, verbose=False)
    iterations: list[np.ndarray] = []

    def run_chunk(att, xb, yb):
        # ART predicts on the chunk once, then once per iteration on the current (not yet overshot) images. We keep
        # those images and ask when x + (1 + overshoot)(x_t - x), the point DeepFool finally returns, first changes
        # class. ART itself checks without the overshoot, so an image that sits on the boundary keeps iterating
        # until max_iter; a small max_iter therefore costs nothing in success (see benchmarks/bench_attacks.py).
        states = []
        original = classifier.predict

        def recording_predict(xs, *args, **kwargs):
            states.append(np.array(xs, copy=True))
            return original(xs, *args, **kwargs)

        classifier.predict = recording_predict
        try:
            adv = att.generate(xb)
        finally:
            del classifier.predict  # back to the class method
        first = np.argmax(original(xb), axis=1)
        steps = np.full(len(xb), max_iter + 1)
        for t, xt in enumerate(states[1:], start=1):
            overshot = np.clip(xb + (1 + overshoot) * (xt - xb), 0.0, 1.0)
            newly = (np.argmax(original(overshot), axis=1) != first) & (steps > max_iter)
            steps[newly] = t
        iterations.append(steps)
        return adv

    run = _run(attack, "DeepFool", {"max_iter": max_iter, "overshoot": overshoot, "nb_grads": len(CLASSES),
                                    "batch_size": batch_size, "norm": "2"},
               classifier, x, y, batch_size, progress, logits_clean, on_chunk=run_chunk)
    run.extra["iterations"] = np.concatenate(iterations) if iterations else np.zeros(0, dtype=int)
    return run


def hopskipjump(classifier, x, y, *, max_iter: int = 10, max_eval: int = 1000, init_eval: int = 100,
                init_size: int = 100, batch_size: int = 256, seed: int = 0, progress: bool = True,
                logits_clean=None, norm: str = "2") -> AttackRun:
    """HopSkipJump (Chen et al. 2020, arXiv:1904.02144), L2 (or L∞ with ``norm="inf"``), untargeted: a
    **decision-based** black-box attack.

    It calls only ``classifier.predict`` and uses only the top class of each answer, so it works unchanged
    against a label-only API. Untargeted, ART moves each scan away from the class the model *predicts* for it,
    and returns the smallest perturbation it found (read it with :func:`octlib.metrics.minimal_attack_curve`).
    ``extra["queries"]`` counts the images the classifier was asked to predict.

    Reproducible for a ``seed``: ART draws its starting points from an unseeded ``RandomState``, so octlib gives
    it one instead: another scan of ``x`` that the model puts in a different class (chosen with the seed), or,
    when every scan gets the same class, the first of ``init_size`` seeded uniform-noise images that does.

    Args:
        max_iter: iterations (gradient-estimate + step + binary search each).
        max_eval / init_eval: most / first queries per gradient estimate.
        init_size: noise images tried for a starting point when no other scan qualifies.
        seed: seeds the starting points and NumPy's global generator (ART's gradient estimates).
    """
    from art.attacks.evasion import HopSkipJump

    for name, value in (("max_iter", max_iter), ("max_eval", max_eval), ("init_eval", init_eval),
                        ("init_size", init_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    if norm not in ("2", "inf"):
        raise ValueError(f"`norm` must be '2' or 'inf', got {norm!r}.")
    attack = HopSkipJump(classifier, batch_size=batch_size, targeted=False, norm=2 if norm == "2" else np.inf,
                         max_iter=max_iter,
                         max_eval=max_eval, init_eval=init_eval, init_size=init_size, verbose=False)
    queries, no_start = [0], [0]
    original = classifier.predict
    rng = np.random.default_rng(seed)

    def counting_predict(xs, *args, **kwargs):
        queries[0] += len(xs)
        return original(xs, *args, **kwargs)

    def starts(xb):
        pred = np.argmax(counting_predict(xb), axis=1)
        init = np.array(xb, copy=True)
        for i in range(len(xb)):
            others = np.flatnonzero(pred != pred[i])
            if len(others):
                init[i] = xb[rng.choice(others)]
                continue
            noise = rng.uniform(0.0, 1.0, (init_size, *xb.shape[1:])).astype(np.float32)
            hit = np.flatnonzero(np.argmax(counting_predict(noise), axis=1) != pred[i])
            init[i] = noise[hit[0]] if len(hit) else xb[i]
            no_start[0] += not len(hit)
        return init

    def run_chunk(att, xb, yb):
        np.random.seed(seed)
        return att.generate(xb, yb, x_adv_init=starts(xb))

    classifier.predict = counting_predict
    try:
        run = _run(attack, "HopSkipJump", {"norm": norm, "max_iter": max_iter, "max_eval": max_eval,
                                           "init_eval": init_eval, "init_size": init_size, "seed": seed},
                   classifier, x, y, max(len(x), 1), progress, logits_clean, on_chunk=run_chunk)
    finally:
        del classifier.predict
    run.extra.update(queries=queries[0], no_start=no_start[0])
    return run


@dataclass
class Universal:
    """One universal perturbation: a single ``noise`` (shape ``(1, S, S, 1)``) added to every scan."""

    noise: np.ndarray
    params: dict
    fit: dict
    runtime_s: float

    def apply(self, x) -> np.ndarray:
        """The scans ``x`` with the perturbation added, clipped to [0, 1]."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.noise.shape[1:]:
            raise ValueError(f"`x` scans {x.shape[1:]} do not match the perturbation's {self.noise.shape[1:]}.")
        return np.clip(x + self.noise, 0.0, 1.0).astype(np.float32)

    def run(self, model, x, y, *, batch_size: int = 128) -> AttackRun:
        """The perturbation added to the scans ``x`` (labels ``y``) and scored by ``model``, as an
        :class:`AttackRun` (``attack="universal"``; its runtime is the scoring, the fit's is in ``runtime_s``), so
        a universal perturbation enters what takes a per-scan attack's run (e.g. :mod:`octlib.saliency`)."""
        from .metrics import predict_logits

        y = np.asarray(y)
        if len(y) != len(x):
            raise ValueError(f"`y` has {len(y)} labels for {len(x)} scans.")
        t0 = time.perf_counter()
        x_adv = self.apply(x)
        clean = predict_logits(model, np.asarray(x, dtype=np.float32), batch_size=batch_size)
        adv = predict_logits(model, x_adv, batch_size=batch_size)
        return AttackRun("universal", {**self.params, **self.norms()}, x_adv, y, clean, adv,
                         time.perf_counter() - t0)

    def norms(self) -> dict:
        """The perturbation's L∞ (also in /255) and L2 norms."""
        flat = self.noise.reshape(-1).astype(np.float64)
        return {"linf": float(np.abs(flat).max(initial=0.0)), "linf_255": to_255(np.abs(flat).max(initial=0.0)),
                "l2": float(np.linalg.norm(flat))}


def universal(classifier, x_fit, eps: float, *, norm: str = "inf", target=None, method: str = "art",
              step: float | None = None, max_iter: int = 10, delta: float = 0.2, batch_size: int = 32, seed: int = 0,
              fit_on: str = "", verbose: bool = False) -> Universal:
    """A universal adversarial perturbation (Moosavi-Dezfooli et al. 2017) fitted on the scans ``x_fit`` with
    ART's ``UniversalPerturbation`` (untargeted) or ``TargetedUniversalPerturbation`` (``target``: a class index
    or name), driven by FGSM as in Hirano et al. 2021 (BMC Med. Imaging 21:9): scan by scan, an FGSM step of
    ``step`` (default ε: ART keeps a step only when it changes the answer, so smaller steps rarely count) from the
    current perturbation, then the sum projected back onto the ε-ball. ``method="sgd"`` instead ascends the mean
    loss over the fitting scans directly (Shafahi et al. 2020, AAAI, "Universal adversarial training"): per batch of
    ``batch_size`` scans one signed (L∞) or normalised (L2) step of ``step`` (default 2.5 ε / the number of steps,
    PGD's rule) on the summed gradient,
    projected onto the ε-ball; untargeted, it raises the cross-entropy of the model's clean answers, targeted, it
    lowers that of the target. ART's algorithm keeps a step only when it alone flips a scan (to the target, when
    targeted), which a single large FGSM step overshoots on a strongly non-linear model; the SGD fit does not
    depend on that.

    Args:
        x_fit: the attacker's scans (patients apart from the evaluation scans).
        eps: the perturbation's budget: per pixel in [0, 1] units for ``norm="inf"``, the whole perturbation's L2
            norm for ``norm="2"``.
        method: ``art`` (ART's algorithm, Hirano et al.'s) or ``sgd`` (see above).
        max_iter: passes over ``x_fit`` at most; ``delta``: stop once the fooling (untargeted) or targeted success
            rate on ``x_fit`` reaches ``1 - delta`` (``art`` only).
        seed: seeds the order in which ART visits the scans.
        fit_on: what ``x_fit`` is, kept in the parameters (e.g. ``"OCT"``, ``"proxy"``).

    The untargeted fit uses the model's own answers as labels (a fooled scan is one whose answer changes).
    """
    import random

    from art.attacks.evasion import TargetedUniversalPerturbation, UniversalPerturbation

    if norm not in ("inf", "2"):
        raise ValueError(f"`norm` must be 'inf' or '2', got {norm!r}.")
    if norm == "inf":
        eps = check_eps(eps)
    elif not isinstance(eps, (int, float, np.floating)) or not eps > 0:
        raise ValueError(f"`eps` (an L2 norm) must be > 0, got {eps!r}.")
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"`max_iter` must be an integer >= 1, got {max_iter!r}.")
    if not 0 <= delta < 1:
        raise ValueError(f"`delta` must be in [0, 1), got {delta!r}.")
    if method not in ("art", "sgd"):
        raise ValueError(f"`method` must be 'art' or 'sgd', got {method!r}.")
    x_fit = np.asarray(x_fit, dtype=np.float32)
    x_fit, _ = check_xy(x_fit, np.zeros(len(x_fit), dtype=int))
    if step is None:  # ART: a full-budget FGSM step; SGD: PGD's 2.5 ε / steps over all its steps
        step = float(eps) if method == "art" else 2.5 * float(eps) / (max_iter * -(-len(x_fit) // batch_size))
    step = float(step)
    art_norm = np.inf if norm == "inf" else 2
    random.seed(seed)
    np.random.seed(seed)
    t0 = time.perf_counter()
    target_idx = None if target is None else int(target_labels(target, 1)[0])
    if method == "sgd":
        noise = _universal_sgd(classifier, x_fit, float(eps), norm, target_idx, step, max_iter, batch_size, seed)
        clean = classifier.predict(x_fit, batch_size=128).argmax(1)
        adv = classifier.predict(np.clip(x_fit + noise, 0, 1), batch_size=128).argmax(1)
        fit = {"fooling_rate": float(np.mean(adv != clean)), "converged": None}
        if target_idx is not None:
            fit["targeted_success_rate"] = float(np.mean(adv == target_idx))
    elif target is None:
        attack = UniversalPerturbation(classifier, attacker="fgsm", attacker_params={"eps": step, "norm": art_norm},
                                       delta=delta, max_iter=max_iter, eps=float(eps), norm=art_norm,
                                       batch_size=128, verbose=verbose)
        attack.generate(x_fit)
        noise, fit = attack.noise, {"fooling_rate": float(attack.fooling_rate), "converged": bool(attack.converged)}
    else:
        attack = TargetedUniversalPerturbation(classifier, attacker="fgsm",
                                               attacker_params={"eps": step, "norm": art_norm, "targeted": True},
                                               delta=delta, max_iter=max_iter, eps=float(eps), norm=art_norm)
        attack.generate(x_fit, y=np.eye(len(CLASSES), dtype=np.float32)[np.full(len(x_fit), target_idx)])
        noise = attack.noise
        fit = {"fooling_rate": float(attack.fooling_rate), "targeted_success_rate": float(attack.targeted_success_rate),
               "converged": bool(attack.converged)}
    runtime = time.perf_counter() - t0
    params = {"attack": "UAP" if target is None else "UAP targeted", "method": method, "eps": float(eps), "norm": norm,
              "eps_255": to_255(eps) if norm == "inf" else None,
              "eps_label": eps_label(eps) if norm == "inf" else f"L2 {eps:g}", "step": step, "max_iter": max_iter,
              "delta": delta, "seed": seed, "n_fit": len(x_fit), "fit_on": fit_on,
              "target": None if target_idx is None else CLASSES[target_idx]}
    return Universal(noise=np.asarray(noise, dtype=np.float32), params=params, fit=fit, runtime_s=runtime)


def _universal_sgd(classifier, x_fit, eps, norm, target_idx, step, epochs, batch_size, seed) -> np.ndarray:
    """The SGD fit of :func:`universal`: one perturbation ascending the batch loss, projected onto the ε-ball."""
    rng = np.random.default_rng(seed)
    n = len(x_fit)
    eye = np.eye(len(CLASSES), dtype=np.float32)
    labels = (classifier.predict(x_fit, batch_size=128).argmax(1) if target_idx is None
              else np.full(n, target_idx))
    sign = 1.0 if target_idx is None else -1.0  # ascend the clean answers' loss, or descend the target's
    noise = np.zeros((1,) + x_fit.shape[1:], dtype=np.float32)
    for _ in range(epochs):
        order = rng.permutation(n)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            grad = classifier.loss_gradient(np.clip(x_fit[idx] + noise, 0, 1), eye[labels[idx]]).sum(axis=0,
                                                                                                    keepdims=True)
            if norm == "inf":
                noise = np.clip(noise + sign * step * np.sign(grad), -eps, eps)
            else:
                g = grad / max(float(np.linalg.norm(grad)), 1e-12)
                noise = noise + sign * step * g
                noise = noise * min(1.0, eps / max(float(np.linalg.norm(noise)), 1e-12))
            noise = noise.astype(np.float32)
    return noise


def transfer(run: AttackRun, target_model, x_clean) -> AttackRun:
    """Score the adversarial images of ``run``, crafted on another model (e.g. a stolen copy), on
    ``target_model``: a black-box transfer attack. ``x_clean`` are the images ``run`` attacked. The runtime is
    the crafting time; ``extra["surrogate_logits_adv"]`` keeps the crafting model's own answers."""
    from .metrics import predict_logits

    x_clean = np.asarray(x_clean, dtype=np.float32)
    if x_clean.shape != run.x_adv.shape:
        raise ValueError(f"`x_clean` has shape {x_clean.shape}, the attacked images {run.x_adv.shape}.")
    return AttackRun(attack=f"transfer-{run.attack}", params={**run.params, "crafted_on": "surrogate"},
                     x_adv=run.x_adv, y=run.y, logits_clean=predict_logits(target_model, x_clean),
                     logits_adv=predict_logits(target_model, run.x_adv), runtime_s=run.runtime_s,
                     extra={**run.extra, "surrogate_logits_adv": run.logits_adv})


def stratified_subset(labels: np.ndarray, n: int | None, seed: int = 0) -> np.ndarray:
    """Indices of about ``n`` images with equal numbers per class (seeded), sorted; all indices when ``n`` is None
    or not smaller than the data."""
    labels = np.asarray(labels)
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    per_class = max(1, n // len(CLASSES))
    picks = [rng.choice(np.flatnonzero(labels == k), min(per_class, int((labels == k).sum())), replace=False)
             for k in range(len(CLASSES)) if np.any(labels == k)]
    return np.sort(np.concatenate(picks))
