"""The study's comparison, read from the results store only (notebook 90): no model is trained or attacked here.

Evasion is compared through the evaluation records (:mod:`octlib.records`): every model faced the same attack
suite on the same scans, so :func:`headline_table` puts robust accuracy first (worst case per scan over the suite)
with clean accuracy on the same scans, the drop and the loss increase, Wilson and patient-clustered bootstrap
intervals, and an exact McNemar test of each defence against the undefended victim on the paired scans;
:func:`paired_tests` also compares neighbours in the ranking. :func:`reading` names only the differences those
tests support. :func:`load_study` reads the other results (extraction, training) and lists the missing ones with
the notebook that writes them; :func:`provenance` and :func:`profiles` say where each result comes from;
:func:`export_table` writes a table as CSV, Markdown and LaTeX.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import series
from .threat import eps_label, to_unit

PRODUCERS = series.producers()  # results record -> the notebook that writes it


def load_study(results_dir=None) -> tuple[dict, list[tuple[str, str]]]:
    """``(records, missing)``: the results records found (name -> record) and, for each one that is not there,
    ``(name, notebook that writes it)``."""
    from .results import ResultsError, load_results

    found, missing = {}, []
    for name, notebook in PRODUCERS.items():
        try:
            found[name] = load_results(name, results_dir)
        except (FileNotFoundError, ResultsError):
            missing.append((name, notebook))
    return found, missing


def _profile_name(record: dict) -> str | None:
    """The profile a record was made with: notebooks 00 and 10 store the whole profile as their settings, the
    others name it under ``settings["profile"]``."""
    settings = record.get("settings") or {}
    prof = settings.get("profile", settings if "image_size" in settings else None)
    return prof.get("name") if isinstance(prof, dict) else prof


def provenance(study: dict):
    """Where each result comes from, one row per results record: notebook, profile, victim model, scans attacked,
    data fingerprint (first 12 hex digits), hardware (CPU cores, GPUs), runtime and creation time."""
    import pandas as pd

    rows = []
    for name, rec in study.items():
        m, hw = rec.get("metrics", {}), rec.get("hardware", {})
        rows.append({"result": name, "notebook": rec.get("notebook"), "profile": _profile_name(rec),
                     "victim": m.get("victim"), "n attacked": m.get("n_attacked"),
                     "data": (rec.get("data") or {}).get("fingerprint", "")[:12] or None,
                     "cpu cores": hw.get("cpu_count"), "gpus": ", ".join(hw.get("gpus") or []) or "none",
                     "runtime s": rec.get("runtime_s"), "created": rec.get("created")})
    table = pd.DataFrame(rows, columns=["result", "notebook", "profile", "victim", "n attacked", "data", "cpu cores",
                                        "gpus", "runtime s", "created"])
    return table.astype({"n attacked": "Int64", "cpu cores": "Int64"})


def profiles(study: dict) -> str:
    """The profiles the records come from, with the notebooks of each, e.g. ``full (10, 20); quick (30, 40)``."""
    groups = {}
    for name, rec in sorted(study.items()):
        groups.setdefault(_profile_name(rec) or "unknown", []).append(name.split("_")[0])
    return "; ".join(f"{p} ({', '.join(nbs)})" for p, nbs in groups.items())


def _victim(record: dict) -> str | None:
    """The victim model a record attacked; for notebook 10's record, the victim policy's artifact."""
    from .results import victim_of

    return victim_of(record.get("metrics", {}) or {})


def require_one_study(study: dict, frame=None, profile: str | None = None) -> None:
    """Fail (:class:`octlib.results.ResultsError`) when the results are not one study: results or evaluation
    records that mix data fingerprints, profiles or victims (naming which results hold which), or that come from
    another profile than ``profile`` (the comparison's own, e.g. ``full`` in the reference run)."""
    from .records import check_one_study
    from .results import ResultsError

    problems = consistency(study)
    if profile is not None:
        other = sorted(n for n, r in study.items() if _profile_name(r) not in (None, profile))
        if frame is not None and len(frame):
            other += sorted({f"{r} (records)" for r, p in zip(frame["result"], frame["profile"]) if p != profile})
        if other:
            problems.append(f"Not from the {profile} profile: {', '.join(other)}.")
    if problems:
        raise ResultsError(" ".join(problems) + f" Rerun those notebooks in one profile on one victim (the reference:"
                           f" make reference) before comparing them.")
    if frame is not None:
        check_one_study(frame)


def seed_spread_tables(spread: dict):
    """``(per_seed, summary)`` DataFrames of a seed spread (:func:`octlib.evaluation.seed_spread`): one row per
    training seed (test-split accuracy when known, clean and robust accuracy on the scans), and per measure the
    mean, sd, min and max over seeds with the number of seeds."""
    import pandas as pd

    n = spread["n_scans"]
    per_seed = pd.DataFrame({s: {**({"test-split acc": p["test_accuracy"]} if "test_accuracy" in p else {}),
                                 f"clean acc ({n} scans)": p["clean_accuracy"],
                                 **{f"robust acc {e}/255": v for e, v in p["robust_accuracy"].items()}}
                             for s, p in spread["per_seed"].items()}).T.rename_axis("training seed")
    summary = spread["summary"]
    rows = {f"clean accuracy ({n} evaluation scans)": summary["clean_accuracy"]}
    if summary.get("test_accuracy"):
        rows["test-split accuracy"] = summary["test_accuracy"]
    for eps, value in summary["robust_accuracy"].items():
        rows[f"robust accuracy at {eps_label(to_unit(float(eps)))}, {n} scans"] = value
    table = pd.DataFrame(rows).T.rename(columns={"n": "seeds"})
    table = table[["mean", "sd", "min", "max", "seeds"]].astype({"seeds": int}).rename_axis("undefended victim")
    return per_seed, table


def seed_spread_table(study: dict):
    """The undefended victim's seed spread as notebook 12 recorded it (the summary of :func:`seed_spread_tables`);
    empty when there is no such record."""
    import pandas as pd

    spread = ((study.get("12_seed_spread") or {}).get("metrics") or {}).get("seed_spread")
    return seed_spread_tables(spread)[1] if spread else pd.DataFrame()


def consistency(study: dict) -> list[str]:
    """What makes the records hard to compare, in words (empty when nothing does): results from more than one
    dataset, from more than one profile, or attacks and defences run against different victim models."""
    notes = []

    def spread(values, what):
        groups = {}
        for name, v in values.items():
            if v is not None:
                groups.setdefault(v, []).append(name)
        if len(groups) > 1:
            notes.append(f"The results mix {what}: " + "; ".join(f"{v}: {', '.join(sorted(n))}"
                                                                 for v, n in sorted(groups.items())) + ".")

    spread({n: (r.get("data") or {}).get("fingerprint", "")[:12] or None for n, r in study.items()},
           "datasets (fingerprints)")
    spread({n: _profile_name(r) for n, r in study.items()}, "profiles")
    spread({n: _victim(r) for n, r in study.items()}, "victim models")
    # one victim name, two trainings: the weights differ (records written before the digest carry none)
    spread({n: f"{_victim(r)} weights {r['victim_weights'][:12]}" for n, r in study.items()
            if r.get("victim_weights")}, "victim weights (the same victim name trained more than once)")
    named = {n: bool(r.get("victim_weights")) for n, r in study.items() if _victim(r)}
    if any(named.values()) and not all(named.values()):
        notes.append("Only some results name their victim's weights (" + ", ".join(sorted(n for n, d in named.items()
                     if d)) + "); " + ", ".join(sorted(n for n, d in named.items() if not d)) + " predate the weights "
                     "digest, so the same victim cannot be shown: rerun them on this victim.")
    return notes


def _fmt(v, digits=3):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}f}"
    return str(v)


def export_table(df, name: str, folder=None, *, caption: str = "") -> list[Path]:
    """Write ``df`` as ``<name>.csv``, ``<name>.md`` (pipe table) and ``<name>.tex`` (booktabs tabular) into
    ``folder`` (default: the figures folder). Missing values are empty in CSV and "–" elsewhere."""
    from .config import figures_dir

    folder = Path(folder) if folder is not None else figures_dir()
    folder.mkdir(parents=True, exist_ok=True)
    cols = [str(c) for c in df.columns]
    rows = [[_fmt(v) for v in rec] for rec in df.itertuples(index=False)]
    paths = [folder / f"{name}.csv", folder / f"{name}.md", folder / f"{name}.tex"]
    df.to_csv(paths[0], index=False, float_format="%.4f")
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + ["| " + " | ".join(r) + " |" for r in rows]
    paths[1].write_text((f"{caption}\n\n" if caption else "") + "\n".join(md) + "\n")

    def tex(s):
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                     ("σ", r"$\sigma$"), ("ε", r"$\varepsilon$"), ("γ", r"$\gamma$"), ("β", r"$\beta$"),
                     ("–", "--")):
            s = s.replace(a, b)
        return s

    lines = [r"\begin{tabular}{" + "l" * 1 + "r" * (len(cols) - 1) + "}", r"\toprule",
             " & ".join(tex(c) for c in cols) + r" \\", r"\midrule"]
    lines += [" & ".join(tex(v) for v in r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    body = "\n".join(lines)
    if caption:
        body = "\\begin{table}\n\\centering\n\\caption{" + tex(caption) + "}\n" + body + "\n\\end{table}"
    paths[2].write_text(body + "\n")
    return paths



#: Significance level of the paired tests that back a claimed difference.
ALPHA = 0.05


def _at_eps(frame, eps_255: float, norm: str = "inf", attack: str = "suite"):
    sel = frame[(frame["norm"] == norm) & (frame["attack"] == attack)]
    if norm == "inf":
        sel = sel[np.isclose(sel["eps_255"].astype(float), eps_255)]
    else:
        sel = sel[np.isclose(sel["eps"].astype(float), eps_255)]
    return sel


def _outcomes(row, key: str) -> list:
    """Per-scan outcomes of a record: ``robust`` (no attack fooled the scan) or ``clean`` (answered right clean)."""
    if key == "clean":
        return [int(p == t) for p, t in zip(row["clean_pred"], row["y"])]
    return row[key]


def _paired(a_row, b_row, key: str = "robust") -> dict:
    """McNemar on the per-scan outcomes (``key``: ``robust`` or ``clean``) of two rows, matched by scan ID (scans
    in only one row are dropped)."""
    from .stats import mcnemar

    b_index = {s: i for i, s in enumerate(b_row["scan_ids"])}
    common = [(i, b_index[s]) for i, s in enumerate(a_row["scan_ids"]) if s in b_index]
    a_out, b_out = _outcomes(a_row, key), _outcomes(b_row, key)
    a = np.array([a_out[i] for i, _ in common], dtype=bool)
    b = np.array([b_out[j] for _, j in common], dtype=bool)
    return {**mcnemar(a, b), "mean_a": float(a.mean()) if len(a) else float("nan"),
            "mean_b": float(b.mean()) if len(b) else float("nan")}


def probe_table(frame):
    """The black-box probes through what each defence answers (:func:`octlib.evaluation.answer_probes`), one row per
    model and probe: n, robust accuracy with its Wilson interval, the white-box suite's robust accuracy and the
    clean accuracy on the same scans, and an exact McNemar p of black-box vs white-box on those scans."""
    import pandas as pd

    columns = ["model", "probe", "ε", "n", "black-box robust", "95% CI", "white-box (same scans)", "clean",
               "p (black vs white)"]
    out = []
    for _, r in frame.iterrows():
        settings = r.get("settings") if isinstance(r.get("settings"), dict) else {}
        if not settings.get("probe"):
            continue
        white = frame[(frame["model"] == r["model"]) & (frame["attack"] == "suite") & (frame["norm"] == "inf")
                      & np.isclose(frame["eps"].astype(float), float(r["eps"]))]
        test = _paired(r, white.iloc[0]) if len(white) else {"mean_b": np.nan, "p_value": np.nan}
        out.append({"model": r["model"], "probe": r["attack"], "ε": r["eps_label"], "n": int(r["n"]),
                    "black-box robust": r["robust_accuracy"], "95% CI": f"{r['ci_low']:.3f}–{r['ci_high']:.3f}",
                    "white-box (same scans)": test["mean_b"], "clean": float(np.mean(_outcomes(r, "clean"))),
                    "p (black vs white)": test["p_value"]})
    return pd.DataFrame(out, columns=columns)


def transform_table(frame, eps_255: float, *, label: str = "non-adaptive"):
    """The input transforms at ``eps_255`` (notebook 23), one row per model evaluated both ways: n, clean accuracy,
    the robust accuracy an attacker who ignores the transform leaves (``suite (non-adaptive)`` rows), the suite's
    (BPDA through the transform, with the non-adaptive attacks folded in), the scans only the adaptive attacker
    fooled, the exact McNemar p of the two and ``masked``: p < :data:`ALPHA` (the non-adaptive number overstates the
    defence; :func:`octlib.checks.non_adaptive_overstates`)."""
    import pandas as pd

    columns = ["model", "ε", "n", "clean acc", f"robust ({label})", "robust (suite, BPDA)",
               "fooled by the adaptive attacker only", "p", "masked"]
    suite = _at_eps(frame, eps_255)
    out = []
    for _, r in _at_eps(frame, eps_255, attack=f"suite ({label})").iterrows():
        s = suite[suite["model"] == r["model"]]
        if not len(s):
            continue
        test = _paired(r, s.iloc[0])
        out.append({"model": r["model"], "ε": r["eps_label"], "n": int(r["n"]), "clean acc": r["clean_accuracy"],
                    f"robust ({label})": r["robust_accuracy"], "robust (suite, BPDA)": s.iloc[0]["robust_accuracy"],
                    "fooled by the adaptive attacker only": test["a_only"], "p": test["p_value"],
                    "masked": bool(test["a_only"] and test["p_value"] < ALPHA)})
    return pd.DataFrame(out, columns=columns)


def detector_table(frame, eps_255: float, *, reference: str = "undefended"):
    """The detectors of notebook 22 at ``eps_255``, one row per detector: n, the share of clean evaluation scans it
    flags (false alarms), detection AUC (95% bootstrap CI) against the suite's adversarial scans and against the
    adaptive attacker's, the scans defended (right clean, and no attack both fools the classifier and passes the
    detector) under each attacker, the exact McNemar p of adaptive vs non-adaptive, and of the non-adaptive row vs
    the ``reference``'s suite robustness without a detector (notebook 20, on the scans both saw)."""
    import pandas as pd

    from .detectors import ADAPTIVE, NON_ADAPTIVE

    columns = ["detector", "n", "false alarms", "AUC (suite's scans)", "AUC (adaptive)", "robust, no detector",
               "defended (non-adaptive)", "defended (adaptive)", "p (adaptive vs non-adaptive)",
               "p (non-adaptive vs no detector)"]
    rows = frame[(frame["kind"] == "detector") & (frame["norm"] == "inf")]
    rows = rows[np.isclose(rows["eps_255"].astype(float), eps_255)]
    ref = _at_eps(frame, eps_255)
    ref = ref[ref["model"] == reference]

    def auc(r):
        a = (r["settings"] or {}).get("auc") or {}
        if not a or a.get("auc") != a.get("auc"):  # none, or NaN (no adversarial scan to score)
            return "–"
        return f"{a['auc']:.3f} ({a['ci_low']:.3f}–{a['ci_high']:.3f})"

    out = []
    for model, part in rows.groupby("model", sort=False):
        by = {a: part[part["attack"] == a].iloc[0] for a in (NON_ADAPTIVE, ADAPTIVE) if (part["attack"] == a).any()}
        if len(by) < 2:
            continue
        plain, adaptive = by[NON_ADAPTIVE], by[ADAPTIVE]
        vs_ref = _paired(plain, ref.iloc[0]) if len(ref) else None
        out.append({"detector": model, "n": int(plain["n"]), "false alarms": plain["settings"]["false_alarms"],
                    "AUC (suite's scans)": auc(plain), "AUC (adaptive)": auc(adaptive),
                    "robust, no detector": np.nan if vs_ref is None else vs_ref["mean_b"],
                    "defended (non-adaptive)": plain["robust_accuracy"],
                    "defended (adaptive)": adaptive["robust_accuracy"],
                    "p (adaptive vs non-adaptive)": _paired(adaptive, plain)["p_value"],
                    "p (non-adaptive vs no detector)": np.nan if vs_ref is None else vs_ref["p_value"]})
    return pd.DataFrame(out, columns=columns)


#: The record rows of notebook 54 (:func:`octlib.clinical.certified_referral`), by attack name.
REFERRAL_CERTIFICATE = {"referral": "certified referral · urgent scans",
                        "four_class": "certified 4-class · urgent scans",
                        "routine": "certified referral · routine scans",
                        "empirical": "targeted L2 PGD + EOT · missed referral"}


def referral_certificate_table(frame, radius: float | None = None):
    """The certified referral (notebook 54) per model and L2 radius (only ``radius`` if given): the urgent scans
    (n) certified urgent with their Wilson interval, the same scans certified at their own class by the 4-class
    certificate of the same smoothed model, the exact McNemar p of the two on those scans, the routine scans
    certified routine, and, where the radius was attacked, the urgent scans the smoothed decision still refers and
    misses under the targeted L2 attack (clean misses included)."""
    import pandas as pd

    columns = ["model", "L2 radius", "n urgent", "certified urgent", "95% CI", "certified own class (4-class)",
               "p (referral vs 4-class)", "n routine", "certified routine", "still referred (attacked)",
               "missed referral (attacked)"]
    rows = frame[(frame["norm"] == "2") & frame["attack"].isin(list(REFERRAL_CERTIFICATE.values()))]
    if radius is not None:
        rows = rows[np.isclose(rows["eps"].astype(float), radius)]
    out = []
    for (model, eps), part in rows.groupby(["model", "eps"], sort=False):
        by = {a: part[part["attack"] == name].iloc[0] for a, name in REFERRAL_CERTIFICATE.items()
              if (part["attack"] == name).any()}
        if "referral" not in by:
            continue
        ref = by["referral"]
        four = by.get("four_class")
        test = _paired(ref, four) if four is not None else None
        emp = by.get("empirical")
        out.append({"model": model, "L2 radius": float(eps), "n urgent": int(ref["n"]),
                    "certified urgent": ref["robust_accuracy"], "95% CI": f"{ref['ci_low']:.3f}–{ref['ci_high']:.3f}",
                    "certified own class (4-class)": np.nan if four is None else four["robust_accuracy"],
                    "p (referral vs 4-class)": np.nan if test is None else test["p_value"],
                    "n routine": int(by["routine"]["n"]) if "routine" in by else 0,
                    "certified routine": by["routine"]["robust_accuracy"] if "routine" in by else np.nan,
                    "still referred (attacked)": np.nan if emp is None else emp["robust_accuracy"],
                    "missed referral (attacked)": np.nan if emp is None else emp.get("missed_referral", np.nan)})
    return pd.DataFrame(out, columns=columns)


def smoothing_table(frame, radius: float):
    """The L2 rows at ``radius`` (randomized smoothing: ``certified`` and its empirical check ``L2 PGD + EOT``),
    one per model and attack: n, accuracy with its Wilson interval, and the smoothed classifier's clean accuracy
    on the same scans (abstentions are errors)."""
    import pandas as pd

    columns = ["model", "attack", "L2 radius", "n", "accuracy", "95% CI", "clean (smoothed) acc"]
    l2 = frame[(frame["norm"] == "2") & np.isclose(frame["eps"].astype(float), radius)]
    return pd.DataFrame([{"model": r["model"], "attack": r["attack"], "L2 radius": r["eps"], "n": r["n"],
                          "accuracy": r["robust_accuracy"], "95% CI": f"{r['ci_low']:.3f}–{r['ci_high']:.3f}",
                          "clean (smoothed) acc": r["clean_accuracy"]} for _, r in l2.iterrows()], columns=columns)


def headline_table(frame, eps_255: float, *, reference: str = "undefended", seed: int = 0, n_boot: int = 2000):
    """The evasion headline at ``eps_255`` (/255, L∞): one row per model, most robust first.

    Columns: ``model``, ``kind``, ``n`` (scans, the same for every model), ``robust acc`` (worst case over the
    suite), its Wilson interval and patient-clustered bootstrap interval, ``clean acc`` (same scans),
    ``accuracy drop``, ``clean loss``, ``attacked loss`` and ``loss increase`` (the model's own cross-entropy),
    and against ``reference``: the robust-accuracy difference, the discordant scans and the exact McNemar
    p-value (``p vs undefended``), and the same test of clean accuracy (``p clean vs undefended``: what the defence
    costs on clean scans). ``tier``: :func:`tiers`, models no paired test separates share one."""
    import pandas as pd

    from .stats import cluster_bootstrap

    rows = _at_eps(frame, eps_255)
    ref = rows[rows["model"] == reference]
    ref = ref.iloc[0] if len(ref) else None
    out = []
    for _, r in rows.iterrows():
        boot = cluster_bootstrap(np.asarray(r["robust"], dtype=float), np.asarray(r["patients"]), seed=seed,
                                 n_boot=n_boot)
        test = _paired(r, ref) if ref is not None and r["model"] != reference else None
        clean = _paired(r, ref, "clean") if ref is not None and r["model"] != reference else None
        out.append({"model": r["model"], "kind": r["kind"], "n": r["n"], "robust acc": r["robust_accuracy"],
                    "robust 95% CI": f"{r['ci_low']:.3f}–{r['ci_high']:.3f}",
                    "robust bootstrap CI (patients)": f"{boot['ci_low']:.3f}–{boot['ci_high']:.3f}",
                    "clean acc": r["clean_accuracy"], "accuracy drop": r["accuracy_drop"],
                    "clean loss": r["clean_loss"], "attacked loss": r["attacked_loss"],
                    "loss increase": r["loss_increase"],
                    f"Δ robust vs {reference}": None if test is None else test["difference"],
                    "discordant (defence only / reference only)": None if test is None
                    else f"{test['a_only']} / {test['b_only']}",
                    f"p vs {reference}": None if test is None else test["p_value"],
                    "clean discordant (defence only / reference only)": None if clean is None
                    else f"{clean['a_only']} / {clean['b_only']}",
                    f"p clean vs {reference}": None if clean is None else clean["p_value"],
                    "attacks": ", ".join(r["attacks"]), "notebook": r["notebook"]})
    table = pd.DataFrame(out)
    if not len(table):
        return table
    table = table.sort_values(["robust acc", "clean acc"], ascending=False, kind="stable").reset_index(drop=True)
    tier = tiers(frame, eps_255)
    table.insert(1, "tier", [tier.get(m) for m in table["model"]])
    return table


def tiers(frame, eps_255: float, *, alpha: float | None = None) -> dict:
    """Rank tiers at ``eps_255``: models in robust-accuracy order; a model joins the tier of the model above it
    unless an exact McNemar test on their paired scans separates it from the tier's first (most robust) model
    (p < ``alpha``, default :data:`ALPHA`), in which case it opens the next tier. So a model shares a tier with its
    head when no paired test on their shared scans tells them apart, and each tier's head is separated from the
    previous tier's head by a test; a member of one tier is not tested against every member of the next, and the
    order is by robust accuracy on each model's own scans (a randomized defence may have fewer). (Tests are not
    corrected for their number.) Returns ``{model: tier}``, tier 1 the most robust."""
    alpha = ALPHA if alpha is None else alpha
    rows = _at_eps(frame, eps_255).sort_values(["robust_accuracy", "clean_accuracy"], ascending=False,
                                               kind="stable")
    out, head, tier = {}, None, 0
    for _, r in rows.iterrows():
        if head is None or _paired(r, head)["p_value"] < alpha:
            head, tier = r, tier + 1
        out[r["model"]] = tier
    return out


NARROW = ("model", "tier", "n", "robust acc", "robust 95% CI", "clean acc", "p clean vs undefended",
          "accuracy drop", "loss increase", "p vs undefended")


def narrow(table):
    """The headline table cut to the eight columns that fit a page (the wide one is exported beside it)."""
    return table[[c for c in NARROW if c in table.columns]]


def paired_tests(frame, eps_255: float, *, reference: str = "undefended", pairs=()):
    """Exact McNemar tests on the paired robust outcomes at ``eps_255``: every model against ``reference``, each
    model against its neighbour in the robust-accuracy ranking, and the ``pairs`` ``(a, b)`` asked for (e.g. two
    trainings at equal compute). ``robust a`` and ``robust b`` are on the scans both saw (a randomized defence may
    have been attacked on fewer). ``supported`` is ``p < ALPHA``; ``clean p`` is the same test on the clean
    outcomes (what one costs on clean scans against the other)."""
    import pandas as pd

    rows = _at_eps(frame, eps_255).sort_values("robust_accuracy", ascending=False)
    by = {r["model"]: r for _, r in rows.iterrows()}
    missing = sorted({m for pair in pairs for m in pair} - set(by))
    if missing:
        raise ValueError(f"No suite rows at {eps_255:g}/255 for {missing}; models there: {sorted(by)}.")
    todo = [(m, reference) for m in by if m != reference and reference in by]
    ranked = list(by)
    for a, b in [*zip(ranked, ranked[1:]), *pairs]:
        if (a, b) not in todo and (b, a) not in todo:
            todo.append((a, b))
    out = []
    for a, b in todo:
        t, c = _paired(by[a], by[b]), _paired(by[a], by[b], "clean")
        out.append({"a": a, "b": b, "robust a": t["mean_a"], "robust b": t["mean_b"], "n paired": t["n"],
                    "a only": t["a_only"], "b only": t["b_only"], "p": t["p_value"], "supported": t["p_value"] < ALPHA,
                    "clean a": c["mean_a"], "clean b": c["mean_b"], "clean p": c["p_value"]})
    return pd.DataFrame(out)


def attack_matrix(frame, eps_255: float, key: str = "accuracy_drop"):
    """Models x attacks at ``eps_255``: the accuracy drop (``key="loss_increase"``: the rise in loss) of each
    attack's own curve (FGSM, PGD) and of the suite's worst case."""
    import pandas as pd

    rows = frame[(frame["norm"] == "inf") & np.isclose(frame["eps_255"].astype(float), eps_255)]
    table = rows.pivot_table(index="model", columns="attack", values=key, aggfunc="first")
    return table.reindex(columns=[c for c in ("FGSM", "PGD", "suite") if c in table.columns]) if len(table) \
        else pd.DataFrame()


def curves(frame, attack: str = "suite", norm: str = "inf"):
    """Robust accuracy vs ε per model: ``{model: DataFrame(eps_255 or eps, robust_accuracy, ci_low, ci_high)}``."""
    rows = frame[(frame["attack"] == attack) & (frame["norm"] == norm)]
    x = "eps_255" if norm == "inf" else "eps"
    return {m: part.sort_values(x)[[x, "robust_accuracy", "ci_low", "ci_high", "attacked_loss"]]
            for m, part in rows.groupby("model", sort=False)}


def reading(frame, eps_255: float, *, reference: str = "undefended") -> str:
    """A written reading of the evasion records at ``eps_255``: the reference's robust accuracy, then every
    defence whose difference from it an exact McNemar test supports (p < ALPHA), and, separately, those it does
    not (named as "no supported difference"). Every number comes from the records, with its n."""
    rows = _at_eps(frame, eps_255)
    if not len(rows):
        return ""
    parts = []
    ref = rows[rows["model"] == reference]
    if len(ref):
        r = ref.iloc[0]
        parts.append(f"At ε = {eps_label(to_unit(eps_255))}, the attack suite ({', '.join(r['attacks'])}; "
                     f"worst case per scan) leaves the {reference} victim {r['robust_accuracy']:.3f} robust accuracy "
                     f"(95% CI {r['ci_low']:.3f}–{r['ci_high']:.3f}, n = {r['n']} scans) from a clean accuracy of "
                     f"{r['clean_accuracy']:.3f} on the same scans; its loss rises from {r['clean_loss']:.3f} to "
                     f"{r['attacked_loss']:.3f}.")
    tests = paired_tests(frame, eps_255, reference=reference)
    if len(tests):
        vs = tests[tests["b"] == reference]
        better = vs[vs["supported"] & (vs["robust a"] > vs["robust b"])]
        worse = vs[vs["supported"] & (vs["robust a"] < vs["robust b"])]
        none = vs[~vs["supported"]]
        def said(t):
            return (f"{t['robust a']:.3f} vs {t['robust b']:.3f} ({t['a only']} vs {t['b only']} discordant scans, "
                    f"exact McNemar p = {t['p']:.2g}, n = {t['n paired']})")

        for _, t in better.iterrows():
            parts.append(f"**{t['a']}** is more robust than the {reference} victim: {said(t)}.")
        for _, t in worse.iterrows():
            parts.append(f"**{t['a']}** is less robust than the {reference} victim: {said(t)}.")
        if len(none):
            parts.append("No supported difference from the " + reference + " victim (exact McNemar p ≥ "
                         f"{ALPHA:g}) for: " + "; ".join(f"{t['a']} ({t['robust a']:.3f}, p = {t['p']:.2g})"
                                                         for _, t in none.iterrows()) + ".")
        neighbours = tests[(tests["b"] != reference) & (tests["a"] != reference)]
        sup = neighbours[neighbours["supported"]]
        if len(neighbours):
            parts.append("Between neighbours in the ranking, " + (
                "the tests support: " + "; ".join(f"{t['a']} > {t['b']} (p = {t['p']:.2g})"
                                                   for _, t in sup.iterrows())
                if len(sup) else "no difference is supported") + ".")
    return " ".join(parts)


def theft_gain_table(frame, *, baseline: str = "no-query (own labels) · augmented", alpha: float | None = None):
    """Theft measured as a gain over the thief that never queries (issue 39): from flat extraction records (one
    per defence × pool × thief × answers × budget × seed, with per-scan ``agreement`` with the victim), per
    defence, pool, thief, answers and budget: the copy's fidelity (mean and sd over seeds), the share of the
    victim's commonest answer (``majority``: a copy that always answers it), the ``baseline`` thief's fidelity at
    the same budget and seeds (trained on the attacker's own labels, the same augmentation, architecture and
    optimizer steps), the gain (mean and sd over seeds), and per seed an exact McNemar test of the copy's per-scan
    agreement against the baseline's on the same evaluation scans: ``p (max over seeds)``; ``supported`` when
    every seed's p < ``alpha`` and the mean gain is positive. With records of several notebooks (a ``result``
    column), each notebook's thieves form their own rows, paired with their own notebook's baseline where it ran
    one, else with another's at the same defence, pool, budget and seed (notebook 31's with notebook 30's)."""
    import pandas as pd

    from .stats import mcnemar

    alpha = ALPHA if alpha is None else alpha
    columns = ["defence", "pool", "thief", "answers", "budget", "queries", "seeds", "fidelity", "fidelity sd",
               "majority", "baseline fidelity", "gain", "gain sd", "p (max over seeds)", "supported"]
    ok = frame[(frame["status"] == "ok") & frame["agreement"].notna()] if len(frame) else frame
    if not len(ok):
        return pd.DataFrame(columns=columns)
    by_result = "result" in ok  # records of several notebooks: each paired with its own notebook's baseline
    arch = (lambda r: r["thief_arch"]) if "thief_arch" in ok else (lambda r: None)  # the same architecture only

    def pair_key(r):
        return r["defence"], r["pool"], arch(r), int(r["budget"]), int(r["seed"])

    base, anywhere = {}, {}  # where it has one, else with another notebook's on the same scans (e.g. 31 with 30's)
    for _, r in ok[ok["thief"] == baseline].iterrows():
        base[(r["result"] if by_result else None, *pair_key(r))] = r
        anywhere.setdefault(pair_key(r), r)
    out = []
    keys = ["defence", "pool", "thief", "answers", "budget"]
    thieves = ok[(ok["thief"] != baseline) & (ok["queries"] > 0)]  # a thief that never queried stole nothing
    extra = (["thief_arch"] if "thief_arch" in ok else []) + (["result"] if by_result else [])
    for key, part in thieves.groupby(keys + extra, sort=False):
        origin = {"result": key[-1]} if by_result else {}
        key = key[:len(keys)]
        pairs = [(r, base.get((r["result"] if by_result else None, *pair_key(r)), anywhere.get(pair_key(r))))
                 for _, r in part.iterrows()]
        pairs = [(r, b) for r, b in pairs if b is not None]
        if not pairs:
            continue
        gains = np.array([r["fidelity"] - b["fidelity"] for r, b in pairs])
        ps = [mcnemar(np.asarray(r["agreement"], bool), np.asarray(b["agreement"], bool))["p_value"] for r, b in pairs]
        out.append({**origin, **dict(zip(keys, key)), "queries": float(np.mean([r["queries"] for r, _ in pairs])),
                    "seeds": len(pairs), "fidelity": float(np.mean([r["fidelity"] for r, _ in pairs])),
                    "fidelity sd": float(np.std([r["fidelity"] for r, _ in pairs], ddof=1)) if len(pairs) > 1
                    else float("nan"), "majority": float(pairs[0][0]["victim_majority"]),
                    "baseline fidelity": float(np.mean([b["fidelity"] for _, b in pairs])),
                    "gain": float(gains.mean()), "gain sd": float(gains.std(ddof=1)) if len(gains) > 1 else float("nan"),
                    "p (max over seeds)": float(max(ps)), "supported": bool(max(ps) < alpha and gains.mean() > 0)})
    return pd.DataFrame(out, columns=(["result"] if by_result else []) + columns)


def chain_table(chain: dict, *, white_box: str = "white-box", surrogate: str = "independent surrogate"):
    """The steal-then-attack chain (:func:`octlib.extraction.transfer_outcomes`, lists or arrays): per source, the
    scans the victim answers right (n), the share of them the PGD crafted on the source and replayed fools (transfer
    success, Wilson 95%), and exact McNemar tests on the same scans against the white-box attack and against the
    independent surrogate (a thief that never queried): does what the thief stole enable a stronger black-box
    attack than the attacker's own labelled scans do?"""
    import pandas as pd

    from .metrics import wilson_interval
    from .stats import mcnemar

    correct = np.asarray(chain["correct"], bool)
    fooled = {k: np.asarray(v, bool)[correct] for k, v in chain["fooled"].items()}
    n = int(correct.sum())
    out = []
    for name, f in fooled.items():
        lo, hi = wilson_interval(int(f.sum()), n) if n else (float("nan"), float("nan"))
        row = {"source": name, "n": n, "transfer success": float(f.mean()) if n else float("nan"),
               "95% CI": f"{lo:.3f}–{hi:.3f}"}
        for ref in (white_box, surrogate):
            test = mcnemar(f, fooled[ref]) if ref in fooled and ref != name else None
            row[f"p vs {ref}"] = float("nan") if test is None else test["p_value"]
        out.append(row)
    return pd.DataFrame(out, columns=["source", "n", "transfer success", "95% CI", f"p vs {white_box}",
                                      f"p vs {surrogate}"])


def extraction_defence_table(frame, budget: int | None = None, *, pool: str = "oct",
                             baseline: str = "no-query (own labels) · augmented", alpha: float | None = None):
    """The deployer's trade-off for model extraction: per defence, the thief that steals the most (highest mean
    fidelity over seeds) among every thief tried against it at one ``budget`` of queries on the ``pool``, beside
    what the defence costs honest users (``honest_*`` columns of the records, where present).

    ``frame`` holds flat extraction records (:func:`octlib.records.read_extraction`); the no-query baseline and
    failed runs are left out; ``budget`` defaults to the largest budget every defence was attacked at. Columns:
    defence, tier, thief (the best), thieves (how many were tried), queries, fidelity (mean) with its sd over seeds
    and the mean of the per-seed Wilson bounds, n_seeds, n (scans), accuracy, urgent_agreement, then, where the
    ``baseline`` thief (trained on the attacker's own labels, no query) ran at the same budget against that defence
    (:func:`theft_gain_table`): the best thief's gain over it, the largest exact McNemar p over seeds and whether
    the theft is supported; honest_*.

    ``tier``: defences in order of the best thief's fidelity, lowest (the least stolen) first; a defence joins the
    tier of the one above it unless, for every seed they share, an exact McNemar test on the best thieves' per-scan
    agreement with their victims separates it from the tier's first defence (p < ``alpha``); ``None`` where the
    records hold no per-scan agreement (records older than issue 39's).
    """
    import pandas as pd

    alpha = ALPHA if alpha is None else alpha
    ok = frame[(frame["status"] == "ok") & (frame["pool"] == pool)]
    gains_frame = ok
    ok = ok[ok["attack"] != "no-query"]
    if not len(ok):
        return pd.DataFrame()
    if budget is None:
        common = set.intersection(*(set(part["budget"]) for _, part in ok.groupby("defence")))
        if not common:
            raise ValueError("No budget was used against every defence: pass `budget`.")
        budget = max(common)
    at = ok[ok["budget"] == budget]
    honest = [c for c in at.columns if c.startswith("honest_")]
    agg = {"queries": ("queries", "mean"), "fidelity": ("fidelity", "mean"), "fidelity_sd": ("fidelity", "std"),
           "fidelity_low": ("fidelity_low", "mean"), "fidelity_high": ("fidelity_high", "mean"),
           "n_seeds": ("seed", "nunique"), "n": ("n", "first"), "accuracy": ("accuracy", "mean"),
           "urgent_agreement": ("urgent_agreement", "mean"), **{c: (c, "first") for c in honest}}
    per_thief = at.groupby(["defence", "thief"], sort=False).agg(**agg).reset_index()
    tried = per_thief.groupby("defence", sort=False)["thief"].count().rename("thieves")
    best = per_thief.loc[per_thief.groupby("defence", sort=False)["fidelity"].idxmax()]
    best = best.merge(tried, on="defence")
    gains = theft_gain_table(gains_frame[gains_frame["budget"] == budget], baseline=baseline, alpha=alpha) \
        if "agreement" in gains_frame else pd.DataFrame()
    lookup = {(g["defence"], g["thief"]): g for g in gains.to_dict("records")} if len(gains) else {}
    best["gain"] = [lookup.get((d, t), {}).get("gain", float("nan")) for d, t in zip(best["defence"], best["thief"])]
    best["p gain"] = [lookup.get((d, t), {}).get("p (max over seeds)", float("nan"))
                      for d, t in zip(best["defence"], best["thief"])]
    best["theft supported"] = [lookup[(d, t)]["supported"] if (d, t) in lookup else None
                               for d, t in zip(best["defence"], best["thief"])]
    best = best.sort_values(["fidelity"], kind="stable").reset_index(drop=True)
    best.insert(1, "tier", _extraction_tiers(at, best, alpha) if "agreement" in at else None)
    cols = ["defence", "tier", "thief", "thieves", "queries", "fidelity", "fidelity_sd", "fidelity_low",
            "fidelity_high", "n_seeds", "n", "accuracy", "urgent_agreement", "gain", "p gain", "theft supported",
            *honest]
    return best[cols]


def with_chain(defence_table, chain_table, *, prefix: str = "copy through "):
    """The extraction defence table (:func:`extraction_defence_table`) with the steal-then-attack chain of notebook
    32 (:func:`chain_table`) beside each output defence: the transfer success of PGD crafted on the copy stolen
    through that API (``chain transfer``, with its interval and its exact McNemar p against the no-query surrogate);
    empty for a defence the chain did not steal through (the retrained defences)."""
    if not len(defence_table):
        return defence_table
    chain = {} if chain_table is None or not len(chain_table) else {
        r["source"].removeprefix(prefix): r for r in chain_table.to_dict("records") if r["source"].startswith(prefix)}
    out = defence_table.copy()
    names = ["none" if d == "undefended" else d for d in out["defence"]]
    out["chain transfer"] = [chain[n]["transfer success"] if n in chain else float("nan") for n in names]
    out["chain 95% CI"] = [chain[n]["95% CI"] if n in chain else "" for n in names]
    surrogate = [c for c in (chain_table.columns if chain_table is not None else []) if c.startswith("p vs ")
                 and "white-box" not in c]
    out["chain p vs surrogate"] = [chain[n][surrogate[0]] if n in chain and surrogate else float("nan")
                                   for n in names]
    return out


def _extraction_tiers(at, best, alpha: float) -> list:
    """Tiers of :func:`extraction_defence_table` (its docs), ``best`` in fidelity order."""
    from .stats import mcnemar

    def agreement(defence, thief):
        part = at[(at["defence"] == defence) & (at["thief"] == thief) & at["agreement"].notna()]
        return {int(r["seed"]): np.asarray(r["agreement"], bool) for _, r in part.iterrows()}

    out, head, tier = [], None, 0
    for defence, thief in zip(best["defence"], best["thief"]):
        mine = agreement(defence, thief)
        if head is not None:
            shared = sorted(set(mine) & set(head))
            separated = bool(shared) and all(
                len(mine[s]) == len(head[s]) and mcnemar(mine[s], head[s])["p_value"] < alpha for s in shared)
        if head is None or separated:
            head, tier = mine, tier + 1
        out.append(tier)
    return out


def split_clinical(frame):
    """``(suite_frame, clinical_frame)``: the evaluation records of the attack suite and those of the clinical
    threats (the notebooks of role ``clinical``, :func:`octlib.series.role`: targeted, storage, universal,
    corruptions, certified referral), which are not attack-suite rows and are compared in their own tables
    (:func:`clinical_tables`)."""
    if not len(frame):
        return frame, frame
    mask = of_role(frame, "clinical")
    return frame[~mask].reset_index(drop=True), frame[mask].reset_index(drop=True)


def of_role(frame, *roles: str):
    """A mask of the records (``result`` column: the results record that holds them) written by notebooks of
    these ``roles`` (:data:`octlib.series.ROLES`); a record the series does not name is in no role."""
    names = {name for r in roles for name in series.named(r)}
    return frame["result"].astype(str).isin(names)


def clinical_tables(frame, eps_255: float) -> dict:
    """The clinical threats' headline tables from their records (notebooks 50-53), each a DataFrame (empty when its
    notebook has not run):

    - ``referral``: per model and scenario at ``eps_255``/255, over every scan of the scenario's source classes, the
      share already in a target class when clean and the share the targeted and the untargeted PGD left there
      (clean misses included; Wilson intervals, n);
    - ``storage``: per storage row of the victim, accuracy per ε;
    - ``universal``: per model and perturbation, the fooling rate at each budget, the accuracy under the
      perturbation (every scan answered right with it), the scans right clean and still right (the robust
      outcome), and the NORMAL rate of the targeted one;
    - ``corruptions``: per model and corruption, accuracy at each severity.
    """
    import pandas as pd

    out = {k: pd.DataFrame() for k in ("referral", "storage", "universal", "corruptions")}
    if not len(frame):
        return out
    ref = frame[frame["attack"].str.contains(r"PGD · (?:missed|false) referral", regex=True)]
    ref = ref[ref["norm"] == "inf"]
    ref = ref[np.isclose(ref["eps_255"].astype(float), eps_255)]
    if len(ref):
        rows = []
        for (model, attack), r in ref.groupby(["model", "attack"], sort=False):
            r = r.iloc[0]
            mode, scenario = attack.split(" PGD · ")
            clean = r["settings"].get("clean_reached") if isinstance(r.get("settings"), dict) else None
            rows.append({"model": model, "scenario": scenario, "attack": mode, "n": int(r["n"]),
                         "reached clean": np.nan if clean is None else clean / int(r["n"]),
                         "reached": 1 - r["robust_accuracy"],
                         "95% CI": f"{1 - r['ci_high']:.3f}–{1 - r['ci_low']:.3f}"})
        out["referral"] = pd.DataFrame(rows)
    sto = frame[frame["attack"].str.startswith("storage · ")]
    if len(sto):
        out["storage"] = sto.pivot_table(index=["model", "attack"], columns="eps_label", values="robust_accuracy",
                                         aggfunc="first", sort=False).reset_index()
    uap = frame[frame["attack"].str.startswith("UAP")]
    if len(uap):
        uap = uap.assign(accuracy_under=[float(np.mean(np.asarray(p) == np.asarray(t)))
                                         for p, t in zip(uap["pred"], uap["y"])])
        cols = ["model", "attack", "eps_label", "n", "fooling_rate", "accuracy_under", "robust_accuracy"]
        cols += [c for c in ("target_rate",) if c in uap.columns]
        # accuracy under the perturbation counts every scan answered right with it; "right clean and still
        # right" (the robust outcome) leaves out the scans the perturbation turns right
        out["universal"] = uap[cols].rename(columns={"eps_label": "budget",
                                                     "accuracy_under": "accuracy under the perturbation",
                                                     "robust_accuracy": "right clean and still right"})
    cor = frame[frame["norm"] == "corruption"]
    if len(cor):
        table = cor.pivot_table(index=["model", "attack"], columns="eps", values="robust_accuracy",
                                aggfunc="first", sort=False)
        table.columns = [f"severity {int(c)}" for c in table.columns]
        out["corruptions"] = table.reset_index().rename(columns={"attack": "corruption"})
    return out
