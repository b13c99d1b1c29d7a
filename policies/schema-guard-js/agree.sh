#!/usr/bin/env bash
# Checks that schema-guard-js (JavaScript) behaves as schema-guard (Rust): the same outcome
# (action, reason, payload, alerts with their details, verdict) for every message of
# agreement/messages.ndjson under every configuration of agreement/configs.txt (one
# `[policy.config]` inline table body per line). Exits non-zero on any difference, printing it.
#
# Environment: TWINGUARD (host binary; default target/debug/twinguard, else on PATH), RUST_WASM
# (default target/guest-fixtures/wasm32-wasip2/release/schema_guard.wasm), JS_WASM (default:
# built into target/js-policies/schema_guard_js.wasm by scripts/build-js-policy.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
twinguard="${TWINGUARD:-$root/target/debug/twinguard}"
[ -x "$twinguard" ] || twinguard="$(command -v twinguard)" || { echo "agree: no twinguard binary" >&2; exit 1; }
rust="${RUST_WASM:-$root/target/guest-fixtures/wasm32-wasip2/release/schema_guard.wasm}"
[ -f "$rust" ] || { echo "agree: no Rust component at $rust (build the guests first)" >&2; exit 1; }
js="${JS_WASM:-}"
if [ -z "$js" ]; then
    js="$root/target/js-policies/schema_guard_js.wasm"
    "$root/scripts/build-js-policy.sh" "$here" "$js" >/dev/null
fi
rust="$(realpath "$rust")"; js="$(realpath "$js")"
command -v jq >/dev/null || { echo "agree: jq is needed (apt-get install jq)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The compared part of an outcome: everything but versions, fuel and time.
norm='{line, action, reason, payload, payload_base64, alerts: [.alerts[] | {severity, code, detail}], verdicts: [.trace[] | .verdict], error}'
n=0
fail=0
while IFS= read -r config; do
    [ -n "$config" ] || continue
    n=$((n + 1))
    for side in rust js; do
        wasm="$rust"; [ "$side" = js ] && wasm="$js"
        printf '[engine]\ncache-dir = "%s/cache"\n[[policy]]\nname = "schema-guard"\npath = "%s"\nconfig = { %s }\n[[route]]\nfilter = "#"\nchain = ["schema-guard"]\n' \
            "$root/target/js-policies" "$wasm" "$config" >"$work/$side.toml"
        "$twinguard" eval --config "$work/$side.toml" --input "$here/agreement/messages.ndjson" |
            jq -c "$norm" >"$work/$side.out"
    done
    if ! diff -u "$work/rust.out" "$work/js.out" >"$work/diff"; then
        echo "agree: configuration $n ($config) differs:" >&2
        cat "$work/diff" >&2
        fail=1
    fi
done <"$here/agreement/configs.txt"
messages=$(grep -c . "$here/agreement/messages.ndjson")
if [ "$fail" -ne 0 ]; then
    echo "agree: the Rust and the JavaScript schema-guard differ" >&2
    exit 1
fi
echo "agree: $messages messages x $n configurations: the Rust and the JavaScript schema-guard agree"
