"""Scale of the data layer: OCT2017-sized folder trees and a full-size OCTMNIST-224 file, built in a temporary
folder (never committed), loaded the way the notebooks load them.

Folder trees: the sample's images hard-linked under new patient IDs (each copy of the sample gets its own IDs, so
the patient-level split and the leakage check see distinct patients) up to 10k, 30k and 108,312 files. For each:
the first load (decode, resize to --image-size, write the array cache) and a second load (from the cache), each in
its own subprocess so that its peak memory (max RSS) is its own: wall and CPU seconds, images per second, CPU
milliseconds per image, cache size on disk. CPU seconds and peak memory include the decoding processes
(`octlib.data.folder.decode_executor`: worker processes for 2,000 files or more): CPU of the load's own process plus
its children's, peak RSS of the load's process and, separately, of its largest child. Parallel decoding: the first
load of the smallest tree is repeated with one thread and with --workers threads to measure what the processes
buy. CPU time is reported beside wall time because other jobs may share the cores: CPU ms per image is the figure
that is flat or not.

OCTMNIST-224: a file in the published `.npz` layout (train/val/test _images uint8 (N, 224, 224), _labels (N, 1))
at full size (97,477 / 10,832 / 1,000 images), of random pixels, loaded by `octlib.data.load_octmnist_npz`.

    python benchmarks/bench_scale.py                      # 10k, 30k, 108,312 files and OCTMNIST-224
    python benchmarks/bench_scale.py --sizes 2000 --no-octmnist --out scale-smoke.json   # a smoke run
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

from octlib.data.folder import decode_executor

OCT2017_TRAIN = 108_312
OCTMNIST_SPLITS = {"train": 97_477, "val": 10_832, "test": 1_000}


def build_tree(sample: Path, dest: Path, n_files: int) -> dict:
    """Hard-link (copy where links fail) the sample's images under ``dest`` until it holds ``n_files`` files."""
    sources = sorted(p for p in sample.glob("*/*/*.jpeg"))
    if not sources:
        raise SystemExit(f"No <split>/<CLASS>/*.jpeg under {sample}: point --data at the OCT2017 sample.")
    t0, linked = time.perf_counter(), 0
    for i in range(n_files):
        src = sources[i % len(sources)]
        copy = i // len(sources)
        cls, pid, no = src.stem.split("-")
        target = dest / src.parent.parent.name / src.parent.name / f"{cls}-{copy * 10_000_000 + int(pid)}-{no}.jpeg"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, target)
            linked += 1
        except OSError:
            shutil.copyfile(src, target)
    return {"files": n_files, "hard_linked": linked, "sample_copies": -(-n_files // len(sources)),
            "build_seconds": round(time.perf_counter() - t0, 1)}


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the decoding processes)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _child(kind: str, path: str, image_size: int, workers: int | None, parallel: str = "auto") -> None:
    """One load in this process; prints a JSON line with times and peak memory."""
    start = time.perf_counter()
    cpu0 = _cpu_seconds()
    if kind == "folder":
        from octlib.data import load_folder

        ds = load_folder(path, image_size, progress=False, workers=workers, parallel=parallel)
        extra = {"cache_hit": ds.info["cache_hit"], "decoded_files": ds.info["decoded_files"]}
    else:
        from octlib.data.octmnist import load_octmnist_npz

        ds = load_octmnist_npz(path, fingerprint="benchmark")
        extra = {}
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu0
    n = len(ds.labels)
    print(json.dumps({"images": n, "image_bytes": int(ds.images.nbytes), "wall_seconds": round(wall, 2),
                      "cpu_seconds": round(cpu, 2), "images_per_second": round(n / wall, 1),
                      "cpu_ms_per_image": round(1000 * cpu / n, 3),
                      "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
                      "peak_rss_largest_child_gb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
                                                         / 2**20, 3), **extra}))


def load_in_subprocess(kind: str, path: Path, image_size: int, cache: Path, workers: int | None = None,
                       parallel: str = "auto") -> dict:
    env = {**os.environ, "OCTLIB_CACHE": str(cache), "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, __file__, "--child", kind, str(path), str(image_size), str(workers or 0), parallel]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{kind} load of {path} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_octmnist(path: Path, size: int = 224, seed: int = 0) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    arrays = {}
    for split, n in OCTMNIST_SPLITS.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 4, (n, 1), dtype=np.uint8)
    np.savez(path, **arrays)
    del arrays
    return {"file_gb": round(path.stat().st_size / 2**30, 3), "write_seconds": round(time.perf_counter() - t0, 1),
            "images": sum(OCTMNIST_SPLITS.values()), "layout": "published .npz keys, uncompressed members"}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]) or None, sys.argv[6])
        return
    p = _common.parser(__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, OCT2017_TRAIN])
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=None, help="decoding processes or threads (default: octlib's)")
    p.add_argument("--no-octmnist", action="store_true")
    p.add_argument("--tmp", default=None, help="where to build the trees (default: the system's temp folder)")
    args = p.parse_args()
    sample = Path(args.data or "../shared/data/oct2017-sample").resolve()
    report: dict = {"benchmark": "data layer at scale", "sample": str(sample), "image_size": args.image_size,
                    "cpu_count": os.cpu_count(), "folders": [],
                    "goals": {"cost_per_image": "flat from 10k to 108k files", "cached_reload": ">= 20x faster",
                              "peak_rss_gb": "<= 8 at 128 px"}}
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="octlib-scale-") as tmp:
        tmp = Path(tmp)
        for i, n in enumerate(sorted(args.sizes)):
            tree, cache = tmp / f"tree-{n}", tmp / f"cache-{n}"
            row = {"build": build_tree(sample, tree, n)}
            row["first_load"] = load_in_subprocess("folder", tree, args.image_size, cache, args.workers)
            row["cached_load"] = load_in_subprocess("folder", tree, args.image_size, cache, args.workers)
            row["cache_gb"] = round(sum(f.stat().st_size for f in cache.glob("*.npz")) / 2**30, 3)
            row["reload_speedup"] = round(row["first_load"]["wall_seconds"] / row["cached_load"]["wall_seconds"], 1)
            if i == 0:
                one = load_in_subprocess("folder", tree, args.image_size, tmp / "cache-one-thread", 1, "thread")
                threads = load_in_subprocess("folder", tree, args.image_size, tmp / "cache-threads", args.workers,
                                             "thread")
                row["first_load_one_thread"], row["first_load_threads"] = one, threads
                row["first_load_executor"] = dict(zip(("kind", "workers"), decode_executor(n, args.workers)))
                row["thread_speedup_wall"] = round(one["wall_seconds"] / threads["wall_seconds"], 2)
                row["default_speedup_wall"] = round(one["wall_seconds"] / row["first_load"]["wall_seconds"], 2)
            print(json.dumps({n: row}), flush=True)
            report["folders"].append(row)
            shutil.rmtree(tree)
            shutil.rmtree(cache)
        per_image = [r["first_load"]["cpu_ms_per_image"] for r in report["folders"]]
        report["cpu_ms_per_image_ratio_largest_to_smallest"] = round(per_image[-1] / per_image[0], 3)
        if not args.no_octmnist:
            npz = tmp / "octmnist_224.npz"
            report["octmnist_224"] = {"file": write_octmnist(npz)}
            report["octmnist_224"]["load"] = load_in_subprocess("octmnist", npz, 224, tmp / "cache-npz")
            print(json.dumps(report["octmnist_224"]), flush=True)
    out = _common.write_report(report, f"scale-{args.image_size}px", args.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
