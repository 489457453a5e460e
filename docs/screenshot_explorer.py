"""Take the README's screenshot of the live explorer: notebook 61 run in JupyterLab, driven by headless Chromium.

JupyterLab is started on 127.0.0.1 with a copy of ``notebooks/61_explorer.ipynb`` in a temporary folder (the
repository's notebook is never saved over), every cell is run as a user would (Run All), the attack is switched
once in the widget so that the picture shows a redrawn selection, and the widget is saved as a PNG.

Needs the project installed (``make install``), Chromium from the system's package manager (``apt-get install
chromium``) and Playwright's Python package (``pip install playwright``; its own browser downloads are not used).
The settings are those of any run (``OCTLIB_PROFILE``, ``OCTLIB_DATA``, ``OCTLIB_SPLIT_POLICY``); the models come
from the artifact cache (``OCTLIB_ARTIFACTS``), figures and results go to the temporary folder. The committed
``docs/images/explorer-live.png`` was taken in the full profile with the pooled study victim::

    OCTLIB_PROFILE=full OCTLIB_SPLIT_POLICY=pooled OCTLIB_DATA=../shared/data/oct2017-sample \\
        .venv/bin/python docs/screenshot_explorer.py --attack PGD
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "61_explorer.ipynb"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import urllib.request

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"JupyterLab exited with code {proc.returncode} before answering at {url}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"JupyterLab did not answer at {url} within {timeout:.0f} s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "explorer-live.png",
                        help="PNG to write (default: docs/images/explorer-live.png)")
    parser.add_argument("--attack", default="PGD", help="attack chosen in the widget after the first drawing")
    parser.add_argument("--eps-steps", type=int, default=8,
                        help="then move the ε slider this many steps of 0.25/255 up with the keyboard (default 8: "
                             "from 2/255 to 4/255)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the notebook to run")
    args = parser.parse_args(argv)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise SystemExit("Playwright's Python package is missing: pip install playwright") from None
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser_path:
        raise SystemExit("Chromium is missing: install it with the system's package manager (apt-get install chromium)")

    with tempfile.TemporaryDirectory(prefix="explorer-shot-") as tmp:
        tmp = Path(tmp)
        shutil.copy(NOTEBOOK, tmp / NOTEBOOK.name)
        env = {**os.environ, "OCTLIB_FIGURES": str(tmp / "figures"), "OCTLIB_RESULTS": str(tmp / "results")}
        env.pop("OCTLIB_HEADLESS", None)  # someone is watching: the notebook shows the widget
        port, token = free_port(), secrets.token_hex(16)
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
             f"--ServerApp.token={token}", f"--ServerApp.root_dir={tmp}", "--LabApp.expose_app_in_browser=True",
             *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for_server(f"{base}/api/status?token={token}", server)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
                page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}")
                page.wait_for_function(
                    "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                    " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
                    " return k && k.status === 'idle'; }", timeout=120_000)
                started = time.monotonic()
                page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
                widget = page.locator(".jupyter-widgets.widget-vbox").first
                widget.wait_for(timeout=args.timeout * 1000)
                status = widget.locator(".widget-html-content").first
                page.wait_for_function(
                    "el => el.textContent.includes(' in ')", arg=status.element_handle(), timeout=args.timeout * 1000)
                print(f"widget drawn {time.monotonic() - started:.0f} s after Run All: {status.text_content()}")
                attack = widget.locator(".widget-dropdown").filter(has_text="attack").locator("select")
                settled = ("([el, before]) => el.textContent !== before && el.textContent.includes(' in ')"
                           " && !el.textContent.includes('computing')")
                before = status.text_content()
                attack.select_option(args.attack)
                page.wait_for_function(settled, arg=[status.element_handle(), before], timeout=300_000)
                print(f"after choosing {args.attack}: {status.text_content()}")
                if args.eps_steps:
                    before = status.text_content()
                    widget.locator(".widget-slider .noUi-handle").first.focus()
                    for _ in range(args.eps_steps):
                        page.keyboard.press("ArrowRight")
                    page.wait_for_timeout(1000)  # every step redraws; wait for the last one
                    page.wait_for_function(settled, arg=[status.element_handle(), before], timeout=300_000)
                    page.wait_for_timeout(3000)
                    page.wait_for_function(settled, arg=[status.element_handle(), ""], timeout=300_000)
                    readout = widget.locator(".widget-slider .widget-readout").first.text_content()
                    print(f"after moving ε to {readout.strip()}/255: {status.text_content()}")
                page.wait_for_timeout(1500)  # the redrawn figure replaces the old one
                args.out.parent.mkdir(parents=True, exist_ok=True)
                widget.scroll_into_view_if_needed()
                widget.screenshot(path=str(args.out))
                browser.close()
        finally:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=30)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
