"""Patient-level splits and the leakage check.

Images are split by *group*: the numeric patient ID alone (the same ID can appear under two classes), merged with
the IDs it shares a pixel-identical image with. Two policies:

* ``official``: where the source has a ``test`` split, keep it as test and split the rest by patient into
  train/val. A source without a test split is split into train/val/test by patient (said in ``info``).
* ``pooled``: pool every image and split all of them by patient into train/val/test.

Splitting is stratified as well as whole groups allow (see :func:`stratified_group_holdout`) and deterministic for
a seed. OCTMNIST has no patient IDs: ``official`` keeps its published splits (said in ``info``), ``pooled`` is
refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from ..labels import CLASSES
from .dataset import OCTDataset
from .errors import OCTDataError, PatientLeakageError

POLICIES = ("official", "pooled")
SPLIT_NAMES = ("train", "val", "test")


def stratified_group_holdout(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of rows held out: about ``fraction`` of the rows, whole groups only, class mix kept.

    Greedy: groups are visited in a seeded random order and a group joins the holdout when that brings the
    holdout's per-class counts closer (L1) to ``fraction`` x the class totals. The random order (rather than
    largest-first packing) keeps the share of patients close to the share of images.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction!r}.")
    labels, groups = np.asarray(labels), np.asarray(groups)
    held = np.zeros(len(labels), dtype=bool)
    if fraction == 0.0 or len(labels) == 0:
        return held
    uniq, inverse = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(uniq), len(CLASSES)), dtype=np.int64)
    np.add.at(counts, (inverse, labels), 1)
    target = fraction * counts.sum(axis=0)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    current = np.zeros(len(CLASSES))
    chosen = np.zeros(len(uniq), dtype=bool)
    for g in order:
        if np.abs(current + counts[g] - target).sum() < np.abs(current - target).sum():
            current += counts[g]
            chosen[g] = True
    return chosen[inverse]


@dataclass
class Splits:
    """Train/val/test datasets with the settings that made them (``info``).

    ``pool``, when set (:func:`carve_query_pool`), is the model-extraction attacker's query pool: patients the
    victim neither trained nor is evaluated on.
    """

    train: OCTDataset
    val: OCTDataset
    test: OCTDataset
    info: dict = field(default_factory=dict)
    pool: OCTDataset | None = None

    def items(self):
        parts = [("train", self.train), ("val", self.val), ("test", self.test)]
        return parts + [("pool", self.pool)] if self.pool is not None else parts

    def counts(self) -> dict:
        """Per split: images per class, total, distinct patients (``None`` without patient IDs)."""
        return {name: {**ds.class_counts(), "total": len(ds), "patients": ds.n_patients()}
                for name, ds in self.items()}

    def summary(self):
        """The counts as a pandas DataFrame (rows: splits)."""
        import pandas as pd

        return pd.DataFrame(self.counts()).T[[*CLASSES, "total", "patients"]]


def _groups_or_rows(ds: OCTDataset) -> np.ndarray:
    return ds.groups if ds.patient_level else np.arange(len(ds))


def make_splits(ds: OCTDataset, policy: str = "official", *, val_fraction: float = 0.2,
                test_fraction: float = 0.2, seed: int = 0, max_per_split: int | None = None) -> Splits:
    """Split ``ds`` by patient under ``policy`` (see the module docstring).

    Args:
        ds: the whole source, as loaded.
        policy: ``official`` or ``pooled``.
        val_fraction: share of the non-test images (whole patients) that goes to validation.
        test_fraction: share of all images (whole patients) held out for test when there is no official test.
        seed: makes the split deterministic.
        max_per_split: optional cap on images per split; whole patients are kept, class mix preserved.
    """
    if policy not in POLICIES:
        raise ValueError(f"`policy` must be one of {POLICIES}, got {policy!r}.")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"`{name}` must be in (0, 1), got {value!r}.")
    notes: list[str] = []
    if not ds.patient_level:
        if policy == "pooled":
            raise OCTDataError(f"The 'pooled' policy splits by patient, but this source "
                               f"({ds.info.get('source')}) has no patient IDs. Use policy='official'.")
        missing = [s for s in SPLIT_NAMES if not np.any(ds.origins == s)]
        if missing:
            raise OCTDataError(f"Source {ds.info.get('source')} lacks the published split(s) {missing}.")
        parts = {s: ds.origins == s for s in SPLIT_NAMES}
        notes.append(ds.info.get("patient_note", "No patient IDs: the published splits are used as they are."))
    else:
        groups = ds.groups
        if policy == "official" and np.any(ds.origins == "test"):
            is_test = ds.origins == "test"
            notes.append("official: the source's test split is the test set; the other splits were pooled and "
                         "split by patient into train/val.")
        else:
            if policy == "official":
                notes.append("official: the source has no test split, so all images were split by patient "
                             "into train/val/test (as under 'pooled').")
            is_test = stratified_group_holdout(ds.labels, groups, test_fraction, seed)
        rest = np.flatnonzero(~is_test)
        is_val = np.zeros(len(ds), dtype=bool)
        is_val[rest] = stratified_group_holdout(ds.labels[rest], groups[rest], val_fraction, seed + 1)
        parts = {"train": ~is_test & ~is_val, "val": is_val, "test": is_test}
    out = {}
    for i, (name, mask) in enumerate(parts.items()):
        idx = np.flatnonzero(mask)
        if max_per_split is not None and len(idx) > max_per_split:
            sub = ds.subset(idx)
            keep = stratified_group_holdout(sub.labels, _groups_or_rows(sub), max_per_split / len(idx),
                                            seed + 10 + i)
            notes.append(f"{name}: capped at about {max_per_split} images (whole patients kept): "
                         f"{int(keep.sum())} of {len(idx)}.")
            idx = idx[keep]
        if len(idx) == 0:
            raise OCTDataError(f"The {name} split is empty (source {ds.info.get('root') or ds.info.get('file')}, "
                               f"policy {policy!r}): the source has too few patients to split. Add data or use "
                               "another policy.")
        out[name] = ds.subset(idx, split=name)
    info = {
        "policy": policy, "seed": int(seed), "val_fraction": val_fraction, "test_fraction": test_fraction,
        "max_per_split": max_per_split, "patient_level": ds.patient_level, "notes": notes,
        "source": ds.info.get("source"), "fingerprint": ds.info.get("fingerprint"),
    }
    splits = Splits(**out, info=info)
    splits.info["counts"] = splits.counts()
    splits.info["leakage"] = check_no_patient_leakage(splits)
    return splits


def check_no_patient_leakage(splits: Splits, *, raise_on_leak: bool = True) -> dict:
    """Check that no patient ID (and no group of linked IDs) is in two splits.

    Returns a report: ``{"checked": bool, "ok": bool, "shared_patients": {pair: n}, "shared_groups": {pair: n},
    "examples": {pair: [ids]}}``. Without patient IDs the check cannot be made: ``checked`` is False, ``ok`` is
    None and ``reason`` says why.

    Raises:
        PatientLeakageError: when a patient is shared and ``raise_on_leak`` is True; it lists the shared IDs.
    """
    parts = dict(splits.items())
    if not all(ds.patient_level for ds in parts.values()):
        return {"checked": False, "ok": None,
                "reason": "source has no patient IDs (OCTMNIST); leakage between its train and val cannot be "
                          "checked and is possible"}
    report = {"checked": True, "shared_patients": {}, "shared_groups": {}, "examples": {}}
    for a, b in combinations(list(parts), 2):
        pair = f"{a}-{b}"
        shared = np.intersect1d(parts[a].patient_ids, parts[b].patient_ids)
        shared_groups = np.intersect1d(parts[a].groups, parts[b].groups)
        report["shared_patients"][pair] = int(len(shared))
        report["shared_groups"][pair] = int(len(shared_groups))
        if len(shared) or len(shared_groups):
            report["examples"][pair] = [int(v) for v in np.union1d(shared, shared_groups)[:20]]
    report["ok"] = not report["examples"]
    if not report["ok"] and raise_on_leak:
        detail = "; ".join(f"{pair}: patient IDs {ids}" for pair, ids in report["examples"].items())
        raise PatientLeakageError(f"Patient leakage between splits: {detail}. Split by patient "
                                  "(octlib.data.make_splits) instead of by image.")
    return report


def carve_query_pool(splits: Splits, fraction: float = 0.5, *, seed: int = 0) -> Splits:
    """Carve the model-extraction attacker's query pool out of the test split, by patient.

    The victim was trained on ``train`` and selected on ``val``; the pool takes about ``fraction`` of the test
    split's patients (class mix kept), and the remaining test patients are where the victim and its stolen copies
    are evaluated. So the attacker queries with real OCT scans of patients the victim never trained on and that
    no reported extraction number is computed on. Returns new :class:`Splits` (``train``/``val`` unchanged,
    ``test`` reduced, ``pool`` set), checked for leakage across all four. Without patient IDs (OCTMNIST) the
    pool is carved by image and ``info["notes"]`` says so.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"`fraction` must be in (0, 1), got {fraction!r} (share of test patients in the pool).")
    if splits.pool is not None:
        raise ValueError("These splits already have a query pool; carve it from the splits the victim was "
                         "trained on.")
    test = splits.test
    in_pool = stratified_group_holdout(test.labels, _groups_or_rows(test), fraction, seed + 100)
    if in_pool.all() or not in_pool.any():
        raise OCTDataError(f"The test split ({len(test)} images, {test.n_patients()} patients) is too small to "
                           f"carve a query pool of fraction {fraction}: add data or change `pool_fraction`.")
    notes = list(splits.info.get("notes", []))
    notes.append(f"query pool: {int(in_pool.sum())} of {len(test)} test images "
                 f"({'whole patients' if test.patient_level else 'by image: the source has no patient IDs'}); "
                 f"{int((~in_pool).sum())} remain as the evaluation split.")
    out = Splits(train=splits.train, val=splits.val, test=test.subset(np.flatnonzero(~in_pool)),
                 pool=test.subset(np.flatnonzero(in_pool), split="pool"),
                 info={**splits.info, "notes": notes, "pool_fraction": fraction, "pool_seed": seed})
    out.info["counts"] = out.counts()
    out.info["leakage"] = check_no_patient_leakage(out)
    return out
