"""Compile lacre's hot modules with mypyc into build/native (run by scripts/_venv.sh).

The modules stay plain Python; mypyc, the compiler mypy and black ship with,
builds each into a C extension from its type hints. `ledger/__init__.py`
uses the build only while the manifest's digests match the sources, so this
script rebuilds whenever a module changed and otherwise returns at once.
Without mypyc or a C compiler, it says so and lacre runs its sources alone.

    python scripts/_native.py [--check]   # --check: exit 1 unless the build is current
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "ledger"
BUILT = ROOT / "build" / "native"

sys.path.insert(0, str(ROOT))
from ledger import compiled_build, source_digest  # noqa: E402  (the loader's own test of a build)

MODULES = ("codec", "id_filter", "smt_update")
"""Modules of ledger/ to compile: what runs per record (docs/native.md)."""


def digests(source: Path = SOURCE, modules: tuple[str, ...] = MODULES) -> dict[str, str]:
    return {name: source_digest(source, name) for name in modules}


def current(source: Path = SOURCE, built: Path = BUILT, modules: tuple[str, ...] = MODULES) -> bool:
    return compiled_build(source, built) == tuple(sorted(modules))


def _failed(built: Path, output: str) -> bool:
    tail = "\n".join(output.strip().splitlines()[-15:])
    print(f"native build failed; running pure Python:\n{tail}", file=sys.stderr)
    shutil.rmtree(built, ignore_errors=True)
    return False


def build(source: Path = SOURCE, built: Path = BUILT, modules: tuple[str, ...] = MODULES) -> bool:
    """Compile `modules` of the package in `source` into `built`; False (and no build) if that fails."""
    if importlib.util.find_spec("mypyc") is None:
        print("native build skipped: mypyc is not installed; running pure Python", file=sys.stderr)
        return False
    package = source.name
    wanted = digests(source, modules)
    with tempfile.TemporaryDirectory(prefix="lacre-native-") as work:
        # mypyc type-checks the modules it compiles against the rest of the
        # package, so it builds in a copy of the whole package.
        shutil.copytree(source, Path(work) / package, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        # msgpack and PyNaCl ship no type information: their calls stay Python calls.
        (Path(work) / "mypy.ini").write_text("[mypy]\nignore_missing_imports = True\n")
        # One extension per module: each carries its own runtime library
        # beside it (`<package>/<name>__mypyc`), where the package path finds it.
        for name in modules:
            done = subprocess.run([sys.executable, "-m", "mypyc", f"{package}/{name}.py"], cwd=work,
                                  capture_output=True, text=True)
            if done.returncode != 0:
                return _failed(built, done.stdout + done.stderr)
        # In the copy the extensions sit beside their sources, which they shadow.
        probe = "import importlib; " + "; ".join(
            f"assert importlib.import_module('{package}.{name}').__file__.endswith('.so')" for name in modules)
        done = subprocess.run([sys.executable, "-c", probe], cwd=work, capture_output=True, text=True)
        if done.returncode != 0:
            return _failed(built, done.stdout + done.stderr)
        extensions = sorted((Path(work) / package).glob("*.so"))
        if digests(source, modules) != wanted:
            print("native build skipped: sources changed while building", file=sys.stderr)
            return False
        shutil.rmtree(built, ignore_errors=True)
        (built / package).mkdir(parents=True)
        for extension in extensions:
            shutil.copy2(extension, built / package / extension.name)
    # The manifest goes last: a build interrupted before it is never used.
    (built / "manifest.json").write_text(json.dumps({"modules": wanted}, indent=1) + "\n")
    return True


def main(argv: list[str]) -> int:
    if current():
        return 0
    if "--check" in argv:
        print("native build is missing or stale", file=sys.stderr)
        return 1
    BUILT.parent.mkdir(parents=True, exist_ok=True)
    # Scripts started together (a devnet and the tests) build once, in turn.
    with open(BUILT.parent / "native.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not current():
            print(f"compiling {', '.join(MODULES)} with mypyc ...", file=sys.stderr)
            build()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
