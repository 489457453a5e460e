"""Patient-level splits, both policies, and the leakage check."""

import numpy as np
import pytest

from octlib.data import (OCTDataError, PatientLeakageError, check_no_patient_leakage, load_folder, make_splits,
                         stratified_group_holdout)


@pytest.fixture
def ds(small_layout):
    return load_folder(small_layout, 16, progress=False)


def test_official_keeps_test_folder_and_splits_rest_by_patient(ds):
    s = make_splits(ds, "official", seed=0)
    assert set(s.test.origins) == {"test"} and len(s.test) == int((ds.origins == "test").sum())
    assert set(s.train.origins) | set(s.val.origins) <= {"train", "val"}
    assert len(s.train) + len(s.val) + len(s.test) == len(ds)
    assert s.info["leakage"]["ok"] and s.info["leakage"]["checked"]
    assert all(v == 0 for v in s.info["leakage"]["shared_patients"].values())


def test_pooled_splits_every_image_by_patient(ds):
    s = make_splits(ds, "pooled", seed=0, test_fraction=0.25)
    assert {"train", "val", "test"} <= set(np.concatenate([s.test.origins, s.train.origins]))
    assert check_no_patient_leakage(s)["ok"]
    assert 0.15 < len(s.test) / len(ds) < 0.35


def test_patient_under_two_classes_stays_in_one_split(ds):
    for seed in range(5):
        s = make_splits(ds, "pooled", seed=seed)
        homes = [name for name, part in s.items() if 1000 in part.patient_ids]
        assert len(homes) == 1, homes
        part = dict(s.items())[homes[0]]
        assert {int(lbl) for lbl in part.labels[part.patient_ids == 1000]} == {0, 1}  # CNV and DME together


def test_split_is_deterministic_for_a_seed(ds):
    a, b, c = (make_splits(ds, "pooled", seed=s) for s in (3, 3, 4))
    assert a.test.paths.tolist() == b.test.paths.tolist()
    assert a.test.paths.tolist() != c.test.paths.tolist()


def test_holdout_is_stratified_and_near_the_fraction():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(400), rng.integers(1, 4, 400))
    labels = rng.integers(0, 4, len(groups))
    held = stratified_group_holdout(labels, groups, 0.2, seed=1)
    assert abs(held.mean() - 0.2) < 0.02
    for k in range(4):
        assert abs(held[labels == k].mean() - 0.2) < 0.04
    assert not set(groups[held]) & set(groups[~held])


def test_cap_keeps_whole_patients(ds):
    s = make_splits(ds, "official", seed=0, max_per_split=10)
    assert len(s.train) <= 14 and len(s.train) >= 6
    train_ids = set(s.train.patient_ids)
    full = make_splits(ds, "official", seed=0)
    for pid in train_ids:  # every kept patient keeps all its images
        assert (s.train.patient_ids == pid).sum() == (full.train.patient_ids == pid).sum()
    assert any("capped" in n for n in s.info["notes"])


def test_official_without_test_folder_says_so(make_layout):
    spec = {"train": {c: [(i * 10 + k, 2) for k in range(1, 9)] for i, c in enumerate(
        ("CNV", "DME", "DRUSEN", "NORMAL"), 1)}}
    ds = load_folder(make_layout(spec), 16, progress=False)
    s = make_splits(ds, "official", seed=0)
    assert len(s.test) > 0 and check_no_patient_leakage(s)["ok"]
    assert any("no test split" in n for n in s.info["notes"])


def test_leakage_check_catches_a_shared_patient(ds):
    s = make_splits(ds, "official", seed=0)
    pid = int(s.train.patient_ids[0])
    s.test = ds.subset(np.flatnonzero(ds.patient_ids == pid))  # an image-level mistake
    with pytest.raises(PatientLeakageError, match=str(pid)):
        check_no_patient_leakage(s)
    report = check_no_patient_leakage(s, raise_on_leak=False)
    assert not report["ok"] and report["shared_patients"]["train-test"] == 1


def test_bad_policy_and_fractions(ds):
    with pytest.raises(ValueError, match="`policy`"):
        make_splits(ds, "random")
    with pytest.raises(ValueError, match="`val_fraction`"):
        make_splits(ds, "official", val_fraction=1.5)


def test_too_few_patients_is_a_clear_error(make_layout):
    ds = load_folder(make_layout({"test": {"CNV": [(1, 1)]}}), 16, progress=False)
    with pytest.raises(OCTDataError, match="split is empty"):
        make_splits(ds, "pooled")
