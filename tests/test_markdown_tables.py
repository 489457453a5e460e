"""Every table in the project's Markdown has as many cells in each row as in its header (a row pasted into the
wrong table, or a missing cell, shifts every column after it)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted(p for pattern in ("*.md", "docs/*.md", "figures/*.md", "benchmarks/*.md") for p in ROOT.glob(pattern))


def cells(row: str) -> int:
    """Cells of one Markdown table row: pipes that are not escaped and not inside `code`, minus the two edges."""
    row = re.sub(r"`[^`]*`", "", row.strip())
    return len(re.findall(r"(?<!\\)\|", row)) - 1


def table_errors(text: str) -> list[str]:
    errors, width, start = [], None, 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.lstrip().startswith("|"):
            width = None
            continue
        if width is None:
            width, start = cells(line), number
        elif cells(line) != width:
            errors.append(f"line {number}: {cells(line)} cells, but the table's header (line {start}) has {width}")
    return errors


def test_the_check_finds_a_row_with_too_few_cells():
    assert table_errors("| a | b |\n|---|---|\n| 1 | `x|y` |\n") == []
    assert table_errors("| a | b | c |\n|---|---|---|\n| 1 | 2 |\n") == [
        "line 3: 2 cells, but the table's header (line 1) has 3"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_tables_have_equal_rows(doc):
    assert table_errors(doc.read_text(encoding="utf-8")) == [], f"{doc.relative_to(ROOT)}: fix the table's rows"
