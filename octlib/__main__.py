"""Command line: ``python -m octlib run`` executes the notebook series; ``python -m octlib report`` builds one HTML
report from a run's results and figures; ``python -m octlib adopt-victim`` stamps the cached victim's weights digest
into older results it reproduces; ``python -m octlib data`` summarises data; ``python -m octlib models export`` and
``import`` move trained models between machines with their SHA-256; ``python -m octlib colab --repo owner/name``
points the Colab badges and install cells at a fork.

A bad setting or bad data (a missing folder, an unknown profile, a results file from another study ...) is printed
as its message, without a Python traceback, and the command exits with code 2; ``--debug`` shows the traceback.
A notebook that fails exits with code 1, naming the executed copy that holds its traceback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: Exit code of a bad setting or bad data (argparse uses 2 for bad arguments too).
USAGE_ERROR = 2


def _user_errors() -> tuple[type[BaseException], ...]:
    """What a user's setting or data can cause, as opposed to a bug: shown as a message, not a traceback."""
    from .artifacts import ArtifactError

    # OCTDataError and ResultsError are ValueErrors; a missing path is a FileNotFoundError (an OSError)
    return (ValueError, OSError, ArtifactError)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m octlib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute the notebooks in order, headlessly")
    run.add_argument("--profile", choices=["quick", "full"], help="default: OCTLIB_PROFILE, else quick")
    run.add_argument("--data", help="OCT2017 folder or octmnist[-64|-128|-224]; default: OCTLIB_DATA, else "
                                    "the OCTMNIST download")
    run.add_argument("--only", nargs="*", help="notebook name prefixes or patterns, e.g. 00 10")
    run.add_argument("--out", help="folder for executed copies and manifest.json (default runs/<time>-<profile>)")
    run.add_argument("--no-progress", action="store_true", help="hide per-cell progress bars")
    run.add_argument("--verbose", action="store_true",
                     help="show TensorFlow's start-up lines and the kernels' own log lines (hidden by default)")
    run.add_argument("--split-policy", choices=["official", "pooled"],
                     help="the victim's split policy; default: OCTLIB_SPLIT_POLICY, else the profile's (official)")
    run.add_argument("--reference", action="store_true",
                     help="the reference run (full profile only): write the committed figures/, their results and "
                          "one manifest per notebook (make reference); without it figures go to the run folder")
    run.add_argument("--reference-root", metavar="DIR",
                     help="with --reference: assemble the reference in DIR instead of the committed figures/ (a new "
                          "reference on a new victim, notebook by notebook, beside the committed one; replace "
                          "figures/ with DIR once every notebook, 90 last, has run there)")
    rep = sub.add_parser("report", help="build one self-contained HTML report from a run's results and figures")
    rep.add_argument("--figures", help="the run's figures folder (default: the committed reference, figures/)")
    rep.add_argument("--out", help="the HTML file (default: <figures>/report.html)")
    rep.add_argument("--eps", type=float, default=2.0, help="ε (/255) of the headline table (default 2)")
    rep.add_argument("--pdf", action="store_true", help="also print it to PDF with headless Chromium")
    images = sub.add_parser("images", help="rebuild docs/images' pictures of the reference (the report's screenshot, "
                                           "the explorer's static view) and docs/images/images.json")
    images.add_argument("--figures", help="the reference's folder (default: figures/)")
    images.add_argument("--out", help="where the pictures go (default: docs/images)")
    adopt = sub.add_parser("adopt-victim", help="stamp the cached victim's weights digest into older results made "
                                                "with the same weights (checked on notebook 20's scans)")
    adopt.add_argument("--profile", choices=["quick", "full"], help="default: OCTLIB_PROFILE, else quick")
    adopt.add_argument("--data", help="default: OCTLIB_DATA, else the OCTMNIST download")
    adopt.add_argument("--split-policy", choices=["official", "pooled"])
    adopt.add_argument("--results", help="results store (default: the committed reference's, figures/results)")
    models = sub.add_parser("models", help="export the trained models to one .tar.gz with their SHA-256, or import "
                                           "such a bundle (a path or URL) so that notebooks attack those models")
    msub = models.add_subparsers(dest="action", required=True)
    exp = msub.add_parser("export", help="pack trained models into OUT (.tar.gz) and write OUT.sha256")
    exp.add_argument("out", help="the bundle to write, e.g. octlib-models.tar.gz")
    exp.add_argument("--name", action="append", help="an artifact folder name (repeatable; default: every model)")
    imp = msub.add_parser("import", help="check a bundle and install its models into the model store")
    imp.add_argument("source", help="the bundle: a path or an http(s):// URL")
    imp.add_argument("--sha256", help="the bundle's published SHA-256 (required for a URL)")
    colab = sub.add_parser("colab", help="point pyproject.toml, every Colab badge and every install cell at another "
                                         "GitHub repository (a fork)")
    colab.add_argument("--repo", required=True, help="owner/name on GitHub")
    info = sub.add_parser("data", help="load the data, split it by patient and print the summary")
    info.add_argument("--profile", choices=["quick", "full"])
    info.add_argument("--data")
    info.add_argument("--policy", choices=["official", "pooled"])
    args = parser.parse_args(argv)
    try:
        return _dispatch(args)
    except _user_errors() as exc:
        if args.debug:
            raise
        message = str(exc) or type(exc).__name__
        print(f"error: {message}\n(run with --debug for the traceback)", file=sys.stderr)
        return USAGE_ERROR


def _dispatch(args) -> int:
    if args.command == "run":
        from .runner import NotebookFailed, quiet, run_series

        quiet(args.verbose)  # before anything imports TensorFlow
        if args.reference_root and not args.reference:
            raise ValueError(f"--reference-root {args.reference_root} assembles a reference run: add --reference "
                             "(and --profile full), or drop --reference-root to write this run's figures into its "
                             "own run folder.")
        try:
            run_series(args.profile, args.data, only=args.only, out_dir=args.out, progress=not args.no_progress,
                       split_policy=args.split_policy, reference=args.reference, verbose=args.verbose,
                       reference_root=Path(args.reference_root) if args.reference_root else None)
        except NotebookFailed as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.command == "report":
        from .report import build_report

        out = build_report(args.out, figures=args.figures, eps_255=args.eps, pdf=args.pdf)
        print(f"wrote {out}" + (f" and {out.with_suffix('.pdf')}" if args.pdf else ""))
        return 0
    if args.command == "images":
        from .report import doc_images

        meta = doc_images(args.figures, args.out)
        print(f"rebuilt {', '.join(meta['images'])} of the reference showing {', '.join(meta['victims'])}")
        return 0
    if args.command == "adopt-victim":
        from .artifacts import load_victim
        from .config import get_profile, reference_dir
        from .evaluation import evaluation_scans
        from .records import adopt_victim_weights

        profile = get_profile(args.profile, split_policy=args.split_policy)
        splits, victim = load_victim(args.data, profile, retrain="never")
        scans = evaluation_scans(splits, profile.suite, seed=0)
        results = args.results or reference_dir() / "results"
        updated = adopt_victim_weights(victim, scans.x, scans.ids, results_dir=results)
        print(f"{victim.path.name} (weights {victim.sidecar['weights_sha256'][:12]}) reproduces the recorded answers "
              f"and losses; stamped {len(updated)} results in {results}: {', '.join(updated) or 'none needed'}")
        return 0
    if args.command == "colab":
        from .colab import set_repository

        changed = set_repository(args.repo)
        print(f"{len(changed)} files now point at github.com/{args.repo}" if changed else
              f"everything already points at github.com/{args.repo}")
        return 0
    if args.command == "models":
        from .artifacts import artifacts_dir, export_models, import_models

        if args.action == "export":
            out, digest = export_models(args.out, args.name)
            print(f"wrote {out} (SHA-256 {digest}; also in {out.name}.sha256)")
        else:
            names = import_models(args.source, args.sha256, progress=True)
            print(f"installed {len(names)} models into {artifacts_dir()}: {', '.join(names) or 'none new'}")
        return 0
    from .data import load_splits

    splits = load_splits(args.data, args.profile, policy=args.policy)
    print(splits.summary().to_string())
    print("leakage check:", splits.info["leakage"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
