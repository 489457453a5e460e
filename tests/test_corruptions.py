"""MedMNIST-C corruptions and storage round trips (octlib.corruptions)."""

import io

import numpy as np
import pytest
from PIL import Image

from octlib import corruptions as C


def scans(n=6, size=64, seed=0):
    """Retina-like test scans: bright layered bands on a dark background with speckle-like texture."""
    rng = np.random.default_rng(seed)
    rows = np.arange(size)[:, None]
    out = []
    for _ in range(n):
        centre = rng.uniform(0.35, 0.65) * size
        bands = 0.15 + 0.6 * np.exp(-((rows - centre) / (0.08 * size)) ** 2) \
            + 0.25 * np.exp(-((rows - centre - 0.15 * size) / (0.03 * size)) ** 2)
        img = np.clip(bands * rng.uniform(0.7, 1.0, size=(size, size)), 0, 1)
        out.append(np.rint(img * 255) / 255)
    return np.asarray(out, dtype=np.float32)[..., None]


def test_parameters_are_medmnist_c_octmnist():
    assert C.CORRUPTIONS == ("pixelate", "jpeg_compression", "speckle_noise", "defocus_blur", "motion_blur",
                             "contrast_down")
    assert all(len(v) == 5 for v in C.OCT_SEVERITIES.values())
    assert C.OCT_SEVERITIES["speckle_noise"] == (0.15, 0.30, 0.40, 0.50, 0.60)
    assert C.OCT_SEVERITIES["jpeg_compression"] == (30, 15, 10, 7, 5)


@pytest.mark.parametrize("name", C.CORRUPTIONS)
def test_corruption_shape_range_grid_and_determinism(name):
    x = scans()
    out = C.corrupt(x, name, 5, seed=1)
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    np.testing.assert_allclose(out * 255, np.rint(out * 255), atol=1e-4)  # stored on the 8-bit grid
    np.testing.assert_array_equal(out, C.corrupt(x, name, 5, seed=1))
    assert not np.array_equal(out, x)
    # (N, S, S) works too and gives the same scans
    np.testing.assert_array_equal(C.corrupt(x[..., 0], name, 5, seed=1), out[..., 0])


@pytest.mark.parametrize("name", C.CORRUPTIONS)
def test_severity_increases_the_change(name):
    x = scans(n=4, size=224)  # MedMNIST-C's own size: its blur radii apply unscaled
    err = [float(np.mean((C.corrupt(x, name, s, seed=0) - x) ** 2)) for s in C.SEVERITIES]
    assert err[-1] > err[0] > 0
    # monotone up to 5% of the range between levels (defocus: σ of the anti-aliasing alternates with the radius)
    assert all(b >= a - 0.05 * (err[-1] - err[0]) for a, b in zip(err, err[1:])), err


def test_jpeg_matches_pil_round_trip():
    x = scans(n=3)
    u8 = np.rint(x[..., 0] * 255).astype(np.uint8)
    for q in (95, 75):
        expected = []
        for im in u8:
            buf = io.BytesIO()
            Image.fromarray(im).save(buf, format="JPEG", quality=q)
            expected.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L")))
        np.testing.assert_array_equal(np.rint(C.store(x, "jpeg", quality=q)[..., 0] * 255), np.stack(expected))
    # the corruption at severity 1 is the same round trip at MedMNIST-C's quality 30
    np.testing.assert_array_equal(C.corrupt(x, "jpeg_compression", 1), C.store(x, "jpeg", quality=30))


def test_png_is_the_8bit_grid():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(4, 32, 32, 1)).astype(np.float32)
    stored = C.store(x, "png")
    np.testing.assert_array_equal(stored, np.rint(x * 255).astype(np.float32) / 255)
    np.testing.assert_array_equal(C.store(stored, "png"), stored)  # idempotent
    assert np.abs(stored - x).max() <= 0.5 / 255 + 1e-7


def test_contrast_pulls_toward_the_mean_and_pixelate_is_blocky():
    x = scans(n=2, size=64)
    low = C.corrupt(x, "contrast_down", 5)
    assert low.std() < 0.3 * x.std()
    pix = C.corrupt(x, "pixelate", 5)  # factor 0.10: 6 x 6 blocks of one value on a 64-px scan
    assert len(np.unique(pix[0])) <= 7 * 7


def test_blur_kernels_are_normalised_and_scaled():
    assert C.disk_kernel(2.5, 0.1).sum() == pytest.approx(1.0)
    # a radius below the sub-pixel grid (a 224-px radius scaled to a 32-px scan) is the centre pixel, not NaN
    tiny = C.disk_kernel(0.5 * 32 / 224, 0.1 * 32 / 224)
    assert np.isfinite(tiny).all() and tiny.sum() == pytest.approx(1.0) and tiny.max() == pytest.approx(1.0)
    x = scans(n=1, size=32)
    assert np.array_equal(C.corrupt(x, "defocus_blur", 5, reference_size=224), x)  # no blur, no garbage
    k = C.motion_kernel(10, 3, 0.0)
    assert k.sum() == pytest.approx(1.0)
    assert np.count_nonzero(k) == 21  # 2 ceil(10) + 1 taps on one line, starting at the pixel
    assert np.count_nonzero(k[20]) == 21 and k[20, 20] == k.max()  # row of the pixel (half = 20)
    # the tap sum equals correlating with the 2-D kernel (edge pixels extended)
    from scipy.ndimage import correlate

    x = scans(n=1, size=64)
    u8 = np.rint(x[0, ..., 0] * 255).astype(np.uint8)
    rng_angle = np.random.default_rng(0).uniform(-45, 45)
    expected = correlate(u8 / 255.0, C.motion_kernel(10, 3, rng_angle), mode="nearest")
    got = C.corrupt(x, "motion_blur", 1, seed=0, reference_size=64)[0, ..., 0]
    np.testing.assert_allclose(got, np.rint(np.clip(expected, 0, 1) * 255) / 255, atol=1 / 255 + 1e-6)
    # radii are given at 224 px: on a 112-px scan they are halved, so the unscaled blur is the stronger one
    x = scans(n=1, size=112)
    assert C.corrupt(x, "defocus_blur", 5, reference_size=112).std() < C.corrupt(x, "defocus_blur", 5).std()


def test_psnr():
    x = scans(n=2)
    p = C.psnr(x, x)
    assert np.isinf(p).all()
    noisy = C.corrupt(x, "speckle_noise", 5)
    assert (C.psnr(x, noisy) < C.psnr(x, C.corrupt(x, "speckle_noise", 1))).all()


@pytest.mark.parametrize("call, match", [
    (lambda x: C.corrupt(x, "fog", 1), "Unknown corruption 'fog'"),
    (lambda x: C.corrupt(x, "pixelate", 6), "severity"),
    (lambda x: C.corrupt(x * 255, "pixelate", 1), r"\[0, 1\]"),
    (lambda x: C.corrupt(x[0], "pixelate", 1), "shape"),
    (lambda x: C.store(x, "bmp"), "fmt"),
    (lambda x: C.store(x, "jpeg", quality=0), "quality"),
])
def test_bad_input_names_the_parameter(call, match):
    with pytest.raises(ValueError, match=match):
        call(scans(n=2))
