#!/usr/bin/env bash
# Checks that pii-redact-py (Python) behaves as pii-redact (Rust): the same outcomes for every
# message of agreement/messages.ndjson (action, payload, redaction, alerts, reasons, verdicts;
# not the versions, fuel or time) under agreement/rust.toml and agreement/python.toml, and the
# same refusals (or loads) for every configuration of agreement/bad-configs.ndjson. Exits
# non-zero on any difference, printing it.
#
#   policies/pii-redact-py/agree.sh [--fuzz N [SEED]] [--keep DIR]
#
# --fuzz N: also N random messages (agreement/fuzz.py, seed SEED, default 1), run with
# unbounded fuel and time on both sides.
#
# Builds the Python component first (scripts/python-tools.sh, scripts/build-python-policy.sh)
# into target/python-policies/pii_redact_py.wasm. Environment:
#   TWINGUARD  the host binary (default: target/release/twinguard, else twinguard on PATH)
#   RUST_WASM  the Rust component (default: target/guest-fixtures/wasm32-wasip2/release/
#              pii_redact.wasm, else target/wasm32-wasip2/release/pii_redact.wasm)
#   PY_WASM    the Python component; when set, it is used as it is (no build)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
agreement="$here/agreement"

fail() {
    echo "agree: $*" >&2
    exit 1
}

fuzz=0
seed=1
keep=""
while [ $# -gt 0 ]; do
    case "$1" in
    --fuzz)
        fuzz="${2:?--fuzz needs a number of messages}"
        shift 2
        if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then
            seed="$1"
            shift
        fi
        ;;
    --keep)
        keep="${2:?--keep needs a directory}"
        shift 2
        ;;
    *) fail "unknown argument '$1' (usage: agree.sh [--fuzz N [SEED]] [--keep DIR])" ;;
    esac
done

command -v python3 >/dev/null 2>&1 || fail "python3 not found (it runs the comparison)"

twinguard="${TWINGUARD:-}"
if [ -z "$twinguard" ]; then
    if [ -x "$root/target/release/twinguard" ]; then
        twinguard="$root/target/release/twinguard"
    elif command -v twinguard >/dev/null 2>&1; then
        twinguard="$(command -v twinguard)"
    else
        fail "no twinguard binary: build it (cargo build --release -p twinguard-cli) or set TWINGUARD"
    fi
fi
[ -x "$twinguard" ] || fail "TWINGUARD=$twinguard is not an executable"

rust="${RUST_WASM:-}"
if [ -z "$rust" ]; then
    for candidate in "$root/target/guest-fixtures/wasm32-wasip2/release/pii_redact.wasm" \
        "$root/target/wasm32-wasip2/release/pii_redact.wasm"; do
        if [ -f "$candidate" ]; then
            rust="$candidate"
            break
        fi
    done
    [ -n "$rust" ] ||
        fail "no Rust pii_redact.wasm: build it (cargo build --release --target wasm32-wasip2 -p pii-redact) or set RUST_WASM"
fi
[ -f "$rust" ] || fail "RUST_WASM=$rust does not exist"

python="${PY_WASM:-}"
built=no
if [ -z "$python" ]; then
    "$root/scripts/python-tools.sh"
    python="$root/target/python-policies/pii_redact_py.wasm"
    "$root/scripts/build-python-policy.sh" "$here" "$python"
    built=yes
fi
[ -f "$python" ] || fail "PY_WASM=$python does not exist"

absolute() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
twinguard="$(absolute "$twinguard")"
rust="$(absolute "$rust")"
python="$(absolute "$python")"

if [ -n "$keep" ]; then
    work="$keep"
    mkdir -p "$work"
else
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
fi
# Compiled components are cached between runs: a 19 MB Python component takes seconds to
# compile, and the host compiles it once per [[policy]] entry of a fresh set.
cache="$root/target/python-policies/cache"
mkdir -p "$cache"
chmod 700 "$cache"
if [ "$built" = yes ]; then
    # Builds are not reproducible (every build is a new digest): what earlier builds left in
    # the cache (40 MB each) can never be read again.
    find "$cache" -maxdepth 1 -name '*.cwasm' -delete
fi

# The configs with absolute component paths (and the cache).
sed "s#^path = .*#path = \"$rust\"#" "$agreement/rust.toml" >"$work/rust.toml"
sed -e "s#^path = .*#path = \"$python\"#" -e "s#^cache-dir = .*#cache-dir = \"$cache\"#" \
    "$agreement/python.toml" >"$work/python.toml"

status=0
echo "agree: rust   $rust"
echo "agree: python $python ($(stat -c %s "$python") bytes)"

run() { # CONFIG INPUT OUTPUT: eval, keeping its log
    local started ended
    started=$(date +%s.%N)
    if ! "$twinguard" eval --config "$1" --input "$2" >"$3" 2>"$3.log"; then
        echo "agree: twinguard eval --config $1 failed:" >&2
        tail -5 "$3.log" >&2
        return 1
    fi
    ended=$(date +%s.%N)
    echo "agree: $(basename "$1") ran $(wc -l <"$2") messages in $(python3 -c "print('%.2f' % ($ended - $started))") s (load included)"
}

run "$work/rust.toml" "$agreement/messages.ndjson" "$work/rust.out" || exit 1
run "$work/python.toml" "$agreement/messages.ndjson" "$work/python.out" || exit 1
python3 "$agreement/compare.py" "$work/rust.out" "$work/python.out" "$agreement/messages.ndjson" --stats ||
    status=1

echo "agree: configurations"
python3 "$agreement/configs.py" "$twinguard" "$rust" "$python" "$work" \
    "$(printf '[engine]\ncache-dir = "%s"\n' "$cache")" || status=1

if [ "$fuzz" -gt 0 ]; then
    echo "agree: $fuzz random messages, seed $seed"
    python3 "$agreement/fuzz.py" "$seed" "$fuzz" >"$work/fuzz.ndjson"
    for side in rust python; do
        sed -e 's/^fuel = .*/fuel = 100_000_000_000/' -e 's/^deadline-ms = .*/deadline-ms = 1_000_000/' \
            -e 's/^memory-bytes = .*/memory-bytes = 268_435_456/' "$work/$side.toml" >"$work/fuzz-$side.toml"
    done
    run "$work/fuzz-rust.toml" "$work/fuzz.ndjson" "$work/fuzz-rust.out" || exit 1
    run "$work/fuzz-python.toml" "$work/fuzz.ndjson" "$work/fuzz-python.out" || exit 1
    python3 "$agreement/compare.py" "$work/fuzz-rust.out" "$work/fuzz-python.out" \
        "$work/fuzz.ndjson" --stats || status=1
fi

if [ "$status" -eq 0 ]; then
    echo "agree: the Rust and the Python pii-redact agree"
else
    echo "agree: the Rust and the Python pii-redact DIFFER (see above)" >&2
fi
exit "$status"
