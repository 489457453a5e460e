"""End-to-end benchmark: the whole notebook series in one profile, from nothing cached (fresh data cache, no
trained models, no results: what CI does on a clean clone), through ``octlib.runner.run_series``. Records the
time per notebook and in total against the goal (quick profile: at most 10 minutes on 2 CPU cores). Writes JSON
(default benchmarks/results/series-<profile>.json); the executed notebooks stay in a temporary folder.

    python benchmarks/bench_series.py --data ../shared/data/oct2017-sample --profile quick
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import _common

GOAL_SECONDS = {"quick": 600}


def main() -> None:
    args = _common.parser(__doc__).parse_args()

    with tempfile.TemporaryDirectory(prefix="octlib-series-") as tmp:
        tmp = Path(tmp)
        for name in ("RESULTS", "ARTIFACTS", "FIGURES", "CACHE"):
            os.environ[f"OCTLIB_{name}"] = str(tmp / name.lower())
        from octlib.runner import run_series

        t0 = time.perf_counter()
        manifest = run_series(args.profile, args.data, out_dir=tmp / "run", progress=False)
        wall = round(time.perf_counter() - t0, 1)
    goal = GOAL_SECONDS.get(args.profile)
    report = {
        "benchmark": "notebook series end to end, nothing cached", "profile": args.profile,
        "data": manifest["data"], "total_seconds": wall, "notebooks_seconds": manifest["total_seconds"],
        "notebooks": {e["notebook"]: e["seconds"] for e in manifest["notebooks"]},
        "goal_seconds": goal, "goal_met": None if goal is None else wall <= goal,
        "note": "total_seconds: wall time including the one-time JPEG decode before the first notebook and "
                "every model the series trains; notebooks_seconds: the notebooks alone",
        "hardware": manifest["hardware"], "versions": manifest["versions"],
    }
    out = _common.write_report(report, f"series-{args.profile}", args.out)
    print(f"{args.profile} series: {wall:.0f} s (goal {goal} s) -> {out}")


if __name__ == "__main__":
    main()
