"""Real images: the OCT2017 sample (skipped with a reason where it is absent)."""

import csv
import time

import numpy as np
import pytest

from octlib.config import CLASSES
from octlib.data import check_no_patient_leakage, load_folder, load_splits

pytestmark = pytest.mark.sample


@pytest.fixture(scope="module")
def manifest(sample_root):
    with open(sample_root / "manifest.csv", newline="") as fh:
        return {row["relpath"]: row for row in csv.DictReader(fh)}


def test_parsed_labels_and_patients_match_the_manifest(sample_root, manifest):
    ds = load_folder(sample_root, 32, progress=False)
    assert len(ds) == len(manifest) == 1676
    for path, label, pid, width, mode in zip(ds.paths, ds.labels, ds.patient_ids, ds.orig_width, ds.orig_mode):
        row = manifest[path]
        assert (CLASSES[label], int(pid), int(width), mode) == (row["label"], int(row["patient_id"]),
                                                               int(row["width"]), row["mode"])


@pytest.mark.parametrize("policy", ["official", "pooled"])
def test_splits_share_no_patient(sample_root, policy):
    s = load_splits(sample_root, "quick", policy=policy, progress=False)
    report = check_no_patient_leakage(s)
    assert report["checked"] and report["ok"]
    assert sum(len(p) for _, p in s.items()) == 1676
    assert all(len(p) > 0 and min(p.class_counts().values()) > 0 for _, p in s.items())
    if policy == "official":
        assert len(s.test) == 668 and set(s.test.origins) == {"test"}


def test_second_load_is_from_cache_and_much_faster(sample_root):
    t0 = time.perf_counter()
    first = load_folder(sample_root, 64, progress=False)
    t1 = time.perf_counter()
    second = load_folder(sample_root, 64, progress=False)
    t2 = time.perf_counter()
    assert first.info["decoded_files"] == 1676 and second.info["decoded_files"] == 0 and second.info["cache_hit"]
    np.testing.assert_array_equal(first.images, second.images)
    assert (t2 - t1) < (t1 - t0)


def test_evaluation_scans_are_the_same_patient_disjoint_scans_every_time(sample_root):
    from octlib import get_profile
    from octlib.evaluation import evaluation_scans

    profile = get_profile("quick")
    s = load_splits(sample_root, "quick", policy="official", progress=False)
    a = evaluation_scans(s, profile.suite, seed=0)
    b = evaluation_scans(s, profile.suite, seed=0)
    assert len(a) == profile.suite.n_scans and list(a.ids) == list(b.ids) and a.n_available == len(s.test) == 668
    assert np.bincount(a.y, minlength=4).tolist() == [12, 12, 12, 12]
    assert set(a.patients) <= set(s.test.groups)
    assert not set(a.patients) & (set(s.train.groups) | set(s.val.groups))
    half = a.subset(24)
    assert set(half.ids) <= set(a.ids) and len(half) == 24
