"""Source A (OCT2017 folder layout): parsing, preprocessing, cache, and every bad input."""

import shutil

import numpy as np
import pytest
from PIL import Image

from octlib.config import CLASSES
from octlib.data import OCTDataError, load_folder, preprocess, scan_folder
from octlib.data import folder as folder_mod
from octlib.data.folder import link_groups

from .conftest import write_image


def load(root, **kw):
    return load_folder(root, 32, "squash", progress=False, **kw)


# ---------------------------------------------------------------- parsing and preprocessing

def test_scan_parses_label_patient_and_split(small_layout):
    records, ignored = scan_folder(small_layout)
    assert ignored == []
    rec = next(r for r in records if r.relpath == "train/DME/DME-2003-1.jpeg")
    assert (rec.origin, CLASSES[rec.label], rec.patient_id, rec.image_no) == ("train", "DME", 2003, 1)
    assert {r.origin for r in records} == {"train", "val", "test"}


def test_load_returns_float_images_in_unit_range(small_layout):
    ds = load(small_layout)
    assert ds.images.dtype == np.uint8 and ds.images.shape[1:] == (32, 32)
    assert ds.x.dtype == np.float32 and ds.x.shape == (len(ds), 32, 32, 1)
    assert 0.0 <= ds.x.min() and ds.x.max() <= 1.0
    assert set(ds.orig_mode) == {"L"} and set(ds.orig_width) == {96}
    assert ds.info["patient_level"] and ds.info["fingerprint"] and ds.info["skipped"] == []


@pytest.mark.parametrize("mode,suffix", [("L", ".jpeg"), ("RGB", ".jpeg"), ("I;16", ".png"), ("RGB", ".png")])
def test_any_mode_becomes_one_grey_channel(tmp_path, mode, suffix):
    root = tmp_path / "d"
    write_image(root / "test" / "CNV" / f"CNV-1-1{suffix}", mode=mode)
    ds = load(root)
    assert ds.images.shape == (1, 32, 32) and ds.orig_mode[0] == mode
    assert 0 < ds.images.mean() < 255  # content survived the conversion


def test_16bit_values_scale_to_unit_range():
    arr = np.full((20, 40), 65535, dtype=np.uint16)
    arr[:, :20] = 0
    out = preprocess(Image.fromarray(arr), 8, "squash")
    assert out[:, 0].max() == 0 and out[:, -1].min() == 255


def test_resize_modes_keep_or_change_the_field_of_view():
    # 400 x 100 scan, white only in the outer quarters: a centre crop cannot see them, squash and pad can.
    arr = np.zeros((100, 400), dtype=np.uint8)
    arr[:, :100] = arr[:, 300:] = 255
    img = Image.fromarray(arr)
    squash, pad, crop = (preprocess(img, 16, m) for m in ("squash", "pad", "crop"))
    assert crop.max() == 0
    assert squash[:, 0].min() == 255 and squash[:, 8].max() == 0
    assert pad[0].max() == 0 and pad[8, 0] == 255  # black bars above and below, scan in the middle
    with pytest.raises(ValueError, match="resize"):
        preprocess(img, 16, "stretch")


def test_bad_size_is_named_before_any_decoding(small_layout):
    with pytest.raises(ValueError, match="`size`"):
        load_folder(small_layout, 4, progress=False)


def test_link_groups_merges_ids_with_identical_pixels():
    pids = np.array([1, 1, 2, 3, 4])
    hashes = np.array(["a", "b", "b", "c", "a"])  # 1~2 (b), 1~4 (a); 3 alone
    assert link_groups(pids, hashes).tolist() == [1, 1, 1, 3, 1]


def test_identical_images_under_two_ids_share_a_group(tmp_path):
    root = tmp_path / "d"
    write_image(root / "test" / "DRUSEN" / "DRUSEN-10-1.jpeg", seed=5)
    shutil.copy(root / "test" / "DRUSEN" / "DRUSEN-10-1.jpeg", root / "test" / "DRUSEN" / "DRUSEN-20-1.jpeg")
    write_image(root / "test" / "DRUSEN" / "DRUSEN-30-1.jpeg", seed=6)
    ds = load(root)
    assert sorted(ds.groups.tolist()) == [10, 10, 30] and ds.info["linked_patient_ids"] == 1


# ---------------------------------------------------------------- cache

def test_second_load_decodes_nothing(small_layout, monkeypatch):
    calls = []
    real = folder_mod.decode_file
    monkeypatch.setattr(folder_mod, "decode_file", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    first = load(small_layout)
    n_files = len(calls)
    second = load(small_layout)
    assert n_files == len(first) and len(calls) == n_files  # no decode on the second load
    assert not first.info["cache_hit"] and second.info["cache_hit"]
    np.testing.assert_array_equal(first.images, second.images)
    assert first.info["fingerprint"] == second.info["fingerprint"]


def test_changed_setting_or_file_invalidates_cache(small_layout):
    a = load(small_layout)
    b = load_folder(small_layout, 24, "squash", progress=False)
    assert not b.info["cache_hit"] and b.images.shape[1] == 24
    c = load_folder(small_layout, 32, "crop", progress=False)
    assert not c.info["cache_hit"]
    write_image(small_layout / "train" / "CNV" / "CNV-1000-1.jpeg", seed=999)  # same name, new content
    d = load(small_layout)
    assert not d.info["cache_hit"] and d.info["fingerprint"] != a.info["fingerprint"]
    (small_layout / "train" / "CNV" / "CNV-1001-1.jpeg").unlink()  # a removed file
    e = load(small_layout)
    assert not e.info["cache_hit"] and len(e) == len(a) - 1


def test_damaged_cache_file_is_rebuilt(small_layout, tmp_path):
    load(small_layout)
    (cache_file,) = (tmp_path / "_cache").glob("*.npz")
    cache_file.write_bytes(b"not an npz")
    with pytest.warns(UserWarning, match="unreadable cache"):
        ds = load(small_layout)
    assert not ds.info["cache_hit"] and len(ds) > 0


# ---------------------------------------------------------------- bad input: each error names the file and the fix

def test_missing_root(tmp_path):
    with pytest.raises(OCTDataError, match="does not exist") as err:
        load(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value) and "OCTLIB_DATA" in str(err.value)


def test_wrong_layout_without_split_folders(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(OCTDataError, match="no split folder") as err:
        load(tmp_path)
    assert str(tmp_path) in str(err.value) and "images" in str(err.value)


def test_pointing_at_a_split_folder_suggests_the_parent(small_layout):
    with pytest.raises(OCTDataError, match="point at its parent") as err:
        load(small_layout / "train")
    assert str(small_layout / "train") in str(err.value)


def test_unknown_class_folder(small_layout):
    write_image(small_layout / "train" / "GLAUCOMA" / "GLAUCOMA-1-1.jpeg")
    with pytest.raises(OCTDataError, match="not one of CNV") as err:
        load(small_layout)
    assert str(small_layout / "train" / "GLAUCOMA") in str(err.value)
    assert err.value.files == [str(small_layout / "train" / "GLAUCOMA")]


def test_class_folder_case_variant_is_accepted(tmp_path):
    write_image(tmp_path / "d" / "test" / "Drusen" / "DRUSEN-5-1.jpeg")
    ds = load(tmp_path / "d")
    assert CLASSES[ds.labels[0]] == "DRUSEN"


def test_empty_class_folder(small_layout):
    (small_layout / "val" / "NORMAL").mkdir(exist_ok=True)
    for f in (small_layout / "val" / "NORMAL").iterdir():
        f.unlink()
    with pytest.raises(OCTDataError, match="Empty class folder") as err:
        load(small_layout)
    assert str(small_layout / "val" / "NORMAL") in str(err.value)


def test_truncated_jpeg(small_layout):
    bad = small_layout / "test" / "DME" / "DME-2200-1.jpeg"
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(OCTDataError, match="unreadable image") as err:
        load(small_layout)
    assert str(bad) in str(err.value) and "skip_corrupt=True" in str(err.value)


def test_non_image_content_with_image_name(small_layout):
    bad = small_layout / "train" / "CNV" / "CNV-1000-1.jpeg"
    bad.write_text("this is not a JPEG")
    with pytest.raises(OCTDataError, match="unreadable image") as err:
        load(small_layout)
    assert str(bad) in str(err.value)


def test_non_image_file_in_class_folder(small_layout):
    bad = small_layout / "train" / "CNV" / "notes.txt"
    bad.write_text("grader notes")
    with pytest.raises(OCTDataError, match="Non-image file") as err:
        load(small_layout)
    assert str(bad) in str(err.value)


def test_filename_without_patient_id(small_layout):
    bad = write_image(small_layout / "train" / "NORMAL" / "NORMAL-scan.jpeg")
    with pytest.raises(OCTDataError, match="without a patient ID") as err:
        load(small_layout)
    assert str(bad) in str(err.value) and "<CLASS>-<patientID>-<imageNo>" in str(err.value)


def test_folder_and_filename_class_mismatch(small_layout):
    bad = write_image(small_layout / "train" / "NORMAL" / "CNV-77-1.jpeg")
    with pytest.raises(OCTDataError, match="does not match its folder") as err:
        load(small_layout)
    assert str(bad) in str(err.value)


def test_image_outside_class_folder(small_layout):
    bad = write_image(small_layout / "train" / "CNV-9-1.jpeg")
    with pytest.raises(OCTDataError, match="outside a class folder") as err:
        load(small_layout)
    assert str(bad) in str(err.value)


def test_all_offending_files_are_listed(small_layout):
    bad = [write_image(small_layout / "train" / "CNV" / f"scan{i}.jpeg") for i in range(3)]
    with pytest.raises(OCTDataError) as err:
        load(small_layout)
    assert all(str(b) in str(err.value) for b in bad) and len(err.value.files) == 3


def test_skip_corrupt_reports_exactly_what_was_skipped(small_layout):
    n_all = len(scan_folder(small_layout)[0])
    bad1 = small_layout / "test" / "DME" / "DME-2200-1.jpeg"
    bad2 = small_layout / "train" / "CNV" / "CNV-1000-1.jpeg"
    bad1.write_bytes(bad1.read_bytes()[:300])
    bad2.write_text("garbage")
    with pytest.warns(UserWarning, match=r"Skipped 2 unreadable image\(s\) of") as rec:
        ds = load(small_layout, skip_corrupt=True)
    assert len(ds) == n_all - 2
    assert sorted(s["path"] for s in ds.info["skipped"]) == sorted([str(bad1), str(bad2)])
    assert str(bad1) in str(rec[0].message)
    assert "DME-2200-1.jpeg" not in " ".join(ds.paths)


def test_stray_non_image_files_are_reported_not_hidden(small_layout):
    (small_layout / "README.txt").write_text("top-level notes are fine")
    (small_layout / "test" / "Thumbs.db").write_bytes(b"\0")
    (small_layout / "extra").mkdir()
    with pytest.warns(UserWarning, match="Ignored 2 entries") as rec:
        ds = load(small_layout)
    assert sorted(ds.info["ignored"]) == ["extra", "test/Thumbs.db"]
    assert "extra" in str(rec[0].message)


# ---------------------------------------------------------------- parallel decoding

def test_decode_executor_chooses_processes_only_for_large_folders():
    assert folder_mod.decode_executor(folder_mod.PROCESS_MIN_FILES, 2) == ("process", 2)
    assert folder_mod.decode_executor(folder_mod.PROCESS_MIN_FILES - 1, 2) == ("thread", 2)
    assert folder_mod.decode_executor(10**6, 1) == ("thread", 1)  # one worker: no process to start
    assert folder_mod.decode_executor(10, 2, "process") == ("process", 2)
    with pytest.raises(ValueError, match="`parallel` must be"):
        folder_mod.decode_executor(10, 2, "gpu")
    with pytest.raises(ValueError, match="`workers`"):
        folder_mod.decode_executor(10, 0)


def test_processes_decode_the_same_arrays_as_threads(small_layout):
    threads = load(small_layout, use_cache=False, parallel="thread", workers=2)
    procs = load(small_layout, use_cache=False, parallel="process", workers=2)
    np.testing.assert_array_equal(procs.images, threads.images)
    np.testing.assert_array_equal(procs.labels, threads.labels)
    assert list(procs.paths) == list(threads.paths)
    assert procs.info["fingerprint"] == threads.info["fingerprint"]


def test_a_process_reports_an_unreadable_file_by_name(small_layout):
    bad = small_layout / "test" / "DME" / "DME-2200-1.jpeg"
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(OCTDataError, match="unreadable image") as err:
        load(small_layout, use_cache=False, parallel="process", workers=2)
    assert str(bad) in str(err.value) and err.value.files == [str(bad)]
    with pytest.warns(UserWarning, match="Skipped 1 unreadable"):
        ds = load(small_layout, use_cache=False, parallel="process", workers=2, skip_corrupt=True)
    assert [s["path"] for s in ds.info["skipped"]] == [str(bad)]
