"""Execute the notebook series headlessly (``python -m octlib run``).

Notebooks ``notebooks/NN_*.ipynb`` run in number order through papermill with the chosen profile and data (passed
to each kernel as ``OCTLIB_PROFILE`` / ``OCTLIB_DATA``). Executed copies and a ``manifest.json`` (profile, data
source and fingerprint, library versions, hardware, GPU, time per notebook) go to ``runs/<timestamp>-<profile>/``,
and so do the run's figures and tables (``<run>/figures``), unless ``OCTLIB_FIGURES`` says otherwise.

The **reference run** (``reference=True``, ``make reference``) is the one way to write the committed ``figures/``:
full profile only; figures and tables to ``figures/``, results to ``figures/results/``, and one manifest per
notebook to ``figures/manifests/<notebook>.json`` as each notebook ends, so the reference can be assembled
notebook by notebook. The run stops at the first failing notebook and names it and the failing cell.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from .config import DATA_ENV, PROFILE_ENV, SPLIT_POLICY_ENV, get_profile, project_root, reference_dir
from .provenance import code_version, hardware, library_versions
from .series import NOTEBOOKS, check_folder

FIGURES_ENV = "OCTLIB_FIGURES"
RESULTS_ENV = "OCTLIB_RESULTS"


class NotebookFailed(RuntimeError):
    """A notebook of the series raised; the message names the notebook, the cell and the executed copy."""


def find_notebooks(only: list[str] | None = None, folder: Path | None = None) -> list[Path]:
    """The series in run order; ``only`` keeps notebooks whose name starts with, or matches, any pattern. The
    project's own folder must hold exactly the notebooks of :data:`octlib.series.NOTEBOOKS` (a clear error names
    each difference); another ``folder`` runs whatever ``NN_*.ipynb`` it holds."""
    if folder is None:
        folder = project_root() / "notebooks"
        check_folder(folder)
        books = [folder / f"{name}.ipynb" for name in NOTEBOOKS]
    else:
        books = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        books = [b for b in books if any(b.name.startswith(o) or fnmatch.fnmatch(b.name, o) for o in only)]
    if not books:
        raise FileNotFoundError(f"No notebooks matching {only or 'NN_*.ipynb'} in {folder}.")
    return books


def nvidia_gpus() -> list[str]:
    """GPU names from ``nvidia-smi`` (empty without an NVIDIA GPU)."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def _rel(path: Path) -> str:
    """``path`` relative to the project root when it lies inside it (committed manifests name no machine)."""
    try:
        return str(Path(path).resolve().relative_to(project_root()))
    except ValueError:
        return str(path)


def _write_manifest(path: Path, manifest: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)


def output_folders(out: Path, *, reference: bool = False, reference_root: Path | None = None) -> dict[str, Path]:
    """Where a run's kernels write: ``{"OCTLIB_FIGURES": ..., ["OCTLIB_RESULTS": ...]}``.

    A reference run writes figures and tables to the committed ``figures/`` and results to ``figures/results``;
    any other run writes figures to ``OCTLIB_FIGURES`` when the user set it, else to ``<out>/figures``, and keeps
    the results store the user chose (``OCTLIB_RESULTS``, else ``results/``). Every path is absolute: the kernels
    run in ``notebooks/``, where a relative one would name another folder."""
    if reference:
        root = Path(reference_root).expanduser().resolve() if reference_root else reference_dir()
        return {FIGURES_ENV: root, RESULTS_ENV: root / "results"}
    chosen = os.environ.get(FIGURES_ENV)
    return {FIGURES_ENV: Path(chosen).expanduser().resolve() if chosen else Path(out).resolve() / "figures"}


#: TensorFlow's C++ INFO lines (CPU features) hidden in quiet runs; its warnings and errors still show.
QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "1"}


def quiet(verbose: bool = False) -> None:
    """Unless ``verbose``, set :data:`QUIET_ENV` for this process and the kernels it starts (a value the user set is
    kept)."""
    if not verbose:
        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)


def _kernel_manager(log_path: Path | None):
    """The kernel manager a notebook runs under: Jupyter's own, with the kernel process's stdout and stderr sent to
    ``log_path`` when it is given (a quiet run). A kernel copies what is written to its file descriptors (TensorFlow's
    start-up lines, its own warnings, the KeyboardInterrupt of its shutdown) to the terminal that started it, on top
    of the notebook's outputs; in a quiet run that goes to the log beside the executed notebook instead."""
    from jupyter_client.manager import AsyncKernelManager, KernelManager

    if log_path is None:
        return AsyncKernelManager

    class LoggedKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            with open(log_path, "ab") as handle:  # the kernel keeps its own copy of the descriptor
                kw.setdefault("stdout", handle)
                kw.setdefault("stderr", handle)
                return await KernelManager._async_start_kernel(self, **kw)

    return LoggedKernelManager


def run_series(profile: str | None = None, data: str | None = None, *, only: list[str] | None = None,
               out_dir: Path | str | None = None, kernel: str = "python3", progress: bool = True,
               split_policy: str | None = None, reference: bool = False, notebooks_dir: Path | None = None,
               reference_root: Path | None = None, verbose: bool = False) -> dict:
    """Execute the series; returns the manifest (also written to ``<out_dir>/manifest.json``). ``split_policy``
    (else ``OCTLIB_SPLIT_POLICY``, else the profile's) is passed to every notebook through the environment.

    ``reference=True`` is the reference run (full profile only): it writes the committed ``figures/`` (or
    ``reference_root``), the results beside them and one manifest per notebook in ``<reference>/manifests``.
    ``notebooks_dir`` runs another folder's ``NN_*.ipynb`` (tests). Unless ``verbose``, what each kernel process
    writes to its terminal goes to ``<out_dir>/<notebook>.kernel.log`` (:func:`_kernel_manager`) and TensorFlow's
    INFO lines are off (:func:`quiet`): the run shows each notebook, its time and where its outputs went."""
    quiet(verbose)
    import papermill as pm

    from .data import load_dataset, resolve_source

    prof = get_profile(profile, split_policy=split_policy)
    if reference and prof.name != "full":
        raise ValueError(f"A reference run writes the committed figures/ and runs the full profile only; got "
                         f"profile {prof.name!r}. Use `python -m octlib run --reference --profile full` (make "
                         "reference), or drop --reference to write this run's figures into its own run folder.")
    source = resolve_source(data, prof)
    # Load once before any kernel starts: a wrong setting or a failed download stops here with its message, the
    # OCTMNIST download (with its progress bar) happens once, and every notebook then reads the cache.
    ds = load_dataset(data, prof, progress=progress)
    os.environ[PROFILE_ENV] = prof.name
    os.environ[SPLIT_POLICY_ENV] = prof.split_policy
    os.environ.setdefault("OCTLIB_HEADLESS", "1")  # no one watches: interactive cells draw static figures
    if data is not None:
        os.environ[DATA_ENV] = str(source.path or source.spec)
    books = find_notebooks(only, notebooks_dir)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    default_out = "reference" if reference else f"{stamp}-{prof.name}"
    out = Path(out_dir).expanduser().resolve() if out_dir else project_root() / "runs" / default_out
    out.mkdir(parents=True, exist_ok=True)
    folders = output_folders(out, reference=reference, reference_root=reference_root)
    for env, folder in folders.items():
        os.environ[env] = str(folder)
    manifests = folders[FIGURES_ENV] / "manifests" if reference else None
    print(f"Figures and tables go to {folders[FIGURES_ENV]}" + (" (the committed reference)" if reference else ""),
          flush=True)
    manifest = {
        "started": stamp, "profile": prof.to_dict(), "reference": reference,
        "outputs": {k: _rel(v) for k, v in folders.items()},
        "data": {"spec": source.spec, "kind": source.kind, "origin": source.origin,
                 "path": str(source.path) if source.path else None, "fingerprint": ds.info.get("fingerprint"),
                 "n_images": len(ds)},
        "versions": library_versions(), "hardware": {**hardware(), "nvidia_gpus": nvidia_gpus()},
        "code": code_version(), "notebooks": [], "status": "running",
    }
    t_all = time.perf_counter()
    for i, book in enumerate(books, 1):
        target = out / book.name
        print(f"[{i}/{len(books)}] {book.name} (profile {prof.name}, {prof.split_policy} split, data "
              f"{source.describe()})", flush=True)
        t0 = time.perf_counter()
        # the code each notebook ran: a run can outlast a commit, and every notebook imports octlib afresh
        entry = {"notebook": book.name, "executed": str(target), "code": code_version()}
        try:
            log = None if verbose else target.with_suffix(".kernel.log")
            if log is not None:
                log.unlink(missing_ok=True)
            # the kernel is stopped once the last cell ran and the notebook is written ("immediate"): a graceful
            # shutdown waits ~1.3 s per notebook for a TensorFlow process to exit (benchmarks/README.md)
            pm.execute_notebook(str(book), str(target), kernel_name=kernel, cwd=str(book.parent),
                                progress_bar=progress, log_output=False, kernel_manager_class=_kernel_manager(log),
                                shutdown_kernel="immediate")
        except pm.PapermillExecutionError as exc:
            entry.update(status="failed", seconds=round(time.perf_counter() - t0, 1), cell=exc.exec_count,
                         error=f"{exc.ename}: {exc.evalue}")
            manifest["notebooks"].append(entry)
            manifest.update(status="failed", total_seconds=round(time.perf_counter() - t_all, 1))
            _write_manifest(out / "manifest.json", manifest)
            kernel_log = f"; what its kernel wrote to the terminal: {log}" if log is not None else ""
            raise NotebookFailed(f"{book.name} failed in cell [{exc.exec_count}]: {exc.ename}: {exc.evalue}\n"
                                 f"Executed copy with the traceback: {target}{kernel_log}") from None
        entry.update(status="ok", seconds=round(time.perf_counter() - t0, 1),
                     finished=_dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
        manifest["notebooks"].append(entry)
        if manifests is not None:  # the reference keeps one manifest per notebook, written as it ends
            manifests.mkdir(parents=True, exist_ok=True)
            one = {k: v for k, v in manifest.items() if k not in ("notebooks", "status")}
            _write_manifest(manifests / f"{book.stem}.json",
                            {**one, "code": entry["code"], "notebook": {**entry, "executed": _rel(target)}})
        print(f"    done in {entry['seconds']} s", flush=True)
    manifest.update(status="ok", total_seconds=round(time.perf_counter() - t_all, 1),
                    finished=_dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
    _write_manifest(out / "manifest.json", manifest)
    print(f"All {len(books)} notebooks ran in {manifest['total_seconds']} s; executed copies and manifest in {out}")
    return manifest
