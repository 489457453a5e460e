"""What a thief's input size costs: the profile's thief architecture working at each size (``separable@64``: the
scan resized inside the model, see ``octlib.config.split_arch``), timed per optimizer step of ``thief_batch_size``
scans and per predicted scan, on random scans of the profile's input size (the cost does not depend on the pixels).
Notebook 32's attacker picks its thief's size among the profile's ``thief_sizes``; these times are why the full
profile leaves the victim's own 128 px out. Writes JSON (default benchmarks/results/thief-size-<profile>.json).

    python benchmarks/bench_thief_size.py --profile full --sizes 32 64 128
"""

from __future__ import annotations

import time

import _common


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", help="input sizes (px); default: the profile's thief_sizes "
                        "and its image size")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per size (after 3 warm-up)")
    args = parser.parse_args()

    import numpy as np

    import octlib
    from octlib import extraction
    from octlib.config import split_arch

    profile = octlib.get_profile(args.profile)
    ecfg, size = profile.extraction, profile.image_size
    family = split_arch(ecfg.thief_arch)[0]
    sizes = sorted(set(args.sizes or (*ecfg.thief_sizes, size)))
    rng = np.random.default_rng(0)
    x = rng.random((ecfg.thief_batch_size, size, size, 1), dtype=np.float32)
    y = np.eye(4, dtype=np.float32)[np.arange(len(x)) % 4]
    rows = []
    for s in sizes:
        arch = family if s == size else f"{family}@{s}"
        thief = extraction.thief_classifier(arch, size, profile.train, max_steps=10**9)
        thief.fit(x, y, batch_size=len(x), nb_epochs=3)  # traces the step
        t0 = time.perf_counter()
        thief.fit(x, y, batch_size=len(x), nb_epochs=args.steps)
        step_s = (time.perf_counter() - t0) / args.steps
        many = np.repeat(x, 8, axis=0)
        thief.predict(many[:16], batch_size=128)
        t0 = time.perf_counter()
        thief.predict(many, batch_size=128)
        rows.append({"thief_arch": arch, "size": s, "seconds_per_step": round(step_s, 4),
                     "ms_per_predicted_scan": round(1000 * (time.perf_counter() - t0) / len(many), 3),
                     "seconds_per_thief": round(step_s * ecfg.thief_steps, 1)})
        print(rows[-1], flush=True)
    report = {"benchmark": "thief input size", "profile": args.profile, "image_size": size,
              "batch_size": ecfg.thief_batch_size, "thief_steps": ecfg.thief_steps, "timed_steps": args.steps,
              "sizes": rows}
    print(f"wrote {_common.write_report(report, f'thief-size-{args.profile}', args.out)}")


if __name__ == "__main__":
    main()
