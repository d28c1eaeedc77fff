#!/usr/bin/env bash
# The conformance suite alone, with its report: every write command of every server build
# present (ci/setup.sh), synced through two SIGKILLs of ferry and judged exact; the known
# gaps and skipped builds are printed. The same tests run in ci/test.sh (cargo test).
# Usage: ci/conformance.sh [test name filter, e.g. conformance_redis_7_0]
set -euo pipefail
cd "$(dirname "$0")/.."

export FERRY_SERVERS_DIR="${FERRY_SERVERS_DIR:-$HOME/.cache/ferry/servers}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
started=$(date +%s)
status=0
cargo test --locked --test conformance -- --nocapture "$@" 2>&1 | tee "$log" \
    | grep -E '^(SKIPPED|test |test result)|runs in|known gap summary|not synced here|failures:' || true
status=${PIPESTATUS[0]}
printf '\nconformance: %s known-gap runs, %s s in all\n' \
    "$(grep -c ': known gap: ' "$log" || true)" "$(( $(date +%s) - started ))"
if [ "$status" -ne 0 ]; then
    grep -E 'diverges|stopped by itself|passes now|did not answer' "$log" | head -50 || true
fi
exit "$status"
