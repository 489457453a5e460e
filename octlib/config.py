"""Project settings in one place: class names, paths, profiles and the seed helper.

Three settings are read from the environment (and can be passed as arguments instead):

* ``OCTLIB_PROFILE``: ``quick`` (CI, the sample, minutes on 2 CPU cores) or ``full`` (the study).
* ``OCTLIB_DATA``: which data to use; resolved by :func:`octlib.data.resolve_source`.
* ``OCTLIB_SPLIT_POLICY``: the victim's split policy, ``official`` or ``pooled`` (default: the profile's,
  ``official``); see :func:`get_profile`.

Output folders live under the project root and can be moved with ``OCTLIB_FIGURES``, ``OCTLIB_RESULTS``,
``OCTLIB_ARTIFACTS`` and ``OCTLIB_CACHE``. The committed ``figures/`` are written only by the reference run
(``make reference``, :func:`octlib.runner.run_series` with ``reference=True``); any other run writes its figures
into its own run folder, and a notebook opened by hand into ``runs/interactive/figures`` (see
:func:`figures_dir`). The project root is ``OCTLIB_HOME`` when set, else the checkout that holds this package, else
the current directory (e.g. on Colab after a non-editable install).
"""

from __future__ import annotations

import importlib.abc
import os
import random
import sys
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from .labels import CLASSES, URGENT_CLASSES
from .registry import suite_names
from .threat import ThreatModel, eps_label, to_unit

PROFILE_ENV = "OCTLIB_PROFILE"
DATA_ENV = "OCTLIB_DATA"
SPLIT_POLICY_ENV = "OCTLIB_SPLIT_POLICY"
#: ``official``: keep the source's test split; ``pooled``: pool every image and split by patient.
SPLIT_POLICIES = ("official", "pooled")
DEFAULT_PROFILE = "quick"


def project_root() -> Path:
    """The project folder: ``OCTLIB_HOME``, else the checkout holding this package, else the working directory."""
    env = os.environ.get("OCTLIB_HOME")
    if env:
        return Path(env).expanduser().resolve()
    here = Path(__file__).resolve().parent.parent
    if (here / "pyproject.toml").is_file() and (here / "octlib").is_dir():
        return here
    return Path.cwd().resolve()


def _dir(env: str, default: str) -> Path:
    value = os.environ.get(env)
    return Path(value).expanduser().resolve() if value else project_root() / default


#: The committed reference run's folder (figures, tables, their results and one manifest per notebook).
REFERENCE_DIR = "figures"
#: Where figures of a notebook opened by hand go when ``OCTLIB_FIGURES`` is not set.
INTERACTIVE_FIGURES = "runs/interactive/figures"


def figures_dir() -> Path:
    """Where :func:`octlib.plotting.save_fig` and table exports write: ``OCTLIB_FIGURES``, else
    ``<root>/runs/interactive/figures``. Never the committed ``figures/`` unless a reference run (or the user)
    points ``OCTLIB_FIGURES`` there: ``python -m octlib run`` sets it to its run folder."""
    return _dir("OCTLIB_FIGURES", INTERACTIVE_FIGURES)


def reference_dir() -> Path:
    """The committed reference run: ``<root>/figures`` (figures, tables, ``results/`` and ``manifests/``)."""
    return project_root() / REFERENCE_DIR


def results_dir() -> Path:
    """Where the results store writes one JSON per experiment (``OCTLIB_RESULTS`` or ``<root>/results``)."""
    return _dir("OCTLIB_RESULTS", "results")


def artifacts_dir() -> Path:
    """Where trained models and their sidecars live (``OCTLIB_ARTIFACTS`` or ``<root>/artifacts``)."""
    return _dir("OCTLIB_ARTIFACTS", "artifacts")


def data_dir() -> Path:
    """Where downloads go (``<root>/data``)."""
    return project_root() / "data"


def cache_dir() -> Path:
    """Where decoded arrays are cached (``OCTLIB_CACHE`` or ``<root>/data/cache``)."""
    return _dir("OCTLIB_CACHE", "data/cache")


@dataclass(frozen=True)
class TrainConfig:
    """How the victim CNN is built and trained (see :mod:`octlib.models` and :mod:`octlib.training`).

    Attributes:
        filters: output channels of each conv block (conv 3x3 -> batch norm -> ReLU -> 2x2 max-pool).
        convs_per_block: conv layers per block.
        dropout: dropout before the logits layer.
        dense_units: width of a hidden dense layer after global pooling (0: none).
        input_norm: ``per_image`` standardises each scan inside the model (mean 0, sd 1), so scanner gain and
            contrast differences between releases matter less; ``none`` feeds [0, 1] pixels as they are. The
            model's input stays [0, 1] either way (attacks clip there).
        augment: ``none``, ``standard`` (horizontal flip, +-5% shift, zoom +-10% height and +-25% width,
            contrast +-20%: all plausible for B-scans; never a vertical flip) or ``standard+blur`` (also a random
            Gaussian blur and pixel noise, which mimic the smoother speckle of wide scans squashed to the input).
        class_weight: ``balanced`` (weights inverse to class frequency; OCT2017 and OCTMNIST are ~47% NORMAL)
            or ``none``.
        epochs: the most epochs; early stopping on validation loss usually ends sooner.
        batch_size: images per step.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW decoupled weight decay.
        label_smoothing: label smoothing of the training loss (0: none; a defence in notebook 42).
        early_stopping_patience: epochs without a better validation loss before stopping (best weights kept).
        reduce_lr_patience: epochs without a better validation loss before halving the learning rate.
        lr_schedule: ``plateau`` (halve the learning rate after ``reduce_lr_patience`` epochs without a better
            validation loss; stop early after ``early_stopping_patience``) or ``cosine`` (cosine decay from
            ``learning_rate`` to 1% of it over all ``epochs``, no early stop; the epoch with the lowest validation
            loss is kept either way).
        mixed_precision: use float16 compute on a GPU (logits stay float32); ignored on CPU.
        noise_sigma: Gaussian noise N(0, σ²) added to training scans after augmentation, σ in [0, 1] pixel
            units, not clipped (Cohen et al. 2019's training for randomized smoothing; 0: none).
        noise_fraction: the share of training scans that get the noise (each scan drawn afresh every epoch); 1:
            every scan (Cohen et al.), below 1 a clean/noisy mix for a model that must also answer clean scans.
            With ``validate_under_threat`` the validation loss is then the mean over clean and noisy copies of
            the validation scans, so the epoch is chosen on both.
        adv_eps_255: PGD adversarial training (Madry et al. 2018): every training batch is replaced by its
            L-infinity PGD adversarial examples within ε = ``adv_eps_255``/255 (0: none).
        adv_steps: PGD steps per training batch (random start, step 2.5 ε / steps); 1 step is FGSM with a
            random start ("FGSM-RS", Wong et al. 2020), prone to catastrophic overfitting.
        trades_beta: with ``adv_eps_255``, train with TRADES (Zhang et al. 2019) instead of on the PGD examples:
            the clean batch's loss plus β × KL(clean ‖ adversarial), the adversarial batch found by ``adv_steps``
            ascents of that KL (:func:`octlib.training.trades_trainer`; 0: PGD adversarial training).
        validate_under_threat: validate under the defence's own threat: a noise-trained model on noisy validation
            scans (same σ), an adversarially trained one on PGD validation scans (same ε and steps), and select
            the epoch on that (robust validation accuracy for adversarial training, noisy validation loss for
            noise training) instead of on clean validation loss.
    """

    filters: tuple[int, ...] = (32, 64, 128, 128)
    convs_per_block: int = 1
    dropout: float = 0.3
    dense_units: int = 0
    input_norm: str = "per_image"
    augment: str = "standard"
    class_weight: str = "balanced"
    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    early_stopping_patience: int = 10
    reduce_lr_patience: int = 4
    mixed_precision: bool = True
    noise_sigma: float = 0.0
    noise_fraction: float = 1.0
    adv_eps_255: float = 0.0
    adv_steps: int = 0
    trades_beta: float = 0.0
    validate_under_threat: bool = False
    lr_schedule: str = "plateau"

    # Settings added after artifact keys existed: they enter the key only when they differ from these defaults,
    # so models trained before they existed keep their keys.
    _KEY_OPTIONAL = {"noise_sigma": 0.0, "noise_fraction": 1.0, "adv_eps_255": 0.0, "adv_steps": 0, "trades_beta": 0.0,
                     "validate_under_threat": False,
                     "lr_schedule": "plateau"}

    def __post_init__(self):
        checks = {
            "filters": bool(self.filters) and all(isinstance(f, int) and f > 0 for f in self.filters),
            "convs_per_block": self.convs_per_block >= 1, "dropout": 0 <= self.dropout < 1,
            "dense_units": self.dense_units >= 0, "input_norm": self.input_norm in ("none", "per_image"),
            "augment": self.augment in ("none", "standard", "standard+blur"),
            "class_weight": self.class_weight in ("none", "balanced"), "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1, "learning_rate": self.learning_rate > 0,
            "weight_decay": self.weight_decay >= 0, "label_smoothing": 0 <= self.label_smoothing < 1,
            "early_stopping_patience": self.early_stopping_patience >= 1,
            "reduce_lr_patience": self.reduce_lr_patience >= 1,
            "lr_schedule": self.lr_schedule in ("plateau", "cosine"),
            "noise_sigma": 0 <= self.noise_sigma <= 1, "noise_fraction": 0 < self.noise_fraction <= 1,
            "adv_eps_255": 0 <= self.adv_eps_255 <= 64,
            "adv_steps": self.adv_steps >= 0 and (self.adv_steps >= 1) == (self.adv_eps_255 > 0),
            "trades_beta": self.trades_beta >= 0 and (self.trades_beta == 0 or self.adv_eps_255 > 0),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"Invalid TrainConfig setting(s) {bad}: {[getattr(self, k) for k in bad]}; see the "
                             "TrainConfig docstring for the allowed values.")

    def to_dict(self) -> dict:
        return asdict(self)

    def key_dict(self) -> dict:
        """The settings as they enter a model's artifact key (see ``_KEY_OPTIONAL``)."""
        return {k: v for k, v in self.to_dict().items() if k not in self._KEY_OPTIONAL or v != self._KEY_OPTIONAL[k]}


@dataclass(frozen=True)
class AttackConfig:
    """Evasion-attack settings (see :mod:`octlib.attacks`). ε is given in /255 steps and used in [0, 1] units.

    Attributes:
        eps_255: the ε grid in /255 units: fine below 2/255 (published OCT studies stop at 0.002 ~ 0.5/255) and on
            until the model is at chance.
        subset: test images attacked (class-stratified, seeded), or ``None`` for the whole test split.
        batch_size: images per attack batch.
        pgd_steps: PGD iterations; the step size is 2.5 * ε / steps (Madry et al. 2018).
        pgd_restarts: PGD random starts in the ε-ball (the best result per image is kept).
        deepfool_max_iter: DeepFool iterations at most (on the sample almost every scan flips within 3; ART checks
            for a flip before applying the overshoot, so scans that land on the boundary run to this limit).
        deepfool_overshoot: DeepFool overshoot (0.02 in Moosavi-Dezfooli et al. 2016).
        deepfool_batch_size: images per DeepFool batch (ART's default of 1 is what makes it slow).
    """

    eps_255: tuple[float, ...] = (0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
    subset: int | None = None
    batch_size: int = 128
    pgd_steps: int = 20
    pgd_restarts: int = 3
    deepfool_max_iter: int = 20
    deepfool_overshoot: float = 0.02
    deepfool_batch_size: int = 128

    def __post_init__(self):
        if not self.eps_255 or any(not 0 < e <= 255 for e in self.eps_255) or list(self.eps_255) != sorted(
                self.eps_255):
            raise ValueError(f"`eps_255` must be increasing values in (0, 255] (ε x 255), got {self.eps_255}.")
        for name in ("batch_size", "pgd_steps", "deepfool_max_iter", "deepfool_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        if self.pgd_restarts < 0 or self.deepfool_overshoot < 0 or (self.subset is not None and self.subset < 4):
            raise ValueError("`pgd_restarts` and `deepfool_overshoot` must be >= 0 and `subset` None or >= 4.")

    @property
    def eps(self) -> tuple[float, ...]:
        """The grid in [0, 1] pixel units."""
        return tuple(to_unit(e) for e in self.eps_255)


@dataclass(frozen=True)
class SuiteConfig:
    """The attack suite every model faces (see :mod:`octlib.evaluation`): the same attacks on the same scans.

    Attributes:
        attacks: run in this order on each ε; a scan is robust only if none fools it. ``FGSM``, ``PGD`` (cross-
            entropy, highest-loss restart kept), ``APGD-DLR`` / ``APGD-CE`` (ART's AutoPGD; a randomized defence
            gets ``PGD-margin`` with EOT instead), ``APGD-T`` (targeted AutoPGD towards each other class in turn),
            ``PGD-margin`` (best wrong minus true logit), ``Square`` (score-based, no gradients: the
            gradient-masking probe, at the headline ε only). Croce & Hein's FAB-T is not in ART.
        eps_255: the L∞ ε grid in /255 (in [0, 1] units: value / 255); ``headline_255`` its headline value.
        n_scans: evaluation scans per model (class-stratified, seeded; ``None``: every evaluation scan).
        pgd_steps, pgd_restarts: PGD iterations (step 2.5 ε / steps) and random starts (0: start at the scan).
        apgd_steps, apgd_restarts: AutoPGD iterations and random starts.
        square_queries: Square attack iterations (one query each) per scan. 1,000 in the full profile: on 2 CPU
            cores at 128 px, 5,000 queries on the ~120 scans an adversarially trained model keeps standing would
            take over an hour per model even with its predictions remembered (benchmarks/README.md); notebook 20's
            SQUARE_QUERIES parameter takes more on a GPU.
        eot_schedule: ``(draws, steps)`` settings of the EOT convergence study for randomized defences, increasing.
        eot_tolerance: EOT has converged when the next setting fools at most this many more scans.
        randomized_n_scans: evaluation scans for randomized defences (``None``: ``n_scans``); EOT costs
            ``draws`` times more per gradient.
        randomized_square_queries: Square queries per scan against a randomized defence (``None``:
            ``square_queries``); each query there costs the defence's K noisy forward passes.
        sweep_settings, sweep_attacks: the convergence sweep (:func:`octlib.evaluation.attack_sweep`) on the scans
            the suite leaves standing at the headline ε: ``(steps, restarts)`` pairs, growing, applied to these
            attacks until two consecutive growths fool at most ``eot_tolerance`` more scans.
        sweep_max_scans: the sweep runs on at most this many of those scans (a seeded sample; ``None``: all), so
            that its cost on a model that keeps many scans standing is bounded; what it turns there is folded in,
            and the records say how many stood and whether they were sampled.
        answer_draws: draws of a randomized answer (inference noise, output noise) whose majority scores each scan
            (>= 100: the answer in expectation; the draws are fixed, so it is a function of the scan); each costs
            K forward passes for inference noise.
        loss_attack: the loss under attack comes from one fixed max-loss attack, the same for every model: PGD on
            the cross-entropy (``pgd_steps`` steps, ``pgd_restarts`` random starts, the highest-loss start kept) on
            every scan at every ε, never early-exited, its highest loss over ε' <= ε kept per scan. ``False``: the
            suite's own highest loss, which stops growing once a scan is fooled (models attacked for different
            lengths: their losses do not compare).
        batch_size: scans per attack batch.
        spread_seeds: training seeds of the undefended victim's seed spread (the first is the study victim; the
            split keeps the study's seed), each attacked with the suite on the same scans over ``spread_eps_255``.
        spread_eps_255: the ε (/255) of the seed spread (include the headline ε: Square runs there, else at the
            largest). Each seed is attacked at every one of them from scratch, and a small ε where most scans
            survive costs most: on the full study victim 0.5/255 (77% robust) did not finish one seed in 12
            minutes on 2 cores, so the default is 1 and 2/255.
    """

    attacks: tuple[str, ...] = ("FGSM", "PGD", "APGD-DLR", "APGD-T", "Square")
    eps_255: tuple[float, ...] = (0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
    headline_255: float = 2
    n_scans: int | None = 300
    pgd_steps: int = 20
    pgd_restarts: int = 3
    apgd_steps: int = 20
    apgd_restarts: int = 1
    square_queries: int = 1000
    eot_schedule: tuple[tuple[int, int], ...] = ((1, 10), (4, 10), (8, 20), (16, 20), (32, 40))
    eot_tolerance: int = 1
    randomized_n_scans: int | None = 100
    randomized_square_queries: int | None = None
    answer_draws: int = 100
    sweep_settings: tuple[tuple[int, int], ...] = ((20, 1), (50, 1), (100, 2), (200, 5))
    sweep_attacks: tuple[str, ...] = ("APGD-CE", "APGD-DLR", "APGD-T")
    sweep_max_scans: int | None = None
    loss_attack: bool = True
    batch_size: int = 128
    spread_seeds: tuple[int, ...] = (0, 1, 2)
    spread_eps_255: tuple[float, ...] = (1, 2)

    def __post_init__(self):
        bad = []
        known = suite_names()
        if not self.attacks or any(a not in known for a in self.attacks) or len(set(self.attacks)) != len(
                self.attacks):
            bad.append(f"attacks (distinct names from {known})")
        if not self.eps_255 or list(self.eps_255) != sorted(set(self.eps_255)) or any(
                not 0 < e <= 255 for e in self.eps_255):
            bad.append("eps_255 (increasing values in (0, 255], /255 units)")
        elif not any(abs(self.headline_255 - e) < 1e-9 for e in self.eps_255):
            bad.append("headline_255 (a value of eps_255)")
        for name in ("pgd_steps", "apgd_steps", "apgd_restarts", "square_queries", "batch_size", "answer_draws"):
            if getattr(self, name) < 1:
                bad.append(f"{name} (>= 1)")
        if self.pgd_restarts < 0 or self.eot_tolerance < 0:
            bad.append("pgd_restarts / eot_tolerance (>= 0)")
        if self.randomized_square_queries is not None and self.randomized_square_queries < 1:
            bad.append("randomized_square_queries (None or >= 1)")
        for name in ("n_scans", "randomized_n_scans", "sweep_max_scans"):
            if getattr(self, name) is not None and getattr(self, name) < 4:
                bad.append(f"{name} (None or >= 4)")
        if not self.eot_schedule or any(len(p) != 2 or p[0] < 1 or p[1] < 1 for p in self.eot_schedule):
            bad.append("eot_schedule ((draws >= 1, steps >= 1) pairs)")
        if not self.sweep_settings or any(len(p) != 2 or p[0] < 1 or p[1] < 0 for p in self.sweep_settings):
            bad.append("sweep_settings ((steps >= 1, restarts >= 0) pairs)")
        if not self.sweep_attacks or any(a not in known or a in ("FGSM", "Square") for a in self.sweep_attacks):
            bad.append(f"sweep_attacks (iterative attacks from {known})")
        if not self.spread_seeds or len(set(self.spread_seeds)) != len(self.spread_seeds) or any(
                int(v) != v or v < 0 for v in self.spread_seeds):
            bad.append("spread_seeds (distinct non-negative integers)")
        if not self.spread_eps_255 or list(self.spread_eps_255) != sorted(set(self.spread_eps_255)) or any(
                not 0 < e <= 255 for e in self.spread_eps_255):
            bad.append("spread_eps_255 (increasing values in (0, 255], /255 units)")
        if bad:
            raise ValueError(f"Invalid SuiteConfig setting(s): {', '.join(bad)}.")

    def threat(self):
        """The L∞ :class:`octlib.threat.ThreatModel` of this suite."""
        return ThreatModel("inf", eps_255=tuple(self.eps_255), headline_255=self.headline_255)

    def spread_threat(self):
        """The L∞ threat of the seed spread: ``spread_eps_255``; its headline is the suite's when included, else
        the largest spread ε."""
        grid = tuple(self.spread_eps_255)
        headline = self.headline_255 if any(abs(e - self.headline_255) < 1e-9 for e in grid) else grid[-1]
        return ThreatModel("inf", eps_255=grid, headline_255=headline)


THIEF_ARCHS = ("victim", "separable")


def split_arch(spec: str) -> tuple[str, int | None]:
    """``"separable@64"`` -> ``("separable", 64)``: a thief architecture (one of :data:`THIEF_ARCHS`) and the input
    size in pixels it works at (the scan is resized inside the model, so that it still takes the victim's input;
    ``None``: the scan's own size). A clear error names the bad spec and the fix."""
    family, at, size = str(spec).partition("@")
    if family not in THIEF_ARCHS or (at and not (size.isdigit() and int(size) > 0)):
        raise ValueError(f"Unknown architecture {spec!r}: use one of {THIEF_ARCHS}, optionally with the input "
                         "size it works at in pixels, e.g. 'separable@64'.")
    return family, int(size) if at else None


def other_arch(spec: str) -> str:
    """The other thief family at the same input size: ``"separable@64"`` -> ``"victim@64"`` (notebook 30 compares
    the two)."""
    family, size = split_arch(spec)
    other = THIEF_ARCHS[1 - THIEF_ARCHS.index(family)]
    return other if size is None else f"{other}@{size}"


@dataclass(frozen=True)
class ExtractionConfig:
    """Model-extraction settings (see :mod:`octlib.extraction`).

    Attributes:
        pool_fraction: share of the test split's patients carved out as the attacker's real-OCT scans
            (:func:`octlib.data.carve_query_pool`); the rest is where stolen copies are evaluated.
        pool_val_fraction: share of the attacker's patients kept as its validation scans (never queried for
            training; where it chooses among its copies, :func:`octlib.extraction.choose_copy`).
        proxy_size: natural-image crops in the out-of-distribution proxy pool (``skimage.data``, offline).
        budgets: query budgets of the random-sampling attacks (Copycat CNN, KnockoffNets ``random``); a budget
            larger than the pool is cut to the pool (the run says so).
        adaptive_budgets: query budgets of adaptive KnockoffNets (one query and one training step at a time).
        seeds: attack seeds; results are reported as mean ± sd over them.
        thief_arch: the thief's architecture, ``victim`` (the victim's, fresh weights) or ``separable`` (a
            depthwise-separable CNN: a different family), optionally with the input size it works at, e.g.
            ``separable@64`` (:func:`split_arch`; the thief still takes the victim's scans and resizes them).
        alt_arch: the second architecture compared in the notebooks.
        thief_steps: optimizer steps every thief takes, whatever the budget and strategy (adaptive KnockoffNets'
            one step per query counted in it), so that small budgets are not under-trained and strategies get
            equal training compute.
        thief_batch_size: thief training batch size.
        thief_learning_rate: the thief's Adam learning rate (each thief has its own optimizer).
        transfer_eps_255: ε grid (/255) of the transfer attack crafted on the stolen copy.
        transfer_subset: evaluation scans attacked in the transfer comparison (class-stratified; ``None``: all).
        transfer_pgd_steps, transfer_pgd_restarts: PGD of the transfer comparison (on the copy, the surrogate and,
            white-box, on the victim); the white-box reference only has to be stronger than transfer here, the
            victim's full evaluation is notebook 20's suite.
        adaptive_reward: the adaptive KnockoffNets reward used for every answer type (``loss`` works on labels
            and probabilities alike, so answer type and reward are not confounded).
        noise_repeats: how often the averaging thief repeats each scan against output noise (each repeat a query).
        arch_seeds: seeds of the thief-architecture comparison (``None``: ``seeds``).
        augmented_budgets: budgets of the thieves that query augmented variants of the pool scans (notebook 32;
            a budget above the pool's size buys that many distinct queries).
        jacobian_lambda, jacobian_tau: the Jacobian-based dataset augmentation thief's step λ (in [0, 1] pixel
            units; Papernot et al. 2017 used 0.1 on MNIST) and the period τ (in rounds) after which the step's sign
            flips (their periodic step size).
        thief_sizes: the input sizes (pixels) among which notebook 32's attacker picks its thief's, on its own
            validation scans (:func:`octlib.extraction.choose_thief_arch`); ``()``: ``thief_arch`` as it is.
    """

    pool_fraction: float = 0.5
    pool_val_fraction: float = 0.25
    proxy_size: int = 3000
    budgets: tuple[int, ...] = (50, 100, 250, 500, 1000, 2000, 3000)
    adaptive_budgets: tuple[int, ...] = (100, 250, 500, 1000)
    seeds: tuple[int, ...] = (0, 1, 2)
    thief_arch: str = "victim"
    alt_arch: str = "separable"
    thief_steps: int = 600
    thief_batch_size: int = 32
    thief_learning_rate: float = 1e-3
    transfer_eps_255: tuple[float, ...] = (0.5, 1, 2, 4, 8)
    transfer_subset: int | None = None
    transfer_pgd_steps: int = 10
    transfer_pgd_restarts: int = 1
    adaptive_reward: str = "loss"
    noise_repeats: int = 4
    arch_seeds: tuple[int, ...] | None = None
    augmented_budgets: tuple[int, ...] = (250, 500, 1000, 2500, 5000)
    jacobian_lambda: float = 0.1
    jacobian_tau: int = 3
    thief_sizes: tuple[int, ...] = ()

    def __post_init__(self):
        bad = []
        if not 0 < self.pool_fraction < 1 or not 0 < self.pool_val_fraction < 1:
            bad.append("pool_fraction / pool_val_fraction (in (0, 1))")
        if self.adaptive_reward not in ("cert", "div", "loss", "all"):
            bad.append("adaptive_reward (cert, div, loss or all)")
        if self.noise_repeats < 1:
            bad.append("noise_repeats (>= 1)")
        if self.transfer_pgd_steps < 1 or self.transfer_pgd_restarts < 0:
            bad.append("transfer_pgd_steps (>= 1) / transfer_pgd_restarts (>= 0)")
        if self.arch_seeds is not None and (not self.arch_seeds or any(int(v) != v or v < 0 for v in self.arch_seeds)):
            bad.append("arch_seeds (None or non-negative integers)")
        for name in ("budgets", "adaptive_budgets", "augmented_budgets"):
            values = getattr(self, name)
            if not values or any(int(b) != b or b < 1 for b in values) or list(values) != sorted(set(values)):
                bad.append(f"{name} (increasing positive integers)")
        if not self.seeds or any(int(s) != s or s < 0 for s in self.seeds):
            bad.append("seeds (non-negative integers)")
        try:
            split_arch(self.thief_arch), split_arch(self.alt_arch)
        except ValueError:
            bad.append(f"thief_arch/alt_arch (one of {THIEF_ARCHS}, optionally '@<pixels>', e.g. 'separable@64')")
        if any(int(v) != v or v < 1 for v in self.thief_sizes) or list(self.thief_sizes) != sorted(set(self.thief_sizes)):
            bad.append("thief_sizes (increasing positive pixel sizes, or ())")
        for name in ("proxy_size", "thief_steps", "thief_batch_size"):
            if getattr(self, name) < 1:
                bad.append(f"{name} (>= 1)")
        if not self.thief_learning_rate > 0:
            bad.append("thief_learning_rate (> 0)")
        if not self.transfer_eps_255 or any(not 0 < e <= 255 for e in self.transfer_eps_255):
            bad.append("transfer_eps_255 (values in (0, 255], /255 units)")
        if bad:
            raise ValueError(f"Invalid ExtractionConfig setting(s): {', '.join(bad)}.")


@dataclass(frozen=True)
class DefenceConfig:
    """Defence settings (see :mod:`octlib.defences`, notebooks 4x).

    Attributes:
        noise_sigmas: standard deviations of the Gaussian noise added to the answered probabilities.
        reverse_sigmoid: ``(beta, gamma)`` of ART's ReverseSigmoid (ART's defaults: 1.0, 0.1).
        label_smoothing: label-smoothing factors of the retrained victims.
        extraction_budgets: Copycat budgets against each defended victim (``None``: the extraction budgets).
        noise_curve_budgets: budgets below the defence budget at which the averaging thief is compared with the
            raw one against output noise (``None``: every extraction budget below it).
        adaptive_budget: adaptive KnockoffNets budget against each output defence (at most the extraction
            thief steps: one training step per query).
        augmented_budget: the budget at which every defence also faces the augmented thieves
            (:func:`octlib.extraction.augmented_thieves`: Copycat on augmented queries and its no-query baseline),
            beyond the attacker's pool (``None``: not run).
        hsj_subset: scans attacked with HopSkipJump (decision-based, slow).
        hsj_max_iter, hsj_max_eval, hsj_init_eval: HopSkipJump iterations and queries per gradient estimate.
        input_noise_sigmas: σ of the Gaussian input noise, in [0, 1] pixel units: noise-trained victims,
            inference noise and randomized smoothing (Cohen et al. use 0.12, 0.25, 0.5).
        noise_fraction: the share of the noise-trained victims' training scans that get the noise
            (``TrainConfig.noise_fraction``): 0.5, a clean/noisy mix validated on both, because a clinic feeds the
            model clean scans too (trained on noisy scans only, it met clean scans out of distribution: 0.607 clean
            against the victim's 0.923 in the committed reference); 1: Cohen et al.'s noisy-only training.
        noise_samples: K, the noisy copies the inference-noise defence averages per scan.
        rs_n0, rs_n, rs_alpha: randomized smoothing: samples to select the class, samples to certify, failure
            probability.
        rs_radii: L2 radii of the certified-accuracy curve.
        rs_empirical_radii: L2 radii of the empirical check beside the certificate (an L2 PGD with EOT on the same
            smoothed classifier; each radius costs one more CERTIFY of n samples per scan still standing); ``None``:
            every radius of ``rs_radii`` up to the largest certifiable one.
        input_transforms: which input transforms notebook 23 evaluates (keys of
            :data:`octlib.defences.INPUT_TRANSFORMS`: ``jpeg``, ``bits``, ``median``).
        jpeg_quality, squeeze_bits, median_window: the input transforms of notebook 23
            (:func:`octlib.defences.input_transforms`): JPEG quality, bits kept by bit-depth reduction, median
            window in pixels (Xu et al. 2018 keep 5 bits of natural images and use 2-3 px windows).
        detector_false_alarm: the share of clean validation scans a detector may flag (its threshold, notebook 22).
        detector_weights: the adaptive attacker's weights w on the detector's standardised score (PGD on the
            cross-entropy minus w × score; :func:`octlib.detectors.joint_pgd`).
        detector_epochs, detector_train_scans: epochs of ART's binary input detector and the training scans it is
            trained on (with their PGD examples; ``None``: all of the training split).
        adv_eps_255, adv_steps: PGD adversarial training: ε (/255) and PGD steps per training batch.
        trades_beta: β of the TRADES model trained beside PGD adversarial training (same ε, steps, epochs and
            fine-tuning: equal compute; Zhang et al. 2019 use 6).
        adv_epochs: the most epochs of adversarial training (``None``: the profile's training setting).
        retrain_epochs: the most epochs of the other retrained victims, label smoothing and noise training
            (``None``: the profile's training setting).
        finetune: the retrained defence models fine-tuned from the study victim's weights instead of trained from
            a fresh initialisation (kinds ``label_smoothing``, ``noise``, ``adversarial``): such a model differs
            from the victim by its defence training alone, at a fraction of a training's cost (Jeddi et al. 2020
            fine-tune adversarially this way).
        finetune_epochs: epochs of a fine-tuning (the victim's schedule, cosine decay, runs over them).
        finetune_learning_rate: its peak learning rate (``None``: a tenth of the victim's).
    """

    noise_sigmas: tuple[float, ...] = (0.05, 0.1, 0.3, 0.5)
    reverse_sigmoid: tuple[float, float] = (1.0, 0.1)
    label_smoothing: tuple[float, ...] = (0.1, 0.3)
    extraction_budgets: tuple[int, ...] | None = None
    noise_curve_budgets: tuple[int, ...] | None = None
    adaptive_budget: int = 500
    augmented_budget: int | None = 1000
    hsj_subset: int = 100
    hsj_max_iter: int = 20
    hsj_max_eval: int = 1000
    hsj_init_eval: int = 100
    input_noise_sigmas: tuple[float, ...] = (0.12, 0.25, 0.5)
    noise_fraction: float = 0.5
    noise_samples: int = 16
    rs_n0: int = 100
    rs_n: int = 10000
    rs_alpha: float = 0.001
    rs_radii: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
    rs_empirical_radii: tuple[float, ...] | None = None
    detector_false_alarm: float = 0.05
    detector_weights: tuple[float, ...] = (0.1, 1.0, 10.0)
    detector_epochs: int = 10
    detector_train_scans: int | None = None
    input_transforms: tuple[str, ...] = ("jpeg", "bits", "median")
    jpeg_quality: int = 75
    squeeze_bits: int = 5
    median_window: int = 3
    adv_eps_255: float = 4.0
    adv_steps: int = 7
    trades_beta: float = 6.0
    adv_epochs: int | None = None
    retrain_epochs: int | None = None
    finetune: tuple[str, ...] = ()
    finetune_epochs: int = 10
    finetune_learning_rate: float | None = None

    def __post_init__(self):
        bad = []
        if any(k not in ("label_smoothing", "noise", "adversarial", "trades") for k in self.finetune):
            bad.append("finetune (kinds 'label_smoothing', 'noise', 'adversarial', 'trades')")
        if not self.trades_beta > 0:
            bad.append("trades_beta (> 0)")
        if self.finetune_epochs < 1 or (self.finetune_learning_rate is not None and not self.finetune_learning_rate > 0):
            bad.append("finetune_epochs (>= 1) / finetune_learning_rate (None or > 0)")
        if not self.input_noise_sigmas or any(not 0 < s <= 1 for s in self.input_noise_sigmas):
            bad.append("input_noise_sigmas (in (0, 1], pixel units)")
        if not 0 < self.noise_fraction <= 1:
            bad.append("noise_fraction (in (0, 1])")
        if self.noise_samples < 1:
            bad.append("noise_samples (>= 1)")
        for name in ("adv_epochs", "retrain_epochs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                bad.append(f"{name} (None or >= 1)")
        if self.rs_n0 < 1 or self.rs_n < 1 or not 0 < self.rs_alpha < 1:
            bad.append("rs_n0 / rs_n (>= 1) / rs_alpha (in (0, 1))")
        if self.rs_empirical_radii is not None and (
                not self.rs_empirical_radii or any(not r > 0 for r in self.rs_empirical_radii)
                or list(self.rs_empirical_radii) != sorted(set(self.rs_empirical_radii))):
            bad.append("rs_empirical_radii (None, or increasing L2 radii > 0)")
        if not 0 < self.detector_false_alarm < 1 or not self.detector_weights or any(
                not w > 0 for w in self.detector_weights) or self.detector_epochs < 1 or (
                self.detector_train_scans is not None and self.detector_train_scans < 2):
            bad.append("detector_false_alarm (in (0, 1)) / detector_weights (> 0) / detector_epochs (>= 1) / "
                       "detector_train_scans (None or >= 2)")
        if not self.input_transforms or any(t not in ("jpeg", "bits", "median") for t in self.input_transforms):
            bad.append("input_transforms (some of 'jpeg', 'bits', 'median')")
        if not 1 <= self.jpeg_quality <= 95 or not 1 <= self.squeeze_bits <= 7 or not 2 <= self.median_window <= 9:
            bad.append("jpeg_quality (in [1, 95]) / squeeze_bits (in [1, 7]) / median_window (in [2, 9] px)")
        if not 0 < self.adv_eps_255 <= 64 or self.adv_steps < 1:
            bad.append("adv_eps_255 (in (0, 64], /255 units) / adv_steps (>= 1)")
        if not self.noise_sigmas or any(not s > 0 for s in self.noise_sigmas):
            bad.append("noise_sigmas (> 0)")
        if len(self.reverse_sigmoid) != 2 or any(not v > 0 for v in self.reverse_sigmoid):
            bad.append("reverse_sigmoid ((beta, gamma), both > 0)")
        if not self.label_smoothing or any(not 0 < v < 1 for v in self.label_smoothing):
            bad.append("label_smoothing (values in (0, 1))")
        if self.extraction_budgets is not None and any(b < 1 for b in self.extraction_budgets):
            bad.append("extraction_budgets (positive)")
        if self.noise_curve_budgets is not None and any(int(b) != b or b < 1 for b in self.noise_curve_budgets):
            bad.append("noise_curve_budgets (None or positive integers)")
        if self.augmented_budget is not None and (int(self.augmented_budget) != self.augmented_budget
                                                  or self.augmented_budget < 1):
            bad.append("augmented_budget (None or a positive integer)")
        for name in ("adaptive_budget", "hsj_subset", "hsj_max_iter", "hsj_max_eval", "hsj_init_eval"):
            if getattr(self, name) < 1:
                bad.append(f"{name} (>= 1)")
        if bad:
            raise ValueError(f"Invalid DefenceConfig setting(s): {', '.join(bad)}.")

    def with_finetune(self, kind: str, finetune: bool | None, epochs: int | None = None) -> DefenceConfig:
        """These settings with the ``kind`` defence model fine-tuned from the victim (``True``), trained from scratch
        (``False``) or as they are (``None``); ``epochs`` (if given) sets that model's epochs, the fine-tuning's or
        the from-scratch training's (``adv_epochs`` for ``adversarial``, else ``retrain_epochs``): a notebook's
        ``FINETUNE`` and epochs parameters. ``finetune_epochs`` and ``retrain_epochs`` are shared by the kinds that
        use them, so the epochs apply to every other kind fine-tuned (or retrained) under these settings too."""
        kinds = set(self.finetune)
        if finetune is not None:
            kinds = kinds | {kind} if finetune else kinds - {kind}
        changes = {"finetune": tuple(sorted(kinds))}
        if epochs is not None:
            name = ("finetune_epochs" if kind in kinds else "adv_epochs" if kind in ("adversarial", "trades")
                    else "retrain_epochs")
            changes[name] = epochs
        return replace(self, **changes)

    def epochs_of(self, kind: str, train_epochs: int) -> int:
        """The most epochs the ``kind`` defence model trains (``train_epochs``: the victim's)."""
        if kind in self.finetune:
            return self.finetune_epochs
        return (self.adv_epochs if kind in ("adversarial", "trades") else self.retrain_epochs) or train_epochs


@dataclass(frozen=True)
class AdversarialTraining:
    """The adversarially trained victims' settings as notebooks 45, 47 and 49 resolve them (:func:`adversarial_training`):
    both must ask the model store for the same models.

    Attributes:
        profile: the profile with these settings in its ``defence`` (pass it to
            :func:`octlib.artifacts.get_or_train_defence`).
        name: the PGD-trained model's name in tables and figures, e.g. ``PGD-5 adversarial training ε=4/255``.
        trades_name: the TRADES model's (same ε, steps, epochs and fine-tuning: equal compute), e.g.
            ``TRADES β=6 (5 steps) ε=4/255``.
        finetuned: fine-tuned from the victim's weights (else trained from scratch), both models.
        epochs: the most epochs each trains.
    """

    profile: Profile
    name: str
    trades_name: str
    finetuned: bool
    epochs: int

    def describe(self) -> str:
        eps_255 = self.profile.defence.adv_eps_255
        start = "fine-tuned from the victim" if self.finetuned else "from scratch"
        return (f"{self.name} and {self.trades_name}, {start}, at most {self.epochs} epochs each "
                f"(ε = {eps_label(to_unit(eps_255))})")


def adversarial_training(profile: Profile, eps_255: float | None = None, steps: int | None = None,
                         epochs: int | None = None, finetune: bool | None = None,
                         trades_beta: float | None = None) -> AdversarialTraining:
    """Resolve the adversarial-training parameters of notebooks 45, 47 and 49 (``None``: the profile's): training ε in
    /255, PGD steps per batch (1 is FGSM-RS, Wong et al. 2020), the most epochs, fine-tuned from the victim or
    trained from scratch, and TRADES' β; the TRADES model gets the PGD model's ε, steps, epochs and fine-tuning.
    Bad values raise :class:`ValueError` naming the setting (:class:`DefenceConfig`)."""
    overrides = {"adv_eps_255": eps_255, "adv_steps": steps, "trades_beta": trades_beta}
    dcfg = replace(profile.defence, **{k: v for k, v in overrides.items() if v is not None})
    dcfg = dcfg.with_finetune("adversarial", finetune, epochs=epochs)
    tuned = "adversarial" in dcfg.finetune
    dcfg = replace(dcfg, finetune=tuple(sorted(set(dcfg.finetune) - {"trades"} | ({"trades"} if tuned else set()))))
    kind = "FGSM-RS" if dcfg.adv_steps == 1 else f"PGD-{dcfg.adv_steps}"
    return AdversarialTraining(profile=replace(profile, defence=dcfg),
                               name=f"{kind} adversarial training ε={dcfg.adv_eps_255:g}/255",
                               trades_name=trades_label(dcfg), finetuned=tuned,
                               epochs=dcfg.epochs_of("adversarial", profile.train.epochs))


def trades_label(dcfg: DefenceConfig) -> str:
    """The TRADES model's name in tables: β, the steps of its KL ascent, ε."""
    return f"TRADES β={dcfg.trades_beta:g} ({dcfg.adv_steps} steps) ε={dcfg.adv_eps_255:g}/255"


@dataclass(frozen=True)
class ThreatsConfig:
    """Clinically grounded threats (notebooks 50-53): targeted referral attacks, storage, universal perturbations
    and natural corruptions, against the victim and every retrained defence model.

    Attributes:
        targeted_eps_255: L∞ grid (/255) of the targeted referral attacks (targeted PGD on the cross-entropy with
            the suite's steps and restarts).
        storage_eps_255: L∞ grid (/255) of the storage study (the suite's PGD scans saved and decoded again).
        jpeg_qualities: JPEG qualities of the storage study (what a viewer or PACS might save with).
        uap_eps_255: L∞ budgets (/255) of the universal perturbations.
        uap_l2_zeta: L2 budgets of the universal perturbations as a share ζ of the mean L2 norm of the fitting
            scans (Hirano et al. 2021 report ζ = 2-6%).
        uap_fit_scans: scans a universal perturbation is fitted on (the validation split's, patients apart from
            every evaluation scan; the proxy fit uses as many natural-image crops).
        uap_max_iter: passes over the fitting scans at most; uap_delta: stop once 1 - delta of them are fooled.
        corruption_severities: MedMNIST-C severities measured (1-5).
    """

    targeted_eps_255: tuple[float, ...] = (0.5, 1, 2, 4, 8)
    storage_eps_255: tuple[float, ...] = (0.25, 0.5, 1, 2, 4)
    jpeg_qualities: tuple[int, ...] = (95, 75)
    uap_eps_255: tuple[float, ...] = (2, 4, 8, 16)
    uap_l2_zeta: tuple[float, ...] = (0.02, 0.04)
    uap_fit_scans: int = 200
    uap_max_iter: int = 10
    uap_delta: float = 0.2
    corruption_severities: tuple[int, ...] = (1, 2, 3, 4, 5)

    def __post_init__(self):
        bad = []
        for name in ("targeted_eps_255", "storage_eps_255", "uap_eps_255"):
            grid = getattr(self, name)
            if not grid or any(not 0 < e <= 255 for e in grid) or list(grid) != sorted(set(grid)):
                bad.append(f"{name} (increasing values in (0, 255], /255 units)")
        if not self.jpeg_qualities or any(int(q) != q or not 1 <= q <= 100 for q in self.jpeg_qualities):
            bad.append("jpeg_qualities (integers in [1, 100])")
        if any(not 0 < z < 1 for z in self.uap_l2_zeta):
            bad.append("uap_l2_zeta (shares in (0, 1))")
        if self.uap_fit_scans < 1 or self.uap_max_iter < 1 or not 0 <= self.uap_delta < 1:
            bad.append("uap_fit_scans / uap_max_iter (>= 1) / uap_delta (in [0, 1))")
        if not self.corruption_severities or any(s not in (1, 2, 3, 4, 5) for s in self.corruption_severities):
            bad.append("corruption_severities (MedMNIST-C levels 1-5)")
        if bad:
            raise ValueError(f"Invalid ThreatsConfig setting(s): {', '.join(bad)}.")


@dataclass(frozen=True)
class Profile:
    """Settings that differ between the quick (CI) and full (study) runs.

    Attributes:
        name: ``quick`` or ``full``.
        image_size: side of the square model input in pixels (images are resized to it).
        resize: how a non-square B-scan becomes square: ``squash`` (resize the whole scan, aspect ratio not
            kept), ``pad`` (pad the short side with black, then resize) or ``crop`` (centre square, then resize).
            ``squash`` is the default: OCT2017 scans of 512, 768 and 1024 px width cover the same field of
            view at different A-scan densities, so squashing keeps the anatomy's physical scale comparable,
            while a centre crop of a 1024-px scan shows half the retina that a 512-px scan shows.
        split_policy: ``official`` (keep the source's test split) or ``pooled`` (pool and split by patient).
        val_fraction: share of patients held out for validation.
        test_fraction: share of patients held out for testing under the ``pooled`` policy.
        max_per_split: cap on images per split (whole patients are kept), or ``None`` for no cap.
        train: how the victim CNN is built and trained.
        attack: evasion-attack settings.
        extraction: model-extraction settings.
        defence: defence settings.
        suite: the attack suite every model faces (:mod:`octlib.evaluation`).
        threats: targeted referral attacks, storage, universal perturbations and corruptions (notebooks 50-53).
        shift_variants: recipe variants the release-shift study trains beside the official-policy victim (notebook
            11; names of :data:`octlib.artifacts.SHIFT_VARIANTS`).
    """

    name: str
    image_size: int
    resize: str = "squash"
    split_policy: str = "official"
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    max_per_split: int | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    defence: DefenceConfig = field(default_factory=DefenceConfig)
    suite: SuiteConfig = field(default_factory=SuiteConfig)
    threats: ThreatsConfig = field(default_factory=ThreatsConfig)
    shift_variants: tuple[str, ...] = ("no per-image norm", "+ blur/noise augmentation", "no augmentation")

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    # Quick: CI on 2 CPU cores, the whole series (every model trained) within 10 minutes: 32-px inputs, the victim's
    # family at half its width, at most 10 epochs per model, small thieves and budgets. Its numbers check code paths,
    # not findings. What each choice was measured to cost: benchmarks/README.md.
    "quick": Profile(name="quick", image_size=32, max_per_split=3000,
                     train=TrainConfig(filters=(16, 32, 64, 64), epochs=10, early_stopping_patience=4,
                                       reduce_lr_patience=2),
                     attack=AttackConfig(subset=200, pgd_steps=10, pgd_restarts=1),
                     extraction=ExtractionConfig(proxy_size=400, budgets=(20, 40), adaptive_budgets=(20, 40),
                                                 augmented_budgets=(40, 120), thief_sizes=(16, 32),
                                                 seeds=(0,), thief_arch="separable", alt_arch="victim",
                                                 thief_steps=48, transfer_eps_255=(2, 8), transfer_subset=100),
                     defence=DefenceConfig(noise_sigmas=(0.3,), label_smoothing=(0.1,),
                                           extraction_budgets=(40,), adaptive_budget=40, augmented_budget=120,
                                           hsj_subset=12,
                                           hsj_max_iter=5, hsj_max_eval=200, hsj_init_eval=20,
                                           input_noise_sigmas=(0.12,), noise_samples=4, rs_n0=32,
                                           rs_n=500, rs_radii=(0.0, 0.25), adv_eps_255=2.0,
                                           adv_steps=1, adv_epochs=6, retrain_epochs=6,
                                           finetune=("adversarial", "label_smoothing", "trades"), finetune_epochs=3,
                                           detector_epochs=3, detector_train_scans=200, detector_weights=(1.0,),
                                           input_transforms=("median",)),
                     # PGD on the logit margin stands in for APGD-DLR (ART's AutoPGD re-traces its own classifier on
                     # every call, which dominates a small suite)
                     suite=SuiteConfig(attacks=("FGSM", "PGD", "PGD-margin", "Square"),
                                       eps_255=(1, 2, 4, 8, 32), n_scans=48, pgd_steps=10, pgd_restarts=1,
                                       apgd_steps=10, square_queries=100, eot_schedule=((1, 10), (4, 10), (8, 10)),
                                       randomized_n_scans=24, batch_size=128, spread_seeds=(0,),
                                       sweep_settings=((5, 0), (10, 1), (20, 1)),
                                       sweep_attacks=("PGD", "PGD-margin")),
                     threats=ThreatsConfig(targeted_eps_255=(2, 8), storage_eps_255=(0.5, 2, 8),
                                           uap_eps_255=(4, 8), uap_l2_zeta=(0.04,), uap_fit_scans=48,
                                           uap_max_iter=3, corruption_severities=(1, 3, 5)),
                     # one variant of the release-shift study (notebook 11): its code path, not its finding
                     shift_variants=("no augmentation",)),
    # Full: the study (the committed reference), sized so that every notebook fits 60 minutes on 2 CPU cores on the
    # sample at 128 px; settings worth more compute on a GPU are the notebooks' papermill parameters. The
    # measurements behind each choice: benchmarks/README.md.
    "full": Profile(name="full", image_size=128,
                    # cosine decay over 50 epochs from 2e-3: chosen on validation accuracy over three seeds
                    train=TrainConfig(filters=(32, 64, 128, 256), dense_units=128, epochs=50, batch_size=32,
                                      learning_rate=2e-3, lr_schedule="cosine"),
                    # a separable thief working at 64 px (the size notebook 32's attacker picks on its validation
                    # scans between 32 and 64 px; a step at 128 px costs 3.4x one at 64: benchmarks/README.md), the
                    # victim's family at the same size compared, 1,000 steps each (at 5,000 queries, seed 0, the
                    # no-query thief's fidelity was 0.376 at 250 steps, 0.764 at 1,000 and 2,000: benchmarks/README.md),
                    # five budgets up to what the sample's attacker pool holds, three seeds
                    extraction=ExtractionConfig(budgets=(25, 50, 100, 150, 200),
                                                adaptive_budgets=(25, 50, 100, 150, 200), thief_arch="separable@64",
                                                alt_arch="victim@64", thief_steps=1000, arch_seeds=(0,),
                                                transfer_subset=100, thief_sizes=(32, 64)),
                    # two output-noise σ, HopSkipJump on 30 scans, one input-noise σ (0.12) with K = 8 copies,
                    # certification with n0 = 100 and n = 10,000 (the largest certifiable radius at σ = 0.12 is 0.384;
                    # 0.265 with n = 500) and its empirical check at the summary radius 0.25 only (each radius
                    # costs one more CERTIFY per scan standing), label smoothing and PGD-5 adversarial training
                    # fine-tuned from the victim for 10 epochs, noise training from scratch; one α and one σ (the
                    # notebooks' LABEL_SMOOTHING and SIGMAS parameters take more)
                    defence=DefenceConfig(noise_sigmas=(0.1, 0.3), label_smoothing=(0.1,), extraction_budgets=(200,),
                                          noise_curve_budgets=(50, 100), adaptive_budget=200, hsj_subset=30,
                                          hsj_max_iter=10, hsj_max_eval=500, hsj_init_eval=50,
                                          input_noise_sigmas=(0.12,), noise_samples=8, rs_n=10000,
                                          rs_empirical_radii=(0.25,),
                                          adv_eps_255=4.0, adv_steps=5, adv_epochs=20,
                                          finetune=("adversarial", "label_smoothing", "trades"), finetune_epochs=10),
                    # one PGD start (the suite's worst case over its attacks stands in for restarts); randomized
                    # defences: 50 scans, EOT up to 16 draws x 20 steps, Square with 200 queries of K copies; the grid
                    # starts at 0.5/255 (0.25/255, under half a grey level, does not survive saving a scan in 8 bits)
                    suite=SuiteConfig(eps_255=(0.5, 1, 2, 4, 8, 16, 32, 64), pgd_restarts=1, randomized_n_scans=50,
                                      randomized_square_queries=200, sweep_max_scans=30,
                                      eot_schedule=((1, 10), (4, 10), (8, 20), (16, 20))),
                    # one release-shift variant, blur/noise augmentation (the usual answer to an acquisition shift);
                    # the others are notebook 11's VARIANTS parameter
                    shift_variants=("+ blur/noise augmentation",)),
}


def get_profile(name: str | None = None, **overrides) -> Profile:
    """Resolve the profile: ``name`` if given, else ``OCTLIB_PROFILE``, else ``quick``; its split policy:
    ``split_policy`` if given, else ``OCTLIB_SPLIT_POLICY``, else the profile's; then apply the other overrides
    (``None`` values are ignored, so a notebook can pass its parameters as they are)."""
    chosen = name or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    chosen = chosen.strip().lower()
    if chosen not in PROFILES:
        raise ValueError(
            f"Unknown profile {chosen!r} (from {'the argument' if name else PROFILE_ENV}). "
            f"Use one of {sorted(PROFILES)}, e.g. `export {PROFILE_ENV}=quick`."
        )
    profile = PROFILES[chosen]
    arg_policy = overrides.pop("split_policy", None)
    policy = arg_policy or os.environ.get(SPLIT_POLICY_ENV)
    if policy:
        policy = policy.strip().lower()
        if policy not in SPLIT_POLICIES:
            raise ValueError(
                f"Unknown split policy {policy!r} (from {'the argument' if arg_policy else SPLIT_POLICY_ENV}). Use "
                f"'official' (keep the source's test split) or 'pooled' (pool every image and split by patient), "
                f"e.g. `export {SPLIT_POLICY_ENV}=pooled`.")
        profile = replace(profile, split_policy=policy)
    if overrides:
        known = {f.name for f in fields(Profile)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"Unknown profile setting(s) {unknown}; known: {sorted(known)}.")
        overrides = {k: v for k, v in overrides.items() if v is not None}
        profile = replace(profile, **overrides)
    return profile


def set_seed(seed: int) -> int:
    """Seed Python, NumPy and Keras/TensorFlow once, from the notebook's parameters cell.

    Keras and TensorFlow are seeded now when already imported, else the moment they are first imported (by the
    notebook or by an ``octlib`` function): importing TensorFlow takes 4-6 s here, which a notebook that never trains or
    attacks (data exploration, the comparison) need not pay. Either way they start from the same seeded state.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}.")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    _SEED_ON_IMPORT.seed = seed
    if "tensorflow" in sys.modules:
        _seed_tensorflow(sys.modules["tensorflow"], seed)
    if "keras" in sys.modules:
        _seed_keras(sys.modules["keras"], seed)
    if not {"tensorflow", "keras"} <= set(sys.modules) and _SEED_ON_IMPORT not in sys.meta_path:
        sys.meta_path.insert(0, _SEED_ON_IMPORT)
    return seed


def _seed_tensorflow(tf, seed: int) -> None:
    tf.random.set_seed(seed)


def _seed_keras(keras, seed: int) -> None:
    """``keras.utils.set_random_seed`` (Keras' global seed generator and TensorFlow's seed) without resetting
    Python's and NumPy's generators, which :func:`set_seed` seeded already and a notebook may have drawn from."""
    saved = random.getstate(), np.random.get_state()
    try:
        keras.utils.set_random_seed(seed)
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])


#: what :class:`_SeedOnImport` does once each module is imported
_IMPORT_HOOKS = {"tensorflow": _seed_tensorflow, "keras": _seed_keras}


class _SeedOnImport(importlib.abc.MetaPathFinder):
    """Seeds ``tensorflow`` and ``keras`` with :func:`set_seed`'s seed when each is first imported."""

    seed: int | None = None

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _IMPORT_HOOKS or self.seed is None:
            return None
        for finder in sys.meta_path:  # the spec the import would find without this finder
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader, hook, seed = spec.loader, _IMPORT_HOOKS[fullname], self.seed
        if loader is None or not hasattr(loader, "exec_module"):
            return spec

        class SeedingLoader(importlib.abc.Loader):
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                module.__loader__ = module.__spec__.loader = loader  # resources and source read as usual
                saved = random.getstate(), np.random.get_state()  # what importing it draws is not the notebook's
                try:
                    loader.exec_module(module)
                    hook(module, seed)
                finally:
                    random.setstate(saved[0])
                    np.random.set_state(saved[1])

        spec.loader = SeedingLoader()
        return spec


_SEED_ON_IMPORT = _SeedOnImport()
