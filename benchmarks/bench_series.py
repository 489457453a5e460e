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

The reference run keeps one manifest per notebook (``figures/manifests/<notebook>.json``); ``--reference`` records
those (default output ``benchmarks/results/series-full.json``), with the series total against its goal (6 hours)
and the notebooks of the series not yet in the reference listed as missing:

    python benchmarks/bench_series.py --profile full --reference

A reference notebook that found a model it trains already in the artifact store (trained by an earlier run of the
same key) ran without that training; ``from_nothing_seconds`` adds the training time written in each such model's
sidecar (:func:`cached_training`), and the series goal is judged on that total.

Reference notebooks that ran while other jobs shared the cores can be re-measured alone (the same notebook, the
full profile, the same victim, fresh artifact and results stores so that every defence model it needs is trained
again, nothing else running); ``--alone`` adds those runs' manifests: per notebook the time alone beside the
reference's, and ``series_seconds_alone_where_measured``, the reference's total with each re-measured notebook's
time alone in place of its shared one (the committed figures still come from the reference runs):

    python benchmarks/bench_series.py --profile full --reference --alone runs/alone-42/manifest.json

A notebook split after it was measured alone is recorded from the cells of that run: a manifest with
``split_into`` (``{notebook: seconds}``, the cells each part took, written by ``--split-from``) stands for the
notebooks it names.

    python benchmarks/bench_series.py --split-from runs/alone-10/10_train_cnn.ipynb \
        --split "10_train_cnn.ipynb=9-16,19-21" "11_release_shift.ipynb=18" --out split.json
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import tempfile
import time
from pathlib import Path

import _common

GOAL_SECONDS = {"quick": 600}
#: the full profile's goal is per notebook: each within 60 minutes on 2 CPU cores
GOAL_PER_NOTEBOOK_SECONDS = {"full": 3600}
#: and the whole full series within 8 hours (raised from 6 for the converged attacks: issue 38)
GOAL_SERIES_SECONDS = {"full": 28800}


def _entries(manifest: dict) -> list[dict]:
    """The notebook entries of a run manifest (``notebooks``) or of a reference manifest (one ``notebook``)."""
    return manifest["notebooks"] if "notebooks" in manifest else [manifest["notebook"]]


def from_manifests(paths, profile: str) -> dict:
    """A report from existing run manifests: their notebooks and times, data, hardware and versions."""
    manifests = [json.loads(Path(p).read_text()) for p in paths]
    for path, m in zip(paths, manifests):
        status = m.get("status", m.get("notebook", {}).get("status"))
        if status != "ok" or m["profile"]["name"] != profile:
            raise SystemExit(f"{path}: status {status!r}, profile {m['profile']['name']!r}; record only "
                             f"finished runs of the {profile!r} profile.")
    if len({m["data"]["fingerprint"] for m in manifests}) > 1:
        raise SystemExit("The manifests come from different data (fingerprints differ); record them separately.")
    notebooks = {e["notebook"]: e["seconds"] for m in manifests for e in _entries(m)}
    return {"benchmark": "notebook times recorded from run manifests (not rerun)", "profile": profile,
            "data": manifests[0]["data"], "notebooks_seconds": round(sum(notebooks.values()), 1),
            "notebooks": notebooks, "runs": [{"manifest": str(p), "started": m.get("started"),
                                              "finished": m.get("finished", m.get("notebook", {}).get("finished"))}
                                             for p, m in zip(paths, manifests)],
            "goal_per_notebook_seconds": GOAL_PER_NOTEBOOK_SECONDS.get(profile),
            "over_goal": [n for n, t in notebooks.items() if t > GOAL_PER_NOTEBOOK_SECONDS.get(profile, float("inf"))],
            "hardware": manifests[0]["hardware"], "versions": manifests[0]["versions"]}


def alone_times(paths, reference: dict) -> dict:
    """``{notebook: {"seconds", "reference_seconds", "manifest", "started"}}`` from runs of reference notebooks made
    alone (:func:`from_manifests` checks them: finished, full profile); refuses runs on other data than the
    reference's."""
    runs = from_manifests(paths, "full")
    if runs["data"]["fingerprint"] != reference["data"]["fingerprint"]:
        raise SystemExit("The --alone runs used other data than the reference (fingerprints differ).")
    missing = [nb for nb in runs["notebooks"] if nb not in reference["notebooks"]]
    if missing:
        raise SystemExit(f"--alone runs of notebooks not in the reference: {missing}.")
    from octlib.config import project_root

    def shown(p) -> str:  # relative to the project, as the reference's manifests are
        p = Path(p).resolve()
        return str(p.relative_to(project_root())) if p.is_relative_to(project_root()) else str(p)

    out = {}
    for p in paths:
        m = json.loads(Path(p).read_text())
        parts = m.get("split_into") or {e["notebook"]: e["seconds"] for e in _entries(m)}
        for nb, t in parts.items():
            if nb not in reference["notebooks"] and not m.get("split_into"):
                raise SystemExit(f"--alone: {nb} (from {p}) is not in the reference.")
            # a part of a split notebook may not be in the reference yet: its time counts, its reference time is None
            out[nb] = {"seconds": t, "reference_seconds": reference["notebooks"].get(nb), "manifest": shown(p),
                       "started": m.get("started")}
            if m.get("split_into"):
                out[nb]["from_cells_of"] = m["split_from"]
    return out


MODEL_NAME = re.compile(r"cnn-[a-z0-9.-]+-[0-9a-f]{12}")


def _utc(stamp: str) -> _dt.datetime:
    """A manifest stamp (``20261201T102057Z``) or a sidecar's ISO time, as an aware UTC datetime."""
    if "-" not in stamp:
        return _dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=_dt.UTC)
    return _dt.datetime.fromisoformat(stamp).astimezone(_dt.UTC)


def cached_training(reference: Path, artifacts: Path, order: list[str]) -> tuple[dict, dict]:
    """Training a reference notebook found already done: ``{notebook: {model: train_seconds}}``, and the models
    whose sidecar is not in ``artifacts`` (``{model: notebook}``: their training, if any was skipped, is unknown).

    A model belongs to the first notebook of the series (``order``) whose results name it (that notebook trains it
    in a run from nothing); when its sidecar was written before that notebook's reference run started, the run
    loaded it from the artifact store and its manifest time leaves the training out. The sidecar's
    ``train_seconds`` (measured when it was trained, alone or not) is what a run from nothing would add.
    """
    owner: dict[str, str] = {}
    for nb in order:
        results = reference / "results" / f"{Path(nb).stem}.json"
        if results.exists():
            for name in sorted(set(MODEL_NAME.findall(results.read_text()))):
                owner.setdefault(name, nb)
    out: dict[str, dict] = {}
    unknown: dict[str, str] = {}
    for name, nb in owner.items():
        sidecar = artifacts / name / "model.json"
        if not sidecar.exists():
            unknown[name] = nb
            continue
        side = json.loads(sidecar.read_text())
        started = json.loads((reference / "manifests" / f"{Path(nb).stem}.json").read_text())["started"]
        if _utc(side["created"]) < _utc(started):
            out.setdefault(nb, {})[name] = side["training"]["train_seconds"]
    return out, unknown


def carry_cached(previous: dict, runs: list[dict], cached: dict, unknown: dict) -> tuple[dict, dict, list[str]]:
    """For a store that is not the one every reference notebook ran with (a later session's fresh machine): the
    cached training of each notebook whose manifest is the one ``previous`` (an earlier ``series-full.json``)
    recorded (same ``started``) is taken from that record, where it was read off the sidecars of its own store;
    the notebooks rerun since keep what this store's sidecars say. Returns ``(cached, unknown, carried)``."""
    before = {Path(r["manifest"]).stem: r["started"] for r in previous.get("runs", [])}
    same = {Path(r["manifest"]).stem + ".ipynb" for r in runs if before.get(Path(r["manifest"]).stem) == r["started"]}
    carried = sorted(same)
    cached = {nb: models for nb, models in cached.items() if nb not in same}
    cached.update({nb: models for nb, models in previous.get("cached_training_seconds", {}).items() if nb in same})
    unknown = {name: nb for name, nb in unknown.items() if nb not in same}
    return cached, unknown, carried


def split_run(executed: str, parts: list[str], manifest: str | None = None) -> dict:
    """The run manifest beside ``executed`` (or ``manifest``) with ``split_into``: per ``name=cells`` part (cell
    indices and ranges, e.g. ``9-16,19``) the seconds papermill recorded for those cells, for a notebook measured
    alone before it was split; every timed cell must belong to exactly one part."""
    nb = json.loads(Path(executed).read_text())
    seconds = {i: (c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0)
               for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"}
    split, used = {}, []
    for part in parts:
        name, _, spec = part.partition("=")
        cells = [i for r in spec.split(",") for a, _, b in [r.partition("-")] for i in range(int(a), int(b or a) + 1)]
        used += cells
        split[name] = round(sum(seconds.get(i, 0.0) for i in cells), 1)
    timed = {i for i, t in seconds.items() if t}
    if sorted(used) != sorted(set(used)) or not timed <= set(used):
        raise SystemExit(f"--split: every timed cell in exactly one part (timed: {sorted(timed)}, given: {used}).")
    m = json.loads(Path(manifest or Path(executed).parent / "manifest.json").read_text())
    entry = next(e for e in _entries(m) if e["notebook"] == Path(executed).name)
    return {**m, "split_from": entry["notebook"], "split_from_seconds": entry["seconds"],
            "split_into": split, "cells_seconds": round(sum(seconds.values()), 1)}


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--manifest", nargs="+", help="record these runs' manifest.json instead of running")
    parser.add_argument("--reference", action="store_true",
                        help="record the reference run's per-notebook manifests (figures/manifests/*.json)")
    parser.add_argument("--reference-root", help="with --reference: a reference assembled elsewhere (python -m octlib "
                                                 "run --reference --reference-root DIR) instead of figures/")
    parser.add_argument("--note", help="with --manifest: how the runs were made (e.g. what else shared the cores)")
    parser.add_argument("--previous", help="with --reference: an earlier series-full.json whose cached training is "
                        "kept for the notebooks not rerun since (their models' sidecars are in another store)")
    parser.add_argument("--alone", nargs="+", help="with --reference: manifests of reference notebooks re-measured "
                                                   "alone (fresh stores, nothing else on the cores)")
    parser.add_argument("--split-from", help="an executed notebook measured alone before a split (its run's "
                                             "manifest.json beside it): write its manifest with split_into")
    parser.add_argument("--split", nargs="+", help="with --split-from: name=cells for each part, e.g. "
                                                   "11_release_shift.ipynb=18")
    args = parser.parse_args()
    if args.split_from:
        report = split_run(args.split_from, args.split or [])
        out = Path(args.out) if args.out else None
        if out is None:
            raise SystemExit("--split-from needs --out (the file to keep beside the other alone manifests).")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"{report['split_from']} ({report['split_from_seconds']} s) -> {report['split_into']} -> {out}")
        return
    if args.reference:
        from octlib.config import artifacts_dir, reference_dir
        from octlib.runner import find_notebooks

        root = Path(args.reference_root).resolve() if args.reference_root else reference_dir()
        paths = sorted((root / "manifests").glob("*.json"))
        if not paths:
            raise SystemExit(f"No reference manifests in {root / 'manifests'}: run make reference first.")
        report = from_manifests(paths, "full")
        report["runs"] = [{**r, "manifest": str(Path(r["manifest"]).relative_to(root.parent))} for r in report["runs"]]
        report["missing"] = [b.name for b in find_notebooks() if b.name not in report["notebooks"]]
        cached, unknown = cached_training(root, artifacts_dir(), [b.name for b in find_notebooks()])
        if args.previous:
            cached, unknown, carried = carry_cached(json.loads(Path(args.previous).read_text()), report["runs"],
                                                    cached, unknown)
            report["cached_training_from"] = {"record": args.previous, "notebooks": carried}
        report["cached_training_seconds"] = cached
        if unknown:  # the store the reference ran with is not here: the from-nothing total is a lower bound
            report["training_unknown"] = unknown
            print(f"warning: no sidecar in {artifacts_dir()} for {sorted(unknown)}; from_nothing_seconds leaves "
                  f"their training out (set OCTLIB_ARTIFACTS to the store the reference ran with)")
        from_nothing = {nb: round(t + sum(cached.get(nb, {}).values()), 1) for nb, t in report["notebooks"].items()}
        report["from_nothing_seconds"] = from_nothing
        report["series_seconds_from_nothing"] = round(sum(from_nothing.values()), 1)
        report["over_goal_from_nothing"] = [n for n, t in from_nothing.items() if t > GOAL_PER_NOTEBOOK_SECONDS["full"]]
        report["goal_series_seconds"] = GOAL_SERIES_SECONDS["full"]
        report["series_goal_met"] = None if report["missing"] or unknown else (
            report["series_seconds_from_nothing"] <= GOAL_SERIES_SECONDS["full"])
        if args.alone:
            alone = alone_times(args.alone, report)
            report["alone"] = alone
            merged = {**report["notebooks"], **{nb: a["seconds"] for nb, a in alone.items()}}
            report["series_seconds_alone_where_measured"] = round(sum(merged.values()), 1)
            report["over_goal_alone_where_measured"] = [n for n, t in merged.items()
                                                        if t > GOAL_PER_NOTEBOOK_SECONDS["full"]]
        if args.note:
            report["note"] = args.note
        out = _common.write_report(report, "series-full", args.out)
        print(f"recorded {len(paths)} notebook(s), missing {report['missing']} -> {out}")
        return
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
