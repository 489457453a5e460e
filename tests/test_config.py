import pytest

from octlib.config import get_profile, project_root, set_seed


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("OCTLIB_PROFILE", "full")
    assert get_profile().name == "full" and get_profile("quick").name == "quick"


def test_unknown_profile_names_the_variable(monkeypatch):
    monkeypatch.setenv("OCTLIB_PROFILE", "fast")
    with pytest.raises(ValueError, match="OCTLIB_PROFILE"):
        get_profile()


def test_overrides_are_checked():
    assert get_profile("quick", image_size=32).image_size == 32
    with pytest.raises(ValueError, match="Unknown profile setting"):
        get_profile("quick", imagesize=32)


def test_project_root_is_the_checkout():
    assert (project_root() / "pyproject.toml").is_file()


def test_set_seed_validates():
    with pytest.raises(ValueError, match="`seed`"):
        set_seed(-1)


def test_extraction_settings_fit_their_strategies():
    """Every profile: adaptive KnockoffNets' budgets fit in the thief's steps (one step per query, and some left
    for its final training, as the random strategies get); the full profile draws real curves (>= 5 budgets,
    >= 3 seeds) and attacks each defence at a budget it also sweeps."""
    from octlib.config import PROFILES, ExtractionConfig

    for profile in PROFILES.values():
        ecfg, dcfg = profile.extraction, profile.defence
        assert max(ecfg.adaptive_budgets) < ecfg.thief_steps, profile.name
        assert dcfg.adaptive_budget < ecfg.thief_steps, profile.name
        assert set(dcfg.extraction_budgets or ecfg.budgets) <= set(ecfg.budgets), profile.name
    full = PROFILES["full"].extraction
    assert len(full.budgets) >= 5 and len(full.adaptive_budgets) >= 5 and len(full.seeds) >= 3
    with pytest.raises(ValueError, match="pool_val_fraction"):
        ExtractionConfig(pool_val_fraction=1.0)
    with pytest.raises(ValueError, match="adaptive_reward"):
        ExtractionConfig(adaptive_reward="best")


def test_split_policy_is_a_setting(monkeypatch):
    monkeypatch.delenv("OCTLIB_SPLIT_POLICY", raising=False)
    assert get_profile("quick").split_policy == "official"
    monkeypatch.setenv("OCTLIB_SPLIT_POLICY", "Pooled")
    assert get_profile("quick").split_policy == "pooled"
    assert get_profile("full", split_policy="official").split_policy == "official"  # the argument wins
    assert get_profile("quick", split_policy=None).split_policy == "pooled"  # a notebook's None: the environment
    monkeypatch.setenv("OCTLIB_SPLIT_POLICY", "random")
    with pytest.raises(ValueError, match="OCTLIB_SPLIT_POLICY"):
        get_profile("quick")
    with pytest.raises(ValueError, match="the argument"):
        get_profile("quick", split_policy="by-image")


def test_defence_and_suite_cost_settings_are_checked():
    from octlib.config import DefenceConfig, SuiteConfig

    with pytest.raises(ValueError, match="noise_curve_budgets"):
        DefenceConfig(noise_curve_budgets=(0, 50))
    with pytest.raises(ValueError, match="randomized_square_queries"):
        SuiteConfig(randomized_square_queries=0)
    full = get_profile("full")  # the study's defences: fewer randomized scans, each with a stated n (see config)
    assert full.suite.randomized_square_queries < full.suite.square_queries
    assert set(full.defence.noise_curve_budgets) < set(full.extraction.budgets)
    assert max(full.defence.noise_curve_budgets) < max(full.defence.extraction_budgets)


def test_defence_fine_tuning_is_switched_per_kind_with_its_epochs():
    """Notebooks 42 and 45 switch fine-tuning and set epochs through DefenceConfig, not by hand."""
    from octlib.config import DefenceConfig

    d = DefenceConfig(finetune=("label_smoothing",), finetune_epochs=10, adv_epochs=20, retrain_epochs=30)
    assert d.with_finetune("adversarial", None) == d
    on = d.with_finetune("adversarial", True, epochs=7)
    assert on.finetune == ("adversarial", "label_smoothing") and on.finetune_epochs == 7 and on.adv_epochs == 20
    assert on.epochs_of("adversarial", 50) == 7 and on.epochs_of("noise", 50) == 30
    off = d.with_finetune("label_smoothing", False, epochs=12)
    assert off.finetune == () and off.retrain_epochs == 12 and off.finetune_epochs == 10
    assert off.epochs_of("label_smoothing", 50) == 12 and DefenceConfig().epochs_of("adversarial", 50) == 50


def test_set_seed_seeds_keras_imported_later_as_if_imported_before():
    """A notebook that never needs TensorFlow does not import it to seed it; one that imports it after
    ``set_seed`` draws what it would have drawn had Keras been imported first (NumPy's stream untouched)."""
    import subprocess
    import sys

    draw = ("a = np.random.rand(); import keras, tensorflow as tf; b = np.random.rand(); "
            "print(a, b, float(keras.random.uniform(())), float(tf.random.uniform(())), "
            "type(keras.__loader__).__name__)")
    later = f"import sys, numpy as np, octlib; octlib.set_seed(3); assert 'keras' not in sys.modules; {draw}"
    before = f"import numpy as np, keras, octlib; octlib.set_seed(3); {draw}"
    other = later.replace("set_seed(3)", "set_seed(4)")
    out = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
           for code in (later, before, other)]
    assert out[0] == out[1]
    assert all(a != b for a, b in zip(out[0][:4], out[2][:4]))  # another seed, other draws from every generator
    assert out[0][-1] == "SourceFileLoader"  # the module keeps its own loader
    other = subprocess.run([sys.executable, "-c", before.replace("set_seed(3)", "set_seed(4)")],
                           capture_output=True, text=True, check=True).stdout.split()
    assert other[2] != out[0][2]  # the seed matters


def test_adversarial_training_settings_are_resolved_once_for_notebooks_45_and_47():
    """Both notebooks resolve their parameters with this helper, so they ask the store for the same model."""
    from dataclasses import replace

    from octlib.config import adversarial_training

    full = get_profile("full")
    at = adversarial_training(full)
    assert sorted(at.profile.defence.finetune) == sorted(full.defence.finetune)  # the same kinds, sorted
    assert replace(at.profile, defence=full.defence) == full and at.finetuned and at.epochs == full.defence.finetune_epochs
    assert at.name == "PGD-5 adversarial training ε=4/255" and "ε = 4/255 (0.0157)" in at.describe()
    one = adversarial_training(full, eps_255=2, steps=1, epochs=20, finetune=False)
    assert one.name == "FGSM-RS adversarial training ε=2/255" and not one.finetuned and one.epochs == 20
    assert one.profile.defence.adv_epochs == 20 and "from scratch" in one.describe()
    assert one.profile.train == full.train and "label_smoothing" in one.profile.defence.finetune
    with pytest.raises(ValueError, match="adv_steps"):
        adversarial_training(full, steps=0)
    # TRADES follows the PGD model's ε, steps, epochs and fine-tuning: equal compute
    assert at.trades_name == "TRADES β=6 (5 steps) ε=4/255" and "trades" in at.profile.defence.finetune
    assert "trades" not in one.profile.defence.finetune and one.profile.defence.epochs_of("trades", 50) == 20
    assert adversarial_training(full, trades_beta=1).trades_name.startswith("TRADES β=1 ")
    with pytest.raises(ValueError, match="trades_beta"):
        adversarial_training(full, trades_beta=0)
