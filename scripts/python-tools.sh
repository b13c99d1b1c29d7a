#!/usr/bin/env bash
# Installs the tools that build twinguard policies written in Python: a virtual environment at
# target/tools/python with a pinned componentize-py. Idempotent: an environment that already
# has the pinned version is reused as it is. Needs python3 (3.10 or newer) with the venv
# module, and pip access to the package index.
#
#   scripts/python-tools.sh          # install (or check) the tools
#   scripts/build-python-policy.sh policies/pii-redact-py target/pii_redact_py.wasm
#
# Environment: TWINGUARD_PYTHON (the interpreter, default python3).
set -euo pipefail

COMPONENTIZE_PY_VERSION="0.25.1"

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/tools/python"
python="${TWINGUARD_PYTHON:-python3}"

fail() {
    echo "python-tools: $*" >&2
    exit 1
}

command -v "$python" >/dev/null 2>&1 ||
    fail "'$python' not found: install Python 3.10 or newer (Debian: apt-get install python3 python3-venv python3-pip), or set TWINGUARD_PYTHON to an interpreter"

"$python" - <<'PY' || fail "'$python' is too old: componentize-py needs Python 3.10 or newer"
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

installed_version() {
    [ -x "$venv/bin/componentize-py" ] || return 1
    "$venv/bin/componentize-py" --version 2>/dev/null | awk '{print $2}'
}

if [ "$(installed_version || true)" = "$COMPONENTIZE_PY_VERSION" ]; then
    echo "python-tools: componentize-py $COMPONENTIZE_PY_VERSION already in $venv"
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    "$python" -c 'import venv, ensurepip' 2>/dev/null ||
        fail "'$python' has no venv or ensurepip module: install it (Debian: apt-get install python3-venv)"
    mkdir -p "$(dirname "$venv")"
    echo "python-tools: creating the virtual environment $venv"
    "$python" -m venv "$venv" || fail "'$python -m venv $venv' failed (see above)"
fi

"$venv/bin/python" -m pip --version >/dev/null 2>&1 ||
    fail "the virtual environment $venv has no working pip: delete it and install python3-venv / python3-pip"

echo "python-tools: installing componentize-py==$COMPONENTIZE_PY_VERSION into $venv"
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet \
    "componentize-py==$COMPONENTIZE_PY_VERSION" ||
    fail "pip could not install componentize-py==$COMPONENTIZE_PY_VERSION (no access to the package index? see above)"

got="$(installed_version || true)"
[ "$got" = "$COMPONENTIZE_PY_VERSION" ] ||
    fail "componentize-py reports version '${got:-none}' after the install, not $COMPONENTIZE_PY_VERSION"
echo "python-tools: componentize-py $COMPONENTIZE_PY_VERSION ready: $venv/bin/componentize-py"
