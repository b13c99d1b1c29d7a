#!/usr/bin/env bash
# The main job, until `twinguard demo` lands: builds the shipped policies and the host, then
# evaluates examples/messages.ndjson through examples/twinguard.toml (no broker needed).
set -euo pipefail
cd "$(dirname "$0")/.."
# The pinned toolchain (rust-toolchain.toml), if this machine lacks it; no update if present.
rustup toolchain install --no-update --no-self-update >/dev/null
rustup target add wasm32-wasip2 >/dev/null
cargo build --release --target wasm32-wasip2 -p allow-all -p pii-redact
cargo build --release -p twinguard-cli
./target/release/twinguard check target/wasm32-wasip2/release/pii_redact.wasm
echo
./target/release/twinguard eval --config examples/twinguard.toml --input examples/messages.ndjson
