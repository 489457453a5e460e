"""Source A: the Kermany OCT2017 folder layout, ``<root>/<split>/<CLASS>/<CLASS>-<patientID>-<imageNo>.jpeg``.

Decoded, preprocessed arrays are cached on disk (see :mod:`octlib.data.cache`), so only the first load of a
given folder with given preprocessing settings decodes JPEGs.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..labels import CLASSES
from . import cache as _cache
from .dataset import OCTDataset
from .errors import OCTDataError, list_files

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".tif", ".tiff", ".bmp")
RESIZE_MODES = ("squash", "pad", "crop")
_NAME = re.compile(r"^(?P<cls>[A-Za-z]+)-(?P<pid>\d+)-(?P<no>\d+)$")
_FIX_DATA = (
    "Point OCTLIB_DATA (or the `data` argument) at a folder laid out as <root>/<split>/<CLASS>/"
    "<CLASS>-<patientID>-<imageNo>.jpeg with splits train/val/test and classes " + "/".join(CLASSES) + "."
)


@dataclass(frozen=True)
class FileRecord:
    """One image file found by :func:`scan_folder`."""

    relpath: str
    origin: str
    label: int
    patient_id: int
    image_no: int
    size: int
    mtime_ns: int


def _hidden(p: Path) -> bool:
    return p.name.startswith(".")


def scan_folder(root: Path | str) -> tuple[list[FileRecord], list[str]]:
    """List every image under ``root`` and check the layout.

    Returns the records (sorted by path) and the entries that were ignored (files beside the split folders,
    non-image files beside the class folders, unknown folders at the top level), so that nothing is dropped
    silently. Hidden files (``.DS_Store``) are skipped and not reported.

    Raises:
        OCTDataError: missing root, no split folder, unknown class folder, empty class folder, an image outside
            a class folder, a non-image file in a class folder, a name without a patient ID, a folder/name class
            mismatch. The message lists every offending path.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise OCTDataError(f"Data folder {root} does not exist. {_FIX_DATA}", [root])
    if not root.is_dir():
        raise OCTDataError(f"Data path {root} is a file, not a folder. {_FIX_DATA}", [root])

    top = sorted(p for p in root.iterdir() if not _hidden(p))
    split_dirs = [p for p in top if p.is_dir() and p.name.lower() in SPLITS]
    if not split_dirs:
        class_like = [p.name for p in top if p.is_dir() and p.name.upper() in CLASSES]
        hint = (f" It holds class folders ({', '.join(class_like)}): point at its parent, the folder that holds "
                f"{'/'.join(SPLITS)}." if class_like else "")
        found = ", ".join(p.name for p in top[:10]) or "nothing"
        raise OCTDataError(
            f"Data folder {root} has no split folder ({', '.join(SPLITS)}); found: {found}.{hint} {_FIX_DATA}",
            [root],
        )
    ignored = [str(p.relative_to(root)) for p in top if p not in split_dirs and p.is_dir()]

    records: list[FileRecord] = []
    problems: dict[str, list[Path]] = {k: [] for k in
                                       ("unknown_class", "empty", "loose", "not_image", "no_pid", "mismatch")}
    for split_dir in split_dirs:
        origin = split_dir.name.lower()
        for entry in sorted(split_dir.iterdir()):
            if _hidden(entry):
                continue
            if entry.is_file():
                if entry.suffix.lower() in IMAGE_EXTENSIONS:
                    problems["loose"].append(entry)
                else:
                    ignored.append(str(entry.relative_to(root)))
                continue
            cls = entry.name.upper()
            if cls not in CLASSES:
                problems["unknown_class"].append(entry)
                continue
            files = sorted(f for f in entry.iterdir() if not _hidden(f))
            if not files:
                problems["empty"].append(entry)
                continue
            for f in files:
                if f.is_dir() or f.suffix.lower() not in IMAGE_EXTENSIONS:
                    problems["not_image"].append(f)
                    continue
                m = _NAME.match(f.stem)
                if not m:
                    problems["no_pid"].append(f)
                    continue
                if m["cls"].upper() != cls:
                    problems["mismatch"].append(f)
                    continue
                st = f.stat()
                records.append(FileRecord(
                    relpath=f.relative_to(root).as_posix(), origin=origin, label=CLASSES.index(cls),
                    patient_id=int(m["pid"]), image_no=int(m["no"]), size=st.st_size, mtime_ns=st.st_mtime_ns,
                ))

    messages = {
        "unknown_class": f"Class folder(s) not one of {', '.join(CLASSES)}; rename or remove them:",
        "empty": "Empty class folder(s); add images or remove the folder:",
        "loose": "Image(s) outside a class folder; move each into <split>/<CLASS>/:",
        "not_image": f"Non-image file(s) in a class folder (images end in {', '.join(IMAGE_EXTENSIONS)}); "
                     "remove them:",
        "no_pid": "File name(s) without a patient ID; rename to <CLASS>-<patientID>-<imageNo>.jpeg:",
        "mismatch": "File name class prefix does not match its folder; move the file or fix its name:",
    }
    for key, msg in messages.items():
        if problems[key]:
            raise OCTDataError(f"{msg}\n{list_files(problems[key])}\n(data folder: {root})", problems[key])
    if not records:
        raise OCTDataError(f"No images found under {root}. {_FIX_DATA}", [root])
    return records, ignored


def _to_grey(img: Image.Image) -> np.ndarray:
    """Any PIL image as a float32 grey array in [0, 1] (8-bit L, RGB/RGBA/P/CMYK via luma, 16-bit, float)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float32) / 65535.0
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
    else:
        arr = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
    return np.clip(arr, 0.0, 1.0)


def preprocess(img: Image.Image, size: int, resize: str = "squash") -> np.ndarray:
    """One image to a ``uint8`` ``(size, size)`` array.

    Converts to one grey channel whatever the mode; brings it to a square by ``resize`` (``squash``: resize the
    whole scan; ``pad``: centre it on black, then resize; ``crop``: centre square, then resize); resizes with
    antialiased bilinear filtering; rounds to 8-bit (16-bit sources lose their low bits, by design: the cache and
    the ε grid are in /255 steps).
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"`resize` must be one of {RESIZE_MODES}, got {resize!r}.")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"`size` (image side in pixels) must be an integer >= 8, got {size!r}.")
    arr = _to_grey(img)
    h, w = arr.shape
    if resize == "crop":
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        arr = arr[top:top + s, left:left + s]
    elif resize == "pad":
        s = max(h, w)
        canvas = np.zeros((s, s), dtype=np.float32)
        top, left = (s - h) // 2, (s - w) // 2
        canvas[top:top + h, left:left + w] = arr
        arr = canvas
    out = Image.fromarray(arr).resize((size, size), Image.Resampling.BILINEAR)
    return np.clip(np.rint(np.asarray(out) * 255.0), 0, 255).astype(np.uint8)


def decode_file(path: Path, size: int, resize: str):
    """Read, decode and preprocess one file.

    Returns ``(pixels, width, height, mode, pixel_hash, file_sha256)``; raises :class:`OCTDataError` for a
    truncated, corrupt or non-image file.
    """
    raw = Path(path).read_bytes()
    file_sha = hashlib.sha256(raw).hexdigest()
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()  # raises OSError on a truncated file (LOAD_TRUNCATED_IMAGES stays False)
            width, height, mode = img.width, img.height, img.mode
            pixel_hash = hashlib.blake2b(img.tobytes(), digest_size=16).hexdigest()
            pixels = preprocess(img, size, resize)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise OCTDataError(f"Cannot decode image {path}: {exc}. Replace or remove the file, or load with "
                           "skip_corrupt=True to skip (and list) unreadable files.", [path]) from exc
    return pixels, width, height, mode, pixel_hash, file_sha


def link_groups(patient_ids: np.ndarray, pixel_hashes: np.ndarray) -> np.ndarray:
    """Split groups: patient IDs, merged (union-find) when images of two IDs are pixel-identical.

    The group of each image is the smallest patient ID of its merged set.
    """
    parent: dict[int, int] = {int(p): int(p) for p in np.unique(patient_ids)}

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    first_owner: dict[str, int] = {}
    for pid, h in zip(patient_ids.tolist(), pixel_hashes.tolist()):
        other = first_owner.setdefault(h, pid)
        if other != pid:
            ra, rb = find(pid), find(other)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(int(p)) for p in patient_ids], dtype=np.int64)


def load_folder(root: Path | str, size: int, resize: str = "squash", *, skip_corrupt: bool = False,
                use_cache: bool = True, progress: bool = True, workers: int | None = None,
                parallel: str = "auto") -> OCTDataset:
    """Load an OCT2017-layout folder as an :class:`OCTDataset`, from the cache when it is current.

    Args:
        root: the folder holding any of ``train/``, ``val/``, ``test/``.
        size: output image side in pixels.
        resize: ``squash``, ``pad`` or ``crop`` (see :func:`preprocess`).
        skip_corrupt: when False (default) an unreadable image raises an error that lists every unreadable file;
            when True those files are skipped, listed in ``info["skipped"]`` and in a warning with the count.
        use_cache: read and write the decoded-array cache.
        progress: show a progress bar while decoding.
        workers: decoding processes or threads (default: CPU count, at most 8).
        parallel: ``auto`` (processes for large folders, see :func:`decode_executor`), ``process`` or ``thread``;
            the decoded arrays are the same either way.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f"`resize` must be one of {RESIZE_MODES}, got {resize!r}.")
    if not isinstance(size, int) or size < 8:
        raise ValueError(f"`size` (image side in pixels) must be an integer >= 8, got {size!r}.")
    root = Path(root).expanduser().resolve()
    records, ignored = scan_folder(root)
    if ignored:
        warnings.warn(f"Ignored {len(ignored)} entr{'y' if len(ignored) == 1 else 'ies'} outside the layout in "
                      f"{root}: {', '.join(ignored[:10])}{' ...' if len(ignored) > 10 else ''}", stacklevel=2)
    settings = {"size": int(size), "resize": resize, "skip_corrupt": bool(skip_corrupt)}
    listing = [(r.relpath, r.size, r.mtime_ns) for r in records]
    key = _cache.cache_key("folder", listing, settings)

    arrays = _cache.read(key) if use_cache else None
    cache_hit = arrays is not None
    if arrays is None:
        arrays = _decode_all(root, records, size, resize, skip_corrupt, progress, workers, parallel)
        if use_cache:
            _cache.write(key, arrays)

    meta = arrays.pop("_meta")
    skipped = meta["skipped"]
    if skipped:
        warnings.warn(f"Skipped {len(skipped)} unreadable image(s) of {len(records)} in {root} "
                      f"(skip_corrupt=True): " + "; ".join(s["path"] for s in skipped[:20]), stacklevel=2)
    groups = link_groups(arrays["patient_ids"], arrays["pixel_hash"])
    n_linked = int(len(np.unique(arrays["patient_ids"])) - len(np.unique(groups)))
    info = {
        "source": "folder", "root": str(root), "image_size": int(size), "resize": resize,
        "fingerprint": meta["fingerprint"], "n_files": len(records), "n_images": int(len(arrays["labels"])),
        "skipped": skipped, "ignored": ignored, "patient_level": True, "linked_patient_ids": n_linked,
        "cache_key": key, "cache_hit": cache_hit, "decoded_files": meta["decoded"] if not cache_hit else 0,
    }
    return OCTDataset(
        images=arrays["images"], labels=arrays["labels"].astype(np.int64),
        patient_ids=arrays["patient_ids"].astype(np.int64), groups=groups, origins=arrays["origins"],
        paths=arrays["paths"], orig_width=arrays["orig_width"], orig_height=arrays["orig_height"],
        orig_mode=arrays["orig_mode"], info=info,
    )


#: below this many files a folder is decoded in threads (starting worker processes costs about a second)
PROCESS_MIN_FILES = 2000
#: files per task sent to a decoding process
_CHUNK = 256


def _decode_chunk(root: str, relpaths: list[str], size: int, resize: str) -> list:
    """Decode files in a worker process: per file :func:`decode_file`'s tuple, or the error's message (an
    ``OCTDataError`` is re-raised with its file in the parent)."""
    out = []
    for rel in relpaths:
        try:
            out.append(decode_file(Path(root) / rel, size, resize))
        except OCTDataError as exc:
            out.append(str(exc))
    return out


def decode_executor(n_files: int, workers: int | None = None, parallel: str = "auto") -> tuple[str, int]:
    """How :func:`load_folder` decodes ``n_files`` files: ``("process" | "thread", workers)``.

    ``parallel="auto"`` uses processes when there are ``PROCESS_MIN_FILES`` files or more and more than one
    worker, else threads; ``"process"`` or ``"thread"`` force one. ``workers`` defaults to the CPU count, at most
    8. On 2 idle cores, 10,000 scans at 128 px (benchmarks/results/scale-128px.json): one thread 27.7 s, two
    threads 15.9 s (PIL releases the GIL while it decodes), two processes 15.2 s; processes also keep the
    per-image Python work (hashing, resizing) off one interpreter, which counts with more cores."""
    if parallel not in ("auto", "process", "thread"):
        raise ValueError(f"`parallel` must be 'auto', 'process' or 'thread', got {parallel!r}.")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"`workers` (decoding threads or processes) must be an integer >= 1 or None, got "
                         f"{workers!r}.")
    workers = workers or min(os.cpu_count() or 1, 8)
    if parallel == "auto":
        parallel = "process" if workers > 1 and n_files >= PROCESS_MIN_FILES else "thread"
    return parallel, workers


def _decode_all(root: Path, records: list[FileRecord], size: int, resize: str, skip_corrupt: bool,
                progress: bool, workers: int | None, parallel: str = "auto") -> dict:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    kind, workers = decode_executor(len(records), workers, parallel)
    bar = tqdm(total=len(records), disable=not progress, unit="img",
               desc=f"Decoding {root.name} ({size}px, {resize}, {workers} {kind}{'es' if kind == 'process' else 's'})")
    if kind == "process":
        # spawn, not fork: the parent may hold TensorFlow's threads, which a forked child would inherit locked
        chunks = [[r.relpath for r in records[i:i + _CHUNK]] for i in range(0, len(records), _CHUNK)]
        results = []
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for part in pool.map(_decode_chunk, [str(root)] * len(chunks), chunks, [size] * len(chunks),
                                 [resize] * len(chunks)):
                results.extend(part)
                bar.update(len(part))
        results = [OCTDataError(res, [root / rec.relpath]) if isinstance(res, str) else res
                   for rec, res in zip(records, results)]
    else:
        def work(rec: FileRecord):
            try:
                return decode_file(root / rec.relpath, size, resize)
            except OCTDataError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = []
            for res in pool.map(work, records):
                results.append(res)
                bar.update()
    bar.close()
    bad = [(r, res) for r, res in zip(records, results) if isinstance(res, OCTDataError)]
    if bad and not skip_corrupt:
        paths = [root / r.relpath for r, _ in bad]
        raise OCTDataError(
            f"{len(bad)} unreadable image file(s) (truncated, corrupt or not an image):\n{list_files(paths)}\n"
            "Replace or remove them, or load with skip_corrupt=True to skip them (they are then listed in "
            "dataset.info['skipped']).", paths)
    keep = [(r, res) for r, res in zip(records, results) if not isinstance(res, OCTDataError)]
    if not keep:
        raise OCTDataError(f"No readable image under {root}.", [root])
    fingerprint = hashlib.sha256(
        "\n".join(f"{r.relpath}\t{res[5]}" for r, res in keep).encode()).hexdigest()
    return {
        "images": np.stack([res[0] for _, res in keep]),
        "labels": np.array([r.label for r, _ in keep], dtype=np.int64),
        "patient_ids": np.array([r.patient_id for r, _ in keep], dtype=np.int64),
        "origins": np.array([r.origin for r, _ in keep]),
        "paths": np.array([r.relpath for r, _ in keep]),
        "orig_width": np.array([res[1] for _, res in keep], dtype=np.int32),
        "orig_height": np.array([res[2] for _, res in keep], dtype=np.int32),
        "orig_mode": np.array([res[3] for _, res in keep]),
        "pixel_hash": np.array([res[4] for _, res in keep]),
        "_meta": {
            "fingerprint": fingerprint, "decoded": len(records),
            "skipped": [{"path": str(root / r.relpath), "reason": str(exc).split(". Replace")[0]}
                        for r, exc in bad],
        },
    }
