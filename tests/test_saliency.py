"""Grad-CAM on a model whose answer is known, the retina mask on a synthetic B-scan, and the summary numbers."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from octlib import saliency  # noqa: E402
from octlib.config import TrainConfig  # noqa: E402
from octlib.models import build_cnn  # noqa: E402


def known_model(side=8):
    """A 1x1 ReLU conv with weight 1 (its map is the scan itself), global average pooling and logits
    (+1, -1) x mean: class 0's Grad-CAM is the scan scaled to [0, 1], class 1's is zero everywhere."""
    inputs = keras.Input((side, side, 1))
    features = keras.layers.Conv2D(1, 1, activation="relu", use_bias=False, name="conv",
                                   kernel_initializer="ones")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    logits = keras.layers.Dense(2, use_bias=False, name="logits")(pooled)
    model = keras.Model(inputs, logits)
    model.get_layer("logits").set_weights([np.array([[1.0, -1.0]], dtype=np.float32)])
    return model


def test_grad_cam_of_a_known_model():
    model = known_model()
    x = np.random.default_rng(0).random((3, 8, 8, 1)).astype(np.float32)
    assert saliency.last_conv_layer(model).name == "conv"
    cam0 = saliency.grad_cam(model, x, 0)
    np.testing.assert_allclose(cam0, x[..., 0] / x[..., 0].max(axis=(1, 2), keepdims=True), atol=1e-5)
    assert not saliency.grad_cam(model, x, 1).any()
    np.testing.assert_allclose(saliency.grad_cam(model, x), cam0, atol=1e-6)  # the predicted class is 0
    np.testing.assert_allclose(saliency.grad_cam(model, x, [0, 1, 0], batch_size=2)[1], 0.0)
    with pytest.raises(ValueError, match="class_index"):
        saliency.grad_cam(model, x, 2)
    with pytest.raises(ValueError, match="shape"):
        saliency.grad_cam(model, x[..., 0], 0)


def test_grad_cam_on_the_victim_architecture_is_a_map_per_scan():
    model = build_cnn(32, TrainConfig(filters=(4, 8, 8)))
    x = np.random.default_rng(1).random((5, 32, 32, 1)).astype(np.float32)
    cams = saliency.grad_cam(model, x)
    assert cams.shape == (5, 32, 32) and cams.dtype == np.float32
    assert cams.min() >= 0 and cams.max() <= 1
    assert saliency.last_conv_layer(model).output.shape[1] == 4  # the last block, before global pooling


def synthetic_bscan(side=64, top=20, bottom=40, seed=0):
    rng = np.random.default_rng(seed)
    img = rng.normal(20, 8, (side, side))
    img[top:bottom] += 150  # the retina: a bright band
    return np.clip(img, 0, 255).astype(np.uint8)


def test_retina_mask_finds_the_band():
    imgs = np.stack([synthetic_bscan(seed=s) for s in range(3)] + [np.zeros((64, 64), np.uint8)])
    masks = saliency.retina_mask(imgs)
    truth = np.zeros((64, 64), bool)
    truth[20:40] = True
    for m in masks[:3]:
        iou = (m & truth).sum() / (m | truth).sum()
        assert iou > 0.85, iou
    assert not masks[3].any()  # a flat image has no retina
    np.testing.assert_array_equal(saliency.retina_mask(imgs[..., None] / 255.0), masks)


def test_saliency_summary_numbers():
    n, side = 6, 16
    x0 = np.zeros((n, side, side), np.float32)
    x1 = x0.copy()
    x1[:, :4] = 0.1  # all the perturbation above the retina
    mask = np.zeros((n, side, side), bool)
    mask[:, 4:12] = True
    cam0 = np.random.default_rng(0).random((n, side, side))
    out = saliency.saliency_summary(x0, x1, cam0, cam0, mask, clusters=np.arange(n))
    s = out["summary"]
    assert s["energy_in_retina"]["value"] == 0 and s["retina_area"]["value"] == 0.5
    assert s["rank_correlation"]["value"] == pytest.approx(1.0)
    assert s["saliency_in_retina_clean"]["n"] == n and 0 < s["saliency_in_retina_clean"]["value"] < 1
    assert len(out["per_scan"]["energy_in_retina"]) == n
    same = saliency.saliency_summary(x0, x0, cam0, cam0, mask, clusters=np.arange(n))
    assert same["summary"]["energy_in_retina"]["n"] == 0  # no perturbation: the share is undefined, not 0
    with pytest.raises(ValueError, match="one shape"):
        saliency.saliency_summary(x0, x1, cam0[:, :8], cam0, mask, clusters=np.arange(n))


def test_randomized_copy_redraws_only_the_last_conv_and_the_logits():
    model = build_cnn(32, TrainConfig(filters=(4, 8)))
    copy = saliency.randomized_copy(model, seed=0)
    convs = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    for a, b in zip(model.layers, copy.layers):
        same = all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
        assert same == (a.name not in {convs[-1], model.layers[-1].name}), a.name
    x = np.random.default_rng(0).random((2, 32, 32, 1)).astype(np.float32)
    assert not np.allclose(model.predict(x, verbose=0), copy.predict(x, verbose=0))
