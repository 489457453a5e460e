"""`python -m octlib report`: one self-contained HTML file from the committed reference, checked in headless
Chromium (the headline table is there, every image loaded) with a screenshot; the same for a static HTML export
of one executed notebook."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from octlib import report
from octlib.compare import PRODUCERS

REPO = Path(__file__).resolve().parents[1]


def browser_or_skip():
    browser = report.chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium: .ci/run installs it (apt-get install chromium)")
        pytest.skip("no Chromium here (Debian: apt-get install chromium)")
    return browser


def render_in_chromium(html: Path, tmp_path: Path, screenshot: Path) -> str:
    browser = browser_or_skip()
    flags = [*report.CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"]
    dom = subprocess.run([browser, *flags, "--virtual-time-budget=15000", "--dump-dom", html.as_uri()],
                         capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = subprocess.run([browser, *flags, "--window-size=1280,1800", f"--screenshot={screenshot}", html.as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    return dom.stdout


def test_report_from_the_committed_reference_lists_what_is_missing(tmp_path):
    out = report.build_report(tmp_path / "report.html", figures=REPO / "figures", notebooks=REPO / "notebooks")
    html = out.read_text()
    committed = {p.stem for p in (REPO / "figures" / "results").glob("*.json")}
    for name, notebook in PRODUCERS.items():
        assert (f"result {name} (run {notebook})" in html) == (name not in committed), name
    pngs = list((REPO / "figures").glob("[0-9][0-9]_*.png"))
    embedded = html.count('<img src="data:image/png;base64,') + html.count('<img src="data:image/jpeg;base64,')
    assert embedded == len(pngs) > 0  # every figure, embedded at screen width
    for png in pngs[:3]:  # and its 300-dpi files linked beside it, relative to the report's folder
        for f in (png, png.with_suffix(".pdf")):
            link = re.search(rf'href="([^"]*/)?{re.escape(f.name)}"', html)
            assert (link is not None) == f.is_file() and (link is None or (out.parent / link.group(0)[6:-1]).resolve()
                                                         == f.resolve()), f.name
    assert out.stat().st_size < 10_000_000  # screen copies: the 300-dpi files made it 22.9 MB
    assert 'table headline"' in html and "Reading (notebook 90)" in html
    for book in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert f'id="{book.stem}"' in html, book.name  # a section per notebook
    assert "src=\"http" not in html and "href=\"http" not in html.split("<nav>")[0]  # self-contained
    # data by name and fingerprint, folders relative to the project: no path of the machine that built it
    assert "<td>data</td><td>oct2017-sample (" in html and "from <code>figures</code>" in html
    text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", html)  # the embedded figures' bytes are not text
    assert not re.search(r"(?<![\w.])/(work|tmp|root|home|Users)/", text)


def test_report_of_an_empty_run_says_so(tmp_path):
    (tmp_path / "figures").mkdir()
    html = report.build_report(tmp_path / "r.html", figures=tmp_path / "figures", notebooks=tmp_path / "none") \
        .read_text()
    assert html.count("<li>result ") == len(PRODUCERS) and "No evaluation records" in html
    assert "notebooks (no " in html
    with pytest.raises(FileNotFoundError, match="No figures folder .*make reference"):
        report.build_report(tmp_path / "x.html", figures=tmp_path / "absent")


def test_cli_builds_the_report(tmp_path):
    done = subprocess.run([sys.executable, "-m", "octlib", "report", "--figures", str(REPO / "figures"),
                           "--out", str(tmp_path / "r.html")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and f"wrote {tmp_path / 'r.html'}" in done.stdout, done.stderr
    bad = subprocess.run([sys.executable, "-m", "octlib", "report", "--figures", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "No figures folder" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path):
    out = report.build_report(tmp_path / "report.html", figures=REPO / "figures", notebooks=REPO / "notebooks")
    dom = render_in_chromium(out, tmp_path, tmp_path / "report.png")
    body = re.search(r"<body[^>]*>", dom).group(0)
    images = int(re.search(r'data-images="(\d+)"', body).group(1))
    assert images == len(list((REPO / "figures").glob("[0-9][0-9]_*.png"))) and 'data-broken-images="0"' in body
    assert 'table headline"' in dom and "robust acc" in dom
    pdf = report.print_pdf(out, tmp_path / "report.pdf")
    assert pdf.read_bytes()[:5] == b"%PDF-"


@pytest.mark.slow
@pytest.mark.sample
def test_an_executed_notebook_exported_to_html_renders_in_chromium(tmp_path, sample_root):
    browser_or_skip()
    env = {**os.environ, "OCTLIB_DATA": str(sample_root), "OCTLIB_PROFILE": "quick",
           "OCTLIB_FIGURES": str(tmp_path / "fig"), "OCTLIB_RESULTS": str(tmp_path / "res")}
    executed = tmp_path / "00.ipynb"
    subprocess.run([sys.executable, "-m", "papermill", str(REPO / "notebooks" / "00_data_exploration.ipynb"),
                    str(executed), "-k", "python3", "--no-progress-bar"], check=True, capture_output=True, env=env,
                   timeout=600)
    html = report.export_notebook(executed, tmp_path / "00.html")
    assert not re.findall(r'<script[^>]*src="https?:', html.read_text())  # opens offline
    dom = render_in_chromium(html, tmp_path, tmp_path / "00.png")
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert "Data exploration" in dom
    shown = len(re.findall(r"<img ", dom))
    assert shown >= 3, shown  # the notebook's figures
    broken = subprocess.run([report.chromium(), *report.CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'c2'}",
                             "--virtual-time-budget=15000", "--dump-dom", _with_image_check(html, tmp_path).as_uri()],
                            capture_output=True, text=True, timeout=180).stdout
    assert 'data-broken-images="0"' in broken and 'data-remote-images="1"' in broken, body  # the Colab badge


def _with_image_check(html: Path, tmp_path: Path) -> Path:
    """The exported page with the report's image check appended (nbconvert's template has none): local images
    must load; remote ones (the Colab badge) are counted apart, since this machine is offline."""
    script = Path(report.__file__).parent / "templates" / "report.html.j2"
    check = re.search(r"<script>.*?</script>", script.read_text(), flags=re.S).group(0)
    out = tmp_path / "00-checked.html"
    head, _, tail = html.read_text().rpartition("</body>")
    out.write_text(head + check + "</body>" + tail)
    return out


def test_the_documentation_pictures_show_the_committed_reference():
    """docs/images' pictures of the reference were rebuilt from it (`python -m octlib images`): images.json names
    the reference's victims, and the pictures and their source figure are the files it describes. A new reference
    without that command fails here."""
    import hashlib

    meta = json.loads((REPO / "docs" / "images" / "images.json").read_text())
    assert set(meta["victims"]) == report.reference_victims(REPO / "figures") != set()
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert meta["sources"]["61_explorer_static.png"] == digest(REPO / "figures" / "61_explorer_static.png")
    for name in report.DOC_IMAGES:
        assert meta["images"][name]["sha256"] == digest(REPO / "docs" / "images" / name), name


def test_doc_images_rebuilds_the_pictures_and_says_what_they_show(tmp_path):
    browser_or_skip()
    meta = report.doc_images(REPO / "figures", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["explorer-static.png", "images.json", "report.png"]
    assert (tmp_path / "explorer-static.png").read_bytes() == (REPO / "figures" / "61_explorer_static.png").read_bytes()
    assert (tmp_path / "report.png").stat().st_size > 10_000 and meta["profiles"] == ["full"]
    assert json.loads((tmp_path / "images.json").read_text()) == meta
