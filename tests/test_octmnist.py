"""Source B (OCTMNIST): download against a local HTTP server on 127.0.0.1, MD5 check, npz reading."""

import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

import octlib.data.octmnist as om
from octlib.data import OCTDataError, download, load_dataset, load_octmnist_npz, make_splits


def make_npz(path: Path, size=28, n=(40, 12, 16), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 255, (k, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(k) % 4).reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)
    return path.read_bytes()


class Server:
    """Serves ``routes`` (path -> bytes); ``/truncated`` promises more bytes than it sends."""

    def __init__(self, routes: dict):
        self.routes, self.hits = routes, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.hits.append(self.path)
                body = outer.routes.get(self.path.split("?")[0])
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                truncated = self.path.startswith("/truncated")
                self.send_header("Content-Length", str(len(body) * (2 if truncated else 1)))
                self.end_headers()
                self.wfile.write(body)
                if truncated:
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def npz_bytes(tmp_path):
    return make_npz(tmp_path / "src.npz")


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def leftovers(folder: Path):
    return sorted(p.name for p in folder.glob("*.part"))


def test_download_once_verified_then_reused(tmp_path, npz_bytes):
    dest = tmp_path / "data" / "octmnist.npz"
    with Server({"/octmnist.npz": npz_bytes}) as srv:
        path = download(f"{srv.url}/octmnist.npz?download=1", dest, md5(npz_bytes), progress=False)
        again = download(f"{srv.url}/octmnist.npz?download=1", dest, md5(npz_bytes), progress=False)
    assert path == again == dest and dest.read_bytes() == npz_bytes
    assert len(srv.hits) == 1  # second call reused the verified file
    assert leftovers(dest.parent) == []


def test_wrong_md5_leaves_nothing(tmp_path, npz_bytes):
    dest = tmp_path / "octmnist.npz"
    with Server({"/octmnist.npz": npz_bytes}) as srv:
        with pytest.raises(OCTDataError, match="has MD5") as err:
            download(f"{srv.url}/octmnist.npz", dest, "0" * 32, progress=False)
    assert str(dest) in str(err.value) and not dest.exists() and leftovers(tmp_path) == []


def test_truncated_transfer_leaves_nothing(tmp_path, npz_bytes):
    dest = tmp_path / "octmnist.npz"
    with Server({"/truncated": npz_bytes}) as srv:
        with pytest.raises(OCTDataError, match="interrupted|truncated") as err:
            download(f"{srv.url}/truncated", dest, md5(npz_bytes), progress=False)
    assert str(dest) in str(err.value) and not dest.exists() and leftovers(tmp_path) == []


def test_no_network_says_how_to_use_a_folder(tmp_path):
    with Server({}) as srv:
        dead = srv.url
    with pytest.raises(OCTDataError, match="OCTLIB_DATA") as err:
        download(f"{dead}/octmnist.npz", tmp_path / "octmnist.npz", "0" * 32, progress=False, timeout=5)
    assert "oct2017-sample" in str(err.value) and leftovers(tmp_path) == []


def test_existing_file_with_wrong_md5_is_not_trusted(tmp_path, npz_bytes):
    dest = tmp_path / "octmnist.npz"
    dest.write_bytes(npz_bytes[:-10])
    with pytest.raises(OCTDataError, match="Delete it") as err:
        download("http://127.0.0.1:9/unused", dest, md5(npz_bytes), progress=False)
    assert str(dest) in str(err.value)


def test_npz_is_read_without_pickles_and_keeps_published_splits(tmp_path, npz_bytes):
    ds = load_octmnist_npz(tmp_path / "src.npz")
    assert len(ds) == 68 and ds.x.shape == (68, 28, 28, 1) and ds.x.max() <= 1.0
    assert not ds.patient_level and ds.info["patient_note"]
    s = make_splits(ds, "official")
    assert (len(s.train), len(s.val), len(s.test)) == (40, 12, 16)
    assert s.info["leakage"]["checked"] is False and "no patient IDs" in s.info["leakage"]["reason"]
    with pytest.raises(OCTDataError, match="no patient IDs"):
        make_splits(ds, "pooled")


def test_npz_with_missing_keys_names_the_file(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, train_images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(OCTDataError, match="missing") as err:
        load_octmnist_npz(bad)
    assert str(bad) in str(err.value)


def test_default_setting_downloads_octmnist_at_profile_size(tmp_path, monkeypatch):
    payload = make_npz(tmp_path / "src64.npz", size=64)  # quick is 32 px, not published: the default is 64 px
    monkeypatch.setenv("OCTLIB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("OCTLIB_DATA", raising=False)
    with Server({"/octmnist_64.npz": payload}) as srv:
        monkeypatch.setitem(om.OCTMNIST_FILES, 64, ("octmnist_64.npz", f"{srv.url}/octmnist_64.npz",
                                                    md5(payload)))
        ds = load_dataset(profile="quick", progress=False)
    assert ds.image_size == 64 and ds.info["setting"]["origin"] == "default"
    assert (tmp_path / "home" / "data" / "octmnist_64.npz").is_file()


@pytest.mark.parametrize("save, layout", [(np.savez, "grey"), (np.savez_compressed, "grey"),
                                          (np.savez_compressed, "rgb"), (np.savez, "channel")])
def test_npz_images_are_streamed_into_one_uint8_array_unchanged(tmp_path, save, layout):
    rng = np.random.default_rng(1)
    counts = {"train": 7, "val": 3, "test": 2}
    grey = {s: rng.integers(0, 256, (n, 12, 12), dtype=np.uint8) for s, n in counts.items()}
    stored = {s: np.repeat(g[..., None], 3, -1) if layout == "rgb" else g[..., None] if layout == "channel" else g
              for s, g in grey.items()}
    labels = {s: rng.integers(0, 4, (n, 1)) for s, n in counts.items()}
    save(tmp_path / "o.npz", **{f"{s}_images": v for s, v in stored.items()},
         **{f"{s}_labels": v for s, v in labels.items()})
    ds = load_octmnist_npz(tmp_path / "o.npz")
    assert ds.images.dtype == np.uint8 and ds.images.flags.c_contiguous
    np.testing.assert_array_equal(ds.images, np.concatenate([grey[s] for s in counts]))
    np.testing.assert_array_equal(ds.labels, np.concatenate([labels[s].ravel() for s in counts]))
    assert list(ds.origins) == ["train"] * 7 + ["val"] * 3 + ["test"] * 2


def test_npz_with_unequal_sizes_or_float_images_names_the_file_and_split(tmp_path):
    lab = np.zeros((2, 1), dtype=np.int64)
    np.savez(tmp_path / "sizes.npz", train_images=np.zeros((2, 8, 8), np.uint8),
             val_images=np.zeros((2, 9, 9), np.uint8), test_images=np.zeros((2, 8, 8), np.uint8),
             train_labels=lab, val_labels=lab, test_labels=lab)
    with pytest.raises(OCTDataError, match="sizes.npz.*differ in size"):
        load_octmnist_npz(tmp_path / "sizes.npz")
    np.savez(tmp_path / "float.npz", train_images=np.zeros((2, 8, 8), np.float32),
             val_images=np.zeros((2, 8, 8), np.uint8), test_images=np.zeros((2, 8, 8), np.uint8),
             train_labels=lab, val_labels=lab, test_labels=lab)
    with pytest.raises(OCTDataError, match="float.npz: train_images has shape .* float32"):
        load_octmnist_npz(tmp_path / "float.npz")
