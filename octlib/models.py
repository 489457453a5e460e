"""The victim CNN for one-channel OCT B-scans.

The model outputs **logits**, not probabilities: attack code needs them (DeepFool and C&W work on the logit
margins, APGD-DLR on the logit differences, and a softmax output makes DeepFool overshoot badly; see
../shared/REFERENCE.md). Probabilities are ``octlib.metrics.softmax(logits)`` or a softmax layer on top where an
API wants them. The input is a float32 ``(S, S, 1)`` scan in [0, 1]: every attack clips to that range.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from .config import TrainConfig, split_arch
from .labels import CLASSES


@keras.saving.register_keras_serializable(package="octlib")
class PerImageStandardization(layers.Layer):
    """Standardise each image to mean 0 and standard deviation 1 (over all its pixels).

    Inside the model, so the model's input stays in [0, 1] and gradients flow through it to the pixels.
    """

    def __init__(self, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, x):
        axes = tuple(range(1, len(x.shape)))
        mean = ops.mean(x, axis=axes, keepdims=True)
        std = ops.std(x, axis=axes, keepdims=True)
        return (x - mean) / (std + self.epsilon)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def _input(image_size: int, cfg: TrainConfig, work_size: int | None = None):
    """The scan input, resized to ``work_size`` pixels when that differs from ``image_size`` (bilinear with
    antialiasing, inside the model: it still takes, and its input gradients are about, the scan at its own size),
    and, with ``cfg.input_norm == "per_image"``, its standardisation; checks that the image survives one halving
    per block of ``cfg.filters``."""
    size = image_size if work_size is None else int(work_size)
    if size > image_size:
        raise ValueError(f"work_size {size} is larger than the input ({image_size} px): a model may work at a "
                         "smaller size than its scans, not a larger one.")
    if size < 2 ** len(cfg.filters):
        raise ValueError(f"image_size {size} is too small for {len(cfg.filters)} downsampling blocks "
                         f"(needs >= {2 ** len(cfg.filters)}); use fewer `filters` or a larger image.")
    inputs = keras.Input((image_size, image_size, 1), name="scan")
    h = inputs
    if size != image_size:
        h = layers.Resizing(size, size, interpolation="bilinear", antialias=True, name="work_size")(h)
    return inputs, PerImageStandardization(name="standardize")(h) if cfg.input_norm == "per_image" else h


def build_cnn(image_size: int, cfg: TrainConfig | None = None, *, n_classes: int = len(CLASSES),
              name: str = "oct_cnn", work_size: int | None = None) -> keras.Model:
    """A compact CNN that maps ``(image_size, image_size, 1)`` scans in [0, 1] to ``n_classes`` logits.

    Blocks of [3x3 conv (no bias) -> batch norm -> ReLU] x ``cfg.convs_per_block`` -> 2x2 max-pool, one block per
    entry of ``cfg.filters``; then global average pooling, dropout, an optional hidden dense layer, and a linear
    dense layer of logits (float32 even under mixed precision). L2 weight decay comes from the optimizer (AdamW).
    ``work_size``: the pixels the network works at (see :func:`_input`; ``None``: ``image_size``).
    """
    cfg = cfg or TrainConfig()
    inputs, h = _input(image_size, cfg, work_size)
    for b, f in enumerate(cfg.filters):
        for c in range(cfg.convs_per_block):
            h = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"block{b}_conv{c}")(h)
            h = layers.BatchNormalization(momentum=0.9, name=f"block{b}_bn{c}")(h)  # few steps per epoch
            h = layers.ReLU(name=f"block{b}_relu{c}")(h)
        h = layers.MaxPooling2D(name=f"block{b}_pool")(h)
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    h = layers.Dropout(cfg.dropout, name="dropout")(h)
    if cfg.dense_units:
        h = layers.Dense(cfg.dense_units, activation="relu", name="hidden")(h)
        h = layers.Dropout(cfg.dropout, name="dropout_hidden")(h)
    logits = layers.Dense(n_classes, dtype="float32", name="logits")(h)
    return keras.Model(inputs, logits, name=name)


def build_separable_cnn(image_size: int, cfg: TrainConfig | None = None, *, n_classes: int = len(CLASSES),
                        name: str = "oct_separable_cnn", work_size: int | None = None) -> keras.Model:
    """A different family from :func:`build_cnn`, for thieves: a stem conv, then depthwise-separable conv blocks
    (MobileNet-style, ~5-10x fewer weights) with batch norm and stride-2 downsampling, global pooling, logits.

    Uses ``cfg.filters`` (block widths), ``cfg.dropout`` and ``cfg.input_norm``; no hidden dense layer.
    ``work_size`` as in :func:`build_cnn`.
    """
    cfg = cfg or TrainConfig()
    inputs, h = _input(image_size, cfg, work_size)
    h = layers.Conv2D(cfg.filters[0] // 2, 3, padding="same", use_bias=False, name="stem_conv")(h)
    h = layers.ReLU(name="stem_relu")(layers.BatchNormalization(momentum=0.9, name="stem_bn")(h))
    for b, f in enumerate(cfg.filters):
        h = layers.SeparableConv2D(f, 3, strides=2, padding="same", use_bias=False, name=f"sep{b}_conv")(h)
        h = layers.ReLU(name=f"sep{b}_relu")(layers.BatchNormalization(momentum=0.9, name=f"sep{b}_bn")(h))
    h = layers.GlobalAveragePooling2D(name="gap")(h)
    h = layers.Dropout(cfg.dropout, name="dropout")(h)
    logits = layers.Dense(n_classes, dtype="float32", name="logits")(h)
    return keras.Model(inputs, logits, name=name)


def build_model(arch: str, image_size: int, cfg: TrainConfig | None = None, **kwargs) -> keras.Model:
    """``victim``: :func:`build_cnn`; ``separable``: :func:`build_separable_cnn`; either with ``@<pixels>``, the
    size it works at (``separable@64``: see :func:`octlib.config.split_arch`)."""
    family, work_size = split_arch(arch)
    builders = {"victim": build_cnn, "separable": build_separable_cnn}
    return builders[family](image_size, cfg, work_size=work_size, **kwargs)


def _float32_config(config):
    """A copy of a Keras config with every layer's dtype policy set to float32."""
    if isinstance(config, dict):
        out = {}
        for k, v in config.items():
            if k == "dtype" and v is not None and not isinstance(v, (int, float)):
                out[k] = "float32"
            else:
                out[k] = _float32_config(v)
        return out
    if isinstance(config, list):
        return [_float32_config(v) for v in config]
    return config


def float32_model(model: keras.Model) -> keras.Model:
    """The model itself when it computes in float32; otherwise (e.g. trained under ``mixed_float16`` on a GPU) a
    float32 clone with the same weights, so that attacks backpropagate in float32: input gradients of a float16
    model can underflow to zero, which looks like robustness (masked gradients)."""
    if all(getattr(layer.dtype_policy, "compute_dtype", "float32") == "float32" for layer in model.layers):
        return model
    clone = model.__class__.from_config(_float32_config(model.get_config()))
    clone.set_weights([w.astype("float32") if hasattr(w, "astype") else w for w in model.get_weights()])
    return clone
