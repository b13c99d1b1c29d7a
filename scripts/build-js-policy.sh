#!/usr/bin/env bash
# Builds a twinguard policy written in JavaScript into a WebAssembly component.
#
#   scripts/build-js-policy.sh SRC_DIR OUT.wasm [MODULE]
#
# SRC_DIR holds the policy's module (policy.js by default), which ends with
# `export const handler = exportPolicy(MyPolicy);` and imports the SDK
# (guest-sdk-js/twinguard-policy.js) by relative path; componentize-js bundles what it imports.
# Run scripts/js-tools.sh first: it installs the pinned componentize-js into target/tools/js.
# The component is ~12 MB (the StarlingMonkey engine).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tool="$root/target/tools/js/node_modules/.bin/componentize-js"
fail() {
    echo "build-js-policy: $*" >&2
    exit 1
}
[ $# -ge 2 ] && [ $# -le 3 ] || {
    echo "usage: $0 SRC_DIR OUT.wasm [MODULE]   (MODULE: the policy's file in SRC_DIR, default policy.js)" >&2
    exit 2
}
src="$1"
out="$2"
module="${3:-policy.js}"
[ -x "$tool" ] || fail "componentize-js not found at $tool: run scripts/js-tools.sh first"
[ -f "$src/$module" ] || fail "no $module in '$src'"
grep -q 'export const handler' "$src/$module" ||
    fail "$src/$module exports no handler: end it with 'export const handler = exportPolicy(YourPolicy);'"
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
# componentize-js resolves imports against the working folder (it becomes the engine's file
# system while it builds): from the repository root, a policy here reaches the SDK by
# `../../guest-sdk-js/…`; a policy elsewhere builds from its own folder (its SDK copy beside it).
src_abs="$(cd "$src" && pwd)"
case "$src_abs/" in
"$root"/*) cd "$root" && entry="${src_abs#"$root"/}/$module" ;;
*) cd "$src_abs" && entry="$module" ;;
esac
# WASI HTTP is left out: the host links none, and a policy has no use for it.
"$tool" "$entry" -w "$root/wit" -n policy -d http fetch-event -o "$out" ||
    fail "componentize-js failed for $src/$module (see above: an exception at the top level of the module is reported there)"
# Self-tests: a selftest.ndjson beside the policy goes into the component as the
# `twinguard-selftest` custom section, which the host runs at every load (and `check` runs).
if [ -f "$src_abs/selftest.ndjson" ]; then
    node -e '
const fs = require("fs");
const [out, cases] = process.argv.slice(1);
const leb = (n) => { const b = []; do { let x = n & 0x7f; n >>>= 7; if (n) x |= 0x80; b.push(x); } while (n); return b; };
const name = Buffer.from("twinguard-selftest");
const body = Buffer.concat([Buffer.from(leb(name.length)), name, fs.readFileSync(cases)]);
fs.appendFileSync(out, Buffer.concat([Buffer.from([0]), Buffer.from(leb(body.length)), body]));
' "$out" "$src_abs/selftest.ndjson"
fi
echo "build-js-policy: $out ($(stat -c %s "$out") bytes)"
