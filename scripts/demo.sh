#!/usr/bin/env bash
# The main job on a fresh machine: builds the shipped policy pack and the host (release), then
# attacks a simulated plant and prints what the pack caught. No broker, no setup.
# Extra arguments go to `twinguard demo` (e.g. --seed 7, --devices 500, --json).
set -euo pipefail
cd "$(dirname "$0")/.."
# The pinned toolchain (rust-toolchain.toml), if this machine lacks it; no update if present.
rustup toolchain install --no-update --no-self-update >/dev/null
rustup target add wasm32-wasip2 >/dev/null
cargo build --release --target wasm32-wasip2 \
    -p identity-guard -p schema-guard -p replay-guard -p rate-guard \
    -p range-guard -p anomaly-guard -p pii-redact -p command-guard
cargo build --release -p twinguard-cli
exec ./target/release/twinguard demo "$@"
