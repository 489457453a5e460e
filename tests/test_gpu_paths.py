"""The GPU code paths, proven on CPU: mixed-precision training (save, reload, attack through a float32 clone),
MirroredStrategy over two logical CPU devices, and what notebook 10 prints about the device in both cases.

Tolerances: a float16-compute model's input gradients agree with its float32 clone's to a cosine similarity of at
least 0.99 (float16 keeps ~3 significant digits); the two-replica victim's validation accuracy is within 0.05 of
the one-device run on the same 270 validation scans (the replicas normalise their half-batches separately, so the
runs are not bit-identical).
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from octlib.config import TrainConfig
from octlib.data import load_folder, make_splits

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
from octlib import training  # noqa: E402
from octlib.models import float32_model  # noqa: E402

TINY = TrainConfig(filters=(4, 8), epochs=2, batch_size=8, early_stopping_patience=1, reduce_lr_patience=1)


def _input_gradient(model, x, y):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = keras.losses.categorical_crossentropy(tf.one_hot(y, 4), tf.cast(model(x, training=False), "float32"),
                                                     from_logits=True)
    return tape.gradient(loss, x).numpy().astype(np.float64)


def test_mixed_precision_training_saves_reloads_and_is_attacked_in_float32(small_layout, tmp_path):
    splits = make_splits(load_folder(small_layout, 16, progress=False), "official", seed=0)
    before = keras.mixed_precision.global_policy().name
    model, info = training.train(splits.train.images, splits.train.labels, splits.val.images, splits.val.labels,
                                 TINY, image_size=16, seed=0, verbose=0, mixed_precision=True)
    assert keras.mixed_precision.global_policy().name == before  # the policy is restored after training
    assert info["mixed_precision"] is True and info["device"]["device"] == "CPU"
    convs = [layer for layer in model.layers if "conv" in layer.name]
    assert convs and all(layer.dtype_policy.compute_dtype == "float16" for layer in convs)
    assert model.layers[-1].dtype_policy.compute_dtype == "float32"  # logits stay float32
    assert np.isfinite(info["history"]["loss"]).all()

    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True, compile=False)  # as artifacts.load_model does
    x, y = splits.test.x[:16], splits.test.labels[:16]
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert any(layer.dtype_policy.compute_dtype == "float16" for layer in reloaded.layers)

    clone = float32_model(reloaded)
    assert all(layer.dtype_policy.compute_dtype == "float32" for layer in clone.layers)
    g16, g32 = _input_gradient(reloaded, x, y), _input_gradient(clone, x, y)
    cosine = float((g16 * g32).sum() / (np.linalg.norm(g16) * np.linalg.norm(g32)))
    assert cosine >= 0.99, cosine
    # the sign of the gradient (what FGSM steps along) agrees on nearly every pixel where it is not tiny
    big = np.abs(g32) > 1e-3 * np.abs(g32).max()
    assert (np.sign(g16[big]) == np.sign(g32[big])).mean() >= 0.95


_MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from octlib.config import TrainConfig
    from octlib.data import load_folder, make_splits
    from octlib import training
    splits = make_splits(load_folder(sys.argv[1], 32, progress=False), "pooled", seed=0)
    cfg = TrainConfig(filters=(8, 16, 32), dense_units=32, epochs=10, batch_size=32, augment="none",
                      lr_schedule="cosine", learning_rate=2e-3)
    out = {}
    for name, strategy in (("one", None), ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
        model, info = training.train(splits.train.images, splits.train.labels, splits.val.images,
                                     splits.val.labels, cfg, image_size=32, seed=0, verbose=0, strategy=strategy)
        pred = model.predict(splits.val.images, verbose=0).argmax(1)
        out[name] = {"val_accuracy": float((pred == splits.val.labels).mean()), "n": int(len(pred)),
                     "strategy": info["device"]["strategy"], "replicas": info["device"]["replicas"]}
    print(json.dumps(out))
""")


@pytest.mark.sample
@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus_matches_one_device(sample_root):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", _MIRRORED, str(sample_root)], capture_output=True, text=True,
                          env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    print(out)
    assert out["one"]["strategy"] == "default" and out["one"]["replicas"] == 1
    assert out["mirrored"]["strategy"] == "MirroredStrategy" and out["mirrored"]["replicas"] == 2
    assert out["one"]["val_accuracy"] > 0.5, out  # it learned something: chance is 0.25
    assert abs(out["mirrored"]["val_accuracy"] - out["one"]["val_accuracy"]) <= 0.05, out


class _FakeGPU:
    def __init__(self, name):
        self.name = name


@pytest.mark.parametrize("gpus, device, strategy", [
    ([], "CPU", "default"),
    (["Tesla T4"], "GPU: Tesla T4", "default"),
    (["Tesla T4", "Tesla T4"], "GPU: Tesla T4, Tesla T4", "MirroredStrategy"),
])
def test_what_notebook_10_prints_about_the_device(monkeypatch, capsys, gpus, device, strategy):
    fakes = [_FakeGPU(f"/physical_device:GPU:{i}") for i in range(len(gpus))]
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: fakes if kind == "GPU" else [])
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda g: {"device_name": gpus[fakes.index(g)]})
    devices = training.describe_devices()
    assert devices["device"] == device and devices["strategy"] == strategy and devices["gpus"] == gpus
    notebook = json.loads((Path(__file__).parents[1] / "notebooks" / "10_train_cnn.ipynb").read_text())
    lines = [line.strip() for cell in notebook["cells"] if cell["cell_type"] == "code"
             for line in "".join(cell["source"]).splitlines() if line.strip().startswith('print(f"device:')]
    assert len(lines) == 1, lines
    exec(lines[0], {"devices": devices})  # notebook 10's own line
    assert capsys.readouterr().out.strip() == f"device: {device} (strategy: {strategy})"
