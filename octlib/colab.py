"""Colab from one setting: the repository a notebook's badge opens and its install cell installs from.

``pyproject.toml``'s ``Repository`` URL, every notebook's Colab badge and every install cell name the same GitHub
repository (``tests/test_notebooks.py`` checks that they agree). A fork, or a copy published under another name,
changes all of them at once with ``python -m octlib colab --repo owner/name``; without any public repository, the
install cell takes a wheel uploaded to the Colab session (``python -m build`` makes it) instead.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .config import project_root

SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+$")
_URL = re.compile(r'^(Repository\s*=\s*")https://github\.com/([^"]+)(")', re.M)


def repository(root: Path | None = None) -> str:
    """The ``owner/name`` of the repository ``pyproject.toml`` names."""
    root = Path(root or project_root())
    m = _URL.search((root / "pyproject.toml").read_text(encoding="utf-8"))
    if not m:
        raise ValueError(f"{root / 'pyproject.toml'} has no [project.urls] Repository = \"https://github.com/...\".")
    return m.group(2).removesuffix(".git")


def set_repository(slug: str, root: Path | None = None) -> list[Path]:
    """Point ``pyproject.toml``, every notebook's Colab badge and every install cell at ``github.com/<slug>``
    (``owner/name``). Returns the files changed (none when they already point there)."""
    if not isinstance(slug, str) or not SLUG.match(slug):
        raise ValueError(f"`--repo` must be a GitHub owner/name such as oct-robustness/oct-adversarial-study, "
                         f"got {slug!r}.")
    root = Path(root or project_root())
    old = repository(root)
    if old == slug:
        return []
    changed = []
    pyproject = root / "pyproject.toml"
    pyproject.write_text(_URL.sub(rf"\g<1>https://github.com/{slug}\g<3>",
                                  pyproject.read_text(encoding="utf-8"), count=1), encoding="utf-8")
    changed.append(pyproject)
    replacements = ((f"colab.research.google.com/github/{old}/", f"colab.research.google.com/github/{slug}/"),
                    (f"git+https://github.com/{old}.git", f"git+https://github.com/{slug}.git"))
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        book = json.loads(path.read_text(encoding="utf-8"))
        before = json.dumps(book["cells"][:2], ensure_ascii=False)
        for cell in book["cells"][:2]:  # the title with its badge, the install cell
            text = "".join(cell["source"])
            for a, b in replacements:
                text = text.replace(a, b)
            lines = text.split("\n")
            cell["source"] = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
        if json.dumps(book["cells"][:2], ensure_ascii=False) != before:
            path.write_text(json.dumps(book, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            changed.append(path)
    return changed
