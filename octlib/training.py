"""Training the victim CNN: a ``tf.data`` pipeline from the cached arrays, B-scan-safe augmentation, class
weights, early stopping and learning-rate reduction on the **validation** split only, GPU awareness.

Use :func:`octlib.artifacts.get_or_train` from notebooks: it trains through :func:`train` only when no matching
cached model exists.
"""

from __future__ import annotations

import time

import numpy as np

from .config import TrainConfig
from .labels import CLASSES
from .threat import to_unit


def describe_devices() -> dict:
    """Which devices TensorFlow will use: ``{"gpus": [...], "device": "GPU: name" | "CPU", "strategy": ...}``."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    names = []
    for g in gpus:
        try:
            names.append(tf.config.experimental.get_device_details(g).get("device_name", g.name))
        except Exception:  # noqa: BLE001 - details are optional
            names.append(g.name)
    strategy = "MirroredStrategy" if len(gpus) > 1 else "default"
    return {"gpus": names, "device": f"GPU: {', '.join(names)}" if names else "CPU",
            "strategy": strategy, "cpu_threads": tf.config.threading.get_inter_op_parallelism_threads() or None}


def _strategy_name(strategy) -> str:
    import tensorflow as tf

    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return "default"
    return type(strategy).__name__


def augmentation(kind: str, seed: int | None = None):
    """The augmentation model for ``kind`` (``none``/``standard``/``standard+blur``; see :class:`TrainConfig`),
    or ``None``. Only plausible B-scan changes: left-right flip (the other eye), small shifts, zoom (wider in
    width: scan widths differ between releases), contrast; never a vertical flip (the retina has an up)."""
    import keras

    if kind == "none":
        return None
    L = keras.layers
    parts = [
        L.RandomFlip("horizontal", seed=seed),
        L.RandomTranslation(0.05, 0.05, fill_mode="constant", seed=seed),
        L.RandomZoom(height_factor=(-0.1, 0.1), width_factor=(-0.25, 0.25), fill_mode="constant", seed=seed),
        L.RandomContrast(0.2, seed=seed),
    ]
    if kind == "standard+blur":
        parts += [L.RandomGaussianBlur(factor=(0.0, 1.0), kernel_size=3, sigma=1.0, seed=seed),
                  L.GaussianNoise(0.03, seed=seed)]
    return keras.Sequential(parts, name=f"augment_{kind.replace('+', '_')}")


def make_dataset(images: np.ndarray, labels: np.ndarray | None, *, batch_size: int, training: bool = False,
                 augment: str = "none", seed: int = 0, noise_sigma: float = 0.0, noise_fraction: float = 1.0):
    """A ``tf.data.Dataset`` of ``(x, y)`` batches from cached ``uint8`` ``(N, S, S)`` images.

    Pixels are converted to float32 [0, 1] per batch (the uint8 arrays stay the only copy in memory). Training
    datasets are shuffled each epoch (seeded) and augmented (seeded, in a deterministic order); augmented pixels
    are clipped back to [0, 1]. With ``noise_sigma`` > 0, training scans then get Gaussian noise N(0, σ²), not
    clipped (the noise randomized smoothing classifies under): every scan, or with ``noise_fraction`` < 1 each scan
    with that probability (drawn afresh every epoch, seeded), the rest clean.
    """
    import tensorflow as tf

    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"`images` must be uint8 (N, S, S) as cached by octlib.data, got {images.dtype} "
                         f"{images.shape}.")
    parts = (images,) if labels is None else (images, np.asarray(labels, dtype=np.int64))
    ds = tf.data.Dataset.from_tensor_slices(parts)
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def to_float(x, *y):
        x = tf.cast(x, tf.float32)[..., None] / 255.0
        return (x, *y) if y else x

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    aug = augmentation(augment, seed) if training else None
    if aug is not None:
        # Sequential on purpose: Keras' random layers draw from a stateful seed generator, and in a parallel map
        # the order of draws follows thread scheduling, which made two runs with one seed train different models.
        ds = ds.map(lambda x, *y: _with(tf.clip_by_value(aug(x, training=True), 0.0, 1.0), y))
    if training and noise_sigma > 0:
        import keras

        noise = keras.layers.GaussianNoise(noise_sigma, seed=seed)
        if noise_fraction >= 1:
            ds = ds.map(lambda x, *y: _with(noise(x, training=True), y))  # sequential, as above
        else:
            pick = keras.random.SeedGenerator(seed + 1)

            def mixed(x, *y):
                noisy = keras.random.uniform(tf.shape(x)[:1], seed=pick) < noise_fraction
                return _with(tf.where(noisy[:, None, None, None], noise(x, training=True), x), y)

            ds = ds.map(mixed)  # sequential, as above
    return ds.prefetch(tf.data.AUTOTUNE)


def _with(x, y: tuple):
    """``(x, *y)`` for a labelled dataset, ``x`` alone for an unlabelled one."""
    return (x, *y) if y else x


def _wrapper_class():
    """A Keras model that wraps ``inner`` and shares its weights: subclasses change how it trains or validates."""
    import keras

    class Wrapper(keras.Model):
        def __init__(self, inner, **kwargs):
            super().__init__(**kwargs)
            self.inner = inner

        def call(self, x, training=False):
            return self.inner(x, training=training)

    return Wrapper


def _optimizer_step(model, tape, loss, y, y_pred, sample_weight) -> dict:
    """One optimizer step of a wrapper's ``train_step`` on ``loss`` (recorded on ``tape``), then its metrics: the
    loss as given, the others on ``(y, y_pred)``."""
    grads = tape.gradient(loss, model.trainable_variables)
    model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
    for metric in model.metrics:
        if metric.name == "loss":
            metric.update_state(loss)
        else:
            metric.update_state(y, y_pred, sample_weight=sample_weight)
    return {m.name: m.result() for m in model.metrics}


def adversarial_trainer(model, eps: float, steps: int, *, validate_adversarial: bool = False):
    """Wrap ``model`` so that ``fit`` trains on L-infinity PGD adversarial examples (Madry et al. 2018).

    Each training batch is replaced by PGD with a random start in the ε-ball, ``steps`` sign-gradient steps of
    2.5 ε / steps on the cross-entropy, computed with the model in inference mode, then one optimizer step on the
    adversarial batch (one step: FGSM-RS, Wong et al. 2020). With ``validate_adversarial`` the validation batches
    are attacked the same way, so ``val_accuracy`` is the robust validation accuracy that selects the epoch;
    otherwise evaluation stays on clean scans. The wrapper shares its weights with ``model``; save ``model``,
    not the wrapper. ε is in [0, 1] pixel units.
    """
    import keras
    import tensorflow as tf

    from .attacks import pgd_linf_steps

    if not 0 < eps <= 1 or steps < 1:
        raise ValueError(f"adversarial training needs 0 < eps <= 1 (pixel units) and steps >= 1, got {eps}, {steps}.")
    step_size = 2.5 * eps / steps

    class PGDAdversarialTraining(_wrapper_class()):
        def attack(self, x, y):
            """The PGD examples a batch is replaced by: a random start in the ε-ball, then the attacks' PGD steps
            (:func:`octlib.attacks.pgd_linf_steps`)."""
            start = tf.clip_by_value(x + tf.random.uniform(tf.shape(x), -eps, eps), 0.0, 1.0)
            return pgd_linf_steps(self.inner, x, y, start, eps, steps, step_size)

        def test_step(self, data):
            if not validate_adversarial:
                return super().test_step(data)
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            return super().test_step((self.attack(x, y), y, sample_weight))

        def train_step(self, data):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            x_adv = self.attack(x, y)
            with tf.GradientTape() as tape:
                y_pred = self(x_adv, training=True)
                loss = self.compute_loss(x=x_adv, y=y, y_pred=y_pred, sample_weight=sample_weight)
            return _optimizer_step(self, tape, loss, y, y_pred, sample_weight)

    return PGDAdversarialTraining(model, name=f"{model.name}_pgd_at")


def trades_trainer(model, eps: float, steps: int, beta: float, *, validate_adversarial: bool = False):
    """Wrap ``model`` so that ``fit`` trains with TRADES (Zhang et al. 2019, "Theoretically Principled Trade-off
    between Robustness and Accuracy", ICML; ART ships it for PyTorch only).

    Per batch: the clean probabilities p = softmax(f(x)) with the model in inference mode; the adversarial batch x'
    from x + 0.001·N(0, 1) by ``steps`` sign-gradient ascents of 2.5 ε / steps on KL(p ‖ softmax(f(x'))) in the
    ε-ball (:func:`octlib.attacks.pgd_linf_steps` with ``loss="kl"``; the PGD adversarial trainer's step size, so
    the two spend the same gradients per batch); then one optimizer step on the model's own loss on the **clean**
    batch plus ``beta`` × the batch-mean KL(softmax(f(x)) ‖ softmax(f(x'))), both forward passes in training mode.
    β trades clean accuracy for robustness (Zhang et al. use 6 on CIFAR-10); with β = 0 it is clean training on the
    same batches (tested). Metrics are the clean batch's. ``validate_adversarial`` attacks the validation batches
    with the cross-entropy PGD of :func:`adversarial_trainer` (the same robust selection for both trainers). The
    wrapper shares its weights with ``model``; save ``model``. ε is in [0, 1] pixel units."""
    import keras
    import tensorflow as tf

    from .attacks import pgd_linf_steps

    if not 0 < eps <= 1 or steps < 1 or not beta >= 0:
        raise ValueError(f"TRADES needs 0 < eps <= 1 (pixel units), steps >= 1 and beta >= 0, got {eps}, {steps}, "
                         f"{beta}.")
    step_size = 2.5 * eps / steps
    validation = adversarial_trainer(model, eps, steps)

    class TRADES(_wrapper_class()):
        def attack(self, x):
            """TRADES' adversarial batch for clean batch ``x``: the KL ascent from a small Gaussian start."""
            clean = tf.stop_gradient(tf.nn.softmax(tf.cast(self.inner(x, training=False), tf.float32)))
            start = tf.clip_by_value(x + 0.001 * tf.random.normal(tf.shape(x)), 0.0, 1.0)
            return pgd_linf_steps(self.inner, x, clean, start, eps, steps, step_size, loss="kl")

        def test_step(self, data):
            if not validate_adversarial:
                return super().test_step(data)
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            return super().test_step((validation.attack(x, y), y, sample_weight))

        def train_step(self, data):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            x_adv = self.attack(x)
            with tf.GradientTape() as tape:
                y_pred = self(x, training=True)
                adv_pred = self(x_adv, training=True)
                natural = self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
                kl = tf.reduce_mean(keras.losses.kl_divergence(tf.nn.softmax(tf.cast(y_pred, tf.float32)),
                                                               tf.nn.softmax(tf.cast(adv_pred, tf.float32))))
                loss = natural + tf.cast(beta, natural.dtype) * tf.cast(kl, natural.dtype)
            return _optimizer_step(self, tape, loss, y, y_pred, sample_weight)

    return TRADES(model, name=f"{model.name}_trades")


def noisy_validator(model, sigma: float, seed: int = 0, *, with_clean: bool = False):
    """Wrap ``model`` so that validation scans get the training noise N(0, σ²) (not clipped), and the epoch is
    selected on how the model does under the noise it will be used with; training is the model's own. With
    ``with_clean`` every validation batch is also scored clean, so the validation loss and accuracy are the means
    over the clean and the noisy copies (a model trained on a clean/noisy mix is chosen on both)."""
    import keras

    noise = keras.layers.GaussianNoise(sigma, seed=seed)

    class NoisyValidation(_wrapper_class()):
        def test_step(self, data):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            if with_clean:
                super().test_step((x, y, sample_weight))  # the metrics accumulate over both copies
            return super().test_step((noise(x, training=True), y, sample_weight))

    return NoisyValidation(model, name=f"{model.name}_noisy_val")


def _LearningRateLog():
    """A callback that writes the optimizer's current learning rate into each epoch's logs (and so the
    history), as ``ReduceLROnPlateau`` does, for a scheduled learning rate."""
    import keras

    class LearningRateLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    return LearningRateLog()


def class_weights(labels: np.ndarray, mode: str = "balanced") -> dict[int, float] | None:
    """``{class: n / (k * n_class)}`` for ``balanced`` (classes absent from ``labels`` get 1.0); ``None`` for
    ``none``."""
    if mode == "none":
        return None
    counts = np.bincount(np.asarray(labels), minlength=len(CLASSES)).astype(float)
    present = counts > 0
    w = np.ones(len(CLASSES))
    w[present] = counts.sum() / (present.sum() * counts[present])
    return {k: float(v) for k, v in enumerate(w)}


def compile_model(model, cfg: TrainConfig, steps_per_epoch: int | None = None):
    """AdamW + cross-entropy on logits (with ``cfg.label_smoothing``) + accuracy. With ``cfg.lr_schedule ==
    "cosine"`` the learning rate decays from ``cfg.learning_rate`` to 1% of it over ``cfg.epochs`` epochs of
    ``steps_per_epoch`` steps (required then)."""
    import keras

    lr = cfg.learning_rate
    if cfg.lr_schedule == "cosine":
        if not steps_per_epoch:
            raise ValueError("A cosine learning-rate schedule needs `steps_per_epoch` (batches per epoch).")
        lr = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=cfg.epochs * steps_per_epoch,
                                                    alpha=0.01)
    model.compile(
        optimizer=keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=cfg.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return model


def _one_hot(ds, n_classes: int):
    import tensorflow as tf

    return ds.map(lambda x, y: (x, tf.one_hot(y, n_classes)), num_parallel_calls=tf.data.AUTOTUNE)


def train(train_images, train_labels, val_images, val_labels, cfg: TrainConfig, *, image_size: int,
          seed: int = 0, verbose: int = 2, mixed_precision: bool | None = None, strategy=None, initial=None):
    """Build and train the CNN; model selection and LR schedule look at the validation split only.

    Returns ``(model, info)`` with ``info = {"history", "epochs_run", "best_epoch", "train_seconds",
    "images_per_second", "device", "mixed_precision"}``. On a GPU, float16 compute is used when
    ``cfg.mixed_precision`` (the logits layer stays float32), and ``MirroredStrategy`` spreads the batch over
    several GPUs. ``mixed_precision`` (``None``: that rule) and ``strategy`` (a ``tf.distribute.Strategy``;
    ``None``: that rule) override the choice, which is how the GPU paths are tested on CPU (``mixed_float16`` on
    the CPU, ``MirroredStrategy`` over logical CPU devices); ``info["device"]["strategy"]`` names the one used.
    ``initial``: a Keras model of the same architecture whose weights (batch-norm statistics included) the training
    starts from (fine-tuning), instead of a fresh initialisation.
    """
    import keras
    import tensorflow as tf

    from .models import build_cnn

    keras.utils.set_random_seed(seed)
    devices = describe_devices()
    use_mp = bool(cfg.mixed_precision and devices["gpus"]) if mixed_precision is None else bool(mixed_precision)
    previous_policy = keras.mixed_precision.global_policy().name
    if use_mp:
        keras.mixed_precision.set_global_policy("mixed_float16")
    if strategy is None:
        strategy = tf.distribute.MirroredStrategy() if len(devices["gpus"]) > 1 else tf.distribute.get_strategy()
    devices["strategy"] = _strategy_name(strategy)
    devices["replicas"] = int(strategy.num_replicas_in_sync)
    try:
        with strategy.scope():
            model = build_cnn(image_size, cfg)
            if initial is not None:
                try:
                    model.set_weights(initial.get_weights())
                except ValueError as exc:
                    raise ValueError(f"`initial` must have this recipe's architecture to fine-tune from: {exc}") from None
            fitted = model
            if cfg.adv_eps_255 and cfg.trades_beta:
                fitted = trades_trainer(model, to_unit(cfg.adv_eps_255), cfg.adv_steps, cfg.trades_beta,
                                        validate_adversarial=cfg.validate_under_threat)
            elif cfg.adv_eps_255:
                fitted = adversarial_trainer(model, to_unit(cfg.adv_eps_255), cfg.adv_steps,
                                             validate_adversarial=cfg.validate_under_threat)
            elif cfg.noise_sigma and cfg.validate_under_threat:
                fitted = noisy_validator(model, cfg.noise_sigma, seed=seed, with_clean=cfg.noise_fraction < 1)
            compile_model(fitted, cfg, steps_per_epoch=-(-len(train_images) // cfg.batch_size))
        n_classes = len(CLASSES)
        train_ds = _one_hot(make_dataset(train_images, train_labels, batch_size=cfg.batch_size, training=True,
                                         augment=cfg.augment, seed=seed, noise_sigma=cfg.noise_sigma,
                                         noise_fraction=cfg.noise_fraction), n_classes)
        val_ds = _one_hot(make_dataset(val_images, val_labels, batch_size=256), n_classes)
        # Adversarial training validated under attack selects on robust validation accuracy; everything else on
        # (clean, or noisy for validated noise training) validation loss.
        robust_selection = bool(cfg.adv_eps_255 and cfg.validate_under_threat)
        callbacks = [
            keras.callbacks.EarlyStopping(monitor="val_accuracy" if robust_selection else "val_loss",
                                          mode="max" if robust_selection else "min",
                                          patience=cfg.early_stopping_patience if cfg.lr_schedule == "plateau"
                                          else cfg.epochs, restore_best_weights=True),
        ]
        if cfg.lr_schedule == "plateau":
            callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                               patience=cfg.reduce_lr_patience, min_lr=1e-5))
        else:
            callbacks.append(_LearningRateLog())
        t0 = time.perf_counter()
        hist = fitted.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=callbacks,
                         class_weight=class_weights(train_labels, cfg.class_weight), shuffle=False,
                         verbose=verbose)  # the dataset shuffles itself
        seconds = time.perf_counter() - t0
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    epochs_run = len(history["loss"])
    return model, {
        "history": history, "epochs_run": epochs_run,
        "best_epoch": (int(np.argmax(history["val_accuracy"])) if robust_selection
                       else int(np.argmin(history["val_loss"]))) + 1,
        "selected_on": ("robust validation accuracy" if robust_selection else
                        "noisy validation loss" if cfg.noise_sigma and cfg.validate_under_threat
                        else "validation loss"),
        "train_seconds": round(seconds, 2),
        "images_per_second": round(epochs_run * len(train_images) / seconds, 1),
        "device": devices, "mixed_precision": use_mp,
    }
