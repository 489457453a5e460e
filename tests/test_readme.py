"""The README's headline table is the committed reference's, as octlib.compare computes it: every number in it."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _p(value) -> str:
    return "–" if value is None or value != value else ("< 0.001" if value < 0.001 else f"{value:.3f}")


def readme_headline() -> list[list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("| model | tier | n |", 1)[1].split("\n\n", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[2:]]


def test_readme_is_a_front_door():
    assert (REPO / "README.md").stat().st_size <= 10_240


def test_readme_headline_numbers_are_the_committed_references():
    from octlib import compare, records

    frame, _ = compare.split_clinical(records.read_records(results_dir=REPO / "figures" / "results"))
    table = compare.headline_table(frame, 2).set_index("model")
    rows = readme_headline()
    assert len(rows) == len(table) > 0
    for cells in rows:
        name = re.sub(r"\*\*|\s*\(EOT\)|\s*†", "", cells[0]).strip()
        assert name in table.index, name
        r = table.loc[name]
        low, high = (float(v) for v in r["robust 95% CI"].split("–"))
        assert cells[1:6] == [str(r["tier"]), str(r["n"]), f"{r['robust acc']:.3f} ({low:.3f}–{high:.3f})",
                              f"{r['clean acc']:.3f}", _p(r["p clean vs undefended"])], name
        assert cells[6].removesuffix(" ✓") == _p(r["p vs undefended"]), name
        assert cells[6].endswith("✓") == (r["p vs undefended"] == r["p vs undefended"]
                                          and r["p vs undefended"] < compare.ALPHA), name


@pytest.mark.parametrize("value,shown", [(None, "–"), (float("nan"), "–"), (1e-5, "< 0.001"), (0.0312, "0.031")])
def test_p_values_are_shown_as_the_readme_shows_them(value, shown):
    assert _p(value) == shown
