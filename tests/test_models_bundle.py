"""Moving trained models between machines: `python -m octlib models export` / `import`, checked by SHA-256,
over a local HTTP server on 127.0.0.1."""

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from octlib.__main__ import main  # noqa: E402
from octlib.artifacts import ArtifactError, export_models, import_models, load_artifact, save_artifact  # noqa: E402
from octlib.config import TrainConfig  # noqa: E402
from octlib.models import build_cnn  # noqa: E402
from tests.test_octmnist import Server  # noqa: E402

TINY = TrainConfig(filters=(4, 8), dense_units=0)


@pytest.fixture
def store(tmp_path):
    """A model store with two small trained-looking models."""
    root = tmp_path / "here"
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        save_artifact(build_cnn(16, TINY), {"seed": seed}, "cnn-test", str(seed) * 64, root)
    return root


def test_export_then_import_gives_the_same_models(store, tmp_path):
    bundle, digest = export_models(tmp_path / "models.tar.gz", root=store)
    assert digest == hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert (tmp_path / "models.tar.gz.sha256").read_text().split()[0] == digest
    elsewhere = tmp_path / "elsewhere"
    names = import_models(bundle, digest, root=elsewhere)
    assert names == sorted(p.name for p in store.iterdir() if not p.name.startswith("."))
    for name in names:
        a, b = load_artifact(store / name), load_artifact(elsewhere / name)
        assert a.sidecar["weights_sha256"] == b.sidecar["weights_sha256"]
        for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
            np.testing.assert_array_equal(wa, wb)
    assert import_models(bundle, digest, root=elsewhere) == []  # already there and identical: kept
    assert not [p for p in elsewhere.iterdir() if p.name.startswith(".")]  # no work folders left


def test_import_over_http_checks_the_digest(store, tmp_path):
    bundle, digest = export_models(tmp_path / "models.tar.gz", ["cnn-test-000000000000"], root=store)
    data = bundle.read_bytes()
    with Server({"/models.tar.gz": data, "/truncated": data}) as srv:
        with pytest.raises(ArtifactError, match="SHA-256"):  # a URL without the published digest is refused
            import_models(f"{srv.url}/models.tar.gz", root=tmp_path / "a")
        with pytest.raises(ValueError, match="SHA-256"):  # the wrong digest: nothing installed
            import_models(f"{srv.url}/models.tar.gz", "0" * 64, root=tmp_path / "b")
        assert not [p for p in (tmp_path / "b").iterdir()]
        with pytest.raises(ValueError, match="truncated"):
            import_models(f"{srv.url}/truncated", digest, root=tmp_path / "c")
        assert import_models(f"{srv.url}/models.tar.gz", digest, root=tmp_path / "d") == ["cnn-test-000000000000"]
    assert load_artifact(tmp_path / "d" / "cnn-test-000000000000").cached


def test_import_refuses_a_tampered_bundle_and_a_different_model(store, tmp_path):
    bundle, _ = export_models(tmp_path / "models.tar.gz", root=store)
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(bundle) as src, tarfile.open(tampered, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith("000000000000/model.json"):
                sidecar = json.loads(data)
                sidecar["seed"] = 99
                data = json.dumps(sidecar).encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    with pytest.raises(ArtifactError, match="does not match the bundle's manifest"):
        import_models(tampered, root=tmp_path / "t")
    assert not (tmp_path / "t" / "cnn-test-000000000000").exists()
    # a model of the same name with other weights (trained here on another CPU, say) is never overwritten
    other = tmp_path / "other"
    keras.utils.set_random_seed(5)
    save_artifact(build_cnn(16, TINY), {"seed": 0}, "cnn-test", "0" * 64, other)
    with pytest.raises(ArtifactError, match="another model under the same name"):
        import_models(bundle, root=other)
    with pytest.raises(ArtifactError, match="not a model bundle"):
        (tmp_path / "junk.tar.gz").write_bytes(b"junk")
        import_models(tmp_path / "junk.tar.gz", root=other)


def test_cli_exports_and_imports_with_clear_errors(store, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OCTLIB_ARTIFACTS", str(store))
    assert main(["models", "export", str(tmp_path / "m.tar.gz")]) == 0
    digest = (tmp_path / "m.tar.gz.sha256").read_text().split()[0]
    assert digest in capsys.readouterr().out
    monkeypatch.setenv("OCTLIB_ARTIFACTS", str(tmp_path / "new"))
    assert main(["models", "import", str(tmp_path / "m.tar.gz"), "--sha256", digest]) == 0
    assert "installed 2 models" in capsys.readouterr().out
    assert main(["models", "import", str(tmp_path / "nothing.tar.gz")]) == 2
    assert "No model bundle at" in capsys.readouterr().err
    assert main(["models", "export", str(tmp_path / "x.tar.gz"), "--name", "cnn-none"]) == 2
    assert "No trained model" in capsys.readouterr().err
