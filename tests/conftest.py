import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLE = REPO.parent / "shared" / "data" / "oct2017-sample"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own decoded-array cache and download folder."""
    monkeypatch.setenv("OCTLIB_CACHE", str(tmp_path / "_cache"))


@pytest.fixture(scope="session")
def sample_root() -> Path:
    """The real OCT2017 sample: OCTLIB_DATA when it names a folder, else ../shared/data/oct2017-sample."""
    env = os.environ.get("OCTLIB_DATA", "")
    root = Path(env) if env and Path(env).is_dir() else DEFAULT_SAMPLE
    if not (root / "test").is_dir():
        pytest.skip(f"real OCT2017 sample not found at {root}: set OCTLIB_DATA to the oct2017-sample folder")
    return root


def write_image(path: Path, *, size=(96, 48), mode="L", seed=0, fmt=None) -> Path:
    """Write a small random image (JPEG unless the suffix says otherwise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "I;16":
        arr = rng.integers(0, 65535, (h, w), dtype=np.uint16)
        img = Image.fromarray(arr)
    elif mode == "RGB":
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    else:
        img = Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8))
    img.save(path, format=fmt)
    return path


@pytest.fixture
def make_layout(tmp_path):
    """Build a small OCT2017-style folder: ``make_layout({"train": {"CNV": [(pid, n_images), ...]}, ...})``."""

    def _make(spec: dict, root: Path | None = None) -> Path:
        root = root or tmp_path / "OCT2017"
        seed = 0
        for split, classes in spec.items():
            for cls, patients in classes.items():
                (root / split / cls).mkdir(parents=True, exist_ok=True)
                for pid, n in patients:
                    for k in range(1, n + 1):
                        seed += 1
                        write_image(root / split / cls / f"{cls}-{pid}-{k}.jpeg", seed=seed)
        return root

    return _make


@pytest.fixture
def small_layout(make_layout):
    """train/val/test with all four classes, several images per patient, one patient under two classes."""
    classes = ("CNV", "DME", "DRUSEN", "NORMAL")
    spec = {"train": {}, "val": {}, "test": {}}
    pid = 1000
    for c in classes:
        spec["train"][c] = [(pid + i, 1 + i % 3) for i in range(12)]
        spec["val"][c] = [(pid + 100 + i, 1) for i in range(2)]
        spec["test"][c] = [(pid + 200 + i, 1 + i % 2) for i in range(4)]
        pid += 1000
    spec["train"]["DME"].append((1000, 2))  # patient 1000 is also under CNV: one ID, two classes
    return make_layout(spec)
