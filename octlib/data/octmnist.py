"""Source B: OCTMNIST (MedMNIST v2 / MedMNIST+; Yang et al. 2023, Sci Data 10:41; CC BY 4.0).

The ``.npz`` files are downloaded once into ``data/`` from Zenodo record 10519652, with a progress bar, into a
temporary file that is renamed only after its size and MD5 check out: an interrupted or corrupted download never
leaves a file that looks valid. No ``medmnist`` dependency (it pulls in torch).

OCTMNIST's train/val split is an image-level split of Kermany's training set: it has no patient IDs, so it
cannot be split by patient. Its test split is Kermany's 1,000-image test set.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from ..config import DATA_ENV, data_dir
from ..labels import CLASSES
from ..digests import file_digest
from .dataset import OCTDataset
from .errors import OCTDataError

_BASE = "https://zenodo.org/records/10519652/files"
#: Image size -> (file name, URL, MD5), from the MedMNIST+ Zenodo record.
OCTMNIST_FILES: dict[int, tuple[str, str, str]] = {
    28: ("octmnist.npz", f"{_BASE}/octmnist.npz?download=1", "c68d92d5b585d8d81f7112f81e2d0842"),
    64: ("octmnist_64.npz", f"{_BASE}/octmnist_64.npz?download=1", "e229e9440236b774d9f0dfef9d07bdaf"),
    128: ("octmnist_128.npz", f"{_BASE}/octmnist_128.npz?download=1", "0a97e76651ace45c5d943ee3f65b63ae"),
    224: ("octmnist_224.npz", f"{_BASE}/octmnist_224.npz?download=1", "abc493b6d529d5de7569faaef2773ba3"),
}
NPZ_SPLITS = ("train", "val", "test")
NO_NETWORK_FIX = (
    f"No network? Point {DATA_ENV} at an OCT2017 folder instead (`export {DATA_ENV}=/path/to/OCT2017`, the "
    f"folder holding train/ and test/), e.g. the project sample: `export {DATA_ENV}=../shared/data/oct2017-sample`;"
    " or copy the .npz into data/ by hand."
)


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    return file_digest(path, "md5", chunk)


def _verified_marker(path: Path, algorithm: str = "md5") -> Path:
    return path.with_name(f"{path.name}.{algorithm}")


def _is_verified(path: Path, digest: str, algorithm: str = "md5") -> bool:
    """True when ``path`` has the expected digest (re-hashed only when the file changed since the last check)."""
    st = path.stat()
    stamp = f"{digest} {st.st_size} {st.st_mtime_ns}"
    marker = _verified_marker(path, algorithm)
    if marker.is_file() and marker.read_text().strip() == stamp:
        return True
    if file_digest(path, algorithm) != digest:
        return False
    marker.write_text(stamp + "\n")
    return True


def download(url: str, dest: Path | str, md5: str, *, progress: bool = True, timeout: float = 60.0,
             algorithm: str = "md5", fix: str = NO_NETWORK_FIX) -> Path:
    """Download ``url`` to ``dest`` once and verify its digest (``md5``: the hex MD5, or the ``algorithm``'s, e.g.
    a SHA-256 for :func:`octlib.artifacts.import_models`).

    An existing ``dest`` with the right digest is reused; one with a wrong digest raises (delete it to fetch
    again). The transfer goes to a temporary file beside ``dest``; a short transfer or a wrong digest removes it
    and raises. ``fix`` ends the message of a network failure.

    Raises:
        OCTDataError: network failure, truncated transfer, digest mismatch; the message names the URL and file.
    """
    from tqdm.auto import tqdm

    name = algorithm.upper().replace("SHA", "SHA-")
    dest = Path(dest)
    if dest.exists():
        if _is_verified(dest, md5, algorithm):
            return dest
        raise OCTDataError(f"{dest} exists but its {name} is not {md5} (a corrupted or different file). "
                           f"Delete it and load again to re-download.", [dest])
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    tmp = Path(tmp_name)
    out = os.fdopen(fd, "wb")  # owns fd from here on
    try:
        try:
            response = urllib.request.urlopen(url, timeout=timeout)
        except (urllib.error.URLError, OSError) as exc:
            raise OCTDataError(f"Cannot download {url} to {dest}: {exc}. {fix}", [dest]) from exc
        h, received = hashlib.new(algorithm), 0
        with response, out:
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"Downloading {dest.name}",
                      disable=not progress) as bar:
                try:
                    while block := response.read(1 << 20):
                        out.write(block)
                        h.update(block)
                        received += len(block)
                        bar.update(len(block))
                except (http.client.IncompleteRead, OSError) as exc:
                    raise OCTDataError(f"Download of {url} was interrupted after {received} bytes ({exc}); "
                                       f"nothing was written to {dest}. Load again to retry.", [dest]) from exc
        if total is not None and received != total:
            raise OCTDataError(f"Download of {url} is truncated: {received} of {total} bytes; nothing was "
                               f"written to {dest}. Load again to retry.", [dest])
        got = h.hexdigest()
        if got != md5:
            raise OCTDataError(f"Download of {url} has {name} {got}, expected {md5}; nothing was written to {dest}. "
                               "The server sent a different file: load again to retry, or check the URL.", [dest])
        os.replace(tmp, dest)
        _verified_marker(dest, algorithm).write_text(f"{md5} {dest.stat().st_size} {dest.stat().st_mtime_ns}\n")
        return dest
    finally:
        out.close()
        tmp.unlink(missing_ok=True)


def fetch_octmnist(size: int = 28, *, root: Path | str | None = None, url: str | None = None,
                   md5: str | None = None, progress: bool = True) -> Path:
    """Path of the OCTMNIST ``.npz`` at ``size`` px in ``root`` (default ``data/``), downloading it if needed."""
    if size not in OCTMNIST_FILES:
        raise OCTDataError(f"OCTMNIST comes in sizes {sorted(OCTMNIST_FILES)} px, not {size!r}; set {DATA_ENV} "
                           "to octmnist (28 px), octmnist-64, octmnist-128 or octmnist-224.")
    name, default_url, default_md5 = OCTMNIST_FILES[size]
    dest = Path(root) if root is not None else data_dir()
    return download(url or default_url, dest / name, md5 or default_md5, progress=progress)


def _member_header(npz, key: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    """Shape, dtype and Fortran order of an ``.npz`` member, read from its header without loading its data."""
    with npz.zip.open(f"{key}.npy") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(fh)
    return tuple(shape), np.dtype(dtype), bool(fortran)


def _read_member_into(npz, key: str, out: np.ndarray, path: Path, chunk: int = 64 << 20) -> None:
    """Stream a C-order uint8 member straight into ``out`` (a contiguous slice): no second copy in memory."""
    view = memoryview(out.reshape(-1))
    with npz.zip.open(f"{key}.npy") as fh:
        version = np.lib.format.read_magic(fh)
        (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(fh)
        pos = 0
        while pos < len(view):
            got = fh.readinto(view[pos:pos + chunk])
            if not got:
                raise OCTDataError(f"{path}: {key} ends after {pos} of {len(view)} bytes (truncated file). Delete "
                                   "it and load again.", [path])
            pos += got


def load_octmnist_npz(path: Path | str, fingerprint: str | None = None) -> OCTDataset:
    """Read an OCTMNIST ``.npz`` (no pickles) into one :class:`OCTDataset` whose ``origins`` are its splits.

    The images stay ``uint8`` and are written once into one array: a one-channel member is streamed from the file
    into its place (peak memory about the images' own size, 5.5 GB for OCTMNIST-224 rather than twice that;
    ``benchmarks/bench_scale.py`` measures it); models convert them to floats per batch.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [f"{s}_{k}" for s in NPZ_SPLITS for k in ("images", "labels") if f"{s}_{k}" not in npz.files]
            if missing:
                raise OCTDataError(f"{path} is not an OCTMNIST file: keys {missing} are missing (found "
                                   f"{sorted(npz.files)}). Delete it and load again.", [path])
            headers = {s: _member_header(npz, f"{s}_images") for s in NPZ_SPLITS}
            for split, (shape, dtype, _) in headers.items():
                grey = shape[:3] if len(shape) == 4 and shape[-1] in (1, 3) else shape
                if len(grey) != 3 or grey[1] != grey[2] or dtype != np.uint8:
                    raise OCTDataError(f"{path}: {split}_images has shape {shape} and dtype {dtype}; expected "
                                       "uint8 (N, S, S). Delete the file and load again.", [path])
            sides = {h[0][1] for h in headers.values()}
            if len(sides) != 1:
                raise OCTDataError(f"{path}: the splits' images differ in size ({sorted(sides)}). Delete the file "
                                   "and load again.", [path])
            size = sides.pop()
            counts = {s: h[0][0] for s, h in headers.items()}
            images_all = np.empty((sum(counts.values()), size, size), dtype=np.uint8)
            labels, origins, paths, start = [], [], [], 0
            for split, (shape, _, fortran) in headers.items():
                n = counts[split]
                labs = np.asarray(npz[f"{split}_labels"]).reshape(-1).astype(np.int64)
                if len(labs) != n or (n and (labs.min() < 0 or labs.max() >= len(CLASSES))):
                    raise OCTDataError(f"{path}: {split}_labels must hold {n} labels in 0..{len(CLASSES) - 1}.",
                                       [path])
                target = images_all[start:start + n]
                if len(shape) == 3 and not fortran:
                    _read_member_into(npz, f"{split}_images", target, path)
                else:  # RGB or one-channel 4-D, or Fortran order: convert this split only
                    imgs = npz[f"{split}_images"]
                    target[...] = imgs.mean(axis=-1).round() if imgs.ndim == 4 and imgs.shape[-1] == 3 else \
                        imgs.reshape(n, size, size)
                    del imgs
                labels.append(labs)
                origins += [split] * n
                paths += [f"octmnist:{split}:{i}" for i in range(n)]
                start += n
    except OCTDataError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip/format errors from a damaged file
        raise OCTDataError(f"Cannot read {path} as .npz ({exc}). Delete it and load again.", [path]) from exc

    n = len(images_all)
    return OCTDataset(
        images=images_all, labels=np.concatenate(labels), patient_ids=np.full(n, -1, dtype=np.int64),
        groups=np.full(n, -1, dtype=np.int64), origins=np.array(origins), paths=np.array(paths),
        orig_width=np.full(n, size, dtype=np.int32), orig_height=np.full(n, size, dtype=np.int32),
        orig_mode=np.full(n, "L"), info={
            "source": "octmnist", "file": str(path), "image_size": int(size), "resize": "none (as published)",
            "fingerprint": fingerprint or md5sum(path), "n_images": n, "skipped": [], "ignored": [],
            "patient_level": False,
            "patient_note": "OCTMNIST has no patient IDs: its train/val split is image-level (patients may "
                            "repeat between train and val); its test split is Kermany's held-out test set.",
        })
