"""Output-side defences: ART post-processors attached to the victim's ``predict``.

A post-processor changes what the model *answers*, not what it computes: ART applies it in ``predict`` only, never
in ``loss_gradient`` or ``class_gradient``, so it cannot stop a white-box attack (notebook 4x shows it).

* :class:`Softmax`: the victim outputs logits (:mod:`octlib.models`); an API answers probabilities.
* :class:`LabelOnly`: answer the top class only, as a one-hot row ("reinforcing class labels"). ART 1.20.1's
  ``ClassLabels`` marks every row's winning class in every row of a batch (upstream PR #2824), so a victim wrapped
  with it looks like chance; this one is correct row by row (tested against a row-by-row loop and against the bug).
"""

from __future__ import annotations

import numpy as np
from art.defences.postprocessor import Postprocessor


class Softmax(Postprocessor):
    """Turn logits into probabilities (numerically stable softmax over the last axis)."""

    def __init__(self, apply_fit: bool = False, apply_predict: bool = True) -> None:
        super().__init__(is_fitted=True, apply_fit=apply_fit, apply_predict=apply_predict)

    def __call__(self, preds: np.ndarray) -> np.ndarray:
        from .metrics import softmax

        return softmax(np.asarray(preds, dtype=np.float64)).astype(np.float32)


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
