#!/usr/bin/env bash
# Runs every test on a fresh machine, installing what the tests need first:
# the wasm32-wasip2 target (guests are built from source by the tests), Mosquitto (for the
# broker tests), nats-server (the scale-out tests), Prometheus (for the metrics tests), componentize-py (Python policies) and
# componentize-js (JavaScript policies).
set -euo pipefail
cd "$(dirname "$0")/.."

# The pinned toolchain (rust-toolchain.toml), if this machine lacks it; no update if present.
rustup toolchain install --no-update --no-self-update >/dev/null
rustup target add wasm32-wasip2 >/dev/null

# Mosquitto (broker and plugin tests) and Prometheus (the metrics tests scrape `serve` with a
# real one and ask its query API).
missing=()
command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
# NATS with JetStream: the scale-out tests run a 3-node cluster on loopback.
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3 python3-venv python3-pip)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]}..." >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq >/dev/null
    $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Policies in Python: componentize-py, pinned, in a venv under target/tools (the authoring tests
# build Python components with it), and the Python SDK's and port's own unit tests.
./scripts/python-tools.sh
./guest-sdk-python/tests/run.sh
# Policies in JavaScript: componentize-js, pinned, under target/tools (npm). The agreement
# scripts compare outcomes with jq.
./scripts/js-tools.sh

# Guests are built once by the test helper into target/guest-fixtures; building them here
# first gives a clear error before any test starts.
CARGO_TARGET_DIR=target/guest-fixtures cargo build --release --target wasm32-wasip2 \
    -p allow-all -p pii-redact -p identity-guard -p schema-guard -p replay-guard \
    -p rate-guard -p range-guard -p anomaly-guard -p command-guard -p door-hours -p hostile -p wrong-version -p wrong-world -p wrong-signature

# Everything, the SDK's and policies' own unit and doc tests included (their bindings compile
# natively; the host imports are unreachable there). The test-only guests have no tests.
cargo test --workspace --exclude hostile --exclude wrong-version --exclude wrong-world --exclude wrong-signature \
    --exclude twinguard-compare --exclude twinguard-compare-guest "$@"
