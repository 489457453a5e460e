"""Output-side defences (post-processors), calibration, and the attacks that test them: gradients bypass
post-processors, HopSkipJump needs only labels, the logit-margin loss, accuracy under an L2 budget."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from octlib import attacks, estimators, metrics  # noqa: E402
from octlib.artifacts import artifact_key  # noqa: E402
from octlib.config import TrainConfig  # noqa: E402
from octlib.defences import OutputNoise, output_defences  # noqa: E402
from octlib.estimators import LabelOnly, Softmax  # noqa: E402
from octlib.models import build_cnn  # noqa: E402

TINY = TrainConfig(filters=(4, 8), dense_units=0)


@pytest.fixture(scope="module")
def setup():
    keras.utils.set_random_seed(0)
    model = build_cnn(16, TINY)
    rng = np.random.default_rng(0)
    return model, rng.random((20, 16, 16, 1), dtype=np.float32), np.arange(20) % 4


def test_output_noise_is_a_seeded_distribution_without_nan():
    probs = np.tile([[0.97, 0.01, 0.01, 0.01]], (500, 1))
    out = OutputNoise(5.0, seed=1)(probs)  # huge σ: ART's GaussianNoise returns NaN rows here
    assert np.isfinite(out).all() and np.allclose(out.sum(axis=1), 1, atol=1e-5) and (out > 0).all()
    np.testing.assert_array_equal(OutputNoise(0.1, seed=3)(probs), OutputNoise(0.1, seed=3)(probs))
    noise = OutputNoise(0.1, seed=3)
    assert not np.array_equal(noise(probs), noise(probs))  # fresh noise on every query
    with pytest.raises(ValueError, match="`sigma`"):
        OutputNoise(0.0)


def test_named_output_defences():
    names = list(output_defences((0.1, 0.3)))
    assert names == ["none", "label-only", "output noise σ=0.1", "output noise σ=0.3", "reverse-sigmoid β=1,γ=0.1"]
    answers, post = output_defences()["label-only"]
    assert answers == "labels" and post == []


def test_post_processors_never_touch_gradients(setup):
    model, x, y = setup
    plain = estimators.art_classifier(model)
    defended = estimators.art_classifier(model, postprocessors=[Softmax(), OutputNoise(0.3), LabelOnly()])
    onehot = np.eye(4, dtype=np.float32)[y]
    np.testing.assert_array_equal(plain.loss_gradient(x, onehot), defended.loss_gradient(x, onehot))
    np.testing.assert_array_equal(plain.class_gradient(x), defended.class_gradient(x))
    a = attacks.fgsm(plain, x, y, 4 / 255, progress=False)
    b = attacks.fgsm(defended, x, y, 4 / 255, progress=False)
    np.testing.assert_array_equal(a.x_adv, b.x_adv)
    answers = defended.predict(x)
    assert set(np.unique(answers)) <= {0.0, 1.0} and (answers.sum(axis=1) == 1).all()


def test_logit_margin_loss_and_margin_pgd(setup):
    model, x, y = setup
    clf = estimators.art_classifier(model, loss="margin")
    z = model.predict(x, verbose=0)
    onehot = np.eye(4, dtype=np.float32)[y]
    expected = np.mean(np.max(np.where(onehot == 1, -np.inf, z), axis=1) - z[np.arange(len(y)), y])
    assert float(clf.loss_object(onehot, z)) == pytest.approx(expected, rel=1e-5)
    run = attacks.pgd(clf, x, y, 8 / 255, steps=5, progress=False)
    assert run.attack == "PGD-margin" and run.params["loss"] == "margin"
    assert np.abs(run.x_adv - x).max() <= 8 / 255 + 1e-6
    margin = lambda logits: np.mean(np.max(np.where(onehot == 1, -np.inf, logits), 1) - logits[np.arange(20), y])
    assert margin(run.logits_adv) > margin(z)
    with pytest.raises(ValueError, match="`loss`"):
        estimators.art_classifier(model, loss="hinge")


def test_hopskipjump_sees_only_labels(setup):
    model, x, y = setup
    kw = dict(max_iter=2, max_eval=40, init_eval=10, init_size=20, seed=4, progress=False)
    probs = attacks.hopskipjump(estimators.art_classifier(model, postprocessors=[Softmax()]), x[:6], y[:6], **kw)
    labels = attacks.hopskipjump(estimators.art_classifier(model, postprocessors=[Softmax(), LabelOnly()]),
                                 x[:6], y[:6], **kw)
    np.testing.assert_allclose(probs.x_adv, labels.x_adv, atol=1e-6)  # same decisions, same attack
    assert probs.extra["queries"] > 6 and probs.x_adv.min() >= 0 and probs.x_adv.max() <= 1


def test_expected_calibration_error():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1, 0, 0], [0.9, 0.1, 0, 0], [0.9, 0.1, 0, 0], [0.1, 0.9, 0, 0]])
    # all in the 0.9 bin: accuracy 3/4, confidence 0.9
    assert metrics.expected_calibration_error(y, probs, n_bins=10)["ece"] == pytest.approx(0.15)
    perfect = np.eye(4)[[0, 0, 1, 1]]
    assert metrics.expected_calibration_error(y, perfect)["ece"] == pytest.approx(0.0)
    rep = metrics.answers_report(y, np.eye(4)[[0, 1, 1, 1]])
    assert rep["accuracy"]["value"] == 0.75 and rep["ece"] == pytest.approx(0.25)
    assert rep["loss"] == pytest.approx(-np.log(1e-12) / 4)


def test_minimal_attack_curve():
    y = np.array([0, 1, 2, 3])
    clean = np.eye(4)[[0, 1, 2, 0]]  # last scan already wrong
    adv = np.eye(4)[[1, 1, 3, 1]]  # scan 0 and 2 fooled, scan 1 not
    curve = metrics.minimal_attack_curve(y, clean, adv, [0.1, 0.0, 0.5, 0.0], [0.05, 0.2, 1.0])
    assert [c["accuracy"]["value"] for c in curve] == [0.75, 0.5, 0.25]
    assert [c["fooled"] for c in curve] == [0, 1, 2]


def test_label_smoothing_model_has_its_own_key(small_layout):
    from octlib.data import load_folder, make_splits

    splits = make_splits(load_folder(small_layout, 16, progress=False), "official", seed=0)
    base, _ = artifact_key(splits, TINY, seed=0)
    smooth, spec = artifact_key(splits, TrainConfig(filters=(4, 8), dense_units=0, label_smoothing=0.1), seed=0)
    assert base != smooth and spec["train_config"]["label_smoothing"] == 0.1


def test_eot_gradient_differentiates_the_log_of_the_averaged_softmax(setup):
    from octlib.estimators import noise_classifier

    model, x, y = setup
    x1, onehot = x[:1], np.eye(4, dtype=np.float32)[y[:1]]
    eot = noise_classifier(model, 0.2, 6, seed=7).loss_gradient(x1, onehot)
    noise = np.random.default_rng(7).standard_normal((6, 16, 16, 1)).astype(np.float32) * np.float32(0.2)
    xt = tf.convert_to_tensor(x1)
    with tf.GradientTape(persistent=True) as tape:  # by hand: -log mean_k softmax(f(x + n_k))[y]
        tape.watch(xt)
        probs = tf.nn.softmax(model(tf.repeat(xt, 6, axis=0) + noise, training=False))
        answered = -tf.math.log(tf.reduce_mean(probs, axis=0)[int(y[0])])
        per_copy = tf.reduce_mean(keras.losses.categorical_crossentropy(np.repeat(onehot, 6, axis=0), probs))
    np.testing.assert_allclose(eot, tape.gradient(answered, xt).numpy(), rtol=1e-4, atol=1e-7)
    # not the mean of the per-copy cross-entropies (the earlier form, whose minimiser need not move the answer)
    assert not np.allclose(eot, tape.gradient(per_copy, xt).numpy(), rtol=1e-3, atol=1e-7)
    single = noise_classifier(model, 0.2, 1, seed=7)  # one draw: the plain gradient through that noisy copy
    plain = estimators.art_classifier(model).loss_gradient(x1 + noise[:1], onehot)
    np.testing.assert_allclose(single.loss_gradient(x1, onehot), plain, rtol=1e-4, atol=1e-7)


def _borderline_model():
    """logits (mean(x), 0.5, -9, -9) on 16-px scans: class 0 iff the mean is above 0.5, so noise flips scans near it."""
    inputs = keras.Input((16, 16, 1))
    dense = keras.layers.Dense(4)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    w = np.zeros((256, 4), dtype=np.float32)
    w[:, 0] = 1.0 / 256
    dense.set_weights([w, np.array([0.0, 0.5, -9.0, -9.0], dtype=np.float32)])
    return model


def test_expected_answer_is_a_function_of_the_scan(setup):
    """The scored answer of a randomized defence cannot change between calls, batches or processes by
    construction: its draws are fixed once from the seed and the same for every scan."""
    from octlib.defences import ExpectedNoiseAnswer, majority_vote
    from octlib.estimators import noise_classifier

    _, x, _ = setup
    model = _borderline_model()
    one_call = noise_classifier(model, 0.5, 2, seed=1)
    calls = np.stack([one_call.predict(x).argmax(axis=1) for _ in range(8)])
    assert (calls != calls[0]).any()  # σ = 0.5: single calls disagree, so what follows is not trivial
    expected = ExpectedNoiseAnswer(model, 0.5, 2, 100, seed=3, remember=0)
    answer, votes = expected.answer(x), expected.votes(x)
    assert votes.shape == (100, len(x)) and (votes != votes[0]).any()
    np.testing.assert_array_equal(answer, majority_vote(votes, 4)[0])
    np.testing.assert_array_equal(expected.answer(x), answer)  # again
    np.testing.assert_array_equal(expected.answer(x[::-1]), answer[::-1])  # another order
    np.testing.assert_array_equal(expected.answer(x[5:8]), answer[5:8])  # other company in the batch
    np.testing.assert_array_equal(ExpectedNoiseAnswer(model, 0.5, 2, 100, seed=3, batch_size=7).answer(x), answer)
    assert not np.array_equal(ExpectedNoiseAnswer(model, 0.5, 2, 100, seed=4).votes(x), votes)  # the seed draws
    # scores: the log of the softmax averaged over all draws x K copies, by hand for one scan
    by_hand = metrics.softmax(model.predict(x[2:3] + expected.noise, verbose=0)).mean(axis=0)
    np.testing.assert_allclose(np.exp(expected.scores(x[2:3]))[0], by_hand, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="`draws`"):
        ExpectedNoiseAnswer(model, 0.5, 2, 0)


def test_majority_vote_counts_and_breaks_ties_by_the_lowest_class():
    from octlib.defences import majority_vote

    votes = np.array([[0, 1, 3], [2, 1, 3], [2, 0, 2], [0, 3, 2]])  # scan 0: 0 vs 2 tie; 1: class 1; 2: 3 vs 2 tie
    answer, counts = majority_vote(votes, 4)
    assert answer.tolist() == [0, 1, 2] and counts.sum(axis=1).tolist() == [4, 4, 4]
    with pytest.raises(ValueError, match="draws, N"):
        majority_vote(np.zeros(3), 4)


def test_api_expected_votes_fix_the_output_noise_draws(setup):
    from octlib.defences import api_expected_votes, majority_vote
    from octlib.estimators import victim_api

    model, x, _ = setup
    logits = model.predict(x, verbose=0)
    plain = victim_api(model, "labels")
    np.testing.assert_array_equal(api_expected_votes(plain, logits, 5), np.tile(logits.argmax(axis=1), (5, 1)))
    noisy = victim_api(model, "probabilities", defences=[OutputNoise(0.3, seed=0)])
    votes = api_expected_votes(noisy, logits, 100, seed=2)
    assert votes.shape == (100, len(x)) and (votes != logits.argmax(axis=1)).any()  # σ = 0.3 moves answers
    np.testing.assert_array_equal(api_expected_votes(noisy, logits[4:9], 100, seed=2), votes[:, 4:9])
    np.testing.assert_array_equal(api_expected_votes(noisy, logits, 100, seed=2), votes)
    # one draw of it is an answer the defence can give: the noise of that draw applied to the probabilities
    bank = noisy.postprocessing_defences[1].noise_bank(100, 4, seed=2 + 1)
    one = OutputNoise.apply(metrics.softmax(logits.astype(np.float64)), bank[7]).argmax(axis=1)
    np.testing.assert_array_equal(votes[7], one)
    assert majority_vote(votes, 4)[0].shape == (len(x),)


def test_art_eot_gaussian_noise_is_still_broken_with_tensorflow(setup):
    """ART 1.20.1's EoTGaussianNoiseTensorFlow fails on TF tensors (x[[i]] indexing). When this test fails, ART
    fixed it, and octlib.estimators.noise_classifier could use it."""
    from art.estimators.classification import TensorFlowV2Classifier
    from art.preprocessing.expectation_over_transformation import EoTGaussianNoiseTensorFlow

    model, x, y = setup
    clf = TensorFlowV2Classifier(model, nb_classes=4, input_shape=(16, 16, 1), clip_values=(0.0, 1.0),
                                 loss_object=keras.losses.CategoricalCrossentropy(from_logits=True),
                                 preprocessing_defences=[EoTGaussianNoiseTensorFlow(2, (0.0, 1.0), (0.1, 0.1))])
    with pytest.raises(tf.errors.InvalidArgumentError):
        clf.loss_gradient(x[:2], np.eye(4, dtype=np.float32)[y[:2]])


def test_noise_classifier_averages_its_draws(setup):
    from octlib.estimators import noise_classifier

    model, x, _ = setup
    out = noise_classifier(model, 1e-6, 3).predict(x)  # tiny noise: the average is the clean softmax
    np.testing.assert_allclose(np.exp(out), metrics.softmax(model.predict(x, verbose=0)), atol=1e-4)
    with pytest.raises(ValueError, match="`sigma`"):
        noise_classifier(model, 0.0)


def test_smoothing_abstains_and_abstentions_are_errors(setup):
    from octlib.defences import certified_accuracy, smoothed_predictions
    from octlib.estimators import smoothed_classifier

    model, x, y = setup
    scores = np.array([[0.0, 0, 0, 0], [0.1, 0.7, 0.1, 0.1]])
    np.testing.assert_array_equal(smoothed_predictions(scores), [-1, 1])  # not CNV
    curve = certified_accuracy([0, 1, 1], [-1, 1, 1], [0.0, 0.3, 0.1], [0.0, 0.2])
    assert [c["certified_accuracy"] for c in curve] == [pytest.approx(2 / 3), pytest.approx(1 / 3)]
    assert curve[0]["abstained"] == 1
    np.random.seed(0)
    # even unanimous votes: the Clopper-Pearson bound of 10/10 at alpha 1e-6 is 0.25 < 0.5
    rs = smoothed_classifier(model, 5.0, n0=10, alpha=1e-6)
    pred, radius = rs.certify(x[:4], n=10, batch_size=20)  # 10 votes cannot certify at alpha 1e-6
    assert (pred == -1).any() and (radius[pred == -1] == 0).all()
    assert (smoothed_predictions(rs.predict(x[:4])) == -1).any()


def test_smoothing_counts_the_noisy_copies_a_chunk_at_a_time(setup):
    """The copies are drawn in chunks (memory), and every one of the n is counted once: the counts sum to n, and
    with the same global seed they are those of one pass over the same draws in the same order."""
    from octlib.estimators import smoothed_classifier

    model, x, _ = setup
    chunked, whole = (smoothed_classifier(model, 0.25, n0=8, chunk=c) for c in (7, 1000))
    np.random.seed(3)
    counts = chunked._prediction_counts(x[0], n=30, batch_size=16)
    assert counts.sum() == 30 and counts.shape == (4,)
    with pytest.raises(ValueError, match="chunk"):
        smoothed_classifier(model, 0.25, chunk=0)
    np.random.seed(3)
    draws = np.concatenate([np.random.normal(0, 0.25, (k, *x[0].shape)) for k in (7, 7, 7, 7, 2)])
    answers = np.asarray(model(x[0][None] + draws.astype(np.float32))).argmax(axis=1)
    np.testing.assert_array_equal(counts, np.bincount(answers, minlength=4))
    assert whole._prediction_counts(x[0], n=30, batch_size=16).sum() == 30


def test_max_certifiable_radius():
    from scipy.stats import norm

    from octlib.defences import max_certifiable_radius

    assert max_certifiable_radius(0.25, 100, 0.001) == pytest.approx(0.25 * norm.ppf(0.001 ** 0.01))
    assert max_certifiable_radius(0.12, 200, 0.001) < 0.25 < max_certifiable_radius(0.12, 1000, 0.001)


def test_l2_and_linf_balls_are_related_through_the_number_of_pixels():
    from octlib.threat import l2_reach, linf_covered, to_255

    # a 2/255 L-infinity ball over 128 x 128 pixels reaches L2 128 * 2/255; an L2 radius of 0.25 covers 0.5/255
    assert l2_reach(2 / 255, 128 * 128) == pytest.approx(1.0039, abs=1e-4)
    assert to_255(linf_covered(0.25, 128 * 128)) == pytest.approx(0.498, abs=1e-3)
    assert linf_covered(l2_reach(3 / 255, 4096), 4096) == pytest.approx(3 / 255)
    with pytest.raises(ValueError, match="pixels"):
        l2_reach(2 / 255, 0)
    with pytest.raises(ValueError, match="looks like a 0-255"):
        l2_reach(2, 100)


def test_certify_puts_the_certificate_next_to_an_empirical_attack(setup):
    from octlib.defences import certify, max_certifiable_radius

    model, x, y = setup
    kw = dict(n0=8, n=32, alpha=0.05, radii=[0.0, 0.1, 0.5], eot_samples=2, pgd_steps=2, seed=3, batch_size=64)
    out = certify(model, 0.25, x[:8], y[:8], **kw)
    # the curve and the empirical radii stop at the largest certifiable radius (0.336 here): beyond it a zero is
    # the sample size's, not the model's
    assert [p["radius"] for p in out["curve"]] == [0.0, 0.1] and out["beyond_max_radius"] == [0.5]
    assert [p["radius"] for p in out["empirical"]] == [0.0, 0.1] and out["max_radius"] < 0.5
    cert = [p["certified_accuracy"] for p in out["curve"]]
    assert all(a >= b for a, b in zip(cert, cert[1:]))
    assert out["max_radius"] == max_certifiable_radius(0.25, 32, 0.05) and out["n_scans"] == 8
    assert (out["n0"], out["n"], out["alpha"]) == (8, 32, 0.05) and out["certify_s"] > 0
    again = certify(model, 0.25, x[:8], y[:8], **kw)  # seeded: the same certificate and attack
    assert again["curve"] == out["curve"] and again["empirical"] == out["empirical"]
    # the empirical check reads the same smoothed classifier as the certificate (its CERTIFY answer, same n):
    # at radius 0 it is the certificate's own clean accuracy, and every certified scan is answered correctly there
    pred, radius = np.array(out["pred"]), np.array(out["radius"])
    assert out["empirical"][0]["accuracy"] == np.mean(pred == y[:8]) == out["curve"][0]["certified_accuracy"]
    assert len(out["empirical_correct"]) == 2 and all(len(c) == 8 for c in out["empirical_correct"])
    assert all(p["certified_accuracy"] <= e["accuracy"] + 1e-9 for p, e in zip(out["curve"], out["empirical"]))


def test_certify_attacks_each_radius_only_where_the_smaller_one_failed(setup):
    from octlib.defences import certify

    model, x, y = setup
    kw = dict(n0=8, n=32, alpha=0.05, radii=[0.0, 0.5], eot_samples=2, pgd_steps=3, seed=3, batch_size=64)
    out = certify(model, 0.25, x[:8], y[:8], empirical_radii=[0.5, 2.0, 8.0], **kw)
    emp = out["empirical"]
    assert [p["radius"] for p in emp] == [0.0, 0.5, 2.0, 8.0]
    ok = np.array(out["empirical_correct"], dtype=bool)
    assert (ok[1:] <= ok[:-1]).all(), "a scan fooled within a smaller radius is fooled within a larger one"
    # each radius attacks exactly the scans still right at the radius before, none that already failed
    assert [p["attacked"] for p in emp[1:]] == [int(c.sum()) for c in ok[:-1]]
    assert [p["accuracy"] for p in emp] == [float(c.mean()) for c in ok]
    assert emp[-1]["accuracy"] < emp[0]["accuracy"], "an L2 radius of 8 must fool some scan of a toy model"
    with pytest.raises(ValueError, match="empirical_radii"):
        certify(model, 0.25, x[:2], y[:2], empirical_radii=[0.5, 0.1], **kw)
