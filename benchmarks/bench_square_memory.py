"""Square with remembered predictions (``octlib.estimators.remembered_predictions``): ART's Square attack run twice
on the same scans with the same seed, once on the plain classifier and once on one that answers a scan it has seen
from memory. Reported: whether the adversarial scans are identical (they must be where a scan's logits do not
depend on the batch it is predicted in), the largest difference, and both wall times. Writes JSON (default
benchmarks/results/square-memory-<profile>.json).

    python benchmarks/bench_square_memory.py --data ../shared/data/oct2017-sample --profile full --n 40 --queries 30
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace

import _common


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--n", type=int, default=40, help="evaluation scans attacked")
    parser.add_argument("--queries", type=int, default=30, help="Square iterations")
    parser.add_argument("--eps", type=float, default=0.25, help="ε in /255 (small: most scans stay standing)")
    args = parser.parse_args()

    import numpy as np

    import octlib
    from octlib import estimators, evaluation, registry
    from octlib.artifacts import load_victim
    from octlib.threat import to_unit

    profile = octlib.get_profile(args.profile)
    splits, victim = load_victim(args.data, profile, verbose=0)
    scans = evaluation.evaluation_scans(splits, profile.suite)
    x, y = scans.x[:args.n], scans.y[:args.n]
    suite = replace(profile.suite, square_queries=args.queries)
    runs = {}
    remembered = estimators.remembered_predictions

    @contextlib.contextmanager
    def plain(classifier):  # the attack as ART runs it, every prediction computed
        yield False

    for remember in (False, True):
        estimators.remembered_predictions = remembered if remember else plain
        try:
            t0 = time.perf_counter()
            x_adv, _, _ = registry._square(lambda loss: estimators.art_classifier(victim.model), x, y,
                                           to_unit(args.eps), norm="inf", suite=suite, seed=0)
            runs[remember] = (x_adv, time.perf_counter() - t0)
        finally:
            estimators.remembered_predictions = remembered
    (plain, plain_s), (kept, kept_s) = runs[False], runs[True]
    report = {"benchmark": "Square with remembered predictions", "profile": args.profile,
              "image_size": profile.image_size, "victim": victim.path.name, "n_scans": len(y),
              "queries": args.queries, "eps_255": args.eps, "identical": bool(np.array_equal(plain, kept)),
              "max_abs_difference": float(np.abs(plain - kept).max()), "plain_seconds": round(plain_s, 1),
              "remembered_seconds": round(kept_s, 1), "speedup": round(plain_s / max(kept_s, 1e-9), 2)}
    print(report)
    print(f"wrote {_common.write_report(report, f'square-memory-{args.profile}', args.out)}")


if __name__ == "__main__":
    main()
