"""Sanity checks of an evaluation (Carlini et al. 2019, "On Evaluating Adversarial Robustness", section 5).

Each check takes numbers from the evaluation records and returns a list of violations in words (empty: passed),
so a notebook can ``assert not problems, problems`` and notebook 90 can show what failed. None of them proves
robustness; each one catches a known way an evaluation goes wrong.
"""

from __future__ import annotations

import warnings

import numpy as np


def non_increasing(values, *, what: str = "robust accuracy", tolerance: float = 0.0) -> list[str]:
    """Robust accuracy must not grow with ε (an adversarial example at ε is admissible at every larger ε)."""
    v = np.asarray(values, dtype=float)
    return [f"{what} rises from {v[i]:.3f} to {v[i + 1]:.3f} between grid points {i} and {i + 1}"
            for i in range(len(v) - 1) if v[i + 1] > v[i] + tolerance]


def reaches_zero(values, *, what: str = "robust accuracy", tolerance: float = 0.0) -> list[str]:
    """At the largest ε an unbounded-enough attack fools every scan; robust accuracy left above ``tolerance``
    there is **suspected gradient masking** (or an ε grid that stops too early)."""
    v = np.asarray(values, dtype=float)
    return [] if len(v) == 0 or v[-1] <= tolerance else [
        f"suspected gradient masking: {what} is {v[-1]:.3f} at the largest ε (should reach 0)"]


def surviving_at_large_eps(suite_rows, *, from_255: float = 16.0) -> list[str]:
    """At every ε of at least ``from_255``/255 an attack that works fools every scan; the scans still robust there
    are listed by ID (suspected gradient masking, or a grid that stops too early), not only at the largest ε.
    ``suite_rows``: one model's suite records (dicts or pandas rows) with per-scan ``robust`` and ``scan_ids``."""
    out = []
    for r in sorted(suite_rows, key=lambda r: r["eps"]):
        if r.get("eps_255") is None or float(r["eps_255"]) < from_255:
            continue
        alive = [s for s, k in zip(r["scan_ids"], r["robust"]) if k]
        if alive:
            out.append(f"suspected gradient masking: {len(alive)} scans robust at {r['eps_label']}: "
                       f"{', '.join(map(str, alive[:5]))}{' ...' if len(alive) > 5 else ''}")
    return out


def iterative_beats_single_step(iterative, single_step, *, tolerance: float = 0.0) -> list[str]:
    """An iterative attack (PGD) must fool at least as many scans as a single-step one (FGSM) at every ε."""
    it, ss = np.asarray(iterative, dtype=float), np.asarray(single_step, dtype=float)
    return [f"iterative attack weaker than single-step at grid point {i}: {a:.3f} > {b:.3f}"
            for i, (a, b) in enumerate(zip(it, ss)) if a > b + tolerance]


def iterative_beats_single_step_paired(iterative_rows, single_step_rows, *, tolerance: float = 0.0,
                                       alpha: float = 0.05) -> tuple[list[str], list[str]]:
    """:func:`iterative_beats_single_step` on the same scans, per ε: ``(failed, notes)``. Where PGD leaves more scans
    robust than FGSM by more than ``tolerance``, the discordant scans decide: a failure when FGSM-only fools
    significantly outnumber PGD-only fools (one-sided exact binomial test, p < ``alpha``), otherwise a note (one or
    two scans the other way is not evidence that the iterative attack is weaker). Rows are evaluation records
    (pandas rows or dicts) with per-scan ``robust`` lists, sorted by ε and on the same scans."""
    from scipy.stats import binomtest

    failed, notes = [], []
    for i, (it, ss) in enumerate(zip(iterative_rows, single_step_rows)):
        r_it, r_ss = np.asarray(it["robust"], dtype=bool), np.asarray(ss["robust"], dtype=bool)
        if r_it.shape != r_ss.shape or list(it.get("scan_ids", [])) != list(ss.get("scan_ids", [])):
            raise ValueError(f"PGD and FGSM records at grid point {i} are not on the same scans.")
        missed, extra = int(np.sum(r_it & ~r_ss)), int(np.sum(~r_it & r_ss))
        if (missed - extra) / max(len(r_it), 1) <= tolerance:
            continue
        p = binomtest(missed, missed + extra, 0.5, alternative="greater").pvalue
        text = (f"iterative attack weaker than single-step at grid point {i} ({it.get('eps_label', '')}): "
                f"{it['robust_accuracy']:.3f} > {ss['robust_accuracy']:.3f}; {missed} scans fooled by FGSM only, "
                f"{extra} by PGD only (one-sided exact p = {p:.3g})")
        (failed if p < alpha else notes).append(text if p < alpha else text + ": not a significant difference")
    return failed, notes


def eot_beats_plain(convergence: dict, *, alpha: float = 0.05) -> list[str]:
    """Against a randomized defence, the EOT attack at the converged setting must do at least as well as the plain
    (first, one-draw) attack of :func:`octlib.evaluation.eot_convergence`, scan by scan. Both are scored by the
    defence's answer in expectation (a function of the scan), so only the attacks' own randomness is compared:
    a failure when the scans only the plain attack fooled significantly outnumber those only EOT fooled
    (one-sided exact binomial test on the discordant scans, p < ``alpha``), as for PGD against FGSM. (The
    study's cumulative robust accuracy is at least as low as the plain attack's by construction.)"""
    from scipy.stats import binomtest

    points = convergence["points"]
    plain, eot = (np.asarray(points[k]["fooled"], dtype=bool) for k in (0, convergence["converged_index"]))
    if plain.shape != eot.shape:
        raise ValueError("The plain and EOT settings of the convergence study were run on different scans.")
    only_plain, only_eot = int(np.sum(plain & ~eot)), int(np.sum(eot & ~plain))
    if only_plain <= only_eot:
        return []
    p = binomtest(only_plain, only_plain + only_eot, 0.5, alternative="greater").pvalue
    return [] if p >= alpha else [
        f"EOT weaker than the plain attack: {only_plain} scans fooled by the plain attack only, {only_eot} by EOT "
        f"only (one-sided exact p = {p:.3g})"]


def whitebox_beats_blackbox(whitebox, blackbox, clean, *, tolerance: float = 0.0) -> list[str]:
    """White-box robust accuracy <= black-box (Square, HopSkipJump, transfer) <= clean accuracy. Black-box
    attacks beating white-box ones means the gradients are masked."""
    out = []
    if whitebox > blackbox + tolerance:
        out.append(f"black-box attack stronger than white-box: {blackbox:.3f} < {whitebox:.3f} (masked gradients?)")
    if blackbox > clean + tolerance:
        out.append(f"black-box accuracy {blackbox:.3f} above clean accuracy {clean:.3f}")
    return out


def black_box_above_white_box(rows) -> list[str]:
    """The black-box probes through what a defence answers (:func:`octlib.evaluation.answer_probes`: rows whose
    ``settings["probe"]`` is set) against the same model's white-box suite row at the same ε, on the probe's scans
    (matched by ID): white-box robust accuracy <= black-box <= clean (Carlini et al. 2019). A probe that sees only
    answers and still beats the white-box suite suggests masked gradients; one above clean accuracy is a bug.
    ``rows``: record rows (dicts or a DataFrame's rows), of one model or several (each probe meets its own
    model's suite)."""
    rows = [dict(r) for r in rows]
    suite = {(r.get("model"), round(float(r["eps"]), 9)): r for r in rows if r["attack"] == "suite"}
    out = []
    for r in rows:
        if not (r.get("settings") or {}).get("probe"):
            continue
        white = suite.get((r.get("model"), round(float(r["eps"]), 9)))
        robust = np.asarray(r["robust"], dtype=bool)
        clean = np.asarray(r["clean_pred"]) == np.asarray(r["y"])
        if robust.mean() > clean.mean():
            out.append(f"{r['attack']} at {r['eps_label']}: robust {robust.mean():.3f} above clean {clean.mean():.3f}")
        if white is None:
            continue
        pos = {s: k for k, s in enumerate(white["scan_ids"])}
        wr = np.asarray(white["robust"], dtype=bool)[[pos[s] for s in r["scan_ids"]]]
        if wr.mean() > robust.mean():
            out.append(f"{r['attack']} (black-box, through the answers) left {robust.mean():.3f} at {r['eps_label']}, "
                       f"below the white-box suite's {wr.mean():.3f} on the same {len(wr)} scans: masked gradients?")
    return out


def non_adaptive_overstates(rows, *, label: str = "non-adaptive", alpha: float = 0.05) -> dict:
    """An input transform evaluated twice (:func:`octlib.evaluation.input_target`): by an attacker who ignores it
    (rows ``suite (non-adaptive)``) and by the suite that crafts through it with BPDA, the two folded into the
    model's ``suite`` rows (:meth:`octlib.evaluation.Evaluation.fold`). Per model and ε, on the same scans:

    * ``masking``: where the non-adaptive robust accuracy is significantly above the suite's (exact McNemar on
      the scans only the adaptive attacker fooled, p < ``alpha``): the transform hid the gradient from the
      attacker who ignored it, and an evaluation that stopped there would have overstated the defence (Athalye et
      al. 2018). Reported, not failed: it is what these defences are known to do.
    * ``failed``: a scan the non-adaptive attacker fooled that the folded suite counts robust (folding makes this
      impossible: a bug), or rows on different scans.

    ``rows``: record rows (dicts or a DataFrame's rows) of one model or several. Returns ``{"masking", "failed"}``."""
    from .stats import mcnemar

    rows = [dict(r) for r in rows]
    suite = {(r.get("model"), r.get("norm"), round(float(r["eps"]), 9)): r for r in rows if r["attack"] == "suite"}
    masking, failed = [], []
    for r in rows:
        if r["attack"] != f"suite ({label})":
            continue
        s = suite.get((r.get("model"), r.get("norm"), round(float(r["eps"]), 9)))
        if s is None:
            failed.append(f"{r['model']}: no suite row at {r['eps_label']} beside the {label} one")
            continue
        if list(s["scan_ids"]) != list(r["scan_ids"]):
            failed.append(f"{r['model']} at {r['eps_label']}: the {label} and suite rows are not on the same scans")
            continue
        na, ad = np.asarray(r["robust"], dtype=bool), np.asarray(s["robust"], dtype=bool)
        if np.any(ad & ~na):
            failed.append(f"{r['model']} at {r['eps_label']}: {int(np.sum(ad & ~na))} scans the {label} attacker "
                          "fooled count as robust in the suite (it was not folded in)")
        test = mcnemar(na, ad)
        if test["a_only"] and test["p_value"] < alpha:
            masking.append(f"{r['model']} at {r['eps_label']}: the {label} attacker leaves {na.mean():.3f}, the "
                           f"suite through the transform (BPDA) {ad.mean():.3f}; {test['a_only']} scans only the "
                           f"adaptive attacker fooled (exact McNemar p = {test['p_value']:.3g}): the transform hides "
                           "the gradient from an attacker who ignores it")
    return {"masking": masking, "failed": failed}


def same_attack_suite(table, *, reference: str = "undefended") -> list[str]:
    """Every deterministic model of a headline table (:func:`octlib.compare.headline_table`) faced at least the
    attacks the ``reference`` faced: the same suite, plus what a model's evaluation folded in (an input transform's
    non-adaptive attacks, :meth:`octlib.evaluation.Evaluation.fold`). Randomized and smoothed models face the
    suite's randomized counterparts and are not compared here."""
    deterministic = table[~table["kind"].isin(["randomized", "smoothing"])]
    ref = deterministic[deterministic["model"] == reference]
    if not len(ref):
        return [f"no {reference} row to compare the suites with"]
    suite = set(ref["attacks"].iloc[0].split(", "))
    return [f"{m} did not face {sorted(suite - set(a.split(', ')))} of the {reference}'s suite"
            for m, a in zip(deterministic["model"], deterministic["attacks"]) if not suite <= set(a.split(", "))]


def blackbox_finds_little(fooled_by, attack: str = "Square", *, n_allowed: int = 0) -> list[str]:
    """Per scan: ``fooled_by`` names the first suite attack that fooled each scan. A score-based attack that fools
    scans every gradient attack before it missed is the per-scan form of :func:`whitebox_beats_blackbox`."""
    k = int(np.sum(np.asarray(fooled_by) == attack))
    return [] if k <= n_allowed else [
        f"{attack} fooled {k} scans that every gradient attack missed: suspected gradient masking"]


def unstable_answers(predict, x, calls: int = 3) -> int:
    """How many of the scans ``x`` a randomized answer (``predict``: scans -> scores) does not answer with the same
    class in all of ``calls`` calls: what one client query of such a defence is worth. (The evaluation scores
    randomized answers in expectation, :mod:`octlib.evaluation`, so no check depends on it.) 0 for a
    deterministic answer."""
    if calls < 2:
        raise ValueError(f"`calls` must be >= 2 to compare answers, got {calls}.")
    answers = np.stack([np.asarray(predict(x)).argmax(axis=1) for _ in range(calls)])
    return int((answers != answers[0]).any(axis=0).sum())


def evaluation_checks(frame, model: str, *, masking_tolerance: float = 0.0, tolerance: float = 0.0) -> dict:
    """Every check on one model's rows of :func:`octlib.records.read_records` (L∞): ``{"failed": [...],
    "masking": [...], "notes": [...]}``. ``masking`` lists what would show as "suspected gradient masking"
    (reported, not failed: a real defence may leave some scans unflipped on a short grid). ``tolerance`` is how
    much PGD's own accuracy may exceed FGSM's before the scans decide (0: every answer, randomized ones included,
    is scored as a function of the scan); with per-scan records, PGD weaker than FGSM fails only when the paired
    scans show it (:func:`iterative_beats_single_step_paired`), else it is listed in ``notes`` and warned about."""
    rows = frame[(frame["model"] == model) & (frame["norm"] == "inf")]
    failed, masking = [], []
    for _, r in rows.iterrows():
        settings = r.get("settings") or {}
        randomized = r["kind"] == "randomized" or bool(settings.get("randomized_answer", False))
        if randomized and not settings.get("answer_draws"):
            failed.append(f"{model}: its randomized answers were scored through one random draw (records written "
                          f"before answers were scored in expectation): rerun the notebook that wrote them")
            break
    suite = rows[rows["attack"] == "suite"].sort_values("eps")
    if len(suite):
        failed += non_increasing(suite["robust_accuracy"])
        masking += reaches_zero(suite["robust_accuracy"], tolerance=masking_tolerance)
        if "robust" in suite.columns and "scan_ids" in suite.columns:
            masking += surviving_at_large_eps([r for _, r in suite.iterrows()])
        for fb in suite.get("fooled_by", []):
            masking += blackbox_finds_little(fb)
    if "settings" in rows.columns and "robust" in rows.columns:
        masking += black_box_above_white_box([r for _, r in rows.iterrows()])
    pgd, fgsm = rows[rows["attack"] == "PGD"].sort_values("eps"), rows[rows["attack"] == "FGSM"].sort_values("eps")
    notes = []
    if len(pgd) and len(fgsm):
        failed += non_increasing(pgd["robust_accuracy"], what="PGD accuracy")
        per_scan = "robust" in rows.columns and len(pgd) == len(fgsm) and \
            np.allclose(pgd["eps"].astype(float), fgsm["eps"].astype(float))
        if per_scan:
            f, notes = iterative_beats_single_step_paired([r for _, r in pgd.iterrows()],
                                                          [r for _, r in fgsm.iterrows()], tolerance=tolerance)
            failed += f
        else:
            failed += iterative_beats_single_step(pgd["robust_accuracy"].to_numpy(),
                                                  fgsm["robust_accuracy"].to_numpy(), tolerance=tolerance)
    for _, r in suite.iterrows():
        if r["robust_accuracy"] > r["clean_accuracy"]:
            failed.append(f"robust accuracy {r['robust_accuracy']:.3f} above clean {r['clean_accuracy']:.3f} at "
                          f"{r['eps_label']}")
    for note in notes:  # shown in the notebook's output, not only returned
        warnings.warn(f"{model}: {note}", stacklevel=2)
    return {"failed": failed, "masking": list(dict.fromkeys(masking)), "notes": notes}
