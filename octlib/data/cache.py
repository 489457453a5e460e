"""On-disk cache of decoded, preprocessed arrays.

The key is a hash of the source listing (every file's relative path, size and modification time), the
preprocessing settings and :data:`CACHE_VERSION`; so a changed setting or a changed, added or removed file
gives a new key and a fresh decode. Entries are ``.npz`` files written atomically (temporary file, then rename)
and read with ``allow_pickle=False``. An unreadable entry is reported and rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from ..config import cache_dir

#: Bump when preprocessing code changes in a way that changes pixels.
CACHE_VERSION = 1


def cache_key(kind: str, listing, settings: dict) -> str:
    """Hash of what determines the cached arrays."""
    payload = json.dumps({"v": CACHE_VERSION, "kind": kind, "listing": listing, "settings": settings},
                         sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def path_for(key: str) -> Path:
    return cache_dir() / f"arrays-{key[:24]}.npz"


def read(key: str) -> dict | None:
    """The cached arrays for ``key`` (with ``_meta``), or ``None`` when absent or unreadable."""
    path = path_for(key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(str(arrays.pop("_meta_json")))
        if meta.get("key") != key:
            raise ValueError("key mismatch")
    except Exception as exc:  # noqa: BLE001 - a damaged cache entry is rebuilt, not trusted
        warnings.warn(f"Ignoring unreadable cache file {path} ({exc}); decoding again.", stacklevel=3)
        return None
    arrays["_meta"] = meta
    return arrays


def write(key: str, arrays: dict) -> Path:
    """Store ``arrays`` (and its ``_meta`` dict) under ``key`` atomically."""
    path = path_for(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {k: v for k, v in arrays.items() if k != "_meta"}
    payload["_meta_json"] = np.array(json.dumps({**arrays.get("_meta", {}), "key": key}))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
