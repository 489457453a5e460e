"""Randomized-defence benchmark: what scoring inference noise in expectation costs, and what EOT and the suite
cost on top of it. On the profile's randomized evaluation scans of the noise-trained victim (notebook 43's model,
which must be in the model store: train it with notebook 43, or import it with ``python -m octlib models import``):

* the scored answer: the majority of ``answer_draws`` fixed draws of the K-copy answer
  (:class:`octlib.defences.ExpectedNoiseAnswer`), timed per scan, against one K-copy call (what a client gets),
  and how many clean scans three single calls answer differently (what the majority removes);
* the EOT convergence study of notebook 44 at the headline ε (:func:`octlib.evaluation.eot_convergence`);
* the attack suite at the converged setting over the grid (:func:`octlib.evaluation.evaluate`).

Writes JSON (default benchmarks/results/randomized-<profile>.json) with the seconds of each part, the robust and
per-draw accuracies and the machine. Timings compare only within one machine.

    python benchmarks/bench_randomized.py --data ../shared/data/oct2017-sample --profile full --split-policy pooled
"""

from __future__ import annotations

import time
from dataclasses import replace

import _common


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--split-policy", default=None, help="the victim's split policy (default: the profile's)")
    parser.add_argument("--n", type=int, default=None, help="scans (default: the profile's randomized_n_scans)")
    args = parser.parse_args()

    import numpy as np

    import octlib
    from octlib import checks, defences, estimators, evaluation
    from octlib.artifacts import get_or_train_defence, load_victim

    profile = octlib.get_profile(args.profile, split_policy=args.split_policy)
    suite = profile.suite if args.n is None else replace(profile.suite, randomized_n_scans=args.n)
    dcfg, threat = profile.defence, suite.threat()
    splits, victim = load_victim(args.data, profile, retrain="never", verbose=0)
    scans = evaluation.evaluation_scans(splits, suite, seed=0).subset(suite.randomized_n_scans, seed=0)
    report = {"profile": profile.name, "victim": victim.path.name, "n": len(scans), "answer_draws": suite.answer_draws,
              "noise_samples": dcfg.noise_samples, "eot_schedule": suite.eot_schedule, "sigmas": {}}
    for sigma in dcfg.input_noise_sigmas:
        m = get_or_train_defence(splits, profile, "noise", sigma, seed=0, retrain="never")
        row = {"model": m.path.name}
        one = estimators.noise_classifier(m.model, sigma, dcfg.noise_samples, seed=7)
        one.predict(scans.x[:2])
        t = time.perf_counter()
        one.predict(scans.x)
        row["one_call_s_per_scan"] = (time.perf_counter() - t) / len(scans)
        row["one_call_unstable_answers"] = checks.unstable_answers(one.predict, scans.x)
        expected = defences.ExpectedNoiseAnswer(m.model, sigma, dcfg.noise_samples, suite.answer_draws, seed=0,
                                                remember=0)
        expected.answer(scans.x[:1])
        t = time.perf_counter()
        answer = expected.answer(scans.x)
        row["expected_s_per_scan"] = (time.perf_counter() - t) / len(scans)
        row["expected_same_on_second_call"] = bool(np.array_equal(answer, expected.answer(scans.x)))
        row["clean_accuracy_majority"] = float((answer == scans.y).mean())
        row["clean_per_draw_accuracy"] = float((expected.votes(scans.x) == scans.y).mean())
        t = time.perf_counter()
        conv = evaluation.eot_convergence(m.model, sigma, dcfg.noise_samples, scans.x, scans.y, threat.headline,
                                          suite.eot_schedule, seed=0, tolerance=suite.eot_tolerance,
                                          answer_draws=suite.answer_draws)
        row["convergence_s"] = time.perf_counter() - t
        row["convergence"] = {k: v for k, v in conv.items() if k != "points"}
        row["convergence"]["points"] = [{k: v for k, v in p.items() if k != "fooled"} for p in conv["points"]]
        row["eot_beats_plain"] = checks.eot_beats_plain(conv)
        draws, steps = conv["converged"]
        target = evaluation.noise_target(f"inference noise σ={sigma:g}", m.model, sigma, dcfg.noise_samples, draws,
                                         seed=0, answer_draws=suite.answer_draws)
        square = suite.randomized_square_queries or suite.square_queries
        t = time.perf_counter()
        ev = evaluation.evaluate(target, scans.x, scans.y, threat, replace(suite, pgd_steps=steps,
                                                                            square_queries=square),
                                 scan_ids=scans.ids, patients=scans.patients, seed=0, progress=True)
        row["suite_s"] = time.perf_counter() - t
        row["suite_seconds_by_attack"] = ev.cost["seconds_by_attack"]
        row["robust_accuracy"] = dict(zip(threat.labels, map(float, ev.robust_accuracy())))
        row["per_draw_accuracy"] = dict(zip(threat.labels, map(float, ev.per_draw.mean(axis=1))))
        report["sigmas"][str(sigma)] = row
        print(row)
    path = _common.write_report(report, f"randomized-{profile.name}", args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
