"""Every ART estimator octlib builds, in one place: the classifiers that attacks differentiate, the randomized
classifiers they attack with EOT, the victim as a client queries it, and the thieves.

* :func:`fast_classifier_class`: ART's ``TensorFlowV2Classifier`` with a traced loss gradient and a traced
  all-class gradient (same results, measured several times faster); every classifier below derives from it.
* :func:`art_classifier`: a Keras **logits** model on [0, 1] scans, differentiating the cross-entropy or the logit
  margin, with optional ART pre- and post-processors (BPDA through non-differentiable pre-processors).
* :func:`noise_classifier`: the model behind Gaussian input noise, K noisy copies per scan; its gradient is EOT on
  the log of the averaged softmax. :func:`smoothed_classifier`: ART's randomized smoothing (Cohen et al. 2019).
* :func:`victim_api`: the victim behind a query-only API answering probabilities (:class:`Softmax`) or labels
  (:class:`LabelOnly`), with further post-processors (:mod:`octlib.defences`), counting queries
  (:func:`query_counting_class`). :func:`thief_classifier_class`: a thief's classifier with a batched ``fit``.
  :func:`detector_classifier`: the two-class network of ART's binary input detector.
* :func:`check_xy`: the check every attack and evaluation makes of its scans and labels.

ART and TensorFlow are imported when a classifier is first built (the ``*_class`` factories), not when octlib is
imported: ``python -m octlib data`` and the results store run without TensorFlow's start-up (3-5 s, ~750 MB).
"""

from __future__ import annotations

import contextlib
import hashlib

import numpy as np
from art.defences.postprocessor import Postprocessor

from .labels import CLASSES


def check_xy(x, y):
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[-1] != 1:
        raise ValueError(f"`x` must be (N, S, S, 1) float32 scans, got shape {x.shape}.")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"`x` must lie in [0, 1], got [{x.min():.3f}, {x.max():.3f}].")
    y = np.asarray(y).astype(np.int64).reshape(-1)
    if len(y) != len(x):
        raise ValueError(f"`y` has {len(y)} labels for {len(x)} images.")
    return x, y


def _identity_preprocessing(classifier) -> bool:
    """True when the classifier's preprocessing does nothing (ART adds a mean-0/std-1 standardisation by default)."""
    for op in classifier.preprocessing_operations:
        mean, std = getattr(op, "mean", None), getattr(op, "std", None)
        if type(op).__name__.startswith("StandardisationMeanStd") and np.all(mean == 0) and np.all(std == 1):
            continue
        return False
    return True


def fast_classifier_class():
    """ART's ``TensorFlowV2Classifier`` with a traced all-class gradient (see :func:`art_classifier`)."""
    import tensorflow as tf
    from art.estimators.classification import TensorFlowV2Classifier

    class FastGradTensorFlowV2Classifier(TensorFlowV2Classifier):
        """``class_gradient(x)`` for all classes in one traced forward pass with one gradient per class, and a
        traced ``loss_gradient``.

        ART's own versions run eagerly: ``class_gradient`` runs the model once per class inside a persistent tape
        (most of DeepFool's cost), and ``loss_gradient`` pays Python overhead on every PGD step. The results are the
        same (tested); single-label and per-sample-label requests, training mode and classifiers with
        preprocessing (e.g. EOT defences) use ART's implementation unchanged.
        """

        def predict(self, x, batch_size: int = 128, training_mode: bool = False, **kwargs):
            """ART's ``predict`` (pre-processing, forward pass, post-processing, each as ART does them) with the
            forward pass in batches of ``batch_size``: ART 1.20.1 runs it on every scan at once, whatever
            ``batch_size`` says, which at 128 px holds about 3 MB of activations per scan (5,000 queries: over
            15 GB, measured)."""
            x_pre, _ = self._apply_preprocessing(x, y=None, fit=False)
            size = max(1, int(batch_size))
            if len(x_pre) <= size:
                preds = self._forward_pass(self._model, x_pre, training=training_mode).numpy()
            else:
                preds = np.concatenate([self._forward_pass(self._model, x_pre[i:i + size], training=training_mode)
                                        .numpy() for i in range(0, len(x_pre), size)])
            return self._apply_postprocessing(preds=preds, fit=False)

        def loss_gradient(self, x, y, training_mode=False, **kwargs):
            if training_mode or not _identity_preprocessing(self) or self._reduce_labels:
                return super().loss_gradient(x, y, training_mode=training_mode, **kwargs)
            if not hasattr(self, "_octlib_loss_gradient"):
                model, loss_object = self.model, self._loss_object
                # one trace for every batch size (a signature with no fixed batch; no autograph: no control flow)
                spec = (tf.TensorSpec((None, *np.shape(x)[1:]), tf.float32),
                        tf.TensorSpec((None, *np.shape(y)[1:]), tf.float32))

                @tf.function(input_signature=spec, autograph=False)
                def loss_gradient(xt, yt):
                    with tf.GradientTape() as tape:
                        tape.watch(xt)
                        loss = loss_object(yt, model(xt, training=False))
                    return tape.gradient(loss, xt)

                self._octlib_loss_gradient = loss_gradient
            grad = self._octlib_loss_gradient(tf.convert_to_tensor(x, dtype=tf.float32),
                                              tf.convert_to_tensor(y, dtype=tf.float32))
            return grad.numpy() if isinstance(x, np.ndarray) else grad  # ART's TF attacks pass tensors

        def class_gradient(self, x, label=None, training_mode=False, **kwargs):
            if label is not None or training_mode or not _identity_preprocessing(self):
                return super().class_gradient(x, label=label, training_mode=training_mode, **kwargs)
            if not hasattr(self, "_octlib_jacobian"):
                model, n = self.model, self.nb_classes

                @tf.function(input_signature=(tf.TensorSpec((None, *np.shape(x)[1:]), tf.float32),), autograph=False)
                def jacobian(xt):
                    with tf.GradientTape(persistent=True) as tape:
                        tape.watch(xt)
                        logits = model(xt, training=False)
                        outs = [tf.reduce_sum(logits[:, k]) for k in range(n)]
                    return tf.stack([tape.gradient(o, xt) for o in outs], axis=1)

                self._octlib_jacobian = jacobian
            return self._octlib_jacobian(tf.convert_to_tensor(x, dtype=tf.float32)).numpy()

    return FastGradTensorFlowV2Classifier


LOSSES = ("cross_entropy", "margin")


def _logit_margin_loss():
    import keras
    from keras import ops

    class LogitMargin(keras.losses.Loss):
        """Best wrong logit minus the true logit, averaged (Carlini & Wagner's margin, without the κ cap).

        Ascending it pushes some wrong class above the true one whatever the logits' scale, so it still works
        where a softened or saturated cross-entropy gives tiny gradients (the usual sign of gradient masking).
        """

        def __init__(self, name: str = "logit_margin", **kwargs):
            super().__init__(name=name, **kwargs)

        def call(self, y_true, y_pred):
            y_true = ops.cast(y_true, y_pred.dtype)
            true_logit = ops.sum(y_true * y_pred, axis=-1)
            best_other = ops.max(y_pred - 1e9 * y_true, axis=-1)
            return best_other - true_logit

    return LogitMargin()


def art_classifier(model, *, loss: str = "cross_entropy", clip_values=(0.0, 1.0), postprocessors=(),
                   preprocessors=()):
    """Wrap a Keras **logits** model as ART's ``TensorFlowV2Classifier`` on [0, 1] inputs.

    Args:
        loss: what ``loss_gradient`` differentiates, and so what FGSM / PGD ascend: ``cross_entropy`` (from
            logits) or ``margin`` (best wrong logit minus true logit, :func:`_logit_margin_loss`).
        postprocessors: ART post-processors applied to ``predict`` only (see :mod:`octlib.defences`); gradients
            never see them.
        preprocessors: ART pre-processors applied before the model in every call; non-differentiable ones pass
            gradients through unchanged (BPDA), e.g. :func:`octlib.corruptions.storage_preprocessor` for an
            attacker who knows how scans are stored.

    The returned classifier computes all-class gradients in one traced pass (DeepFool's main cost); everything
    else is ART's ``TensorFlowV2Classifier``.
    """
    import keras

    if loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {LOSSES}, got {loss!r}.")
    loss_object = (keras.losses.CategoricalCrossentropy(from_logits=True) if loss == "cross_entropy"
                   else _logit_margin_loss())
    return fast_classifier_class()(
        model=model, nb_classes=len(CLASSES), input_shape=tuple(model.input_shape[1:]), loss_object=loss_object,
        clip_values=clip_values, postprocessing_defences=list(postprocessors) or None,
        preprocessing_defences=list(preprocessors) or None)


def loss_name(classifier) -> str:
    return "margin" if type(classifier.loss_object).__name__ == "LogitMargin" else "cross_entropy"


#: Traced forward/EOT-gradient functions of :func:`noise_classifier`, per (model, samples, loss), and
#: :func:`traced_softmax`, per model. It holds the few models a notebook attacks for the life of the process.
_TRACED: dict = {}


def _noise_functions(model, samples: int, loss: str):
    """The traced mean-softmax over ``samples`` noisy copies and the EOT gradient of the loss of that mean (the
    defence's own answer: Athalye et al. 2018; Salman et al. 2019)."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def mean_softmax(xt, noise):
        logits = model(tf.repeat(xt, samples, axis=0) + noise, training=False)
        return tf.reduce_mean(tf.reshape(tf.nn.softmax(logits), (-1, samples, logits.shape[-1])), axis=1)

    @tf.function(reduce_retracing=True)
    def eot_gradient(xt, yt, noise):
        with tf.GradientTape() as tape:
            tape.watch(xt)
            logits = model(tf.repeat(xt, samples, axis=0) + noise, training=False)
            probs = tf.reduce_mean(tf.reshape(tf.nn.softmax(logits), (-1, samples, logits.shape[-1])), axis=1)
            log_mean = tf.math.log(tf.maximum(probs, 1e-12))  # what the defence answers, as logits
            if loss == "margin":
                per_scan = tf.reduce_max(log_mean - 1e9 * yt, axis=-1) - tf.reduce_sum(yt * log_mean, axis=-1)
            else:
                per_scan = -tf.reduce_sum(yt * log_mean, axis=-1)
            total = tf.reduce_mean(per_scan)
        return tape.gradient(total, xt)

    return mean_softmax, eot_gradient


def traced_softmax(model):
    """``x -> softmax(model(x))`` traced once per model (any batch size) and kept for the life of the process,
    e.g. for :class:`octlib.defences.ExpectedNoiseAnswer`'s many noisy copies."""
    key = (id(model), "softmax")
    if key not in _TRACED:
        import tensorflow as tf

        _TRACED[key] = tf.function(lambda xt: tf.nn.softmax(model(xt, training=False)), reduce_retracing=True)
    return _TRACED[key]


def noise_classifier(model, sigma: float, samples: int = 1, *, seed: int = 0, loss: str = "cross_entropy"):
    """The model behind **Gaussian input noise**, as an ART classifier: each scan is classified as ``samples``
    noisy copies ``x + N(0, σ²)``, with fresh noise on every call (seeded once, here). The copies are not clipped
    to [0, 1], like the training noise (:class:`octlib.config.TrainConfig` ``noise_sigma``) and randomized
    smoothing: clipping would brighten the dark background of a B-scan (zero-mean noise cut at 0).

    ``predict`` returns the log of the mean softmax over the copies (use it as logits: its argmax is the
    defended answer). ``loss_gradient`` differentiates the cross-entropy of that log mean softmax over the
    ``samples`` copies, i.e. the loss of what the defence answers (batch-mean, like ART's): with ``samples=1``
    that is the *plain* attack's view (the gradient through one noise draw), with ``samples`` = K or more it is
    **EOT** (Athalye et al. 2018) in the form Salman et al. 2019 use against smoothed classifiers (the log of the
    averaged softmax, not the average of per-copy cross-entropies, whose minimiser need not change the answer).

    Why not ART's ``EoTGaussianNoiseTensorFlow``: in ART 1.20.1 with TensorFlow 2.21 its ``forward`` indexes a
    tensor with ``x[[i]]``, which TensorFlow reads as ``x[i]``, and fails (tests/test_defences.py keeps checking);
    it also draws σ uniformly from [0, σ] unless given a pair, and clips the copies.

    ``loss="margin"`` differentiates the margin of the log mean softmax (best wrong minus true class) instead of
    its cross-entropy: the EOT form of :func:`octlib.estimators.art_classifier`'s margin loss.

    Fresh noise on every call is how the defence behaves for a client, and how an attacker's queries and
    gradients see it. The evaluation scores the defence by its answer in expectation instead
    (:class:`ExpectedNoiseAnswer`), a deterministic function of the scan.
    """
    import keras
    import tensorflow as tf

    if not sigma > 0 or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"`sigma` must be > 0 and `samples` an integer >= 1, got {sigma!r}, {samples!r}.")
    if loss not in ("cross_entropy", "margin"):
        raise ValueError(f"`loss` must be 'cross_entropy' or 'margin', got {loss!r}.")
    rng = np.random.default_rng(seed)
    loss_object = keras.losses.CategoricalCrossentropy(from_logits=True)

    def copies(x):
        rep = np.repeat(np.asarray(x, dtype=np.float32), samples, axis=0)
        return rep, rng.standard_normal(rep.shape).astype(np.float32) * np.float32(sigma)

    key = (id(model), samples, loss)
    if key not in _TRACED:  # traced once per model and setting; later classifiers reuse it (no retracing)
        _TRACED[key] = _noise_functions(model, samples, loss)
    mean_softmax, eot_gradient = _TRACED[key]

    class NoisyClassifier(fast_classifier_class()):
        """Classifies ``samples`` noisy copies of each scan; see :func:`noise_classifier`."""

        def predict(self, x, batch_size: int = 128, training_mode: bool = False, **kwargs):
            out = []
            for i in range(0, len(x), batch_size):
                _, noise = copies(x[i:i + batch_size])
                out.append(mean_softmax(tf.convert_to_tensor(np.asarray(x[i:i + batch_size], dtype=np.float32)),
                                        noise).numpy().astype(np.float64))
            probs = np.concatenate(out) if out else np.zeros((0, self.nb_classes))
            return self._apply_postprocessing(np.log(np.clip(probs, 1e-12, None)).astype(np.float32), fit=False)

        def loss_gradient(self, x, y, training_mode: bool = False, **kwargs):
            y = np.asarray(y, dtype=np.float32)
            y = np.eye(self.nb_classes, dtype=np.float32)[y.astype(int).reshape(-1)] if y.ndim == 1 else y
            _, noise = copies(x)
            return eot_gradient(tf.convert_to_tensor(np.asarray(x, dtype=np.float32)), tf.convert_to_tensor(y),
                                noise).numpy()

    return NoisyClassifier(model=model, nb_classes=4, input_shape=tuple(model.input_shape[1:]),
                           loss_object=loss_object, clip_values=(0.0, 1.0))


def smoothed_classifier(model, sigma: float, *, n0: int = 100, alpha: float = 0.001, chunk: int = 1000):
    """Randomized smoothing (Cohen et al. 2019) of a logits model: ART's ``TensorFlowV2RandomizedSmoothing``
    with noise σ (not clipped), ``n0`` samples to pick the class and failure probability ``alpha``.
    Read its answers with :func:`smoothed_predictions` (ART returns an abstention as an all-zero row).

    ART draws all n noisy copies of a scan at once (n × the scan, in float64); at 128 px and n = 10,000 that is
    1.3 GB per scan, and TensorFlow 2.21 crashed on it here (a segmentation fault in ``tf_Compute``,
    ``benchmarks/bench_certify.py``). So the copies are drawn and counted ``chunk`` at a time: the counts, and
    ART's CERTIFY and Clopper-Pearson bound on them, are unchanged."""
    import keras
    from art.estimators.certification.randomized_smoothing import TensorFlowV2RandomizedSmoothing

    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"`chunk` must be an integer >= 1 (noisy copies per forward batch), got {chunk!r}.")

    class ChunkedSmoothing(TensorFlowV2RandomizedSmoothing):
        def _prediction_counts(self, x, n=None, batch_size=128):
            n = self.sample_size if n is None else int(n)
            counts = np.zeros(self.nb_classes)
            for start in range(0, n, chunk):
                counts += super()._prediction_counts(x, n=min(chunk, n - start), batch_size=batch_size)
            return counts

        def certify_counts(self, x, n: int, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
            """The counts CERTIFY decides on, ``(select, estimate)``, each ``(N, classes)``: per scan, the top
            classes of ``sample_size`` (n0) noisy copies, which pick the answer, then of ``n`` more, which certify
            it, drawn in ART's order (from the same NumPy seed, :meth:`certify` decides on these very draws).
            :func:`octlib.defences.certify_from_counts` certifies any grouping of the classes from them."""
            select, estimate = [], []
            for x_i in np.asarray(x, dtype=np.float32):
                select.append(self._prediction_counts(x_i, n=self.sample_size, batch_size=batch_size))
                estimate.append(self._prediction_counts(x_i, n=int(n), batch_size=batch_size))
            shape = (0, self.nb_classes)
            return (np.array(select, dtype=np.int64).reshape(shape if not select else (len(select), -1)),
                    np.array(estimate, dtype=np.int64).reshape(shape if not estimate else (len(estimate), -1)))

    return ChunkedSmoothing(
        model=model, nb_classes=4, input_shape=tuple(model.input_shape[1:]),
        loss_object=keras.losses.CategoricalCrossentropy(from_logits=True), sample_size=n0, scale=float(sigma),
        alpha=alpha, clip_values=(0.0, 1.0))


class Softmax(Postprocessor):
    """Turn logits into probabilities (numerically stable softmax over the last axis)."""

    def __init__(self, apply_fit: bool = False, apply_predict: bool = True) -> None:
        super().__init__(is_fitted=True, apply_fit=apply_fit, apply_predict=apply_predict)

    def __call__(self, preds: np.ndarray) -> np.ndarray:
        from .metrics import softmax

        # float64: ReverseSigmoid clips at 1 - 1e-9, which float32 rounds to 1 (then log(0))
        return softmax(np.asarray(preds, dtype=np.float64))


class LabelOnly(Postprocessor):
    """Answer with the predicted class only: a one-hot row per input (ties go to the lowest class index)."""

    def __init__(self, apply_fit: bool = False, apply_predict: bool = True) -> None:
        super().__init__(is_fitted=True, apply_fit=apply_fit, apply_predict=apply_predict)

    def __call__(self, preds: np.ndarray) -> np.ndarray:
        preds = np.asarray(preds)
        if preds.ndim != 2 or preds.shape[1] < 2:
            raise ValueError(f"LabelOnly expects (N, n_classes) scores with n_classes >= 2, got {preds.shape}.")
        labels = np.zeros(preds.shape, dtype=np.float32)
        labels[np.arange(len(preds)), np.argmax(preds, axis=1)] = 1.0
        return labels


ANSWERS = ("probabilities", "labels")


@contextlib.contextmanager
def remembered_predictions(classifier):
    """While open, ``classifier.predict`` answers a scan it has already answered from memory (keyed by a digest of
    the scan's bytes), when its answers are a function of the scan: ART's Square attack predicts every scan it
    attacks about three times per iteration, and two of the three are scans it predicted the iteration before
    (``benchmarks/README.md``). A classifier whose answer to the same scan differs between two calls (fresh noise
    per call) is left as it is. Yields whether the memory is on; on exit ``predict`` is the classifier's own again
    (a caller's API, e.g. one that counts queries, is not changed for what comes after)."""
    original = classifier.predict
    x0 = np.full((1, *np.asarray(classifier.input_shape, dtype=int)), 0.5, dtype=np.float32)
    if not np.array_equal(original(x0), original(x0)):
        yield False
        return
    memory: dict = {}

    def predict(x, batch_size: int = 128, training_mode: bool = False, **kwargs):
        if training_mode:
            return original(x, batch_size=batch_size, training_mode=True, **kwargs)
        x = np.asarray(x)
        keys = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in x]
        todo = [i for i, k in enumerate(keys) if k not in memory]
        if todo:
            for i, answer in zip(todo, original(x[todo], batch_size=batch_size, **kwargs)):
                memory[keys[i]] = answer
        return np.stack([memory[k] for k in keys]) if keys else original(x, batch_size=batch_size, **kwargs)

    own = vars(classifier).get("predict")  # an instance's own predict, if it had one: put back on exit
    classifier.predict = predict
    try:
        yield True
    finally:
        if own is None:
            del classifier.predict  # the class's own method again
        else:
            classifier.predict = own


@contextlib.contextmanager
def quiet_retracing():
    """Every run builds a new victim API and thief, so ART's per-classifier ``tf.function`` is traced once per
    run by design; TensorFlow's "triggered tf.function retracing" warning says nothing useful here."""
    import tensorflow as tf

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


def query_counting_class():
    """The victim API's classifier: :func:`fast_classifier_class` counting queries (see :func:`victim_api`)."""

    class QueryCountingClassifier(fast_classifier_class()):
        """ART's ``TensorFlowV2Classifier`` that counts the images it is asked to predict (``queries``) and the
        top class of its answers (``answer_counts``, per class). With ``repeats`` k > 1 it is the attacker's
        client: every scan is sent k times (k queries) and the k answers are averaged."""

        queries = 0
        repeats = 1
        answer_counts = np.zeros(len(CLASSES), dtype=np.int64)

        def predict(self, x, batch_size: int = 128, training_mode: bool = False, **kwargs):
            outs = []
            for _ in range(self.repeats):
                with quiet_retracing():  # one trace per API instance, by design
                    outs.append(super().predict(x, batch_size=batch_size, training_mode=training_mode, **kwargs))
                self.queries += len(x)
                self.answer_counts = self.answer_counts + np.bincount(np.argmax(outs[-1], axis=1),
                                                                      minlength=len(CLASSES))
            return outs[0] if self.repeats == 1 else np.mean(outs, axis=0).astype(np.float32)

    return QueryCountingClassifier


def victim_api(model, answers: str = "probabilities", *, defences=(), repeats: int = 1):
    """The victim as a client sees it: an ART classifier whose ``predict`` answers ``probabilities`` (softmax of
    the logits) or ``labels`` (one-hot rows, :class:`LabelOnly`), and counts queries.

    ``defences`` are further ART post-processors applied to the probabilities before a label-only answer is made
    (output noise, ReverseSigmoid...). Post-processors act in ``predict`` only: ``loss_gradient`` and
    ``class_gradient`` are the raw model's (cross-entropy on the logits), which is what a white-box attacker uses.
    ``repeats``: the client sends every scan this many times and averages the answers (each one a query).
    """
    import keras

    if answers not in ANSWERS:
        raise ValueError(f"`answers` must be one of {ANSWERS}, got {answers!r}.")
    if not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValueError(f"`repeats` must be an integer >= 1, got {repeats!r}.")
    chain = [Softmax(), *defences] + ([LabelOnly()] if answers == "labels" else [])
    api = query_counting_class()(
        model=model, nb_classes=len(CLASSES), input_shape=tuple(model.input_shape[1:]),
        loss_object=keras.losses.CategoricalCrossentropy(from_logits=True), clip_values=(0.0, 1.0),
        postprocessing_defences=chain)
    api.repeats = int(repeats)
    return api


def detector_classifier(network, *, learning_rate: float = 1e-3):
    """A two-class Keras logits ``network`` (clean, adversarial) as the trainable ART classifier that ART's
    ``BinaryInputDetector`` fits and queries (:class:`octlib.detectors.BinaryDetector`): cross-entropy from logits,
    Adam at ``learning_rate``, inputs in [0, 1]."""
    import keras

    return fast_classifier_class()(
        model=network, nb_classes=2, input_shape=tuple(network.input_shape[1:]),
        loss_object=keras.losses.CategoricalCrossentropy(from_logits=True),
        optimizer=keras.optimizers.Adam(learning_rate), clip_values=(0.0, 1.0))


def thief_classifier_class():
    """The thief's ART classifier: :func:`octlib.attacks.fast_classifier_class` whose ``fit`` batches NumPy arrays.

    ART's ``TensorFlowV2Classifier.fit`` builds a ``tf.data`` pipeline on every call and a new iterator on every
    epoch: on a quick-profile thief (48 steps of 32 scans at 32 px, 24 epochs of two batches) that was ~0.9 s of its
    4.7 s (cProfile), and adaptive KnockoffNets calls ``fit`` once per query. This ``fit`` takes the same steps on
    the same data (labels checked and preprocessed as ART does, every sample once per epoch in a fresh order, batches
    of ``batch_size``, the ``scheduler`` keyword called after each epoch), shuffled by a NumPy generator seeded per
    thief instead of TensorFlow's, and stops once the thief's step budget is spent.
    """
    from art.utils import check_and_transform_label_format

    class ThiefClassifier(fast_classifier_class()):
        def fit(self, x, y, batch_size: int = 128, nb_epochs: int = 10, verbose: bool = False, **kwargs):
            y = check_and_transform_label_format(y, nb_classes=self.nb_classes)
            x, y = self._apply_preprocessing(x, y, fit=True)
            if self._reduce_labels:
                y = np.argmax(y, axis=1)
            x, y, scheduler = np.asarray(x, np.float32), np.asarray(y, np.float32), kwargs.get("scheduler")
            for epoch in range(int(nb_epochs)):
                order = self._octlib_rng.permutation(len(x))
                for start in range(0, len(x), int(batch_size)):
                    batch = order[start:start + int(batch_size)]
                    if self._train_step(self.model, x[batch], y[batch]) is None:
                        return  # the step budget is spent: later batches and epochs would be skipped anyway
                if scheduler is not None:
                    scheduler(epoch)

    return ThiefClassifier
