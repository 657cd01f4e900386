"""Runs testdata/*.txt scenarios; LACRE_REWRITE=1 rewrites the expected output (review the diff)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.consensus.scenario import Scenario

TESTDATA = Path(__file__).parent / "testdata"


def _blocks(text: str) -> list[tuple[str, str]]:
    blocks = []
    for chunk in text.strip("\n").split("\n\n"):
        lines = chunk.split("\n")
        separator = lines.index("----")
        blocks.append(("\n".join(lines[:separator]).strip(), "\n".join(lines[separator + 1:])))
    return blocks


@pytest.mark.parametrize("path", sorted(TESTDATA.glob("*.txt")), ids=lambda p: p.stem)
def test_scenario(path: Path) -> None:
    scenario = Scenario()
    results = [(command, scenario.run(command), expected) for command, expected in _blocks(path.read_text())]
    if os.environ.get("LACRE_REWRITE") == "1":
        path.write_text("\n\n".join(f"{c}\n----\n{got}" for c, got, _ in results) + "\n")
        return
    for command, got, expected in results:
        assert got == expected, f"{path.name}: {command}"
