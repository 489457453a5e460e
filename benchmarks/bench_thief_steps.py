"""Does the thieves' training length limit what they steal? Notebook 32's three augmented thieves (the no-query
thief on the attacker's own labels, Copycat on the victim's answers, and own labels then Copycat) at one query
budget, trained with each number of optimizer steps, on the full profile's attacker pools: fidelity on the
attacker's validation scans and on the evaluation scans, and each thief's seconds. The profile's ``thief_steps``
is chosen where the no-query thief's fidelity stops rising, so that a gain over it is less likely to come from its
training length alone. Needs the cached study victim (notebook 10). Writes JSON (default
benchmarks/results/thief-steps-<profile>.json); ``--merge`` keeps the rows of an earlier record of other steps.

    python benchmarks/bench_thief_steps.py --profile full --steps 250 500 1000 2000 --budget 5000
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import _common


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--steps", type=int, nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument("--budget", type=int, default=None, help="queries (default: the largest augmented budget)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--merge", help="an earlier record whose rows (other steps or seeds) are kept")
    args = parser.parse_args()

    import octlib
    from octlib import extraction
    from octlib.artifacts import load_victim
    from octlib.extraction import Thief

    profile = octlib.get_profile(args.profile, split_policy="pooled")
    splits, victim = load_victim(args.data, profile, seed=0, retrain="never")
    ecfg = profile.extraction
    budget = args.budget or max(ecfg.augmented_budgets)
    attacker = extraction.attacker_pools(splits, ecfg, seed=0)
    pool_x, pool_y = attacker.pools["oct"]
    x_eval, y_eval = attacker.carved.test.x, attacker.carved.test.labels
    thieves = (Thief("no-query", augment=True), Thief("copycat", augment=True),
               Thief("copycat", augment=True, start="own-labels"))
    header = {"benchmark": "thief optimizer steps", "profile": args.profile, "thief_arch": ecfg.thief_arch,
              "budget": budget, "answers": "probabilities", "n_val": len(attacker.val_x), "n_eval": len(y_eval),
              "victim": victim.path.name}
    rows = []
    if args.merge:  # only a record of the same measurement; a rerun (steps, seed, thief) replaces the earlier row
        earlier = json.loads(Path(args.merge).read_text())
        differ = [k for k in header if earlier.get(k) != header[k]]
        if differ:
            raise SystemExit(f"--merge {args.merge}: not this run's {', '.join(differ)}; merge only a "
                             "record of the same profile, thief, budget, pools and victim (or write another --out)")
        again = {(s, seed) for s in args.steps for seed in args.seeds}
        rows = [r for r in earlier["rows"] if (r["steps"], r["seed"]) not in again]
    for steps in args.steps:
        t0 = time.perf_counter()
        report = extraction.sweep(victim.model, {"oct": (pool_x, pool_y)}, attacks=thieves, answers=("probabilities",),
                                  budgets=(budget,), seeds=tuple(args.seeds), train_cfg=profile.train,
                                  ecfg=replace(ecfg, thief_steps=steps), x_eval=x_eval, y_eval=y_eval,
                                  x_val=attacker.val_x, progress=False)
        for r in extraction.flat_rows(report):
            if r["status"] != "ok" or r["steps"] != steps:
                raise SystemExit(f"{r['thief']} (seed {r['seed']}, {steps} steps) did not train as asked: "
                                 f"status {r['status']!r}, {r['steps']} steps")
            rows.append({"steps": steps, "seed": r["seed"], "thief": r["thief"], "budget": r["budget"],
                         "queries": r["queries"], "val_fidelity": r["val_fidelity"], "fidelity": r["fidelity"],
                         "accuracy": r["accuracy"], "runtime_s": r["runtime_s"]})
            print(rows[-1], flush=True)
        print(f"{steps} steps: {time.perf_counter() - t0:.0f} s", flush=True)
    record = {**header, "rows": sorted(rows, key=lambda r: (r["steps"], r["seed"], r["thief"]))}
    print(f"wrote {_common.write_report(record, f'thief-steps-{args.profile}', args.out)}")


if __name__ == "__main__":
    main()
