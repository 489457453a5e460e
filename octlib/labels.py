"""The diagnostic classes, in label order: the vocabulary every module shares, with no other import, so that the
modules the evaluation suite's attack table reaches (:mod:`octlib.registry`) never import the settings."""

#: Class names in label order (the same order as OCTMNIST's labels 0..3).
CLASSES: tuple[str, ...] = ("CNV", "DME", "DRUSEN", "NORMAL")
#: Kermany's urgent-referral view: CNV and DME need urgent referral.
URGENT_CLASSES: tuple[str, ...] = ("CNV", "DME")
#: The rest, not urgent: Kermany et al. 2018 give DRUSEN a routine referral and NORMAL observation.
ROUTINE_CLASSES: tuple[str, ...] = tuple(c for c in CLASSES if c not in URGENT_CLASSES)
