"""Do two runs' results stores hold the same numbers? A recursive comparison of every results JSON (two folders
of ``<experiment>.json``, e.g. the quick series before and after a refactoring that must change no number), run
times, dates, machine and library descriptions and paths aside. Writes JSON (``--out``) with, per experiment,
``equal`` and the differing paths (at most 20 each, with both values), and prints a summary; exits 1 when any
experiment differs or is missing on one side.

    python benchmarks/compare_results.py A/results B/results --out benchmarks/results/refactor-quick-equal.json
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import _common

#: keys whose values describe the run, not its numbers
IGNORED = {"created", "runtime_s", "seconds", "hardware", "versions", "code", "commit", "git", "python",
           "seconds_by_attack", "started", "finished", "path", "paths", "figures_dir", "results_dir", "octlib",
           "library_versions", "platform"}


def ignored(key: str) -> bool:
    """Run times in any of the spellings the results use (``runtime_s``, ``runtime_s_mean``, ``ms_per_image``,
    ``first call (s)``, ``timing`` ...), dates, machines, versions, paths."""
    k = key.lower()
    return (k in IGNORED or k.endswith(("_s", "_seconds", "_s_mean", "_s_sd", "(s)")) or k.startswith("ms_per_")
            or "timing" in k)


def diff(a, b, path: str = "", out: list | None = None, rel: float = 0.0) -> list:
    """Paths where ``a`` and ``b`` differ (floats equal when both NaN, or within relative ``rel``)."""
    out = [] if out is None else out
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if ignored(str(k)):
                continue
            if k not in a or k not in b:
                out.append((f"{path}/{k}", a.get(k, "<missing>"), b.get(k, "<missing>")))
            else:
                diff(a[k], b[k], f"{path}/{k}", out, rel)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append((f"{path}[len]", len(a), len(b)))
        for i, (x, y) in enumerate(zip(a, b)):
            diff(x, y, f"{path}[{i}]", out, rel)
    elif isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        pass
    elif (isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool)
          and rel > 0 and math.isclose(a, b, rel_tol=rel, abs_tol=0.0)):
        pass
    elif a != b:
        out.append((path, a, b))
    return out


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--rel", type=float, default=0.0,
                        help="numbers within this relative difference count as equal (default 0: exact)")
    args = parser.parse_args()
    a, b = Path(args.a), Path(args.b)
    names = sorted({p.stem for p in a.glob("*.json")} | {p.stem for p in b.glob("*.json")})
    report = {"a": str(a), "b": str(b), "rel": args.rel, "experiments": {}}
    for name in names:
        pa, pb = a / f"{name}.json", b / f"{name}.json"
        if not (pa.is_file() and pb.is_file()):
            report["experiments"][name] = {"equal": False, "missing": "a" if not pa.is_file() else "b"}
            continue
        found = diff(json.loads(pa.read_text()), json.loads(pb.read_text()), rel=args.rel)
        report["experiments"][name] = {"equal": not found, "differences": len(found),
                                       "first": [{"path": p, "a": x, "b": y} for p, x, y in found[:20]]}
    report["all_equal"] = all(e["equal"] for e in report["experiments"].values())
    for name, e in report["experiments"].items():
        print(f"{name}: {'equal' if e['equal'] else 'DIFFERS: ' + str(e.get('differences', e.get('missing')))}")
    if args.out:
        print(f"wrote {_common.write_report(report, 'compare', args.out)}")
    sys.exit(0 if report["all_equal"] else 1)


if __name__ == "__main__":
    main()
