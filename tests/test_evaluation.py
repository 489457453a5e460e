"""The attack suite on a linear model whose answer under attack is known exactly, and the pieces around it:
threat model, Carlini checks, records, paired statistics and the comparison built from them."""

from dataclasses import replace

import numpy as np
import pytest

from octlib import checks, compare, evaluation, records, registry, stats
from octlib.config import SuiteConfig
from octlib.results import ResultsError
from octlib.threat import ThreatModel, eps_label, to_255, to_unit

keras = pytest.importorskip("keras")

S = 8  # scan side
P = S * S
# Scans of class 0 with every pixel at v: the model answers 0 while mean(x) > 0.5, so an L-infinity attack that
# darkens every pixel by ε fools the scan exactly when ε > v - 0.5.
LEVELS = (0.51, 0.52, 0.6, 0.9)
GRID_255 = (1, 4, 16, 64)  # ε = 0.0039, 0.0157, 0.0627, 0.251
EXPECTED_ROBUST = np.array([[v - 0.5 >= e / 255 for v in LEVELS] for e in GRID_255])


def linear_model():
    """logits = (mean(x), 0.5, -100, -100): class 0 iff the scan's mean is above 0.5."""
    inputs = keras.Input((S, S, 1))
    dense = keras.layers.Dense(4)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    w = np.zeros((P, 4), dtype=np.float32)
    w[:, 0] = 1.0 / P
    dense.set_weights([w, np.array([0.0, 0.5, -100.0, -100.0], dtype=np.float32)])
    return model


@pytest.fixture(scope="module")
def scans():
    x = np.stack([np.full((S, S, 1), v, dtype=np.float32) for v in LEVELS] + [np.full((S, S, 1), 0.7, np.float32)])
    y = np.array([0, 0, 0, 0, 1])  # the last scan is answered 0: wrong when clean, never attacked
    return x, y


SUITE = SuiteConfig(attacks=("FGSM", "PGD", "APGD-DLR", "Square"), eps_255=GRID_255, headline_255=4, n_scans=None,
                    pgd_steps=5, pgd_restarts=2, apgd_steps=5, square_queries=20, batch_size=8)


@pytest.fixture(scope="module")
def result(scans):
    x, y = scans
    target = evaluation.model_target("linear", linear_model(), kind="none")
    return evaluation.evaluate(target, x, y, SUITE.threat(), SUITE, scan_ids=[f"s{i}" for i in range(5)],
                               patients=[0, 0, 1, 2, 3], progress=False)


def test_threat_model_converts_eps_in_one_place():
    t = ThreatModel("inf", eps_255=(0.5, 2, 8), headline_255=2)
    assert t.eps == (0.5 / 255, 2 / 255, 8 / 255) and t.grid == (0.5, 2.0, 8.0)
    assert t.labels[1] == "2/255 (0.0078)" == eps_label(2 / 255) and t.headline == 2 / 255 and t.index(8) == 2
    assert to_255(to_unit(2)) == 2 and eps_label(0.25, "2") == "L2 0.25"
    assert to_255(np.array([to_unit(0.5), to_unit(2), 1.0])).tolist() == [0.5, 2.0, 255.0]
    for bad in ({"eps_255": (2, 1)}, {"eps_255": (300,)}, {"eps_255": (1, 2), "headline_255": 3}, {"norm": "1"}):
        with pytest.raises(ValueError):
            ThreatModel(**{"norm": "inf", "eps_255": (1, 2), **bad})
    with pytest.raises(ValueError, match="not on"):
        t.index(3)
    assert ThreatModel("2", radii=(0.1, 0.25)).eps == (0.1, 0.25)


def test_suite_finds_exactly_the_scans_a_linear_model_loses(result):
    correct_part = result.robust[:, :4]
    np.testing.assert_array_equal(correct_part, EXPECTED_ROBUST)
    assert not result.robust[:, 4].any() and set(result.fooled_by[:, 4]) == {"clean"}  # wrong when clean
    np.testing.assert_allclose(result.robust_accuracy(), EXPECTED_ROBUST.sum(axis=1) / 5)
    # the model is linear: FGSM alone is optimal, and PGD agrees with it
    np.testing.assert_array_equal(result.own["FGSM"]["robust"], result.robust)
    np.testing.assert_array_equal(result.own["PGD"]["robust"], result.robust)


def test_loss_is_the_models_cross_entropy_and_never_falls(result):
    assert (np.diff(result.loss, axis=0) >= -1e-12).all()
    assert (result.loss >= result.clean_loss - 1e-9).all()
    fooled = ~result.robust[:, :4]
    assert (result.loss[:, :4][fooled] > np.log(2) - 1e-6).all()  # fooled: the true class is not on top


def test_loss_comes_from_one_max_loss_attack_on_every_scan_at_every_eps(scans, result):
    """The loss under attack is PGD's highest cross-entropy on every scan at every ε, fooled and wrong-clean scans
    included: on the linear model PGD reaches the ε-ball's corner, where the loss is known in closed form."""
    def softmax_ce(logits, y):
        logits = np.asarray(logits, dtype=float)
        return np.log(np.exp(logits).sum()) - logits[y]

    eps = np.array(GRID_255) / 255
    expected = np.array([[softmax_ce([v - e, 0.5, -100, -100], 0) for v in LEVELS]
                         + [softmax_ce([0.7 + e, 0.5, -100, -100], 1)] for e in eps])
    np.testing.assert_allclose(result.loss, expected, rtol=1e-4)
    assert result.settings["loss_attack"] == "PGD-5 × 2 on every scan"
    assert result.cost["loss_gradients"] == 5 * 2 * 5 * len(GRID_255)
    # the suite's own loss (the old reading) stops at a fooled or wrong-clean scan: the wrong-clean scan stays at
    # its clean loss at every ε
    x, y = scans
    early = evaluation.evaluate(evaluation.model_target("linear", linear_model(), kind="none"), x, y, SUITE.threat(),
                                replace(SUITE, loss_attack=False, attacks=("FGSM", "PGD")), progress=False)
    np.testing.assert_allclose(early.loss[:, 4], early.clean_loss[4])
    assert (result.loss[-1, 4] > early.loss[-1, 4] + 0.1) and "early-exited" in early.settings["loss_attack"]


def test_fooled_scans_are_not_attacked_again_and_that_saves_gradients(scans, result):
    x, y = scans
    again = evaluation.evaluate(evaluation.model_target("linear", linear_model(), kind="none"), x, y, SUITE.threat(),
                                SUITE, progress=False, skip_fooled=False)
    np.testing.assert_array_equal(again.robust, result.robust)  # same robust accuracy ...
    assert result.cost["gradients"] < again.cost["gradients"]  # ... for fewer gradient evaluations
    assert result.cost["gradients_without_skipping"] == again.cost["gradients"]
    assert result.cost["gradients_saved"] == again.cost["gradients"] - result.cost["gradients"] > 0


def test_records_are_flat_rows_with_per_scan_outcomes(result):
    rows = result.records()
    assert {r["attack"] for r in rows} == {"FGSM", "PGD", "suite"} and len(rows) == 3 * len(GRID_255)
    suite_rows = [r for r in rows if r["attack"] == "suite"]
    assert [r["robust_accuracy"] for r in suite_rows] == list(EXPECTED_ROBUST.sum(axis=1) / 5)
    for r in rows:
        records.check_row(r)
        assert r["n"] == 5 and r["scan_ids"][0] == "s0" and r["patients"] == [0, 0, 1, 2, 3]
        assert r["accuracy_drop"] == pytest.approx(r["clean_accuracy"] - r["robust_accuracy"])
        assert r["loss_increase"] == pytest.approx(r["attacked_loss"] - r["clean_loss"])
    assert suite_rows[0]["attacks"] == ["FGSM", "PGD", "APGD-DLR", "Square"]


def test_pgd_keeps_the_highest_loss_restart_per_scan_unless_another_one_fools_it(monkeypatch):
    import octlib.attacks as attacks

    x = np.zeros((3, S, S, 1), dtype=np.float32)
    calls = []

    class Run:
        def __init__(self, value):
            self.x_adv = np.full_like(x, value)

    def fake_pgd(clf, xs, ys, eps, **kw):
        calls.append(kw["seed"])
        return Run(0.1 * len(calls))

    monkeypatch.setattr(attacks, "pgd", fake_pgd)
    table = {0.1: np.array([1.0, 5.0, 2.0]), 0.2: np.array([3.0, 1.0, 2.5]), 0.3: np.array([2.0, 4.0, 9.0])}

    def restart(xa):  # every scan of a fake run holds that run's value
        return round(float(xa[0, 0, 0, 0]), 1)

    def score(xa):
        return np.array([table[round(float(v), 1)][i] for i, v in enumerate(xa[:, 0, 0, 0])])

    x_best, loss, fooled, pred = registry.pgd_best(None, x, np.zeros(3, int), 0.1, norm="inf", steps=1,
                                                      restarts=3, seed=0, batch_size=8, score=score)
    assert len(set(calls)) == 3  # each restart its own seed
    np.testing.assert_allclose(loss, [3.0, 5.0, 9.0])
    np.testing.assert_allclose(x_best[:, 0, 0, 0], [0.2, 0.1, 0.3])
    assert not fooled.any()
    # restart 1 fools scan 2 (at a lower loss than restart 3): the scan counts as fooled, with restart 1's scan
    calls.clear()

    def answer(xa):
        return np.array([1 if (restart(xa) == 0.1 and i == 2) else 0 for i in range(len(xa))])

    x_best, loss, fooled, pred = registry.pgd_best(None, x, np.zeros(3, int), 0.1, norm="inf", steps=1,
                                                      restarts=3, seed=0, batch_size=8, score=score, answer=answer)
    assert fooled.tolist() == [False, False, True] and pred.tolist() == [0, 0, 1]
    np.testing.assert_allclose(x_best[:, 0, 0, 0], [0.2, 0.1, 0.1])
    np.testing.assert_allclose(loss, [3.0, 5.0, 9.0])  # the loss reported is still the highest found


def test_input_transform_is_attacked_through_the_transform_with_bpda(scans, result):
    from art.defences.preprocessor import FeatureSqueezing

    x, y = scans
    squeeze = FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=1)  # every pixel to 0 or 1: no gradient at all
    target = evaluation.input_target("1-bit squeezing", linear_model(), squeeze)
    assert target.kind == "input" and target.settings["transform"] == "FeatureSqueezing"
    assert target.crafting("cross_entropy").preprocessing_defences == [squeeze]  # BPDA: crafted through it
    np.testing.assert_allclose(target.scores(x[:1])[0, 0], 1.0, atol=1e-6)  # mean of the squeezed scan (0.51 -> 1)
    ev = evaluation.evaluate(target, x, y, SUITE.threat(), SUITE, scan_ids=[f"s{i}" for i in range(5)],
                             patients=[0, 0, 1, 2, 3], progress=False)
    # uniform scans and a model that thresholds the mean at 0.5, where 1-bit squeezing thresholds each pixel: the
    # squeezed model answers what the plain one does, and BPDA finds the same adversarial scans (a transform that
    # hid the gradient from a non-adaptive attack would leave more scans robust)
    np.testing.assert_array_equal(ev.robust, result.robust)


def _inversion():
    """An ART pre-processor ``x -> 1 - x`` that knows its own gradient (-1): BPDA through it is the exact gradient."""
    from art.defences.preprocessor import Preprocessor

    class Invert(Preprocessor):
        def __init__(self):
            super().__init__(is_fitted=True, apply_fit=False, apply_predict=True)

        def __call__(self, x, y=None):
            return 1.0 - np.asarray(x, dtype=np.float32), y

        def estimate_gradient(self, x, grad):
            return -grad

    return Invert()


def test_non_adaptive_attacker_misses_what_bpda_finds_and_the_fold_keeps_both():
    """Inverted scans (mean 1 - v) in front of the linear model: the defended model answers class 0 exactly as the
    plain model does on the original scans, so BPDA through the inversion fools exactly the scans the suite fools
    there (``EXPECTED_ROBUST``). The attacker who ignores the inversion ascends the bare model's loss, which the
    inversion turns into a *more* confident right answer: it fools none. Folding keeps the worst case of both."""
    x = np.stack([np.full((S, S, 1), 1.0 - v, dtype=np.float32) for v in LEVELS])
    y = np.zeros(4, int)
    ids, patients = [f"s{i}" for i in range(4)], [0, 1, 2, 3]
    suite = replace(SUITE, attacks=("FGSM", "PGD"), loss_attack=False)
    threat = suite.threat()
    run = {}
    for adaptive in (True, False):
        invert = _inversion()
        target = evaluation.input_target("inverted", linear_model(), invert, adaptive=adaptive)
        crafted_through = target.crafting("cross_entropy").preprocessing_defences or []
        assert crafted_through == ([invert] if adaptive else [])
        run[adaptive] = evaluation.evaluate(target, x, y, threat, suite, scan_ids=ids, patients=patients,
                                            progress=False)
    bpda, blind = run[True], run[False]
    scans_ = evaluation.Scans(x, y, np.array(ids), np.array(patients), 4)
    both = evaluation.transform_evaluations(linear_model(), {"inverted": _inversion(), "again": _inversion()}, scans_,
                                            threat, suite, converge=False)
    for folded, ignored in both.values():  # the notebook's call: the same outcomes, folded already
        np.testing.assert_array_equal(folded.robust, EXPECTED_ROBUST)
        assert ignored.robust.all() and folded.settings["folded"]["non-adaptive"]["turned"] == [0, 0, 0, 0]
    assert both["again"][0].settings["crafts_shared"]["reused"] > 0  # the blind attacker crafted once for both
    np.testing.assert_array_equal(bpda.clean_pred, np.zeros(4))
    np.testing.assert_array_equal(bpda.robust, EXPECTED_ROBUST)
    assert blind.robust.all() and blind.settings["attacker"].startswith("non-adaptive")
    before = bpda.robust.copy()
    turned = bpda.fold(blind, "non-adaptive")
    assert turned == 0 and np.array_equal(bpda.robust, before)  # nothing only the blind attacker fooled
    assert bpda.settings["folded"]["non-adaptive"]["turned"] == [0, 0, 0, 0]
    assert "non-adaptive PGD" in bpda.settings["attacks"]
    # folded the other way round, every scan BPDA fooled turns, named by the folded-in attack
    turned = blind.fold(run[True], "BPDA")
    assert turned == int((~EXPECTED_ROBUST).sum()) and np.array_equal(blind.robust, EXPECTED_ROBUST)
    assert set(blind.fooled_by[~EXPECTED_ROBUST]) <= {"BPDA FGSM", "BPDA PGD"}
    rows = bpda.records() + run[False].records(label="non-adaptive")
    assert {r["attack"] for r in rows} == {"FGSM", "PGD", "suite", "FGSM (non-adaptive)", "PGD (non-adaptive)",
                                           "suite (non-adaptive)"}
    with pytest.raises(ValueError, match="same scans"):
        bpda.fold(evaluation.evaluate(evaluation.input_target("inverted", linear_model(), _inversion()), x[:3],
                                      y[:3], threat, suite, progress=False), "other")


def test_non_adaptive_overstates_flags_only_a_supported_difference():
    n = 40
    adaptive = np.zeros(n, bool)
    adaptive[:10] = True
    blind = adaptive.copy()
    blind[10:20] = True  # 10 scans only the adaptive attacker fooled: p = 0.002
    close = adaptive.copy()
    close[10:12] = True  # 2 scans: p = 0.5
    rows = []
    for model, na in (("masked", blind), ("close", close)):
        suite = _rows(model, adaptive, kind="input")
        other = _rows(model, na, kind="input")
        other[0]["attack"] = "suite (non-adaptive)"
        rows += suite + other
    found = checks.non_adaptive_overstates(rows)
    assert not found["failed"] and len(found["masking"]) == 1 and found["masking"][0].startswith("masked at 2/255")
    table = compare.transform_table(_frame(rows), 2).set_index("model")
    assert table.loc["masked", "fooled by the adaptive attacker only"] == 10 and table.loc["masked", "masked"]
    assert table.loc["close", "robust (non-adaptive)"] == 0.3 and not table.loc["close", "masked"]
    unfolded = _rows("bug", blind, kind="input") + _rows("bug", adaptive, kind="input")
    unfolded[1]["attack"] = "suite (non-adaptive)"  # the suite row counts robust what the blind attacker fooled
    assert "was not folded in" in checks.non_adaptive_overstates(unfolded)["failed"][0]


def test_input_transforms_are_arts_preprocessors_with_the_identity_gradient():
    from octlib import defences
    from octlib.config import DefenceConfig

    transforms = defences.input_transforms()
    assert list(transforms) == ["JPEG q=75", "bit depth 5", "median 3×3"]
    x = np.random.default_rng(0).random((2, 16, 16, 1)).astype(np.float32)
    for name, pre in transforms.items():
        out = np.asarray(pre(x)[0])
        assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1 and not np.allclose(out, x), name
        np.testing.assert_array_equal(pre.estimate_gradient(x, np.ones_like(x)), np.ones_like(x))  # BPDA
    np.testing.assert_allclose(np.asarray(transforms["bit depth 5"](x)[0]) * 31, np.rint(x * 31), atol=1e-5)
    assert list(defences.input_transforms(("median", "jpeg"))) == ["JPEG q=75", "median 3×3"]  # the fixed order
    with pytest.raises(ValueError, match="names"):
        defences.input_transforms(("jpeg", "blur"))
    with pytest.raises(ValueError, match="input_transforms"):
        DefenceConfig(input_transforms=("blur",))
    for bad, what in (({"jpeg_quality": 0}, "jpeg_quality"), ({"squeeze_bits": 8}, "squeeze_bits"),
                      ({"median_window": 1}, "median_window")):
        with pytest.raises(ValueError, match=what):
            defences.input_transforms(**bad)
        with pytest.raises(ValueError, match=what):
            DefenceConfig(**bad)


@pytest.mark.parametrize("answers", ["probabilities", "labels"])
def test_black_box_probes_query_the_answers_and_cannot_beat_what_no_attack_can(scans, result, answers):
    """Square and HopSkipJump through what an API answers, on the linear model at 4/255: the scans whose mean is at
    least ε above 0.5 cannot be fooled by any perturbation within ε, so they are robust under both probes by
    construction, the wrong-clean scan is never robust, and white-box <= black-box <= clean holds."""
    from octlib.estimators import victim_api

    x, y = scans
    model = linear_model()
    api = victim_api(model, answers)
    target = evaluation.api_target(f"API ({answers})", model, api)
    before = api.queries
    rows = evaluation.answer_probes(target, api, x, y, SUITE.threat(), SUITE, hsj_idx=[0, 1, 2, 4],
                                    hsj_settings={"max_iter": 2, "max_eval": 20, "init_eval": 5},
                                    scan_ids=[f"s{i}" for i in range(5)], patients=[0, 0, 1, 2, 3])
    assert api.queries > before  # the probes asked the API itself
    square, hsj = rows
    assert (square["attack"], hsj["attack"]) == ("Square on answers", "HopSkipJump on labels")
    assert square["eps_255"] == hsj["eps_255"] == 4 and square["n"] == 5 and hsj["n"] == 4
    assert square["robust"][1:] == [1, 1, 1, 0] and hsj["robust"][1:] == [1, 1, 0]
    assert hsj["scan_ids"] == ["s0", "s1", "s2", "s4"] and square["settings"]["probe"].startswith("score-based")
    suite_rows = [r for r in result.records() if r["attack"] == "suite"]
    assert checks.black_box_above_white_box(suite_rows + rows) == []


def test_black_box_above_white_box_flags_a_probe_that_beats_the_suite():
    def row(attack, robust, ids, probe=None):
        return {"attack": attack, "eps": 2 / 255, "eps_label": "2/255 (0.0078)", "robust": robust, "scan_ids": ids,
                "y": [0] * len(ids), "clean_pred": [0] * len(ids), "settings": {"probe": probe} if probe else {}}

    suite = row("suite", [1, 1, 0, 1], ["a", "b", "c", "d"])
    fine = row("Square on answers", [1, 1, 1], ["a", "b", "d"], probe="score")
    beats = row("HopSkipJump on labels", [0, 1], ["a", "b"], probe="decision")
    assert checks.black_box_above_white_box([suite, fine]) == []
    found = checks.black_box_above_white_box([suite, fine, beats])
    assert len(found) == 1 and "HopSkipJump on labels" in found[0] and "same 2 scans" in found[0]


def test_output_defence_is_crafted_on_logits_and_scored_through_its_answers(scans, result):
    x, y = scans
    model = linear_model()
    crafted = []

    class API:  # answers with the opposite class: crafting must never ask it
        def predict(self, xs):
            out = np.zeros((len(xs), 4))
            out[:, 1] = 1.0
            crafted.append(len(xs))
            return out

    target = evaluation.api_target("always 1", model, API())
    ev = evaluation.evaluate(target, x, y, SUITE.threat(), SUITE, progress=False)
    assert not ev.robust[:, :4].any() and ev.robust[:, 4].all()  # scored by the answers only
    # the class-1 scan is attacked at every ε on the logits (which it loses at once) yet stays robust: the answer
    # decides; the crafting classifier has no post-processor at all
    assert ev.cost["gradients"] > 0 and not target.crafting("cross_entropy").postprocessing_defences


def test_randomized_target_gets_eot_and_margin_pgd_instead_of_apgd(scans):
    x, y = scans
    target = evaluation.noise_target("noisy", linear_model(), 0.01, 2, 4, answer_draws=20)
    ev = evaluation.evaluate(target, x[:4], y[:4], SUITE.threat(), SUITE, progress=False)
    assert ev.settings["attacks"] == ["FGSM", "PGD", "PGD-margin", "Square"] and ev.settings["eot_samples"] == 4
    assert (ev.robust_accuracy()[-1] == 0.25) and target.randomized
    assert ev.settings["answer_draws"] == 20 and ev.per_draw.shape == ev.robust.shape
    rows = [r for r in ev.records() if r["attack"] == "suite"]
    assert all(0 <= r["per_draw_accuracy"] <= 1 and len(r["per_draw"]) == 4 for r in rows)
    # a fooled scan's worst example is answered wrong by most draws, a robust one's right by most
    assert all((np.asarray(r["per_draw"]) >= 0.5).tolist() == r["robust"] for r in rows if r["eps"] > 0)
    conv = evaluation.eot_convergence(linear_model(), 0.01, 2, x[:4], y[:4], 16 / 255, ((1, 2), (2, 2), (4, 2)),
                                      answer_draws=20)
    assert [p["eot_samples"] for p in conv["points"]] == [1, 2, 4] and conv["reached"]
    assert conv["points"][conv["converged_index"]]["robust"] <= conv["points"][0]["robust"]


def test_eot_convergence_is_cumulative_and_needs_two_quiet_growths(scans, monkeypatch):
    """Robust accuracy along the schedule is the worst case over the settings so far (non-increasing by
    construction, whatever each attack draws); convergence needs two consecutive growths that fool <= tolerance."""
    from octlib import attacks

    x, y = scans
    x, y = np.concatenate([x[:4]] * 3), np.zeros(12, dtype=int)  # 12 scans answered 0, bright enough
    fool = {1: [0, 1, 2], 2: [3], 3: [0, 4], 4: [], 5: [5]}  # per setting (its steps): which scans it fools
    real = attacks.pgd

    def scripted(clf, xs, ys, eps, *, steps, **kw):  # drives each fooled scan to black: answered 1
        run = real(clf, xs, ys, eps, steps=1, **kw)
        run.x_adv[fool[steps]] = 0.0
        return run

    monkeypatch.setattr(attacks, "pgd", scripted)
    schedule = ((1, 1), (2, 2), (4, 3), (8, 4), (16, 5))
    conv = evaluation.eot_convergence(linear_model(), 0.01, 2, x, y, 1 / 255, schedule, tolerance=1,
                                      answer_draws=10)
    pts = conv["points"]
    assert [p["own_robust"] for p in pts] == [9, 11, 10, 12, 11]
    assert [p["robust"] for p in pts] == [9, 8, 7, 7, 6]  # cumulative: never rises
    assert conv["fooled_by"][:6] == ["PGD-EOT 1x1"] * 3 + ["PGD-EOT 2x2", "PGD-EOT 4x3", "PGD-EOT 16x5"]
    assert conv["fooled_by"][6:] == [""] * 6 and conv["n"] == 12 and conv["pred"][:6] == [1] * 6
    # growth 1->2 fooled 1, 2->3 fooled 1: two quiet growths after setting 1; the suite uses the next setting
    assert conv["reached"] and conv["plateau_index"] == 0 and conv["converged_index"] == 1
    assert conv["converged"] == (2, 2)
    # the plain attack alone fooled 3 scans, EOT at (2, 2) alone 1 other: 3 vs 1 is no evidence (p = 0.31)
    assert checks.eot_beats_plain(conv) == []


def test_suite_config_is_validated():
    for bad in ({"attacks": ("FGSM", "CW")}, {"eps_255": (2, 1)}, {"headline_255": 3}, {"pgd_steps": 0},
                {"n_scans": 2}, {"eot_schedule": ((0, 1),)}, {"sweep_settings": ((0, 1),)},
                {"sweep_attacks": ("Square",)}, {"sweep_attacks": ("CW",)}):
        with pytest.raises(ValueError, match="SuiteConfig"):
            SuiteConfig(**bad)


def test_carlini_checks_catch_what_they_are_for():
    assert checks.non_increasing([0.5, 0.4, 0.4]) == [] and checks.non_increasing([0.5, 0.6])
    assert checks.reaches_zero([0.5, 0.0]) == [] and "masking" in checks.reaches_zero([0.5, 0.1])[0]
    assert checks.iterative_beats_single_step([0.2, 0.1], [0.3, 0.1]) == []
    assert checks.iterative_beats_single_step([0.4], [0.3]) and not checks.iterative_beats_single_step(
        [0.31], [0.3], tolerance=0.02)
    plain_ahead = {"points": [{"fooled": [1] * 12 + [0] * 4}, {"fooled": [0] * 16}], "converged_index": 1}
    assert checks.eot_beats_plain(plain_ahead) and "12 scans" in checks.eot_beats_plain(plain_ahead)[0]
    close = {"points": [{"fooled": [1, 1, 0, 0]}, {"fooled": [0, 0, 1, 0]}], "converged_index": 1}
    assert checks.eot_beats_plain(close) == []  # 2 vs 1 discordant scans: no evidence EOT is weaker
    assert checks.whitebox_beats_blackbox(0.1, 0.3, 0.8) == [] and checks.whitebox_beats_blackbox(0.4, 0.2, 0.8)
    assert checks.whitebox_beats_blackbox(0.1, 0.9, 0.8)
    assert checks.blackbox_finds_little(["", "PGD", "Square"]) and not checks.blackbox_finds_little(["", "PGD"])


def test_evaluation_checks_read_the_records(result):
    frame = _frame(result.records())
    assert checks.evaluation_checks(frame, "linear") == {"failed": [], "masking": [
        "suspected gradient masking: robust accuracy is 0.200 at the largest ε (should reach 0)",
        "suspected gradient masking: 2 scans robust at 16/255 (0.0627): s2, s3",
        "suspected gradient masking: 1 scans robust at 64/255 (0.2510): s3"], "notes": []}
    rows = [dict(r) for r in result.records()]
    for r in rows:
        if r["attack"] == "suite" and r["eps_255"] == 64:
            r["robust_accuracy"] = 0.8  # rises with ε
    assert checks.evaluation_checks(_frame(rows), "linear")["failed"]


def test_pgd_weaker_than_fgsm_fails_only_when_the_paired_scans_show_it():
    n = 300

    def row(attack, robust):
        robust = np.asarray(robust, dtype=bool)
        return {"attack": attack, "robust": robust.tolist(), "robust_accuracy": robust.mean(), "eps_label": "2/255",
                "scan_ids": [f"s{i}" for i in range(n)]}

    base = np.zeros(n, bool)
    base[:140] = True
    one_more = base.copy()
    one_more[140] = True  # PGD misses one scan FGSM fooled: 0.470 > 0.467
    failed, notes = checks.iterative_beats_single_step_paired([row("PGD", one_more)], [row("FGSM", base)])
    assert failed == [] and "1 scans fooled by FGSM only, 0 by PGD only" in notes[0] and "not a significant" in notes[0]
    many = base.copy()
    many[140:150] = True  # ten scans FGSM fooled and PGD did not
    failed, notes = checks.iterative_beats_single_step_paired([row("PGD", many)], [row("FGSM", base)])
    assert failed and "p = 0.000977" in failed[0] and notes == []
    assert checks.iterative_beats_single_step_paired([row("PGD", many)], [row("FGSM", base)], tolerance=0.04) == \
        ([], [])
    frame = _frame([{**row(a, r), "model": "m", "kind": "training", "norm": "inf", "eps": 2 / 255, "n": n,
                     "clean_accuracy": 0.5} for a, r in (("PGD", one_more), ("FGSM", base))])
    with pytest.warns(UserWarning, match="m: iterative attack weaker"):
        found = checks.evaluation_checks(frame, "m")
    assert found["failed"] == [] and len(found["notes"]) == 1
    with pytest.raises(ValueError, match="same scans"):
        checks.iterative_beats_single_step_paired([row("PGD", many[:10])], [row("FGSM", base)])


def _frame(rows, **stamp):
    import pandas as pd

    base = {"profile": "quick", "data_fingerprint": "abc", "victim": "v", "notebook": "20.ipynb", "result": "20"}
    return pd.DataFrame([{**r, **base, **stamp} for r in rows])


def test_records_refuse_one_victim_name_with_two_sets_of_weights(result, tmp_path, monkeypatch):
    import json

    store = tmp_path / "artifacts"
    monkeypatch.setenv("OCTLIB_ARTIFACTS", str(store))

    def victim_with(digest):  # an artifact sidecar as get_or_train writes it
        (store / "cnn-v").mkdir(parents=True, exist_ok=True)
        (store / "cnn-v" / "model.json").write_text(json.dumps({"weights_sha256": digest}))

    rows = result.records()
    kw = {"profile": "quick", "data": {"fingerprint": "abc"}, "victim": "cnn-v", "results_dir": tmp_path}
    victim_with("aa" * 32)
    records.write_records("20_x", rows, notebook="20.ipynb", **kw)
    records.write_records("41_x", rows, notebook="41.ipynb", **kw)
    frame = records.read_records(tmp_path)
    assert set(frame["victim_weights"]) == {"aa" * 32}
    records.check_one_study(frame)  # same name, same weights: one study
    # extraction rows of the same run name the same weights, so notebook 90 can check both together
    import pandas as pd

    from octlib.extraction import FLAT_KEYS
    from octlib.results import save_results

    thief = records.stamp_extraction([dict.fromkeys(FLAT_KEYS, 0)], profile="quick", data={"fingerprint": "abc"},
                                     victim="cnn-v", notebook="30.ipynb")
    save_results("30_x", {"victim": "cnn-v", "extraction_records": thief}, results_dir=tmp_path)
    steal = records.read_extraction(tmp_path)
    assert set(steal["victim_weights"]) == {"aa" * 32}
    records.check_one_study(pd.concat([frame, steal], ignore_index=True))
    victim_with("bb" * 32)  # the victim trained again under the same name
    records.write_records("42_x", rows, notebook="42.ipynb", **kw)
    with pytest.raises(ResultsError, match=r"victim_weights: aaaa.* in 20_x, 41_x; bbbb.* in 42_x"):
        records.check_one_study(records.read_records(tmp_path))
    (store / "cnn-v" / "model.json").unlink()  # no digest known (an older result)
    records.write_records("42_x", rows, notebook="42.ipynb", **kw)
    with pytest.raises(ResultsError, match="only 20_x, 41_x name their victim's weights; 42_x predate"):
        records.check_one_study(records.read_records(tmp_path))


def test_records_round_trip_and_refuse_mixed_studies(result, tmp_path):
    rows = result.records()
    records.write_records("20_x", rows, notebook="20.ipynb", profile="quick", data={"fingerprint": "abc"},
                          victim="v1", results_dir=tmp_path)
    records.write_records("41_x", rows, notebook="41.ipynb", profile="full", data={"fingerprint": "abc"},
                          victim="v2", results_dir=tmp_path)
    frame = records.read_records(tmp_path)
    assert len(frame) == 2 * len(rows) and set(frame["result"]) == {"20_x", "41_x"}
    records.check_one_study(frame[frame.result == "20_x"])
    with pytest.raises(ResultsError, match=r"profile: full in 41_x; quick in 20_x \| victim"):
        records.check_one_study(frame)
    with pytest.raises(ResultsError, match="fingerprint"):
        records.write_records("20_y", rows, notebook="20.ipynb", profile="quick", data={}, victim="v",
                              results_dir=tmp_path)
    bad = dict(rows[0], robust=[1])
    with pytest.raises(ResultsError, match="per-scan lists"):
        records.check_row(bad)


def test_mcnemar_and_patient_bootstrap():
    a = np.array([1] * 10 + [0] * 10, bool)
    b = np.array([0] * 10 + [0] * 10, bool)
    t = stats.mcnemar(a, b)
    assert (t["a_only"], t["b_only"]) == (10, 0) and t["p_value"] == pytest.approx(2 * 0.5 ** 10)
    assert stats.mcnemar(a, a)["p_value"] == 1.0
    with pytest.raises(ValueError, match="same scans"):
        stats.mcnemar(a, b[:3])
    # one patient with all the successes: the clustered interval is wider than treating scans as independent
    values = np.array([1.0] * 10 + [0.0] * 10)
    one_patient = stats.cluster_bootstrap(values, np.r_[np.zeros(10), np.arange(1, 11)], seed=0)
    independent = stats.cluster_bootstrap(values, np.arange(20), seed=0)
    assert one_patient["n_clusters"] == 11 and independent["n_clusters"] == 20
    assert one_patient["ci_high"] - one_patient["ci_low"] > independent["ci_high"] - independent["ci_low"]
    diff = stats.cluster_bootstrap(values, np.arange(20), paired_with=values)
    assert diff["value"] == diff["ci_low"] == diff["ci_high"] == 0.0
    p = stats.proportion(a, np.arange(20))
    assert p["value"] == 0.5 and p["ci_low"] < 0.5 < p["ci_high"] and "boot_low" in p


def test_clean_cost_is_paired_tested_against_the_undefended_victim():
    n = 60
    robust = np.zeros(n, bool)
    costly = np.ones(n, bool)
    costly[:20] = False  # 20 scans the defence gets wrong clean that the victim gets right
    frame = _frame(_rows("undefended", robust, kind="none") + _rows("costly", robust, clean_correct=costly)
                   + _rows("free", robust))
    table = compare.headline_table(frame, 2).set_index("model")
    assert table.loc["costly", "clean discordant (defence only / reference only)"] == "0 / 20"
    assert table.loc["costly", "p clean vs undefended"] < 1e-5 and table.loc["free", "p clean vs undefended"] == 1.0
    assert np.isnan(table.loc["undefended", "p clean vs undefended"]) or table.loc["undefended",
                                                                                 "p clean vs undefended"] is None
    assert set(compare.tiers(frame, 2).values()) == {1}  # nothing separates their robust outcomes


def _rows(model, robust, clean_correct=None, kind="training", eps_255=2):
    n = len(robust)
    threat = ThreatModel("inf", eps_255=(eps_255,))
    y = np.zeros(n, int)
    clean_pred = np.where(np.ones(n, bool) if clean_correct is None else clean_correct, 0, 1)
    return evaluation.outcome_rows(model, kind, "suite", threat, y, clean_pred, np.full(n, 0.5), [robust],
                                   [np.where(robust, 0.6, 3.0)], [f"s{i}" for i in range(n)], np.arange(n) // 2,
                                   attacks=["PGD"])


def test_headline_table_puts_robust_accuracy_first_and_tests_on_paired_scans():
    n = 60
    base = np.zeros(n, bool)
    base[:6] = True
    strong = np.zeros(n, bool)
    strong[:30] = True  # 24 scans more: supported
    close = base.copy()
    close[6:8] = True  # 2 scans more: not supported
    frame = _frame(_rows("undefended", base, kind="none") + _rows("adv", strong) + _rows("close", close))
    table = compare.headline_table(frame, 2)
    assert list(table["model"]) == ["adv", "close", "undefended"] and list(table.columns[:5]) == [
        "model", "tier", "kind", "n", "robust acc"]
    # tiers: adv is separated from close (22 discordant scans), close is not from undefended (2)
    assert list(table["tier"]) == [1, 2, 2] and compare.tiers(frame, 2) == {"adv": 1, "close": 2, "undefended": 2}
    adv = table.set_index("model").loc["adv"]
    assert adv["robust acc"] == 0.5 and adv["discordant (defence only / reference only)"] == "24 / 0"
    assert adv["p vs undefended"] < 1e-6 and table.set_index("model").loc["close", "p vs undefended"] == 0.5
    assert len(compare.narrow(table).columns) <= 10  # with the tier and the clean-cost test
    text = compare.reading(frame, 2)
    assert "**adv** is more robust" in text and "No supported difference from the undefended victim" in text
    assert "**close**" not in text and "close (0.133, p = 0.5)" in text
    tests = compare.paired_tests(frame, 2)
    assert set(zip(tests["a"], tests["b"])) >= {("adv", "undefended"), ("close", "undefended"), ("adv", "close")}
    assert len(compare.paired_tests(frame, 2, pairs=[("close", "adv")])) == len(tests)  # asked for, tested once
    clean = tests.set_index(["a", "b"]).loc[("adv", "close")]
    assert clean["clean a"] == clean["clean b"] == 1.0 and clean["clean p"] == 1.0  # all right when clean
    with pytest.raises(ValueError, match="missing"):
        compare.paired_tests(frame, 2, pairs=[("adv", "missing")])


def test_paired_test_matches_scans_by_id():
    a = _rows("undefended", np.array([1, 0, 0, 0], bool), kind="none")
    b = _rows("other", np.array([0, 0, 0, 1], bool))
    b[0]["scan_ids"] = ["s3", "s1", "s2", "s0"]  # the same scans in another order: s0 robust in both
    t = compare._paired(b[0], a[0])
    assert (t["a_only"], t["b_only"]) == (0, 0)


def test_smoothing_records_put_certificate_and_empirical_check_side_by_side():
    y = np.array([0, 1, 2, 3])
    scans = evaluation.Scans(np.zeros((4, S, S, 1), np.float32), y, np.array(["a", "b", "c", "d"]),
                             np.array([1, 1, 2, 3]), 4)
    certified = {"curve": [{"radius": 0.0}, {"radius": 0.25}, {"radius": 0.5}], "pred": [0, 1, -1, 0],
                 "radius": [0.3, 0.6, 0.0, 0.9], "empirical_correct": [[1, 1, 0, 0], [1, 1, 0, 0], [0, 1, 0, 0]],
                 "empirical": [{"radius": 0.0}, {"radius": 0.25}, {"radius": 0.5}],
                 "n0": 32, "n": 500, "alpha": 0.001}
    rows = evaluation.smoothing_records("rs", certified, scans, cert_radius=0.25)
    by = {(r["attack"], r["eps"]): r for r in rows}
    assert by[("certified", 0.25)]["robust"] == [1, 1, 0, 0] and by[("certified", 0.5)]["robust"] == [0, 1, 0, 0]
    assert by[("L2 PGD + EOT", 0.5)]["robust"] == [0, 1, 0, 0] and all(r["norm"] == "2" for r in rows)
    assert by[("certified", 0.25)]["clean_accuracy"] == 0.5  # the abstention (-1) and the wrong class are errors
    for r in rows:
        records.check_row(r)
    # the empirical check stops at the largest certifiable radius: fewer empirical rows than certified ones
    short = evaluation.smoothing_records("rs", {**certified, "empirical": certified["empirical"][:2],
                                                "empirical_correct": certified["empirical_correct"][:2]}, scans)
    assert sorted((r["attack"], r["eps"]) for r in short) == [("L2 PGD + EOT", 0.25), ("certified", 0.25),
                                                              ("certified", 0.5)]
    with pytest.raises(ValueError, match="4 scans"):
        evaluation.smoothing_records("rs", {**certified, "pred": [0, 1]}, scans)


def test_fooled_by_table_and_same_as(result):
    table = result.fooled_by_table()
    assert list(table.index) == SUITE.threat().labels and table.sum(axis=1).eq(5).all()
    assert table["clean"].eq(1).all() and table.loc[SUITE.threat().labels[0], "robust"] == 4
    suite_rows = [r for r in result.records() if r["attack"] == "suite"]
    assert result.same_as(suite_rows[::-1]) == {"outcomes": True, "loss": True, "differing_outcomes": 0}  # ε order
    changed = [dict(r, robust=[0] * 5) for r in suite_rows]
    kept = int(result.robust.sum())  # every outcome the model kept now differs
    assert kept > 0
    assert result.same_as(changed) == {"outcomes": False, "loss": True, "differing_outcomes": kept}
    one_flip = [dict(r, robust=[1 - v for v in r["robust"]]) if k == 0 else r for k, r in enumerate(suite_rows)]
    assert result.same_as(one_flip)["differing_outcomes"] == 5  # one ε, all five scans
    # rows over other ε or scans cannot be compared outcome by outcome
    assert result.same_as(suite_rows[1:]) == {"outcomes": False, "loss": False, "differing_outcomes": None}
    fewer_scans = [dict(r, robust=r["robust"][:4]) for r in suite_rows]
    assert result.same_as(fewer_scans)["differing_outcomes"] is None


def test_seed_spread_attacks_every_seed_alike_and_summarises_mean_and_sd(scans, monkeypatch):
    x, y = scans
    suites, evaluate = [], evaluation.evaluate

    def spy(target, *args, **kwargs):
        suites.append(args[3])
        return evaluate(target, *args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", spy)
    shifted = linear_model()  # a "seed" whose threshold is 0.55, not 0.5: it loses the scans at 0.51 and 0.52
    w, b = shifted.layers[-1].get_weights()
    shifted.layers[-1].set_weights([w, b + np.array([-0.05, 0, 0, 0], dtype=np.float32)])
    suite = SuiteConfig(attacks=("FGSM", "PGD"), eps_255=GRID_255, headline_255=4, n_scans=None, pgd_steps=5,
                        pgd_restarts=1, batch_size=8, spread_eps_255=(1, 4))
    sc = evaluation.Scans(x, y, np.array([f"s{i}" for i in range(5)]), np.arange(5), 5)
    out = evaluation.seed_spread({0: linear_model(), 7: shifted}, sc, suite.spread_threat(), suite, progress=False)
    assert out["eps_255"] == [1, 4] and out["n_scans"] == 5 and list(out["per_seed"]) == [0, 7]
    assert suite.loss_attack and [s.loss_attack for s in suites] == [False, False]  # accuracies only: no loss attack
    # seed 0: clean 4/5; 1/255 (0.0039) fools none of them, 4/255 (0.0157) the scan at 0.51
    assert out["per_seed"][0]["clean_accuracy"] == 0.8
    assert out["per_seed"][0]["robust_accuracy"] == {"1": 0.8, "4": 0.6}
    # seed 7 answers 0 only above 0.55: clean 2/5 (0.6 and 0.9), robust at both ε
    assert out["per_seed"][7]["clean_accuracy"] == 0.4 and out["per_seed"][7]["robust_accuracy"]["4"] == 0.4
    clean = out["summary"]["clean_accuracy"]
    assert clean["mean"] == pytest.approx(0.6) and clean["sd"] == pytest.approx(np.std([0.8, 0.4], ddof=1))
    assert out["summary"]["robust_accuracy"]["4"]["mean"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least one"):
        evaluation.seed_spread({}, sc, suite.spread_threat(), suite)
    assert "test_accuracy" not in out["summary"]  # plain models carry no sidecar

    class Trained:  # what get_or_train returns: the model, its sidecar, its folder
        def __init__(self, model, acc):
            from pathlib import Path

            self.model, self.path = model, Path(f"cnn-{acc}")
            self.sidecar = {"metrics": {"test": {"accuracy": {"value": acc}}}}

    both = evaluation.seed_spread({0: Trained(linear_model(), 0.9), 7: Trained(shifted, 0.7)}, sc,
                                  suite.spread_threat(), suite, progress=False)
    assert both["per_seed"][7]["artifact"] == "cnn-0.7" and both["summary"]["test_accuracy"]["mean"] == pytest.approx(0.8)
    assert both["per_seed"][0]["robust_accuracy"] == out["per_seed"][0]["robust_accuracy"]


def test_spread_of_one_seed_has_no_sd_and_bad_values_are_refused():
    one = stats.spread([0.9])
    assert one["mean"] == 0.9 and np.isnan(one["sd"]) and one["n"] == 1
    with pytest.raises(ValueError, match="one per seed"):
        stats.spread([0.9, float("nan")])
    assert SuiteConfig(spread_eps_255=(0.5, 1)).spread_threat().headline == 1 / 255
    for bad in ({"spread_seeds": (0, 0)}, {"spread_eps_255": (8, 1)}, {"spread_seeds": ()}):
        with pytest.raises(ValueError, match="spread"):
            SuiteConfig(**bad)


def test_random_answers_are_scored_by_the_majority_of_fixed_draws(scans):
    from octlib.defences import OutputNoise
    from octlib.estimators import victim_api

    x, y = scans
    model = linear_model()

    def noisy():  # σ = 0.3 on the probabilities: single calls answer the scans near 0.5 at random
        return evaluation.api_target("noise", model, victim_api(model, "probabilities",
                                                                 defences=[OutputNoise(0.3, seed=5)]),
                                     answer_draws=101)

    plain = evaluation.api_target("label", model, victim_api(model, "labels"))
    target = noisy()
    assert target.settings["randomized_answer"] is True and plain.settings["randomized_answer"] is False
    assert target.settings["answer_draws"] == 101 and target.votes(x).shape == (101, len(x))
    runs = [evaluation.evaluate(noisy(), x, y, SUITE.threat(), SUITE, progress=False) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].robust, runs[1].robust)  # the same outcomes on every run, by construction
    np.testing.assert_array_equal(runs[0].per_draw, runs[1].per_draw)
    assert runs[0].per_draw is not None and plain.votes is None


def test_unstable_answers_counts_the_scans_a_random_answer_changes():
    rng = np.random.default_rng(0)
    steady = np.tile([[0.9, 0.1, 0.0, 0.0], [0.2, 0.7, 0.1, 0.0]], (5, 1))  # 10 scans, clear winners

    def noisy(x):  # scans 0 and 1 are coin flips between classes 2 and 3, the rest steady
        out = steady.copy()
        out[:2] = 0.0
        out[:2, 2 + rng.integers(0, 2, size=2)] = 1.0
        return out

    assert checks.unstable_answers(lambda x: steady, np.zeros(10)) == 0
    assert checks.unstable_answers(noisy, np.zeros(10), calls=20) == 2  # 20 calls: both coins flip (p = 1 - 2^-19)
    with pytest.raises(ValueError, match="calls"):
        checks.unstable_answers(noisy, np.zeros(10), calls=1)


def test_converged_eot_reads_notebook_44s_study_and_names_the_fix(tmp_path):
    from octlib.results import ResultsError

    study = {"0.12": {"converged": [16, 20]}, "0.25": {"converged": [4, 10]}}
    records.write_records("44_defence_randomized_noise", [], notebook="44.ipynb", profile="quick",
                          data={"fingerprint": "f"}, victim="cnn-a", extra={"eot_convergence": study},
                          results_dir=tmp_path)
    assert evaluation.converged_eot([0.12, 0.25], victim="cnn-a", results_dir=tmp_path) == {0.12: (16, 20),
                                                                                          0.25: (4, 10)}
    with pytest.raises(ResultsError, match="not 'cnn-b'.*notebook 44"):
        evaluation.converged_eot([0.12], victim="cnn-b", results_dir=tmp_path)
    with pytest.raises(ResultsError, match="σ=0.5.*SIGMAS"):
        evaluation.converged_eot([0.5], victim="cnn-a", results_dir=tmp_path)
    with pytest.raises(ResultsError, match="No results file"):
        evaluation.converged_eot([0.12], victim="cnn-a", results_dir=tmp_path / "empty")


class _AnswerAPI:
    """An API over the linear model: its top class, except that scans with mean above ``floor`` are answered 0."""

    postprocessing_defences = ()

    def __init__(self, model, floor=None):
        self.model, self.floor = model, floor

    def predict(self, x):
        logits = np.asarray(self.model(x))
        answer = logits.argmax(axis=1)
        if self.floor is not None:
            answer = np.where(x.reshape(len(x), -1).mean(axis=1) > self.floor, 0, answer)
        return np.eye(4)[answer]


def test_craft_cache_crafts_each_scan_once_for_targets_on_the_same_logits(scans):
    from dataclasses import replace

    x, y = scans
    suite = replace(SUITE, pgd_restarts=1)
    model = linear_model()
    kw = dict(scan_ids=[f"s{i}" for i in range(5)], patients=[0, 0, 1, 2, 3], progress=False)
    cache = evaluation.CraftCache()
    victim = evaluation.evaluate(evaluation.model_target("linear", model, kind="none"), x, y, suite.threat(), suite,
                                 cache=cache, **kw)
    crafted = cache.crafted
    assert crafted > 0 and cache.reused == 0
    # a top-class-keeping answer: the same scans alive at every step, nothing crafted again, the same outcomes
    label_only = evaluation.evaluate(evaluation.api_target("label-only", model, _AnswerAPI(model)), x, y,
                                     suite.threat(), suite, cache=cache, **kw)
    assert cache.crafted == crafted and cache.reused == crafted
    assert victim.cost["loss_gradients"] > 0 and label_only.cost["loss_gradients"] == 0  # the loss attack too
    np.testing.assert_allclose(label_only.loss, victim.loss)  # its scans, scored by what label-only answers
    assert label_only.same_as([r for r in victim.records() if r["attack"] == "suite"])["outcomes"]
    # an answer that keeps scan 0 (mean 0.51) right down to a mean of 0.49: alive where the victim's is not, so
    # crafted for it, and the outcomes are those of evaluating it without the cache
    lenient = lambda: evaluation.api_target("lenient", model, _AnswerAPI(model, floor=0.49))  # noqa: E731
    shared = evaluation.evaluate(lenient(), x, y, suite.threat(), suite, cache=cache, **kw)
    alone = evaluation.evaluate(lenient(), x, y, suite.threat(), suite, **kw)
    assert cache.crafted > crafted
    np.testing.assert_array_equal(shared.robust, alone.robust)
    np.testing.assert_allclose(shared.loss, alone.loss)
    assert shared.robust[:, 0].sum() > victim.robust[:, 0].sum()


def test_craft_cache_refuses_what_it_cannot_share(scans):
    x, y = scans
    model = linear_model()
    cache = evaluation.CraftCache()
    with pytest.raises(ValueError, match="cannot be shared"):
        evaluation.evaluate(evaluation.noise_target("noise", model, 0.1, 2, 2), x, y, SUITE.threat(), SUITE,
                            cache=cache, progress=False)
    evaluation.evaluate(evaluation.model_target("linear", model, kind="none"), x, y, SUITE.threat(), SUITE,
                        cache=cache, progress=False)
    with pytest.raises(ValueError, match="another model or other scans"):
        evaluation.evaluate(evaluation.model_target("linear", model, kind="none"), x[:4], y[:4], SUITE.threat(),
                            SUITE, cache=cache, progress=False)
    with pytest.raises(ValueError, match="another model or other scans"):
        evaluation.evaluate(evaluation.model_target("other", linear_model(), kind="none"), x, y, SUITE.threat(),
                            SUITE, cache=cache, progress=False)
    # PGD with two restarts picks a restart by each target's answer: crafted anew for every target
    assert SUITE.pgd_restarts == 2
    before = (cache.crafted, cache.unshared)
    evaluation.evaluate(evaluation.api_target("label-only", model, _AnswerAPI(model)), x, y, SUITE.threat(),
                        SUITE, cache=cache, progress=False)
    assert cache.crafted == before[0] and cache.unshared > before[1] > 0


def test_records_store_repeated_per_scan_columns_once_and_read_them_back(tmp_path, result):
    import json

    rows = result.records()
    path = records.write_records("20_x", rows, notebook="20.ipynb", profile="quick", data={"fingerprint": "f"},
                                 victim="cnn-a", results_dir=tmp_path)
    stored = json.loads(path.read_text())["metrics"]
    assert stored["shared_columns"] and stored["records"][1]["scan_ids"] == {"shared": 0}
    back = records.read_records(tmp_path)
    for original, read in zip(rows, back.to_dict("records")):
        for k in ("scan_ids", "patients", "robust", "loss", "clean_pred"):
            if k in original:
                assert list(read[k]) == list(np.asarray(original[k]).tolist()), k
    assert len(records.share_columns(rows[:1])) == 1  # one row: nothing repeated, nothing shared
    broken = json.loads(path.read_text())
    broken["metrics"]["records"][0]["scan_ids"] = {"shared": 99}
    path.write_text(json.dumps(broken))
    with pytest.raises(ResultsError, match="shared column 99.*re-run"):
        records.read_records(tmp_path)


def test_the_attack_registry_is_what_the_suite_accepts():
    assert registry.suite_names() == ("FGSM", "PGD", "APGD-CE", "APGD-DLR", "APGD-T", "PGD-margin", "Square")
    assert evaluation.OWN_CURVE == ("FGSM", "PGD")
    suite = SuiteConfig(pgd_steps=7, pgd_restarts=3, apgd_steps=4, apgd_restarts=2, square_queries=50)
    assert registry.cost("PGD", suite, eot_samples=2) == {"gradients": 42, "queries": 0}
    assert registry.cost("Square", suite) == {"gradients": 0, "queries": 50}
    with pytest.raises(ValueError, match="registered already"):
        registry.register(registry.Attack("FGSM", lambda *a, **k: None))
    minimal = registry.register(registry.Attack("minimal-example", lambda *a, **k: None, bounded=False))
    try:
        assert "minimal-example" not in registry.suite_names()  # no ε: it cannot join a suite scored per ε
        with pytest.raises(ValueError, match="SuiteConfig"):
            SuiteConfig(attacks=("FGSM", minimal.name))
    finally:
        registry.ATTACKS.pop(minimal.name)
    with pytest.raises(ValueError, match="Unknown attack 'CW'"):
        registry.get("CW")


def test_apgd_targeted_tries_every_other_class_and_keeps_what_fools(scans):
    x, y = scans
    suite = replace(SUITE, attacks=("APGD-T",), apgd_steps=5, headline_255=64)
    target = evaluation.model_target("linear", linear_model(), kind="none")
    ev = evaluation.evaluate(target, x, y, suite.threat(), suite, progress=False)
    assert ev.settings["attacks"] == ["APGD-T"] and ev.settings["headline_only"] == ["APGD-T"]
    # it runs at the headline ε only (the largest here): below it no scan is attacked
    assert (ev.robust[:-1] == ev.clean_correct).all()
    # the linear model answers 0 or 1 (2 and 3 sit at -100): at the largest ε the scans near 0.5 move to class 1
    assert ev.robust[-1].sum() <= ev.robust[0].sum() and not ev.robust[-1][:2].any()
    assert registry.cost("APGD-T", suite) == {"gradients": 5 * max(1, suite.apgd_restarts) * 3, "queries": 0}
    noisy = evaluation.noise_target("noisy", linear_model(), 0.01, 2, 2, answer_draws=10)
    rand = evaluation.evaluate(noisy, x[:4], y[:4], suite.threat(), suite, progress=False)
    assert rand.settings["attacks"] == ["PGD-margin"]  # ART's APGD would drop the EOT


def test_attack_sweep_grows_steps_and_restarts_until_two_quiet_growths(scans, result):
    x, y = scans
    target = evaluation.model_target("linear", linear_model(), kind="none")
    k = SUITE.threat().index(16)
    sweep = evaluation.attack_sweep(target, x[:4], y[:4], to_unit(16), ((1, 0), (2, 1), (4, 1)), suite=SUITE,
                                    attacks=("PGD", "PGD-margin"))
    assert [p["robust"] for p in sweep["points"]] == [2, 2, 2] and sweep["reached"]
    assert sweep["converged"] == (2, 1) and sweep["attacks"] == ["PGD", "PGD-margin"]
    # the same scans fall as in the suite at that ε: the two darker ones, at the first setting, to PGD
    assert (np.array([p == "" for p in sweep["fooled_by"]]) == result.robust[k][:4]).all()
    assert sweep["fooled_by"][:2] == ["PGD 1x0", "PGD 1x0"]
    assert sweep["points"][0]["gradients"] == 1 * 4 + 1 * 2  # PGD on 4 scans, then the margin PGD on the 2 left
    with pytest.raises(ValueError, match="settings"):
        evaluation.attack_sweep(target, x, y, 0.01, ((0, 1),), suite=SUITE)
    with pytest.raises(ValueError, match="Unknown attack"):
        evaluation.attack_sweep(target, x, y, 0.01, ((1, 1),), suite=SUITE, attacks=("CW",))


def test_a_sweep_folds_into_the_worst_case_at_its_eps_and_above(scans):
    x, y = scans
    ev = evaluation.evaluate(evaluation.model_target("linear", linear_model(), kind="none"), x, y, SUITE.threat(),
                             SUITE, progress=False)
    k = SUITE.threat().index(16)
    standing = np.flatnonzero(ev.robust[k])
    assert standing.tolist() == [2, 3]
    sweep = {"n": 2, "fooled_by": ["APGD-T 200x5", ""], "pred": [1, -1], "points": [], "converged": (200, 5)}
    before = ev.robust.copy()
    assert ev.fold_sweep(sweep, standing, k) == 1
    assert not ev.robust[k:, 2].any() and (ev.robust[:k] == before[:k]).all() and ev.robust[k:, 3].tolist() == \
        before[k:, 3].tolist()
    assert ev.fooled_by[k, 2] == "APGD-T 200x5" and ev.pred[k, 2] == 1 and ev.settings["robust_before_sweep"] == 2
    rows = [r for r in ev.records() if r["attack"] == "suite"]
    assert rows[k]["robust_accuracy"] == 0.2 and rows[k]["settings"]["sweep"]["converged"] == (200, 5)
    with pytest.raises(ValueError, match="sweep ran on 2 scans"):
        ev.fold_sweep(sweep, [1, 2, 3], k)


def test_evaluate_with_converge_runs_the_sweep_on_the_standing_scans(scans, result):
    x, y = scans
    suite = replace(SUITE, sweep_settings=((2, 0), (4, 1), (8, 1)), sweep_attacks=("PGD", "PGD-margin"))
    ev = evaluation.evaluate(evaluation.model_target("linear", linear_model(), kind="none"), x, y, suite.threat(),
                             suite, scan_ids=[f"s{i}" for i in range(5)], progress=False, converge=True)
    h = suite.threat().index(suite.headline_255)
    sweep = ev.settings["sweep"]
    assert sweep["scans"] == [f"s{i}" for i in np.flatnonzero(result.robust[h])] and sweep["eps_index"] == h
    assert sweep["turned"] == 0 and sweep["reached"]  # PGD is already the best attack on a linear model
    np.testing.assert_array_equal(ev.robust, result.robust)
    assert [r for r in ev.records() if r["attack"] == "suite"][h]["settings"]["sweep"]["attacks"] == [
        "PGD", "PGD-margin"]


def test_same_attack_suite_allows_folded_in_attacks_only_on_top():
    rows = _rows("undefended", np.ones(4, bool), kind="none") + _rows("jpeg", np.ones(4, bool), kind="input") \
        + _rows("short", np.ones(4, bool))
    rows[1]["attacks"], rows[2]["attacks"] = ["PGD", "non-adaptive PGD"], ["FGSM"]
    frame = _frame(rows)
    problems = checks.same_attack_suite(compare.headline_table(frame, 2))
    assert problems == ["short did not face ['PGD'] of the undefended's suite"]


def test_the_sweep_stops_once_converged_and_runs_on_a_seeded_sample_of_the_standing_scans(scans, result):
    """Settings after two quiet growths are not run (they would cost the most); with ``sweep_max_scans`` the sweep
    runs on that many of the standing scans, the same ones for a seed, and the records say so."""
    x, y = scans
    target = evaluation.model_target("linear", linear_model(), kind="none")
    sweep = evaluation.attack_sweep(target, x[:4], y[:4], to_unit(16), ((1, 0), (2, 1), (4, 1), (8, 2), (16, 3)),
                                    suite=SUITE, attacks=("PGD",))
    assert len(sweep["points"]) == 3 and sweep["reached"] and sweep["converged"] == (2, 1)
    x3, y3, ids = np.concatenate([x] * 3), np.concatenate([y] * 3), [f"s{i}" for i in range(15)]
    suite = replace(SUITE, sweep_settings=((2, 0), (4, 1), (8, 1)), sweep_attacks=("PGD",), headline_255=1)
    full = evaluation.evaluate(target, x3, y3, suite.threat(), suite, scan_ids=ids, progress=False, converge=True)
    standing = int(full.settings["sweep"]["n_standing"])
    assert standing > 4 and not full.settings["sweep"]["sampled"]
    capped = replace(suite, sweep_max_scans=4)
    runs = [evaluation.evaluate(target, x3, y3, capped.threat(), capped, scan_ids=ids, progress=False, converge=True,
                                seed=3) for _ in range(2)]
    picked = [r.settings["sweep"]["scans"] for r in runs]
    assert picked[0] == picked[1] and len(picked[0]) == 4 and set(picked[0]) <= set(full.settings["sweep"]["scans"])
    assert runs[0].settings["sweep"]["sampled"] and runs[0].settings["sweep"]["n_standing"] == standing
    with pytest.raises(ValueError, match="sweep_max_scans"):
        replace(SUITE, sweep_max_scans=2)
