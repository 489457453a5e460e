"""An out-of-distribution query pool for model extraction: random crops of natural images, offline.

A thief without OCT scans can still query the victim with whatever images it has. The natural images shipped with
scikit-image (``skimage.data``: photographs, textures, text, astronomy; no download) are cut into random square
crops, converted to grey and resized to the model's input. The source image of each crop is its *attacker-side
label*: adaptive KnockoffNets samples by such labels (Orekondy et al. 2019 use the attacker's own dataset classes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Bundled with scikit-image (no network). Retinal and medical images are left out: this pool is meant to be unrelated.
PROXY_SOURCES = ("astronaut", "brick", "camera", "cat", "cell", "chelsea", "clock", "coffee", "coins", "grass",
                 "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "moon", "page", "rocket", "text")


@dataclass
class ProxyPool:
    """Query images the attacker owns: ``images`` uint8 ``(N, S, S)``, ``labels`` = index of the source image."""

    images: np.ndarray
    labels: np.ndarray
    source_names: tuple[str, ...]
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def x(self) -> np.ndarray:
        """Model input: float32 ``(N, S, S, 1)`` in [0, 1]."""
        return (self.images.astype(np.float32) / np.float32(255.0))[..., None]


def _grey_uint8(name: str) -> np.ndarray:
    import skimage.data
    from skimage.color import rgb2gray, rgba2rgb

    img = np.asarray(getattr(skimage.data, name)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 3:
        img = rgba2rgb(img) if img.shape[-1] == 4 else img
        img = rgb2gray(img)
    if img.dtype != np.uint8:
        img = np.clip(np.round(img * 255 if img.max() <= 1.0 else img), 0, 255).astype(np.uint8)
    return img


def proxy_pool(n: int, image_size: int, *, seed: int = 0, min_scale: float = 0.25,
               sources: tuple[str, ...] = PROXY_SOURCES) -> ProxyPool:
    """``n`` random square crops of ``sources`` (a side of ``min_scale``..1 of the image's short side, random
    position, random horizontal flip), grey, resized to ``image_size``; the same for the same seed."""
    from PIL import Image

    if n < 1 or image_size < 1:
        raise ValueError(f"`n` and `image_size` must be >= 1, got n={n}, image_size={image_size}.")
    if not 0 < min_scale <= 1:
        raise ValueError(f"`min_scale` must be in (0, 1], got {min_scale}.")
    unknown = [s for s in sources if s not in PROXY_SOURCES]
    if unknown:
        raise ValueError(f"Unknown proxy source(s) {unknown}; choose from {PROXY_SOURCES}.")
    rng = np.random.default_rng(seed)
    originals = [_grey_uint8(name) for name in sources]
    labels = np.sort(rng.integers(0, len(sources), n))  # sorted: one source image open at a time
    images = np.empty((n, image_size, image_size), dtype=np.uint8)
    for i, k in enumerate(labels):
        img = originals[k]
        h, w = img.shape
        side = max(8, int(round(rng.uniform(min_scale, 1.0) * min(h, w))))
        top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = img[top:top + side, left:left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        images[i] = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize(
            (image_size, image_size), Image.Resampling.BILINEAR, reducing_gap=2.0))
    order = rng.permutation(n)
    return ProxyPool(images=images[order], labels=labels[order].astype(np.int64), source_names=tuple(sources),
                     info={"kind": "proxy", "source": "skimage.data crops", "seed": seed, "min_scale": min_scale,
                           "image_size": image_size})
