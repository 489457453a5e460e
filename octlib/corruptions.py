"""Natural corruptions of OCT scans (MedMNIST-C) and the storage round trips a scan goes through (8-bit PNG, JPEG).

**Corruptions.** MedMNIST-C (Di Salvo, Doerrich, Rieger and Ledig 2024, arXiv:2406.17536) defines, for OCTMNIST,
six corruptions at five severities: pixelate, JPEG compression, speckle noise, defocus blur, motion blur and
contrast down. :data:`OCT_SEVERITIES` holds the paper's OCT parameters as published with its code
(``medmnistc/corruptions/registry.py``, entry ``octmnist``); the definitions follow the paper's code, re-implemented
here with PIL, NumPy and SciPy (the ``medmnistc`` package pulls in torch, torchvision and ImageMagick):

- ``pixelate``: down-sample by the factor with a box filter, up-sample back with a box filter (PIL);
- ``jpeg_compression``: encode as JPEG at the quality and decode (PIL);
- ``speckle_noise``: ``x + x * n`` with ``n ~ N(0, c^2)`` per pixel, clipped to [0, 1];
- ``defocus_blur``: correlate with a disk of the radius (area-weighted pixels), anti-aliased by a 3x3 Gaussian of
  the given σ;
- ``motion_blur``: ImageMagick's motion blur, a one-sided line of ``2 ceil(radius) + 1`` taps with Gaussian weights
  of the given σ, at an angle drawn uniformly from [-45°, 45°] per scan;
- ``contrast_down``: PIL's contrast enhancement, ``mean + f (x - mean)`` around the scan's mean grey level.

MedMNIST-C corrupts 224-px images; the spatial parameters (blur radii and σ) are given in 224-px pixels and scaled
by ``size / 224`` here (``reference_size``), so a severity blurs the same fraction of the retina at every input
size. The other parameters (factor, quality, noise level, contrast) do not depend on the size. Every output is
stored on the 8-bit grid, as MedMNIST-C stores its corrupted images.

**Storage.** :func:`store` round-trips scans through an 8-bit PNG (lossless: the 8-bit grid) or a JPEG at a given
quality and decodes them again, the way a perturbed scan reaches a model after being saved by a PACS or a viewer.
:func:`storage_preprocessor` puts the same round trip in front of a model for an attacker who knows it (BPDA).

Scans are float32 arrays in [0, 1] of shape ``(N, S, S, 1)`` (or ``(N, S, S)``), as everywhere in ``octlib``.
"""

from __future__ import annotations

import io

import numpy as np

# MedMNIST-C's OCTMNIST parameters, severities 1-5 (Di Salvo et al. 2024, code registry entry ``octmnist``).
OCT_SEVERITIES: dict[str, tuple] = {
    "pixelate": (0.30, 0.25, 0.20, 0.15, 0.10),                 # resize factor
    "jpeg_compression": (30, 15, 10, 7, 5),                     # JPEG quality
    "speckle_noise": (0.15, 0.30, 0.40, 0.50, 0.60),            # σ of the multiplicative noise
    "defocus_blur": ((0.5, 0.6), (1.0, 0.5), (1.5, 0.1), (2.0, 0.5), (2.5, 0.1)),  # (disk radius, alias σ), px@224
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),                 # (radius, σ), px@224
    "contrast_down": (0.6, 0.4, 0.3, 0.2, 0.15),                # contrast factor
}
CORRUPTIONS = tuple(OCT_SEVERITIES)
SEVERITIES = (1, 2, 3, 4, 5)
REFERENCE_SIZE = 224
STORAGE_FORMATS = ("png", "jpeg")


def _check_scans(x, name: str = "x") -> tuple[np.ndarray, tuple]:
    """Scans as (N, S, S) float64 in [0, 1], with the shape to give back."""
    arr = np.asarray(x, dtype=np.float32)
    shape = arr.shape
    if arr.ndim == 4 and shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(f"`{name}` must be square scans of shape (N, S, S, 1) or (N, S, S), got shape {shape}.")
    if arr.size and (not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1):
        raise ValueError(f"`{name}` must lie in [0, 1] (finite), got [{np.nanmin(arr):.3f}, {np.nanmax(arr):.3f}]; "
                         "scale 0-255 images by 1/255 first.")
    return arr, shape


def to_uint8(x) -> np.ndarray:
    """Scans in [0, 1] as 8-bit grey levels (rounded to the nearest level)."""
    arr, _ = _check_scans(x)
    return np.rint(arr * 255.0).astype(np.uint8)


def _from_uint8(u8: np.ndarray, shape: tuple) -> np.ndarray:
    return (u8.astype(np.float32) / 255.0).reshape(shape)


def _jpeg_u8(u8: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8)


def _png_u8(u8: np.ndarray) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="PNG")
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im, dtype=np.uint8)


def store(x, fmt: str = "png", *, quality: int = 95) -> np.ndarray:
    """Save every scan as an 8-bit ``fmt`` image (``"png"`` or ``"jpeg"`` at ``quality``) and decode it again.

    Returns float32 scans of ``x``'s shape in [0, 1]. PNG is lossless, so it only rounds to the 8-bit grid; JPEG
    rounds to the grid and then compresses (PIL's encoder, 4:2:0 is irrelevant for grey scans)."""
    fmt = str(fmt).lower()
    if fmt not in STORAGE_FORMATS:
        raise ValueError(f"`fmt` must be one of {STORAGE_FORMATS}, got {fmt!r}.")
    if fmt == "jpeg" and not (isinstance(quality, (int, np.integer)) and 1 <= quality <= 100):
        raise ValueError(f"`quality` must be an integer JPEG quality in [1, 100], got {quality!r}.")
    arr, shape = _check_scans(x)
    u8 = np.rint(arr * 255.0).astype(np.uint8)
    out = np.stack([_jpeg_u8(im, quality) if fmt == "jpeg" else _png_u8(im) for im in u8]) if len(u8) else u8
    return _from_uint8(out, shape)


# --- the corruptions ------------------------------------------------------------------------------------------

def _pixelate(u8: np.ndarray, factor: float, rng, scale: float) -> np.ndarray:
    from PIL import Image

    h, w = u8.shape
    im = Image.fromarray(u8)
    small = im.resize((max(1, int(w * factor)), max(1, int(h * factor))), Image.Resampling.BOX)
    return np.asarray(small.resize((w, h), Image.Resampling.BOX), dtype=np.uint8)


def _jpeg(u8: np.ndarray, quality: int, rng, scale: float) -> np.ndarray:
    return _jpeg_u8(u8, quality)


def _speckle(u8: np.ndarray, c: float, rng, scale: float) -> np.ndarray:
    img = u8 / 255.0
    out = np.clip(img + img * rng.normal(scale=c, size=img.shape), 0, 1)
    return np.rint(out * 255).astype(np.uint8)


def _gauss_taps(sigma: float) -> np.ndarray:
    """Three Gaussian taps of σ, normalised (a 3x3 anti-aliasing blur is their outer product)."""
    t = np.exp(-np.array([1.0, 0.0, 1.0]) / (2 * max(sigma, 1e-6) ** 2))
    return t / t.sum()


def disk_kernel(radius: float, alias_sigma: float, *, supersample: int = 8) -> np.ndarray:
    """The defocus kernel: a disk of ``radius`` px, each pixel weighted by the fraction of its area inside the disk
    (``supersample`` x ``supersample`` points per pixel), normalised, then smoothed by a 3 x 3 Gaussian of
    ``alias_sigma`` (MedMNIST-C / ImageNet-C anti-aliasing). Area weights instead of MedMNIST-C's pixel-centre test
    keep a sub-pixel radius (a 224-px radius scaled to a smaller scan) a blur rather than nothing; for radii of a few
    pixels the two agree."""
    from scipy.ndimage import correlate

    half = int(np.ceil(radius)) + 1
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    grid = (np.arange(-half, half + 1)[:, None] + sub[None, :]).reshape(-1)
    xx, yy = np.meshgrid(grid, grid)
    inside = ((xx**2 + yy**2) <= max(radius, 0.5 / supersample) ** 2).astype(np.float64)
    n = 2 * half + 1
    disk = inside.reshape(n, supersample, n, supersample).mean(axis=(1, 3))
    if not disk.any():  # a disk smaller than the sub-pixel grid lies inside the centre pixel: no blur
        disk[half, half] = 1.0
    disk /= disk.sum()
    taps = _gauss_taps(alias_sigma)
    return correlate(np.pad(disk, 1), np.outer(taps, taps), mode="constant")


def _defocus(u8: np.ndarray, params, rng, scale: float) -> np.ndarray:
    from scipy.ndimage import correlate

    radius, alias = params
    kernel = disk_kernel(radius * scale, alias * scale)
    out = correlate(u8 / 255.0, kernel, mode="mirror")
    return np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8)


def motion_taps(radius: float, sigma: float, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """ImageMagick's motion blur as taps: ``2 ceil(radius) + 1`` pixel offsets ``(dy, dx)`` along ``angle_deg``,
    starting at the pixel itself (one-sided), with weights ``exp(-i^2 / 2 σ^2)``, normalised."""
    width = 2 * int(np.ceil(radius)) + 1
    i = np.arange(width, dtype=np.float64)
    weights = np.exp(-(i**2) / (2 * max(sigma, 1e-6) ** 2))
    theta = np.deg2rad(angle_deg)
    offsets = np.stack([np.rint(i * np.sin(theta)), np.rint(i * np.cos(theta))], axis=1).astype(int)
    return offsets, weights / weights.sum()


def motion_kernel(radius: float, sigma: float, angle_deg: float) -> np.ndarray:
    """:func:`motion_taps` as a square 2-D correlation kernel centred on the pixel (for display and tests)."""
    offsets, weights = motion_taps(radius, sigma, angle_deg)
    half = int(np.abs(offsets).max(initial=0))
    kernel = np.zeros((2 * half + 1, 2 * half + 1))
    np.add.at(kernel, (half + offsets[:, 0], half + offsets[:, 1]), weights)
    return kernel


def _motion(u8: np.ndarray, params, rng, scale: float) -> np.ndarray:
    radius, sigma = params
    offsets, weights = motion_taps(radius * scale, sigma * scale, rng.uniform(-45, 45))
    half = int(np.abs(offsets).max(initial=0))
    h, w = u8.shape
    padded = np.pad(u8 / 255.0, half, mode="edge")  # ImageMagick extends the edge pixels
    out = np.zeros((h, w))
    for (dy, dx), wt in zip(offsets, weights):
        out += wt * padded[half + dy:half + dy + h, half + dx:half + dx + w]
    return np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8)


def _contrast(u8: np.ndarray, factor: float, rng, scale: float) -> np.ndarray:
    from PIL import Image, ImageEnhance

    return np.asarray(ImageEnhance.Contrast(Image.fromarray(u8)).enhance(factor), dtype=np.uint8)


_APPLY = {"pixelate": _pixelate, "jpeg_compression": _jpeg, "speckle_noise": _speckle, "defocus_blur": _defocus,
          "motion_blur": _motion, "contrast_down": _contrast}


def corrupt(x, name: str, severity: int, *, seed: int = 0, reference_size: int = REFERENCE_SIZE) -> np.ndarray:
    """Scans ``x`` under MedMNIST-C's OCT corruption ``name`` at ``severity`` (1-5), on the 8-bit grid.

    Random corruptions (speckle, the motion-blur angle) draw from ``numpy.random.default_rng(seed)``, so a call is
    reproducible. Spatial parameters are scaled by ``S / reference_size`` (MedMNIST-C corrupts 224-px images)."""
    if name not in OCT_SEVERITIES:
        raise ValueError(f"Unknown corruption {name!r}; use one of {CORRUPTIONS}.")
    if severity not in SEVERITIES:
        raise ValueError(f"`severity` must be one of {SEVERITIES} (MedMNIST-C's five levels), got {severity!r}.")
    if not (isinstance(reference_size, (int, np.integer)) and reference_size > 0):
        raise ValueError(f"`reference_size` must be a positive number of pixels, got {reference_size!r}.")
    arr, shape = _check_scans(x)
    scale = arr.shape[-1] / reference_size if arr.size else 1.0
    rng = np.random.default_rng(seed)
    u8 = np.rint(arr * 255.0).astype(np.uint8)
    param = OCT_SEVERITIES[name][severity - 1]
    out = np.stack([_APPLY[name](im, param, rng, scale) for im in u8]) if len(u8) else u8
    return _from_uint8(out, shape)


def storage_preprocessor(fmt: str = "png", *, quality: int = 95):
    """An ART preprocessor that stores scans as :func:`store` does, for a storage-aware attacker: ART applies it
    in the forward pass and, being non-differentiable, passes gradients through it unchanged (BPDA, Athalye et al.
    2018), so PGD on a classifier with it (:func:`octlib.estimators.art_classifier` ``preprocessors``) attacks what
    the model sees after storage."""
    from art.defences.preprocessor import Preprocessor

    store(np.zeros((1, 2, 2, 1), dtype=np.float32), fmt, quality=quality)  # validate the settings now

    class Storage(Preprocessor):
        params = ["fmt", "quality"]

        def __init__(self):
            super().__init__(is_fitted=True, apply_fit=False, apply_predict=True)
            self.fmt, self.quality = fmt, quality

        def __call__(self, x, y=None):
            return store(np.clip(x, 0, 1), self.fmt, quality=self.quality), y

    return Storage()


def psnr(x_clean, x_other) -> np.ndarray:
    """Peak signal-to-noise ratio (dB, peak 1) of each scan against its clean version (scikit-image); ``inf``
    for an unchanged scan."""
    from skimage.metrics import peak_signal_noise_ratio

    a, shape = _check_scans(x_clean, "x_clean")
    b, bshape = _check_scans(x_other, "x_other")
    if shape != bshape:
        raise ValueError(f"`x_clean` {shape} and `x_other` {bshape} must have the same shape.")
    out = np.empty(len(a))
    for k, (u, v) in enumerate(zip(a, b)):
        out[k] = np.inf if np.array_equal(u, v) else peak_signal_noise_ratio(u, v, data_range=1.0)
    return out
