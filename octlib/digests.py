"""Digests that name files and trained weights, with no Keras or TensorFlow import: the artifact store
(:mod:`octlib.artifacts`), the results store (:mod:`octlib.results`, :mod:`octlib.records`) and the downloads
(:mod:`octlib.data.octmnist`) all use these, and this module imports only the standard library, NumPy and
:mod:`octlib.config`, so that none of them needs another to name what it holds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .config import artifacts_dir


def file_digest(path: Path | str, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """The hex digest of a file (``sha256``, ``md5`` ...), read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def weights_digest(model) -> str:
    """SHA-256 of a model's weights (each array's dtype, shape and bytes, in layer order): the model's identity.
    The artifact key names the recipe and data; two trainings with one key can still give different weights
    (measured: the study victim retrained on another CPU), and the file hash of ``model.keras`` changes with its
    save time, so results name the victim by this digest too."""
    h = hashlib.sha256()
    for w in model.weights:
        a = np.ascontiguousarray(np.asarray(w))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def stored_weights_digest(name: str | None, root: Path | None = None) -> str | None:
    """The weights digest in the sidecar of artifact ``name`` (a folder name such as ``cnn-pooled-826fd8fb03bd``)
    in the artifact store; ``None`` when there is no such artifact or its sidecar predates the digest."""
    if not name:
        return None
    try:
        sidecar = json.loads((Path(root or artifacts_dir()) / name / "model.json").read_text())
    except (OSError, ValueError):
        return None
    return sidecar.get("weights_sha256")
