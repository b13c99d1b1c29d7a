#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ for a bounded time each: the payload index and redaction
# (JSON, CBOR), NDJSON input lines, the config file, topic filters and templates.
#
#   scripts/fuzz.sh                    # every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh payload
#
# Needs a nightly toolchain (libFuzzer's instrumentation); installs cargo-fuzz from the
# package registry when it is missing. Not part of CI: the first build takes ~15 minutes.
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the script; replay it with
# `cargo +nightly fuzz run <target> <file>` from fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(payload ndjson config topics)

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz: libFuzzer needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz..." >&2
    cargo +nightly install cargo-fuzz --locked
fi

export CARGO_TARGET_DIR="$PWD/target/fuzz"
cd fuzz
for t in "${targets[@]}"; do
    [ -d "seeds/$t" ] || { echo "fuzz: no target $t (have: payload ndjson config topics)" >&2; exit 1; }
    mkdir -p "corpus/$t"
    echo "fuzz: $t for ${seconds}s" >&2
    # New inputs go to corpus/<target> (kept between runs, not committed); seeds/ is read only.
    cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1
done
