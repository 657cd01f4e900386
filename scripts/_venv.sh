# Sourced by scripts/*: create or reuse .venv at the repository root, install
# lacre into it (with the extras named in $LACRE_EXTRAS), and compile its hot
# modules with mypyc when they changed (scripts/_native.py; pure Python if
# that cannot be done).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.lacre-installed${LACRE_EXTRAS:+-$LACRE_EXTRAS}"
# Reinstall when pyproject.toml changes, not on every run.
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[native${LACRE_EXTRAS:+,$LACRE_EXTRAS}]"
    touch "$STAMP"
fi
"$VENV/bin/python" "$ROOT/scripts/_native.py"
