"""One adaptive evaluation for every model: the same attack suite on the same scans, robust accuracy per scan.

How a model is evaluated (Carlini et al. 2019; Croce & Hein 2020, AutoAttack; RobustBench):

* **Crafted on the float32 logits model, scored through what the defence answers.** Every gradient attack runs on
  an ART classifier over the model's logits (a float32 clone when it was trained in mixed precision; never
  through a post-processor). Whether a scan is fooled is decided by the defence's own answer (a label-only API,
  noisy probabilities, the average of noisy copies ...): see :class:`Target`.
* **One suite, worst case per scan.** The suite (:class:`octlib.config.SuiteConfig`) runs, in order, FGSM; PGD on
  the cross-entropy with random restarts, keeping per scan the **highest-loss** restart, unless another restart
  fools the scan (ART keeps the last *successful* one and picks it through ``predict``); APGD-DLR (ART's
  ``AutoProjectedGradientDescent``) or PGD on the logit margin; then, at the headline ε only (as AutoAttack runs at
  one ε; :attr:`octlib.registry.Attack.headline_only`), APGD-T towards each other class and the Square attack
  (score-based, no gradients) as the gradient-masking probe. A scan counts as robust at ε only if **no** attack of
  the suite fools it.
* **Monotone in ε, and cheaper for it.** An adversarial scan at ε is admissible at every larger ε, so a scan
  fooled at ε is fooled at every larger ε and is not attacked again. FGSM and PGD (the attacks whose own curves
  are drawn) skip only the scans *they* already fooled; APGD and Square run only on the scans that survived every
  attack before them. :attr:`Evaluation.cost` counts the gradient evaluations spent and those this saves.
* **Loss** is the cross-entropy of the model's own logits (for a randomized defence: of its averaged answer) under
  one fixed max-loss attack, the same for every model (``suite.loss_attack``): PGD on the cross-entropy with the
  suite's steps and restarts on **every** scan at every ε, wrong-clean and fooled scans included, the highest loss
  over ε' <= ε kept per scan, so that "the rise in loss" compares models attacked alike. (The suite's own attacks
  stop at a fooled scan, so their highest loss would compare models attacked for different lengths.) A loss is a
  lower bound of the worst case, and it is on each model's own scale: label smoothing caps the logit gaps, so its
  cross-entropy is smaller at equal robustness. The loss of what an API *answers* (one-hot, noisy, reversed) is a
  different number, the cost to honest users (:func:`octlib.metrics.answers_report`).
* **Randomized defences** are attacked with EOT (Athalye et al. 2018): every gradient is that of the loss of the
  softmax averaged over ``eot_samples`` noise draws (:func:`octlib.estimators.noise_classifier`), and
  :func:`eot_convergence` grows the draws and steps until robust accuracy stops falling.
* **Input transforms are attacked through them and around them** (Athalye et al. 2018): the suite crafts through a
  non-differentiable pre-processor with BPDA (its gradient taken as the identity), and again on the bare model as
  an attacker who ignores it would; the defence's rows are the worst case of both (:func:`transform_evaluations`,
  :meth:`Evaluation.fold`), and where the two differ significantly the transform hid the gradient.
* **A randomized answer is scored in expectation**: the majority of many draws of it, the draws fixed once so that
  the scored answer is a function of the scan (:class:`octlib.defences.ExpectedNoiseAnswer`,
  :func:`octlib.defences.api_expected_votes`); the share of draws answering right (the per-draw accuracy a single
  query gets) is kept beside it. Every check on such a defence then compares deterministic quantities.

:meth:`Evaluation.records` turns the result into flat rows (:mod:`octlib.records`), one per (model, attack or
suite, norm, ε), each with the per-scan outcomes, so that any two models can be compared on the same scans.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from . import registry
from .config import SuiteConfig
from .labels import CLASSES
from .threat import ThreatModel, check_eps, eps_label, to_255

#: Attacks whose own per-ε curve is kept: each skips only the scans it has fooled itself.
OWN_CURVE = tuple(name for name, attack in registry.ATTACKS.items() if attack.own_curve)


@dataclass
class Target:
    """A model as an evaluation sees it.

    Attributes:
        name: the row name in tables (e.g. ``undefended``, ``label-only``, ``inference noise σ=0.12``).
        kind: ``none``, ``output`` (post-processor), ``input`` (a transform before the model, :func:`input_target`),
            ``training`` (a retrained model), ``randomized`` (inference-time noise) or ``smoothing``.
        model: the Keras logits model the attacks differentiate (float32; see :func:`octlib.models.float32_model`).
        answer: scans -> the class the defence answers (default: argmax of the model's logits).
        scores: scans -> logits or log-probabilities whose cross-entropy is the loss under attack (default: the
            model's logits; a randomized defence: the log of its averaged probabilities).
        crafting: ``loss`` -> the ART classifier the attacks run on (default :func:`octlib.estimators.art_classifier`
            over ``model``; a randomized defence: EOT over its noise). ``loss="scores"`` asks for the classifier a
            score-based attack (Square) queries: the model's logits, or a randomized defence's own answers.
        eot_samples: noise draws per EOT gradient (1 for deterministic models).
        votes: for a randomized answer, scans -> ``(draws, N)`` classes, one row per fixed draw of the answer;
            ``answer`` is then their majority (:func:`octlib.defences.majority_vote`) and the records keep the
            per-draw accuracy beside it.
        settings: anything that describes the defence (σ, K, post-processor parameters), kept in the records.
    """

    name: str
    kind: str
    model: object
    answer: Callable | None = None
    scores: Callable | None = None
    crafting: Callable | None = None
    eot_samples: int = 1
    settings: dict = field(default_factory=dict)
    votes: Callable | None = None
    crafting_source: object = field(default=None, repr=False)

    def __post_init__(self):
        from .estimators import art_classifier
        from .metrics import predict_logits
        from .models import float32_model

        kinds = ("none", "output", "input", "training", "randomized", "smoothing")
        if self.kind not in kinds:
            raise ValueError(f"Target {self.name!r}: `kind` must be one of {kinds}, got {self.kind!r}.")
        if self.crafting is None and self.crafting_source is None:
            self.crafting_source = self.model  # crafted on this model's own logits: shareable (CraftCache)
        self.model = float32_model(self.model)
        model = self.model
        if self.scores is None:
            self.scores = lambda x: predict_logits(model, x)
        if self.answer is None and self.votes is not None:
            from .defences import majority_vote

            self.answer = lambda x: majority_vote(self.votes(x), len(CLASSES))[0]
        if self.answer is None:
            self.answer = lambda x: np.asarray(self.scores(x)).argmax(axis=1)
        if self.crafting is None:
            self.crafting = lambda loss: art_classifier(model, loss="cross_entropy" if loss == "scores" else loss)

    @property
    def randomized(self) -> bool:
        return self.kind in ("randomized", "smoothing")


def model_target(name: str, model, *, kind: str = "training", **settings) -> Target:
    """A deterministic model, attacked and answered through its own logits (the undefended victim: ``kind="none"``)."""
    return Target(name, kind, model, settings=settings)


def api_target(name: str, model, api, *, answer_draws: int = 100, seed: int = 0, **settings) -> Target:
    """An output defence: attacks are crafted on ``model``'s logits, the answer is the top class of what ``api``
    (an ART classifier with post-processors, e.g. :func:`octlib.estimators.victim_api`) returns. When a
    post-processor answers at random (output noise), the records say so (``settings["randomized_answer"]``) and
    the answer is scored in expectation: the majority of ``answer_draws`` fixed draws of it
    (:func:`octlib.defences.api_expected_votes`), a function of the scan."""
    from .defences import api_expected_votes
    from .metrics import predict_logits

    randomized = any(getattr(d, "randomized", False) for d in getattr(api, "postprocessing_defences", None) or [])
    if not randomized:
        return Target(name, "output", model, answer=lambda x: np.asarray(api.predict(x)).argmax(axis=1),
                      settings={**settings, "randomized_answer": False})
    return Target(name, "output", model,
                  votes=lambda x: api_expected_votes(api, predict_logits(model, x), answer_draws, seed=seed),
                  settings={**settings, "randomized_answer": True, "answer": "majority over fixed draws",
                            "answer_draws": answer_draws, "answer_seed": seed})


def input_target(name: str, model, preprocessor, *, adaptive: bool = True, **settings) -> Target:
    """An input-transform defence: the model answers ``preprocessor(x)`` (an ART pre-processor such as
    ``JpegCompression``, ``FeatureSqueezing`` or ``SpatialSmoothing``; :func:`octlib.defences.input_transforms`).
    Its loss is the cross-entropy of the model's logits on the transformed scan.

    ``adaptive=True`` (the defence's row): every attack crafts through the transform with BPDA (ART passes the
    gradient through a non-differentiable pre-processor unchanged: Athalye et al. 2018), and the score-based attack
    queries the defended model, so the transform cannot hide the gradient. ``adaptive=False``: the attacker who
    does not know the transform (the evaluation such defences were first published with): every attack, the
    score-based one included, crafts on the bare model and the crafted scans are answered through the transform
    (such targets can share one :class:`CraftCache`). Fold the two (:meth:`Evaluation.fold`): a scan is robust only
    if neither fooled it."""
    from .estimators import art_classifier
    from .metrics import predict_logits
    from .models import float32_model

    model = float32_model(model)  # answered and attacked in float32 (a no-op for a float32 model)

    def transformed(x):
        return np.asarray(preprocessor(np.asarray(x, dtype=np.float32))[0], dtype=np.float32)

    settings = {"transform": type(preprocessor).__name__,
                "attacker": "BPDA through the transform" if adaptive else "non-adaptive: crafted on the bare model",
                **settings}
    if not adaptive:  # crafted on the bare model's logits: shareable between transforms (CraftCache)
        return Target(name, "input", model, scores=lambda x: predict_logits(model, transformed(x)), settings=settings)
    return Target(name, "input", model, scores=lambda x: predict_logits(model, transformed(x)),
                  crafting=lambda loss: art_classifier(model, loss="cross_entropy" if loss == "scores" else loss,
                                                       preprocessors=[preprocessor]),
                  settings=settings)


def transform_evaluations(model, transforms: dict, scans, threat: ThreatModel, suite: SuiteConfig, *, seed: int = 0,
                          converge: bool = True, label: str = "non-adaptive") -> dict:
    """Every input transform of ``transforms`` (name -> ART pre-processor, :func:`octlib.defences.input_transforms`)
    in front of ``model``, evaluated on ``scans`` twice (:func:`input_target`): by the suite through the transform
    (BPDA; with ``converge``, also the convergence sweep at the headline ε) and by the attacker who ignores it (the
    suite on the bare model, crafted once for every transform through one :class:`CraftCache`, without the suite's
    fixed max-loss attack, which runs through the transform), the second folded into the first
    (:meth:`Evaluation.fold`: the loss is the higher of the two). Returns name -> ``(suite, non_adaptive)``: write
    ``suite.records() + non_adaptive.records(label=label)``."""
    from .estimators import quiet_retracing

    cache, out = CraftCache(), {}
    common = dict(scan_ids=scans.ids, patients=scans.patients, seed=seed, progress=False)
    # the fixed max-loss attack runs once, through the transform: the blind attacker's losses are folded in as found
    blind_suite = replace(suite, loss_attack=False)
    with quiet_retracing():  # ART traces each new classifier once, by design
        for name, pre in transforms.items():
            adaptive = evaluate(input_target(name, model, pre), scans.x, scans.y, threat, suite, converge=converge,
                                **common)
            blind = evaluate(input_target(name, model, pre, adaptive=False), scans.x, scans.y, threat, blind_suite,
                             cache=cache, **common)
            adaptive.fold(blind, label)
            adaptive.settings["crafts_shared"] = {"reused": cache.reused, "crafted": cache.crafted}
            out[name] = (adaptive, blind)
    return out


def noise_target(name: str, model, sigma: float, samples: int, eot_samples: int, *, seed: int = 0,
                 answer_draws: int = 100, **settings) -> Target:
    """Inference-time Gaussian noise: the defence answers the top class of the softmax averaged over ``samples``
    noisy copies (fresh draws on every call). It is scored in expectation, by the majority of ``answer_draws``
    fixed draws of that answer (:class:`octlib.defences.ExpectedNoiseAnswer`); its loss is the cross-entropy of the
    softmax averaged over all of them. Gradient attacks use EOT over ``eot_samples`` fresh draws
    (:func:`octlib.estimators.noise_classifier`); a score-based attacker (Square) queries the defence itself."""
    from .defences import ExpectedNoiseAnswer
    from .estimators import noise_classifier
    from .models import float32_model

    model = float32_model(model)  # answered and attacked in float32 (a no-op for a float32 model)
    expected = ExpectedNoiseAnswer(model, sigma, samples, answer_draws, seed=seed)
    draws = iter(range(seed + 1, seed + 1_000_000))

    def crafting(loss):
        if loss == "scores":  # a score-based attacker queries the defence itself
            return noise_classifier(model, sigma, samples, seed=next(draws))
        return noise_classifier(model, sigma, eot_samples, seed=next(draws), loss=loss)

    return Target(name, "randomized", model, answer=expected.answer, votes=expected.votes, scores=expected.scores,
                  crafting=crafting, eot_samples=eot_samples,
                  settings={"sigma": sigma, "samples": samples, **expected.settings, **settings})


@dataclass
class Evaluation:
    """The suite's result on one target: per-scan outcomes over the ε grid (see :mod:`octlib.evaluation`).

    Arrays indexed ``[ε, scan]``: ``robust`` (no suite attack fooled the scan at ε or below), ``loss`` (highest
    cross-entropy found), ``pred`` (the defence's answer on the scan's worst adversarial example so far);
    ``own`` holds, per attack of :data:`OWN_CURVE`, its own ``robust`` and ``loss`` arrays; ``fooled_by`` names
    the first attack that fooled each scan at each ε (``""``: robust or wrong when clean, ``"clean"``).
    For a randomized answer scored by majority (:attr:`Target.votes`), ``per_draw`` ``[ε, scan]`` is the share of
    draws answering right on the scan's worst adversarial example (``clean_per_draw`` on the clean scan).
    """

    target: str
    kind: str
    threat: ThreatModel
    suite: SuiteConfig
    y: np.ndarray
    scan_ids: np.ndarray
    patients: np.ndarray
    clean_pred: np.ndarray
    clean_loss: np.ndarray
    robust: np.ndarray
    loss: np.ndarray
    pred: np.ndarray
    fooled_by: np.ndarray
    own: dict
    cost: dict
    runtime_s: float
    settings: dict = field(default_factory=dict)
    per_draw: np.ndarray | None = None
    clean_per_draw: np.ndarray | None = None

    @property
    def clean_correct(self) -> np.ndarray:
        return self.clean_pred == self.y

    def robust_accuracy(self, attack: str = "suite") -> np.ndarray:
        """Robust accuracy per ε for the suite or one of :data:`OWN_CURVE`."""
        robust = self.robust if attack == "suite" else self.own[attack]["robust"]
        return robust.mean(axis=1)

    def fooled_by_table(self):
        """Per ε (rows, labelled), how many scans each attack fooled first; ``robust``: none did, ``clean``: wrong
        before any attack."""
        import pandas as pd

        counts = [pd.Series(list(f)).value_counts() for f in self.fooled_by]
        table = pd.DataFrame(counts, index=self.threat.labels).fillna(0).astype(int)
        return table.rename(columns={"": "robust"})

    def fold_sweep(self, sweep: dict, scans, eps_index: int) -> int:
        """Add a convergence sweep (:func:`attack_sweep`) run on this evaluation's scans at positions ``scans`` at
        grid point ``eps_index`` to the worst case per scan: a scan it fooled is fooled there and at every larger ε
        (the same adversarial scan is admissible there), named in ``fooled_by`` with the sweep's attack and setting.
        Returns how many scans it turned; the suite's own robust count there before the sweep stays in
        ``settings["robust_before_sweep"]``. The loss and the per-draw share of a turned scan stay as the suite found
        them (the sweep keeps neither)."""
        scans = np.asarray(scans)
        if len(scans) != sweep["n"]:
            raise ValueError(f"The sweep ran on {sweep['n']} scans, not the {len(scans)} given.")
        turned = 0
        self.settings.setdefault("robust_before_sweep", int(self.robust[eps_index].sum()))
        for j, label, answer in zip(scans, sweep["fooled_by"], sweep["pred"]):
            if label and self.robust[eps_index, j]:
                turned += 1
                self.robust[eps_index:, j] = False
                self.fooled_by[eps_index:, j] = np.where(self.fooled_by[eps_index:, j] == "", label,
                                                         self.fooled_by[eps_index:, j])
                self.pred[eps_index:, j] = np.where(self.pred[eps_index:, j] == self.y[j], answer,
                                                    self.pred[eps_index:, j])
        self.settings["sweep"] = {**{k: v for k, v in sweep.items() if k not in ("fooled_by", "pred")},
                                  "eps_index": int(eps_index), "scans": [str(self.scan_ids[j]) for j in scans],
                                  "turned": turned}
        return turned

    def fold(self, other: "Evaluation", label: str) -> int:
        """Add another evaluation of the same model's answers on the same scans and ε grid (e.g. the non-adaptive
        attacker of an input transform, :func:`input_target`) to the worst case per scan: a scan ``other`` fooled
        at ε is not robust there (named in ``fooled_by`` as ``label`` and the attack), and the loss is the higher of
        the two. Returns how many (ε, scan) outcomes it turned; per ε, the robust count before and the scans turned
        stay in ``settings["folded"][label]`` (many turned scans say the folded-in attacker found what this one
        missed)."""
        if list(map(str, other.scan_ids)) != list(map(str, self.scan_ids)) or other.threat.eps != self.threat.eps:
            raise ValueError(f"Cannot fold {other.target!r} into {self.target!r}: not the same scans and ε grid.")
        if not np.array_equal(other.clean_pred, self.clean_pred):
            raise ValueError(f"Cannot fold {other.target!r} into {self.target!r}: their clean answers differ, so "
                             "they are not the same model's answers.")
        turned = self.robust & ~other.robust
        before = self.robust.sum(axis=1)
        names = np.array([f"{label} {f}" for f in other.fooled_by.ravel()], dtype=object).reshape(turned.shape)
        self.fooled_by = np.where(turned, names, self.fooled_by)
        self.pred = np.where(turned, other.pred, self.pred)
        self.robust = self.robust & other.robust
        self.loss = np.maximum(self.loss, other.loss)
        self.settings.setdefault("folded", {})[label] = {
            "robust_before": before.astype(int).tolist(), "turned": turned.sum(axis=1).astype(int).tolist(),
            "attacker": other.settings.get("attacker", other.target)}
        self.settings["attacks"] = [*self.settings.get("attacks", self.suite.attacks),
                                    *(f"{label} {a}" for a in other.settings.get("attacks", other.suite.attacks))]
        self.cost = {**self.cost, "gradients": self.cost.get("gradients", 0) + other.cost.get("gradients", 0),
                     "queries": self.cost.get("queries", 0) + other.cost.get("queries", 0),
                     f"{label} gradients": other.cost.get("gradients", 0)}
        return int(turned.sum())

    def same_as(self, suite_rows) -> dict:
        """Whether this evaluation's per-scan outcomes and losses equal another model's suite ``rows`` (records in
        ε order, e.g. the undefended victim's): ``{"outcomes": bool, "loss": bool, "differing_outcomes": int}``,
        the last the number of (ε, scan) outcomes that differ (``None`` when the rows cover other ε or scans). An
        output defence that keeps the top class must match the undefended victim in both."""
        rows = sorted(suite_rows, key=lambda r: r["eps"])
        comparable = len(rows) == len(self.robust) and all(len(r["robust"]) == len(a) for a, r in zip(self.robust, rows))
        differing = (int(sum(np.sum(a != np.asarray(r["robust"], dtype=bool)) for a, r in zip(self.robust, rows)))
                     if comparable else None)
        loss = comparable and bool(np.allclose(self.loss, np.array([r["loss"] for r in rows])))
        return {"outcomes": differing == 0, "loss": bool(loss), "differing_outcomes": differing}

    def records(self, label: str | None = None) -> list[dict]:
        """Flat rows for :func:`octlib.records.write_records`: one per attack of :data:`OWN_CURVE` and one for the
        suite, per ε, each with per-scan ``robust``, ``loss`` and ``pred`` lists and the scans' IDs and patients.
        ``label`` (e.g. ``"non-adaptive"``) is appended to every attack name (``suite (non-adaptive)``), for rows
        kept beside a model's own suite rows without being read as them."""
        if label is not None:
            return [{**r, "attack": f"{r['attack']} ({label})"} for r in self.records()]
        rows = []
        settings = {**self.settings, "eot_samples": self.settings.get("eot_samples", 1)}
        for attack, curve in self.own.items():
            rows += outcome_rows(self.target, self.kind, attack, self.threat, self.y, self.clean_pred,
                                 self.clean_loss, curve["robust"], curve["loss"], self.scan_ids, self.patients,
                                 settings=settings, attacks=[attack])
        suite_rows = outcome_rows(self.target, self.kind, "suite", self.threat, self.y, self.clean_pred,
                                  self.clean_loss, self.robust, self.loss, self.scan_ids, self.patients,
                                  settings=settings, attacks=list(self.settings.get("attacks", self.suite.attacks)))
        for i, row in enumerate(suite_rows):
            row.update(pred=self.pred[i].tolist(), fooled_by=self.fooled_by[i].tolist(), cost=self.cost)
            if self.per_draw is not None:
                row.update(per_draw=np.round(self.per_draw[i], 4).tolist(),
                           per_draw_accuracy=float(self.per_draw[i].mean()),
                           clean_per_draw_accuracy=float(self.clean_per_draw.mean()))
        return rows + suite_rows


def outcome_rows(model: str, kind: str, attack: str, threat: ThreatModel, y, clean_pred, clean_loss, robust, loss,
                 scan_ids, patients, *, settings: dict | None = None, attacks=None) -> list[dict]:
    """The record rows of one (model, attack) over ``threat``'s grid from per-scan arrays: ``robust`` and ``loss``
    are ``[ε, scan]``; ``clean_pred``/``clean_loss`` per scan. Accuracy intervals are Wilson (95%). ``threat`` may
    also be another level axis with ``norm``, ``eps`` and ``label(level)`` (a corruption's severities,
    :mod:`octlib.clinical`)."""
    from .metrics import wilson_interval

    y, clean_pred, clean_loss = np.asarray(y), np.asarray(clean_pred), np.asarray(clean_loss, dtype=float)
    robust, loss = np.asarray(robust, dtype=bool), np.asarray(loss, dtype=float)
    clean_acc, mean_clean_loss = float((clean_pred == y).mean()), float(clean_loss.mean())
    rows = []
    for i, eps in enumerate(threat.eps):
        k = int(robust[i].sum())
        lo, hi = wilson_interval(k, len(y))
        rows.append({
            "model": model, "kind": kind, "attack": attack, "norm": threat.norm, "eps": float(eps),
            "eps_255": to_255(eps) if threat.norm == "inf" else None,
            "eps_label": threat.label(eps) if hasattr(threat, "label") else eps_label(eps, threat.norm),
            "n": int(len(y)), "clean_accuracy": clean_acc, "robust_accuracy": k / len(y), "ci_low": lo,
            "ci_high": hi, "clean_loss": mean_clean_loss, "attacked_loss": float(loss[i].mean()),
            "accuracy_drop": clean_acc - k / len(y), "loss_increase": float(loss[i].mean()) - mean_clean_loss,
            "attacks": list(attacks or [attack]), "scan_ids": [str(s) for s in scan_ids],
            "patients": [int(p) for p in patients], "y": y.tolist(), "clean_pred": clean_pred.tolist(),
            "clean_loss_per_scan": clean_loss.tolist(), "robust": robust[i].astype(int).tolist(),
            "loss": loss[i].tolist(), "settings": dict(settings or {}),
        })
    return rows


def answer_probes(target: Target, api, x, y, threat: ThreatModel, suite: SuiteConfig, *, hsj_idx=None,
                  hsj_settings: dict | None = None, scan_ids=None, patients=None, seed: int = 0) -> list[dict]:
    """Black-box probes through what an output defence **answers**, at the headline ε (L∞), as record rows:

    * ``Square on answers``: ART's Square attack (score-based) querying ``api`` itself, so it sees the label-only,
      reversed or noisy probabilities a client gets (``suite.square_queries`` queries per scan), on every scan the
      target answers right when clean;
    * ``HopSkipJump on labels`` (with ``hsj_idx``: the scans it attacks, fewer where its queries demand): ART's
      decision-based attack (:func:`octlib.attacks.hopskipjump`, L∞) on the top class ``api`` answers; a scan is
      fooled when the adversarial scan lies within ε and the target's answer is wrong.

    Both are scored through ``target.answer`` (in expectation for a randomized answer), beside the white-box suite,
    which crafts on the logits: white-box robust accuracy <= black-box <= clean
    (:func:`octlib.checks.black_box_above_white_box`).
    The rows' ``settings["probe"]`` names the probe; their loss is the model's own cross-entropy."""
    from .attacks import hopskipjump
    from .estimators import check_xy

    if threat.norm != "inf":
        raise ValueError("answer_probes runs at an L∞ headline ε; give an L∞ threat model.")
    x, y = check_xy(x, y)
    n = len(y)
    scan_ids = np.arange(n).astype(str) if scan_ids is None else np.asarray(scan_ids).astype(str)
    patients = np.arange(n) if patients is None else np.asarray(patients)
    eps = threat.headline
    at = ThreatModel("inf", eps_255=(to_255(eps),), headline_255=to_255(eps))
    clean_pred = np.asarray(target.answer(x))
    clean_loss = _ce(target.scores(x), y)
    correct = clean_pred == y
    rows = []
    t0 = time.perf_counter()
    idx = np.flatnonzero(correct)
    x_adv = x.copy()
    if len(idx):  # the suite's Square, with the API in place of the logits model
        x_adv[idx] = registry.get("Square").craft(lambda loss: api, x[idx], y[idx], eps, norm="inf", suite=suite,
                                                  seed=seed)[0]
    pred = np.asarray(target.answer(x_adv))
    loss = np.maximum(clean_loss, _ce(target.scores(x_adv), y))
    robust = correct & (pred == y)
    rows += outcome_rows(target.name, target.kind, "Square on answers", at, y, clean_pred, clean_loss, robust[None],
                         loss[None], scan_ids, patients,
                         settings={**target.settings, "probe": "score-based, through the answers",
                                   "square_queries": suite.square_queries, "seed": seed,
                                   "runtime_s": round(time.perf_counter() - t0, 2)})
    if hsj_idx is not None:
        t0 = time.perf_counter()
        hsj_idx = np.asarray(hsj_idx, dtype=int)
        xs, ys = x[hsj_idx], y[hsj_idx]
        run = hopskipjump(api, xs, ys, norm="inf", seed=seed, progress=False, **(hsj_settings or {}))
        within = np.abs(run.x_adv - xs).reshape(len(ys), -1).max(axis=1) <= eps + 1e-7
        answered = np.asarray(target.answer(run.x_adv))
        fooled = within & (answered != ys)
        loss_h = np.where(within, np.maximum(clean_loss[hsj_idx], _ce(target.scores(run.x_adv), ys)),
                          clean_loss[hsj_idx])
        rows += outcome_rows(target.name, target.kind, "HopSkipJump on labels", at, ys, clean_pred[hsj_idx],
                             clean_loss[hsj_idx], (correct[hsj_idx] & ~fooled)[None], loss_h[None],
                             scan_ids[hsj_idx], patients[hsj_idx],
                             settings={**target.settings, "probe": "decision-based, through the top class",
                                       "queries": int(run.extra["queries"]), "norm_hsj": "inf", "seed": seed,
                                       **(hsj_settings or {}), "runtime_s": round(time.perf_counter() - t0, 2)})
    return rows


def _ce(scores, y) -> np.ndarray:
    from .metrics import cross_entropy

    return cross_entropy(y, scores, per_example=True)


class CraftCache:
    """Adversarial scans crafted once and shared by every target attacked through the same logits model.

    The output defences of notebook 41 (label-only, output noise, ReverseSigmoid over the victim) are all attacked
    on the victim's own logits; only what they answer differs. :func:`evaluate` with a cache looks each
    (attack, ε, scan) up before crafting, the suite's fixed max-loss attack included (with one start), and crafts
    only the scans not found, so a top-class-keeping answer, whose
    scans alive at each step are the victim's, costs no crafting at all after the victim's own evaluation, with
    outcomes identical to crafting anew. A scan crafted in another batch got another random start (PGD, APGD,
    Square): an equally valid draw of the same attack. PGD with more than one restart, which picks its restart by
    what the target answers, is never shared. The cache binds to the first crafting model and scans it serves and
    refuses others, and a randomized defence (its crafting draws noise) cannot use it.
    """

    def __init__(self):
        self._store: dict = {}
        self._binding = None
        self.reused = 0  # (attack, ε, scan) crafts found
        self.crafted = 0  # crafted and stored
        self.unshared = 0  # crafted for one target only (PGD with several restarts)

    def bind(self, target: Target, x) -> None:
        if target.crafting_source is None:
            raise ValueError(f"Target {target.name!r} crafts through its own classifier (e.g. EOT over noise): its "
                             "adversarial scans cannot be shared; evaluate it without `cache`.")
        import hashlib

        key = (id(target.crafting_source), x.shape, hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest())
        if self._binding is None:
            self._binding, self._source = key, target.crafting_source  # keep the model alive: ids stay unique
        elif key != self._binding:
            raise ValueError(f"This CraftCache holds scans crafted on another model or other scans than those of "
                             f"target {target.name!r}: use one cache per crafting model and scan set.")

    def lookup(self, key: tuple, idx: np.ndarray) -> tuple[dict, np.ndarray]:
        """The stored scans for ``key`` and the positions of ``idx`` still to craft."""
        store = self._store.setdefault(key, {})
        todo = np.array([j for j in idx if int(j) not in store], dtype=int)
        self.reused += len(idx) - len(todo)
        self.crafted += len(todo)
        return store, todo


def evaluate(target: Target, x, y, threat: ThreatModel, suite: SuiteConfig, *, scan_ids=None, patients=None,
             seed: int = 0, skip_fooled: bool = True, progress: bool = True,
             cache: CraftCache | None = None, converge: bool = False) -> Evaluation:
    """Run the attack suite on ``target`` over ``threat``'s ε grid, worst case per scan (see the module docs).

    Args:
        target: the model and how its defence answers (:func:`model_target`, :func:`api_target`,
            :func:`noise_target`).
        x: float32 scans ``(N, S, S, 1)`` in [0, 1]; y: integer labels.
        threat: norm and ε grid; Square and APGD-T run at ``threat.headline`` only.
        suite: which attacks and their settings (:class:`octlib.config.SuiteConfig`).
        scan_ids, patients: per-scan IDs (e.g. file paths) and patient IDs, kept in the records so that models
            are paired scan by scan and intervals resample patients (default: positions, one patient per scan).
        skip_fooled: do not attack again a scan already fooled at a smaller ε (default). ``False`` attacks every
            correctly classified scan at every ε (for the benchmark that shows both give the same robust accuracy).
        cache: a :class:`CraftCache` shared with other targets attacked through the same logits model on the same
            scans (output defences): each (attack, ε, scan) is crafted once.
        converge: then run the convergence sweep (:func:`attack_sweep`, ``suite.sweep_settings`` and
            ``sweep_attacks``) on the scans left standing at the headline ε and fold what it fools into the worst
            case (:meth:`Evaluation.fold_sweep`; the sweep is kept in ``settings["sweep"]``).
    """
    from tqdm.auto import tqdm

    from .estimators import check_xy

    x, y = check_xy(x, y)
    if cache is not None:
        cache.bind(target, x)
    n, grid = len(y), threat.eps
    for a in suite.attacks:
        if a not in registry.suite_names():
            raise ValueError(f"Unknown attack {a!r} in the suite; use some of {registry.suite_names()}.")
    if threat.norm == "inf":
        for e in grid:
            check_eps(e)
    scan_ids = np.arange(n).astype(str) if scan_ids is None else np.asarray(scan_ids).astype(str)
    patients = np.arange(n) if patients is None else np.asarray(patients)
    if len(scan_ids) != n or len(patients) != n:
        raise ValueError(f"`scan_ids` ({len(scan_ids)}) and `patients` ({len(patients)}) need one entry per scan "
                         f"({n}).")
    attacks = list(suite.attacks)
    if target.randomized:  # e.g. ART's APGD builds its own classifier and would drop the EOT; margin PGD keeps it
        attacks = list(dict.fromkeys(registry.get(a).randomized or a for a in attacks))

    t0 = time.perf_counter()
    clean_pred = np.asarray(target.answer(x))
    clean_loss = _ce(target.scores(x), y)
    correct = clean_pred == y
    E = len(grid)
    robust = np.zeros((E, n), dtype=bool)
    loss = np.zeros((E, n))
    pred = np.zeros((E, n), dtype=np.int64)
    fooled_by = np.full((E, n), "", dtype=object)
    own = {a: {"robust": np.zeros((E, n), dtype=bool), "loss": np.zeros((E, n))} for a in attacks if a in OWN_CURVE}
    spent = {"gradients": 0, "queries": 0, "loss_gradients": 0}
    seconds = {a: 0.0 for a in attacks}
    baseline = {"gradients": 0, "queries": 0}
    headline = int(np.argmin(np.abs(np.asarray(grid) - threat.headline)))
    crafting = {}

    def clf(loss_name):
        if loss_name not in crafting:
            crafting[loss_name] = target.crafting(loss_name)
        return crafting[loss_name]

    def score(xa, idx):
        return _ce(target.scores(xa), y[idx])

    def share(xa, ys, pa):  # per-draw accuracy: the share of the answer's draws that are right
        if target.votes is None:
            return (np.asarray(pa) == ys).astype(float)
        return (np.asarray(target.votes(xa)) == ys).mean(axis=0)

    cur_robust, cur_loss, cur_pred = correct.copy(), clean_loss.copy(), clean_pred.copy()
    max_loss = clean_loss.copy()
    clean_share = share(x, y, clean_pred) * correct  # a scan answered wrong clean is never counted right
    cur_share, per_draw = clean_share.copy(), np.zeros((E, n))
    cur_fooled_by = np.where(correct, "", "clean").astype(object)
    for a in own:
        own[a]["cur"] = (correct.copy(), clean_loss.copy())
    bar = tqdm(total=E * len(attacks), desc=f"{target.name}: suite", disable=not progress, leave=False)
    for i, eps in enumerate(grid):
        for attack in attacks:
            bar.update(1)
            if registry.get(attack).headline_only and i != headline:
                continue
            if attack in own:
                alive = own[attack]["cur"][0] if skip_fooled else correct
            else:
                alive = cur_robust if skip_fooled else correct
            idx = np.flatnonzero(alive)
            per_scan = registry.cost(attack, suite, target.eot_samples)
            baseline["gradients"] += per_scan["gradients"] * int(correct.sum())
            baseline["queries"] += per_scan["queries"] * int(correct.sum())
            if not len(idx):
                continue
            spent["gradients"] += per_scan["gradients"] * len(idx)
            spent["queries"] += per_scan["queries"] * len(idx)
            xs, ys = x[idx], y[idx]
            seed_i = seed + 7919 * i
            t_attack = time.perf_counter()
            shared = cache is not None and registry.get(attack).shareable(suite)
            if shared:  # craft only the scans no earlier target crafted (the same attack, ε and settings)
                key = (attack, threat.norm, float(eps), seed_i, suite.pgd_steps, suite.pgd_restarts,
                       suite.apgd_steps, suite.apgd_restarts, suite.square_queries, suite.batch_size)
                store, todo = cache.lookup(key, idx)
                if len(todo):
                    made = registry.get(attack).craft(clf, x[todo], y[todo], eps, norm=threat.norm, suite=suite,
                                                      seed=seed_i, answer=target.answer)[0]
                    store.update({int(j): made[k] for k, j in enumerate(todo)})
                xa = np.stack([store[int(j)] for j in idx])
                la, pa = score(xa, idx), None
            else:
                if cache is not None:
                    cache.unshared += len(idx)
                xa, la, pa = registry.get(attack).craft(clf, xs, ys, eps, norm=threat.norm, suite=suite, seed=seed_i,
                                                        answer=target.answer, score=lambda xa: score(xa, idx))
                la = score(xa, idx) if la is None else la
            pa = np.asarray(target.answer(xa)) if pa is None else pa
            seconds[attack] += time.perf_counter() - t_attack
            fooled = pa != ys
            sh = share(xa, ys, pa)
            alive_before = cur_robust[idx]
            cur_share[idx[alive_before]] = np.minimum(cur_share[idx[alive_before]], sh[alive_before])
            if attack in own:
                r, l = own[attack]["cur"]
                r[idx] &= ~fooled
                l[idx] = np.maximum(l[idx], la)
            newly = fooled & cur_robust[idx]
            cur_fooled_by[idx[newly]] = attack
            cur_pred[idx[newly]] = pa[newly]
            keep_pred = ~fooled & cur_robust[idx] & (la > cur_loss[idx])  # robust: the answer at the highest loss
            cur_pred[idx[keep_pred]] = pa[keep_pred]
            cur_robust[idx] &= ~fooled
            cur_loss[idx] = np.maximum(cur_loss[idx], la)
        if suite.loss_attack:  # one fixed max-loss attack on every scan (never early-exited)
            t_attack = time.perf_counter()
            loss_kw = dict(norm=threat.norm, steps=suite.pgd_steps, restarts=suite.pgd_restarts,
                           seed=seed + 7919 * i + 1, batch_size=suite.batch_size)
            crafted = n
            if cache is not None and suite.pgd_restarts <= 1:  # one start: the scans depend on the logits alone
                store, todo = cache.lookup(("loss attack", float(eps), *loss_kw.values()), np.arange(n))
                if len(todo):
                    made = registry.pgd_best(clf("cross_entropy"), x[todo], y[todo], eps,
                                             score=lambda xa, todo=todo: score(xa, todo), **loss_kw)[0]
                    store.update({int(j): made[k] for k, j in enumerate(todo)})
                la, crafted = score(np.stack([store[j] for j in range(n)]), slice(None)), len(todo)
            else:
                _, la, _, _ = registry.pgd_best(clf("cross_entropy"), x, y, eps,
                                                score=lambda xa: score(xa, slice(None)), **loss_kw)
            max_loss = np.maximum(max_loss, la)
            seconds["loss attack"] = seconds.get("loss attack", 0.0) + time.perf_counter() - t_attack
            spent["loss_gradients"] += suite.pgd_steps * max(1, suite.pgd_restarts) * target.eot_samples * crafted
        robust[i], loss[i], pred[i], fooled_by[i], per_draw[i] = (
            cur_robust, max_loss if suite.loss_attack else cur_loss, cur_pred, cur_fooled_by, cur_share)
        for a in own:
            own[a]["robust"][i], own[a]["loss"][i] = own[a]["cur"][0], own[a]["cur"][1]
    bar.close()
    for a in own:
        del own[a]["cur"]
    cost = {"gradients": spent["gradients"], "queries": spent["queries"], "loss_gradients": spent["loss_gradients"],
            "gradients_without_skipping": baseline["gradients"], "queries_without_skipping": baseline["queries"],
            "gradients_saved": baseline["gradients"] - spent["gradients"], "skip_fooled": skip_fooled,
            "seconds_by_attack": {a: round(v, 2) for a, v in seconds.items()}}
    settings = {**target.settings, "eot_samples": target.eot_samples, "attacks": attacks,
                "pgd_steps": suite.pgd_steps, "pgd_restarts": suite.pgd_restarts, "apgd_steps": suite.apgd_steps,
                "apgd_restarts": suite.apgd_restarts, "square_queries": suite.square_queries,
                "square_eps": float(grid[headline]), "seed": seed,
                "headline_only": [a for a in attacks if registry.get(a).headline_only],
                "loss_attack": (f"PGD-{suite.pgd_steps} × {max(1, suite.pgd_restarts)} on every scan"
                                if suite.loss_attack else "the suite's highest loss (early-exited)")}
    result = Evaluation(target=target.name, kind=target.kind, threat=threat, suite=suite, y=y, scan_ids=scan_ids,
                        patients=patients, clean_pred=clean_pred, clean_loss=clean_loss, robust=robust.copy(),
                        loss=loss, pred=pred, fooled_by=fooled_by, own=own, cost=cost,
                        runtime_s=time.perf_counter() - t0, settings=settings,
                        per_draw=per_draw if target.votes is not None else None,
                        clean_per_draw=clean_share if target.votes is not None else None)
    if converge:
        standing = np.flatnonzero(result.robust[headline])
        n_standing = len(standing)
        if suite.sweep_max_scans is not None and n_standing > suite.sweep_max_scans:
            standing = np.sort(np.random.default_rng(seed + 4099).choice(standing, suite.sweep_max_scans,
                                                                         replace=False))
        sweep = attack_sweep(target, x[standing], y[standing], grid[headline], suite.sweep_settings, suite=suite,
                             attacks=suite.sweep_attacks, norm=threat.norm, tolerance=suite.eot_tolerance, seed=seed)
        result.settings["sweep_turned"] = result.fold_sweep(sweep, standing, headline)
        result.settings["sweep"].update(n_standing=int(n_standing), sampled=bool(len(standing) < n_standing))
        sweep_gradients = sum(p["gradients"] for p in sweep["points"])
        result.cost.update(gradients=result.cost["gradients"] + sweep_gradients, sweep_gradients=sweep_gradients)
        result.runtime_s = time.perf_counter() - t0
    return result


def eot_convergence(model, sigma: float, samples: int, x, y, eps: float, schedule, *, norm: str = "inf",
                    seed: int = 0, tolerance: int = 1, batch_size: int = 128, answer_draws: int = 100) -> dict:
    """Grow EOT until robust accuracy stops falling: PGD on the loss of the averaged softmax over ``s`` fresh noise
    draws for ``t`` steps (:func:`octlib.estimators.noise_classifier`), for each ``(s, t)`` of ``schedule``
    (increasing; the first is the *plain* attack when ``s = 1``), against inference noise σ averaging ``samples``
    copies, on the scans it answers right. Every answer is the defence's answer in expectation (the majority of
    ``answer_draws`` fixed draws, :class:`octlib.defences.ExpectedNoiseAnswer`): a function of the scan.

    Each setting attacks every scan answered right clean; a scan counts as robust at a setting only if no setting
    up to it fooled it (the worst case per scan, as in the suite), so robust accuracy cannot rise along the
    schedule: at every setting EOT is at least as strong as the plain attack by construction, and what is left to
    check is each setting's *own* result, paired scan by scan against the plain attack's
    (:func:`octlib.checks.eot_beats_plain`). Converged at the first setting ``c`` after which **two
    consecutive growths** each fool at most ``tolerance`` more scans; the suite uses setting ``c + 1`` (the first
    growth that bought nothing: a stronger attack than ``c`` at half the cost of ``c + 2``). When no setting
    converges, the last one is used and ``reached`` is ``False``.

    Returns ``{"points": [{"eot_samples", "steps", "robust" (cumulative scans), "robust_accuracy" (cumulative),
    "own_robust", "own_robust_accuracy", "per_draw_accuracy" (cumulative), "fooled" (own, per scan), "n",
    "gradients"}], "converged": (s, t), "converged_index", "plateau_index", "reached", "tolerance",
    "answer_draws", "n", "fooled_by", "pred"}`` (per scan: the first setting that fooled it and the answer then,
    so that :meth:`Evaluation.fold_sweep` can add the study to the suite's worst case at its ε).
    """
    from .attacks import pgd
    from .defences import ExpectedNoiseAnswer
    from .estimators import noise_classifier
    from .models import float32_model

    x, y = np.asarray(x, dtype=np.float32), np.asarray(y)
    if len(schedule) < 1 or any(len(p) != 2 for p in schedule):
        raise ValueError(f"`schedule` must be (draws, steps) pairs, got {schedule!r}.")
    model = float32_model(model)  # attacked and answered in float32, as every target (a no-op for float32 models)
    expected = ExpectedNoiseAnswer(model, sigma, samples, answer_draws, seed=seed)
    correct = expected.answer(x) == y
    share = (expected.votes(x) == y).mean(axis=0) * correct
    alive, points = correct.copy(), []
    fooled_by, pred = np.full(len(y), "", dtype=object), np.full(len(y), -1, dtype=np.int64)
    for k, (s, t) in enumerate(schedule):
        attacker = noise_classifier(model, sigma, int(s), seed=seed + 101 + k)
        idx = np.flatnonzero(correct)
        fooled = np.zeros(len(y), dtype=bool)
        if len(idx):
            xa = pgd(attacker, x[idx], y[idx], eps, norm=norm, steps=int(t), restarts=0, seed=seed,
                     batch_size=batch_size, progress=False).x_adv
            votes = expected.votes(xa)
            own_share = (votes == y[idx]).mean(axis=0)
            answers = expected.answer(xa)
            fooled[idx] = answers != y[idx]
            share[idx] = np.where(alive[idx], np.minimum(share[idx], own_share), share[idx])
            newly = fooled[idx] & alive[idx]
            fooled_by[idx[newly]], pred[idx[newly]] = f"PGD-EOT {int(s)}x{int(t)}", answers[newly]
        alive &= ~fooled
        points.append({"eot_samples": int(s), "steps": int(t), "robust": int(alive.sum()),
                       "robust_accuracy": float(alive.mean()), "own_robust": int((correct & ~fooled).sum()),
                       "own_robust_accuracy": float((correct & ~fooled).mean()),
                       "per_draw_accuracy": float(share.mean()), "fooled": fooled.astype(int).tolist(),
                       "n": int(len(y)), "gradients": int(s) * int(t) * int(correct.sum())})
    converged, plateau, reached = _two_quiet_growths([p["robust"] for p in points], tolerance)
    return {"points": points, "converged": (points[converged]["eot_samples"], points[converged]["steps"]),
            "converged_index": converged, "plateau_index": plateau, "reached": reached, "tolerance": tolerance,
            "answer_draws": answer_draws, "n": int(len(y)), "fooled_by": fooled_by.tolist(), "pred": pred.tolist()}


def _two_quiet_growths(robust, tolerance: int) -> tuple[int, int | None, bool]:
    """``(converged index, plateau index, reached)`` of a cumulative robust count along growing attack settings:
    converged at the first setting ``c`` after which two consecutive growths each fool at most ``tolerance`` more
    scans, and the setting to use is ``c + 1``; when none, the last setting, ``reached`` False."""
    for c in range(len(robust) - 2):
        if all(robust[j] - robust[j + 1] <= tolerance for j in (c, c + 1)):
            return c + 1, c, True
    return len(robust) - 1, None, False


def attack_sweep(target: Target, x, y, eps: float, settings, *, suite: SuiteConfig, attacks=None, norm: str = "inf",
                 tolerance: int = 1, seed: int = 0) -> dict:
    """Is robust accuracy at ``eps`` converged? The attacks of ``attacks`` (default: the suite's gradient attacks
    other than FGSM) are run again on the scans ``x`` (e.g. those the suite left standing at the headline ε) with
    growing ``settings``, ``(steps, restarts)`` pairs applied to PGD and APGD alike, and a scan counts as robust at
    a setting only if no attack at any setting up to it fooled it (so the count cannot rise). Converged after two
    consecutive growths that each fool at most ``tolerance`` more scans (:func:`eot_convergence`'s rule); the
    settings after that are not run.

    Returns ``{"points": [{"steps", "restarts", "robust", "own_robust", "gradients"}], "n", "converged": (steps,
    restarts), "converged_index", "reached", "attacks", "tolerance", "fooled_by", "pred"}`` (``fooled_by``: per
    scan, the first setting and attack that fooled it, ``""`` if none; ``pred``: the answer then, -1 if none).
    :meth:`Evaluation.fold_sweep` adds it to the suite's worst case."""
    from dataclasses import replace

    from .estimators import check_xy

    x, y = check_xy(x, y)
    attacks = [a for a in (attacks or suite.attacks) if a not in ("FGSM", "Square")]
    if target.randomized:
        attacks = list(dict.fromkeys(registry.get(a).randomized or a for a in attacks))
    for a in attacks:
        registry.get(a)
    if not settings or any(len(p) != 2 or p[0] < 1 or p[1] < 0 for p in settings):
        raise ValueError(f"`settings` must be (steps >= 1, restarts >= 0) pairs, got {settings!r}.")
    crafting = {}

    def clf(loss_name):
        if loss_name not in crafting:
            crafting[loss_name] = target.crafting(loss_name)
        return crafting[loss_name]

    alive = np.ones(len(y), dtype=bool)
    fooled_by = np.full(len(y), "", dtype=object)
    pred = np.full(len(y), -1, dtype=np.int64)
    points = []
    for k, (steps, restarts) in enumerate(settings):
        s = replace(suite, pgd_steps=int(steps), pgd_restarts=int(restarts), apgd_steps=int(steps),
                    apgd_restarts=max(1, int(restarts)))
        own = np.ones(len(y), dtype=bool)
        gradients = 0
        for attack in attacks:
            idx = np.flatnonzero(own)
            if not len(idx):
                break
            xa, _, pa = registry.get(attack).craft(
                clf, x[idx], y[idx], eps, norm=norm, suite=s, seed=seed + 7919 * k, answer=target.answer,
                score=lambda xa, idx=idx: _ce(target.scores(xa), y[idx]))
            pa = np.asarray(target.answer(xa)) if pa is None else pa
            fooled = pa != y[idx]
            gradients += registry.cost(attack, s, target.eot_samples)["gradients"] * len(idx)
            newly = fooled & alive[idx]
            fooled_by[idx[newly]] = f"{attack} {steps}x{restarts}"
            pred[idx[newly]] = pa[newly]
            own[idx[fooled]] = False
        alive &= own
        points.append({"steps": int(steps), "restarts": int(restarts), "robust": int(alive.sum()),
                       "own_robust": int(own.sum()), "gradients": int(gradients)})
        if _two_quiet_growths([p["robust"] for p in points], tolerance)[2]:
            break  # converged: larger settings are not run
    converged, _, reached = _two_quiet_growths([p["robust"] for p in points], tolerance)
    return {"points": points, "n": int(len(y)), "attacks": attacks, "tolerance": tolerance, "reached": reached,
            "converged": (points[converged]["steps"], points[converged]["restarts"]), "converged_index": converged,
            "fooled_by": fooled_by.tolist(), "pred": pred.tolist()}


def converged_eot(sigmas, *, victim: str, name: str = "44_defence_randomized_noise", results_dir=None) -> dict:
    """The converged ``(draws, steps)`` per input-noise σ, read from the EOT convergence study that notebook 44
    stored (files are the interface between notebooks: randomized smoothing in notebook 46 attacks with what EOT
    needed there). Raises :class:`octlib.results.ResultsError` naming the fix when the study is missing, was
    run on another victim, or lacks a σ."""
    from .results import ResultsError, load_results

    record = load_results(name, results_dir)
    metrics = record["metrics"]
    if metrics.get("victim") != victim:
        raise ResultsError(f"Results {name!r} attacked victim {metrics.get('victim')!r}, not {victim!r}: rerun "
                           f"notebook {name.split('_')[0]} on this victim first.")
    studies = metrics.get("eot_convergence") or {}
    found = {}
    for sigma in sigmas:
        key = next((k for k in studies if np.isclose(float(k), float(sigma))), None)
        if key is None:
            raise ResultsError(f"Results {name!r} hold no EOT convergence study for σ={sigma:g} (they have "
                               f"{sorted(studies)}): rerun notebook {name.split('_')[0]} with SIGMAS including it.")
        draws, steps = studies[key]["converged"]
        found[float(sigma)] = (int(draws), int(steps))
    return found


@dataclass
class Scans:
    """The evaluation scans every model is attacked on: pixels, labels, IDs (relative paths) and patients."""

    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray
    patients: np.ndarray
    n_available: int

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, n: int | None, seed: int = 0) -> "Scans":
        """A class-stratified, seeded subset of about ``n`` of these scans (all of them for ``None``)."""
        from .attacks import stratified_subset

        idx = stratified_subset(self.y, n, seed=seed)
        return Scans(self.x[idx], self.y[idx], self.ids[idx], self.patients[idx], self.n_available)


def evaluation_scans(splits, suite: SuiteConfig, *, seed: int = 0) -> Scans:
    """The evaluation scans of the evasion and defence notebooks: the test split, class-stratified to
    ``suite.n_scans``: the same scans in every notebook, for every model. Patients are the split groups (patient
    IDs merged over pixel-identical images).

    Every test patient counts here, including those the extraction notebooks hand to their attacker as its own
    scans (:func:`octlib.data.carve_query_pool`): an evasion attacker needs no scans of its own, and these patients
    were never used for training or model selection. Model extraction is measured on the other test patients."""
    test = splits.test
    scans = Scans(test.x, test.labels, np.asarray(test.paths).astype(str), np.asarray(test.groups), len(test))
    return scans.subset(suite.n_scans, seed=seed)


def seed_spread(models: dict, scans: Scans, threat: ThreatModel, suite: SuiteConfig, *, seed: int = 0,
                progress: bool = True) -> dict:
    """Clean and robust accuracy of one training recipe under different training seeds: ``models`` maps each seed
    to its trained model (a Keras model, or a :class:`octlib.artifacts.TrainedModel`, whose sidecar then adds the
    whole test split's accuracy and the artifact's name); each faces the same ``suite`` on the same ``scans`` over
    ``threat``'s ε grid.

    Returns ``{"per_seed": {seed: {"clean_accuracy", "clean_loss", "robust_accuracy": {eps_255: value}[,
    "test_accuracy", "artifact"]}}, "summary": {"clean_accuracy": spread, "robust_accuracy": {eps_255: spread}[,
    "test_accuracy": spread]}, "n_scans", "eps_255", "attacks"}`` with :func:`octlib.stats.spread` (mean, sd, min,
    max, n) over seeds: the training noise against which a difference between two models should be read. The
    suite's fixed max-loss attack is not run (the spread reports accuracies only; it cost every seed a PGD on every
    scan at every ε)."""
    from dataclasses import replace

    from .stats import spread

    suite = replace(suite, loss_attack=False)
    if not models:
        raise ValueError("`models` must map at least one training seed to its model.")
    per_seed = {}
    for s, trained in models.items():
        model = getattr(trained, "model", trained)
        ev = evaluate(model_target(f"seed {s}", model, kind="none"), scans.x, scans.y, threat, suite,
                      scan_ids=scans.ids, patients=scans.patients, seed=seed, progress=progress)
        row = {"clean_accuracy": float(ev.clean_correct.mean()), "clean_loss": float(ev.clean_loss.mean()),
               "robust_accuracy": {f"{e:g}": float(a) for e, a in zip(threat.eps_255, ev.robust_accuracy())}}
        sidecar = getattr(trained, "sidecar", None)
        if sidecar:
            row.update(test_accuracy=float(sidecar["metrics"]["test"]["accuracy"]["value"]),
                       artifact=trained.path.name)
        per_seed[int(s)] = row
    keys = [f"{e:g}" for e in threat.eps_255]
    summary = {"clean_accuracy": spread([p["clean_accuracy"] for p in per_seed.values()]),
               "robust_accuracy": {k: spread([p["robust_accuracy"][k] for p in per_seed.values()]) for k in keys}}
    if all("test_accuracy" in p for p in per_seed.values()):
        summary["test_accuracy"] = spread([p["test_accuracy"] for p in per_seed.values()])
    return {"per_seed": per_seed, "summary": summary, "n_scans": len(scans), "eps_255": list(threat.eps_255),
            "attacks": list(suite.attacks)}


def smoothing_records(name: str, certified: dict, scans: Scans, *, cert_radius: float | None = None) -> list[dict]:
    """Record rows of a randomized-smoothing model from :func:`octlib.defences.certify` on ``scans``: per L2
    radius > 0 of its curve, a ``certified`` row (certified class right with a radius at least r), and per
    radius > 0 of its empirical check an ``L2 PGD + EOT`` row (the same smoothed classifier's answer under the
    empirical attack), both L2. An abstention counts as an error; the rows carry no loss (smoothing answers
    classes only)."""
    pred, radius = np.array(certified["pred"]), np.array(certified["radius"])
    if len(pred) != len(scans):
        raise ValueError(f"smoothing_records({name!r}): {len(pred)} certified scans for {len(scans)} scans.")
    settings = {k: certified[k] for k in ("n0", "n", "alpha")}
    rows = []
    radii = np.array([p["radius"] for p in certified["curve"]])
    emp_radii = np.array([p["radius"] for p in certified["empirical"]])
    for attack, grid, ok in (
            ("certified", radii[radii > 0], lambda: [(pred == scans.y) & (radius >= r) for r in radii[radii > 0]]),
            ("L2 PGD + EOT", emp_radii[emp_radii > 0],
             lambda: np.array(certified["empirical_correct"])[emp_radii > 0].astype(bool))):
        if not len(grid):
            continue
        headline = cert_radius if cert_radius is not None and np.isclose(grid, cert_radius).any() else None
        threat = ThreatModel("2", radii=tuple(float(r) for r in grid), headline_255=headline)
        rows += outcome_rows(name, "smoothing", attack, threat, scans.y, pred, np.zeros(len(scans)), np.array(ok()),
                             np.zeros((len(grid), len(scans))), scans.ids, scans.patients, settings=settings)
    return rows
