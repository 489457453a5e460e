"""Clinically grounded threats, measured like the attack suite: per scan, on the evaluation scans, for the victim
and every retrained defence, written as evaluation records (:mod:`octlib.records`) for notebook 90.

- :func:`referral_attacks` (notebook 50): targeted PGD that turns an urgent scan (CNV, DME) into DRUSEN or NORMAL
  (a *missed referral*) or a routine one into CNV or DME (a *false referral*), beside untargeted PGD on the same
  scans, counted as reaching the scenario's target (:data:`octlib.metrics.REFERRAL_SCENARIOS`).
- :func:`storage_attacks` (notebook 51): the suite's gradient attacks (FGSM and PGD) scored as crafted and after
  the scans are saved as 8-bit PNG or JPEG and decoded again, and a storage-aware attacker (PGD through the
  PNG or JPEG round trip with BPDA).
- :func:`universal_outcomes` (notebook 52): one universal perturbation (:func:`octlib.attacks.universal`) added to
  every scan, scored on any model (the victim's perturbation transferred to each defence).
- :func:`corrupted_scans` and :func:`corruption_outcomes` (notebook 53): MedMNIST-C's OCT corruptions
  (:mod:`octlib.corruptions`) at each severity, the same corrupted scans for every model.
- :func:`certified_referral` (notebook 54): randomized smoothing certified over the referral decision (urgent or
  routine) beside the 4-class certificate from the same noisy copies, and a targeted L2 attack on the decision.

Each returns :class:`Outcomes`: per-scan arrays over a grid of levels (ε, or a corruption's severity) whose
:meth:`Outcomes.records` are rows in the records format. For the ε-ball threats a scan fooled at ε counts as fooled
at every larger ε (the same scan is admissible there: the suite's rule); a universal perturbation is one
perturbation per ε, and a corruption one set of scans per severity, so their levels are not cumulated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .config import SuiteConfig
from .labels import CLASSES, ROUTINE_CLASSES, URGENT_CLASSES
from .threat import ThreatModel, check_eps, to_255, to_unit

#: The axis of a corruption's records: ``eps`` holds the severity, ``norm`` says so.
CORRUPTION_NORM = "corruption"


@dataclass
class Outcomes:
    """Per-scan outcomes of one model under one threat over a grid of levels.

    Attributes:
        model, kind: the model's name and kind (as in :class:`octlib.evaluation.Target`).
        attack: the threat's name in the records (e.g. ``targeted PGD · missed referral``, ``JPEG q75``).
        norm: ``inf`` (levels are ε in [0, 1] units) or :data:`CORRUPTION_NORM` (levels are severities).
        levels: the grid.
        y, scan_ids, patients: the scans; clean_pred, clean_loss: the model's answer and cross-entropy on them
            (after the storage round trip for a storage row: a clean scan is stored too).
        robust, loss, pred: ``[level, scan]``: the answer is still right (a targeted row: the target was not
            reached), the model's cross-entropy, its answer.
        settings: what defines the threat (kept in every row).
        per_level: extra numbers per level (e.g. PSNR, fooling rate), one dict per level, merged into the rows.
    """

    model: str
    kind: str
    attack: str
    norm: str
    levels: tuple
    y: np.ndarray
    scan_ids: np.ndarray
    patients: np.ndarray
    clean_pred: np.ndarray
    clean_loss: np.ndarray
    robust: np.ndarray
    loss: np.ndarray
    pred: np.ndarray
    settings: dict = field(default_factory=dict)
    per_level: list = field(default_factory=list)

    def rate(self) -> np.ndarray:
        """Robust accuracy per level."""
        return self.robust.mean(axis=1) if self.robust.size else np.full(len(self.levels), np.nan)

    def records(self) -> list[dict]:
        """Rows for :func:`octlib.records.write_records`, one per level (Wilson intervals, per-scan lists)."""
        from .evaluation import outcome_rows

        if self.norm == CORRUPTION_NORM:
            threat = _Severities(self.attack, tuple(self.levels))
        elif self.norm == "2":
            threat = ThreatModel(norm="2", radii=tuple(float(e) for e in self.levels))
        else:
            threat = ThreatModel(norm="inf", eps_255=tuple(to_255(e) for e in self.levels))
        rows = outcome_rows(self.model, self.kind, self.attack, threat, self.y, self.clean_pred, self.clean_loss,
                            self.robust, self.loss, self.scan_ids, self.patients, settings=self.settings)
        for i, row in enumerate(rows):
            row["pred"] = self.pred[i].tolist()
            if self.per_level:
                row.update(self.per_level[i])
        return rows


@dataclass(frozen=True)
class _Severities:
    """A corruption's severities in place of an ε grid (:func:`octlib.evaluation.outcome_rows`)."""

    name: str
    levels: tuple
    norm: str = CORRUPTION_NORM

    @property
    def eps(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self.levels)

    def label(self, level: float) -> str:
        return f"{self.name} {int(level)}"


def _ce(scores, y) -> np.ndarray:
    from .metrics import cross_entropy

    return cross_entropy(y, scores, per_example=True)


def _scans(scans):
    """(x, y, ids, patients) of an :class:`octlib.evaluation.Scans`."""
    return scans.x, np.asarray(scans.y), np.asarray(scans.ids).astype(str), np.asarray(scans.patients)


# --- targeted referral attacks ----------------------------------------------------------------------------------

def referral_attacks(target, scans, eps_255, suite: SuiteConfig, *, seed: int = 0,
                     progress: bool = True) -> list[Outcomes]:
    """Targeted PGD for each referral scenario and untargeted PGD on the same scans, per ε of ``eps_255``.

    A scenario counts **every** scan of its source classes (:func:`octlib.metrics.scenario_scans`): one whose clean
    answer is already a target (a clean miss) counts as reached at every ε, so that a model that errs on clean
    scans is not rewarded with a smaller denominator. The targeted attack runs PGD on the cross-entropy of each
    target class in turn (``suite.pgd_steps`` steps, ``suite.pgd_restarts`` random starts; DRUSEN then NORMAL for
    a missed referral, CNV then DME for a false one) on the scans not yet reached, and keeps the untargeted run's
    hits too (the aiming attacker may use it), so a scan counts as reached when any of its runs made the model
    answer a target; the untargeted rows run PGD on the true class's cross-entropy alone and count the same
    event, so the two say how much aiming adds. ``robust`` = the target was not reached; the rows carry
    ``any_error`` (the answer was wrong at all, reached or not) per ε and ``clean_reached`` (the clean misses)."""
    from tqdm.auto import tqdm

    from .attacks import pgd
    from .metrics import REFERRAL_SCENARIOS, rate, reached, scenario_scans

    x, y, ids, patients = _scans(scans)
    grid = tuple(check_eps(to_unit(e)) for e in eps_255)
    clean_pred = np.asarray(target.answer(x))
    clean_loss = _ce(target.scores(x), y)
    clf = target.crafting("cross_entropy")
    out = []
    bar = tqdm(total=2 * len(REFERRAL_SCENARIOS) * len(grid), desc=f"{target.name}: referral", disable=not progress,
               leave=False)
    for scenario, spec in REFERRAL_SCENARIOS.items():
        idx = np.flatnonzero(scenario_scans(y, scenario))
        clean_hit = reached(clean_pred[idx], scenario)
        runs = {"untargeted": [None], "targeted": [CLASSES.index(c) for c in spec["targets"]]}
        rows = {}
        for mode in ("untargeted", "targeted"):
            t0 = time.perf_counter()
            n, E = len(idx), len(grid)
            robust, loss, pred = np.ones((E, n), bool), np.zeros((E, n)), np.zeros((E, n), dtype=np.int64)
            wrong_at = np.zeros((E, n), bool)
            cur_r, cur_l, cur_p = ~clean_hit, clean_loss[idx].copy(), clean_pred[idx].copy()
            cur_wrong = clean_pred[idx] != y[idx]
            for i, eps in enumerate(grid):
                bar.update(1)
                for t in runs[mode]:
                    alive = np.flatnonzero(cur_r)
                    if not len(alive):
                        break
                    sel = idx[alive]
                    run = pgd(clf, x[sel], y[sel], eps, steps=suite.pgd_steps, restarts=suite.pgd_restarts,
                              seed=seed + 7919 * i + 101 * (0 if t is None else t + 1), batch_size=suite.batch_size,
                              progress=False, target=t)
                    answer = np.asarray(target.answer(run.x_adv))
                    cur_p[alive] = answer  # the last run's answer, or the one that reached a target
                    cur_wrong[alive] |= answer != y[sel]
                    cur_l[alive] = np.maximum(cur_l[alive], _ce(target.scores(run.x_adv), y[sel]))
                    cur_r[alive] &= ~reached(answer, scenario)
                if mode == "targeted":  # the aiming attacker keeps the untargeted run's hits (same scans, same ε)
                    u = rows["untargeted"]
                    from_u = cur_r & ~u.robust[i]
                    cur_p[from_u] = u.pred[i][from_u]
                    cur_r &= u.robust[i]
                    cur_l = np.maximum(cur_l, u.loss[i])
                    cur_wrong |= u_wrong[i]
                robust[i], loss[i], pred[i], wrong_at[i] = cur_r, cur_l, cur_p, cur_wrong
            per_level = []
            for w in wrong_at:
                r = rate(w)
                per_level.append({"any_error": r["rate"], "any_error_ci": [r["ci_low"], r["ci_high"]]})
            if mode == "untargeted":
                u_wrong = wrong_at
            rows[mode] = Outcomes(
                model=target.name, kind=target.kind, attack=f"{mode} PGD · {scenario}", norm="inf", levels=grid,
                y=y[idx], scan_ids=ids[idx], patients=patients[idx], clean_pred=clean_pred[idx],
                clean_loss=clean_loss[idx], robust=robust, loss=loss, pred=pred, per_level=per_level,
                settings={**target.settings, "scenario": scenario, "mode": mode, "sources": list(spec["sources"]),
                          "targets": list(spec["targets"]), "clean_reached": int(clean_hit.sum()),
                          "runs": ["untargeted"] + [CLASSES[t] for t in runs["targeted"]] * (mode == "targeted"),
                          "pgd_steps": suite.pgd_steps, "pgd_restarts": suite.pgd_restarts, "seed": seed,
                          "runtime_s": round(time.perf_counter() - t0, 2)})
        out += [rows["targeted"], rows["untargeted"]]
    bar.close()
    return out


# --- storage --------------------------------------------------------------------------------------------------

#: The referral decision as groups of class indices: 0 = urgent referral (CNV, DME), 1 = routine (DRUSEN, NORMAL).
REFERRAL_GROUPS = (tuple(CLASSES.index(c) for c in URGENT_CLASSES), tuple(CLASSES.index(c) for c in ROUTINE_CLASSES))


def certified_referral(model, sigma: float, scans, *, n0: int, n: int, alpha: float, radii, empirical_radii=None,
                       eot_samples: int = 8, pgd_steps: int = 20, seed: int = 0, batch_size: int = 1000,
                       name: str | None = None, counts=None) -> dict:
    """Randomized smoothing of ``model`` (noise σ) certified for the **referral decision**, urgent (CNV, DME) or
    routine (DRUSEN, NORMAL), beside the 4-class certificate of the same smoothed model, from the same noisy
    copies (Cohen et al. 2019's CERTIFY with n0, n, α; :func:`octlib.defences.certify_from_counts`; the grouping
    is this project's). The smoothed decision answers the group its noisy copies are most often classified into,
    so its top probability is at least the top class's and its certified radius at least as large when both name
    the same group. An abstention is a failure.

    Per radius r of ``radii`` up to the largest that n samples can certify
    (:func:`octlib.defences.max_certifiable_radius`), on every urgent scan: certified urgent within r (a provable
    bound, each with probability 1 − α, on missed referrals under any L2 perturbation of norm ≤ r) and certified
    at its own class within r; on every routine scan: certified routine within r (false referrals).

    Empirically, at each radius of ``empirical_radii`` (increasing; ``None``: every certified radius; ``()``:
    none), every urgent scan the smoothed decision still
    refers is attacked by L2 PGD with EOT (``eot_samples`` draws per gradient, ``pgd_steps`` steps, on the log of
    the averaged softmax: :func:`octlib.estimators.noise_classifier`) aimed at DRUSEN and, separately, at NORMAL;
    of the two examples, the one whose n0 noisy copies give the urgent classes the smaller share is answered by the
    smoothed decision's CERTIFY (same n0, n, α: one CERTIFY per scan and radius, the cost that dominates). A scan missed at a smaller
    radius is missed at every larger one (the perturbation is admissible there), and an urgent scan the smoothed
    decision does not refer when clean counts as missed at every radius. A certificate is a lower bound: the
    empirical share still referred must lie above the certified share at the same radius.

    ``counts``: ``(select, estimate)`` CERTIFY votes already drawn for these scans with the same model, σ, n0, n, α
    (:func:`octlib.defences.stored_counts`: notebook 46's), used instead of drawing them again; the empirical
    check draws its own.

    Returns ``{"outcomes": [Outcomes...] (L2 rows for the records), "curve": [{radius, n_urgent, referral,
    four_class, n_routine, routine}], "empirical": [{radius, still_referred, missed, abstained, attacked}],
    "max_radius", "certify_s", "empirical_s", "n0", "n", "alpha", "sigma", "reused_counts"}``."""
    from .attacks import pgd
    from .defences import certify_from_counts, max_certifiable_radius
    from .estimators import noise_classifier, smoothed_classifier

    x, y, ids, patients = _scans(scans)
    name = name or f"randomized smoothing σ={sigma:g}"
    max_radius = max_certifiable_radius(sigma, n, alpha)
    grid = [float(r) for r in radii if 0 < r <= max_radius]
    empirical_radii = list(grid) if empirical_radii is None else [float(r) for r in empirical_radii]
    if any(r <= 0 for r in empirical_radii) or empirical_radii != sorted(set(empirical_radii)):
        raise ValueError(f"`empirical_radii` must be increasing positive L2 radii, got {empirical_radii}.")
    if not grid:
        raise ValueError(f"No radius of {list(radii)} is above 0 and within the {max_radius:.3f} that n = {n} "
                         f"samples can certify at α = {alpha}: give smaller radii or a larger n.")
    smoothed = smoothed_classifier(model, sigma, n0=n0, alpha=alpha)
    urgent, routine = np.isin(y, REFERRAL_GROUPS[0]), np.isin(y, REFERRAL_GROUPS[1])
    decision = np.where(urgent, 0, 1)

    def from_counts(select, estimate):
        return (certify_from_counts(select, estimate, sigma=sigma, n=n, alpha=alpha),
                certify_from_counts(select, estimate, sigma=sigma, n=n, alpha=alpha, groups=REFERRAL_GROUPS))

    def certify(xs):
        return from_counts(*smoothed.certify_counts(xs, n, batch_size=batch_size))

    np.random.seed(seed)  # ART's smoothing draws from NumPy's global generator
    t0 = time.perf_counter()
    if counts is None:
        (cls, cls_r), (grp, grp_r) = certify(x)
    else:  # the noisy copies another notebook drew for these scans (:func:`octlib.defences.stored_counts`)
        select, estimate = (np.asarray(c, dtype=np.int64) for c in counts)
        if select.shape != (len(y), len(CLASSES)) or estimate.shape != select.shape:
            raise ValueError(f"`counts` must be two ({len(y)}, {len(CLASSES)}) arrays of votes, one row per scan, "
                             f"got {select.shape} and {estimate.shape}.")
        if (estimate.sum(axis=1) != n).any():
            raise ValueError(f"`counts`' estimate rows must sum to n = {n} (the copies that certify).")
        (cls, cls_r), (grp, grp_r) = from_counts(select, estimate)
    certify_s = time.perf_counter() - t0
    settings = {"sigma": sigma, "n0": n0, "n": n, "alpha": alpha, "decision": "0 = urgent (CNV, DME), 1 = routine"
                " (DRUSEN, NORMAL), -1 = abstained", "grouping": "this project's; certificate: Cohen et al. 2019"}

    def rows(attack, mask, labels, answers, robust, levels):
        k = int(mask.sum())
        return Outcomes(name, "smoothing", attack, "2", tuple(levels), labels[mask], ids[mask], patients[mask],
                        answers[mask], np.zeros(k), robust[:, mask], np.zeros((len(levels), k)),
                        np.tile(answers[mask], (len(levels), 1)), settings=settings)

    referral = np.array([(grp == 0) & (grp_r >= r) for r in grid])
    four = np.array([(cls == y) & (cls_r >= r) for r in grid])
    kept_routine = np.array([(grp == 1) & (grp_r >= r) for r in grid])
    outcomes = [rows("certified referral · urgent scans", urgent, decision, grp, referral, grid),
                rows("certified 4-class · urgent scans", urgent, y, cls, four, grid),
                rows("certified referral · routine scans", routine, decision, grp, kept_routine, grid)]
    curve = [{"radius": r, "n_urgent": int(urgent.sum()), "referral": float(referral[i][urgent].mean()),
              "four_class": float(four[i][urgent].mean()), "n_routine": int(routine.sum()),
              "routine": float(kept_routine[i][routine].mean()) if routine.any() else float("nan")}
             for i, r in enumerate(grid)] if urgent.any() else []
    t1 = time.perf_counter()
    empirical, answer = [], grp.copy()
    alive = urgent & (grp == 0)
    robust_e, pred_e = np.zeros((len(empirical_radii), len(y)), bool), np.zeros((len(empirical_radii), len(y)), int)
    attacked = []
    for i, r in enumerate(empirical_radii):
        idx = np.flatnonzero(alive)
        attacked.append(len(idx))
        if len(idx):  # one example per routine target (DRUSEN, NORMAL); the one the noisy copies refer least is
            # answered by CERTIFY (one CERTIFY of n copies per scan and radius, not one per target)
            candidates, urgent_share = [], []
            screen = noise_classifier(model, sigma, n0, seed=seed + 7919 * (i + 1))
            for t, target in enumerate(c for g in REFERRAL_GROUPS[1:] for c in g):
                attacker = noise_classifier(model, sigma, eot_samples, seed=seed + 7919 * (i + 1) + t + 1)
                xa = pgd(attacker, x[idx], y[idx], r, norm="2", steps=pgd_steps, restarts=0, seed=seed,
                         progress=False, target=target).x_adv
                candidates.append(xa)
                urgent_share.append(np.exp(screen.predict(xa))[:, list(REFERRAL_GROUPS[0])].sum(axis=1))
            pick = np.argmin(np.stack(urgent_share), axis=0)
            x_adv = np.stack(candidates)[pick, np.arange(len(idx))]
            np.random.seed(seed + 104729 * (i + 1))
            got = certify(x_adv)[1][0]
            answer[idx] = np.where(got != 0, got, answer[idx])
            alive[idx] = got == 0
        robust_e[i], pred_e[i] = alive & urgent, answer
        still = alive[urgent]
        empirical.append({"radius": r, "still_referred": float(still.mean()) if urgent.any() else float("nan"),
                          "missed": float((answer[urgent] == 1).mean()) if urgent.any() else float("nan"),
                          "abstained": int((answer[urgent] == -1).sum()), "attacked": attacked[-1]})
    if empirical_radii and urgent.any():
        o = rows("targeted L2 PGD + EOT · missed referral", urgent, decision, grp, robust_e, empirical_radii)
        o.pred = pred_e[:, urgent]
        o.settings = {**settings, "eot_samples": eot_samples, "pgd_steps": pgd_steps,
                      "aimed at": "DRUSEN and NORMAL, the example its n0 copies refer least", "attacked": attacked}
        o.per_level = [{"missed_referral": e["missed"], "abstained": e["abstained"]} for e in empirical]
        outcomes.append(o)
    return {"outcomes": outcomes, "curve": curve, "empirical": empirical, "max_radius": max_radius,
            "beyond_max_radius": [float(r) for r in radii if r > max_radius], "certify_s": certify_s,
            "reused_counts": counts is not None, "empirical_s": time.perf_counter() - t1, "n0": n0, "n": n, "alpha": alpha, "sigma": sigma,
            "n_scans": int(len(y)), "class_pred": cls.tolist(), "class_radius": cls_r.tolist(),
            "decision": grp.tolist(), "decision_radius": grp_r.tolist()}


def storage_channels(qualities) -> dict:
    """The channels a scan may pass through before the model: name -> function on scans."""
    from .corruptions import store

    channels = {"as crafted": lambda v: v, "8-bit PNG": lambda v: store(v, "png")}
    for q in qualities:
        channels[f"JPEG q{int(q)}"] = (lambda v, q=int(q): store(v, "jpeg", quality=q))
    return channels


def storage_attacks(target, scans, eps_255, suite: SuiteConfig, qualities=(95, 75), *, seed: int = 0,
                    aware: bool = True, progress: bool = True) -> list[Outcomes]:
    """The suite's gradient attacks scored after storage, and what a storage-aware attacker still does.

    Per ε, FGSM and PGD (``suite.pgd_steps`` steps, ``suite.pgd_restarts`` starts) are crafted on the model's logits
    as in the suite; per scan the adversarial scan kept is PGD's if it fools the model, else FGSM's if that does,
    else PGD's. That scan is then scored **as crafted**, after an **8-bit PNG** round trip, and after a **JPEG**
    round trip at each quality (:func:`storage_channels`); the clean scan goes through the same channel. With
    ``aware``, an attacker who knows each channel: PGD through the channel's round trip with BPDA (the 8-bit
    rounding or the JPEG in the forward pass, its gradient taken as the identity;
    :func:`octlib.corruptions.storage_preprocessor`), scored after that channel. The attacker's scan stays in the
    ε-ball; what storage makes of it may not (rounding moves a pixel by up to half a grey level more). Scans fooled
    at ε count as fooled at every larger ε, per row."""
    from tqdm.auto import tqdm

    from .attacks import fgsm, pgd
    from .estimators import art_classifier
    from .corruptions import storage_preprocessor

    x, y, ids, patients = _scans(scans)
    grid = tuple(check_eps(to_unit(e)) for e in eps_255)
    channels = storage_channels(qualities)
    rows = {name: {"channel": name} for name in channels}
    if aware:
        rows["aware · BPDA through 8-bit PNG"] = {"channel": "8-bit PNG", "fmt": "png", "quality": 95}
        for q in qualities:
            rows[f"aware · BPDA through JPEG q{int(q)}"] = {"channel": f"JPEG q{int(q)}", "fmt": "jpeg",
                                                            "quality": int(q)}
    n, E = len(y), len(grid)
    state = {}
    for name, spec in rows.items():
        seen = channels[spec["channel"]](x)
        cp = np.asarray(target.answer(seen))
        state[name] = {"clean_pred": cp, "clean_loss": _ce(target.scores(seen), y), "cur_r": cp == y,
                       "robust": np.zeros((E, n), bool), "loss": np.zeros((E, n)), "pred": np.zeros((E, n), int)}
        state[name]["cur_l"], state[name]["cur_p"] = state[name]["clean_loss"].copy(), cp.copy()
    clf = target.crafting("cross_entropy")
    bpda = {}
    t0 = time.perf_counter()
    bar = tqdm(total=E, desc=f"{target.name}: storage", disable=not progress, leave=False)

    def update(name, idx, x_adv):
        st = state[name]
        seen = channels[rows[name]["channel"]](x_adv)
        answer = np.asarray(target.answer(seen))
        st["cur_p"][idx] = np.where(st["cur_r"][idx], answer, st["cur_p"][idx])
        st["cur_l"][idx] = np.maximum(st["cur_l"][idx], _ce(target.scores(seen), y[idx]))
        st["cur_r"][idx] &= answer == y[idx]

    for i, eps in enumerate(grid):
        bar.update(1)
        naive = [r for r in rows if not r.startswith("aware")]
        alive = np.flatnonzero(np.any([state[r]["cur_r"] for r in naive], axis=0))
        if len(alive):
            xs, ys = x[alive], y[alive]
            x_f = fgsm(clf, xs, ys, eps, batch_size=suite.batch_size, progress=False).x_adv
            x_p = pgd(clf, xs, ys, eps, steps=suite.pgd_steps, restarts=suite.pgd_restarts, seed=seed + 7919 * i,
                      batch_size=suite.batch_size, progress=False).x_adv
            p_fools = np.asarray(target.answer(x_p)) != ys
            f_fools = np.asarray(target.answer(x_f)) != ys
            x_adv = np.where((~p_fools & f_fools)[:, None, None, None], x_f, x_p)
            for name in naive:
                update(name, alive, x_adv)
        for name, spec in rows.items():
            if not name.startswith("aware"):
                continue
            idx = np.flatnonzero(state[name]["cur_r"])
            if not len(idx):
                continue
            if name not in bpda:
                bpda[name] = art_classifier(target.model, preprocessors=[
                    storage_preprocessor(spec["fmt"], quality=spec["quality"])])
            x_b = pgd(bpda[name], x[idx], y[idx], eps, steps=suite.pgd_steps, restarts=suite.pgd_restarts,
                      seed=seed + 7919 * i + 17, batch_size=suite.batch_size, progress=False).x_adv
            update(name, idx, x_b)
        for st in state.values():
            st["robust"][i], st["loss"][i], st["pred"][i] = st["cur_r"], st["cur_l"], st["cur_p"]
    bar.close()
    runtime = round(time.perf_counter() - t0, 2)
    out = []
    for name, spec in rows.items():
        st = state[name]
        out.append(Outcomes(
            model=target.name, kind=target.kind, attack=f"storage · {name}", norm="inf", levels=grid, y=y,
            scan_ids=ids, patients=patients, clean_pred=st["clean_pred"], clean_loss=st["clean_loss"],
            robust=st["robust"], loss=st["loss"], pred=st["pred"],
            settings={**target.settings, "channel": spec["channel"], "aware": name.startswith("aware"),
                      "attacks": ["FGSM", "PGD"] if not name.startswith("aware · BPDA") else ["PGD (BPDA)"],
                      "pgd_steps": suite.pgd_steps, "pgd_restarts": suite.pgd_restarts, "seed": seed,
                      "runtime_s": runtime}))
    return out


# --- universal perturbations ----------------------------------------------------------------------------------

def universal_outcomes(perturbations, target, scans) -> Outcomes:
    """Scans with each universal perturbation of ``perturbations`` (one per level, all of one kind: same norm,
    same target) added, scored on ``target``: ``robust`` = still the true class; per level the fooling rate
    (answer changed from the clean answer, over every scan: Hirano et al.'s definition) and, for a targeted
    perturbation, the share of scans of other classes answered as the target (each with its Wilson interval)."""
    from .metrics import rate

    x, y, ids, patients = _scans(scans)
    perturbations = list(perturbations)
    if not perturbations:
        raise ValueError("`perturbations` is empty: give the universal perturbations to score.")
    kinds = {(u.params["norm"], u.params["target"], u.params.get("method", "art"), u.params.get("fit_on", ""))
             for u in perturbations}
    if len(kinds) != 1:
        raise ValueError(f"`perturbations` mix norms, targets, methods or fitting scans {sorted(kinds, key=str)}: "
                         "score each kind apart.")
    norm, tgt, method, source = kinds.pop()
    clean_pred = np.asarray(target.answer(x))
    clean_loss = _ce(target.scores(x), y)
    E, n = len(perturbations), len(y)
    robust, loss, pred = np.zeros((E, n), bool), np.zeros((E, n)), np.zeros((E, n), dtype=np.int64)
    per_level = []
    for i, u in enumerate(perturbations):
        x_adv = u.apply(x)
        answer = np.asarray(target.answer(x_adv))
        robust[i], loss[i], pred[i] = (clean_pred == y) & (answer == y), _ce(target.scores(x_adv), y), answer
        fool = rate(answer != clean_pred)
        level = {"fooling_rate": fool["rate"], "fooling_ci": [fool["ci_low"], fool["ci_high"]],
                 **{f"uap_{k}": v for k, v in u.norms().items()}, "uap_fit": u.fit, "uap_params": u.params}
        if tgt is not None:
            others = y != CLASSES.index(tgt)
            hit = rate(answer[others] == CLASSES.index(tgt))
            level.update(target_rate=hit["rate"], target_ci=[hit["ci_low"], hit["ci_high"]], target_n=hit["n"])
        per_level.append(level)
    levels = tuple(float(u.params["eps"]) for u in perturbations)
    if norm == "inf" and list(levels) != sorted(set(levels)):
        raise ValueError(f"`perturbations` must have increasing ε, got {levels}.")
    name = ("UAP" + (" (ART)" if method == "art" else "") + ("" if tgt is None else f" → {tgt}")
            + ("" if norm == "inf" else " (L2)"))
    return Outcomes(model=target.name, kind=target.kind, attack=name + (f" · fit on {source}" if source else ""),
                    norm="inf" if norm == "inf" else "2", levels=levels, y=y, scan_ids=ids, patients=patients,
                    clean_pred=clean_pred, clean_loss=clean_loss, robust=robust, loss=loss, pred=pred,
                    per_level=per_level, settings={**target.settings, "target": tgt, "uap_norm": norm,
                                                   "method": method, "fit_on": source})


def save_perturbations(perturbations: dict, name: str, folder=None):
    """Store universal perturbations (``{kind: [perturbation, ...]}`` as fitted by
    :func:`octlib.attacks.universal`) in one compressed ``<name>.npz`` in the artifact cache (next to the models;
    never in the repository: 22 perturbations at 128 px are 7 MB as JSON text). Returns the path; read it back with
    :func:`load_perturbations`."""
    from pathlib import Path

    from .config import artifacts_dir

    folder = Path(folder) if folder is not None else artifacts_dir()
    folder.mkdir(parents=True, exist_ok=True)
    arrays, index = {}, []
    for kind, items in perturbations.items():
        for u in items:
            key = f"p{len(index)}"
            arrays[key] = np.asarray(u.noise, dtype=np.float32)[0]
            index.append(f"{kind}\t{u.params['eps_label']}")
    path = folder / f"{name}.npz"
    np.savez_compressed(path, index=np.array(index), **arrays)
    return path


def load_perturbations(path) -> dict:
    """``{(kind, budget label): perturbation (H, W, 1) float32}`` from :func:`save_perturbations`' file."""
    with np.load(path) as data:
        return {tuple(str(entry).split("\t")): data[f"p{k}"] for k, entry in enumerate(data["index"])}


def stored_universal(victim: str, kind: str = "untargeted, OCT", eps_255: float | None = None, *, folder=None):
    """One of notebook 52's universal perturbations of the model ``victim`` (its artifact name, e.g.
    ``cnn-pooled-826fd8fb03bd``), read back from ``52_uap-<victim>.npz`` in the artifact cache (``folder``) as an
    :class:`octlib.attacks.Universal` (apply it with ``.apply`` or score it with ``.run``), or ``None`` when
    notebook 52 has not run for this model here.

    ``kind`` is one of notebook 52's perturbations (``untargeted, OCT``, ``→ NORMAL, OCT``, ``untargeted, proxy``,
    ...); ``eps_255`` its L∞ budget in /255 (``None``: the largest fitted)."""
    from pathlib import Path

    from .attacks import Universal
    from .config import artifacts_dir

    path = (Path(folder) if folder is not None else artifacts_dir()) / f"52_uap-{victim}.npz"
    if not path.exists():
        return None
    stored = load_perturbations(path)
    budgets = {label: u for (k, label), u in stored.items() if k == kind and "/255" in label}
    if not budgets:
        kinds = sorted({k for k, _ in stored})
        raise ValueError(f"{path.name} holds no L∞ perturbation of kind {kind!r}; `kind` is one of {kinds}.")
    by_eps = {float(label.split("/255")[0]): label for label in budgets}
    if eps_255 is None:
        eps_255 = max(by_eps)
    if float(eps_255) not in by_eps:
        raise ValueError(f"{path.name} has no {kind!r} perturbation at eps_255={eps_255:g}; notebook 52 fitted "
                         f"{', '.join(f'{e:g}' for e in sorted(by_eps))} (/255): pass one of them, or None for the "
                         "largest.")
    label = by_eps[float(eps_255)]
    return Universal(noise=np.asarray(budgets[label], dtype=np.float32)[None], runtime_s=0.0, fit={},
                     params={"kind": kind, "eps_label": label, "eps_255": float(eps_255), "file": path.name})


# --- corruptions ----------------------------------------------------------------------------------------------

def corrupted_scans(x, names=None, severities=(1, 2, 3, 4, 5), *, seed: int = 0, progress: bool = True) -> dict:
    """``{(corruption, severity): 8-bit scans}`` of MedMNIST-C's OCT corruptions (:func:`octlib.corruptions.corrupt`),
    made once so every model sees the same corrupted scans (kept as uint8: a fifth of the memory)."""
    from tqdm.auto import tqdm

    from .corruptions import CORRUPTIONS, corrupt

    names = tuple(names or CORRUPTIONS)
    out = {}
    for k, name in enumerate(tqdm(names, desc="corrupting", leave=False, disable=not progress)):
        for s in severities:
            out[(name, int(s))] = np.rint(corrupt(x, name, int(s), seed=seed + 1000 * k + s) * 255).astype(np.uint8)
    return out


def corruption_outcomes(target, scans, corrupted: dict) -> list[Outcomes]:
    """Per corruption of ``corrupted`` (:func:`corrupted_scans`), the model's answers at each severity: ``robust`` =
    right on the corrupted scan (and on the clean one); per severity the mean PSNR (dB) and L2 norm of the change."""
    from .corruptions import psnr

    x, y, ids, patients = _scans(scans)
    clean_pred = np.asarray(target.answer(x))
    clean_loss = _ce(target.scores(x), y)
    out = []
    for name in dict.fromkeys(k[0] for k in corrupted):
        sev = sorted(s for (c, s) in corrupted if c == name)
        E, n = len(sev), len(y)
        robust, loss, pred = np.zeros((E, n), bool), np.zeros((E, n)), np.zeros((E, n), dtype=np.int64)
        per_level = []
        for i, s in enumerate(sev):
            xc = corrupted[(name, s)].astype(np.float32).reshape(x.shape) / 255.0
            answer = np.asarray(target.answer(xc))
            robust[i], loss[i], pred[i] = (clean_pred == y) & (answer == y), _ce(target.scores(xc), y), answer
            p = psnr(x, xc)
            l2 = np.sqrt(((xc - x) ** 2).reshape(n, -1).sum(axis=1))
            per_level.append({"psnr": float(np.mean(p[np.isfinite(p)])) if np.isfinite(p).any() else float("inf"),
                              "l2": float(l2.mean()), "changed": float(np.mean(l2 > 0))})
        out.append(Outcomes(model=target.name, kind=target.kind, attack=name, norm=CORRUPTION_NORM,
                            levels=tuple(sev), y=y, scan_ids=ids, patients=patients, clean_pred=clean_pred,
                            clean_loss=clean_loss, robust=robust, loss=loss, pred=pred, per_level=per_level,
                            settings={**target.settings, "corruption": name, "source": "MedMNIST-C OCT"}))
    return out


def frame(outcomes) -> "object":
    """A tidy DataFrame of :class:`Outcomes`: one row per (model, attack, level) with the rate and its interval."""
    import pandas as pd

    rows = []
    for o in outcomes:
        for r in o.records():
            rows.append({k: v for k, v in r.items() if not isinstance(v, list) or k.endswith("_ci")})
    return pd.DataFrame(rows)


# --- tables ---------------------------------------------------------------------------------------------------

def level_index(outcome: Outcomes, level: float) -> int:
    """The index of ``level`` in an outcome's grid (ε in /255 for L∞ rows, the severity or L2 norm otherwise)."""
    grid = np.asarray([to_255(e) if outcome.norm == "inf" else e for e in outcome.levels], dtype=float)
    hits = np.flatnonzero(np.isclose(grid, float(level)))
    if not len(hits):
        unit = "/255" if outcome.norm == "inf" else ""
        raise ValueError(f"{outcome.attack!r} of {outcome.model!r} has no level {level:g}{unit}; its grid is "
                         f"{[round(float(g), 4) for g in grid]}.")
    return int(hits[0])


def paired(a: Outcomes, b: Outcomes, level: float) -> dict:
    """Exact McNemar test of ``robust`` at ``level`` between two outcomes on the scans they share (matched by scan
    ID): ``{"n", "a_only", "b_only", "difference", "p_value"}`` (:func:`octlib.stats.mcnemar`)."""
    from .stats import mcnemar

    ia, ib = level_index(a, level), level_index(b, level)
    pos_b = {s: k for k, s in enumerate(b.scan_ids)}
    common = [(k, pos_b[s]) for k, s in enumerate(a.scan_ids) if s in pos_b]
    ka = np.array([k for k, _ in common], dtype=int)
    kb = np.array([k for _, k in common], dtype=int)
    return mcnemar(a.robust[ia][ka], b.robust[ib][kb])


def referral_table(outcomes, eps_255: float, *, reference: str = "undefended"):
    """Per model and referral scenario at ε = ``eps_255``/255, over every scan of the scenario's source classes:
    the share already reached clean (clean misses), the share reached by the targeted attack and by the untargeted
    one (clean misses included), each with its Wilson interval; exact McNemar p-values of targeted vs untargeted
    (same scans) and of the model vs ``reference`` under the targeted attack (the same scans for every model)."""
    import pandas as pd

    from .metrics import rate

    by = {(o.model, o.attack): o for o in outcomes}
    rows = []
    for (model, attack), o in by.items():
        if not attack.startswith("targeted PGD · "):
            continue
        scenario = attack.split(" · ", 1)[1]
        u = by.get((model, f"untargeted PGD · {scenario}"))
        i = level_index(o, eps_255)
        k = int((~o.robust[i]).sum())
        t = rate(k, denominator=len(o.y))
        c = rate(int(o.settings.get("clean_reached", 0)), denominator=len(o.y))
        row = {"model": model, "scenario": scenario, "n": len(o.y), "clean": c["rate"],
               "clean CI": f"{c['ci_low']:.3f}–{c['ci_high']:.3f}", "targeted": t["rate"],
               "targeted CI": f"{t['ci_low']:.3f}–{t['ci_high']:.3f}"}
        if u is not None:
            j = level_index(u, eps_255)
            ur = rate(int((~u.robust[j]).sum()), denominator=len(u.y))
            row.update({"untargeted": ur["rate"], "untargeted CI": f"{ur['ci_low']:.3f}–{ur['ci_high']:.3f}",
                        "p (targeted vs untargeted)": paired(o, u, eps_255)["p_value"]})
        ref = by.get((reference, attack))
        if ref is not None and model != reference:
            test = paired(o, ref, eps_255)
            row.update({f"n paired with {reference}": test["n"], f"p (vs {reference})": test["p_value"]})
        rows.append(row)
    return pd.DataFrame(rows)
