"""Attack-suite benchmark: what monotone skipping saves. The profile's suite runs twice on the same evaluation
scans of the victim: once attacking only the scans that survived every smaller ε (octlib's default), once
attacking every correctly classified scan at every ε. Both count a scan fooled at ε as fooled at every larger ε.
Reported: gradient evaluations and queries spent, wall time, robust accuracy per ε of each, and the scans on which
the two disagree. With a deterministic suite (``--deterministic``: FGSM and PGD without random starts) they must
agree scan by scan; with random starts they can differ only where a start's draw differs (the batch a scan is
drawn in changes). Writes JSON (default benchmarks/results/suite-<profile>.json).

    python benchmarks/bench_suite.py --data ../shared/data/oct2017-sample --profile quick
"""

from __future__ import annotations

import time
from dataclasses import replace

import _common


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--n", type=int, default=None, help="evaluation scans (default: the profile's suite size)")
    parser.add_argument("--deterministic", action="store_true",
                        help="FGSM and PGD without random starts: the two runs must agree scan by scan")
    args = parser.parse_args()

    import numpy as np

    import octlib
    from octlib import evaluation
    from octlib.artifacts import load_victim

    profile = octlib.get_profile(args.profile)
    suite = profile.suite if args.n is None else replace(profile.suite, n_scans=args.n)
    if args.deterministic:
        suite = replace(suite, attacks=("FGSM", "PGD"), pgd_restarts=0)
    splits, victim = load_victim(args.data, profile, verbose=0)
    scans = evaluation.evaluation_scans(splits, suite, pool_fraction=profile.extraction.pool_fraction)
    target = evaluation.model_target("undefended", victim.model, kind="none")
    runs = {}
    for skip in (True, False):
        t0 = time.perf_counter()
        ev = evaluation.evaluate(target, scans.x, scans.y, suite.threat(), suite, scan_ids=scans.ids,
                                 patients=scans.patients, skip_fooled=skip, progress=False)
        runs[skip] = (ev, time.perf_counter() - t0)
        print(f"skip_fooled={skip}: {ev.cost['gradients']:,} gradients, {runs[skip][1]:.1f} s, robust "
              f"{np.round(ev.robust_accuracy(), 3).tolist()}", flush=True)
    (skip_ev, skip_s), (all_ev, all_s) = runs[True], runs[False]
    disagree = int((skip_ev.robust != all_ev.robust).sum())
    report = {
        "benchmark": "attack suite: monotone skipping", "profile": args.profile, "image_size": profile.image_size,
        "victim": victim.path.name, "n_scans": len(scans), "attacks": list(suite.attacks),
        "deterministic": args.deterministic, "eps_255": list(suite.eps_255),
        "skipping": {"gradients": skip_ev.cost["gradients"], "queries": skip_ev.cost["queries"],
                     "seconds": round(skip_s, 1), "robust_accuracy": skip_ev.robust_accuracy().tolist()},
        "every_scan": {"gradients": all_ev.cost["gradients"], "queries": all_ev.cost["queries"],
                       "seconds": round(all_s, 1), "robust_accuracy": all_ev.robust_accuracy().tolist()},
        "gradients_saved": all_ev.cost["gradients"] - skip_ev.cost["gradients"],
        "gradient_ratio": round(all_ev.cost["gradients"] / max(skip_ev.cost["gradients"], 1), 2),
        "time_ratio": round(all_s / max(skip_s, 1e-9), 2),
        "scan_eps_outcomes_that_differ": disagree, "identical_robust_accuracy": disagree == 0,
    }
    name = f"suite-{args.profile}" + ("-deterministic" if args.deterministic else "")
    out = _common.write_report(report, name, args.out)
    print(f"saved {report['gradients_saved']:,} gradient evaluations ({report['gradient_ratio']}x fewer), "
          f"{disagree} differing outcomes -> {out}")


if __name__ == "__main__":
    main()
