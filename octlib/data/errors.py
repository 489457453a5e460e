"""Errors raised by the data layer. Each message names the offending file(s) or setting and the fix."""

from __future__ import annotations

from pathlib import Path


class OCTDataError(ValueError):
    """Bad data input. ``files`` lists the offending paths (may be empty)."""

    def __init__(self, message: str, files: list[Path | str] | None = None):
        super().__init__(message)
        self.files = [str(f) for f in (files or [])]


class PatientLeakageError(OCTDataError):
    """The same patient (or a group of linked patient IDs) appears in two splits."""


def list_files(paths, limit: int = 20) -> str:
    """Format up to ``limit`` paths, one per line, with a count of the rest."""
    paths = [str(p) for p in paths]
    shown = "\n".join(f"  - {p}" for p in paths[:limit])
    if len(paths) > limit:
        shown += f"\n  ... and {len(paths) - limit} more"
    return shown
