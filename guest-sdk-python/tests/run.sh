#!/usr/bin/env bash
# Runs the Python SDK's unit tests and pii-redact-py's, with the interpreter of
# scripts/python-tools.sh (CPython on the host: the tests need no component).
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1
root="$(cd "$(dirname "$0")/../.." && pwd)"
python="$root/target/tools/python/bin/python"
[ -x "$python" ] || { echo "run.sh: run scripts/python-tools.sh first" >&2; exit 1; }
"$python" -m unittest discover -s "$root/guest-sdk-python/tests" -t "$root/guest-sdk-python/tests" "$@"
"$python" -m unittest discover -s "$root/policies/pii-redact-py/tests" -t "$root/policies/pii-redact-py/tests" "$@"
