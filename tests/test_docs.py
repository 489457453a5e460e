"""The walkthroughs in docs/extending.md are true on the code: their Python blocks run, in order, in one namespace."""

import re
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_extending_walkthroughs_run():
    from octlib import registry

    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 4
    namespace: dict = {}
    try:
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - the project's own documentation
    finally:
        registry.ATTACKS.pop("MI-FGSM", None)  # the example's attack does not outlive the test
    assert "MI-FGSM" not in registry.ATTACKS and namespace["through_jpeg"].kind == "input"
