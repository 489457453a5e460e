"""Model extraction: the query pool, the victim API's answers, the label-only post-processor (and ART's bug),
the proxy pool, the extraction metrics, and Copycat / KnockoffNets on a tiny model."""

import dataclasses

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from octlib import estimators, extraction, metrics  # noqa: E402
from octlib.config import ExtractionConfig, TrainConfig, get_profile  # noqa: E402
from octlib.data import carve_query_pool, load_folder, make_splits, proxy_pool  # noqa: E402
from octlib.estimators import LabelOnly, Softmax  # noqa: E402
from octlib.models import build_cnn, build_model  # noqa: E402

TINY = TrainConfig(filters=(4, 8), dense_units=0)
ECFG = ExtractionConfig(thief_steps=20, thief_batch_size=8, budgets=(8, 16), adaptive_budgets=(8,), seeds=(0,))


@pytest.fixture(scope="module")
def victim():
    keras.utils.set_random_seed(0)
    return build_cnn(16, TINY)


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(1)
    return rng.random((40, 16, 16, 1), dtype=np.float32), np.arange(40) % 4


# -- the query pool ------------------------------------------------------------------------------------------------

def test_query_pool_shares_no_patient_with_the_victim_splits(small_layout):
    splits = make_splits(load_folder(small_layout, 16, progress=False), "official", seed=0)
    carved = carve_query_pool(splits, 0.5, seed=0)
    assert carved.pool is not None and len(carved.pool) and len(carved.test)
    for name, part in (("train", carved.train), ("val", carved.val), ("test", carved.test)):
        assert not set(carved.pool.patient_ids) & set(part.patient_ids), name
        assert not set(carved.pool.groups) & set(part.groups), name
    assert carved.info["leakage"]["ok"] and "test-pool" in carved.info["leakage"]["shared_patients"]
    assert sorted(np.concatenate([carved.test.paths, carved.pool.paths])) == sorted(splits.test.paths)
    assert carved.train is splits.train and carved.val is splits.val
    again = carve_query_pool(splits, 0.5, seed=0)
    assert list(again.pool.paths) == list(carved.pool.paths)


def test_query_pool_arguments_are_checked(small_layout):
    splits = make_splits(load_folder(small_layout, 16, progress=False), "official", seed=0)
    with pytest.raises(ValueError, match="`fraction`"):
        carve_query_pool(splits, 1.0)
    with pytest.raises(ValueError, match="already have a query pool"):
        carve_query_pool(carve_query_pool(splits, 0.5), 0.5)


def test_proxy_pool_is_deterministic_and_in_range():
    a, b = proxy_pool(30, 16, seed=3), proxy_pool(30, 16, seed=3)
    assert a.images.shape == (30, 16, 16) and a.images.dtype == np.uint8
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, proxy_pool(30, 16, seed=4).images)
    assert a.x.shape == (30, 16, 16, 1) and 0 <= a.x.min() and a.x.max() <= 1
    assert set(a.labels) <= set(range(len(a.source_names))) and len(set(a.labels)) > 5
    with pytest.raises(ValueError, match="Unknown proxy source"):
        proxy_pool(3, 16, sources=("retina",))


# -- the victim API and the label-only post-processor --------------------------------------------------------------

def test_victim_api_answers_what_its_setting_says(victim, pool):
    x = pool[0][:13]
    logits = victim.predict(x, verbose=0)
    probs_api, labels_api = estimators.victim_api(victim, "probabilities"), estimators.victim_api(victim, "labels")
    probs = probs_api.predict(x, batch_size=5)
    np.testing.assert_allclose(probs, metrics.softmax(logits), atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    labels = labels_api.predict(x, batch_size=5)
    rows = np.concatenate([labels_api.predict(x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_array_equal(labels, rows)  # batched equals row by row
    np.testing.assert_array_equal(labels, np.eye(4)[logits.argmax(1)])  # one-hot of each row's own top class
    assert probs_api.queries == 13 and labels_api.queries == 13 + 13
    with pytest.raises(ValueError, match="`answers`"):
        estimators.victim_api(victim, "logits")


def test_label_only_is_correct_on_batches():
    rng = np.random.default_rng(0)
    preds = rng.random((50, 4))
    batched = LabelOnly()(preds)
    np.testing.assert_array_equal(batched, np.concatenate([LabelOnly()(preds[i:i + 1]) for i in range(50)]))
    assert (batched.sum(axis=1) == 1).all() and (batched.argmax(1) == preds.argmax(1)).all()
    np.testing.assert_allclose(Softmax()(np.log(preds)), preds / preds.sum(1, keepdims=True), atol=1e-6)


def test_art_class_labels_bug_is_still_there():
    """ART 1.20.1's ClassLabels marks every row's top class in every row. When this fails, ART fixed it
    (PR #2824): then octlib.estimators.LabelOnly can be replaced by ART's own."""
    from art.defences.postprocessor import ClassLabels

    preds = np.array([[0.9, 0.1, 0.0, 0.0], [0.1, 0.8, 0.1, 0.0], [0.0, 0.1, 0.2, 0.7]])
    out = ClassLabels()(preds)
    rows = np.concatenate([ClassLabels()(preds[i:i + 1]) for i in range(3)])
    assert not np.array_equal(out, rows), "ART's ClassLabels is now correct on batches"
    assert (out.sum(axis=1) == 3).all()  # the bug: three classes marked in every row


# -- extraction ------------------------------------------------------------------------------------------------------

def test_thief_architectures_differ():
    a, b = build_model("victim", 16, TINY), build_model("separable", 16, TINY)
    assert a.output_shape == b.output_shape == (None, 4)
    assert any("separable" in type(layer).__name__.lower() for layer in b.layers)
    with pytest.raises(ValueError, match="Unknown architecture"):
        build_model("resnet", 16, TINY)


def test_a_thief_can_work_at_a_smaller_size_and_still_take_the_victims_scans():
    import tensorflow as tf

    full, half = build_model("separable", 16, TINY), build_model("separable@8", 16, TINY)
    assert full.input_shape == half.input_shape == (None, 16, 16, 1) and half.output_shape == (None, 4)
    resize = half.get_layer("work_size")
    assert tuple(resize.output.shape[1:3]) == (8, 8) and "work_size" not in [layer.name for layer in full.layers]
    # its first convolution sees a quarter of the pixels
    assert half.get_layer("stem_conv").output.shape[1] * 2 == full.get_layer("stem_conv").output.shape[1]
    x = tf.constant(np.random.default_rng(0).random((3, 16, 16, 1), dtype=np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(half(x, training=False)[:, 0])
    grad = tape.gradient(loss, x).numpy()  # gradients reach the scan through the resize (transfer attacks need it)
    assert np.isfinite(grad).all() and (np.abs(grad) > 0).mean() > 0.5
    with pytest.raises(ValueError, match="larger than the input"):
        build_model("victim@32", 16, TINY)
    with pytest.raises(ValueError, match="too small"):
        build_model("victim@2", 16, TINY)
    for bad in ("separable@", "separable@x", "separable@0", "resnet@8"):
        with pytest.raises(ValueError, match="Unknown architecture"):
            build_model(bad, 16, TINY)
    with pytest.raises(ValueError, match="thief_arch/alt_arch"):
        ExtractionConfig(thief_arch="separable@-1")
    with pytest.raises(ValueError, match="thief_sizes"):
        ExtractionConfig(thief_sizes=(64, 32))
    assert ExtractionConfig(thief_arch="separable@64", thief_sizes=(32, 64)).thief_arch == "separable@64"
    from octlib.config import other_arch

    assert (other_arch("separable@64"), other_arch("victim"), other_arch("victim@32")) == (
        "victim@64", "separable", "separable@32")


def test_the_thief_size_is_chosen_on_validation_scans_only(victim, pool, monkeypatch):
    x, labels = pool
    seen = {}

    def fake_sweep(victim_model, pools, *, thief_archs, budgets, seeds, x_val, **kw):
        seen.update(archs=thief_archs, budgets=budgets, seeds=seeds, x_val=x_val)
        # the evaluation fidelity prefers 16 px, the validation fidelity 8 px: the choice must follow validation
        val = {"separable@4": 0.5, "separable@8": 0.7, "separable": 0.6}
        return [{"status": "ok", "thief_arch": a, "val_fidelity": val[a], "fidelity": {"value": 1.0 if a ==
                 "separable" else 0.1}, "queries": 16, "seed": 0} for a in thief_archs]

    monkeypatch.setattr(extraction, "sweep", fake_sweep)
    ecfg = dataclasses.replace(ECFG, thief_arch="separable")
    arch, rows = extraction.choose_thief_arch(victim, x, labels, sizes=(4, 8, 16), budget=16, x_val=x[:6],
                                              x_eval=x[6:], y_eval=labels[6:], ecfg=ecfg, train_cfg=TINY)
    assert arch == "separable@8" and len(rows) == 3
    assert seen["archs"] == ("separable@4", "separable@8", "separable") and seen["budgets"] == (16,)
    assert seen["x_val"] is not None and len(seen["x_val"]) == 6
    with pytest.raises(ValueError, match="`x_val`"):
        extraction.choose_thief_arch(victim, x, labels, sizes=(8,), budget=16, x_val=None, x_eval=x, y_eval=labels)
    with pytest.raises(ValueError, match="`sizes`"):
        extraction.choose_thief_arch(victim, x, labels, sizes=(), budget=16, x_val=x, x_eval=x, y_eval=labels)


def test_a_smaller_thief_steals_through_the_api_with_every_query_counted(victim, pool):
    x, labels = pool
    ecfg = dataclasses.replace(ECFG, thief_arch="separable")
    arch, rows = extraction.choose_thief_arch(victim, x[:30], labels[:30], sizes=(8, 16), budget=24, x_val=x[30:],
                                              x_eval=x[30:], y_eval=labels[30:], ecfg=ecfg, train_cfg=TINY)
    assert arch in ("separable@8", "separable") and [r["thief_arch"] for r in rows] == ["separable@8", "separable"]
    assert all(r["status"] == "ok" and r["queries"] == 24 and r["steps"] == ecfg.thief_steps for r in rows)
    # the copy of a smaller thief is attacked like any (its model's name is a valid TensorFlow scope)
    copy = extraction.steal(victim, x[:30], thief=extraction.Thief("copycat", augment=True), budget=24,
                            thief_arch="separable@8", train_cfg=TINY, ecfg=ecfg).thief
    assert copy.input_shape == (None, 16, 16, 1) and "@" not in copy.name
    out = extraction.transfer_outcomes(victim, {"copy": copy}, x[30:], labels[30:], 8 / 255, steps=2)
    assert len(out["fooled"]["copy"]) == 10


@pytest.mark.parametrize("attack", ["copycat", "knockoff-random", "knockoff-adaptive"])
def test_extraction_runs_and_is_reproducible(victim, pool, attack):
    x, labels = pool
    kw = dict(attack=attack, answers="probabilities", budget=16, pool_labels=labels, train_cfg=TINY, ecfg=ECFG,
              reward="div")
    a = extraction.steal(victim, x, seed=5, **kw)
    assert a.status == "ok" and a.queries >= 16 and a.thief is not None
    first = a.thief.predict(x, verbose=0)
    b = extraction.steal(victim, x, seed=5, **kw)
    assert b.thief is not a.thief  # thieves train in one shared template; each run keeps its own copy
    np.testing.assert_allclose(first, b.thief.predict(x, verbose=0), atol=1e-6)
    c = extraction.steal(victim, x, seed=6, **kw)
    assert not np.allclose(first, c.thief.predict(x, verbose=0))
    np.testing.assert_array_equal(a.thief.predict(x, verbose=0), first)  # later thieves leave it alone
    report = a.report(x, labels, victim.predict(x, verbose=0))
    assert 0 <= report["fidelity"]["value"] <= 1 and report["queries"] == a.queries


def test_random_budget_is_cut_to_the_pool(victim, pool):
    run = extraction.steal(victim, pool[0][:10], attack="copycat", budget=50, train_cfg=TINY, ecfg=ECFG)
    assert run.queries == 10 and run.extra["capped"] and run.params["nb_stolen"] == 10
    assert run.params["nb_epochs"] == 10 and run.steps == 20  # 20 steps / ceil(10 / 8) batches


def test_thief_fit_visits_every_scan_once_per_epoch_and_stops_at_its_steps(pool):
    """The thief's NumPy ``fit`` (ART's builds a tf.data pipeline per call): ART's batches and epochs, a seeded order."""
    x, labels = pool[0][:10], pool[1][:10]
    y = np.eye(4, dtype=np.float32)[labels]

    def batches_of(seed, max_steps=None, epochs=3):
        thief = extraction.thief_classifier("separable", 16, TINY, max_steps=max_steps, seed=seed)
        step, seen = thief._train_step, []

        def recording(net, images, labels_):
            out = step(net, images, labels_)
            if out is not None:
                seen.append([int(np.flatnonzero((x == img).all(axis=(1, 2, 3)))[0]) for img in images])
            return out
        thief._train_step = recording
        thief.fit(x, y, batch_size=4, nb_epochs=epochs)
        return seen, extraction.steps_taken(thief)

    seen, steps = batches_of(0)
    assert steps == 9 and [len(b) for b in seen] == [4, 4, 2] * 3  # ceil(10 / 4) batches, three epochs
    for epoch in range(3):
        assert sorted(i for batch in seen[3 * epoch:3 * epoch + 3] for i in batch) == list(range(10))  # once each
    assert seen[:3] != seen[3:6]  # a fresh order each epoch
    assert batches_of(0)[0] == seen and batches_of(1)[0] != seen  # the order follows the thief's seed
    capped, steps = batches_of(0, max_steps=4)
    assert steps == 4 and capped == seen[:4]  # stops once the step budget is spent


def test_adaptive_label_only_nan_is_reported_not_raised(victim, pool):
    x, labels = pool
    run = extraction.steal(victim, x, attack="knockoff-adaptive", answers="labels", budget=8, pool_labels=labels,
                           reward="all", train_cfg=TINY, ecfg=ECFG)
    assert run.status == "failed" and run.thief is None and "variance" in run.error
    report = run.report(x, labels, victim.predict(x, verbose=0))
    assert np.isnan(report["fidelity"]["value"])
    with pytest.raises(ValueError, match="pool_labels"):
        extraction.steal(victim, x, attack="knockoff-adaptive", budget=8, train_cfg=TINY, ecfg=ECFG)


def test_steal_checks_its_inputs(victim, pool):
    x = pool[0]
    with pytest.raises(ValueError, match="`attack`"):
        extraction.steal(victim, x, attack="jbda", ecfg=ECFG)
    with pytest.raises(ValueError, match="`budget`"):
        extraction.steal(victim, x, budget=0, ecfg=ECFG)
    with pytest.raises(ValueError, match="`pool_x`"):
        extraction.steal(victim, x[:, :8, :8], ecfg=ECFG)
    with pytest.raises(ValueError, match="`pool_x`"):
        extraction.steal(victim, x * 255, ecfg=ECFG)


def test_sweep_and_summary(victim, pool):
    x, labels = pool
    rows = extraction.sweep(victim, {"oct": (x[:12], labels[:12])}, attacks=("copycat",), answers=("labels",),
                            budgets=(4, 12, 40), seeds=(0, 1), train_cfg=TINY, ecfg=ECFG, x_eval=x, y_eval=labels,
                            progress=False)
    assert sorted({r["budget"] for r in rows}) == [4, 12]  # 40 is cut to the pool of 12 and not run twice
    assert len(rows) == 4
    table, reach = extraction.summarise(rows, threshold=0.0)
    assert list(table["n_seeds"]) == [2, 2] and reach == {"oct/copycat/labels/victim": {"queries": 4, "within": 12}}
    _, never = extraction.summarise(rows, threshold=1.01)
    assert extraction.reach_text(never) == ["oct/copycat/labels/victim: not reached within 12 queries"]


# -- metrics -------------------------------------------------------------------------------------------------------

def test_extraction_report_counts_agreement():
    y = np.array([0, 1, 2, 3])
    victim_logits = np.eye(4)[[0, 1, 2, 2]]  # victim wrong on the last scan
    thief_logits = np.eye(4)[[0, 1, 3, 2]]  # thief disagrees with the victim once, on DRUSEN
    r = metrics.extraction_report(y, victim_logits, thief_logits)
    assert r["accuracy"]["value"] == 0.5 and r["victim_accuracy"]["value"] == 0.75
    assert r["fidelity"]["value"] == 0.75 and r["relative_accuracy"] == pytest.approx(2 / 3)
    assert r["urgent_agreement"] == 1.0  # DRUSEN vs NORMAL: the same non-urgent call
    assert r["fidelity_victim_correct"] == pytest.approx(2 / 3)


def test_budget_to_reach_needs_the_curve_to_stay_above():
    assert metrics.budget_to_reach([50, 100, 200, 400], [0.5, 0.92, 0.88, 0.95]) == 400
    assert metrics.budget_to_reach([50, 100], [0.95, 0.97]) == 50
    assert metrics.budget_to_reach([50, 100], [0.5, float("nan")]) is None


def test_extraction_config_is_validated():
    with pytest.raises(ValueError, match="budgets"):
        ExtractionConfig(budgets=(100, 50))
    with pytest.raises(ValueError, match="thief_arch"):
        ExtractionConfig(thief_arch="vgg")
    assert dataclasses.replace(get_profile("quick").extraction, seeds=(0, 1)).seeds == (0, 1)


def test_knockoff_random_is_copycat_in_art(victim, pool):
    """In ART both sample the pool at random, query once and train: the same seed gives the same copy."""
    x = pool[0]
    kw = dict(answers="labels", budget=16, train_cfg=TINY, ecfg=ECFG, seed=2)
    a = extraction.steal(victim, x, attack="copycat", **kw)
    b = extraction.steal(victim, x, attack="knockoff-random", **kw)
    np.testing.assert_allclose(a.thief.predict(x, verbose=0), b.thief.predict(x, verbose=0), atol=1e-6)
    assert sum(a.answer_counts.values()) == a.queries == 16


def test_sweep_retries_a_failed_adaptive_run_with_the_fallback_reward(victim, pool):
    x, labels = pool
    kw = dict(attacks=("knockoff-adaptive",), answers=("labels",), budgets=(8,), seeds=(0,), train_cfg=TINY,
              ecfg=ECFG, x_eval=x, y_eval=labels, progress=False)
    rows = extraction.sweep(victim, {"oct": (x, labels)}, reward="all", fallback_reward="div",
                            tag={"defence": "label-only"}, **kw)
    assert [(r["thief"], r["status"]) for r in rows] == [("knockoff-adaptive (all)", "failed"),
                                                         ("knockoff-adaptive (div)", "ok")]
    assert rows[1]["params"]["reward"] == "div" and all(r["defence"] == "label-only" for r in rows)
    assert len(extraction.sweep(victim, {"oct": (x, labels)}, reward="all", **kw)) == 1  # no fallback: no retry
    with pytest.raises(ValueError, match="fallback_reward"):
        extraction.sweep(victim, {"oct": (x, labels)}, fallback_reward="best", **kw)


# -- adaptive thieves, equal compute, baselines, choosing a copy without the evaluation scans --------------------

@pytest.mark.parametrize("thief", [extraction.Thief("copycat"), extraction.Thief("knockoff-random"),
                                   extraction.Thief("knockoff-adaptive", reward="loss"),
                                   extraction.Thief("copycat", reads="argmax", repeats=2),
                                   extraction.Thief("no-query"), extraction.Thief("copycat", augment=True),
                                   extraction.Thief("copycat", augment=True, start="own-labels"),
                                   extraction.Thief("no-query", augment=True), extraction.Thief("jacobian")])
def test_every_thief_takes_the_same_optimizer_steps(victim, pool, thief):
    x, labels = pool
    run = extraction.steal(victim, x, thief=thief, budget=16, pool_labels=labels, train_cfg=TINY, ecfg=ECFG)
    assert run.status == "ok" and run.steps == ECFG.thief_steps
    expected_online = 16 // thief.repeats if thief.attack == "knockoff-adaptive" else 0
    assert run.params["online_steps"] == expected_online
    assert run.queries == (0 if thief.attack == "no-query" else 16)


def test_adaptive_budget_above_the_steps_is_refused(victim, pool):
    x, labels = pool
    with pytest.raises(ValueError, match="thief_steps"):
        extraction.steal(victim, x, thief=extraction.Thief("knockoff-adaptive", reward="loss"), budget=21,
                         pool_labels=labels, train_cfg=TINY, ecfg=ECFG)
    with pytest.raises(ValueError, match="pool_labels"):
        extraction.steal(victim, x, attack="no-query", budget=8, train_cfg=TINY, ecfg=ECFG)
    with pytest.raises(ValueError, match="reward"):
        extraction.Thief("copycat", reward="loss")
    with pytest.raises(ValueError, match="repeats"):
        extraction.Thief("copycat", repeats=0)


def test_argmax_thief_against_reverse_sigmoid_steals_the_label_only_copy(victim, pool):
    """ReverseSigmoid keeps the top class, so a thief that trains on the argmax of its answers sees exactly what
    a label-only API answers: the same copy, whatever the post-processor does to the probabilities."""
    from art.defences.postprocessor import ReverseSigmoid

    x = pool[0]
    kw = dict(budget=16, train_cfg=TINY, ecfg=ECFG, seed=3)
    labels_copy = extraction.steal(victim, x, answers="labels", **kw)
    rs = [ReverseSigmoid(beta=1.0, gamma=0.1)]
    argmax_copy = extraction.steal(victim, x, answers="probabilities", reads="argmax", defences=rs, **kw)
    raw_copy = extraction.steal(victim, x, answers="probabilities", defences=rs, **kw)
    np.testing.assert_allclose(labels_copy.thief.predict(x, verbose=0), argmax_copy.thief.predict(x, verbose=0),
                               atol=1e-6)
    assert not np.allclose(raw_copy.thief.predict(x, verbose=0), argmax_copy.thief.predict(x, verbose=0))
    assert argmax_copy.params["use_probability"] is False and raw_copy.params["use_probability"] is True


def test_repeating_client_counts_every_query_and_averages_noise_away(victim, pool):
    from octlib.defences import OutputNoise

    x = pool[0][:20]
    clean = estimators.victim_api(victim).predict(x)
    one = estimators.victim_api(victim, defences=[OutputNoise(0.3, seed=0)])
    many = estimators.victim_api(victim, defences=[OutputNoise(0.3, seed=0)], repeats=16)
    err_one, err_many = (np.abs(api.predict(x) - clean).mean() for api in (one, many))
    assert one.queries == 20 and many.queries == 20 * 16
    assert err_many < err_one / 2
    run = extraction.steal(victim, pool[0], thief=extraction.Thief("copycat", repeats=4), budget=18, train_cfg=TINY,
                           ecfg=ECFG, defences=[OutputNoise(0.3, seed=0)])
    assert run.params["nb_stolen"] == 4 and run.queries == 16 and run.budget == 18
    with pytest.raises(ValueError, match="repeats"):
        estimators.victim_api(victim, repeats=0)


def test_attacker_validation_scans_are_other_patients(small_layout):
    splits = make_splits(load_folder(small_layout, 16, progress=False), "official", seed=0)
    ecfg = ExtractionConfig(proxy_size=10, pool_val_fraction=0.3)
    attacker = extraction.attacker_pools(splits, ecfg, seed=0)
    carved = attacker.carved
    info = carved.info["attacker_val"]
    assert attacker.leakage_ok and info["images"] == len(attacker.val_y) > 0
    assert len(attacker.val_y) + len(attacker.pools["oct"][1]) + len(carved.test) == len(splits.test)
    assert not set(carved.pool.groups) & set(carved.test.groups)
    assert attacker.pools["oct"][0].shape[1:] == (16, 16, 1) and len(attacker.pools["proxy"][0]) == 10


def test_choose_copy_reads_validation_only():
    rows = [{"status": "ok", "val_fidelity": v, "fidelity": {"value": f}, "queries": q, "seed": s, "thief_arch": "a"}
            for v, f, q, s in ((0.7, 0.95, 100, 0), (0.8, 0.60, 200, 0), (0.8, 0.99, 100, 1))]
    pick = extraction.choose_copy(rows)
    assert (pick["queries"], pick["seed"]) == (100, 1)
    for r in rows:  # change every evaluation number: the choice must not move
        r["fidelity"] = {"value": 1 - r["fidelity"]["value"]}
    assert extraction.choose_copy(rows) is pick
    with pytest.raises(ValueError, match="x_val"):
        extraction.choose_copy(rows, thief_arch="b")


def test_baselines_and_flat_records_round_trip(victim, pool, tmp_path):
    from octlib import compare, records

    logits = np.eye(4)[[0, 0, 0, 1, 3, 2, 0, 3]]
    base = metrics.extraction_baselines(logits)
    assert base["majority"] == 0.5 and base["majority_class"] == "CNV" and base["chance"] == 0.25
    assert base["always_urgent"] == 0.625 and base["always_non_urgent"] == 0.375
    x, labels = pool
    rows = extraction.sweep(victim, {"oct": (x, labels)}, attacks=(extraction.Thief("copycat"),
                            extraction.Thief("copycat", reads="argmax")), answers=("probabilities",), budgets=(16,),
                            seeds=(0, 1), train_cfg=TINY, ecfg=ECFG, x_eval=x, y_eval=labels, x_val=x[:10],
                            progress=False)
    assert all(np.isfinite(r["val_fidelity"]) for r in rows)
    flat = extraction.flat_rows(rows, defence="undefended", honest_accuracy=0.9)
    assert set(extraction.FLAT_KEYS) <= set(flat[0]) and flat[0]["honest_accuracy"] == 0.9
    stamped = records.stamp_extraction(flat, profile="quick", data={"fingerprint": "abc"}, victim="v",
                                       notebook="nb.ipynb")
    from octlib.results import save_results

    save_results("x_extraction", {"extraction_records": stamped}, results_dir=tmp_path)
    frame = records.read_extraction(tmp_path)
    assert len(frame) == 4 and set(frame["thief"]) == {"copycat", "copycat · argmax"}
    records.check_one_study(frame)
    table = compare.extraction_defence_table(frame)
    assert len(table) == 1 and table.iloc[0]["n_seeds"] == 2
    best = frame.groupby("thief")["fidelity"].mean().max()
    assert table.iloc[0]["fidelity"] == pytest.approx(best)
    with pytest.raises(Exception, match="fingerprint"):
        records.stamp_extraction(flat, profile="quick", data={}, victim="v", notebook="nb")


def test_the_defence_budget_fits_the_attackers_pool():
    """Every thief must spend the same queries at the defence budget: a random-sampling thief cannot query more
    scans than the pool holds, so the budget is cut to the pool (the pooled sample's attacker has 129 scans)."""
    from octlib.extraction import Attacker

    attacker = Attacker(carved=None, pools={"oct": (np.zeros((129, 4, 4, 1)), np.zeros(129, int))}, proxy=None,
                        val_x=np.zeros((1, 4, 4, 1)), val_y=np.zeros(1, int))
    assert attacker.defence_budget((25, 50, 200)) == 129
    assert attacker.defence_budget((25, 100)) == 100
    with pytest.raises(ValueError, match="budgets"):
        attacker.defence_budget(())


# -- thieves that learn from a small pool (issue 39) ----------------------------------------------------------------

def test_augmented_queries_are_new_scans_each_a_counted_query(victim, pool):
    """A budget larger than the pool buys that many distinct queries (variants of the pool scans), each counted by
    the API; the no-query thief never calls the victim; a thief that starts from its own labels spends half its
    optimizer steps on them."""
    x, labels = pool
    q, soft, source = extraction.augment_queries(x[:10], 25, labels=labels[:10], seed=3)
    assert q.shape == (25, 16, 16, 1) and q.dtype == np.float32 and 0 <= q.min() and q.max() <= 1
    assert np.bincount(source, minlength=10).min() >= 2  # every scan used, as evenly as 25 allows
    assert len({a.tobytes() for a in q}) == 25 and not any(np.array_equal(a, b) for a in q for b in x[:10])
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)  # one-hot, or two mixed with lambda
    pure = soft.max(axis=1) > 1 - 1e-6
    assert (soft[pure].argmax(1) == labels[:10][source[pure]]).all()
    np.testing.assert_array_equal(extraction.augment_queries(x[:10], 25, seed=3)[0], q)  # seeded
    run = extraction.steal(victim, x[:10], thief=extraction.Thief("copycat", augment=True), budget=30,
                           train_cfg=TINY, ecfg=ECFG)
    assert run.queries == 30 and not run.extra["capped"] and run.params["augmented"]
    calls = []
    original = estimators.query_counting_class

    def spy():
        cls = original()

        class Spy(cls):
            def predict(self, x, **kw):
                calls.append(len(x))
                return super().predict(x, **kw)
        return Spy

    import octlib.estimators as est
    est.query_counting_class = spy
    try:
        nq = extraction.steal(victim, x[:10], thief=extraction.Thief("no-query", augment=True), budget=30,
                              pool_labels=labels[:10], train_cfg=TINY, ecfg=ECFG)
    finally:
        est.query_counting_class = original
    assert nq.queries == 0 and calls == [] and nq.answers == "none"
    tuned = extraction.steal(victim, x[:10], thief=extraction.Thief("copycat", augment=True, start="own-labels"),
                             budget=30, pool_labels=labels[:10], train_cfg=TINY, ecfg=ECFG)
    assert tuned.params["own_label_steps"] == ECFG.thief_steps // 2 and tuned.steps == ECFG.thief_steps
    assert tuned.queries == 30 and tuned.thief_name == "own labels → copycat · augmented"
    with pytest.raises(ValueError, match="pool_labels"):
        extraction.steal(victim, x, thief=extraction.Thief("copycat", start="own-labels"), budget=8, train_cfg=TINY,
                         ecfg=ECFG)
    with pytest.raises(ValueError, match="augment"):
        extraction.Thief("knockoff-adaptive", reward="loss", augment=True)


def test_theft_gain_is_paired_against_the_no_query_thief_seed_by_seed():
    """Hand-built records: on 20 scans the copy agrees with the victim on 16, the no-query thief on 6 (the 10 extra
    scans are the copy's only: exact McNemar p = 0.002) in both seeds; a copy that adds 2 scans is not supported."""
    import pandas as pd

    from octlib import compare

    def row(thief, seed, agree, budget=100):
        return {"defence": "none", "pool": "oct", "thief": thief, "answers": "probabilities", "budget": budget,
                "queries": budget, "seed": seed, "status": "ok", "fidelity": float(np.mean(agree)),
                "victim_majority": 0.4, "agreement": list(map(int, agree))}

    base, strong, weak = np.zeros(20, int), np.zeros(20, int), np.zeros(20, int)
    base[:6], strong[:16], weak[:8] = 1, 1, 1
    baseline = "no-query (own labels) · augmented"
    frame = pd.DataFrame([row(baseline, s, base) for s in (0, 1)] + [row("copycat · augmented", s, strong)
                                                                      for s in (0, 1)]
                         + [row("weak", s, weak) for s in (0, 1)] + [row("copycat · augmented", 0, strong, 50)])
    table = compare.theft_gain_table(frame).set_index("thief")
    assert len(table) == 2  # the budget with no baseline run is left out
    strong_row = table.loc["copycat · augmented"]
    assert strong_row["gain"] == pytest.approx(0.5) and strong_row["supported"] and strong_row["seeds"] == 2
    assert strong_row["p (max over seeds)"] == pytest.approx(0.001953125) and strong_row["majority"] == 0.4
    assert not table.loc["weak", "supported"] and table.loc["weak", "p (max over seeds)"] == 0.5
    # records of several notebooks: each notebook's thieves are their own rows, paired with their notebook's
    # baseline where it ran one (32's), else with another's on the same scans (31's with 30's)
    plain = "no-query (own labels)"
    notebooks = pd.DataFrame([{**row(plain, s, base), "result": "30"} for s in (0, 1)]
                             + [{**row("copycat", s, weak), "result": "30"} for s in (0, 1)]
                             + [{**row("knockoff", s, strong), "result": "31"} for s in (0, 1)]
                             + [{**row(plain, s, strong), "result": "32"} for s in (0, 1)]
                             + [{**row("copycat", s, strong), "result": "32"} for s in (0, 1)])
    by = compare.theft_gain_table(notebooks, baseline=plain).set_index(["result", "thief"])
    assert sorted(by.index) == [("30", "copycat"), ("31", "knockoff"), ("32", "copycat")]
    assert by.loc[("31", "knockoff"), "gain"] == pytest.approx(0.5) and by.loc[("32", "copycat"), "gain"] == 0.0
    assert (by["seeds"] == 2).all()
    other_arch = pd.concat([notebooks, pd.DataFrame([{**row("copycat", s, strong), "result": "30"} for s in (0, 1)])
                            .assign(thief_arch="victim")], ignore_index=True)
    other_arch["thief_arch"] = other_arch["thief_arch"].fillna("separable")
    paired = compare.theft_gain_table(other_arch, baseline=plain)
    assert len(paired) == 3  # a copy of another architecture than its no-query thief's is not paired with it


def test_the_steal_then_attack_chain_is_paired_on_the_same_scans(victim, pool):
    """The victim as its own source is the white-box attack (PGD at a large ε fools what it fools); the chain table
    tests every source against it and against the surrogate on the scans the victim answers right."""
    from octlib import compare

    x, labels = pool
    y = victim.predict(x, verbose=0).argmax(1)  # the victim is right on every scan
    y[:4] = (y[:4] + 1) % 4  # ... except these four
    fresh = build_cnn(16, TINY)
    chain = extraction.transfer_outcomes(victim, {"white-box": victim, "independent surrogate": fresh}, x, y, 0.3,
                                         steps=5)
    assert chain["correct"].sum() == 36 and not chain["fooled"]["white-box"][:4].any()
    assert chain["fooled"]["white-box"].sum() >= 30  # ε = 0.3 on a tiny untrained model
    table = compare.chain_table(chain).set_index("source")
    assert table.loc["white-box", "n"] == 36 and table.loc["white-box", "transfer success"] >= 30 / 36
    assert np.isnan(table.loc["white-box", "p vs white-box"])
    assert 0 <= table.loc["independent surrogate", "p vs white-box"] <= 1


def test_jacobian_thief_doubles_its_set_with_counted_queries_until_the_budget(victim, pool):
    """Papernot et al.'s augmentation: the pool scans, then rounds that each add at most as many new points as the
    set holds, every point a counted query; exactly ``thief_steps`` optimizer steps over the training phases."""
    x, _ = pool
    run = extraction.steal(victim, x[:10], thief=extraction.Thief("jacobian"), budget=35, train_cfg=TINY, ecfg=ECFG)
    assert run.status == "ok" and run.queries == 35 and run.steps == ECFG.thief_steps
    assert run.params["set_sizes"] == [10, 20, 35] and run.params["rounds"] == 2 and not run.extra["capped"]
    rows = extraction.sweep(victim, {"oct": (x[:10], None)}, attacks=(extraction.Thief("jacobian"),),
                            answers=("probabilities",), budgets=(10, 35), seeds=(0,), train_cfg=TINY, ecfg=ECFG,
                            x_eval=x, y_eval=np.arange(len(x)) % 4, progress=False)
    assert [r["queries"] for r in rows] == [10, 35]  # budgets above the pool are not cut to it: new points
    small = extraction.steal(victim, x[:10], thief=extraction.Thief("jacobian"), budget=6, train_cfg=TINY, ecfg=ECFG)
    assert small.queries == 6 and small.params["set_sizes"] == [6] and small.steps == ECFG.thief_steps
    with pytest.raises(ValueError, match="neither"):
        extraction.Thief("jacobian", repeats=2)


def test_jacobian_step_moves_every_pixel_by_lambda_along_the_class_logit_gradient():
    """On a linear thief the gradient of logit c is the weight row of c: each new point is the scan moved by exactly
    ±λ per pixel with the sign of that weight (clipped to [0, 1]); a negative λ (the periodic step) moves back."""
    inputs = keras.Input((4, 4, 1))
    net = keras.Model(inputs, keras.layers.Dense(4, use_bias=False)(keras.layers.Flatten()(inputs)))
    w = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    net.layers[-1].set_weights([w])

    class Thief:  # what jacobian_step needs of a thief classifier
        model = net

    x = np.full((3, 4, 4, 1), 0.5, np.float32)
    classes = np.array([0, 2, 3])
    out = extraction.jacobian_step(Thief(), x, classes, 0.1)
    expected = 0.5 + 0.1 * np.sign(w[:, classes].T).reshape(3, 4, 4, 1)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    np.testing.assert_allclose(extraction.jacobian_step(Thief(), x, classes, -0.1), 1 - expected, atol=1e-6)
    assert extraction.jacobian_step(Thief(), np.ones_like(x), classes, 0.6).min() >= 0.4 - 1e-6


def test_the_extraction_defence_table_ranks_in_paired_tiers_with_the_gain_and_the_chain():
    """Hand-built records at one budget, 20 scans, two seeds: the copy through the label-only API agrees on 6 scans,
    the undefended copy on 16 (exact McNemar p = 0.002: another tier), the noisy copy on 7 (not separable from the
    label-only one: the same tier); each gain is over the no-query thief (4 scans) of its own defence; the chain
    joins the output defences by name."""
    import pandas as pd

    from octlib import compare

    def row(defence, thief, seed, agree, attack="copycat"):
        return {"defence": defence, "pool": "oct", "thief": thief, "attack": attack, "answers": "probabilities",
                "budget": 100, "queries": 0 if attack == "no-query" else 100, "seed": seed, "status": "ok",
                "fidelity": float(np.mean(agree)), "fidelity_low": 0.0, "fidelity_high": 1.0, "n": 20,
                "accuracy": 0.5, "urgent_agreement": 0.5, "victim_majority": 0.4, "agreement": list(map(int, agree))}

    def agree(k):
        a = np.zeros(20, int)
        a[:k] = 1
        return a

    baseline = "no-query (own labels) · augmented"
    rows = []
    for defence, k in (("undefended", 16), ("label-only", 6), ("output noise σ=0.1", 7)):
        rows += [row(defence, "copycat · augmented", s, agree(k)) for s in (0, 1)]
        rows += [row(defence, baseline, s, agree(4), attack="no-query") for s in (0, 1)]
    table = compare.extraction_defence_table(pd.DataFrame(rows))
    assert list(table["defence"]) == ["label-only", "output noise σ=0.1", "undefended"]
    assert list(table["tier"]) == [1, 1, 2]
    assert table["gain"].tolist() == pytest.approx([0.1, 0.15, 0.6])
    assert list(table["theft supported"]) == [False, False, True]
    chain = pd.DataFrame([{"source": "copy through none", "transfer success": 0.7, "95% CI": "0.6–0.8",
                           "p vs white-box": 0.01, "p vs independent surrogate": 0.02},
                          {"source": "independent surrogate", "transfer success": 0.3, "95% CI": "0.2–0.4",
                           "p vs white-box": 0.001, "p vs independent surrogate": float("nan")}])
    joined = compare.with_chain(table, chain).set_index("defence")
    assert joined.loc["undefended", "chain transfer"] == 0.7 and joined.loc["undefended", "chain p vs surrogate"] == 0.02
    assert np.isnan(joined.loc["label-only", "chain transfer"]) and joined.loc["label-only", "chain 95% CI"] == ""


def test_defended_thefts_train_the_no_query_thief_once_and_score_it_against_each_model(victim, pool):
    """The no-query baseline never calls a victim, so it is trained once per seed and budget and scored against each
    defended model; the augmented Copycat and the plain thieves run per model."""
    x, labels = pool
    keras.utils.set_random_seed(5)
    other = build_cnn(16, TINY)
    calls = []
    original = extraction.steal

    def counting(*args, **kwargs):
        calls.append(kwargs["thief"].name)
        return original(*args, **kwargs)

    extraction.steal = counting
    try:
        rows = extraction.defended_thefts({"a": victim, "b": other}, (x, labels), thieves=(extraction.Thief("copycat"),),
                                          budget=16, augmented_budget=24, ecfg=ECFG, train_cfg=TINY, x_eval=x,
                                          y_eval=labels)
    finally:
        extraction.steal = original
    assert calls.count("no-query (own labels) · augmented") == 1 and calls.count("copycat · augmented") == 2
    assert calls.count("copycat") == 2 and len(rows) == 6
    base = {r["defence"]: r for r in rows if r["attack"] == "no-query"}
    assert base["a"]["queries"] == base["b"]["queries"] == 0
    assert {r["budget"] for r in rows if r["thief"] == "copycat · augmented"} == {24}
