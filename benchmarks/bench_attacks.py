"""Attack benchmark: ms per image for FGSM, PGD and DeepFool at the profile's image size, and DeepFool with
octlib's settings (batched, all-class gradients in one traced pass, max_iter from the profile) against ART's
defaults (batch_size=1, max_iter=100, overshoot 1e-6, nb_grads=10, ART's own class_gradient), on the same images
in one run, with the success rate of each. Writes JSON (default benchmarks/results/attacks-<profile>.json).

    python benchmarks/bench_attacks.py --data ../shared/data/oct2017-sample --profile quick --n 64
"""

from __future__ import annotations

import time

import _common


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--n", type=int, default=64, help="test images (class-stratified)")
    args = parser.parse_args()

    import numpy as np
    from art.attacks.evasion import DeepFool
    from art.estimators.classification import TensorFlowV2Classifier

    import octlib
    from octlib import attacks, estimators
    from octlib.artifacts import load_victim

    profile = octlib.get_profile(args.profile)
    acfg = profile.attack
    splits, victim = load_victim(args.data, profile, verbose=0)
    idx = attacks.stratified_subset(splits.test.labels, args.n, seed=0)
    x, y = splits.test.x[idx], splits.test.labels[idx]
    clf = estimators.art_classifier(victim.model)
    eps = 2 / 255
    rows = {}

    def record(name, run, extra=None):
        rep = run.report(x)
        rows[name] = {"ms_per_image": round(1000 * run.runtime_s / len(x), 2), "success_rate": rep["success_rate"],
                      "success_denominator": rep["success_denominator"],
                      "adversarial_accuracy": rep["adversarial"]["value"], "median_l2": rep["l2"]["median"],
                      **(extra or {})}
        print(name, rows[name], flush=True)

    attacks.fgsm(clf, x[:8], y[:8], eps, progress=False)  # warm-up (tracing)
    record("FGSM eps=2/255", attacks.fgsm(clf, x, y, eps, batch_size=acfg.batch_size, progress=False))
    record(f"PGD-{acfg.pgd_steps} x{max(1, acfg.pgd_restarts)} eps=2/255",
           attacks.pgd(clf, x, y, eps, steps=acfg.pgd_steps, restarts=acfg.pgd_restarts,
                       batch_size=acfg.batch_size, progress=False))
    settings = {"batch_size": acfg.deepfool_batch_size, "max_iter": acfg.deepfool_max_iter,
                "overshoot": acfg.deepfool_overshoot, "nb_grads": 4, "class_gradient": "octlib traced"}
    record("DeepFool octlib", attacks.deepfool(clf, x, y, max_iter=acfg.deepfool_max_iter,
                                               overshoot=acfg.deepfool_overshoot,
                                               batch_size=acfg.deepfool_batch_size, progress=False),
           {"settings": settings})

    plain = TensorFlowV2Classifier(model=victim.model, nb_classes=4, input_shape=x.shape[1:],
                                   loss_object=clf.loss_object, clip_values=(0.0, 1.0))
    for name, kwargs in (("DeepFool ART defaults", {}), ("DeepFool ART defaults, overshoot 0.02", {"epsilon": 0.02})):
        attack = DeepFool(plain, verbose=False, **kwargs)
        logits_clean = np.asarray(victim.model(x, training=False))
        t0 = time.perf_counter()
        x_adv = attack.generate(x)
        runtime = time.perf_counter() - t0
        run = attacks.AttackRun("DeepFool", {}, x_adv, y, logits_clean, np.asarray(victim.model(x_adv)), runtime)
        record(name, run, {"settings": {"batch_size": attack.batch_size, "max_iter": attack.max_iter,
                                        "overshoot": attack.epsilon, "nb_grads": attack.nb_grads,
                                        "class_gradient": "ART"}})
    speedup = rows["DeepFool ART defaults"]["ms_per_image"] / rows["DeepFool octlib"]["ms_per_image"]
    report = {
        "benchmark": "evasion attacks", "profile": args.profile, "image_size": profile.image_size,
        "n_images": int(len(x)), "victim": victim.path.name, "results": rows,
        "deepfool_speedup_vs_art_defaults": round(speedup, 1), "goal": ">= 10x faster with the same success rate",
        "goal_met": bool(speedup >= 10 and rows["DeepFool octlib"]["success_rate"]
                         >= rows["DeepFool ART defaults"]["success_rate"]),
    }
    out = _common.write_report(report, f"attacks-{args.profile}", args.out)
    print(f"DeepFool speed-up vs ART defaults: {speedup:.1f}x -> {out}")


if __name__ == "__main__":
    main()
