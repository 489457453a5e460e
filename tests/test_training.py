"""Model, training pipeline and the cached model artifact, on a tiny model and tiny data."""

import dataclasses
import json
from dataclasses import replace

import numpy as np
import pytest

from octlib.config import PROFILES, TrainConfig
from octlib.data import load_folder, make_splits

keras = pytest.importorskip("keras")
from octlib import artifacts, attacks, training  # noqa: E402

tf = pytest.importorskip("tensorflow")
from octlib.models import build_cnn  # noqa: E402

TINY = TrainConfig(filters=(4, 8), epochs=2, batch_size=8, early_stopping_patience=1, reduce_lr_patience=1,
                   augment="standard")


@pytest.fixture
def splits(small_layout):
    return make_splits(load_folder(small_layout, 16, progress=False), "official", seed=0)


def test_cnn_outputs_logits_for_one_channel_input():
    model = build_cnn(32, TINY)
    assert model.input_shape == (None, 32, 32, 1) and model.output_shape == (None, 4)
    assert model.layers[-1].activation.__name__ == "linear"
    out = model(np.random.default_rng(0).random((3, 32, 32, 1), dtype=np.float32)).numpy()
    assert not np.allclose(out.sum(axis=1), 1.0)  # logits, not probabilities
    with pytest.raises(ValueError, match="too small"):
        build_cnn(8, TrainConfig(filters=(4, 4, 4, 4)))


def test_train_config_validates():
    with pytest.raises(ValueError, match="augment"):
        TrainConfig(augment="vertical_flip")


def test_augmented_batches_repeat_for_a_seed():
    imgs = np.random.default_rng(0).integers(0, 256, (64, 16, 16), dtype=np.uint8)
    labels = np.arange(64) % 4

    def epoch():
        keras.utils.set_random_seed(7)
        ds = training.make_dataset(imgs, labels, batch_size=8, training=True, augment="standard+blur", seed=7)
        return np.concatenate([x.numpy() for x, _ in ds])

    np.testing.assert_array_equal(epoch(), epoch())


def test_pipeline_batches_floats_in_unit_range_and_augments_only_training():
    imgs = np.random.default_rng(0).integers(0, 256, (20, 16, 16), dtype=np.uint8)
    labels = np.arange(20) % 4
    x, y = next(iter(training.make_dataset(imgs, labels, batch_size=8)))
    assert x.shape == (8, 16, 16, 1) and x.dtype.name == "float32"
    np.testing.assert_allclose(x.numpy()[..., 0], imgs[:8] / 255.0, atol=1e-6)
    xa, _ = next(iter(training.make_dataset(imgs, labels, batch_size=20, training=True, augment="standard+blur")))
    assert 0.0 <= xa.numpy().min() and xa.numpy().max() <= 1.0
    with pytest.raises(ValueError, match="uint8"):
        training.make_dataset(imgs.astype(np.float32), labels, batch_size=8)


def test_class_weights_balance_an_imbalanced_source():
    w = training.class_weights(np.array([3] * 6 + [0] * 2 + [1, 2]))
    assert w[3] < 1 < w[0] and sum(w[k] * n for k, n in zip(range(4), (2, 1, 1, 6))) == pytest.approx(10)
    assert training.class_weights(np.array([0, 1]), "none") is None


@pytest.mark.parametrize("augment", ["none", "standard+blur"])
def test_training_is_deterministic_on_cpu_for_a_seed(splits, augment):
    cfg = replace(TINY, augment=augment, epochs=3)
    a, _ = training.train(splits.train.images, splits.train.labels, splits.val.images, splits.val.labels, cfg,
                          image_size=16, seed=3, verbose=0)
    b, _ = training.train(splits.train.images, splits.train.labels, splits.val.images, splits.val.labels, cfg,
                          image_size=16, seed=3, verbose=0)
    np.testing.assert_array_equal(a.predict(splits.test.x, verbose=0), b.predict(splits.test.x, verbose=0))


def test_second_request_reuses_the_cached_model(splits, tmp_path, capsys):
    first = artifacts.get_or_train(splits, TINY, name="tiny", seed=0, verbose=0, root=tmp_path)
    assert not first.cached and "Training tiny" in capsys.readouterr().out
    second = artifacts.get_or_train(splits, TINY, name="tiny", seed=0, verbose=0, root=tmp_path)
    assert second.cached and "Loaded cached model" in capsys.readouterr().out
    assert second.key == first.key
    np.testing.assert_allclose(first.model.predict(splits.test.x, verbose=0),
                               second.model.predict(splits.test.x, verbose=0), rtol=1e-6)
    side = second.sidecar
    assert side["metrics"]["test"]["accuracy"]["n"] == len(splits.test)
    assert side["data"]["fingerprint"] == splits.info["fingerprint"] and side["training"]["epochs_run"] >= 1
    assert side["versions"]["keras"] and side["training"]["device"]["device"]
    summary = second.training_summary()
    kept = side["training"]["best_epoch"]
    assert summary["epochs"] == side["training"]["epochs_run"] and summary["selected on"] == "validation loss"
    assert summary["validation accuracy (kept epoch)"] == side["training"]["history"]["val_accuracy"][kept - 1]


def test_the_weights_digest_names_the_trained_weights_not_the_file(splits, tmp_path):
    first = artifacts.get_or_train(splits, TINY, name="tiny", seed=0, verbose=0, root=tmp_path)
    digest = first.sidecar["weights_sha256"]
    assert digest == artifacts.weights_digest(first.model) == artifacts.stored_weights_digest(first.path.name, tmp_path)
    assert artifacts.get_or_train(splits, TINY, name="tiny", seed=0, root=tmp_path).sidecar["weights_sha256"] == digest
    again = artifacts.get_or_train(splits, TINY, name="tiny", seed=0, verbose=0, retrain="always", root=tmp_path)
    assert again.sidecar["weights_sha256"] == digest  # the same training on one machine: the same weights
    other = artifacts.get_or_train(splits, TINY, name="tiny", seed=1, verbose=0, root=tmp_path)
    assert other.sidecar["weights_sha256"] != digest
    assert artifacts.stored_weights_digest("no-such-model", tmp_path) is None
    assert artifacts.stored_weights_digest(None) is None
    # a sidecar written before the digest: computed on loading, not written back
    sidecar = json.loads((first.path / "model.json").read_text())
    del sidecar["weights_sha256"]
    (first.path / "model.json").write_text(json.dumps(sidecar))
    assert artifacts.stored_weights_digest(first.path.name, tmp_path) is None
    assert artifacts.load_artifact(first.path).sidecar["weights_sha256"] == digest


def test_a_retrained_victim_is_adopted_by_older_results_only_if_it_reproduces_them(splits, tmp_path):
    from octlib import evaluation, metrics, records
    from octlib.results import ResultsError, load_results

    victim = artifacts.get_or_train(splits, TINY, name="tiny", seed=0, verbose=0, root=tmp_path / "models")
    x, y, ids = splits.test.x, splits.test.labels, [f"s{i}" for i in range(len(splits.test.labels))]
    logits = metrics.predict_logits(victim.model, x)
    loss = metrics.cross_entropy(y, logits, per_example=True)
    rows = evaluation.outcome_rows("undefended", "none", "suite", evaluation.ThreatModel(eps_255=(1.0,), headline_255=1.0), y,
                                   logits.argmax(1), loss, [[1] * len(y)], [loss], ids, list(range(len(y))))
    store = tmp_path / "results"
    # results written before the digest (the victim is not in the default artifact store, so none is stamped)
    records.write_records("20_attack_fgsm", rows, notebook="20.ipynb", profile="quick", victim=victim.path.name,
                          data={"fingerprint": "abc"}, results_dir=store)
    assert load_results("20_attack_fgsm", store)["victim_weights"] is None
    other = artifacts.get_or_train(splits, TINY, name="tiny", seed=1, verbose=0, root=tmp_path / "models")
    other.path = victim.path  # the same name, trained again with other weights
    with pytest.raises(ResultsError, match="not the model the results were made with"):
        records.adopt_victim_weights(other, x, ids, results_dir=store)
    with pytest.raises(ResultsError, match="not among the scans given"):
        records.adopt_victim_weights(victim, x[:3], ids[:3], results_dir=store)
    order = np.arange(len(y))[::-1]  # the scans may come in another order
    assert records.adopt_victim_weights(victim, x[order], [ids[i] for i in order], results_dir=store) == \
        ["20_attack_fgsm"]
    frame = records.read_records(store)
    assert set(frame["victim_weights"]) == {victim.sidecar["weights_sha256"]}
    assert load_results("20_attack_fgsm", store)["victim_weights"] == victim.sidecar["weights_sha256"]
    records.check_one_study(frame)
    assert records.adopt_victim_weights(victim, x, ids, results_dir=store) == []  # nothing left to stamp


def test_the_key_not_the_name_decides_reuse(splits, tmp_path):
    first = artifacts.get_or_train(splits, TINY, name="tiny", seed=0, verbose=0, root=tmp_path)
    other = artifacts.get_or_train(splits, TINY, name="tiny-again", seed=0, verbose=0, root=tmp_path)
    assert other.cached and other.path == first.path


def test_release_shift_study_scores_each_variant_on_the_same_scans_as_the_default(splits, tmp_path):
    victim = artifacts.get_or_train(splits, TINY, name="tiny", seed=0, verbose=0, root=tmp_path)
    rows = artifacts.release_shift_study(splits, TINY, ["no augmentation"], seed=0, root=tmp_path)
    assert list(rows) == ["default", "no augmentation"]
    assert rows["default"]["cached"] and rows["default"]["artifact"] == victim.path.name  # the key decides reuse
    assert not rows["no augmentation"]["cached"] and rows["no augmentation"]["artifact"] != victim.path.name
    for r in rows.values():
        assert r["n_test"] == len(splits.test.labels) == len(r["test_correct"]) and r["n_val"] == len(splits.val.labels)
        assert r["test accuracy"] == pytest.approx(np.mean(r["test_correct"]))
        assert r["val ci_low"] <= r["val accuracy"] <= r["val ci_high"] and r["selected_on"] == "validation loss"
    default, other = (np.array(rows[k]["test_correct"], dtype=bool) for k in ("default", "no augmentation"))
    assert rows["default"]["paired_vs_default"]["p_value"] == 1.0
    assert rows["no augmentation"]["paired_vs_default"]["a_only"] == int((other & ~default).sum())
    assert rows["no augmentation"]["paired_vs_default"]["b_only"] == int((~other & default).sum())
    again = artifacts.release_shift_study(splits, TINY, ("no augmentation", "default"), seed=0, root=tmp_path)
    assert list(again) == ["default", "no augmentation"] and all(r["cached"] for r in again.values())
    assert again["no augmentation"]["test_correct"] == rows["no augmentation"]["test_correct"]
    with pytest.raises(ValueError, match="SHIFT_VARIANTS.*VARIANTS"):
        artifacts.release_shift_study(splits, TINY, ["no blur"], root=tmp_path)


def test_every_profile_names_known_release_shift_variants():
    for name, profile in PROFILES.items():  # notebook 11 trains these; a typo would only fail there
        assert profile.shift_variants, name
        assert set(profile.shift_variants) <= set(artifacts.SHIFT_VARIANTS) - {"default"}, name


def test_changed_setting_seed_or_split_retrains(splits, tmp_path):
    base = artifacts.artifact_key(splits, TINY, seed=0)[0]
    assert artifacts.artifact_key(splits, replace(TINY, learning_rate=1e-2), seed=0)[0] != base
    assert artifacts.artifact_key(splits, TINY, seed=1)[0] != base
    other = make_splits(splits.train.subset(np.arange(len(splits.train))), "pooled", seed=5)  # other membership
    assert artifacts.artifact_key(other, TINY, seed=0)[0] != base
    assert artifacts.artifact_key(splits, TINY, seed=0, extra={"defence": "noise"})[0] != base


def test_never_mode_says_run_the_training_notebook(splits, tmp_path):
    with pytest.raises(artifacts.ArtifactError, match="10_train_cnn"):
        artifacts.get_or_train(splits, TINY, name="tiny", retrain="never", root=tmp_path)


def test_corrupt_or_mismatched_artifacts_give_clear_errors(splits, tmp_path):
    trained = artifacts.get_or_train(splits, TINY, name="tiny", seed=0, verbose=0, root=tmp_path)
    folder = trained.path
    with pytest.raises(artifacts.ArtifactError, match="refusing to load"):
        artifacts.load_artifact(folder, expected_key="0" * 64)
    model_file = folder / "model.keras"
    model_file.write_bytes(model_file.read_bytes()[:1000])  # truncated weights
    with pytest.raises(artifacts.ArtifactError, match="corrupt"):
        artifacts.get_or_train(splits, TINY, name="tiny", seed=0, verbose=0, root=tmp_path)
    side = json.loads((folder / "model.json").read_text())
    side["model_sha256"] = artifacts._sha256(model_file)  # hash matches, but the zip is broken
    (folder / "model.json").write_text(json.dumps(side))
    with pytest.raises(artifacts.ArtifactError, match="Keras cannot load"):
        artifacts.load_artifact(folder)
    (folder / "model.json").write_text("{broken")
    with pytest.raises(artifacts.ArtifactError, match="not valid JSON"):
        artifacts.load_artifact(folder)
    assert list(tmp_path.glob(".tiny-*")) == []  # no temporary folder left behind


def test_new_settings_leave_old_keys_alone(splits):
    """noise_sigma / adv_* were added after artifact keys existed: at their defaults they are not in the key."""
    key, spec = artifacts.artifact_key(splits, TINY, seed=0)
    assert "noise_sigma" not in spec["train_config"] and "adv_eps_255" not in spec["train_config"]
    noisy, spec2 = artifacts.artifact_key(splits, replace(TINY, noise_sigma=0.25), seed=0)
    robust, _ = artifacts.artifact_key(splits, replace(TINY, adv_eps_255=2, adv_steps=3), seed=0)
    assert len({key, noisy, robust}) == 3 and spec2["train_config"]["noise_sigma"] == 0.25
    with pytest.raises(ValueError, match="adv_steps"):
        TrainConfig(adv_eps_255=2)  # adversarial training needs steps


def test_training_noise_is_added_to_training_batches_only():
    images = np.full((8, 16, 16), 128, dtype=np.uint8)
    noisy = next(iter(training.make_dataset(images, None, batch_size=8, training=True, noise_sigma=0.25))).numpy()
    clean = next(iter(training.make_dataset(images, None, batch_size=8, noise_sigma=0.25))).numpy()
    assert np.allclose(clean, 128 / 255) and 0.2 < (noisy - 128 / 255).std() < 0.3
    assert noisy.min() < 0 or noisy.max() > 1  # not clipped: the noise randomized smoothing certifies under


def test_a_noise_fraction_mixes_clean_and_noisy_training_scans_and_validates_on_both(splits):
    images = np.full((400, 8, 8), 128, dtype=np.uint8)
    x = np.concatenate([b.numpy() for b in training.make_dataset(images, None, batch_size=50, training=True,
                                                                 noise_sigma=0.25, noise_fraction=0.3)])
    clean = np.all(x == np.float32(128 / 255), axis=(1, 2, 3))
    assert 0.6 < clean.mean() < 0.8  # about 70% of the scans stay clean, the rest get the whole noise
    assert 0.2 < (x[~clean] - 128 / 255).std() < 0.3
    # validated on both: the validation loss is the mean of the clean and the noisy copies' losses
    xv, yv = splits.val.x, keras.utils.to_categorical(splits.val.labels, 4)
    inner = build_cnn(16, TINY)
    clean_loss = training.compile_model(inner, TINY).evaluate(xv, yv, verbose=0, return_dict=True)["loss"]
    noisy = training.compile_model(training.noisy_validator(inner, 0.3, seed=5), TINY)
    noisy_loss = noisy.evaluate(xv, yv, verbose=0, return_dict=True, batch_size=len(xv))["loss"]
    both = training.compile_model(training.noisy_validator(inner, 0.3, seed=5, with_clean=True), TINY)
    both_loss = both.evaluate(xv, yv, verbose=0, return_dict=True, batch_size=len(xv))["loss"]
    assert both_loss == pytest.approx((clean_loss + noisy_loss) / 2, rel=1e-4)
    with pytest.raises(ValueError, match="noise_fraction"):
        TrainConfig(noise_sigma=0.1, noise_fraction=0)


def test_adversarial_training_trains_on_pgd_examples(splits):
    cfg = replace(TINY, adv_eps_255=8, adv_steps=2, augment="none", epochs=1)
    model, info = training.train(splits.train.images, splits.train.labels, splits.val.images, splits.val.labels, cfg,
                                 image_size=16, seed=0, verbose=0)
    assert model.name == "oct_cnn" and info["epochs_run"] == 1  # the plain model, not the training wrapper
    assert np.isfinite(info["history"]["loss"]).all() and "val_loss" in info["history"]
    inner = build_cnn(16, TINY)
    wrapper = training.adversarial_trainer(inner, 8 / 255, 2)
    assert wrapper.inner is inner and set(map(id, wrapper.trainable_variables)) == set(map(id, inner.trainable_variables))
    with pytest.raises(ValueError, match="adversarial training"):
        training.adversarial_trainer(inner, 8, 2)  # 0-255 scale


def test_adversarial_training_steps_on_the_pgd_examples_of_the_attacks_pgd(splits):
    """The trainer's examples are PGD's (the same iteration as attacks.pgd through ART, from the same start), and
    each optimizer step is taken on them, not on the clean batch."""
    from octlib import estimators

    keras.utils.set_random_seed(0)
    cfg = replace(TINY, dropout=0.0)  # no random mask: two steps on the same batch from the same weights agree
    inner = build_cnn(16, cfg)
    x, y = splits.val.x[:16], splits.val.labels[:16]
    onehot = keras.utils.to_categorical(y, 4).astype(np.float32)
    eps, steps = 8 / 255, 3
    ours = attacks.pgd_linf_steps(inner, tf.constant(x), tf.constant(onehot), tf.constant(x), eps, steps,
                                  2.5 * eps / steps).numpy()
    art = attacks.pgd(estimators.art_classifier(inner), x, y, eps, steps=steps, restarts=0, progress=False).x_adv
    np.testing.assert_allclose(ours, art, atol=1e-6)
    assert np.abs(ours - x).max() <= eps + 1e-6 and not np.allclose(ours, x)
    wrapper = training.adversarial_trainer(inner, eps, steps)
    crafted = wrapper.attack(tf.constant(x), tf.constant(onehot)).numpy()  # a random start, then those steps
    assert np.abs(crafted - x).max() <= eps + 1e-6 and crafted.min() >= 0 and crafted.max() <= 1
    ce = keras.losses.CategoricalCrossentropy(from_logits=True)
    assert float(ce(onehot, inner(crafted))) > float(ce(onehot, inner(x)))  # ascended the loss
    seen = []
    original = wrapper.attack
    wrapper.attack = lambda xb, yb: seen.append(original(xb, yb)) or seen[-1]
    def sgd(model):  # plain SGD: a step is -lr * gradient (Adam's first step would amplify rounding in tiny gradients)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.CategoricalCrossentropy(from_logits=True))
        return model

    sgd(wrapper).run_eagerly = True  # every step calls attack in Python, so the examples it trains on can be read
    before = [w.numpy().copy() for w in inner.trainable_variables]
    wrapper.fit(x, onehot, batch_size=16, epochs=1, verbose=0, shuffle=False)
    assert len(seen) == 1 and np.abs(seen[0].numpy() - x).max() > 0  # one batch, replaced by its PGD examples
    # the step was taken on those examples: the same step on them from the same weights gives the same weights
    after = [w.numpy().copy() for w in inner.trainable_variables]
    for w, v in zip(inner.trainable_variables, before):
        w.assign(v)
    sgd(inner).fit(seen[0].numpy(), onehot, batch_size=16, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(after, [w.numpy() for w in inner.trainable_variables]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert any(not np.allclose(a, b) for a, b in zip(after, before))  # and the step moved the weights


def test_validation_under_the_threat_attacks_or_noises_the_validation_scans(splits):
    x = splits.val.x
    y = keras.utils.to_categorical(splits.val.labels, 4)
    inner = build_cnn(16, TINY)
    for validate, expect in ((False, "equal"), (True, "higher")):
        wrapper = training.compile_model(training.adversarial_trainer(inner, 16 / 255, 3, validate_adversarial=validate),
                                         TINY)
        clean = training.compile_model(inner, TINY).evaluate(x, y, verbose=0, return_dict=True)["loss"]
        under = wrapper.evaluate(x, y, verbose=0, return_dict=True)["loss"]
        assert (under > clean + 1e-4) if expect == "higher" else under == pytest.approx(clean, rel=1e-5)
    noisy = training.compile_model(training.noisy_validator(inner, 0.3), TINY)
    losses = {round(noisy.evaluate(x, y, verbose=0, return_dict=True)["loss"], 6) for _ in range(2)}
    assert len(losses) == 2  # fresh noise on every validation pass


def test_defences_select_their_epoch_under_their_own_threat(splits):
    def fit(cfg):
        return training.train(splits.train.images, splits.train.labels, splits.val.images, splits.val.labels, cfg,
                              image_size=16, seed=0, verbose=0)[1]

    at = fit(replace(TINY, adv_eps_255=8, adv_steps=2, augment="none", epochs=1, validate_under_threat=True))
    noise = fit(replace(TINY, noise_sigma=0.3, augment="none", epochs=1, validate_under_threat=True))
    plain = fit(replace(TINY, augment="none", epochs=1))
    assert at["selected_on"] == "robust validation accuracy" and noise["selected_on"] == "noisy validation loss"
    assert plain["selected_on"] == "validation loss"
    assert "validate_under_threat" not in TINY.key_dict()  # old artifact keys unchanged
    assert replace(TINY, validate_under_threat=True).key_dict()["validate_under_threat"] is True


def test_a_mixed_precision_model_is_attacked_through_a_float32_clone():
    import tensorflow as tf

    from octlib.models import float32_model

    plain = build_cnn(16, TINY)
    assert float32_model(plain) is plain
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = build_cnn(16, TINY)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    mixed.set_weights(plain.get_weights())
    clone = float32_model(mixed)
    assert clone is not mixed and all(layer.dtype_policy.compute_dtype == "float32" for layer in clone.layers)
    x = tf.constant(np.random.default_rng(0).random((4, 16, 16, 1), dtype=np.float32))
    y = tf.one_hot([0, 1, 2, 3], 4)

    def input_gradient(model):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = keras.losses.categorical_crossentropy(y, model(x, training=False), from_logits=True)
        return tape.gradient(loss, x).numpy()

    reference = input_gradient(plain)
    np.testing.assert_allclose(input_gradient(clone), reference, rtol=1e-4, atol=1e-7)  # float32 reference
    assert mixed.layers[2].dtype_policy.compute_dtype == "float16"


def test_cosine_schedule_decays_over_all_epochs_without_early_stopping(splits):
    cfg = replace(TINY, lr_schedule="cosine", epochs=3, early_stopping_patience=1, learning_rate=1e-2)
    assert "lr_schedule" not in artifacts.artifact_key(splits, TINY, seed=0)[1]["train_config"]  # old keys stay
    assert artifacts.artifact_key(splits, cfg, seed=0)[1]["train_config"]["lr_schedule"] == "cosine"
    model, info = training.train(splits.train.images, splits.train.labels, splits.val.images, splits.val.labels, cfg,
                                 image_size=16, seed=0, verbose=0)
    assert info["epochs_run"] == 3  # patience 1 would have stopped a plateau run on a flat validation loss
    lrs = info["history"]["learning_rate"]
    assert lrs[0] < 1e-2 and lrs[-1] < lrs[0] and lrs[-1] >= 1e-4 * 0.99  # decays towards 1% of the start
    steps = -(-len(splits.train) // cfg.batch_size)
    schedule = training.compile_model(build_cnn(16, cfg), cfg, steps_per_epoch=steps).optimizer.learning_rate
    with pytest.raises(ValueError, match="steps_per_epoch"):
        training.compile_model(build_cnn(16, cfg), cfg)
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")
    assert schedule is not None


def test_seeds_of_one_recipe_reuse_what_is_loaded_and_the_cache(splits, tmp_path):
    first = artifacts.get_or_train(splits, TINY, name="tiny", seed=0, verbose=0, root=tmp_path)
    calls = []
    real = artifacts.get_or_train

    def counting(*args, **kwargs):
        calls.append(kwargs["seed"])
        return real(*args, **kwargs, root=tmp_path)

    import unittest.mock as mock

    with mock.patch.object(artifacts, "get_or_train", counting):
        got = artifacts.get_or_train_seeds(splits, TINY, (0, 1), name="tiny", trained={0: first})
    assert got[0] is first and calls == [1] and got[1].sidecar["spec"]["seed"] == 1


def test_fine_tuning_starts_from_the_given_model_and_keys_on_its_weights(splits, tmp_path):
    """A fine-tuned defence model starts from the victim's weights (not a fresh initialisation), and another
    starting model is another artifact."""
    victim = artifacts.get_or_train(splits, TINY, name="tiny", seed=0, verbose=0, root=tmp_path)
    still = replace(TINY, epochs=1, learning_rate=1e-12, weight_decay=0.0, augment="none")  # a step that moves nothing
    tuned = artifacts.get_or_train(splits, still, name="tiny-ft", seed=5, verbose=0, root=tmp_path, initial=victim)
    scratch = artifacts.get_or_train(splits, still, name="tiny-scratch", seed=5, verbose=0, root=tmp_path)
    for model, same in ((tuned.model, True), (scratch.model, False)):  # kernels and biases (batch-norm statistics move)
        close = [np.allclose(a, b, atol=1e-6) for a, b in zip(model.trainable_weights, victim.model.trainable_weights)]
        assert all(close) if same else not any(close[:1])
    assert tuned.sidecar["spec"]["extra"]["initial"] == {"artifact": victim.path.name,
                                                         "weights_sha256": victim.sidecar["weights_sha256"]}
    other = artifacts.get_or_train(splits, TINY, name="tiny", seed=1, verbose=0, root=tmp_path)
    from_other = artifacts.get_or_train(splits, still, name="tiny-ft", seed=5, verbose=0, root=tmp_path, initial=other)
    assert not from_other.cached and from_other.key != tuned.key
    with pytest.raises(ValueError, match="`initial` must have this recipe's architecture"):
        training.train(splits.train.images, splits.train.labels, splits.val.images, splits.val.labels,
                       replace(still, filters=(4,)), image_size=16, initial=victim.model, verbose=0)


def test_defence_models_share_the_victims_recipe(monkeypatch):
    """Every notebook that uses a retrained victim gets it from one recipe: the victim's settings with the defence's
    one change, the defence's epochs, and a name that says which defence it is."""
    from types import SimpleNamespace

    from octlib.config import get_profile

    calls = []
    monkeypatch.setattr(artifacts, "get_or_train", lambda splits, cfg, **kw: calls.append((cfg, kw)) or "model")
    profile = get_profile("full")
    splits = SimpleNamespace(info={"policy": "pooled"})
    assert artifacts.get_or_train_defence(splits, profile, "label_smoothing", 0.1, seed=3) == "model"
    artifacts.get_or_train_defence(splits, profile, "noise", 0.25)
    artifacts.get_or_train_defence(splits, profile, "adversarial", 4)
    artifacts.get_or_train_defence(splits, profile, "trades", 4)
    # the full profile fine-tunes label smoothing, adversarial training and TRADES from the study victim (loaded
    # first), noise training starts from scratch
    assert profile.defence.finetune == ("adversarial", "label_smoothing", "trades")
    (victim, victim_kw), (ls, ls_kw), (noise, noise_kw), (victim_again, _), (adv, adv_kw), (victim_3, _), \
        (trades, trades_kw) = calls
    assert victim_again == victim == victim_3
    assert (victim, victim_kw["name"], victim_kw["seed"], victim_kw["retrain"]) == (profile.train, "cnn-pooled", 3,
                                                                                   "auto")
    assert (ls_kw["name"], ls_kw["seed"], ls.label_smoothing, ls_kw["initial"]) == ("cnn-pooled-ls0.1", 3, 0.1, "model")
    assert (ls.epochs, ls.learning_rate) == (profile.defence.finetune_epochs, profile.train.learning_rate / 10)
    assert (noise_kw["name"], noise.noise_sigma, noise.validate_under_threat) == ("cnn-pooled-noise0.25-mix0.5", 0.25,
                                                                                  True)
    assert noise.noise_fraction == profile.defence.noise_fraction == 0.5
    assert (adv_kw["name"], adv.adv_eps_255, adv.adv_steps) == ("cnn-pooled-pgdat4", 4, profile.defence.adv_steps)
    assert (adv.epochs, adv.learning_rate, adv_kw["initial"]) == (profile.defence.finetune_epochs,
                                                                   profile.train.learning_rate / 10, "model")
    assert noise.epochs == profile.train.epochs and noise_kw["initial"] is None
    # TRADES: the PGD model's recipe, epochs and start, with its beta (equal compute)
    assert (trades_kw["name"], trades_kw["initial"]) == ("cnn-pooled-trades4-b6", "model")
    assert dataclasses.replace(trades, trades_beta=0.0) == adv and trades.trades_beta == profile.defence.trades_beta
    for cfg in (ls, noise, adv):  # the rest is the victim's recipe
        assert (cfg.filters, cfg.lr_schedule) == (profile.train.filters, profile.train.lr_schedule)
    assert noise.learning_rate == profile.train.learning_rate
    with pytest.raises(ValueError, match="Unknown defence model kind 'dropout'.*'label_smoothing', 'noise'"):
        artifacts.get_or_train_defence(splits, profile, "dropout", 0.5)


def test_trades_with_beta_zero_is_clean_training_on_the_same_batches(splits):
    """β = 0: the TRADES step on a batch from some weights lands where a plain step on the clean batch does (the KL
    term's gradient is multiplied by 0); β > 0 moves elsewhere. Its adversarial batch ascends the KL from the clean
    answer inside the ε-ball."""
    keras.utils.set_random_seed(0)
    cfg = replace(TINY, dropout=0.0)
    inner = build_cnn(16, cfg)
    x, y = splits.val.x[:16], splits.val.labels[:16]
    onehot = keras.utils.to_categorical(y, 4).astype(np.float32)
    start = [w.numpy().copy() for w in inner.trainable_variables]

    def sgd(model):
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.CategoricalCrossentropy(from_logits=True))
        return model

    def step(model):
        for w, v in zip(inner.trainable_variables, start):
            w.assign(v)
        sgd(model).fit(x, onehot, batch_size=16, epochs=1, verbose=0, shuffle=False)
        return [w.numpy().copy() for w in inner.trainable_variables]

    eps = 8 / 255
    plain = step(inner)
    zero = step(training.trades_trainer(inner, eps, 3, beta=0.0))
    six = step(training.trades_trainer(inner, eps, 3, beta=6.0))
    for a, b in zip(zero, plain):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert any(not np.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(six, plain))
    for w, v in zip(inner.trainable_variables, start):
        w.assign(v)
    trainer = training.trades_trainer(inner, eps, 3, beta=6.0)
    x_adv = trainer.attack(tf.constant(x)).numpy()
    assert np.abs(x_adv - x).max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    clean = tf.nn.softmax(inner(x)).numpy()
    kl = keras.losses.kl_divergence
    assert float(tf.reduce_mean(kl(clean, tf.nn.softmax(inner(x_adv))))) > 10 * float(
        tf.reduce_mean(kl(clean, tf.nn.softmax(inner(np.clip(x + 0.001, 0, 1))))))
    with pytest.raises(ValueError, match="beta"):
        training.trades_trainer(inner, eps, 3, beta=-1.0)


def test_trades_is_a_training_setting_selected_under_attack(splits):
    cfg = replace(TINY, adv_eps_255=8, adv_steps=2, trades_beta=6.0, augment="none", epochs=1,
                  validate_under_threat=True)
    model, info = training.train(splits.train.images, splits.train.labels, splits.val.images, splits.val.labels, cfg,
                                 image_size=16, seed=0, verbose=0)
    assert model.name == "oct_cnn" and info["selected_on"] == "robust validation accuracy"
    assert np.isfinite(info["history"]["loss"]).all()
    assert "trades_beta" not in replace(TINY, adv_eps_255=8, adv_steps=2).key_dict()  # old keys unchanged
    assert cfg.key_dict()["trades_beta"] == 6.0
    with pytest.raises(ValueError, match="trades_beta"):
        TrainConfig(trades_beta=6.0)  # TRADES needs its ε
