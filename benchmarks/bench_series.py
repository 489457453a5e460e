"""End-to-end benchmark: the whole notebook series in one profile, from nothing cached (fresh data cache, no
trained models, no results: what CI does on a clean clone), through ``octlib.runner.run_series``. Records the
time per notebook and in total against the goal (quick profile: at most 10 minutes on 2 CPU cores). Writes JSON
(default benchmarks/results/series-<profile>.json); the executed notebooks stay in a temporary folder.

    python benchmarks/bench_series.py --data ../shared/data/oct2017-sample --profile quick

With ``--manifest`` it runs nothing and records the per-notebook times of runs already made by
``python -m octlib run`` (their ``manifest.json``; several runs of the same profile are merged, in order), e.g. a
full-profile run too long to repeat for a benchmark:

    python benchmarks/bench_series.py --profile full --manifest runs/reference-full-evasion/manifest.json \
        --out benchmarks/results/series-full-20-21.json
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import _common

GOAL_SECONDS = {"quick": 600}
#: the full profile's goal is per notebook: each within 60 minutes on 2 CPU cores
GOAL_PER_NOTEBOOK_SECONDS = {"full": 3600}


def from_manifests(paths, profile: str) -> dict:
    """A report from existing run manifests: their notebooks and times, data, hardware and versions."""
    manifests = [json.loads(Path(p).read_text()) for p in paths]
    for path, m in zip(paths, manifests):
        if m.get("status") != "ok" or m["profile"]["name"] != profile:
            raise SystemExit(f"{path}: status {m.get('status')!r}, profile {m['profile']['name']!r}; record only "
                             f"finished runs of the {profile!r} profile.")
    if len({m["data"]["fingerprint"] for m in manifests}) > 1:
        raise SystemExit("The manifests come from different data (fingerprints differ); record them separately.")
    notebooks = {e["notebook"]: e["seconds"] for m in manifests for e in m["notebooks"]}
    return {"benchmark": "notebook times recorded from run manifests (not rerun)", "profile": profile,
            "data": manifests[0]["data"], "notebooks_seconds": round(sum(notebooks.values()), 1),
            "notebooks": notebooks, "runs": [{"manifest": str(p), "started": m.get("started"),
                                              "finished": m.get("finished")} for p, m in zip(paths, manifests)],
            "goal_per_notebook_seconds": GOAL_PER_NOTEBOOK_SECONDS.get(profile),
            "over_goal": [n for n, t in notebooks.items() if t > GOAL_PER_NOTEBOOK_SECONDS.get(profile, float("inf"))],
            "hardware": manifests[0]["hardware"], "versions": manifests[0]["versions"]}


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--manifest", nargs="+", help="record these runs' manifest.json instead of running")
    parser.add_argument("--note", help="with --manifest: how the runs were made (e.g. what else shared the cores)")
    args = parser.parse_args()
    if args.manifest:
        report = from_manifests(args.manifest, args.profile)
        if args.note:
            report["note"] = args.note
        out = _common.write_report(report, f"series-{args.profile}-recorded", args.out)
        print(f"recorded {len(args.manifest)} run(s) -> {out}")
        return

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
