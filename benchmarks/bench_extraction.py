"""Extraction benchmark: adaptive KnockoffNets (one query and one training step at a time) with octlib's thief,
whose ``train_step`` is traced once (``reduce_retracing``), against ART's default thief (optimizer only: ART
builds and traces a new ``train_step`` on every ``fit`` call), same victim, pool, budget and seed, in one run; and
Copycat CNN at the profile's largest budget. Records ms per query and the peak resident memory of each phase.
Writes JSON (default benchmarks/results/extraction-<profile>.json).

    python benchmarks/bench_extraction.py --data ../shared/data/oct2017-sample --profile quick --queries 100
"""

from __future__ import annotations

import os
import threading
import time

import _common


class PeakRSS:
    """Peak resident set size (MiB) of this process while the block runs, sampled every 10 ms."""

    def __enter__(self):
        self.peak, self._stop = self.now(), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def now() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _watch(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.now())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--queries", type=int, default=100, help="adaptive KnockoffNets budget")
    args = parser.parse_args()

    import keras
    import numpy as np
    from art.attacks.extraction import KnockoffNets
    from art.estimators.classification import TensorFlowV2Classifier

    import octlib
    from octlib import estimators, extraction, metrics
    from octlib.artifacts import load_victim
    from octlib.models import build_model

    profile = octlib.get_profile(args.profile)
    ecfg = profile.extraction
    splits, victim = load_victim(args.data, profile, verbose=0)
    attacker = extraction.attacker_pools(splits, ecfg, seed=0)
    carved, pools = attacker.carved, attacker.pools
    x_pool, y_pool = pools["oct"]
    logits_victim = metrics.predict_logits(victim.model, carved.test.x)
    rows = {}

    def record(name, runtime, queries, peak, thief_model, extra=None):
        rep = metrics.extraction_report(carved.test.labels, logits_victim,
                                        metrics.predict_logits(thief_model, carved.test.x))
        rows[name] = {"ms_per_query": round(1000 * runtime / queries, 1), "runtime_s": round(runtime, 2),
                      "queries": int(queries), "peak_rss_mib": round(peak, 0), "fidelity": rep["fidelity"]["value"],
                      **(extra or {})}
        print(name, rows[name], flush=True)

    # octlib: own optimizer, train_step traced once
    with PeakRSS() as mem:
        run = extraction.steal(victim.model, x_pool, attack="knockoff-adaptive", answers="probabilities",
                               budget=args.queries, pool_labels=y_pool, train_cfg=profile.train, ecfg=ecfg, seed=0)
    record("adaptive KnockoffNets, octlib thief (traced train_step)", run.runtime_s, run.queries, mem.peak,
           run.thief, {"train_step": "octlib, tf.function(reduce_retracing=True), traced once"})

    # ART's default: optimizer only; ART wraps a new tf.function train_step inside every fit() call
    keras.utils.set_random_seed(0)
    api = estimators.victim_api(victim.model, "probabilities")
    model = build_model(ecfg.thief_arch, profile.image_size, profile.train)
    thief = TensorFlowV2Classifier(model=model, nb_classes=4, input_shape=model.input_shape[1:],
                                   loss_object=keras.losses.CategoricalCrossentropy(from_logits=True),
                                   optimizer=keras.optimizers.Adam(ecfg.thief_learning_rate), clip_values=(0.0, 1.0))
    attack = KnockoffNets(api, batch_size_fit=ecfg.thief_batch_size, batch_size_query=256,
                          nb_epochs=run.params["nb_epochs"], nb_stolen=args.queries, sampling_strategy="adaptive",
                          reward="all", verbose=False, use_probability=True)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        stolen = attack.extract(x_pool, y=y_pool, thieved_classifier=thief)
        runtime = time.perf_counter() - t0
    record("adaptive KnockoffNets, ART default thief (optimizer only)", runtime, api.queries, mem.peak, stolen.model,
           {"train_step": "ART default, re-traced on every fit() call"})

    budget = min(max(ecfg.budgets), len(x_pool))
    with PeakRSS() as mem:
        run = extraction.steal(victim.model, x_pool, attack="copycat", answers="labels", budget=budget,
                               train_cfg=profile.train, ecfg=ecfg, seed=0)
    record(f"Copycat CNN, {budget} queries", run.runtime_s, run.queries, mem.peak, run.thief,
           {"thief_steps": ecfg.thief_steps})

    octlib_ms = rows["adaptive KnockoffNets, octlib thief (traced train_step)"]["ms_per_query"]
    art_ms = rows["adaptive KnockoffNets, ART default thief (optimizer only)"]["ms_per_query"]
    report = {
        "benchmark": "model extraction", "profile": args.profile, "image_size": profile.image_size,
        "victim": victim.path.name, "pool": {"kind": "oct", "images": int(len(x_pool))}, "results": rows,
        "adaptive_speedup_vs_art_default": round(art_ms / octlib_ms, 1),
        "note": "peak_rss_mib is the process's peak resident memory during each phase (phases run in this order, "
                "so a later phase's peak includes what earlier phases left allocated)",
    }
    out = _common.write_report(report, f"extraction-{args.profile}", args.out)
    print(f"adaptive KnockoffNets speed-up vs ART's default thief: {art_ms / octlib_ms:.1f}x -> {out}")


if __name__ == "__main__":
    main()
