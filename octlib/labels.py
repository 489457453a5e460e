"""The diagnostic classes, in label order: the vocabulary every module shares, with no other import, so that the
modules the evaluation suite's attack table reaches (:mod:`octlib.registry`) never import the settings."""

#: Class names in label order (the same order as OCTMNIST's labels 0..3).
CLASSES: tuple[str, ...] = ("CNV", "DME", "DRUSEN", "NORMAL")
#: Kermany's urgent-referral view: CNV and DME need urgent referral.
URGENT_CLASSES: tuple[str, ...] = ("CNV", "DME")
