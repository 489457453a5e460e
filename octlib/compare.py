"""The study's comparison, read from the results store only (notebook 90): no model is trained or attacked here.

:func:`load_study` reads every experiment the comparison needs and lists the missing ones with the notebook that
writes them. :func:`defence_rows` puts the undefended victim and every defence of notebooks 40 and 41 on one
footing (clean accuracy and loss, per-attack curves over ε, certified accuracy, stolen fidelity), each row with
the number of scans it was measured on; notebooks 40 and 41 write those entries with :func:`defence_entry` (and
:func:`answered_points` for output defences), so the format is written and read in this one module.
:func:`provenance`, :func:`profiles` and :func:`consistency` say where each result comes from (profile, victim,
data, hardware) and whether the results can be compared. :func:`summary_table`, :func:`drop_matrix` and
:func:`reading` build the table, the heatmaps and the written summary; :func:`export_table` writes a table as CSV,
Markdown and LaTeX.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

PRODUCERS = {
    "10_train_cnn": "10_train_cnn.ipynb",
    "20_attack_fgsm": "20_attack_fgsm.ipynb",
    "21_attack_deepfool": "21_attack_deepfool.ipynb",
    "30_attack_copycat": "30_attack_copycat.ipynb",
    "31_attack_knockoffnets": "31_attack_knockoffnets.ipynb",
    "40_defence_class_labels": "40_defence_class_labels.ipynb",
    "41_defence_gaussian_noise": "41_defence_gaussian_noise.ipynb",
}


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


ENTRY_KINDS = ("none", "output", "training", "noise training", "inference noise", "adversarial training")
POINT_KEYS = ("eps_255", "accuracy", "loss", "accuracy_drop", "loss_increase")


def answered_points(eps_grid, answered) -> list[dict]:
    """Per-ε points of an *output* defence (notebook 40): ``answered`` holds one
    :func:`octlib.defences.answers_under_attack` result per ε of ``eps_grid`` ([0, 1] units), scored on what the
    defended API answers."""
    eps_grid, answered = list(eps_grid), list(answered)
    if len(eps_grid) != len(answered):
        raise ValueError(f"answered_points: {len(answered)} answers for {len(eps_grid)} ε values; pass one "
                         "answers_under_attack result per ε.")
    return [{"eps": float(e), "eps_255": float(e) * 255, "accuracy": a["adversarial"]["accuracy"]["value"],
             "loss": a["adversarial"]["loss"], "accuracy_drop": a["accuracy_drop"],
             "loss_increase": a["loss_increase"]} for e, a in zip(eps_grid, answered)]


def defence_entry(kind: str, clean: dict, evasion: dict, *, extraction=(), **extra) -> dict:
    """One model or API in the ``defences`` of notebooks 40 and 41's results: the format :func:`defence_rows`
    reads, written in one place and checked here, so a malformed entry fails when it is written rather than
    showing up as blanks in notebook 90.

    Args:
        kind: one of :data:`ENTRY_KINDS`.
        clean: at least ``accuracy`` (a value or ``{"value", ...}``) and ``loss`` on the evaluation scans.
        evasion: attack name -> per-ε list of either :meth:`octlib.attacks.AttackRun.report` results (converted
            with :func:`octlib.metrics.evasion_summary`) or points from :func:`answered_points`.
        extraction: the extraction runs against this model or API (rows of :func:`octlib.extraction.sweep`).
        **extra: anything else the notebook keeps (``deepfool``, ``certified``, ``training_s`` ...).
    """
    from .metrics import evasion_summary

    where = f"defence_entry(kind={kind!r})"
    if kind not in ENTRY_KINDS:
        raise ValueError(f"{where}: unknown kind; use one of {ENTRY_KINDS}.")
    missing = [k for k in ("accuracy", "loss") if k not in clean]
    if missing:
        raise ValueError(f"{where}: `clean` lacks {missing}; pass the evaluation scans' accuracy and loss.")
    points = {}
    for attack, items in evasion.items():
        points[attack] = [evasion_summary(p) if "loss_adversarial" in p else p for p in items]
        for i, p in enumerate(points[attack]):
            lacking = [k for k in POINT_KEYS if k not in p]
            if lacking:
                raise ValueError(f"{where}: evasion[{attack!r}][{i}] lacks {lacking}; build points with "
                                 "AttackRun.report or compare.answered_points.")
    return {"kind": kind, "clean": clean, "evasion": points, "extraction": list(extraction), **extra}


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
    spread({n: r.get("metrics", {}).get("victim") for n, r in study.items()}, "victim models")
    return notes


def _value(v):
    return v["value"] if isinstance(v, dict) else v


def _curve(entries):
    """Per-ε points ``{eps_255, accuracy, loss, accuracy_drop, loss_increase, urgent_flip}`` of a stored list."""
    return [{"eps_255": e.get("eps_255"), "accuracy": _value(e["accuracy"]), "loss": e.get("loss"),
             "accuracy_drop": e.get("accuracy_drop"), "loss_increase": e.get("loss_increase"),
             "urgent_flip": e.get("urgent_flip")} for e in entries]


def _fidelity(rows, attack="copycat"):
    ok = [r for r in rows or [] if r.get("status") == "ok" and r.get("attack") == attack]
    if not ok:
        return None, None
    top = max(r["queries"] for r in ok)
    return float(np.mean([_value(r["fidelity"]) for r in ok if r["queries"] == top])), top


def defence_rows(study: dict) -> list[dict]:
    """One row per model or API: ``defence``, ``notebook``, ``kind``, ``n``, ``clean_accuracy``, ``clean_loss``,
    ``curves`` (attack -> per-ε points), ``deepfool_accuracy``, ``certified`` (radius curve or None),
    ``fidelity`` and ``fidelity_queries`` (Copycat at its largest budget)."""
    rows = []
    labels = study.get("40_defence_class_labels", {}).get("metrics")
    noise = study.get("41_defence_gaussian_noise", {}).get("metrics")
    if labels:
        for name, d in labels["defences"].items():
            ref = d.get("label_smoothing_reference") if name == "none" else None
            src = ref or d
            fid, queries = _fidelity(d.get("extraction"))
            clean = src["clean"]
            curves = {a: _curve(v) for a, v in src["evasion"].items()}
            if d["kind"] == "output" and not ref:
                curves = {a: _curve(v) for a, v in d["evasion"].items()}
            rows.append({"defence": "undefended" if name == "none" else name, "notebook": "40", "kind": (
                "none" if name == "none" else "output" if d["kind"] == "output" else "label smoothing"),
                "n": labels["n_attacked"], "clean_accuracy": _value(clean["accuracy"]), "clean_loss": clean["loss"],
                "curves": curves, "deepfool_accuracy": src.get("deepfool", {}).get("accuracy"),
                "certified": None, "fidelity": fid, "fidelity_queries": queries})
    if noise:
        for name, d in noise["defences"].items():
            if name == "none" and labels:
                continue  # the same victim on the same scans as notebook 40's undefended row
            fid, queries = _fidelity(d.get("extraction"))
            rows.append({"defence": "undefended" if name == "none" else name, "notebook": "41", "kind": d["kind"],
                         "n": noise["n_attacked"], "clean_accuracy": _value(d["clean"]["accuracy"]),
                         "clean_loss": d["clean"]["loss"], "curves": {a: _curve(v) for a, v in d["evasion"].items()},
                         "deepfool_accuracy": None, "certified": d.get("certified"), "fidelity": fid,
                         "fidelity_queries": queries})
    return rows


def _at(points, eps_255, key="accuracy"):
    for p in points or []:
        if p["eps_255"] is not None and math.isclose(p["eps_255"], eps_255, rel_tol=1e-6):
            return p.get(key)
    return None


def strongest(row, eps_255, key="accuracy"):
    """The lowest accuracy (and its attack) over the row's gradient attacks at ``eps_255``: PGD, PGD-margin,
    FGSM, whichever is strongest there. ``key="loss"`` returns the loss of that attack."""
    best = None
    for attack, points in row["curves"].items():
        acc = _at(points, eps_255)
        if acc is not None and (best is None or acc < best[1]):
            best = (attack, acc, points)
    if best is None:
        return None, None
    return best[0], best[1] if key == "accuracy" else _at(best[2], eps_255, key)


def summary_table(rows, eps_255: float, radius: float):
    """The headline table: one row per defence, at ``eps_255`` (/255) and certified ``radius`` (L2). Clean
    accuracy and loss are on the notebook's evaluation split; the drop and the increase are measured on the
    attacked scans (clean vs attacked on the same scans), as stored by the notebooks."""
    import pandas as pd

    out = []
    for r in rows:
        attack, acc = strongest(r, eps_255)
        _, loss = strongest(r, eps_255, "loss")
        cert = None
        if r["certified"]:
            cert = next((p["certified_accuracy"] for p in r["certified"]["curve"]
                         if math.isclose(p["radius"], radius)), None)
        drop = strongest(r, eps_255, "accuracy_drop")[1]
        out.append({"defence": r["defence"], "kind": r["kind"], "notebook": r["notebook"], "n": r["n"],
                    "clean acc": r["clean_accuracy"], "clean loss": r["clean_loss"],
                    "clean acc (attacked scans)": None if acc is None or drop is None else acc + drop,
                    f"FGSM acc @{eps_255:g}/255": _at(r["curves"].get("FGSM"), eps_255),
                    f"PGD acc @{eps_255:g}/255": _at(r["curves"].get("PGD"), eps_255),
                    f"strongest acc @{eps_255:g}/255": acc, "strongest attack": attack,
                    f"loss @{eps_255:g}/255": loss,
                    "accuracy drop": drop,
                    "loss increase": strongest(r, eps_255, "loss_increase")[1],
                    "DeepFool acc": r["deepfool_accuracy"], f"certified acc @L2 {radius:g}": cert,
                    "Copycat fidelity": r["fidelity"], "Copycat queries": r["fidelity_queries"]})
    return pd.DataFrame(out)


def drop_matrix(rows, eps_255: float, key: str = "accuracy_drop"):
    """Defences x attacks at ``eps_255``: the accuracy drop (clean minus attacked, on the attacked scans;
    ``key="loss_increase"`` for the rise in loss), NaN where an attack was not run on a defence."""
    import pandas as pd

    attacks = sorted({a for r in rows for a in r["curves"]})
    data = {}
    for r in rows:
        vals = {}
        for a in attacks:
            points = r["curves"].get(a)
            v = _at(points, eps_255, key)
            vals[a] = np.nan if v is None else v
        data[r["defence"]] = vals
    return pd.DataFrame(data).T[attacks]


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


def reading(rows, study: dict, eps_255: float, radius: float) -> str:
    """A short written reading of the results, every number filled in from them (Markdown)."""
    by = {r["defence"]: r for r in rows}
    parts = []
    base = by.get("undefended")
    if base:
        attack, acc = strongest(base, eps_255)
        _, loss = strongest(base, eps_255, "loss")
        if acc is not None:
            parts.append(f"At ε = {eps_255:g}/255 ({eps_255 / 255:.4f}), the strongest gradient attack ({attack}) "
                         f"lowers the undefended victim's accuracy from {base['clean_accuracy']:.3f} to {acc:.3f} "
                         f"and raises its loss from {base['clean_loss']:.3f} to {loss:.3f} (n = {base['n']} scans).")
    defended = [(r, *strongest(r, eps_255)) for r in rows if r["defence"] != "undefended"]
    defended = [(r, a, acc) for r, a, acc in defended if acc is not None]
    if defended:
        r, a, acc = max(defended, key=lambda t: t[2])
        parts.append(f"The most robust defence at that ε is **{r['defence']}**: {acc:.3f} under {a}, at a clean "
                     f"accuracy of {r['clean_accuracy']:.3f}.")
        same = [r["defence"] for r, a, acc in defended if r["kind"] == "output"]
        if same:
            parts.append("The output-side defences (" + ", ".join(same) + ") leave white-box attacks unchanged: "
                         "they act on the answers, not on the gradients.")
    eot = [r for r in rows if r["certified"]]
    for r in eot:
        cert = next((p["certified_accuracy"] for p in r["certified"]["curve"] if math.isclose(p["radius"], radius)),
                    None)
        if cert is not None:
            parts.append(f"Randomized smoothing with {r['defence'].split(' (')[0].replace('inference noise ', '')} "
                         f"certifies {cert:.3f} of {r['certified']['n_scans']} scans at L2 radius {radius:g} "
                         f"(abstentions counted as errors).")
    copy = study.get("30_attack_copycat", {}).get("metrics")
    if copy:
        reach = {k: v for k, v in copy["queries_to_target"].items() if k.startswith("oct/")}
        best = max(copy["summary"], key=lambda s: s["fidelity_mean"])
        parts.append(f"A Copycat thief with real OCT scans reaches fidelity {best['fidelity_mean']:.3f} with "
                     f"{best['queries_mean']:.0f} queries ({best['answers']} answers); "
                     + ("the 90% fidelity target is reached at " + ", ".join(f"{k}: {v}" for k, v in reach.items()
                                                                                  if v) if any(reach.values())
                        else "no curve reaches 90% fidelity within the pool") + ".")
    return " ".join(parts)
