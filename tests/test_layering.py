"""The arrows of DESIGN.md, checked by walking every import.

    client/ -> ledger/        node/ -> consensus/, ledger/
    consensus/ -> ledger/     ledger/ -> nothing of ours

ledger/ and consensus/ are pure: no sockets, tasks or clocks; only
ledger/leveldb_store.py may import plyvel.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {
    "ledger": {"ledger"},
    "consensus": {"consensus", "ledger"},
    "node": {"node", "consensus", "ledger"},
    "client": {"client", "ledger"},
}
IMPURE = {"asyncio", "aiohttp", "socket", "time", "threading", "plyvel", "random", "subprocess"}
PURE_PACKAGES = {"ledger", "consensus"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


MODULES = sorted(p for package in ALLOWED for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layering(path):
    package = path.relative_to(ROOT).parts[0]
    for name in _imports(path):
        top = name.split(".")[0]
        if top in ALLOWED:
            assert top in ALLOWED[package], f"{package}/ must not import {name}"
        if package in PURE_PACKAGES and top in IMPURE:
            allowed_io = path.name == "leveldb_store.py" and top == "plyvel"
            assert allowed_io, f"{path.name}: {package}/ is pure and must not import {name}"
