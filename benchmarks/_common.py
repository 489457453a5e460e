"""What the benchmark scripts share: their command line (``--data``, ``--profile``, ``--out``) and writing the
JSON report with the hardware, library versions and time it was made. Imported by the scripts in this folder
(``python benchmarks/bench_*.py`` puts the folder on the import path)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes; scripts add their own."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("OCTLIB_DATA"),
                   help="OCT2017-layout folder or octmnist[-N] (default: OCTLIB_DATA)")
    p.add_argument("--profile", default="quick")
    p.add_argument("--out", help="JSON path (default: benchmarks/results/<benchmark>-<profile>.json)")
    return p


def write_report(report: dict, name: str, out: str | Path | None = None) -> Path:
    """Write ``report`` as JSON to ``out`` (default ``benchmarks/results/<name>.json``), adding ``hardware``,
    ``versions`` and ``created`` (UTC) unless the report already has them. Returns the path."""
    from octlib.provenance import hardware, library_versions

    report = dict(report)
    report.setdefault("hardware", hardware())
    report.setdefault("versions", library_versions())
    report.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
