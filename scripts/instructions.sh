#!/usr/bin/env bash
# Instructions per evaluation, counted by valgrind (callgrind) inside the evaluate bench's
# counted function only: a figure another process on a shared machine cannot move, for
# comparing two builds where wall-clock rounds disagree. Needs valgrind (Debian's package).
#
#   ./scripts/instructions.sh [count] [bench binary]
#
# Without a binary it builds `cargo bench -p twinguard-tests --bench evaluate --no-run`.
# Prints each scenario's instructions per message and its ratio to the native redaction.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-2000}"
bin="${2:-}"
command -v valgrind >/dev/null || { echo "instructions: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
if [ -z "$bin" ]; then
    bin=$(cargo bench -p twinguard-tests --bench evaluate --no-run --message-format=json 2>/dev/null |
        jq -r 'select(.reason == "compiler-artifact" and .target.name == "evaluate") | .executable' | tail -1)
fi
[ -x "$bin" ] || { echo "instructions: no bench binary at '$bin'" >&2; exit 1; }
bin=$(realpath "$bin")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
native=""
printf '%-32s %14s %8s\n' scenario instructions/msg "x native"
for s in d_native_redact a_allow_all_reuse b_pii_redact_reuse e_chain_of_3_reading_2_fields f_pack_of_4; do
    # The bench resolves guest paths relative to tests/, as cargo bench runs it.
    (cd tests && EVALUATE_COUNT="$s:$n" valgrind --tool=callgrind --collect-atstart=no \
        --toggle-collect='*twinguard_bench_counted_*' --callgrind-out-file="$out/$s" \
        "$bin" >"$out/$s.log" 2>&1) || { echo "instructions: $s failed:" >&2; tail -20 "$out/$s.log" >&2; exit 1; }
    ir=$(grep -E '^summary:|^totals:' "$out/$s" | head -1 | awk '{print $2}')
    per=$((ir / n))
    [ -n "$native" ] || native=$per
    printf '%-32s %14d %8s\n' "$s" "$per" "$(awk -v a="$per" -v b="$native" 'BEGIN {printf "%.2f", a / b}')"
done
