"""The in-memory dataset: images plus the per-image metadata every later step needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..labels import CLASSES


@dataclass
class OCTDataset:
    """Preprocessed OCT images and their metadata, one row per image.

    Attributes:
        images: ``uint8`` array ``(N, S, S)``: preprocessed grey levels (what is cached on disk).
        labels: ``int64`` array ``(N,)``, indices into :data:`octlib.config.CLASSES`.
        patient_ids: ``int64`` array ``(N,)``; ``-1`` where the source has no patient IDs (OCTMNIST).
        groups: ``int64`` array ``(N,)``: the unit of splitting. The patient ID, with IDs merged when two of
            their images are pixel-identical (the official test split holds 25 such pairs); ``-1`` when unknown.
        origins: the source's own split of each image (``train``/``val``/``test``).
        paths: file path relative to the data root (or ``octmnist:<split>:<index>``).
        orig_width, orig_height, orig_mode: the image as stored, before preprocessing.
        info: source description, fingerprint, preprocessing settings, skipped files, notes.
    """

    images: np.ndarray
    labels: np.ndarray
    patient_ids: np.ndarray
    groups: np.ndarray
    origins: np.ndarray
    paths: np.ndarray
    orig_width: np.ndarray
    orig_height: np.ndarray
    orig_mode: np.ndarray
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.images)
        for name in ("labels", "patient_ids", "groups", "origins", "paths", "orig_width", "orig_height", "orig_mode"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"OCTDataset.{name} has {len(getattr(self, name))} rows, images has {n}.")

    def __len__(self) -> int:
        return len(self.images)

    @cached_property
    def x(self) -> np.ndarray:
        """Model input: ``float32`` ``(N, S, S, 1)`` in [0, 1] (computed once from :attr:`images`)."""
        return (self.images.astype(np.float32) / np.float32(255.0))[..., None]

    @property
    def y(self) -> np.ndarray:
        """Integer labels (alias of :attr:`labels`)."""
        return self.labels

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1]) if len(self.images) else int(self.info.get("image_size", 0))

    @property
    def patient_level(self) -> bool:
        """True when every image has a patient ID, so splits can be made by patient."""
        return bool(len(self)) and bool(np.all(self.patient_ids >= 0))

    def subset(self, index, **info_updates) -> "OCTDataset":
        """A new dataset with the rows selected by ``index`` (boolean mask or integer indices)."""
        index = np.asarray(index)
        info = {**self.info, **info_updates}
        return OCTDataset(
            images=self.images[index], labels=self.labels[index], patient_ids=self.patient_ids[index],
            groups=self.groups[index], origins=self.origins[index], paths=self.paths[index],
            orig_width=self.orig_width[index], orig_height=self.orig_height[index],
            orig_mode=self.orig_mode[index], info=info,
        )

    def class_counts(self) -> dict[str, int]:
        """Images per class name (every class listed, zeros included)."""
        counts = np.bincount(self.labels, minlength=len(CLASSES))
        return {c: int(n) for c, n in zip(CLASSES, counts)}

    def n_patients(self) -> int | None:
        """Distinct patient IDs, or ``None`` when the source has none."""
        return int(len(np.unique(self.patient_ids))) if self.patient_level else None

    def to_frame(self):
        """Per-image metadata as a pandas DataFrame (no pixels)."""
        import pandas as pd

        return pd.DataFrame({
            "path": self.paths, "origin": self.origins,
            "label": pd.Categorical([CLASSES[i] for i in self.labels], categories=list(CLASSES)),
            "patient_id": self.patient_ids, "group": self.groups,
            "width": self.orig_width, "height": self.orig_height, "mode": self.orig_mode,
        })
