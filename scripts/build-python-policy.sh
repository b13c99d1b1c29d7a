#!/usr/bin/env bash
# Builds a twinguard policy written in Python into a WebAssembly component.
#
#   scripts/build-python-policy.sh SRC_DIR OUT.wasm [MODULE]
#
# SRC_DIR holds the policy's app module (app.py by default, MODULE to name another), which
# assigns `Handler = twinguard_policy.export(MyPolicy)`, and any modules it imports. The
# component targets the repository's wit/ (world `policy`) and has the Python SDK
# (guest-sdk-python/) on its path. Run scripts/python-tools.sh first: it installs the pinned
# componentize-py into target/tools/python.
#
# The component is 18-20 MB (CPython and its standard library): see
# guest-sdk-python/README.md for the limits a configuration needs for it.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
componentize="$root/target/tools/python/bin/componentize-py"

fail() {
    echo "build-python-policy: $*" >&2
    exit 1
}

[ $# -ge 2 ] && [ $# -le 3 ] || {
    echo "usage: $0 SRC_DIR OUT.wasm [MODULE]   (MODULE: the app module in SRC_DIR, default app)" >&2
    exit 2
}
src="$1"
out="$2"
module="${3:-app}"

[ -x "$componentize" ] ||
    fail "componentize-py not found at $componentize: run scripts/python-tools.sh first"
[ -d "$src" ] || fail "no policy directory '$src'"
[ -f "$src/$module.py" ] || [ -f "$src/$module/__init__.py" ] ||
    fail "no app module '$module' in '$src' (expected $src/$module.py assigning Handler = export(...))"
grep -Eq '^Handler[[:space:]]*=|^class[[:space:]]+Handler\b' "$src/$module.py" 2>/dev/null ||
    [ -d "$src/$module" ] ||
    fail "$src/$module.py defines no Handler: end it with 'Handler = export(YourPolicy)'"
case "$module" in
wit_world | twinguard_policy | policy)
    fail "the app module may not be called '$module' (a name the bindings or the SDK use)"
    ;;
esac
[ -d "$root/wit" ] || fail "no wit/ directory in $root"
[ -d "$root/guest-sdk-python/twinguard_policy" ] ||
    fail "no Python SDK at $root/guest-sdk-python/twinguard_policy"

src_abs="$(cd "$src" && pwd)"
out_dir="$(dirname "$out")"
mkdir -p "$out_dir"
out_abs="$(cd "$out_dir" && pwd)/$(basename "$out")"

# Built from copies: componentize-py's interpreter writes .pyc files beside the sources it
# imports. Only the policy and the SDK are on the path (componentize-py would otherwise also
# pick up the tool environment's site-packages).
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/app" "$work/sdk"
cp -R "$src_abs/." "$work/app/"
cp -R "$root/guest-sdk-python/twinguard_policy" "$work/sdk/"
find "$work" -name __pycache__ -prune -exec rm -rf {} +
unset VIRTUAL_ENV PYTHONPATH
cd "$work/app"
"$componentize" --quiet -d "$root/wit" -w policy componentize \
    -p "$work/app" -p "$work/sdk" "$module" -o "$out_abs" ||
    fail "componentize-py failed for '$src' (see above: an exception while importing $module.py is reported there)"
# Self-tests: a selftest.ndjson beside the policy goes into the component as the
# `twinguard-selftest` custom section, which the host runs at every load (and `check` runs).
if [ -f "$src_abs/selftest.ndjson" ]; then
    python3 - "$out_abs" "$src_abs/selftest.ndjson" <<'PY'
import sys
out, cases = sys.argv[1:]
def leb(n):
    b = bytearray()
    while True:
        x, n = n & 0x7F, n >> 7
        b.append(x | (0x80 if n else 0))
        if not n:
            return bytes(b)
name = b"twinguard-selftest"
body = leb(len(name)) + name + open(cases, "rb").read()
with open(out, "ab") as f:
    f.write(b"\0" + leb(len(body)) + body)
PY
fi
size=$(stat -c %s "$out_abs" 2>/dev/null || wc -c <"$out_abs")
echo "build-python-policy: $out ($size bytes)"
