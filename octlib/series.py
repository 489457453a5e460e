"""The notebook series in one place: every notebook's name, in run order, its role, what it is for, whether it
writes a results record, and which notebook trains each kind of model. The runner runs these (and refuses a notebook on
disk that is not here, or one listed here that is missing), :mod:`octlib.compare` looks for these records and
selects them by role (:func:`role`, :func:`named`), never by a prefix of their names, and library messages name the
notebook to run through :func:`notebook` and :func:`trainer`, never by a literal file name. A new notebook is one
line here.
"""

from __future__ import annotations

from pathlib import Path

#: What a notebook is to the study: its records are compared by role (a defence's extraction rows in the
#: extraction defence table, the clinical threats' rows apart from the attack suite's, ...).
ROLES = ("data", "victim", "evasion", "defence", "extraction", "clinical", "explanation", "comparison")

# name -> (what it is for, writes a results record of that name); the role is the band's (ROLE_OF_BAND) unless
# ROLE_OF names it
NOTEBOOKS: dict[str, tuple[str, bool]] = {
    "00_data_exploration": ("the data: classes, patients, splits, intensity", False),
    "10_train_cnn": ("the study victim (both split policies) and its evaluation", True),
    "11_release_shift": ("the sample's release shift and the augmentation that answers it", True),
    "12_seed_spread": ("the victim's recipe under other training seeds, through the suite: the yardstick", True),
    "20_attack_fgsm": ("the attack suite on the victim", True),
    "21_attack_deepfool": ("DeepFool's minimal perturbations", True),
    "22_evasion_detectors": ("Mahalanobis and binary detectors, and the attacker who knows them", True),
    "23_defence_input_transforms": ("JPEG, bit depth and median in front of the victim, under BPDA", True),
    "30_attack_copycat": ("Copycat CNN: model extraction by querying", True),
    "31_attack_knockoffnets": ("KnockoffNets: extraction with an adaptive query policy", True),
    "32_attack_augmented_thieves": ("thieves that learn from a small pool; gain over the no-query thief", True),
    "40_defence_class_labels": ("output defences against extraction", True),
    "41_defence_class_labels_evasion": ("output defences against evasion, white-box and black-box", True),
    "42_defence_label_smoothing": ("label smoothing through the suite", True),
    "43_defence_gaussian_noise": ("noise training: clean and under its noise", True),
    "44_defence_randomized_noise": ("inference noise, attacked with EOT and scored in expectation", True),
    "45_defence_adversarial_training": ("PGD adversarial training and TRADES", True),
    "46_defence_randomized_smoothing": ("randomized smoothing: certified radii", True),
    "47_defence_adversarial_training_evasion": ("PGD adversarial training through the suite", True),
    "48_defence_gaussian_noise_evasion": ("the noise-trained model through the suite", True),
    "49_defence_trades_evasion": ("TRADES through the suite, paired with PGD adversarial training", True),
    "50_attack_targeted_referral": ("targeted attacks on the referral decision", True),
    "51_attack_storage": ("what saving a scan does to an adversarial perturbation", True),
    "52_attack_universal": ("universal perturbations", True),
    "53_corruptions": ("natural corruptions of the scan", True),
    "54_certified_referral": ("a certified bound on missed referrals", True),
    "60_saliency": ("what the victim looks at, clean and attacked", False),
    "61_explorer": ("an interactive explorer of the attacks", False),
    "90_comparison": ("every scenario compared, from results only", False),
}

ROLE_OF_BAND = {"0": "data", "1": "victim", "2": "evasion", "3": "extraction", "4": "defence", "5": "clinical",
                "6": "explanation", "9": "comparison"}
#: notebooks whose role is not their band's: defences that sit in front of the undefended victim (notebook 2x)
ROLE_OF = {"22_evasion_detectors": "defence", "23_defence_input_transforms": "defence"}

# the model kind (artifacts' defence kinds, plus the victim and the release-shift variants) -> the notebook that
# trains it in the series (any notebook that needs it trains it too when it is missing)
TRAINERS: dict[str, str] = {
    "victim": "10_train_cnn",
    "seed": "12_seed_spread",
    "shift": "11_release_shift",
    "label_smoothing": "42_defence_label_smoothing",
    "noise": "43_defence_gaussian_noise",
    "adversarial": "45_defence_adversarial_training",
    "trades": "45_defence_adversarial_training",
}


def notebook(name: str) -> str:
    """``notebooks/<name>.ipynb`` for a registered notebook; a clear error for any other name."""
    if name not in NOTEBOOKS:
        raise KeyError(f"{name!r} is not a notebook of the series (octlib/series.py lists {len(NOTEBOOKS)}).")
    return f"notebooks/{name}.ipynb"


def trainer(kind: str) -> str:
    """The notebook (``notebooks/NN_*.ipynb``) that trains models of ``kind`` (see :data:`TRAINERS`)."""
    if kind not in TRAINERS:
        raise KeyError(f"No notebook trains model kind {kind!r}: use one of {sorted(TRAINERS)}.")
    return notebook(TRAINERS[kind])


def role(name: str) -> str:
    """The role (:data:`ROLES`) of a registered notebook or of the results record it writes."""
    if name not in NOTEBOOKS:
        raise KeyError(f"{name!r} is not a notebook of the series (octlib/series.py lists {len(NOTEBOOKS)}).")
    return ROLE_OF.get(name, ROLE_OF_BAND[name[0]])


def named(role_name: str) -> list[str]:
    """The notebooks (and results records) of one role, in run order."""
    if role_name not in ROLES:
        raise KeyError(f"Unknown role {role_name!r}: use one of {ROLES}.")
    return [name for name in NOTEBOOKS if role(name) == role_name]


def producers() -> dict[str, str]:
    """Results record name -> the notebook file that writes it, in run order."""
    return {name: f"{name}.ipynb" for name, (_, writes) in NOTEBOOKS.items() if writes}


def check_folder(folder: Path) -> None:
    """Raise when the notebooks in ``folder`` and :data:`NOTEBOOKS` differ, naming each difference and the fix."""
    on_disk = {p.stem for p in Path(folder).glob("[0-9][0-9]_*.ipynb")}
    unlisted, missing = sorted(on_disk - set(NOTEBOOKS)), sorted(set(NOTEBOOKS) - on_disk)
    problems = ([f"{n}.ipynb is in {folder} but not in octlib/series.py's NOTEBOOKS (add one line there)"
                 for n in unlisted]
                + [f"{n}.ipynb is listed in octlib/series.py but missing from {folder}" for n in missing])
    if problems:
        raise FileNotFoundError("The notebook series and its registry differ: " + "; ".join(problems) + ".")
