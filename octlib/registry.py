"""The attacks of the evaluation suite, in one table: name -> how it is crafted, whether it is bounded by ε, what it
costs per scan, what a randomized defence faces instead, and its paper.

The suite (:func:`octlib.evaluation.evaluate`) runs the attacks :class:`octlib.config.SuiteConfig` names, in its
order, by looking each one up here; the suite's settings accept exactly these names; the cost it reports comes
from here. A new attack is one :func:`register` call (see ``docs/extending.md``).

Each ``craft(clf, xs, ys, eps, *, norm, suite, seed, answer, score)`` returns ``(x_adv, loss or None, answer or
None)``: ``clf(loss)`` gives the ART classifier to craft on (``"cross_entropy"``, ``"margin"``, or ``"scores"``:
what a score-based attacker queries, :class:`octlib.evaluation.Target`); ``answer`` (scans -> the defence's
class) and ``score`` (scans -> per-scan loss) are given when the attack may choose among its own candidates
(PGD's restarts); a ``None`` loss or answer is computed by the suite.

ART is imported when an attack is crafted, not with this table: :class:`octlib.config.SuiteConfig` reads the names
here, and importing ART takes 3-9 s (measured on these 2-core machines), which every ``import octlib`` would pay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .labels import CLASSES


@dataclass(frozen=True)
class Attack:
    """One attack of the suite.

    Attributes:
        name: its name in settings, records and tables.
        craft: see the module docs.
        gradients: ``suite -> input gradients per scan`` (each EOT draw counts again, :func:`cost`).
        queries: ``suite -> forward queries per scan`` (score-based attacks).
        bounded: crafted within the ε-ball (``False``: a minimal-perturbation attack, which has no ε and cannot
            join a suite that scores robustness at each ε).
        own_curve: its own robust-accuracy curve is kept beside the suite's (it skips only the scans it fooled).
        shareable: ``suite -> bool``: whether its adversarial scans depend on the model's logits alone and can be
            shared between targets crafted on one model (:class:`octlib.evaluation.CraftCache`); ``False`` when it
            picks among candidates by what the target answers (PGD's restarts, APGD-T's targets).
        randomized: the attack a randomized defence faces instead (``None``: the same), e.g. APGD, which rebuilds
            its own classifier in ART and would drop the EOT, is replaced by PGD on the margin with EOT.
        headline_only: run at the suite's headline ε only (as AutoAttack is run at one ε): the expensive probes,
            Square (queries) and APGD-T (one run per target class), whose cost at the small ε of the grid, where
            most scans of a robust model stand, would dominate the suite.
        paper: where it comes from.
    """

    name: str
    craft: Callable
    gradients: Callable = lambda suite: 0
    queries: Callable = lambda suite: 0
    bounded: bool = True
    own_curve: bool = False
    shareable: Callable = lambda suite: True
    randomized: str | None = None
    headline_only: bool = False
    paper: str = ""


ATTACKS: dict[str, Attack] = {}


def register(attack: Attack) -> Attack:
    """Add ``attack`` to the table (a name already there is refused: one meaning per name)."""
    if attack.name in ATTACKS:
        raise ValueError(f"An attack named {attack.name!r} is registered already.")
    ATTACKS[attack.name] = attack
    return attack


def get(name: str) -> Attack:
    """The registered attack ``name``; an error listing the registered ones otherwise."""
    if name not in ATTACKS:
        raise ValueError(f"Unknown attack {name!r}; registered: {list(ATTACKS)}.")
    return ATTACKS[name]


def suite_names() -> tuple[str, ...]:
    """The attacks a suite can run: the bounded ones."""
    return tuple(n for n, a in ATTACKS.items() if a.bounded)


def cost(name: str, suite, eot_samples: int = 1) -> dict:
    """Input gradients (per scan, counting every EOT draw) and forward queries one attack spends per scan."""
    attack = get(name)
    return {"gradients": int(attack.gradients(suite)) * eot_samples, "queries": int(attack.queries(suite))}


def pgd_best(clf, x, y, eps, *, norm, steps, restarts, seed, batch_size, score, answer=None):
    """PGD with ``restarts`` random starts run one at a time (never ART's own restart loop, which picks restarts
    through ``predict``). Per scan it keeps the highest-loss restart (``score(x_adv)`` -> per-scan loss), except
    that a restart whose answer (``answer(x_adv)`` -> class per scan) is wrong wins over one that is not: a scan
    counts as fooled if any restart fools it. Returns ``(x_adv, highest loss, fooled, answer on x_adv)``."""
    from . import attacks

    y = np.asarray(y)
    best_x = best_loss = best_fooled = best_pred = top_loss = None
    for r in range(max(1, restarts)):
        run = attacks.pgd(clf, x, y, eps, steps=steps, restarts=1 if restarts else 0, norm=norm, seed=seed + 1000 * r,
                          batch_size=batch_size, progress=False)
        loss = score(run.x_adv)
        pred = np.asarray(answer(run.x_adv)) if answer is not None else np.full(len(y), -1)
        fooled = (pred != y) if answer is not None else np.zeros(len(y), dtype=bool)
        if best_x is None:
            best_x, best_loss, best_fooled, best_pred, top_loss = run.x_adv, loss, fooled, pred, loss.copy()
            continue
        better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (loss > best_loss))
        best_x[better], best_loss[better] = run.x_adv[better], loss[better]
        best_fooled, best_pred[better] = best_fooled | fooled, pred[better]
        top_loss = np.maximum(top_loss, loss)
    return best_x, top_loss, best_fooled, best_pred


def _pgd_family(loss: str, restarts_of: Callable, steps_of: Callable):
    """Craft with :func:`pgd_best` on the classifier of ``loss``; without ``score`` (scans shared through a
    :class:`octlib.evaluation.CraftCache`) at most one restart, nothing to select."""

    def craft(clf, xs, ys, eps, *, norm, suite, seed, answer=None, score=None):
        restarts = restarts_of(suite)
        if score is None and restarts > 1:
            raise ValueError("PGD with several restarts picks one per scan by the target's loss and answer.")
        xa, la, _, pa = pgd_best(clf(loss), xs, ys, eps, norm=norm, steps=steps_of(suite), restarts=restarts,
                                 seed=seed, batch_size=suite.batch_size,
                                 score=score or (lambda xa: np.zeros(len(xa))),
                                 answer=answer if score is not None else None)
        return xa, (la if score is not None else None), (pa if score is not None else None)

    return craft


def _fgsm(clf, xs, ys, eps, *, norm, suite, seed, answer=None, score=None):
    from . import attacks

    if norm != "inf":  # L2 FGSM: one PGD step from the scan
        return _pgd_family("cross_entropy", lambda s: 0, lambda s: 1)(clf, xs, ys, eps, norm=norm, suite=suite,
                                                                      seed=seed, answer=answer, score=score)
    return attacks.fgsm(clf("cross_entropy"), xs, ys, eps, batch_size=suite.batch_size, progress=False).x_adv, None, None


def _apgd(loss_type: str):
    def craft(clf, xs, ys, eps, *, norm, suite, seed, answer=None, score=None):
        from art.attacks.evasion import AutoProjectedGradientDescent

        np.random.seed(seed)
        attack = AutoProjectedGradientDescent(
            clf("cross_entropy"), norm=np.inf if norm == "inf" else 2, eps=eps, eps_step=2 * eps,
            max_iter=suite.apgd_steps, targeted=False, nb_random_init=max(1, suite.apgd_restarts),
            batch_size=suite.batch_size, loss_type=loss_type, verbose=False)
        return attack.generate(xs, np.eye(len(CLASSES), dtype=np.float32)[ys]).astype(np.float32), None, None

    return craft


def _apgd_targeted(clf, xs, ys, eps, *, norm, suite, seed, answer=None, score=None):
    """APGD-T: ART's targeted ``AutoProjectedGradientDescent`` with its DLR loss towards each other class in turn
    (in ART 1.20.1 the targeted DLR is the untargeted DLR ascended in reverse towards the target, not Croce & Hein's
    targeted DLR). Per scan the first example the defence answers wrongly (``answer``) is kept; a scan no target
    fools keeps the last target's example."""
    from art.attacks.evasion import AutoProjectedGradientDescent

    classifier = clf("cross_entropy")
    n_classes = int(classifier.nb_classes)
    ys = np.asarray(ys)
    best, done = np.array(xs, dtype=np.float32, copy=True), np.zeros(len(ys), dtype=bool)
    for k in range(1, n_classes):
        todo = np.flatnonzero(~done)
        if not len(todo):
            break
        np.random.seed(seed + k)
        attack = AutoProjectedGradientDescent(
            classifier, norm=np.inf if norm == "inf" else 2, eps=eps, eps_step=2 * eps, max_iter=suite.apgd_steps,
            targeted=True, nb_random_init=max(1, suite.apgd_restarts), batch_size=suite.batch_size,
            loss_type="difference_logits_ratio", verbose=False)
        targets = np.eye(n_classes, dtype=np.float32)[(ys[todo] + k) % n_classes]
        xa = attack.generate(xs[todo], targets).astype(np.float32)
        best[todo] = xa
        if answer is not None:
            done[todo] = np.asarray(answer(xa)) != ys[todo]
    return best, None, None


def _square(clf, xs, ys, eps, *, norm, suite, seed, answer=None, score=None):
    """ART's Square attack on what the target answers; a deterministic answer is remembered per scan while it runs
    (:func:`octlib.estimators.remembered_predictions`: the same adversarial scans, measured 2.8-3.3x faster)."""
    from art.attacks.evasion import SquareAttack

    from .estimators import remembered_predictions

    scores = clf("scores")
    with remembered_predictions(scores):
        np.random.seed(seed)
        attack = SquareAttack(scores, norm=np.inf if norm == "inf" else 2, eps=eps, max_iter=suite.square_queries,
                              nb_restarts=1, batch_size=suite.batch_size, verbose=False)
        x_adv = attack.generate(xs, np.eye(len(CLASSES), dtype=np.float32)[ys]).astype(np.float32)
    return x_adv, None, None


register(Attack("FGSM", _fgsm, gradients=lambda s: 1, own_curve=True,
                paper="Goodfellow et al. 2015, arXiv:1412.6572"))
register(Attack("PGD", _pgd_family("cross_entropy", lambda s: s.pgd_restarts, lambda s: s.pgd_steps),
                gradients=lambda s: s.pgd_steps * max(1, s.pgd_restarts), own_curve=True,
                shareable=lambda s: s.pgd_restarts <= 1,
                paper="Madry et al. 2018, arXiv:1706.06083 (highest-loss restart kept per scan)"))
register(Attack("APGD-CE", _apgd("cross_entropy"), gradients=lambda s: s.apgd_steps * max(1, s.apgd_restarts),
                randomized="PGD-margin", paper="Croce & Hein 2020, arXiv:2003.01690 (ART's AutoProjectedGradientDescent)"))
register(Attack("APGD-DLR", _apgd("difference_logits_ratio"),
                gradients=lambda s: s.apgd_steps * max(1, s.apgd_restarts), randomized="PGD-margin",
                paper="Croce & Hein 2020, arXiv:2003.01690 (ART's AutoProjectedGradientDescent, DLR loss)"))
register(Attack("APGD-T", _apgd_targeted, shareable=lambda s: False, headline_only=True,
                gradients=lambda s: s.apgd_steps * max(1, s.apgd_restarts) * (len(CLASSES) - 1), randomized="PGD-margin",
                paper="Croce & Hein 2020, arXiv:2003.01690 (APGD-T; ART's targeted AutoProjectedGradientDescent)"))
register(Attack("PGD-margin", _pgd_family("margin", lambda s: 0, lambda s: s.pgd_steps), gradients=lambda s: s.pgd_steps,
                paper="Carlini & Wagner 2017, arXiv:1608.04644 (margin loss), with PGD"))
register(Attack("Square", _square, queries=lambda s: s.square_queries, headline_only=True,
                paper="Andriushchenko et al. 2020, arXiv:1912.00049 (score-based, no gradients)"))
