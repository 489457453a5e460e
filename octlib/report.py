"""One self-contained HTML report of a run, built from its results store, figures and manifests, without rerunning
anything: ``python -m octlib report`` (the committed reference by default).

It holds the run's provenance (profile, data fingerprint, victim, hardware, code version, time per notebook from
the manifests), the headline table and paired tests of notebook 90 and its reading, then one section per notebook:
its title and threat model (from the notebook's own opening markdown), its settings and runtime (from its results
file) and its figures (PNG, embedded) and exported tables. What is missing (a result, a manifest, a figure-less
notebook) is listed at the top, never skipped silently. The page marks its own images: after loading, the
``<body>`` carries ``data-images`` and ``data-broken-images`` (what the browser test reads). A PDF is the same page
printed by headless Chromium (``--pdf``).
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import re
import shutil
import subprocess
from pathlib import Path

from .config import project_root, reference_dir
from .threat import to_unit

_NUMBER = re.compile(r"^(\d\d)_")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def _md(text: str) -> str:
    import mistune

    return mistune.html(text or "")


def _notebook_intro(path: Path) -> dict:
    """Title, summary (the opening markdown without the badge and the title) and threat model of a notebook."""
    import nbformat

    book = nbformat.read(path, as_version=4)
    first = next((c.source for c in book.cells if c.cell_type == "markdown"), "")
    lines = first.splitlines()
    title = next((ln.lstrip("# ").strip() for ln in lines if ln.startswith("# ")), path.stem)
    body = "\n".join(ln for ln in lines if not ln.startswith("# ") and "colab-badge" not in ln).strip()
    threat = re.search(r"\*\*Threat model\.?\*\*(.+?)(?:\n\n|$)", body, flags=re.S)
    return {"title": title, "summary_html": _md(body), "threat": threat.group(1).strip() if threat else None}


#: The width (pixels) of the figure copies the report embeds: a screen's, not the 300-dpi files' (linked beside).
SCREEN_WIDTH = 1000


def _image(path: Path, width: int = SCREEN_WIDTH) -> str:
    """A figure embedded at most ``width`` pixels wide, as PNG or, where it is smaller (scans: photographs more than
    line art), as JPEG at quality 90; the 300-dpi files are linked beside it, not embedded."""
    import io

    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        if img.width > width:
            img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
        encoded = {}
        for fmt, kw in (("png", {"optimize": True}), ("jpeg", {"quality": 90, "optimize": True})):
            buf = io.BytesIO()
            img.save(buf, format=fmt.upper(), **kw)
            encoded[fmt] = buf.getvalue()
    fmt = min(encoded, key=lambda f: len(encoded[f]))
    return f"data:image/{fmt};base64," + base64.b64encode(encoded[fmt]).decode()


def _link(path: Path, base: Path | None) -> str | None:
    """``path`` relative to the report's folder ``base`` (what the report links), ``None`` if it does not exist."""
    import os

    if not path.is_file():
        return None
    return Path(os.path.relpath(path.resolve(), (base or path.parent).resolve())).as_posix()


def _table_html(path: Path) -> str:
    import pandas as pd

    frame = pd.read_csv(path)
    return frame.to_html(index=False, na_rep="–", float_format=lambda v: f"{v:.3f}", classes="table", border=0)


def _settings_text(record: dict) -> str:
    return json.dumps(record.get("settings") or {}, indent=1, sort_keys=True)


def collect(figures: Path | None = None, *, results: Path | None = None, notebooks: Path | None = None,
            eps_255: float = 2.0, link_from: Path | None = None) -> dict:
    """Everything the report shows, as plain data (what the template renders; tests read it too). Figures are
    embedded at screen width; ``link_from`` is the report's folder, from which their 300-dpi PNG and PDF are
    linked (default: the figures folder)."""
    import pandas as pd

    from . import compare, records
    from .results import list_results, load_results

    figures = Path(figures) if figures else reference_dir()
    link_from = Path(link_from) if link_from else figures
    results = Path(results) if results else figures / "results"
    notebooks = Path(notebooks) if notebooks else project_root() / "notebooks"
    manifests_dir = figures / "manifests"
    if not figures.is_dir():
        raise FileNotFoundError(f"No figures folder {figures}: run `make reference` (or `python -m octlib run`) "
                                "first, or pass --figures <run folder>/figures.")
    missing: list[str] = []
    study, absent = compare.load_study(results)
    missing += [f"result {name} (run {nb})" for name, nb in absent]
    all_results = {name: load_results(name, results) for name in list_results(results)}

    manifests = {}
    for path in sorted(manifests_dir.glob("*.json")) if manifests_dir.is_dir() else []:
        manifests[path.stem] = json.loads(path.read_text())
    books = sorted(notebooks.glob("[0-9][0-9]_*.ipynb")) if notebooks.is_dir() else []
    if not books:
        missing.append(f"notebooks (no {notebooks}/NN_*.ipynb: the per-notebook summaries are left out)")

    runs = []
    for stem, m in manifests.items():
        nb, code = m.get("notebook", {}), m.get("code", {})
        runs.append({"notebook": nb.get("notebook", stem), "status": nb.get("status"), "seconds": nb.get("seconds"),
                     "finished": nb.get("finished"), "profile": (m.get("profile") or {}).get("name"),
                     "split policy": (m.get("profile") or {}).get("split_policy"),
                     "data": ((m.get("data") or {}).get("fingerprint") or "")[:12],
                     "commit": f"{code.get('commit', '')[:10]}{' (dirty)' if code.get('dirty') else ''}",
                     "cores": (m.get("hardware") or {}).get("cpu_count"),
                     "gpus": ", ".join((m.get("hardware") or {}).get("gpus") or []) or "none"})
    hardware = next(iter(manifests.values()), {}).get("hardware", {}) if manifests else {}
    data = dict(next(iter(manifests.values()), {}).get("data", {}) if manifests else {})
    # the data by its name and fingerprint: a folder's path is the machine's that ran it, not the reader's
    data["name"] = _shown_path(data.get("spec") or data.get("path"))
    victims = sorted({v for v in (compare._victim(r) for r in study.values()) if v})

    frame = records.read_records(results) if study else pd.DataFrame()
    headline = tests = None
    reading = ""
    if len(frame):
        frame, _ = compare.split_clinical(frame)
        table = compare.headline_table(frame, eps_255)
        if len(table):
            headline = compare.narrow(table).to_html(index=False, na_rep="–", float_format=lambda v: f"{v:.3f}",
                                                     classes="table headline", border=0)
            tests = compare.paired_tests(frame, eps_255).to_html(index=False, float_format=lambda v: f"{v:.3g}",
                                                                 classes="table", border=0)
        reading = compare.reading(frame, eps_255)
    if headline is None:
        missing.append(f"headline table at {eps_255:g}/255 (no evaluation records: run notebooks 20 and 40-45)")

    sections = []
    for book in books:
        stem, number = book.stem, _NUMBER.match(book.stem).group(1)
        intro = _notebook_intro(book)
        record = all_results.get(stem) or next((r for n, r in all_results.items() if n.startswith(number + "_")),
                                               None)
        figs = sorted(figures.glob(f"{number}_*.png"))
        tables = sorted(figures.glob(f"{number}_*.csv"))
        manifest = manifests.get(stem)
        if manifest is None:
            missing.append(f"manifest of {book.name} (not in this run)")
        if record is None and stem in compare.PRODUCERS:
            pass  # already listed as a missing result
        sections.append({
            "id": stem, "number": number, "title": intro["title"], "summary_html": intro["summary_html"],
            "threat": intro["threat"], "settings": _settings_text(record) if record else None,
            "runtime_s": (manifest or {}).get("notebook", {}).get("seconds"),
            "status": (manifest or {}).get("notebook", {}).get("status"),
            "figures": [{"name": p.stem, "src": _image(p), "png": _link(p, link_from),
                         "pdf": _link(p.with_suffix(".pdf"), link_from)} for p in figs],
            "tables": [{"name": p.stem, "html": _table_html(p)} for p in tables],
        })
    total = sum(r["seconds"] or 0 for r in runs)
    return {
        "title": "OCT adversarial-robustness study: report",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "figures_dir": _shown_path(figures), "eps_255": eps_255, "eps": to_unit(eps_255),
        "profiles": compare.profiles(study) if study else "none", "victims": victims, "data": data,
        "hardware": hardware, "runs": runs, "total_seconds": total,
        "missing": missing, "headline": headline, "tests": tests, "reading_html": _md(reading),
        "sections": sections,
    }


def render(context: dict) -> str:
    """The report's HTML from :func:`collect`'s context (Jinja2, autoescaped; HTML fragments marked safe)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("octlib", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
                             lstrip_blocks=True)
    return env.get_template("report.html.j2").render(**context)


def chromium() -> str | None:
    """The headless browser used for the PDF and the browser test: ``chromium`` (Debian) or a Chrome on PATH."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def print_pdf(html: Path, pdf: Path, *, timeout: float = 180) -> Path:
    """Print ``html`` to ``pdf`` with headless Chromium."""
    import tempfile

    browser = chromium()
    if browser is None:
        raise FileNotFoundError("No Chromium for --pdf: install it (Debian/Ubuntu: `apt-get install chromium`) or "
                                "print the HTML report from any browser.")
    with tempfile.TemporaryDirectory(prefix="octlib-chromium-") as profile:
        subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--no-pdf-header-footer",
                        f"--print-to-pdf={pdf}", Path(html).resolve().as_uri()], check=True, capture_output=True,
                       timeout=timeout)
    if not Path(pdf).is_file():
        raise RuntimeError(f"Chromium did not write {pdf}.")
    return Path(pdf)


def _shown_path(path) -> str:
    """A path as the report shows it: relative to the project when inside it, else its last folder's name (an
    absolute path names the machine that built the report, not anything a reader has); a spec such as
    ``octmnist-64`` as it is."""
    if not path:
        return "?"
    p = Path(str(path))
    if not p.is_absolute():
        return str(p)
    try:
        return str(p.resolve().relative_to(project_root().resolve()))
    except ValueError:
        return p.name


def build_report(out: Path | str | None = None, *, figures: Path | str | None = None, results=None, notebooks=None,
                 eps_255: float = 2.0, pdf: bool = False) -> Path:
    """Write the report (default ``<figures>/report.html``) and, with ``pdf``, its PDF beside it."""
    folder = Path(figures) if figures else reference_dir()
    out = Path(out) if out else folder / "report.html"
    context = collect(folder, results=results, notebooks=notebooks, eps_255=eps_255, link_from=out.parent)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(context), encoding="utf-8")
    if pdf:
        print_pdf(out, out.with_suffix(".pdf"))
    return out


def screenshot(html: Path, png: Path, *, width: int = 1280, height: int = 1800, timeout: float = 180) -> Path:
    """A PNG of ``html`` as headless Chromium draws it (``width`` × ``height`` pixels)."""
    import tempfile

    browser = chromium()
    if browser is None:
        raise FileNotFoundError("No Chromium for the screenshot: install it (Debian/Ubuntu: `apt-get install "
                                "chromium`).")
    png = Path(png).resolve()
    with tempfile.TemporaryDirectory(prefix="octlib-chromium-") as profile:
        subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                        "--virtual-time-budget=15000", f"--screenshot={png}", Path(html).resolve().as_uri()],
                       check=True, capture_output=True, timeout=timeout)
    if not png.is_file():
        raise RuntimeError(f"Chromium did not write {png}.")
    return png


#: The pictures of the documentation that come from the committed reference, and what each is made from.
DOC_IMAGES = {"report.png": "the report of the reference (python -m octlib report), drawn by headless Chromium",
              "explorer-static.png": "the explorer's static view from the reference run (61_explorer_static.png)"}


def doc_images(figures: Path | str | None = None, out: Path | str | None = None) -> dict:
    """Rebuild the documentation's pictures of the reference (:data:`DOC_IMAGES`) from ``figures`` (default: the
    committed ``figures/``) into ``out`` (default ``docs/images``), and write ``images.json`` beside them: which
    reference they show (its victims, profile and data fingerprint, from its results) and the SHA-256 of each
    picture and of the figures it was made from, so that a test can tell when they no longer show the reference.
    (``explorer-live.png`` needs JupyterLab: ``docs/screenshot_explorer.py``.) Returns the ``images.json``
    content."""
    import hashlib
    import json
    import tempfile

    figures = Path(figures) if figures else reference_dir()
    out = Path(out) if out else project_root() / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    static = figures / "61_explorer_static.png"
    if not static.is_file():
        raise FileNotFoundError(f"{static} is missing: run notebook 61 into the reference first.")
    shutil.copyfile(static, out / "explorer-static.png")
    with tempfile.TemporaryDirectory(prefix="octlib-images-") as tmp:
        html = build_report(Path(tmp) / "report.html", figures=figures)
        screenshot(html, out / "report.png")
    context = collect(figures)
    digest = lambda p: hashlib.sha256(Path(p).read_bytes()).hexdigest()  # noqa: E731
    meta = {"reference": _shown_path(figures), "victims": sorted(reference_victims(figures)),
            "profiles": sorted({str(r["profile"]) for r in context["runs"]}),
            "images": {name: {"what": what, "sha256": digest(out / name)} for name, what in DOC_IMAGES.items()},
            "sources": {"61_explorer_static.png": digest(static)}}
    (out / "images.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def reference_victims(figures: Path | str | None = None) -> set:
    """The victim names the reference's results record (``metrics.victim`` or a record's ``victim``)."""
    import json

    folder = (Path(figures) if figures else reference_dir()) / "results"
    found = set()
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        metrics = record.get("metrics") or {}
        found |= {v for v in (metrics.get("victim"), record.get("victim")) if isinstance(v, str)}
    return found


def export_notebook(executed: Path | str, out: Path | str | None = None) -> Path:
    """A static HTML export of an executed notebook that opens offline: nbconvert's ``lab`` template with local
    images embedded, without the CDN scripts it would otherwise load (RequireJS, MathJax, the widget manager) and
    without the widgets' saved state (progress bars), which a static page cannot show. Remote images (the Colab
    badge) stay links to the web."""
    import nbformat
    from nbconvert import HTMLExporter

    executed = Path(executed)
    book = nbformat.read(executed, as_version=4)
    book.metadata.pop("widgets", None)
    for cell in book.cells:
        for output in cell.get("outputs", []):
            if "data" in output:
                output["data"].pop("application/vnd.jupyter.widget-view+json", None)
    exporter = HTMLExporter(template_name="lab", embed_images=True, mathjax_url="", require_js_url="",
                            widget_renderer_url="")
    body, _ = exporter.from_notebook_node(book, resources={"metadata": {"path": str(executed.parent)}})
    out = Path(out) if out else executed.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out
