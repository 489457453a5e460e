"""What each attack of the ensemble buys, and costs, at the headline ε: the suite's attacks run in order on the scans
still standing (FGSM, PGD, APGD-DLR, then APGD-T towards each other class), then Square on the scans left, with
each query budget of ``--square`` (each run from the same standing scans, so the larger budget's extra finds are
what it buys). Reported per attack: seconds, gradient evaluations or queries, scans it fooled first. Writes JSON
(default benchmarks/results/ensemble-<profile>-<model>.json).

    python benchmarks/bench_ensemble.py --data ../shared/data/oct2017-sample --profile full --square 1000 5000
    python benchmarks/bench_ensemble.py --profile full --defence adversarial   # a cached defence model
"""

from __future__ import annotations

import time
from dataclasses import replace

import _common


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--eps", type=float, default=None, help="ε in /255 (default: the suite's headline)")
    parser.add_argument("--square", type=int, nargs="+", default=[1000, 5000], help="Square query budgets")
    parser.add_argument("--defence", default=None,
                        help="a training defence kind (adversarial, trades, label_smoothing, noise) instead of the "
                             "victim; its model must be in the artifact store or is trained first")
    parser.add_argument("--n", type=int, default=None, help="evaluation scans (default: the profile's)")
    parser.add_argument("--square-cost", type=int, nargs="*", default=[],
                        help="also time Square per iteration on this many scans at 0.25/255 (most survive there, "
                             "as on an adversarially trained model at the headline ε), 50 iterations each")
    parser.add_argument("--cost-only", action="store_true", help="only the --square-cost timing")
    args = parser.parse_args()

    import numpy as np

    import octlib
    from octlib import evaluation
    from octlib.artifacts import get_or_train_defence, load_victim

    profile = octlib.get_profile(args.profile)
    eps = args.eps if args.eps is not None else profile.suite.headline_255
    gradient_attacks = ("FGSM", "PGD", "APGD-DLR", "APGD-T")
    suite = replace(profile.suite, eps_255=(eps,), headline_255=eps, attacks=gradient_attacks, loss_attack=False,
                    **({"n_scans": args.n} if args.n else {}))
    splits, victim = load_victim(args.data, profile, verbose=0)
    if args.defence:
        d = profile.defence
        values = {"adversarial": d.adv_eps_255, "trades": d.adv_eps_255, "label_smoothing": d.label_smoothing[0],
                  "noise": d.input_noise_sigmas[0]}
        if args.defence not in values:
            raise SystemExit(f"--defence {args.defence!r}: use one of {sorted(values)}")
        trained = get_or_train_defence(splits, profile, args.defence, values[args.defence])
        model, name = trained.model, trained.path.name
    else:
        model, name = victim.model, victim.path.name
    scans = evaluation.evaluation_scans(splits, suite)
    target = evaluation.model_target(name, model, kind="none")
    cost = []
    for n in args.square_cost:
        sq = replace(suite, attacks=("Square",), square_queries=50, eps_255=(0.25,), headline_255=0.25)
        t0 = time.perf_counter()
        ev_sq = evaluation.evaluate(target, scans.x[:n], scans.y[:n], sq.threat(), sq, progress=False)
        seconds = time.perf_counter() - t0
        cost.append({"scans": n, "iterations": 50, "seconds": round(seconds, 1),
                     "seconds_per_iteration": round(seconds / 50, 3), "standing_after": int(ev_sq.robust[0].sum())})
        print(f"Square on {n} scans at 0.25/255: {seconds / 50:.3f} s per iteration "
              f"({int(ev_sq.robust[0].sum())} standing after 50)", flush=True)
    if args.cost_only:
        path = _common.write_report({"benchmark": "Square's cost per iteration", "profile": args.profile,
                                     "image_size": profile.image_size, "model": name, "square_cost": cost},
                                    f"square-cost-{args.profile}", args.out)
        print(f"wrote {path}")
        return
    ev = evaluation.evaluate(target, scans.x, scans.y, suite.threat(), suite, scan_ids=scans.ids,
                             patients=scans.patients, progress=False)
    fooled_first = {k: int(v) for k, v in ev.fooled_by_table().iloc[0].items()}
    standing = np.flatnonzero(ev.robust[0])
    report = {"benchmark": "ensemble at the headline ε", "profile": args.profile, "image_size": profile.image_size,
              "model": name, "eps_255": eps, "n_scans": len(scans), "clean_correct": int(ev.clean_correct.sum()),
              "gradient_attacks": {"settings": {"pgd_steps": suite.pgd_steps, "pgd_restarts": suite.pgd_restarts,
                                                "apgd_steps": suite.apgd_steps,
                                                "apgd_restarts": suite.apgd_restarts},
                                   "seconds_by_attack": ev.cost["seconds_by_attack"],
                                   "fooled_first": fooled_first, "standing_after": int(len(standing))},
              "square": [], "square_cost": cost}
    print(f"{name}: {len(scans)} scans, {int(ev.clean_correct.sum())} right, {len(standing)} standing after "
          f"{'/'.join(gradient_attacks)}; seconds {ev.cost['seconds_by_attack']}; first fooled by {fooled_first}",
          flush=True)
    for queries in args.square:
        if not len(standing):
            break
        sq = replace(suite, attacks=("Square",), square_queries=queries)
        t0 = time.perf_counter()
        ev_sq = evaluation.evaluate(target, scans.x[standing], scans.y[standing], sq.threat(), sq, progress=False)
        seconds = time.perf_counter() - t0
        fooled = int(len(standing) - ev_sq.robust[0].sum())
        report["square"].append({"queries": queries, "seconds": round(seconds, 1), "fooled": fooled,
                                 "standing_after": int(ev_sq.robust[0].sum())})
        print(f"Square {queries} queries on {len(standing)} scans: fooled {fooled}, {seconds:.0f} s", flush=True)
    path = _common.write_report(report, f"ensemble-{args.profile}-{args.defence or 'victim'}", args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
