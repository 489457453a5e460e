"""Victim recipe trials: which training change buys what, measured on **validation** only.

Each trial trains the profile's victim recipe with one named change (a ``TrainConfig`` override) on one split
(policy and split seed fixed) with one training seed, through ``octlib.artifacts.get_or_train`` (so a trial's model
is the cached artifact notebook 10 would load when its settings become the profile's), and records validation
accuracy and loss (what a recipe is chosen on), test accuracy and loss (reported, never used to choose), epochs
and training time. Trials run as ``--jobs`` parallel processes, each with ``--threads`` TensorFlow threads; rows
accumulate in the JSON report across invocations (one row per variant x seed; a rerun replaces its row).

    python benchmarks/bench_victim.py --data ../shared/data/oct2017-sample --profile full --policy pooled \\
        --variant baseline='{}' --variant no-class-weight='{"class_weight": "none"}' --seeds 0 --jobs 2
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _common


def trial(data: str, profile_name: str, policy: str, change: dict, seed: int, threads: int) -> dict:
    from dataclasses import replace

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    import octlib
    from octlib.artifacts import get_or_train, victim_name
    from octlib.data import load_dataset, split_with_profile

    profile = octlib.get_profile(profile_name, split_policy=policy)
    cfg = replace(profile.train, **{k: tuple(v) if isinstance(v, list) else v for k, v in change.items()})
    ds = load_dataset(data, profile, progress=False)
    splits = split_with_profile(ds, profile, policy=policy, seed=0)
    t0 = time.time()
    t = get_or_train(splits, cfg, name=victim_name(policy), seed=seed, verbose=0)
    m, tr = t.sidecar["metrics"], t.sidecar["training"]
    return {"seed": seed, "val_accuracy": m["val"]["accuracy"]["value"], "val_loss": m["val"]["loss"],
            "test_accuracy": m["test"]["accuracy"]["value"], "test_ci": [m["test"]["accuracy"]["ci_low"],
                                                                       m["test"]["accuracy"]["ci_high"]],
            "test_loss": m["test"]["loss"], "epochs": tr["epochs_run"], "best_epoch": tr["best_epoch"],
            "train_seconds": tr["train_seconds"], "wall_seconds": round(time.time() - t0, 1),
            "cached": t.cached, "artifact": t.path.name,
            "n": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)}}


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--policy", default="pooled")
    parser.add_argument("--variant", action="append", default=[], help="NAME=JSON TrainConfig change")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow intra-op threads per trial")
    parser.add_argument("--child", help=argparse_suppress())
    args = parser.parse_args()
    if args.child:
        name, change, seed = json.loads(args.child)
        row = trial(args.data, args.profile, args.policy, change, seed, args.threads)
        print(json.dumps({"variant": name, "change": change, **row}))
        return
    variants = {}
    for v in args.variant:
        name, _, text = v.partition("=")
        variants[name] = json.loads(text or "{}")
    out = Path(args.out) if args.out else _common.RESULTS / f"victim-recipe-{args.profile}.json"
    report = json.loads(out.read_text()) if out.is_file() else {
        "benchmark": "victim recipe trials (choose on validation; test reported, not used)",
        "profile": args.profile, "policy": args.policy, "split_seed": 0, "rows": []}

    def run(job):
        cmd = [sys.executable, __file__, "--child", json.dumps(job), "--data", args.data, "--profile",
               args.profile, "--policy", args.policy, "--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"trial {job} failed:\n{proc.stderr[-3000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        return row

    jobs = [(name, change, s) for name, change in variants.items() for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        for row in pool.map(run, jobs):
            report["rows"] = [r for r in report["rows"] if (r["variant"], r["seed"]) != (row["variant"], row["seed"])]
            report["rows"].append({**row, "jobs": args.jobs, "threads": args.threads})
            path = _common.write_report(report, out.stem, out)
    print(f"-> {path}")


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
