"""Evaluation records: one flat row per (model, attack or suite, norm, ε), with per-scan outcomes and provenance.

One writer (:func:`write_records`, into the results store) and one reader (:func:`read_records`); notebook 90
reads only these rows. Every row carries ``profile``, ``data_fingerprint``, ``victim`` and ``notebook``, so a
comparison can refuse rows that come from different studies (:func:`check_one_study`).
"""

from __future__ import annotations

from pathlib import Path

from .digests import stored_weights_digest
from .results import ResultsError, list_results, load_results, save_results

#: Keys every row has (besides the per-scan lists).
ROW_KEYS = ("model", "kind", "attack", "norm", "eps", "n", "clean_accuracy", "robust_accuracy", "clean_loss",
            "attacked_loss", "accuracy_drop", "loss_increase")
#: Per-scan lists every row has, one entry per scan, in one scan order.
SCAN_KEYS = ("scan_ids", "patients", "y", "clean_pred", "robust", "loss")
PROVENANCE = ("profile", "data_fingerprint", "victim", "notebook")


def check_row(row: dict, where: str = "row") -> None:
    """A clear error for a row that lacks a key, has per-scan lists of the wrong length, or an accuracy outside
    [0, 1]."""
    missing = [k for k in (*ROW_KEYS, *SCAN_KEYS) if k not in row]
    if missing:
        raise ResultsError(f"{where} ({row.get('model')!r}, {row.get('attack')!r}) lacks {missing}; build rows "
                           "with octlib.evaluation.Evaluation.records.")
    bad = [k for k in SCAN_KEYS if len(row[k]) != row["n"]]
    if bad:
        raise ResultsError(f"{where} ({row['model']!r}, {row['attack']!r}): per-scan lists {bad} do not have "
                           f"n = {row['n']} entries.")
    for k in ("clean_accuracy", "robust_accuracy"):
        if not 0 <= row[k] <= 1:
            raise ResultsError(f"{where} ({row['model']!r}, {row['attack']!r}): {k} = {row[k]} is not in [0, 1].")


def write_records(name: str, rows, *, notebook: str, profile: str, data: dict, victim: str, settings=None,
                  seed: int | None = None, runtime_s: float | None = None, extra: dict | None = None,
                  results_dir=None) -> Path:
    """Write evaluation ``rows`` (from :meth:`octlib.evaluation.Evaluation.records`, or certified rows) as the
    results file ``name``, each row stamped with its provenance. ``extra`` is kept beside the rows (e.g. the EOT
    convergence study, honest-user costs)."""
    fingerprint = (data or {}).get("fingerprint")
    if not fingerprint:
        raise ResultsError(f"write_records({name!r}): `data` needs the data fingerprint, e.g. "
                           "{'fingerprint': splits.info['fingerprint']}.")

    weights = stored_weights_digest(victim)
    stamped = []
    for i, row in enumerate(rows):
        check_row(row, f"{name} row {i}")
        stamped.append({**row, "profile": profile, "data_fingerprint": fingerprint, "victim": victim,
                        "victim_weights": weights, "notebook": notebook})
    metrics = {**share_columns(stamped), "victim": victim, **(extra or {})}
    return save_results(name, metrics, settings={"profile": profile, **(settings or {})}, seed=seed, data=data,
                        runtime_s=runtime_s, notebook=notebook, results_dir=results_dir)


def share_columns(rows) -> dict:
    """``{"records": rows, "shared_columns": [...]}``: every per-scan list (a list of ``n`` scalars: scan IDs,
    patients, labels, clean answers and losses ...) that more than one row holds is stored once under
    ``shared_columns`` and referenced from each row as ``{"shared": index}`` (lossless; :func:`read_records` puts
    the lists back). A study of 6 models x 30 corrupted sets x 300 scans holds one list of 300 scan IDs instead
    of 180."""
    import json
    from collections import Counter

    from .results import to_jsonable

    rows = [to_jsonable(r, "row") for r in rows]

    def per_scan(v, n):
        return isinstance(v, list) and len(v) == n and n > 1 and not any(isinstance(e, (dict, list)) for e in v)

    counts = Counter(json.dumps(v) for r in rows for v in r.values() if per_scan(v, r.get("n")))
    index, table, out = {}, [], []
    for r in rows:
        new = {}
        for k, v in r.items():
            text = json.dumps(v) if per_scan(v, r.get("n")) else None
            if text is not None and counts[text] > 1:
                if text not in index:
                    index[text] = len(table)
                    table.append(v)
                new[k] = {"shared": index[text]}
            else:
                new[k] = v
        out.append(new)
    return {"records": out, "shared_columns": table} if table else {"records": out}


def _unshare(row: dict, shared: list, where: str) -> dict:
    out = {}
    for k, v in row.items():
        if isinstance(v, dict) and set(v) == {"shared"}:
            i = v["shared"]
            if not isinstance(i, int) or not 0 <= i < len(shared):
                raise ResultsError(f"{where}: column {k!r} refers to shared column {i!r}, which the file does not "
                                   f"hold ({len(shared)} shared columns). Delete the file and re-run its notebook.")
            v = shared[i]
        out[k] = v
    return out


def read_records(results_dir=None, names=None):
    """Every evaluation row in the results store (or in the results named), as a pandas DataFrame, one row per
    record, per-scan lists kept as lists. Files without records are skipped (they are not evaluations)."""
    return _read("records", "write_records", results_dir, names, check=check_row)


def _read(key: str, writer: str, results_dir, names, check=None):
    """The rows under ``metrics[key]`` of every results file (or of those named), each checked for provenance
    (and by ``check``), with the ``result`` it came from, as a DataFrame."""
    import pandas as pd

    rows = []
    for name in names or list_results(results_dir):
        metrics = load_results(name, results_dir)["metrics"]
        shared = metrics.get("shared_columns", [])
        for i, row in enumerate(metrics.get(key, [])):
            row = _unshare(row, shared, f"{name} {key} {i}")
            if check is not None:
                check(row, f"{name} row {i}")
            missing = [k for k in PROVENANCE if not row.get(k)]
            if missing:
                raise ResultsError(f"{name} {key} {i} lacks provenance {missing}: write it with "
                                   f"octlib.records.{writer}.")
            rows.append({**row, "result": name})
    return pd.DataFrame(rows)


def check_one_study(frame) -> None:
    """Refuse rows that mix profiles, data fingerprints, victims or victim weights (one victim name trained twice;
    rows with and without the digest cannot be shown to share a victim), naming which results hold which."""
    if not len(frame):
        return
    problems = []
    for key in ("profile", "data_fingerprint", "victim", "victim_weights"):
        if key not in frame:  # records written before the victim's weights digest carry none
            continue
        if key == "victim_weights" and frame[key].notna().any() and frame[key].isna().any():
            problems.append("victim_weights: only " + ", ".join(sorted(set(frame.loc[frame[key].notna(), "result"])))
                            + " name their victim's weights; " + ", ".join(sorted(set(frame.loc[frame[key].isna(),
                            "result"]))) + " predate the digest (the same victim cannot be shown)")
        groups = frame.groupby(key)["result"].unique()
        if len(groups) > 1:
            problems.append(f"{key}: " + "; ".join(f"{str(v)[:16]} in {', '.join(sorted(set(r)))}"
                                                   for v, r in groups.items()))
    if problems:
        raise ResultsError("The evaluation records come from more than one study (" + " | ".join(problems)
                           + "). Rerun those notebooks in one profile on one victim (make reference) before "
                           "comparing them.")


def adopt_victim_weights(victim, x, scan_ids, *, source: str = "20_attack_fgsm", results_dir=None,
                         atol: float = 1e-5) -> list[str]:
    """Stamp the weights digest of ``victim`` (a :class:`octlib.artifacts.TrainedModel`) into the results that name
    it without one, once its behaviour shows it is the model they were made with: on the scans of ``source``'s
    records (``x`` with ``scan_ids``), its answers must equal the recorded clean answers and its per-scan clean
    cross-entropy the recorded one within ``atol``. For a victim trained again under its key in a later session
    (models are not committed) before more notebooks join an older reference. Returns the names of the results
    updated; raises :class:`ResultsError`, naming the difference, when the victim is another model."""
    import numpy as np

    from .metrics import cross_entropy, predict_logits
    from .results import results_path, victim_of, write_record

    name, digest = victim.path.name, victim.sidecar["weights_sha256"]
    frame = read_records(results_dir, names=[source])
    rows = frame[frame["victim"] == name] if len(frame) else frame
    if not len(rows):
        raise ResultsError(f"No records of {name} in {source}: nothing shows which weights the results were made "
                           "with. Run that notebook first.")
    row = rows.iloc[0]
    index = {str(s): i for i, s in enumerate(scan_ids)}
    missing = [s for s in row["scan_ids"] if str(s) not in index]
    if missing:
        raise ResultsError(f"{len(missing)} of {source}'s scans are not among the scans given (e.g. {missing[0]}): "
                           "pass the evaluation scans of the same profile, data and seed.")
    take = np.array([index[str(s)] for s in row["scan_ids"]])
    logits = predict_logits(victim.model, np.asarray(x)[take])
    y = np.asarray(row["y"])
    loss = cross_entropy(y, logits, per_example=True)
    differing = int(np.sum(logits.argmax(1) != np.asarray(row["clean_pred"])))
    gap = float(np.max(np.abs(loss - np.asarray(row["clean_loss_per_scan"], dtype=float))))
    if differing or not gap <= atol:
        raise ResultsError(f"{name} here is not the model the results were made with: on {len(y)} scans of {source} "
                           f"{differing} answers differ and the clean losses differ by up to {gap:.3g} (allowed "
                           f"{atol:g}). Rerun the notebooks on this victim (make reference) instead.")
    updated = []
    for result in list_results(results_dir):
        record = load_results(result, results_dir)
        if victim_of(record.get("metrics")) != name or record.get("victim_weights"):
            continue
        record["victim_weights"] = digest
        for key in ("records", "extraction_records"):  # evaluation and extraction rows of that victim
            for r in record["metrics"].get(key, []):
                if isinstance(r, dict) and r.get("victim") == name:
                    r["victim_weights"] = digest
        write_record(results_path(result, results_dir), record)
        updated.append(result)
    return updated


def stamp_extraction(rows, *, profile: str, data: dict, victim: str, notebook: str) -> list[dict]:
    """Flat extraction records (:func:`octlib.extraction.flat_rows`) stamped with their provenance, to keep
    under ``metrics["extraction_records"]`` of a results file (read back by :func:`read_extraction`)."""
    from .extraction import FLAT_KEYS

    fingerprint = (data or {}).get("fingerprint")
    if not fingerprint:
        raise ResultsError("stamp_extraction: `data` needs the data fingerprint, e.g. "
                           "{'fingerprint': splits.info['fingerprint']}.")

    weights = stored_weights_digest(victim)
    out = []
    for i, row in enumerate(rows):
        missing = [k for k in FLAT_KEYS if k not in row]
        if missing:
            raise ResultsError(f"extraction record {i} lacks {missing}; build it with octlib.extraction.flat_rows.")
        out.append({**row, "profile": profile, "data_fingerprint": fingerprint, "victim": victim,
                    "victim_weights": weights, "notebook": notebook})
    return out


def read_extraction(results_dir=None, names=None):
    """Every flat extraction record in the results store (or in the results named), one row per defence x thief x
    pool x answers x budget x seed, as a pandas DataFrame with the ``result`` it came from."""
    return _read("extraction_records", "stamp_extraction", results_dir, names)
