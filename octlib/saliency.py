"""Where on the retina an attack acts: Grad-CAM, a retina mask, and the numbers that summarise them over scans.

- :func:`grad_cam` — Grad-CAM (Selvaraju et al. 2017) on the last convolutional block: the block's feature maps
  weighted by the spatially averaged gradient of a class logit, ReLU, upsampled (bilinear) to the scan and scaled
  to [0, 1] per scan. Written with Keras 3 ops; the gradient comes from the TensorFlow backend's tape.
- :func:`retina_mask` — a simple, documented mask of the retina in a B-scan: Gaussian smoothing (σ = 2 % of the
  side), Otsu's threshold (white padding of rotated scans excluded), a morphological closing, the largest
  connected component (the retina is one bright band), then per column everything between its first and last
  pixel, the two boundaries median-filtered over 5 % of the width; the vitreous above and the tissue below the
  choroid are background. Good enough to split energy into "retina" and "background", not a segmentation.
- :func:`saliency_summary` — per scan: the share of the perturbation's energy (squared L2) inside the mask, the
  share of the clean and adversarial saliency inside it, the mask's own area share (what a spread-out map would
  give), and the Spearman rank correlation between the clean and adversarial maps; means with a 95 % interval
  over patients (:func:`octlib.stats.cluster_bootstrap`).
"""

from __future__ import annotations

import numpy as np


def last_conv_layer(model):
    """The last layer of ``model`` with a 4-D output (batch, height, width, channels) before global pooling: the
    last convolutional block's activation in the victim CNN."""
    def spatial(layer) -> bool:
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):  # a layer not called in the functional graph
            return False
        return len(shape) == 4 and (shape[1] or 0) > 1

    candidates = [layer for layer in model.layers[1:] if spatial(layer)]
    if not candidates:
        raise ValueError(f"Model {model.name!r} has no layer with a spatial (4-D) output: Grad-CAM needs a "
                         "convolutional model.")
    return candidates[-1]


def grad_cam(model, x, class_index=None, *, layer=None, batch_size: int = 64) -> np.ndarray:
    """Grad-CAM maps of ``x`` (``(N, S, S, 1)`` in [0, 1]) for ``class_index`` (one int, or one per scan;
    ``None``: the model's predicted class), ``(N, S, S)`` float32 in [0, 1] (all zeros where no location
    raises the class logit). ``model`` outputs logits; ``layer`` defaults to :func:`last_conv_layer`."""
    import keras
    import tensorflow as tf
    from keras import ops

    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"`x` must be (N, S, S, 1) scans in [0, 1], got shape {x.shape}.")
    layer = layer if layer is not None else last_conv_layer(model)
    if isinstance(layer, str):
        layer = model.get_layer(layer)
    both = keras.Model(model.inputs, [layer.output, model.output])
    n = len(x)
    if class_index is None:
        classes = None
    else:
        classes = np.broadcast_to(np.asarray(class_index, dtype=np.int64), (n,))
        n_out = model.output.shape[-1]
        if classes.min(initial=0) < 0 or classes.max(initial=0) >= n_out:
            raise ValueError(f"`class_index` must be in 0..{n_out - 1}, got {sorted(set(classes.tolist()))}.")
    maps = np.zeros(x.shape[:3], dtype=np.float32)
    for start in range(0, n, batch_size):
        xb = tf.constant(x[start:start + batch_size])
        with tf.GradientTape() as tape:
            features, logits = both(xb, training=False)
            logits = ops.cast(logits, "float32")
            idx = ops.argmax(logits, axis=-1) if classes is None else ops.convert_to_tensor(
                classes[start:start + batch_size])
            score = ops.sum(logits * ops.one_hot(idx, logits.shape[-1]), axis=-1)
        grads = ops.cast(tape.gradient(score, features), "float32")
        weights = ops.mean(grads, axis=(1, 2), keepdims=True)
        cam = ops.relu(ops.sum(weights * ops.cast(features, "float32"), axis=-1, keepdims=True))
        cam = ops.image.resize(cam, x.shape[1:3], interpolation="bilinear")[..., 0]
        peak = ops.max(cam, axis=(1, 2), keepdims=True)
        cam = ops.where(peak > 0, cam / ops.maximum(peak, 1e-12), 0.0)
        maps[start:start + len(xb)] = ops.convert_to_numpy(ops.clip(cam, 0.0, 1.0))
    return maps


def retina_mask(images, *, sigma_fraction: float = 0.02, closing_fraction: float = 0.03,
                smooth_fraction: float = 0.05) -> np.ndarray:
    """Boolean ``(N, S, S)`` retina masks of ``images`` (``(N, S, S)`` or ``(N, S, S, 1)``, uint8 or [0, 1])."""
    from scipy.ndimage import median_filter
    from skimage import filters, measure, morphology

    imgs = np.asarray(images)
    if imgs.ndim == 4 and imgs.shape[-1] == 1:
        imgs = imgs[..., 0]
    if imgs.ndim != 3:
        raise ValueError(f"`images` must be (N, S, S) or (N, S, S, 1), got shape {np.shape(images)}.")
    imgs = imgs.astype(np.float32) / (255.0 if imgs.dtype == np.uint8 else 1.0)
    side = imgs.shape[1]
    footprint = morphology.disk(max(1, round(closing_fraction * side)))
    masks = np.zeros(imgs.shape, dtype=bool)
    for i, img in enumerate(imgs):
        smooth = filters.gaussian(img, sigma=max(0.5, sigma_fraction * side))
        # white padding (rotated or letter-boxed scans) is not tissue
        padding = morphology.dilation(img >= 0.99, footprint)
        if smooth.max() - smooth.min() < 1e-6:
            continue  # a flat image has no retina to find
        fg = (smooth > filters.threshold_otsu(smooth[~padding] if (~padding).any() else smooth)) & ~padding
        fg = morphology.closing(fg, footprint).astype(bool)
        labels = measure.label(fg)
        if labels.max() == 0:
            continue
        fg = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1  # the retina: the largest bright band
        rows = np.arange(fg.shape[0])[:, None]
        has = fg.any(axis=0)
        top = np.where(has, fg.argmax(axis=0), fg.shape[0])
        bottom = np.where(has, fg.shape[0] - 1 - fg[::-1].argmax(axis=0), -1)
        width = max(3, int(smooth_fraction * side) | 1)
        top = np.where(has, median_filter(top, size=width, mode="nearest"), top)
        bottom = np.where(has, median_filter(bottom, size=width, mode="nearest"), bottom)
        masks[i] = (rows >= top) & (rows <= bottom)
    return masks


def _share(weights: np.ndarray, mask: np.ndarray) -> np.ndarray:
    total = weights.reshape(len(weights), -1).sum(axis=1)
    inside = (weights * mask).reshape(len(weights), -1).sum(axis=1)
    return np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)


def saliency_summary(x_clean, x_adv, cam_clean, cam_adv, mask, clusters) -> dict:
    """Per-scan numbers and their means with 95 % patient-clustered intervals.

    Returns ``{"per_scan": {...}, "summary": {name: {"value", "ci_low", "ci_high", "n", "n_clusters"}}}`` for
    ``energy_in_retina`` (perturbation energy share inside the mask), ``saliency_in_retina_clean`` /
    ``_adv``, ``retina_area`` and ``rank_correlation`` (Spearman, clean vs adversarial map). Scans where a share
    is undefined (no perturbation, an all-zero map) are left out of that mean and counted in ``n``.
    """
    from scipy.stats import spearmanr

    from .stats import cluster_bootstrap

    x0 = np.asarray(x_clean, dtype=np.float64).reshape(np.shape(mask))
    x1 = np.asarray(x_adv, dtype=np.float64).reshape(np.shape(mask))
    c0, c1, m = np.asarray(cam_clean, np.float64), np.asarray(cam_adv, np.float64), np.asarray(mask, bool)
    if not (x0.shape == x1.shape == c0.shape == c1.shape == m.shape):
        raise ValueError(f"Scans, maps and masks must share one shape (N, S, S): got {x0.shape}, {x1.shape}, "
                         f"{c0.shape}, {c1.shape}, {m.shape}.")
    rho = np.array([spearmanr(a.ravel(), b.ravel()).statistic if a.std() > 0 and b.std() > 0 else np.nan
                    for a, b in zip(c0, c1)])
    per_scan = {
        "energy_in_retina": _share((x1 - x0) ** 2, m),
        "saliency_in_retina_clean": _share(c0, m),
        "saliency_in_retina_adv": _share(c1, m),
        "retina_area": m.reshape(len(m), -1).mean(axis=1),
        "rank_correlation": rho,
    }
    clusters = np.asarray(clusters)
    summary = {}
    for name, values in per_scan.items():
        ok = np.isfinite(values)
        summary[name] = cluster_bootstrap(values[ok], clusters[ok])
    return {"per_scan": {k: v.tolist() for k, v in per_scan.items()}, "summary": summary}


def randomized_copy(model, *, seed: int = 0):
    """A copy of ``model`` with the last convolution's and the logits layer's weights re-drawn (Glorot uniform
    kernels, zero biases; numpy, ``seed``) and every other weight kept: the model-randomisation test of Adebayo
    et al. (2018). A saliency method that explains the model gives different maps on this copy."""
    import keras

    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    denses = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if not convs or not denses:
        raise ValueError(f"Model {model.name!r} needs a Conv2D and a Dense layer for the randomisation test.")
    redraw = {convs[-1].name, denses[-1].name}
    copy = keras.models.clone_model(model)
    rng = np.random.default_rng(seed)
    for source, target in zip(model.layers, copy.layers):
        weights = source.get_weights()
        if source.name in redraw:
            kernel = weights[0]
            fan_in, fan_out = int(np.prod(kernel.shape[:-1])), int(kernel.shape[-1] * np.prod(kernel.shape[:-2]))
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            weights = [rng.uniform(-limit, limit, kernel.shape).astype(kernel.dtype)] + \
                      [np.zeros_like(w) for w in weights[1:]]
        target.set_weights(weights)
    return copy
