"""The compiled build of ledger's hot modules (ledger/__init__.py, scripts/_native.py).

A build is used only while it matches the sources byte for byte, and it
computes exactly what the source does: the same roots, store puts and cache
entries for the same histories, whichever of the two runs. CI sets
LACRE_REQUIRE_NATIVE=1: there, the build must exist and be what runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import ledger
from ledger import compiled_build, smt, smt_update
from ledger.smt import SparseMerkleMap
from ledger.store import MemoryStore, WriteBatch

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "ledger"

sys.path.insert(0, str(ROOT / "scripts"))
import _native  # noqa: E402

sys.path.pop(0)


def _manifest(built: Path, modules: dict[str, str]) -> None:
    built.mkdir(parents=True, exist_ok=True)
    (built / "manifest.json").write_text(json.dumps({"modules": modules}))


def _digest(name: str) -> str:
    return hashlib.sha256((SOURCE / f"{name}.py").read_bytes()).hexdigest()


# -- which build is used ---------------------------------------------------------


def _extension(built: Path, name: str, suffix: str = EXTENSION_SUFFIXES[0]) -> None:
    (built / "ledger").mkdir(parents=True, exist_ok=True)
    (built / "ledger" / f"{name}{suffix}").write_bytes(b"")


def test_a_build_of_the_current_sources_is_used(tmp_path):
    _manifest(tmp_path, {"smt_update": _digest("smt_update")})
    _extension(tmp_path, "smt_update")
    assert compiled_build(SOURCE, tmp_path) == ("smt_update",)


def test_a_build_for_another_interpreter_is_not_used(tmp_path):
    _manifest(tmp_path, {"smt_update": _digest("smt_update")})
    assert compiled_build(SOURCE, tmp_path) == ()
    _extension(tmp_path, "smt_update", ".cpython-399-x86_64-linux-gnu.so")
    assert compiled_build(SOURCE, tmp_path) == ()


@pytest.mark.parametrize("manifest", [
    {"modules": {"smt_update": "0" * 64}},  # built from other bytes: stale
    {"modules": {"smt_update": None}},
    {"modules": {"no_such_module": "0" * 64}},
    {"modules": []},
    {"modules": {}},
    {},
    [],
    "not a manifest",
])
def test_a_stale_or_malformed_build_is_not_used(tmp_path, manifest):
    tmp_path.joinpath("manifest.json").write_text(json.dumps(manifest))
    assert compiled_build(SOURCE, tmp_path) == ()


def test_one_stale_module_disables_the_whole_build(tmp_path):
    # The modules share one runtime library; none is used without the others.
    _manifest(tmp_path, {"smt_update": _digest("smt_update"), "smt": "0" * 64})
    _extension(tmp_path, "smt_update")
    _extension(tmp_path, "smt")
    assert compiled_build(SOURCE, tmp_path) == ()


def test_no_build_or_unreadable_manifest_means_pure_python(tmp_path):
    assert compiled_build(SOURCE, tmp_path) == ()
    tmp_path.joinpath("manifest.json").write_bytes(b"\xff{")
    assert compiled_build(SOURCE, tmp_path) == ()


def test_the_build_script_compiles_the_modules_the_loader_checks():
    assert set(_native.MODULES) <= {path.stem for path in SOURCE.glob("*.py")}
    assert _native.digests() == {name: _digest(name) for name in _native.MODULES}


@pytest.mark.skipif(not os.environ.get("LACRE_REQUIRE_NATIVE"), reason="LACRE_REQUIRE_NATIVE is set on CI")
def test_on_ci_the_compiled_modules_are_the_ones_running():
    assert ledger.COMPILED == tuple(sorted(_native.MODULES))
    assert Path(smt_update.__file__).suffix == ".so"
    assert _native.current()


# -- the build --------------------------------------------------------------------

needs_mypyc = pytest.mark.skipif(
    importlib.util.find_spec("mypyc") is None and not os.environ.get("LACRE_REQUIRE_NATIVE"),
    reason="mypyc is not installed (the native extra)")


def _package(tmp_path: Path, tiny: str) -> Path:
    """A package named ledger, as the loader expects, with one module, tiny."""
    source = tmp_path / "src" / "ledger"
    source.mkdir(parents=True)
    (source / "__init__.py").write_text("")
    (source / "tiny.py").write_text(tiny)
    return source


@needs_mypyc
def test_a_build_compiles_each_module_and_is_used_until_its_source_changes(tmp_path):
    source = _package(tmp_path, "def double(n: int) -> int:\n    return 2 * n\n")
    built = tmp_path / "built"
    assert _native.build(source, built, ("tiny",))
    assert json.loads((built / "manifest.json").read_text()) == {
        "modules": {"tiny": hashlib.sha256((source / "tiny.py").read_bytes()).hexdigest()}}
    assert compiled_build(source, built) == ("tiny",)
    # What ledger/__init__.py does with a current build: its folder goes first.
    probe = (f"import ledger; ledger.__path__.insert(0, {str(built / 'ledger')!r}); import ledger.tiny; "
             "print(ledger.tiny.double(21), ledger.tiny.__file__.endswith('.so'))")
    ran = subprocess.run([sys.executable, "-c", probe], cwd=source.parent, capture_output=True, text=True)
    assert ran.stdout.split() == ["42", "True"], ran.stderr
    (source / "tiny.py").write_text("def double(n: int) -> int:\n    return n + n\n")
    assert compiled_build(source, built) == ()


@needs_mypyc
def test_a_module_that_does_not_compile_leaves_no_build(tmp_path, capsys):
    source = _package(tmp_path, 'def double(n: int) -> int:\n    return "twice"\n')
    built = tmp_path / "built"
    (built / "ledger").mkdir(parents=True)
    (built / "manifest.json").write_text('{"modules": {}}')  # an earlier build
    assert not _native.build(source, built, ("tiny",))
    assert not built.exists()
    assert "native build failed; running pure Python" in capsys.readouterr().err


# -- compiled and pure compute the same ----------------------------------------------


def _pure_smt_update():
    spec = importlib.util.spec_from_file_location("ledger_smt_update_pure", SOURCE / "smt_update.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _history(seed: int, builder, memory_depth: int) -> list[tuple[bytes, list, list]]:
    """Roots, puts and cache entries of a seeded history of batches, one key reused now and then."""
    rng = random.Random(seed)
    store = MemoryStore()
    tree = SparseMerkleMap(store, b"zc", cache_depth=8, memory_depth=memory_depth)
    tree_builder = smt.Builder
    smt.Builder = builder
    try:
        keys: dict[bytes, None] = {}
        trail = []
        for _ in range(12):
            changes = {}
            for _ in range(rng.choice([1, 2, 3, 40, 300])):
                key = rng.choice(list(keys)) if keys and rng.random() < 0.2 else rng.randbytes(32)
                changes[key] = rng.randbytes(32)
            keys.update(dict.fromkeys(changes))
            update = tree.update(changes)
            batch = WriteBatch()
            update.add_to(batch)
            store.write(batch)
            tree.committed(update)
            trail.append((update.root, update.puts, update.cached))
        loaded = SparseMerkleMap(MemoryStore(), b"zc")
        trail.append((loaded.load((key, rng.randbytes(32)) for key in keys), [], []))
        return trail
    finally:
        smt.Builder = tree_builder


@pytest.mark.skipif(not ledger.COMPILED, reason="no compiled build here (scripts/_native.py)")
@pytest.mark.parametrize("memory_depth", [0, 8])
@pytest.mark.parametrize("seed", range(6))
def test_the_compiled_update_equals_the_source(seed, memory_depth):
    pure = _pure_smt_update()
    assert Path(pure.__file__).suffix == ".py" and pure.Builder is not smt_update.Builder
    assert _history(seed, smt_update.Builder, memory_depth) == _history(seed, pure.Builder, memory_depth)
