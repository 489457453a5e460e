"""The results store: one JSON file per experiment, read by the comparison notebook without re-running anything.

Each file holds ``schema_version``, the experiment ``name``, ``created`` (UTC, ISO 8601), the ``notebook`` that
wrote it, its ``settings`` and ``seed``, the ``data`` description (source and fingerprint), ``runtime_s``,
``versions`` (libraries), ``hardware`` and the ``metrics``. Numbers are stored as JSON numbers (never strings);
NaN and infinity, which JSON cannot hold, are stored as ``null``. Objects are indented, lists of numbers or strings
(the per-scan columns) are written on one line each, so a file of thousands of scans stays small and diffable.
Writes are atomic (temporary file, then rename).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from . import __version__
from .config import results_dir as _default_results_dir
from .digests import stored_weights_digest
from .provenance import hardware, library_versions

SCHEMA_VERSION = 1
REQUIRED_KEYS = ("schema_version", "name", "created", "settings", "metrics", "versions", "hardware")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ResultsError(ValueError):
    """A results file is missing, malformed, or a value cannot be stored."""


def to_jsonable(value, where: str = "metrics"):
    """Convert ``value`` to plain JSON types: numpy scalars/arrays, dataclasses, paths; NaN/inf -> None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist(), where)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise ResultsError(f"Cannot store {where} of type {type(value).__name__} in a results file; convert it to "
                       "numbers, strings, lists or dicts.")


def dumps(record, indent: int = 2) -> str:
    """JSON text of ``record`` (plain JSON types): objects and lists of objects indented by ``indent`` spaces, a
    list of scalars on one line. ``json.loads(dumps(r)) == r``; NaN or infinity raise ``ValueError``."""
    def emit(value, depth: int) -> str:
        pad, inner = " " * (indent * depth), " " * (indent * (depth + 1))
        if isinstance(value, dict):
            if not value:
                return "{}"
            items = [f"{inner}{json.dumps(str(k))}: {emit(v, depth + 1)}" for k, v in value.items()]
            return "{\n" + ",\n".join(items) + f"\n{pad}}}"
        if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
            return "[\n" + ",\n".join(inner + emit(v, depth + 1) for v in value) + f"\n{pad}]"
        return json.dumps(value, allow_nan=False)

    return emit(record, 0)


def results_path(name: str, results_dir: Path | str | None = None) -> Path:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ResultsError(f"Results name {name!r} must be letters, digits, '_', '-' or '.', e.g. '20_fgsm'.")
    return Path(results_dir or _default_results_dir()) / f"{name}.json"


def victim_of(metrics) -> str | None:
    """The victim model (artifact folder name) a results file's ``metrics`` attacked or trained: its ``victim``,
    or for notebook 10's record the victim policy's ``artifact``; ``None`` when it names none."""
    if not isinstance(metrics, dict):
        return None
    if isinstance(metrics.get("victim"), str):
        return metrics["victim"]
    policy = metrics.get("victim_policy")
    part = metrics.get(policy) if isinstance(policy, str) else None
    return part.get("artifact") if isinstance(part, dict) else None


def save_results(name: str, metrics, *, settings=None, seed: int | None = None, data: dict | None = None,
                 runtime_s: float | None = None, notebook: str | None = None,
                 results_dir: Path | str | None = None) -> Path:
    """Write ``results/<name>.json`` atomically and return its path.

    Args:
        name: experiment name, e.g. ``20_fgsm`` (the notebook number first).
        metrics: the numbers (dict or dataclass; numpy values are converted).
        settings: the settings that produced them (dict or dataclass).
        seed: the seed used.
        data: description of the data, at least ``{"fingerprint": ...}``.
        runtime_s: wall-clock seconds of the experiment.
        notebook: the notebook that produced the file.
    """
    path = results_path(name, results_dir)
    record = {
        "schema_version": SCHEMA_VERSION, "name": name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "notebook": notebook, "octlib_version": __version__,
        "settings": to_jsonable(settings or {}, "settings"), "seed": seed,
        "data": to_jsonable(data or {}, "data"), "runtime_s": to_jsonable(runtime_s, "runtime_s"),
        "versions": library_versions(), "hardware": hardware(),
        "metrics": to_jsonable(metrics, "metrics"),
    }
    victim = victim_of(record["metrics"])
    if victim:  # which weights: two trainings under one artifact name can differ (octlib.digests.weights_digest)
        record["victim_weights"] = stored_weights_digest(victim)
    return write_record(path, record)


def write_record(path: Path | str, record: dict) -> Path:
    """Write one results ``record`` as JSON to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    text = dumps(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_results(name_or_path: str | Path, results_dir: Path | str | None = None) -> dict:
    """Read a results file by experiment name or path; a clear error if it is missing or malformed."""
    p = Path(name_or_path)
    path = p if (p.suffix == ".json" or p.is_file()) else results_path(str(name_or_path), results_dir)
    if not path.is_file():
        raise ResultsError(f"No results file {path}. Run the notebook that writes it first "
                           f"(the name's number is the notebook's number).")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"Results file {path} is not valid JSON ({exc}). Delete it and re-run its notebook.") \
            from exc
    if not isinstance(record, dict):
        raise ResultsError(f"Results file {path} does not hold a JSON object. Delete it and re-run its notebook.")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ResultsError(f"Results file {path} lacks {missing}. Delete it and re-run its notebook.")
    if record["schema_version"] != SCHEMA_VERSION:
        raise ResultsError(f"Results file {path} has schema version {record['schema_version']}, this octlib reads "
                           f"{SCHEMA_VERSION}. Re-run its notebook.")
    return record


def list_results(results_dir: Path | str | None = None) -> list[str]:
    """Names of the results files present, sorted."""
    folder = Path(results_dir or _default_results_dir())
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
