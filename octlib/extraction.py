"""Model extraction through ART: Copycat CNN and KnockoffNets against the victim behind a query-only API.

Threat model. The victim is served behind an API (:func:`victim_api`): the attacker sends scans and reads the
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
``train_step`` traced once with ``reduce_retracing`` (ART's default re-traces on every call: ~10x slower for
adaptive KnockoffNets); adaptive KnockoffNets with ``reward="all"`` against a label-only API fails inside ART with
"probabilities contain NaN" (the certainty reward is constant, its variance 0); :func:`steal` reports that as a
failed run with the reason instead of crashing.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np

from .config import CLASSES, ExtractionConfig, TrainConfig

ANSWERS = ("probabilities", "labels")
# ART's model-extraction demo on MNIST (victim accuracy 0.959), stolen accuracy at these query budgets with
# label-only answers (../shared/REFERENCE.md): published numbers to compare against, not results of this study.
ART_MNIST_DEMO = {"victim_accuracy": 0.959, "budgets": (250, 500, 1000, 2000, 4000, 5000),
                  "copycat": (0.19, 0.39, 0.65, 0.83, 0.90, 0.91),
                  "knockoff-random": (0.16, 0.32, 0.63, 0.84, 0.89, 0.91)}
ATTACKS = ("copycat", "knockoff-random", "knockoff-adaptive")
REWARDS = ("cert", "div", "loss", "all")
NAN_REASON = ("adaptive KnockoffNets normalises each reward by its running variance; against label-only answers "
              "the certainty reward (top-1 minus top-2 probability) is always 1, its variance 0, so the bandit's "
              "sampling probabilities become NaN (ART issue #1746). Use reward 'div', 'loss' or 'cert', or an API "
              "that answers probabilities.")


def attacker_pools(splits, ecfg: ExtractionConfig | None = None, *, seed: int = 0):
    """The attacker's two query pools and the evaluation split.

    Returns ``(carved, pools, proxy)``: ``carved`` are the victim's splits with the real-OCT pool carved out of
    the test patients (:func:`octlib.data.carve_query_pool`; ``carved.test`` is where copies are scored),
    ``pools`` maps ``"oct"`` and ``"proxy"`` to ``(x, attacker labels)`` (the diagnosis of the attacker's own
    scans; the source image of a natural-image crop), ``proxy`` is the :class:`octlib.data.ProxyPool`.
    """
    from .data import carve_query_pool, proxy_pool

    ecfg = ecfg or ExtractionConfig()
    carved = carve_query_pool(splits, ecfg.pool_fraction, seed=seed)
    proxy = proxy_pool(ecfg.proxy_size, carved.train.image_size, seed=seed)
    pools = {"oct": (carved.pool.x, carved.pool.labels), "proxy": (proxy.x, proxy.labels)}
    return carved, pools, proxy


def _query_counting_class():
    from .attacks import _fast_classifier_class

    class QueryCountingClassifier(_fast_classifier_class()):
        """ART's ``TensorFlowV2Classifier`` that counts the images it is asked to predict (``queries``) and the
        top class of its answers (``answer_counts``, per class)."""

        queries = 0
        answer_counts = np.zeros(len(CLASSES), dtype=np.int64)

        def predict(self, x, batch_size: int = 128, training_mode: bool = False, **kwargs):
            with _quiet_retracing():  # one trace per API instance, by design
                out = super().predict(x, batch_size=batch_size, training_mode=training_mode, **kwargs)
            self.queries += len(x)
            self.answer_counts = self.answer_counts + np.bincount(np.argmax(out, axis=1), minlength=len(CLASSES))
            return out

    return QueryCountingClassifier


def victim_api(model, answers: str = "probabilities", *, defences=()):
    """The victim as a client sees it: an ART classifier whose ``predict`` answers ``probabilities`` (softmax of
    the logits) or ``labels`` (one-hot rows, :class:`octlib.defences.LabelOnly`), and counts queries.

    ``defences`` are further ART post-processors applied to the probabilities before a label-only answer is made
    (output noise, ReverseSigmoid...). Post-processors act in ``predict`` only: ``loss_gradient`` and
    ``class_gradient`` are the raw model's (cross-entropy on the logits), which is what a white-box attacker uses.
    """
    import keras

    from .defences import LabelOnly, Softmax

    if answers not in ANSWERS:
        raise ValueError(f"`answers` must be one of {ANSWERS}, got {answers!r}.")
    chain = [Softmax(), *defences] + ([LabelOnly()] if answers == "labels" else [])
    return _query_counting_class()(
        model=model, nb_classes=len(CLASSES), input_shape=tuple(model.input_shape[1:]),
        loss_object=keras.losses.CategoricalCrossentropy(from_logits=True), clip_values=(0.0, 1.0),
        postprocessing_defences=chain)


def thief_classifier(arch: str, image_size: int, train_cfg: TrainConfig | None = None, *,
                     learning_rate: float = 1e-3):
    """A fresh thief: the ``arch`` model (see :func:`octlib.models.build_model`), logits, as an ART
    ``TensorFlowV2Classifier`` with its own Adam optimizer and a ``train_step`` traced once."""
    import keras
    import tensorflow as tf

    from .attacks import _fast_classifier_class
    from .models import build_model

    model = build_model(arch, image_size, train_cfg, name=f"thief_{arch}")
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(model.trainable_variables)
    loss_object = keras.losses.CategoricalCrossentropy(from_logits=True)

    @tf.function(reduce_retracing=True)
    def train_step(net, images, labels):
        with tf.GradientTape() as tape:
            loss = loss_object(labels, net(images, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, net.trainable_variables), net.trainable_variables))
        return loss

    return _fast_classifier_class()(
        model=model, nb_classes=len(CLASSES), input_shape=tuple(model.input_shape[1:]), loss_object=loss_object,
        optimizer=optimizer, train_step=train_step, clip_values=(0.0, 1.0))


@contextlib.contextmanager
def _quiet_retracing():
    """Every run builds a new victim API and thief, so ART's per-classifier ``tf.function`` is traced once per
    run by design; TensorFlow's "triggered tf.function retracing" warning says nothing useful here."""
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclass
class ExtractionRun:
    """One extraction attack: the settings, the stolen model (``None`` when the attack failed) and its cost."""

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

    def row(self) -> dict:
        """The settings and cost as a flat dict (no model)."""
        return {"attack": self.attack, "answers": self.answers, "pool": self.pool, "budget": self.budget,
                "queries": self.queries, "seed": self.seed, "thief_arch": self.thief_arch, "status": self.status,
                "error": self.error, "runtime_s": self.runtime_s, "answer_counts": self.answer_counts,
                "params": self.params}

    def report(self, x_eval, y_eval, logits_victim) -> dict:
        """:meth:`row` plus :func:`octlib.metrics.extraction_report` of the thief on ``(x_eval, y_eval)`` (the
        metrics are NaN for a failed run)."""
        from .metrics import extraction_report, predict_logits

        if self.thief is None:
            nan = float("nan")
            return {**self.row(), "n": len(y_eval), "accuracy": {"value": nan}, "loss": nan, "fidelity": {"value": nan},
                    "relative_accuracy": nan, "urgent_agreement": nan}
        return {**self.row(), **extraction_report(y_eval, logits_victim, predict_logits(self.thief, x_eval))}


def steal(victim_model, pool_x, *, attack: str = "copycat", answers: str = "probabilities", budget: int = 250,
          pool_labels=None, pool_name: str = "oct", thief_arch: str = "victim", train_cfg: TrainConfig | None = None,
          ecfg: ExtractionConfig | None = None, reward: str = "all", seed: int = 0, defences=(),
          progress: bool = False) -> ExtractionRun:
    """Steal the victim with one attack and budget; the run is reproducible for a ``seed`` (it re-seeds Python,
    NumPy and TensorFlow with it).

    Args:
        victim_model: the victim's Keras logits model (the attacker only ever calls the API's ``predict``).
        pool_x: the attacker's query images, float32 ``(N, S, S, 1)`` in [0, 1].
        attack: ``copycat``, ``knockoff-random`` or ``knockoff-adaptive``.
        answers: what the API returns, ``probabilities`` or ``labels``. With probabilities, Copycat and random
            KnockoffNets train on them (ART's ``use_probability``); adaptive KnockoffNets always trains on the top
            label and uses the answers for its rewards.
        budget: queries. Random sampling takes ``min(budget, len(pool))`` distinct images (``extra["capped"]``);
            adaptive sampling draws with replacement, so it uses the whole budget.
        pool_labels: the attacker's own category of each pool image (needed by ``knockoff-adaptive``).
        pool_name: a name for the pool in the results (``oct``, ``proxy``).
        thief_arch: ``victim`` or ``separable`` (:func:`octlib.models.build_model`).
        train_cfg: the thief architecture's settings (normally the profile's, as for the victim).
        ecfg: thief training settings (steps, batch size, learning rate); the profile's by default.
        reward: adaptive KnockoffNets reward (``cert``, ``div``, ``loss``, ``all``).
        defences: output post-processors of the victim API (see :func:`victim_api`).
    """
    import keras
    from art.attacks.extraction import CopycatCNN, KnockoffNets

    if attack not in ATTACKS:
        raise ValueError(f"`attack` must be one of {ATTACKS}, got {attack!r}.")
    if reward not in REWARDS:
        raise ValueError(f"`reward` must be one of {REWARDS}, got {reward!r}.")
    if not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ValueError(f"`budget` must be a positive integer (queries), got {budget!r}.")
    pool_x = np.asarray(pool_x, dtype=np.float32)
    if pool_x.ndim != 4 or pool_x.shape[1:] != tuple(victim_model.input_shape[1:]):
        raise ValueError(f"`pool_x` must be (N, {', '.join(map(str, victim_model.input_shape[1:]))}) images like the "
                         f"victim's input, got {pool_x.shape}.")
    if len(pool_x) == 0 or pool_x.min() < 0 or pool_x.max() > 1:
        raise ValueError("`pool_x` must be a non-empty array of images in [0, 1].")
    ecfg = ecfg or ExtractionConfig()
    adaptive = attack == "knockoff-adaptive"
    actions = None
    if adaptive:
        if pool_labels is None or len(pool_labels) != len(pool_x):
            raise ValueError("`knockoff-adaptive` needs `pool_labels`: the attacker's own category of every pool "
                             "image (e.g. the diagnosis of its OCT scans, or the source of a proxy crop).")
        actions = np.unique(np.asarray(pool_labels), return_inverse=True)[1].reshape(-1)  # categories 0..K-1
    used = int(budget) if adaptive else int(min(budget, len(pool_x)))
    batches = math.ceil(used / ecfg.thief_batch_size)
    epochs = max(1, math.ceil(ecfg.thief_steps / batches))
    params = {"budget_requested": int(budget), "nb_stolen": used, "nb_epochs": epochs,
              "batch_size_fit": ecfg.thief_batch_size, "thief_steps": ecfg.thief_steps,
              "learning_rate": ecfg.thief_learning_rate, "use_probability": answers == "probabilities"}
    if adaptive:
        params["reward"] = reward
    keras.utils.set_random_seed(int(seed))
    api = victim_api(victim_model, answers, defences=defences)
    thief = thief_classifier(thief_arch, pool_x.shape[1], train_cfg, learning_rate=ecfg.thief_learning_rate)
    common = dict(batch_size_fit=ecfg.thief_batch_size, batch_size_query=256, nb_epochs=epochs, nb_stolen=used,
                  use_probability=answers == "probabilities")
    if attack == "copycat":
        art_attack = CopycatCNN(api, **common)
    else:
        art_attack = KnockoffNets(api, sampling_strategy="adaptive" if adaptive else "random", reward=reward,
                                  verbose=progress, **common)
    t0 = time.perf_counter()
    status, error, stolen = "ok", None, None
    try:
        with _quiet_retracing(), np.errstate(invalid="ignore"):  # the NaN is reported below, with its reason
            stolen = art_attack.extract(pool_x, y=actions, thieved_classifier=thief)
    except ValueError as exc:
        if "probabilities contain NaN" not in str(exc):
            raise
        status, error = "failed", f"{exc}: {NAN_REASON}"
    runtime = time.perf_counter() - t0
    return ExtractionRun(attack=attack, answers=answers, pool=pool_name, budget=int(budget), queries=int(api.queries),
                         seed=int(seed), thief_arch=thief_arch, params=params, runtime_s=runtime,
                         thief=stolen.model if stolen is not None else None, status=status, error=error,
                         answer_counts=dict(zip(CLASSES, map(int, api.answer_counts))),
                         extra={"capped": used < budget})


def sweep(victim_model, pools: dict, *, attacks=("copycat",), answers=ANSWERS, budgets=None, seeds=None,
          thief_archs=None, train_cfg: TrainConfig | None = None, ecfg: ExtractionConfig | None = None,
          reward: str = "all", fallback_reward: str | None = None, x_eval=None, y_eval=None, defences=(),
          tag: dict | None = None, progress: bool = True) -> list[dict]:
    """Every combination of pool x attack x answer type x thief architecture x budget x seed, as report rows
    (:meth:`ExtractionRun.report` on ``(x_eval, y_eval)``), with a progress bar.

    ``pools`` maps a pool name to ``(x, labels)`` (labels may be ``None`` unless ``knockoff-adaptive`` is
    among the attacks). Budgets larger than a random-sampling pool are cut to the pool size once (the row's
    ``queries`` says what was used). Returns the rows and keeps the stolen models out of them.

    ``fallback_reward``: an adaptive KnockoffNets run that fails with ``reward`` (ART's ``all`` on label-only
    answers: "probabilities contain NaN") keeps its failed row and is run again with this reward; the retry's row
    names its attack ``knockoff-adaptive (<reward>)``. ``tag`` is added to every row (e.g. ``{"defence": name}``).
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
    jobs = []
    for pool_name, (px, plabels) in pools.items():
        for attack in attacks:
            wanted = budgets if budgets is not None else (
                ecfg.adaptive_budgets if attack == "knockoff-adaptive" else ecfg.budgets)
            if attack != "knockoff-adaptive":  # cut to the pool once: a larger budget would repeat the same run
                wanted = sorted({min(int(b), len(px)) for b in wanted})
            for ans in answers:
                for arch in thief_archs:
                    for b in wanted:
                        for s in seeds:
                            jobs.append((pool_name, px, plabels, attack, ans, arch, int(b), s))
    rows = []
    for pool_name, px, plabels, attack, ans, arch, b, s in tqdm(jobs, desc="extraction runs", disable=not progress):
        kw = dict(attack=attack, answers=ans, budget=b, pool_labels=plabels, pool_name=pool_name, thief_arch=arch,
                  train_cfg=train_cfg, ecfg=ecfg, seed=s, defences=defences)
        run = steal(victim_model, px, reward=reward, **kw)
        rows.append(run.report(x_eval, y_eval, logits_victim))
        if run.status != "ok" and attack == "knockoff-adaptive" and fallback_reward:
            retry = steal(victim_model, px, reward=fallback_reward, **kw).report(x_eval, y_eval, logits_victim)
            rows.append({**retry, "attack": f"knockoff-adaptive ({fallback_reward})"})
    for row in rows:
        row.update(tag or {})
    return rows


def summarise(rows, threshold: float = 0.9):
    """Mean ± sd over seeds per pool x attack x answers x thief x budget (a DataFrame), and per curve the
    budget at which mean fidelity reaches ``threshold`` and stays there (``None``: not within the budgets)."""
    from .metrics import budget_to_reach, mean_sd

    flat = [{"pool": r["pool"], "attack": r["attack"], "answers": r["answers"], "thief_arch": r["thief_arch"],
             "budget": r["budget"], "queries": r["queries"], "accuracy": r["accuracy"]["value"],
             "loss": r["loss"], "fidelity": r["fidelity"]["value"], "relative_accuracy": r["relative_accuracy"],
             "urgent_agreement": r["urgent_agreement"], "runtime_s": r["runtime_s"],
             "failed": r["status"] != "ok"} for r in rows]
    keys = ["pool", "attack", "answers", "thief_arch", "budget"]
    table = mean_sd(flat, keys, ["queries", "accuracy", "loss", "fidelity", "relative_accuracy",
                                 "urgent_agreement", "runtime_s", "failed"])
    reach = {}
    for curve, part in table.groupby(keys[:-1], sort=True):
        reach["/".join(curve)] = budget_to_reach(part["queries_mean"], part["fidelity_mean"], threshold)
    return table, reach
