"""Model extraction through ART: Copycat CNN and KnockoffNets against the victim behind a query-only API.

Threat model. The victim is served behind an API (:func:`octlib.estimators.victim_api`): the attacker sends scans and reads the
answers, which are the class probabilities or only the class label (a setting); it never sees weights, logits or
gradients, and every query is counted. The attacker owns a pool of query images, either real OCT scans of other
patients (:func:`octlib.data.carve_query_pool`) or unrelated natural images (:func:`octlib.data.proxy_pool`), and
trains a thief model of its own choosing (:func:`thief_classifier`) on the answers.

* **Copycat CNN** (Correia-Silva et al. 2018, arXiv:1806.05476): query a random sample of the pool, train on the
  answers (labels, or probabilities when the API gives them).
* **KnockoffNets** (Orekondy et al. 2019, arXiv:1812.02766) ``random``: the same idea; ``adaptive``: a gradient
  bandit chooses, query by query, from which of the attacker's own categories (its pool labels) to sample next,
  rewarded by certainty, diversity or the thief's loss (``reward``), training the thief online.

:func:`steal` runs one attack and returns an :class:`ExtractionRun`; its :meth:`~ExtractionRun.report` is
:func:`octlib.metrics.extraction_report` on the evaluation split.

Known traps handled here (../shared/REFERENCE.md): every thief has its own optimizer and an explicit
``train_step`` traced once for every batch size (ART's default re-traces on every call: ~10x slower for
adaptive KnockoffNets); adaptive KnockoffNets with ``reward="all"`` against a label-only API fails inside ART with
"probabilities contain NaN" (the certainty reward is constant, its variance 0); :func:`steal` reports that as a
failed run with the reason instead of crashing.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .config import ExtractionConfig, TrainConfig, split_arch
from .labels import CLASSES
from .estimators import ANSWERS, quiet_retracing, thief_classifier_class, victim_api

# ART's model-extraction demo on MNIST (victim accuracy 0.959), stolen accuracy at these query budgets with
# label-only answers (../shared/REFERENCE.md): published numbers to compare against, not results of this study.
ART_MNIST_DEMO = {"victim_accuracy": 0.959, "budgets": (250, 500, 1000, 2000, 4000, 5000),
                  "copycat": (0.19, 0.39, 0.65, 0.83, 0.90, 0.91),
                  "knockoff-random": (0.16, 0.32, 0.63, 0.84, 0.89, 0.91)}
THIEVES = ("copycat", "knockoff-random", "knockoff-adaptive", "jacobian")
#: Where a thief's weights start: a fresh initialisation, or the no-query thief trained on the attacker's own
#: labelled scans (half the optimizer steps), then fine-tuned on the answers (the other half).
STARTS = ("scratch", "own-labels")
READS = ("answers", "argmax")
REWARDS = ("cert", "div", "loss", "all")
NAN_REASON = ("adaptive KnockoffNets normalises each reward by its running variance; against label-only answers "
              "the certainty reward (top-1 minus top-2 probability) is always 1, its variance 0, so the bandit's "
              "sampling probabilities become NaN (ART issue #1746). Use reward 'div', 'loss' or 'cert', or an API "
              "that answers probabilities.")


@dataclass
class Attacker:
    """What the model-extraction attacker owns, and where copies are scored (:func:`attacker_pools`).

    Attributes:
        carved: the victim's splits with the attacker's real-OCT scans carved out of the test patients
            (:func:`octlib.data.carve_query_pool`); ``carved.test`` is the evaluation split, touched only to score.
        pools: ``"oct"`` and ``"proxy"`` mapped to ``(x, attacker labels)``: the OCT scans the attacker queries
            with (labels: its own clinicians' diagnoses) and the natural-image crops (labels: the source image).
        proxy: the :class:`octlib.data.ProxyPool`.
        val_x, val_y: the attacker's validation scans, other patients of its OCT scans (whole patients, never
            queried for training): where the attacker compares its copies (:func:`choose_copy`).
    """

    carved: object
    pools: dict
    proxy: object
    val_x: np.ndarray
    val_y: np.ndarray

    @property
    def leakage_ok(self) -> bool:
        return bool(self.carved.info["leakage"]["ok"] and self.carved.info["attacker_val"]["ok"])

    def defence_budget(self, budgets, pool: str = "oct") -> int:
        """The one budget at which every thief faces a defence: the largest of ``budgets``, cut to the ``pool``'s
        size. A random-sampling thief queries each pool scan at most once (:func:`sweep` cuts its budget to the
        pool), so a larger budget would leave it out of the at-budget comparison while adaptive KnockoffNets and
        the averaging thief (repeated queries) spent more; at the cut budget every thief spends the same."""
        if not budgets or any(int(b) != b or b < 1 for b in budgets):
            raise ValueError(f"`budgets` must be positive integers (the defence's query budgets), got {budgets!r}.")
        return int(min(max(budgets), len(self.pools[pool][0])))


def attacker_pools(splits, ecfg: ExtractionConfig | None = None, *, seed: int = 0) -> Attacker:
    """The attacker's query pools, its validation scans and the evaluation split, as an :class:`Attacker`.

    The real-OCT scans are carved out of the test patients by patient (``ecfg.pool_fraction``); a share
    ``ecfg.pool_val_fraction`` of those patients is kept apart as the attacker's validation scans, so the
    attacker can choose among its copies without touching the evaluation scans.
    """
    from .data import carve_query_pool, proxy_pool, stratified_group_holdout

    ecfg = ecfg or ExtractionConfig()
    carved = carve_query_pool(splits, ecfg.pool_fraction, seed=seed)
    pool = carved.pool
    groups = pool.groups if pool.patient_level else np.arange(len(pool))
    is_val = stratified_group_holdout(pool.labels, groups, ecfg.pool_val_fraction, seed + 200)
    if is_val.all() or not is_val.any():
        raise ValueError(f"The attacker's OCT scans ({len(pool)} images) are too few to keep "
                         f"`pool_val_fraction`={ecfg.pool_val_fraction} of them for validation: change it.")
    query, val = pool.subset(np.flatnonzero(~is_val)), pool.subset(np.flatnonzero(is_val))
    shared = sorted(set(query.groups) & set(val.groups)) if pool.patient_level else []
    eval_shared = sorted(set(val.groups) & set(carved.test.groups)) if pool.patient_level else []
    carved.info["attacker_val"] = {"images": len(val), "patients": val.n_patients(), "ok": not shared
                                   and not eval_shared, "shared_with_queries": shared[:5],
                                   "shared_with_evaluation": eval_shared[:5]}
    carved.pool = query
    proxy = proxy_pool(ecfg.proxy_size, carved.train.image_size, seed=seed)
    pools = {"oct": (query.x, query.labels), "proxy": (proxy.x, proxy.labels)}
    return Attacker(carved=carved, pools=pools, proxy=proxy, val_x=val.x, val_y=val.labels)


@dataclass(frozen=True)
class Thief:
    """How a thief uses the API. ``attack``: ``copycat``, ``knockoff-random``, ``knockoff-adaptive`` or
    ``no-query`` (the baseline: the attacker's own scans with their true labels, no query at all);
    ``reads``: trains on the ``answers`` as they come (probabilities where the API gives them) or on their
    ``argmax`` (what defeats a post-processor that keeps the top class); ``repeats``: sends each scan k times
    and averages the answers (what defeats fresh output noise; every repeat is a counted query, so a budget
    buys budget // k distinct scans); ``reward``: adaptive KnockoffNets' reward; ``augment``: queries (or, for the
    no-query thief, trains on) label-preserving variants of the pool scans (:func:`augment_queries`), so that a
    budget larger than the pool buys that many distinct queries; ``start``: ``own-labels`` first trains the thief
    on the attacker's own labelled scans (augmented like its queries) for half its optimizer steps, then
    fine-tunes it on the answers for the other half (a competitor with its own clinicians' labels).

    ``jacobian`` is Papernot et al. 2017's Jacobian-based dataset augmentation (:func:`jacobian_rounds`): the pool
    scans are queried, the thief trained on the answers, and each round queries new points x + λ·sign(∇ₓ of the
    thief's logit for the class the victim answered at x), doubling the set until the budget is spent."""

    attack: str = "copycat"
    reads: str = "answers"
    repeats: int = 1
    reward: str | None = None
    augment: bool = False
    start: str = "scratch"

    def __post_init__(self):
        if self.attack not in (*THIEVES, "no-query"):
            raise ValueError(f"`attack` must be one of {(*THIEVES, 'no-query')}, got {self.attack!r}.")
        if self.reads not in READS:
            raise ValueError(f"`reads` must be one of {READS}, got {self.reads!r}.")
        if not isinstance(self.repeats, (int, np.integer)) or self.repeats < 1:
            raise ValueError(f"`repeats` must be an integer >= 1 (queries per scan), got {self.repeats!r}.")
        if (self.reward is not None) != (self.attack == "knockoff-adaptive") or (
                self.reward is not None and self.reward not in REWARDS):
            raise ValueError(f"`reward` (one of {REWARDS}) is set for knockoff-adaptive and only for it, got "
                             f"{self.reward!r} for {self.attack!r}.")
        if self.augment and self.attack not in ("copycat", "no-query"):
            raise ValueError(f"`augment` (augmented queries, :func:`augment_queries`) is for copycat and no-query "
                             f"thieves, got {self.attack!r}.")
        if self.attack == "jacobian" and (self.repeats > 1 or self.augment):
            raise ValueError("The Jacobian thief (`attack='jacobian'`) makes its own new queries: it takes neither "
                             "`repeats` nor `augment`.")
        if self.start not in STARTS or (self.start == "own-labels" and self.attack != "copycat"):
            raise ValueError(f"`start` must be one of {STARTS} ('own-labels' only for copycat: the no-query thief "
                             f"fine-tuned on the answers), got {self.start!r} for {self.attack!r}.")

    @property
    def name(self) -> str:
        if self.attack == "no-query":
            return "no-query (own labels)" + (" · augmented" if self.augment else "")
        name = ("own labels → " if self.start == "own-labels" else "") + self.attack
        name += f" ({self.reward})" if self.reward else ""
        name += " · augmented" if self.augment else ""
        if self.reads == "argmax" and self.attack != "knockoff-adaptive":
            name += " · argmax"
        if self.repeats > 1:
            name += f" · mean of {self.repeats}"
        return name


def augment_queries(x, n: int, *, labels=None, seed: int = 0, mixup: float = 0.2, shift: float = 0.05,
                    zoom: float = 0.1, intensity: float = 0.1, gamma: float = 0.2, speckle: float = 0.05):
    """``n`` label-preserving variants of the scans ``x`` (``(N, S, S, 1)`` in [0, 1]), each a new query: for the
    i-th, scan ``i mod N`` (every scan used as evenly as ``n`` allows, in a seeded order) with, drawn per query, a
    left-right flip (the other eye; never up-down: the retina has an up), a shift of up to ``shift`` of the side and
    a zoom of up to ``zoom`` (one scikit-image affine warp, zero fill, as a B-scan's edge), an intensity scale of up
    to ±``intensity``, a gamma of up to ±``gamma`` (scikit-image) and multiplicative speckle of sd ``speckle``
    (OCT's noise); with probability ``mixup`` it is then mixed with another scan's variant, λ ~ Beta(0.4, 0.4)
    (Zhang et al. 2018's mixup: a query too).

    Returns ``(queries, soft_labels, source)``: float32 queries in [0, 1]; with ``labels`` (one class per scan),
    their one-hot labels mixed with the same λ (``None`` without); the index of each query's (first) scan."""
    from skimage.exposure import adjust_gamma
    from skimage.transform import AffineTransform, warp

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[-1] != 1 or not len(x):
        raise ValueError(f"`x` must be (N, S, S, 1) scans, got shape {x.shape}.")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"`n` (queries to make) must be a positive integer, got {n!r}.")
    if not 0 <= mixup <= 1:
        raise ValueError(f"`mixup` (share of mixed queries) must be in [0, 1], got {mixup!r}.")
    rng = np.random.default_rng(seed)
    side = x.shape[1]
    source = np.concatenate([rng.permutation(len(x)) for _ in range(-(-n // len(x)))])[:n]
    onehot = None if labels is None else np.eye(len(CLASSES), dtype=np.float32)[np.asarray(labels, dtype=int)]

    def variant(img):
        img = img[:, ::-1] if rng.random() < 0.5 else img
        scale = 1 + rng.uniform(-zoom, zoom)
        move = rng.uniform(-shift, shift, 2) * side
        centre = (side - 1) / 2
        tf = AffineTransform(scale=scale, translation=(centre - scale * centre + move[0], centre - scale * centre
                                                       + move[1]))
        img = warp(img, tf.inverse, order=1, mode="constant", cval=0.0, preserve_range=True)
        img = np.clip(img * (1 + rng.uniform(-intensity, intensity)), 0, 1)
        img = adjust_gamma(img, 1 + rng.uniform(-gamma, gamma))
        return np.clip(img * (1 + speckle * rng.standard_normal(img.shape)), 0, 1)

    queries = np.empty((n, side, side, 1), np.float32)
    soft = None if onehot is None else np.empty((n, len(CLASSES)), np.float32)
    for i, j in enumerate(source):
        q = variant(x[j, :, :, 0])
        lab = None if onehot is None else onehot[j]
        if rng.random() < mixup:
            k = int(rng.integers(len(x)))
            lam = float(rng.beta(0.4, 0.4))
            q = lam * q + (1 - lam) * variant(x[k, :, :, 0])
            lab = None if onehot is None else lam * onehot[j] + (1 - lam) * onehot[k]
        queries[i, :, :, 0] = q
        if soft is not None:
            soft[i] = lab
    return queries, soft, source


_TEMPLATES: dict = {}


def _template(arch: str, image_size: int, train_cfg, learning_rate: float):
    """The model, optimizer and traced training step that every thief of this architecture, input size, settings
    and learning rate trains in, one at a time.

    Every thief is a new Keras model, and a ``tf.function`` that closes over a model's variables is traced again for
    each: ~1.3 s per quick thief (cProfile), as long as its 48 steps, for ~85 thieves in notebooks 30, 31 and 40.
    Keras' functional ``stateless_apply`` is not supported by the TensorFlow backend, so instead each new thief's
    initial weights (batch-norm statistics and dropout seed state included) are copied into this one template and its
    optimizer's state is zeroed: the step is traced once, for any batch size, without autograph (no Python control
    flow to convert). :func:`thief_model` copies the trained weights back into the thief's own model.
    """
    import keras
    import tensorflow as tf

    from .models import build_model

    key = (arch, image_size, train_cfg, float(learning_rate))
    if key not in _TEMPLATES:
        model = _without_drawing(build_model, arch, image_size, train_cfg, name="thief_template")
        optimizer = keras.optimizers.Adam(learning_rate)
        optimizer.build(model.trainable_variables)
        loss_object = keras.losses.CategoricalCrossentropy(from_logits=True)
        spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32),
                tf.TensorSpec((None, len(CLASSES)), tf.float32))

        @tf.function(input_signature=spec, autograph=False)
        def step(images, labels):
            with tf.GradientTape() as tape:
                loss = loss_object(labels, model(images, training=True))
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
            return loss

        _TEMPLATES[key] = (model, optimizer, loss_object, step)
    return _TEMPLATES[key]


def _without_drawing(build, *args, **kwargs):
    """``build(*args, **kwargs)`` with Python's, NumPy's and Keras' global random state restored afterwards: building
    the template (its weights are overwritten) must not change what a seeded thief draws after it."""
    import random

    from keras.src.random.seed_generator import global_seed_generator

    generator = global_seed_generator()
    saved = random.getstate(), np.random.get_state(), generator.state.numpy()
    try:
        return build(*args, **kwargs)
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        generator.state.assign(saved[2])


def _copy_state(source, target) -> None:
    """Every variable of ``source`` into ``target`` (same architecture): weights, batch-norm statistics and the
    dropout seed state, which ``get_weights`` leaves out."""
    for src, dst in zip(source.trainable_variables + source.non_trainable_variables,
                        target.trainable_variables + target.non_trainable_variables, strict=True):
        dst.assign(src)


def thief_model(thief):
    """The thief's own Keras model with the weights it was trained to (see :func:`_template`)."""
    _copy_state(thief.model, thief._octlib_own)
    return thief._octlib_own


def thief_classifier(arch: str, image_size: int, train_cfg: TrainConfig | None = None, *,
                     learning_rate: float = 1e-3, max_steps: int | None = None, seed: int = 0):
    """A fresh thief: the ``arch`` model (see :func:`octlib.models.build_model`), logits, as an ART
    ``TensorFlowV2Classifier`` with its own Adam optimizer and a ``train_step`` traced once.

    ``max_steps``: the optimizer takes at most this many steps; later training batches are skipped, so every thief
    of a comparison gets exactly the same number of steps whatever ART asks for. ``steps_taken(thief)`` reads
    the count back from the optimizer. ``seed`` seeds the order of its training batches
    (:func:`octlib.estimators.thief_classifier_class`).
    """
    import tensorflow as tf

    from .models import build_model

    own = build_model(arch, image_size, train_cfg, name=f"thief_{arch.replace('@', '_at')}")  # fresh, seeded
    model, optimizer, loss_object, traced_step = _template(arch, image_size, train_cfg, learning_rate)
    _copy_state(own, model)
    for variable in optimizer.variables:
        if variable is not optimizer._learning_rate:  # iterations and moments start from zero
            variable.assign(tf.zeros(variable.shape, variable.dtype))

    def train_step(net, images, labels):
        if net is not model:
            raise ValueError("This thief's train_step trains only its own model.")
        if max_steps is not None and int(optimizer.iterations.numpy()) >= max_steps:
            return None
        return traced_step(tf.cast(images, tf.float32), tf.cast(labels, tf.float32))

    thief = thief_classifier_class()(
        model=model, nb_classes=len(CLASSES), input_shape=tuple(model.input_shape[1:]), loss_object=loss_object,
        optimizer=optimizer, train_step=train_step, clip_values=(0.0, 1.0))
    thief._octlib_rng, thief._octlib_own = np.random.default_rng(seed), own
    return thief


def steps_taken(thief) -> int:
    """Optimizer steps a thief from :func:`thief_classifier` has taken."""
    return int(thief.optimizer.iterations.numpy())


@dataclass
class ExtractionRun:
    """One extraction attack: the settings, the stolen model (``None`` when the attack failed) and its cost.

    ``queries`` counts every image sent to the victim (repeats included); ``steps`` the thief's optimizer steps
    (adaptive KnockoffNets' per-query updates included)."""

    attack: str
    answers: str
    pool: str
    budget: int
    queries: int
    seed: int
    thief_arch: str
    params: dict
    runtime_s: float
    thief: object = None
    status: str = "ok"
    error: str | None = None
    answer_counts: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    thief_name: str = ""
    reads: str = "answers"
    repeats: int = 1
    steps: int = 0

    def row(self) -> dict:
        """The settings and cost as a flat dict (no model)."""
        return {"attack": self.attack, "thief": self.thief_name or self.attack, "answers": self.answers,
                "reads": self.reads, "repeats": self.repeats, "reward": self.params.get("reward"),
                "pool": self.pool, "budget": self.budget, "queries": self.queries,
                "scans": int(self.params.get("nb_stolen", 0)), "steps": self.steps,
                "seed": self.seed, "thief_arch": self.thief_arch, "status": self.status, "error": self.error,
                "runtime_s": self.runtime_s, "answer_counts": self.answer_counts, "params": self.params}

    def report(self, x_eval, y_eval, logits_victim, *, x_val=None, victim_val=None) -> dict:
        """:meth:`row` plus :func:`octlib.metrics.extraction_report` of the thief on ``(x_eval, y_eval)`` (the
        metrics are NaN for a failed run). With the attacker's validation scans ``x_val`` and the victim's top
        class on them (``victim_val``, answers the attacker paid for), also ``val_fidelity``: what the attacker
        can know about its copy without the evaluation scans. ``victim_majority``: the share of the victim's
        commonest answer on the evaluation scans (what a copy that always answers it agrees on); ``agreement``: per
        evaluation scan, 1 where the copy's top class is the victim's (paired tests between thieves,
        :func:`octlib.compare.theft_gain_table`)."""
        from .metrics import extraction_report, predict_logits

        nan = float("nan")
        victim_pred = np.asarray(logits_victim).argmax(1)
        majority = float(np.bincount(victim_pred, minlength=len(CLASSES)).max() / max(len(victim_pred), 1))
        if self.thief is None:
            return {**self.row(), "n": len(y_eval), "accuracy": {"value": nan}, "loss": nan, "fidelity": {"value": nan},
                    "relative_accuracy": nan, "urgent_agreement": nan, "val_fidelity": nan,
                    "victim_majority": majority, "agreement": None}
        val = nan
        if x_val is not None and victim_val is not None and len(x_val):
            val = float((predict_logits(self.thief, x_val).argmax(1) == np.asarray(victim_val)).mean())
        thief_logits = predict_logits(self.thief, x_eval)
        return {**self.row(), **extraction_report(y_eval, logits_victim, thief_logits), "val_fidelity": val,
                "victim_majority": majority, "agreement": (thief_logits.argmax(1) == victim_pred).astype(int).tolist()}


def _one_hot(labels) -> np.ndarray:
    return np.eye(len(CLASSES), dtype=np.float32)[np.asarray(labels, dtype=int)]


def train_steps(classifier, x, y, steps: int, *, batch_size: int, seed: int = 0) -> None:
    """Exactly ``steps`` optimizer steps of a thief (:func:`thief_classifier`) on ``(x, y)``: ``steps`` batches of
    ``batch_size`` drawn as whole shuffled passes over the data (the last pass cut short), so a thief that trains in
    phases (:func:`jacobian_rounds`) spends its step budget as planned."""
    if steps <= 0:
        return
    rng = np.random.default_rng(seed)
    need = steps * int(batch_size)
    order = np.concatenate([rng.permutation(len(x)) for _ in range(-(-need // len(x)))])[:need]
    with quiet_retracing():
        classifier.fit(x[order], y[order], batch_size=int(batch_size), nb_epochs=1)


def jacobian_step(classifier, x, classes, lam: float, *, batch_size: int = 128) -> np.ndarray:
    """Papernot et al. 2017's new points: ``clip(x + lam * sign(∇ₓ logit_c(x)), 0, 1)`` with the thief's logit for
    ``classes`` (the class the victim answered at each scan; ``lam`` may be negative: the periodic step)."""
    import tensorflow as tf

    out = np.empty_like(x)
    for start in range(0, len(x), batch_size):
        xb = tf.convert_to_tensor(x[start:start + batch_size])
        onehot = tf.one_hot(np.asarray(classes[start:start + batch_size], dtype=np.int32), len(CLASSES))
        with tf.GradientTape() as tape:
            tape.watch(xb)
            picked = tf.reduce_sum(classifier.model(xb, training=False) * onehot, axis=1)
        grad = tape.gradient(picked, xb).numpy()
        out[start:start + batch_size] = np.clip(x[start:start + batch_size] + lam * np.sign(grad), 0, 1)
    return out


def jacobian_rounds(classifier, api, pool_x, budget: int, *, steps: int, batch_size: int, lam: float = 0.1,
                    tau: int = 3, argmax: bool = False, seed: int = 0, params: dict | None = None):
    """Jacobian-based dataset augmentation (Papernot et al. 2017, "Practical Black-Box Attacks against Machine
    Learning", ASIA CCS), every point a counted query of ``api``: round 0 queries ``min(budget, len(pool_x))``
    pool scans (a seeded pick); then, while the budget lasts, the thief is trained on the set so far and the set
    grows by new points :func:`jacobian_step` from up to as many of its members as the budget still allows (all of
    them: the set doubles, as in the paper; a seeded subset in the last round), with λ's sign flipped every ``tau``
    rounds; the thief is trained on the final set last. The optimizer steps ``steps`` are split evenly over the
    training phases (:func:`train_steps`; the remainder to the last), so the thief takes exactly ``steps``.
    ``argmax``: train on the answers' top class (one-hot) instead of the answers. Adds ``rounds`` and
    ``set_sizes`` to ``params``."""
    rng = np.random.default_rng(seed)
    first = rng.choice(len(pool_x), int(min(budget, len(pool_x))), replace=False)
    xs = np.asarray(pool_x[first], dtype=np.float32)
    answers = np.asarray(api.predict(xs), dtype=np.float32)
    sizes = [len(xs)]
    while sizes[-1] < budget:
        grow = min(sizes[-1], budget - sizes[-1])
        sizes.append(sizes[-1] + grow)
    phase_steps = [steps // len(sizes)] * (len(sizes) - 1)
    phase_steps.append(steps - sum(phase_steps))

    def labels(a):
        return np.eye(len(CLASSES), dtype=np.float32)[a.argmax(1)] if argmax else a

    for r, grow in enumerate(np.diff(sizes)):
        train_steps(classifier, xs, labels(answers), phase_steps[r], batch_size=batch_size, seed=seed + 101 * r)
        pick = rng.permutation(len(xs))[:grow]
        step = lam * (-1) ** (r // max(1, int(tau)))
        new = jacobian_step(classifier, xs[pick], answers[pick].argmax(1), step)
        xs = np.concatenate([xs, new])
        answers = np.concatenate([answers, np.asarray(api.predict(new), dtype=np.float32)])
    train_steps(classifier, xs, labels(answers), phase_steps[-1], batch_size=batch_size, seed=seed + 101 * len(sizes))
    if params is not None:
        params.update(rounds=len(sizes) - 1, set_sizes=sizes, jacobian_lambda=lam, jacobian_tau=int(tau))
    return xs, answers


def steal(victim_model, pool_x, *, thief: Thief | None = None, attack: str = "copycat",
          answers: str = "probabilities", budget: int = 250, pool_labels=None, pool_name: str = "oct",
          thief_arch: str = "victim", train_cfg: TrainConfig | None = None, ecfg: ExtractionConfig | None = None,
          reward: str = "all", reads: str = "answers", repeats: int = 1, seed: int = 0, defences=(),
          progress: bool = False) -> ExtractionRun:
    """Steal the victim with one attack and budget; the run is reproducible for a ``seed`` (it re-seeds Python,
    NumPy and TensorFlow with it).

    Args:
        victim_model: the victim's Keras logits model (the attacker only ever calls the API's ``predict``).
        pool_x: the attacker's query images, float32 ``(N, S, S, 1)`` in [0, 1].
        thief: a :class:`Thief` (attack, reads, repeats, reward); when given it replaces those four arguments.
        attack: ``copycat``, ``knockoff-random``, ``knockoff-adaptive`` or ``no-query`` (the baseline that never
            queries: ``budget`` of the attacker's own scans with their true labels ``pool_labels``).
        answers: what the API returns, ``probabilities`` or ``labels``. Copycat and random KnockoffNets train on
            what the API returns (``reads="answers"``) or on its top class (``reads="argmax"``); adaptive
            KnockoffNets always trains on the top class (ART) and uses the answers for its rewards.
        budget: queries, repeats included. Random sampling takes ``min(budget // repeats, len(pool))`` distinct
            images (``extra["capped"]``); adaptive sampling draws ``budget // repeats`` with replacement.
        pool_labels: the attacker's own category of each pool image (needed by ``knockoff-adaptive``; the true
            diagnosis for ``no-query``).
        pool_name: a name for the pool in the results (``oct``, ``proxy``).
        thief_arch: ``victim`` or ``separable`` (:func:`octlib.models.build_model`).
        train_cfg: the thief architecture's settings (normally the profile's, as for the victim).
        ecfg: thief training settings (steps, batch size, learning rate); the profile's by default. Every thief
            takes exactly ``ecfg.thief_steps`` optimizer steps, adaptive KnockoffNets' one step per query included.
        reward: adaptive KnockoffNets reward (``cert``, ``div``, ``loss``, ``all``).
        reads, repeats: see :class:`Thief`.
        defences: output post-processors of the victim API (see :func:`octlib.estimators.victim_api`).
    """
    import keras
    from art.attacks.extraction import CopycatCNN, KnockoffNets

    if thief is None:
        thief = Thief(attack, reads, repeats, reward if attack == "knockoff-adaptive" else None)
    attack, reads, repeats = thief.attack, thief.reads, thief.repeats
    if not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ValueError(f"`budget` must be a positive integer (queries), got {budget!r}.")
    if budget < repeats:
        raise ValueError(f"`budget` ({budget}) buys no scan at {repeats} repeats per scan: raise it.")
    pool_x = np.asarray(pool_x, dtype=np.float32)
    if pool_x.ndim != 4 or pool_x.shape[1:] != tuple(victim_model.input_shape[1:]):
        raise ValueError(f"`pool_x` must be (N, {', '.join(map(str, victim_model.input_shape[1:]))}) images like the "
                         f"victim's input, got {pool_x.shape}.")
    if len(pool_x) == 0 or pool_x.min() < 0 or pool_x.max() > 1:
        raise ValueError("`pool_x` must be a non-empty array of images in [0, 1].")
    ecfg = ecfg or ExtractionConfig()
    adaptive = attack == "knockoff-adaptive"
    if attack in ("knockoff-adaptive", "no-query") and (pool_labels is None or len(pool_labels) != len(pool_x)):
        raise ValueError(f"`{attack}` needs `pool_labels`: the attacker's own category of every pool image (e.g. "
                         "the diagnosis of its OCT scans; for knockoff-adaptive also the source of a proxy crop).")
    scans = budget // repeats
    used = scans if adaptive or thief.augment or attack == "jacobian" else int(min(scans, len(pool_x)))
    online = used if adaptive else 0
    own = ecfg.thief_steps // 2 if thief.start == "own-labels" else 0  # steps on its own labels first
    if (thief.augment or own) and pool_labels is None and attack == "no-query":
        raise ValueError("The no-query thief needs `pool_labels`.")
    if own and (pool_labels is None or len(pool_labels) != len(pool_x)):
        raise ValueError("A thief that starts from its own labels (`start='own-labels'`) needs `pool_labels`: the "
                         "attacker's own diagnosis of every pool scan.")
    if online > ecfg.thief_steps:
        raise ValueError(f"adaptive KnockoffNets takes one training step per query: `thief_steps` "
                         f"({ecfg.thief_steps}) must be at least the scans it queries ({online}); raise thief_steps "
                         "or lower the budget.")
    batches = math.ceil(used / ecfg.thief_batch_size)
    epochs = max(1, math.ceil((ecfg.thief_steps - online - own) / batches))
    params = {"budget_requested": int(budget), "nb_stolen": used, "nb_epochs": epochs,
              "batch_size_fit": ecfg.thief_batch_size, "thief_steps": ecfg.thief_steps, "online_steps": online,
              "own_label_steps": own, "augmented": thief.augment,
              "learning_rate": ecfg.thief_learning_rate, "use_probability": answers == "probabilities"
              and reads == "answers" and not adaptive and attack != "no-query"}
    if adaptive:
        params["reward"] = thief.reward
    keras.utils.set_random_seed(int(seed))
    api = victim_api(victim_model, answers, defences=defences, repeats=repeats)
    model = thief_classifier(thief_arch, pool_x.shape[1], train_cfg, learning_rate=ecfg.thief_learning_rate,
                             max_steps=ecfg.thief_steps, seed=int(seed))
    t0 = time.perf_counter()
    status, error, stolen = "ok", None, None
    queries_x = pool_x
    if thief.augment:  # the queries (or the no-query thief's training scans) are variants of the pool scans
        queries_x, soft, _ = augment_queries(pool_x, used, labels=pool_labels, seed=int(seed) + 7)
    if own:  # the no-query thief's first half: its own labelled scans, augmented like the queries, one epoch
        own_x, own_y, _ = augment_queries(pool_x, own * ecfg.thief_batch_size, labels=pool_labels,
                                          seed=int(seed) + 11)
        with quiet_retracing():
            model.fit(own_x, own_y, batch_size=ecfg.thief_batch_size, nb_epochs=1)
    if attack == "jacobian":
        jacobian_rounds(model, api, pool_x, budget, steps=ecfg.thief_steps, batch_size=ecfg.thief_batch_size,
                        lam=ecfg.jacobian_lambda, tau=ecfg.jacobian_tau, argmax=reads == "argmax" or answers == "labels",
                        seed=int(seed), params=params)
        stolen = model
    elif attack == "no-query":
        if thief.augment:
            train_x, train_y = queries_x, soft
        else:
            pick = np.random.default_rng(seed).choice(len(pool_x), used, replace=False)
            train_x, train_y = pool_x[pick], _one_hot(np.asarray(pool_labels)[pick])
        with quiet_retracing():
            model.fit(train_x, train_y, batch_size=ecfg.thief_batch_size, nb_epochs=epochs)
        stolen, answers = model, "none"
    else:
        common = dict(batch_size_fit=ecfg.thief_batch_size, batch_size_query=256, nb_epochs=epochs, nb_stolen=used,
                      use_probability=params["use_probability"])
        if attack == "copycat":
            art_attack = CopycatCNN(api, **common)
        else:
            art_attack = KnockoffNets(api, sampling_strategy="adaptive" if adaptive else "random",
                                      reward=thief.reward or "all", verbose=progress, **common)
        actions = np.unique(np.asarray(pool_labels), return_inverse=True)[1].reshape(-1) if adaptive else None
        try:
            with quiet_retracing(), np.errstate(invalid="ignore"):  # the NaN is reported below, with its reason
                stolen = art_attack.extract(queries_x, y=actions, thieved_classifier=model)
        except ValueError as exc:
            if "probabilities contain NaN" not in str(exc):
                raise
            status, error = "failed", f"{exc}: {NAN_REASON}"
    runtime = time.perf_counter() - t0
    return ExtractionRun(attack=attack, answers=answers, pool=pool_name, budget=int(budget), queries=int(api.queries),
                         seed=int(seed), thief_arch=thief_arch, params=params, runtime_s=runtime,
                         thief=thief_model(stolen) if stolen is not None else None, status=status, error=error,
                         answer_counts=dict(zip(CLASSES, map(int, api.answer_counts))),
                         extra={"capped": used < scans}, thief_name=thief.name, reads=reads, repeats=repeats,
                         steps=steps_taken(model))


def _as_thief(spec, reward: str) -> Thief:
    if isinstance(spec, Thief):
        return spec
    return Thief(spec, reward=reward if spec == "knockoff-adaptive" else None)


def sweep(victim_model, pools: dict, *, attacks=("copycat",), answers=ANSWERS, budgets=None, seeds=None,
          thief_archs=None, train_cfg: TrainConfig | None = None, ecfg: ExtractionConfig | None = None,
          reward: str = "all", fallback_reward: str | None = None, x_eval=None, y_eval=None, x_val=None,
          defences=(), tag: dict | None = None, progress: bool = True, cache: dict | None = None) -> list[dict]:
    """Every combination of pool x thief x answer type x thief architecture x budget x seed, as report rows
    (:meth:`ExtractionRun.report` on ``(x_eval, y_eval)``), with a progress bar.

    ``attacks`` are :class:`Thief` specs or attack names (an adaptive one gets ``reward``). ``pools`` maps a
    pool name to ``(x, labels)`` (labels may be ``None`` unless ``knockoff-adaptive`` or ``no-query`` is among
    the thieves; ``no-query`` runs once per budget, whatever ``answers``). Budgets larger than a random-sampling
    pool are cut to the pool once (the row's ``queries`` says what was used). Returns the rows and keeps the
    stolen models out of them.

    ``x_val``: the attacker's validation scans; the victim's top class on them is read once (``len(x_val)``
    queries, the same for every copy) and every row gets ``val_fidelity`` (see :func:`choose_copy`).
    ``fallback_reward``: an adaptive KnockoffNets run that fails with ``reward`` (ART's ``all`` on label-only
    answers: "probabilities contain NaN") keeps its failed row and is run again with this reward; the rows name
    their thief ``knockoff-adaptive (<reward>)``. ``tag`` is added to every row (e.g. ``{"defence": name}``).
    ``cache``: a dict shared between sweeps over several victims (defences): a no-query thief never calls the
    victim, so its run for a pool, thief, architecture, budget and seed is trained once and scored against each
    victim (the copy is the same; its fidelity is each victim's).
    """
    from tqdm.auto import tqdm

    from .metrics import predict_logits

    if fallback_reward is not None and fallback_reward not in REWARDS:
        raise ValueError(f"`fallback_reward` must be one of {REWARDS} or None, got {fallback_reward!r}.")
    ecfg = ecfg or ExtractionConfig()
    seeds = tuple(ecfg.seeds if seeds is None else seeds)
    thief_archs = tuple((ecfg.thief_arch,) if thief_archs is None else thief_archs)
    if x_eval is None or y_eval is None:
        raise ValueError("`x_eval` and `y_eval` (the evaluation split) are needed to score the stolen copies.")
    logits_victim = predict_logits(victim_model, x_eval)
    victim_val = None if x_val is None else predict_logits(victim_model, x_val).argmax(1)
    jobs = []
    for pool_name, (px, plabels) in pools.items():
        for spec in attacks:
            thief = _as_thief(spec, reward)
            wanted = budgets if budgets is not None else (
                ecfg.adaptive_budgets if thief.attack == "knockoff-adaptive" else ecfg.budgets)
            if thief.attack not in ("knockoff-adaptive", "jacobian") and not thief.augment:  # cut to the pool once
                # (a larger budget would repeat a run); augmented and Jacobian queries are new images, as many as
                # the budget buys
                wanted = sorted({min(int(b), len(px) * thief.repeats) for b in wanted})
            for ans in (("probabilities",) if thief.attack == "no-query" else answers):
                for arch in thief_archs:
                    for b in wanted:
                        for s in seeds:
                            jobs.append((pool_name, px, plabels, thief, ans, arch, int(b), s))
    rows = []
    for pool_name, px, plabels, thief, ans, arch, b, s in tqdm(jobs, desc="extraction runs", disable=not progress):
        kw = dict(answers=ans, budget=b, pool_labels=plabels, pool_name=pool_name, thief_arch=arch,
                  train_cfg=train_cfg, ecfg=ecfg, seed=s, defences=defences)
        key = (pool_name, thief.name, arch, b, s, len(px))
        if cache is not None and thief.attack == "no-query" and key in cache:
            run = cache[key]
        else:
            run = steal(victim_model, px, thief=thief, **kw)
            if cache is not None and thief.attack == "no-query":
                cache[key] = run
        rows.append(run.report(x_eval, y_eval, logits_victim, x_val=x_val, victim_val=victim_val))
        if run.status != "ok" and thief.attack == "knockoff-adaptive" and fallback_reward:
            retry = steal(victim_model, px, thief=Thief(thief.attack, thief.reads, thief.repeats, fallback_reward),
                          **kw)
            rows.append(retry.report(x_eval, y_eval, logits_victim, x_val=x_val, victim_val=victim_val))
    for row in rows:
        row.update(tag or {})
    return rows


#: The columns of a flat extraction record (one per defence x thief x pool x answers x budget x seed).
FLAT_KEYS = ("defence", "thief", "attack", "answers", "reads", "repeats", "reward", "pool", "thief_arch", "budget",
             "queries", "scans", "steps", "seed", "status", "n", "accuracy", "accuracy_low", "accuracy_high",
             "fidelity", "fidelity_low", "fidelity_high", "urgent_agreement", "loss", "val_fidelity", "runtime_s",
             "victim_majority", "agreement")


def flat_rows(rows, defence: str = "none", **extra) -> list[dict]:
    """Report rows of :func:`sweep` as flat records (``FLAT_KEYS`` plus ``extra``), the form the results store
    keeps and notebook 90 reads (:func:`octlib.records.stamp_extraction`). A row's own ``defence`` tag wins."""
    out = []
    for r in rows:
        acc, fid = r["accuracy"], r["fidelity"]
        flat = {"defence": r.get("defence", defence), "n": r.get("n"), "accuracy": acc.get("value"),
                "accuracy_low": acc.get("ci_low"), "accuracy_high": acc.get("ci_high"),
                "fidelity": fid.get("value"), "fidelity_low": fid.get("ci_low"), "fidelity_high": fid.get("ci_high")}
        flat.update({k: r.get(k) for k in FLAT_KEYS if k not in flat})
        out.append({**flat, **extra})
    return out


def summarise(rows, threshold: float = 0.9):
    """Mean ± sd over seeds per pool x thief x answers x thief architecture x budget (a DataFrame), and per
    curve of a thief that queries ``{"queries": the budget at which mean fidelity reaches threshold and stays
    there (None: not reached), "within": the largest number of queries tried}``."""
    from .metrics import budget_to_reach, mean_sd

    flat = [{"pool": r["pool"], "thief": r.get("thief", r["attack"]), "answers": r["answers"],
             "thief_arch": r["thief_arch"], "budget": r["budget"], "queries": r["queries"],
             "scans": r.get("scans", float("nan")), "steps": r.get("steps", float("nan")),
             "accuracy": r["accuracy"]["value"], "loss": r["loss"],
             "fidelity": r["fidelity"]["value"], "relative_accuracy": r["relative_accuracy"],
             "urgent_agreement": r["urgent_agreement"], "val_fidelity": r.get("val_fidelity", float("nan")),
             "runtime_s": r["runtime_s"], "failed": r["status"] != "ok"} for r in rows]
    keys = ["pool", "thief", "answers", "thief_arch", "budget"]
    table = mean_sd(flat, keys, ["queries", "scans", "steps", "accuracy", "loss", "fidelity", "relative_accuracy",
                                 "urgent_agreement", "val_fidelity", "runtime_s", "failed"])
    reach = {}
    for curve, part in table[table["queries_mean"] > 0].groupby(keys[:-1], sort=True):  # not the no-query thief
        found = budget_to_reach(part["queries_mean"], part["fidelity_mean"], threshold)
        reach["/".join(curve)] = {"queries": None if found is None else int(found),
                                  "within": int(part["queries_mean"].max())}
    return table, reach


def reach_text(reach: dict, threshold: float = 0.9) -> list[str]:
    """One line per curve of :func:`summarise`'s ``reach``: the queries to the fidelity threshold, or "not
    reached within N"."""
    return [f"{curve}: fidelity >= {threshold:g} from {r['queries']} queries" if r["queries"] is not None else
            f"{curve}: not reached within {r['within']} queries" for curve, r in reach.items()]


def choose_copy(rows, **where) -> dict:
    """The row of the copy an attacker would pick: the highest ``val_fidelity`` (agreement with the victim on the
    attacker's own validation scans), among successful rows matching ``where`` (e.g. ``thief_arch="victim"``);
    ties go to fewer queries, then the lower seed. Never reads the evaluation scans' metrics."""
    ok = [r for r in rows if r["status"] == "ok" and all(r.get(k) == v for k, v in where.items())]
    ok = [r for r in ok if np.isfinite(r.get("val_fidelity", float("nan")))]
    if not ok:
        raise ValueError(f"No successful run with a validation fidelity matches {where}: pass `x_val` to sweep.")
    return max(ok, key=lambda r: (r["val_fidelity"], -r["queries"], -r["seed"]))


def choose_thief_arch(victim_model, pool_x, pool_labels, *, sizes, budget: int, x_val, x_eval, y_eval,
                      train_cfg: TrainConfig | None = None, ecfg: ExtractionConfig | None = None, seed: int = 0,
                      thief: Thief | None = None) -> tuple[str, list[dict]]:
    """The thief architecture the attacker picks: ``ecfg.thief_arch``'s family working at each of ``sizes``
    (pixels, see :func:`octlib.config.split_arch`), each trained as ``thief`` (augmented Copycat by default) at
    ``budget`` queries with one ``seed``, and the one with the highest fidelity on the attacker's own validation
    scans ``x_val`` (:func:`choose_copy`; a tie goes to the first of ``sizes``: list them from the cheapest).

    Returns ``(arch, rows)``: the chosen spec (``family@size``; the family alone when the size is the scans' own)
    and the sweep's rows (their evaluation fidelity is there to read, never to choose by). Every query is counted
    in the rows, like any thief's.
    """
    ecfg = ecfg or ExtractionConfig()
    if not sizes:
        raise ValueError("`sizes` is empty: give the input sizes (pixels) to choose from, e.g. (32, 64, 128).")
    if x_val is None or not len(x_val):
        raise ValueError("`x_val` (the attacker's validation scans) is needed: the size is chosen on them.")
    family, image_size = split_arch(ecfg.thief_arch)[0], int(np.shape(pool_x)[1])
    archs = tuple(family if int(s) == image_size else f"{family}@{int(s)}" for s in sizes)
    rows = sweep(victim_model, {"oct": (pool_x, pool_labels)}, attacks=(thief or Thief("copycat", augment=True),),
                 answers=("probabilities",), budgets=(int(budget),), seeds=(int(seed),), thief_archs=archs,
                 train_cfg=train_cfg, ecfg=ecfg, x_eval=x_eval, y_eval=y_eval, x_val=x_val, progress=False)
    return choose_copy(rows)["thief_arch"], rows


def adaptive_thieves(answers: str, defences=(), ecfg: ExtractionConfig | None = None) -> tuple[Thief, ...]:
    """The thieves a determined attacker runs against an API that answers ``answers`` through the post-processors
    ``defences``: Copycat on the answers as they come; on their argmax when they are probabilities (a
    post-processor that keeps the top class then gives away exactly the labels); Copycat averaging
    ``ecfg.noise_repeats`` repeats of every scan when a post-processor is randomized (fresh noise per call); and
    adaptive KnockoffNets with ``ecfg.adaptive_reward`` (the same reward for every API)."""
    ecfg = ecfg or ExtractionConfig()
    out = [Thief("copycat")]
    if answers == "probabilities":
        out.append(Thief("copycat", reads="argmax"))
    if any(getattr(d, "randomized", False) for d in defences) and ecfg.noise_repeats > 1:
        out.append(Thief("copycat", repeats=ecfg.noise_repeats))
    out.append(Thief("knockoff-adaptive", reward=ecfg.adaptive_reward))
    return tuple(out)


def augmented_thieves() -> tuple[Thief, ...]:
    """The thieves of notebook 32 that every defence faces too, at the defence's augmented budget
    (``DefenceConfig.augmented_budget``): Copycat on augmented queries, and the no-query thief with the same
    augmentation (its baseline: theft is the gain over it, :func:`octlib.compare.theft_gain_table`)."""
    return Thief("copycat", augment=True), Thief("no-query", augment=True)


def defended_thefts(models: dict, pool, *, thieves, budget: int, augmented_budget: int | None, ecfg: ExtractionConfig,
                    train_cfg: TrainConfig | None, x_eval, y_eval, x_val=None, seeds=None) -> list[dict]:
    """Every retrained (defended) model of ``models`` (name -> Keras logits model) behind a probability API, facing
    ``thieves`` at ``budget`` and, at ``augmented_budget`` (``None``: not run), the augmented thieves
    (:func:`augmented_thieves`, the no-query baseline trained once and scored against each model): the flat report
    rows of :func:`sweep`, each tagged with its ``defence`` (the model's name)."""
    cache, rows = {}, []
    common = dict(answers=("probabilities",), seeds=ecfg.seeds if seeds is None else seeds, train_cfg=train_cfg,
                  ecfg=ecfg, x_eval=x_eval, y_eval=y_eval, x_val=x_val, progress=False)
    for name, model in models.items():
        rows += sweep(model, {"oct": pool}, attacks=thieves, budgets=(budget,), tag={"defence": name}, **common)
        if augmented_budget:
            rows += sweep(model, {"oct": pool}, attacks=augmented_thieves(), budgets=(int(augmented_budget),),
                          tag={"defence": name}, cache=cache, **common)
    return rows


def transfer_outcomes(victim_model, sources: dict, x, y, eps: float, *, steps: int, restarts: int = 1,
                      seed: int = 0) -> dict:
    """The steal-then-attack chain: L∞ PGD at ``eps`` crafted on each source (name -> Keras logits model: a stolen
    copy, an independent surrogate, or the victim itself for the white-box reference) and replayed against the
    victim, on the same scans ``(x, y)``. Returns ``{"correct"`` (the victim answers the clean scan right),
    ``"fooled"`` (name -> per scan: right clean and wrong on the replayed scan), ``"eps", "steps", "restarts"}``;
    :func:`octlib.compare.chain_table` pairs them."""
    from .attacks import pgd
    from .estimators import art_classifier, check_xy
    from .metrics import predict_logits

    x, y = check_xy(x, y)
    correct = predict_logits(victim_model, x).argmax(1) == y
    fooled = {}
    for name, model in sources.items():
        x_adv = pgd(art_classifier(model), x, y, eps, steps=steps, restarts=restarts, seed=seed, progress=False).x_adv
        fooled[name] = correct & (predict_logits(victim_model, x_adv).argmax(1) != y)
    return {"correct": correct, "fooled": fooled, "eps": float(eps), "steps": steps, "restarts": restarts}
