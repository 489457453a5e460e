"""The interactive explorer: one attack on one scan, cached, with the widget and the headless figure."""

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
from octlib import explorer  # noqa: E402
from octlib.config import TrainConfig  # noqa: E402
from octlib.evaluation import Scans  # noqa: E402
from octlib.models import build_cnn  # noqa: E402


@pytest.fixture(scope="module")
def exp():
    rng = np.random.default_rng(0)
    x = rng.random((8, 32, 32, 1)).astype(np.float32)
    y = np.array([0, 1, 2, 3] * 2)
    scans = Scans(x, y, np.array([f"test/C/X-{i}-1.jpeg" for i in range(8)]), np.arange(100, 108), 8)
    models = {"victim": build_cnn(32, TrainConfig(filters=(4, 8))), "other": build_cnn(32, TrainConfig(filters=(4,)))}
    return explorer.Explorer(scans, models, pgd_steps=3, deepfool_max_iter=5)


def test_a_view_attacks_within_eps_and_is_cached(exp):
    v = exp.view(2, "FGSM", 4.0)
    assert v.label == 2 and not v.cached and v.x_adv.shape == (32, 32, 1)
    assert np.abs(v.x_adv - v.x).max() <= 4 / 255 + 1e-6 and v.x_adv.min() >= 0 and v.x_adv.max() <= 1
    assert v.probs_clean.sum() == pytest.approx(1, abs=1e-5) and v.cam_adv.shape == (32, 32)
    again = exp.view(2, "FGSM", 4.0)
    assert again.cached and np.array_equal(again.x_adv, v.x_adv)
    assert not exp.view(2, "FGSM", 8.0).cached  # a new ε is a new attack
    pgd = exp.view(2, "PGD", 4.0, model="other")
    assert np.abs(pgd.x_adv - pgd.x).max() <= 4 / 255 + 1e-6
    deepfool = exp.view(2, "DeepFool", 4.0)
    assert deepfool.eps_255 is None and exp.view(2, "DeepFool", 1.0).cached  # ε does not apply to DeepFool


def test_label_only_answers_are_one_hot_and_do_not_change_the_attack(exp):
    probs = exp.view(1, "FGSM", 2.0)
    labels = exp.view(1, "FGSM", 2.0, answers="label only")
    assert labels.cached and np.array_equal(labels.x_adv, probs.x_adv)
    assert sorted(labels.probs_adv.tolist()) == [0, 0, 0, 1]
    assert int(np.argmax(labels.probs_adv)) == int(np.argmax(probs.probs_adv))


def test_bad_selections_name_the_choice(exp):
    with pytest.raises(ValueError, match="attack 'CW'.*FGSM"):
        exp.view(0, "CW")
    with pytest.raises(ValueError, match="model 'x'"):
        exp.view(0, model="x")
    with pytest.raises(ValueError, match="index"):
        exp.view(99)
    with pytest.raises(ValueError, match="eps_255"):
        exp.view(0, "FGSM", 0)


def test_scans_are_chosen_by_class_and_patient(exp):
    options = exp.scans_of_class("DME")
    assert [i for _, i in options] == [1, 5] and options[0][0].startswith("patient 101 · X-1-1.jpeg")


def test_headless_shows_a_static_figure_and_the_widget_redraws(exp, monkeypatch):
    monkeypatch.setenv(explorer.HEADLESS_ENV, "1")
    assert explorer.headless()
    fig, views = exp.show()
    assert [v.attack for v in views] == list(explorer.VIEW_ATTACKS) and len(fig.subfigs) == 3
    monkeypatch.setenv(explorer.HEADLESS_ENV, "0")
    assert not explorer.headless()
    box = exp.widget(index=3)
    status = box.children[3]
    assert "computed" in status.value or "cached" in status.value
    eps = box.children[1].children[1]
    eps.value = 1.5  # moving the slider attacks again
    assert "computed" in status.value and (3, "FGSM", 1.5, "victim") in exp._cache
    cls = box.children[0].children[0]
    cls.value = "NORMAL"
    assert [i for _, i in box.children[0].children[1].options] == [3, 7]
