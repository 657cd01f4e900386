"""lacre's core: records, blocks, Merkle log and map, state; pure and deterministic.

Some modules of this package may also exist compiled by mypyc
(`scripts/_native.py`, which `scripts/*` run): the same source, built as a C
extension, for the per-record hot paths. The build lives outside the source
tree, in `build/native/ledger`, with a manifest of the source digests it was
built from; it goes first on this package's path only while every digest
matches, so an edited module is never shadowed by a stale build. Set
LACRE_PURE=1 to run the sources alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

COMPILED: tuple[str, ...] = ()
"""The modules of this package that run compiled (empty: pure Python only)."""


def source_digest(source: Path, name: str) -> str:
    """The SHA-256 (hex) of module `name`'s source in `source`: what a build is keyed by."""
    return hashlib.sha256((source / f"{name}.py").read_bytes()).hexdigest()


def compiled_build(source: Path, built: Path) -> tuple[str, ...]:
    """The modules compiled in `built` (a manifest and a `ledger` folder) from
    the sources in `source`; empty unless the build matches every one of them."""
    try:
        manifest = json.loads((built / "manifest.json").read_text())
        modules = manifest["modules"]
        for name, digest in modules.items():
            if source_digest(source, name) != digest:
                return ()
            # Built for this interpreter (another Python would not load it).
            if not any((built / "ledger" / f"{name}{suffix}").is_file() for suffix in EXTENSION_SUFFIXES):
                return ()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return ()
    return tuple(sorted(modules))


if not os.environ.get("LACRE_PURE"):
    _source = Path(__file__).resolve().parent
    _built = _source.parent / "build" / "native"
    COMPILED = compiled_build(_source, _built)
    if COMPILED:
        __path__ = [str(_built / "ledger"), *__path__]
