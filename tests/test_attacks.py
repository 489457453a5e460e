"""The ART attack layer on a tiny model: ε handling, FGSM against the analytic formula, bounds, seeds, DeepFool."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from octlib import attacks, estimators, metrics  # noqa: E402
from octlib.config import TrainConfig  # noqa: E402
from octlib.models import build_cnn  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    keras.utils.set_random_seed(0)
    model = build_cnn(16, TrainConfig(filters=(4, 8)))
    rng = np.random.default_rng(0)
    x = rng.random((24, 16, 16, 1), dtype=np.float32)
    y = np.arange(24) % 4
    return model, estimators.art_classifier(model), x, y


def test_eps_is_checked_in_pixel_units():
    assert attacks.check_eps(2 / 255) == pytest.approx(0.00784, abs=1e-5)
    with pytest.raises(ValueError, match="0-255 value"):
        attacks.check_eps(8)
    with pytest.raises(ValueError, match="> 0"):
        attacks.check_eps(0)
    with pytest.raises(ValueError, match="`step_size`"):
        attacks.check_eps(float("nan"), "step_size")
    assert attacks.eps_label(2 / 255) == "2/255 (0.0078)"


def test_fgsm_equals_eps_sign_gradient(setup):
    model, clf, x, y = setup
    eps = 4 / 255
    run = attacks.fgsm(clf, x, y, eps, batch_size=10, progress=False)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = keras.losses.CategoricalCrossentropy(from_logits=True)(np.eye(4)[y], model(xt, training=False))
    expected = np.clip(x + eps * np.sign(tape.gradient(loss, xt).numpy()), 0, 1)
    np.testing.assert_allclose(run.x_adv, expected, atol=1e-6)


@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_linf_attacks_stay_in_budget_and_range(setup, name):
    _, clf, x, y = setup
    eps = 8 / 255
    run = getattr(attacks, name)(clf, x, y, eps, batch_size=10, progress=False)
    assert run.x_adv.shape == x.shape and run.logits_adv.shape == (len(x), 4)
    assert np.abs(run.x_adv - x).max() <= eps + 1e-6
    assert run.x_adv.min() >= 0 and run.x_adv.max() <= 1
    rep = run.report(x)
    assert rep["linf"]["max"] <= eps + 1e-6 and rep["adversarial"]["n"] == len(x)
    assert rep["params"]["eps_255"] == pytest.approx(8)


def test_pgd_is_reproducible_with_a_seed(setup):
    _, clf, x, y = setup
    a = attacks.pgd(clf, x, y, 8 / 255, steps=3, restarts=2, seed=1, progress=False)
    b = attacks.pgd(clf, x, y, 8 / 255, steps=3, restarts=2, seed=1, progress=False)
    np.testing.assert_array_equal(a.x_adv, b.x_adv)
    c = attacks.pgd(clf, x, y, 8 / 255, steps=3, restarts=2, seed=2, progress=False)
    assert not np.array_equal(a.x_adv, c.x_adv)  # the seed draws the starts: a function ignoring it fails here


def test_attack_parameters_are_validated_by_name(setup):
    _, clf, x, y = setup
    with pytest.raises(ValueError, match="`steps`"):
        attacks.pgd(clf, x, y, 0.01, steps=0)
    with pytest.raises(ValueError, match="`restarts`"):
        attacks.pgd(clf, x, y, 0.01, restarts=-1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attacks.fgsm(clf, x * 255, y, 0.01)
    with pytest.raises(ValueError, match="labels"):
        attacks.fgsm(clf, x, y[:3], 0.01)
    with pytest.raises(ValueError, match="`max_iter`"):
        attacks.deepfool(clf, x, y, max_iter=0)


def test_deepfool_batched_flips_predictions_and_counts_iterations(setup):
    _, clf, x, y = setup
    run = attacks.deepfool(clf, x, y, max_iter=20, batch_size=8, progress=False)
    it = run.extra["iterations"]
    assert it.shape == (len(x),) and it.min() >= 1 and it.max() <= 21
    flipped = run.logits_adv.argmax(1) != run.logits_clean.argmax(1)
    assert flipped[it <= 20].all()  # every image that converged really changed its prediction
    assert run.x_adv.min() >= 0 and run.x_adv.max() <= 1
    assert not hasattr(clf.__dict__, "predict") and "predict" not in clf.__dict__  # wrapper removed


def test_fast_class_gradient_equals_arts(setup):
    from art.estimators.classification import TensorFlowV2Classifier

    _, clf, x, _ = setup
    fast = clf.class_gradient(x)
    art = TensorFlowV2Classifier.class_gradient(clf, x)
    assert fast.shape == art.shape == (len(x), 4, 16, 16, 1)
    np.testing.assert_allclose(fast, art, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(clf.class_gradient(x, label=2), art[:, 2:3], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("loss", ["cross_entropy", "margin"])
def test_traced_loss_gradient_equals_arts(setup, loss):
    from art.estimators.classification import TensorFlowV2Classifier

    model, _, x, y = setup
    clf = estimators.art_classifier(model, loss=loss)
    onehot = np.eye(4, dtype=np.float32)[y]
    traced = clf.loss_gradient(x, onehot)
    art = TensorFlowV2Classifier.loss_gradient(clf, x, onehot)
    assert traced.shape == x.shape and np.abs(art).max() > 0
    np.testing.assert_allclose(traced, art, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(clf.loss_gradient(x[:5], onehot[:5]), art[:5] * len(x) / 5, rtol=1e-4, atol=1e-7)


def test_traced_gradients_are_traced_once_for_every_batch_size(setup):
    model, _, x, y = setup
    clf = estimators.art_classifier(model)
    onehot = np.eye(4, dtype=np.float32)[y]
    for n in (24, 5, 3, 24):  # an attack's last batch is smaller than the others
        clf.loss_gradient(x[:n], onehot[:n])
        clf.class_gradient(x[:n])
    assert clf._octlib_loss_gradient.experimental_get_tracing_count() == 1
    assert clf._octlib_jacobian.experimental_get_tracing_count() == 1


def test_attack_report_counts():
    y = np.array([0, 1, 2, 3, 0, 1])
    clean = np.eye(4)[[0, 1, 2, 3, 0, 2]] * 5  # 5 of 6 right; last DME read as DRUSEN
    adv = np.eye(4)[[3, 1, 0, 3, 0, 2]] * 5  # CNV->NORMAL (urgent flip), DRUSEN->CNV
    x = np.zeros((6, 8, 8, 1), np.float32)
    x_adv = x.copy()
    x_adv[0, 0, 0, 0] = 0.5
    rep = metrics.attack_report(y, clean, adv, x, x_adv)
    assert rep["clean"]["value"] == pytest.approx(5 / 6) and rep["adversarial"]["value"] == pytest.approx(3 / 6)
    assert rep["success_denominator"] == 5 and rep["success_rate"] == pytest.approx(2 / 5)
    assert rep["urgent_flip"] == {"rate": pytest.approx(1 / 3), "flips": 1, "denominator": 3}
    assert rep["linf"]["max"] == 0.5 and rep["l2"]["max"] == 0.5 and rep["psnr"]["n_infinite"] == 5
    assert rep["loss_increase"] > 0 and rep["accuracy_drop"] == pytest.approx(2 / 6)


def test_stratified_subset_is_balanced_and_seeded():
    labels = np.repeat(np.arange(4), [50, 30, 20, 100])
    idx = attacks.stratified_subset(labels, 40, seed=1)
    assert np.bincount(labels[idx]).tolist() == [10, 10, 10, 10]
    assert idx.tolist() == attacks.stratified_subset(labels, 40, seed=1).tolist()
    assert idx.tolist() != attacks.stratified_subset(labels, 40, seed=2).tolist()
    assert len(attacks.stratified_subset(labels, None)) == 200


def test_transfer_scores_surrogate_images_on_the_target(setup):
    model, clf, x, y = setup
    keras.utils.set_random_seed(1)
    target = build_cnn(16, TrainConfig(filters=(4, 8)))
    run = attacks.fgsm(clf, x, y, 8 / 255, progress=False)
    moved = attacks.transfer(run, target, x)
    np.testing.assert_allclose(moved.logits_adv, target.predict(run.x_adv, verbose=0), atol=1e-5)
    np.testing.assert_allclose(moved.logits_clean, target.predict(x, verbose=0), atol=1e-5)
    np.testing.assert_array_equal(moved.extra["surrogate_logits_adv"], run.logits_adv)
    assert moved.attack == "transfer-FGSM" and moved.report(x)["n"] == len(x)
    with pytest.raises(ValueError, match="`x_clean`"):
        attacks.transfer(run, target, x[:3])


def test_l2_pgd_stays_in_the_l2_ball(setup):
    _, clf, x, y = setup
    run = attacks.pgd(clf, x, y, 0.5, norm="2", steps=5, progress=False)
    l2 = np.sqrt(((run.x_adv - x) ** 2).reshape(len(x), -1).sum(axis=1))
    assert l2.max() <= 0.5 + 1e-4 and run.params["norm"] == "2" and run.params["eps_label"] == "L2 0.5"
    with pytest.raises(ValueError, match="`norm`"):
        attacks.pgd(clf, x, y, 0.5, norm="1")


def test_report_can_score_with_another_classifier(setup):
    model, clf, x, y = setup
    run = attacks.fgsm(clf, x, y, 4 / 255, progress=False)
    keras.utils.set_random_seed(3)
    other = build_cnn(16, TrainConfig(filters=(4, 8)))
    rep = run.report(x, predict=lambda xs: other.predict(xs, verbose=0))
    expected = metrics.accuracy(y, other.predict(run.x_adv, verbose=0).argmax(1))["value"]
    assert rep["adversarial"]["value"] == pytest.approx(expected) and rep["attack"] == "FGSM"


def test_targeted_pgd_reaches_the_target_more_often_than_untargeted(setup):
    model, clf, x, y = setup
    eps = 32 / 255
    untargeted = attacks.pgd(clf, x, y, eps, steps=10, restarts=0, progress=False)
    targeted = attacks.pgd(clf, x, y, eps, steps=10, restarts=0, progress=False, target="NORMAL")
    assert targeted.attack == "PGD targeted" and targeted.params["targeted"]
    np.testing.assert_array_equal(targeted.extra["target"], np.full(len(x), 3))
    assert np.abs(targeted.x_adv - x).max() <= eps + 1e-6
    to_normal = lambda run: float(np.mean(run.logits_adv.argmax(1) == 3))  # noqa: E731
    assert to_normal(targeted) > to_normal(untargeted)
    assert to_normal(targeted) >= 0.9
    # one target per scan
    per_scan = attacks.pgd(clf, x, y, eps, steps=10, restarts=0, progress=False, target=(y + 1) % 4)
    np.testing.assert_array_equal(per_scan.extra["target"], (y + 1) % 4)


@pytest.mark.parametrize("target", ["fog", 4, np.zeros(3)])
def test_bad_target_names_the_parameter(setup, target):
    _, clf, x, y = setup
    with pytest.raises(ValueError, match="`target`"):
        attacks.pgd(clf, x, y, 8 / 255, steps=1, progress=False, target=target)


def test_universal_perturbation_is_one_bounded_noise_and_reports_its_fit(setup):
    model, clf, x, y = setup
    eps = 32 / 255
    uap = attacks.universal(clf, x, eps, max_iter=3, delta=0.0, seed=0)
    assert uap.noise.shape == (1,) + x.shape[1:]
    assert uap.norms()["linf"] <= eps + 1e-6 and uap.norms()["linf"] > 0
    x_adv = uap.apply(x)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    clean, adv = metrics.predict_logits(model, x).argmax(1), metrics.predict_logits(model, x_adv).argmax(1)
    assert uap.fit["fooling_rate"] == pytest.approx(np.mean(clean != adv))
    again = attacks.universal(clf, x, eps, max_iter=3, delta=0.0, seed=0)
    np.testing.assert_array_equal(again.noise, uap.noise)

    targeted = attacks.universal(clf, x, eps, target="NORMAL", max_iter=3, delta=0.0)
    assert targeted.params["target"] == "NORMAL"
    hit = metrics.predict_logits(model, targeted.apply(x)).argmax(1) == 3
    assert targeted.fit["targeted_success_rate"] == pytest.approx(hit.mean())

    l2 = attacks.universal(clf, x, 1.0, norm="2", max_iter=2)
    assert l2.norms()["l2"] <= 1.0 + 1e-4
    # the SGD fit: bounded, reproducible, and its reported fooling rate is the fitting scans'
    sgd = attacks.universal(clf, x, eps, method="sgd", max_iter=5, seed=1)
    assert 0 < sgd.norms()["linf"] <= eps + 1e-6 and sgd.params["method"] == "sgd"
    np.testing.assert_array_equal(sgd.noise, attacks.universal(clf, x, eps, method="sgd", max_iter=5, seed=1).noise)
    adv_sgd = metrics.predict_logits(model, sgd.apply(x)).argmax(1)
    assert sgd.fit["fooling_rate"] == pytest.approx(np.mean(adv_sgd != clean))
    sgd_l2 = attacks.universal(clf, x, 1.0, norm="2", method="sgd", max_iter=3)
    assert 0 < sgd_l2.norms()["l2"] <= 1.0 + 1e-4
    with pytest.raises(ValueError, match="method"):
        attacks.universal(clf, x, eps, method="adam")
    with pytest.raises(ValueError, match="scans"):
        uap.apply(x[:, :8, :8])


def test_remembered_predictions_answer_a_seen_scan_from_memory_and_only_then():
    """Square's memory (estimators.remembered_predictions): while open, a scan predicted once is answered from memory
    with the answer it got, new scans go to the classifier in one call; on exit the classifier predicts as before;
    a classifier that answers the same scan differently on two calls (fresh noise) is left alone."""
    from octlib import estimators

    class Counting:
        input_shape = (2, 2, 1)

        def __init__(self, noisy=False):
            self.rows, self.noisy, self.rng = [], noisy, np.random.default_rng(0)

        def predict(self, x, batch_size=128, training_mode=False, **kwargs):
            self.rows.append(len(x))
            out = np.asarray(x).reshape(len(x), -1)[:, :2] * 10
            return out + self.rng.random(out.shape) if self.noisy else out

    clf = Counting()
    x = np.random.default_rng(1).random((5, 2, 2, 1)).astype(np.float32)
    with estimators.remembered_predictions(clf) as on:
        assert on is True
        probe_calls = len(clf.rows)
        first = clf.predict(x[:3])
        again = clf.predict(x)  # three seen, two new
        np.testing.assert_array_equal(again[:3], first)
        np.testing.assert_array_equal(again, x.reshape(5, -1)[:, :2] * 10)
        assert clf.rows[probe_calls:] == [3, 2]
        clf.predict(x[::-1])
        assert clf.rows[probe_calls:] == [3, 2]  # every scan seen: no call
    clf.predict(x)
    assert clf.rows[-1] == 5 and "predict" not in vars(clf)  # the memory is gone with the block
    noisy = Counting(noisy=True)
    with estimators.remembered_predictions(noisy) as on:
        assert on is False
        noisy.predict(x)
        noisy.predict(x)
    assert noisy.rows[-2:] == [5, 5]


def test_predict_runs_the_forward_pass_in_batches(setup):
    """ART 1.20.1's predict runs the forward pass on every scan at once (at 128 px, ~3 MB per scan: thousands of
    queries ran a 24 GB machine out of memory); octlib's classifiers run it in batches of batch_size, with ART's pre-
    and post-processing on the whole array as before, and the same answers."""
    from octlib import estimators

    model = setup[0]
    x = np.random.default_rng(0).random((10, *model.input_shape[1:]), dtype=np.float32)
    api = estimators.victim_api(model, "probabilities")
    sizes, forward = [], api._forward_pass

    def spy(m, xs, training=False):
        sizes.append(len(xs))
        return forward(m, xs, training=training)

    api._forward_pass = spy
    batched = api.predict(x, batch_size=4)
    assert sizes == [4, 4, 2]
    whole = api.predict(x, batch_size=64)
    assert sizes[-1] == 10
    np.testing.assert_allclose(batched, whole, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(batched.sum(axis=1), 1.0, rtol=1e-5)  # the post-processing (softmax) still applied
