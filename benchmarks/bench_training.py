"""Training-pipeline benchmark: octlib's cached-array tf.data pipeline vs keras.utils.image_dataset_from_directory
decoding the same JPEGs every epoch; same model, same batch size, same machine, one run.

Each pipeline runs in its own subprocess so that its peak memory (max RSS) is its own. Augmentation is off in both
so that only the input pipeline differs. Also measures inference throughput. Writes JSON (default
benchmarks/results/training-<profile>-<split>.json).

    python benchmarks/bench_training.py --data ../shared/data/oct2017-sample --profile quick --epochs 5
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import _common


def run_pipeline(kind: str, data: str, profile_name: str, epochs: int, split: str) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    import octlib
    from octlib.config import CLASSES
    from octlib.data import load_folder
    from octlib.models import build_cnn
    from octlib.training import compile_model, make_dataset

    profile = octlib.get_profile(profile_name)
    cfg = replace(profile.train, augment="none")
    size, bs = profile.image_size, cfg.batch_size
    keras.utils.set_random_seed(0)
    out: dict = {"pipeline": kind}
    t0 = time.perf_counter()
    ds_all = load_folder(data, size, profile.resize, progress=False)
    out["load_seconds"] = round(time.perf_counter() - t0, 3)
    out["load_cache_hit"] = bool(ds_all.info["cache_hit"])
    part = ds_all.subset(ds_all.origins == split)
    n = len(part)
    if kind == "octlib":
        train_ds = make_dataset(part.images, part.labels, batch_size=bs, training=True)
    else:
        train_ds = keras.utils.image_dataset_from_directory(
            Path(data) / split, labels="inferred", label_mode="int", class_names=list(CLASSES),
            color_mode="grayscale", image_size=(size, size), batch_size=bs, shuffle=True, seed=0, verbose=False)
        train_ds = train_ds.map(lambda x, y: (x / 255.0, y), num_parallel_calls=tf.data.AUTOTUNE)
        train_ds = train_ds.prefetch(tf.data.AUTOTUNE)
    train_ds = train_ds.map(lambda x, y: (x, tf.one_hot(y, len(CLASSES))))
    for _ in train_ds:  # warm-up pass (tracing, file cache)
        pass
    passes = []
    for _ in range(3):  # the input pipeline alone, no model: what the pipeline itself costs per epoch
        t0 = time.perf_counter()
        for _ in train_ds:
            pass
        passes.append(time.perf_counter() - t0)
    out["pipeline_only_epoch_seconds"] = round(float(np.median(passes)), 4)
    model = compile_model(build_cnn(size, cfg), cfg)

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            out.setdefault("epoch_seconds", []).append(round(time.perf_counter() - self.t, 3))

    model.fit(train_ds, epochs=epochs, callbacks=[Timer()], verbose=0, shuffle=False)
    later = out["epoch_seconds"][1:]
    out.update(n_images=n, mean_epoch_seconds_after_first=round(float(np.mean(later)), 3),
               images_per_second_after_first=round(n / float(np.mean(later)), 1))
    if kind == "octlib":
        x = ds_all.x[ds_all.origins != split]
        model.predict(x[:256], batch_size=256, verbose=0)  # warm-up / tracing
        t0 = time.perf_counter()
        model.predict(x, batch_size=256, verbose=0)
        out["inference_images_per_second"] = round(len(x) / (time.perf_counter() - t0), 1)
        out["inference_images"] = int(len(x))
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--split", default="train", help="source folder to train on")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.data or not Path(args.data).is_dir():
        parser.error("--data (or OCTLIB_DATA) must be an OCT2017-layout folder, e.g. ../shared/data/oct2017-sample")
    if args.child:
        print(json.dumps(run_pipeline(args.child, args.data, args.profile, args.epochs, args.split)))
        return

    from octlib.data import load_folder
    from octlib.config import get_profile

    profile = get_profile(args.profile)
    load_folder(args.data, profile.image_size, profile.resize, progress=False)  # warm octlib's decode cache
    results = {}
    for kind in ("octlib", "image_dataset_from_directory"):
        cmd = [sys.executable, __file__, "--child", kind, "--data", args.data, "--profile", args.profile,
               "--epochs", str(args.epochs), "--split", args.split]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[kind] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(kind, results[kind])
    ratio = (results["image_dataset_from_directory"]["mean_epoch_seconds_after_first"]
             / results["octlib"]["mean_epoch_seconds_after_first"])
    pipeline_ratio = (results["image_dataset_from_directory"]["pipeline_only_epoch_seconds"]
                      / results["octlib"]["pipeline_only_epoch_seconds"])
    report = {
        "benchmark": "training input pipeline", "profile": args.profile, "image_size": profile.image_size,
        "batch_size": profile.train.batch_size, "epochs": args.epochs, "data": str(Path(args.data).resolve().name),
        "split": args.split, "results": results, "speedup_per_epoch_after_first": round(ratio, 2),
        "speedup_input_pipeline_only": round(pipeline_ratio, 1),
        "goal": ">= 3x faster per epoch after the first", "goal_met": ratio >= 3.0,
    }
    out = _common.write_report(report, f"training-{args.profile}-{args.split}", args.out)
    print(f"speed-up per training epoch after the first: {ratio:.2f}x; input pipeline alone: {pipeline_ratio:.1f}x "
          f"-> {out}")


if __name__ == "__main__":
    main()
