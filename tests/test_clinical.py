"""Clinically grounded threats on a tiny model: referral attacks, storage, universal perturbations, corruptions."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from octlib import attacks, clinical, corruptions, estimators, records  # noqa: E402
from octlib.config import SuiteConfig, TrainConfig  # noqa: E402
from octlib.evaluation import Scans, model_target  # noqa: E402
from octlib.models import build_cnn  # noqa: E402
from octlib.records import check_row  # noqa: E402


@pytest.fixture(scope="module")
def setup():
    """A tiny CNN fitted for a few steps on separable synthetic scans (each class its own brightness band), so it
    answers every class and attacks have something to flip."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n, size = 64, 16
    y = np.arange(n) % 4
    x = np.clip(rng.normal(0.2 + 0.18 * y[:, None, None, None], 0.08, size=(n, size, size, 1)), 0, 1)
    x = x.astype(np.float32)
    model = build_cnn(size, TrainConfig(filters=(4, 8), input_norm="none", augment="none", dropout=0.0))
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=30, batch_size=16, verbose=0)
    scans = Scans(x, y, np.array([f"s{i}" for i in range(n)]), np.arange(n) // 2, n)
    return model_target("tiny", model), scans


SUITE = SuiteConfig(attacks=("FGSM", "PGD"), eps_255=(1, 2, 16), n_scans=None, pgd_steps=5, pgd_restarts=1,
                    batch_size=32)


def _check(outcomes):
    for o in outcomes:
        for row in o.records():
            check_row(row, o.attack)
            assert len(row["pred"]) == row["n"]


def test_referral_attacks_count_every_source_scan_clean_misses_included_and_are_monotone(setup):
    target, scans = setup
    clean = target.answer(scans.x)
    out = clinical.referral_attacks(target, scans, (4, 32), SUITE, progress=False)
    assert [o.attack for o in out] == ["targeted PGD · missed referral", "untargeted PGD · missed referral",
                                      "targeted PGD · false referral", "untargeted PGD · false referral"]
    missed, false = out[0], out[2]
    # every urgent scan, and every routine one, whatever the clean answer
    np.testing.assert_array_equal(missed.scan_ids, scans.ids[np.isin(scans.y, [0, 1])])
    np.testing.assert_array_equal(false.scan_ids, scans.ids[np.isin(scans.y, [2, 3])])
    clean_miss = np.isin(clean[np.isin(scans.y, [0, 1])], [2, 3])
    assert missed.settings["clean_reached"] == int(clean_miss.sum())
    for o in out:
        assert not o.robust[:, np.isin(o.clean_pred, [2, 3] if "missed" in o.attack else [0, 1])].any()
        assert np.all(np.diff(o.rate()) <= 0), o.attack  # a reached scan stays reached
        reached = ~o.robust
        assert np.all(np.isin(o.pred[reached], [2, 3] if "missed" in o.attack else [0, 1]))
    # the aiming attacker keeps the untargeted run's hits: reached at least wherever the untargeted run reached
    for t, u in ((out[0], out[1]), (out[2], out[3])):
        assert np.all(t.robust <= u.robust)
        assert t.settings["runs"][0] == "untargeted" and u.settings["runs"] == ["untargeted"]
    assert missed.settings["runs"] == ["untargeted", "DRUSEN", "NORMAL"]
    assert out[0].rate()[-1] < 1  # 32/255 on a tiny model: some urgent scans reach a routine class
    _check(out)


def test_referral_attacks_count_a_clean_miss_as_reached_without_attacking_it():
    """A model that answers NORMAL for everything misses every referral when clean: rate 1 at every ε, and no scan
    is attacked (nothing is left to reach)."""
    model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(4, kernel_initializer="zeros",
                                                 bias_initializer=keras.initializers.Constant([0, 0, 0, 5.0]))])
    y = np.arange(8) % 4
    scans = Scans(np.full((8, 16, 16, 1), 0.5, np.float32), y, np.array([f"s{i}" for i in range(8)]),
                  np.arange(8), 8)
    out = clinical.referral_attacks(model_target("normal", model), scans, (2,), SUITE, progress=False)
    missed, false = out[0], out[2]
    assert len(missed.y) == 4 and missed.settings["clean_reached"] == 4
    assert missed.rate().tolist() == [0.0]  # every urgent scan reached (robust share 0)
    assert false.settings["clean_reached"] == 0 and len(false.y) == 4


def test_storage_rows_score_each_channel_and_the_aware_attacker(setup):
    target, scans = setup
    out = clinical.storage_attacks(target, scans, (0.25, 8), SUITE, qualities=(75,), progress=False)
    by = {o.attack: o for o in out}
    assert set(by) == {"storage · as crafted", "storage · 8-bit PNG", "storage · JPEG q75",
                       "storage · aware · BPDA through 8-bit PNG", "storage · aware · BPDA through JPEG q75"}
    crafted, png = by["storage · as crafted"], by["storage · 8-bit PNG"]
    # the channel applies to the clean scans too
    np.testing.assert_array_equal(png.clean_pred, target.answer(corruptions.store(scans.x, "png")))
    np.testing.assert_array_equal(crafted.clean_pred, target.answer(scans.x))
    for o in out:
        assert np.all(np.diff(o.rate()) <= 0)
        assert np.all(o.robust <= (o.clean_pred == o.y)[None, :])
    assert crafted.rate()[-1] < crafted.rate()[0]  # 8/255 fools more than 0.25/255
    assert by["storage · aware · BPDA through JPEG q75"].settings["attacks"] == ["PGD (BPDA)"]
    _check(out)


def test_universal_outcomes_score_one_perturbation_per_level(setup):
    target, scans = setup
    clf = estimators.art_classifier(target.model)
    uaps = [attacks.universal(clf, scans.x, e / 255, max_iter=2, fit_on="OCT", method="sgd") for e in (8, 32)]
    o = clinical.universal_outcomes(uaps, target, scans)
    assert o.attack == "UAP · fit on OCT" and o.levels == (8 / 255, 32 / 255)
    rows = o.records()
    assert rows[1]["fooling_rate"] == pytest.approx(np.mean(o.pred[1] != o.clean_pred))
    assert 0 <= rows[0]["fooling_ci"][0] <= rows[0]["fooling_rate"] <= rows[0]["fooling_ci"][1]
    t = [attacks.universal(clf, scans.x, 32 / 255, target="NORMAL", max_iter=2)]
    ot = clinical.universal_outcomes(t, target, scans)
    assert ot.attack == "UAP (ART) → NORMAL" and "target_rate" in ot.records()[0]
    with pytest.raises(ValueError, match="mix"):
        clinical.universal_outcomes(uaps + t, target, scans)
    _check([o, ot])


def test_corruption_outcomes_share_scans_and_write_severity_rows(setup, tmp_path):
    target, scans = setup
    corrupted = clinical.corrupted_scans(scans.x, ("speckle_noise", "contrast_down"), (1, 5), progress=False)
    again = clinical.corrupted_scans(scans.x, ("speckle_noise", "contrast_down"), (1, 5), progress=False)
    np.testing.assert_array_equal(corrupted[("speckle_noise", 5)], again[("speckle_noise", 5)])
    out = clinical.corruption_outcomes(target, scans, corrupted)
    assert [o.attack for o in out] == ["speckle_noise", "contrast_down"]
    rows = out[0].records()
    assert [r["eps"] for r in rows] == [1.0, 5.0] and rows[0]["norm"] == "corruption"
    assert rows[0]["eps_label"] == "speckle_noise 1" and rows[0]["eps_255"] is None
    assert rows[0]["psnr"] > rows[1]["psnr"]
    _check(out)
    # they go through the one records writer and reader
    records.write_records("53_test", rows, notebook="53.ipynb", profile="quick", data={"fingerprint": "f"},
                          victim="v", results_dir=tmp_path)
    back = records.read_records(tmp_path)
    assert list(back["attack"]) == ["speckle_noise", "speckle_noise"]


def test_bpda_storage_preprocessor_matches_store(setup):
    target, scans = setup
    pre = corruptions.storage_preprocessor("jpeg", quality=75)
    out, _ = pre(scans.x[:4])
    np.testing.assert_array_equal(out, corruptions.store(scans.x[:4], "jpeg", quality=75))
    clf = estimators.art_classifier(target.model, preprocessors=[pre])
    g = clf.loss_gradient(scans.x[:4], np.eye(4, dtype=np.float32)[scans.y[:4]])
    assert g.shape == scans.x[:4].shape and np.abs(g).sum() > 0
    with pytest.raises(ValueError, match="quality"):
        corruptions.storage_preprocessor("jpeg", quality=101)


def test_universal_perturbations_are_saved_to_the_cache_and_read_back(tmp_path):
    from types import SimpleNamespace

    from octlib.clinical import load_perturbations, save_perturbations

    rng = np.random.default_rng(0)
    made = {"→ NORMAL, OCT": [SimpleNamespace(noise=rng.uniform(-0.03, 0.03, (1, 8, 8, 1)).astype(np.float32),
                                              params={"eps_label": e}) for e in ("2/255 (0.0078)", "8/255 (0.0314)")]}
    path = save_perturbations(made, "52_uap-cnn-x", folder=tmp_path)
    assert path == tmp_path / "52_uap-cnn-x.npz"
    back = load_perturbations(path)
    assert list(back) == [("→ NORMAL, OCT", "2/255 (0.0078)"), ("→ NORMAL, OCT", "8/255 (0.0314)")]
    np.testing.assert_array_equal(back[("→ NORMAL, OCT", "8/255 (0.0314)")], made["→ NORMAL, OCT"][1].noise[0])


def test_stored_universal_reads_one_perturbation_of_notebook_52_and_scores_it(setup, tmp_path):
    from types import SimpleNamespace

    target, scans = setup
    assert clinical.stored_universal("cnn-x", folder=tmp_path) is None  # notebook 52 has not run for this model
    rng = np.random.default_rng(1)
    made = {kind: [SimpleNamespace(noise=rng.uniform(-e / 255, e / 255, (1, 16, 16, 1)).astype(np.float32),
                                   params={"eps_label": f"{e:g}/255 ({e / 255:.4f})"}) for e in (4, 8)]
            for kind in ("untargeted, OCT", "→ NORMAL, OCT")}
    made["untargeted L2, OCT"] = [SimpleNamespace(noise=np.zeros((1, 16, 16, 1), np.float32),
                                                  params={"eps_label": "L2 0.5"})]
    clinical.save_perturbations(made, "52_uap-cnn-x", folder=tmp_path)
    largest = clinical.stored_universal("cnn-x", folder=tmp_path)
    np.testing.assert_array_equal(largest.noise, made["untargeted, OCT"][1].noise)
    assert largest.params["eps_255"] == 8 and largest.params["eps_label"] == "8/255 (0.0314)"
    four = clinical.stored_universal("cnn-x", "→ NORMAL, OCT", 4, folder=tmp_path)
    np.testing.assert_array_equal(four.noise, made["→ NORMAL, OCT"][0].noise)
    with pytest.raises(ValueError, match=r"eps_255=2.*4, 8"):
        clinical.stored_universal("cnn-x", eps_255=2, folder=tmp_path)
    with pytest.raises(ValueError, match="no L∞ perturbation of kind 'untargeted L2, OCT'"):
        clinical.stored_universal("cnn-x", "untargeted L2, OCT", folder=tmp_path)
    # scored as an attack run: the scans moved by the perturbation (clipped to [0, 1]), the model's logits on both
    run = largest.run(target.model, scans.x, scans.y)
    assert run.attack == "universal" and run.x_adv.shape == scans.x.shape
    np.testing.assert_allclose(run.x_adv, np.clip(scans.x + largest.noise, 0, 1), atol=1e-7)
    assert np.abs(run.x_adv - scans.x).max() <= 8 / 255 + 1e-6
    from octlib.metrics import predict_logits

    np.testing.assert_allclose(run.logits_adv, predict_logits(target.model, run.x_adv), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run.logits_clean, predict_logits(target.model, scans.x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="labels"):
        largest.run(target.model, scans.x, scans.y[:3])


def _constant_model(bias, size=16):
    """A model whose logits are ``bias`` whatever the scan: its smoothed answer is known exactly."""
    return keras.Sequential([keras.Input((size, size, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(4, kernel_initializer="zeros",
                                                bias_initializer=keras.initializers.Constant(list(bias)))])


def test_certify_from_counts_is_arts_certify_and_groups_certify_the_decision(setup):
    """Without groups, CERTIFY from the counts equals ART's ``certify`` on the same draws (same NumPy seed); with
    the referral groups, a scan whose votes split between CNV and DME abstains as a class but is certified urgent,
    with the radius the Clopper-Pearson bound on the urgent votes gives."""
    from scipy.stats import beta, norm

    from octlib import defences

    target, scans = setup
    smoothed = estimators.smoothed_classifier(target.model, 0.25, n0=20, alpha=0.01, chunk=64)
    np.random.seed(3)
    pred, radius = smoothed.certify(scans.x[:12], n=150, batch_size=64)
    np.random.seed(3)
    select, estimate = smoothed.certify_counts(scans.x[:12], 150, batch_size=64)
    assert select.shape == estimate.shape == (12, 4) and (select.sum(1) == 20).all() and (estimate.sum(1) == 150).all()
    mine, mine_r = defences.certify_from_counts(select, estimate, sigma=0.25, n=150, alpha=0.01)
    np.testing.assert_array_equal(mine, pred)
    assert len(set(pred.tolist())) >= 2  # not one answer for every scan: the comparison is not trivial
    np.testing.assert_allclose(mine_r, radius, rtol=1e-9)
    split = np.array([[10, 9, 1, 0]]), np.array([[40, 40, 10, 10]])
    cls, _ = defences.certify_from_counts(*split, sigma=0.5, n=100, alpha=0.001)
    grp, grp_r = defences.certify_from_counts(*split, sigma=0.5, n=100, alpha=0.001, groups=clinical.REFERRAL_GROUPS)
    assert cls.tolist() == [-1] and grp.tolist() == [0]  # 40 % for CNV cannot be certified; 80 % urgent can
    np.testing.assert_allclose(grp_r, 0.5 * norm.ppf(beta.ppf(0.001, 80, 21)), rtol=1e-9)
    # the group the selection votes pick is certified, not the one with the top class
    grp, _ = defences.certify_from_counts(np.array([[6, 0, 5, 5]]), np.array([[10, 0, 45, 45]]), sigma=0.5, n=100,
                                          alpha=0.001, groups=clinical.REFERRAL_GROUPS)
    assert grp.tolist() == [1]
    with pytest.raises(ValueError, match="groups"):
        defences.certify_from_counts(*split, sigma=0.5, n=100, alpha=0.001, groups=[(0, 1), (2,)])
    with pytest.raises(ValueError, match="n = 99"):
        defences.certify_from_counts(*split, sigma=0.5, n=99, alpha=0.001)


@pytest.mark.parametrize("bias, referred", [((5.0, 0, 0, 0), True), ((0, 0, 0, 5.0), False)])
def test_certified_referral_of_a_constant_answer_is_known_exactly(bias, referred):
    """A model answering CNV for every scan refers every urgent scan, certified up to the largest radius n samples
    can certify, and no attack can change it; one answering NORMAL misses every urgent scan before any attack
    (counted as missed at every radius) and certifies every routine one."""
    from octlib import defences

    y = np.arange(8) % 4
    scans = Scans(np.full((8, 16, 16, 1), 0.5, np.float32), y, np.array([f"s{i}" for i in range(8)]),
                  np.arange(8), 8)
    out = clinical.certified_referral(_constant_model(bias), 0.25, scans, n0=20, n=200, alpha=0.01,
                                      radii=(0.0, 0.1, 0.25, 2.0), empirical_radii=(0.25,), eot_samples=2,
                                      pgd_steps=2, batch_size=64)
    assert out["max_radius"] == pytest.approx(defences.max_certifiable_radius(0.25, 200, 0.01))
    assert [c["radius"] for c in out["curve"]] == [0.1, 0.25] and out["beyond_max_radius"] == [2.0]
    urgent = np.isin(y, [0, 1])
    for c in out["curve"]:
        assert c["n_urgent"] == 4 and c["n_routine"] == 4
        assert c["referral"] == (1.0 if referred else 0.0) and c["routine"] == (0.0 if referred else 1.0)
        assert c["four_class"] == (0.5 if referred else 0.0)  # CNV scans only: DME is urgent but not CNV
    (e,) = out["empirical"]
    assert e["still_referred"] == (1.0 if referred else 0.0) and e["missed"] == (0.0 if referred else 1.0)
    assert e["attacked"] == (4 if referred else 0)
    rows = {o.attack: o for o in out["outcomes"]}
    assert list(rows) == ["certified referral · urgent scans", "certified 4-class · urgent scans",
                          "certified referral · routine scans", "targeted L2 PGD + EOT · missed referral"]
    np.testing.assert_array_equal(rows["certified referral · urgent scans"].scan_ids, scans.ids[urgent])
    assert rows["targeted L2 PGD + EOT · missed referral"].records()[0]["missed_referral"] == e["missed"]
    _check(out["outcomes"])


def test_the_referral_certificate_reuses_notebook_46s_counts_exactly(setup, tmp_path):
    """Notebook 46's CERTIFY counts (defences.certify, stored with its results) give notebook 54 the very certificate
    it would draw itself with the same seed (the same draws in ART's order), and are refused, with the reason, for
    other scans or settings."""
    from octlib import defences
    from octlib.results import save_results

    target, all_scans = setup
    model, x, y = target.model, all_scans.x[:6], all_scans.y[:6]
    scans = Scans(x, y, np.array([f"s{i}" for i in range(6)]), np.arange(6), 6)
    kw = dict(n0=10, n=60, alpha=0.01)
    c = defences.certify(model, 0.25, x, y, radii=(0.0, 0.1), eot_samples=1, pgd_steps=1, seed=5,
                         empirical_radii=(), **kw)
    save_results("46_defence_randomized_smoothing", {"certified": {"0.25": {k: v for k, v in c.items()
                                                                           if k != "pred"}},
                                                     "artifacts": {"0.25": "cnn-x"}, "scan_ids": list(scans.ids)},
                 results_dir=tmp_path)
    counts, why = defences.stored_counts(0.25, artifact="cnn-x", scan_ids=scans.ids, seed=5, results_dir=tmp_path,
                                         **kw)
    assert counts is not None and "6 scans" in why
    common = dict(radii=(0.0, 0.1), empirical_radii=(), seed=5, **kw)
    reused = clinical.certified_referral(model, 0.25, scans, counts=counts, **common)
    drawn = clinical.certified_referral(model, 0.25, scans, **common)
    assert reused["reused_counts"] and not drawn["reused_counts"]
    for key in ("class_pred", "class_radius", "decision", "decision_radius"):
        assert reused[key] == drawn[key], key
    assert reused["class_pred"] == c["pred"] and reused["class_radius"] == pytest.approx(c["radius"])
    for change, reason in (({"scan_ids": scans.ids[::-1]}, "the scans"), ({"n": 61}, "n 60"),
                           ({"artifact": "cnn-y"}, "artifact 'cnn-x'"), ({"seed": 6}, "seed 5")):
        args = {"artifact": "cnn-x", "scan_ids": scans.ids, "seed": 5, **kw, **change}
        none, why = defences.stored_counts(0.25, results_dir=tmp_path, **args)
        assert none is None and reason in why, why
    with pytest.raises(ValueError, match="must sum to n"):
        clinical.certified_referral(model, 0.25, scans, counts=(counts[0], counts[1] * 2), **common)
