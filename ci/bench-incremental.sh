#!/usr/bin/env bash
# Incremental sync of a 3-master cluster into a 3-master cluster under mixed writes (SET PX,
# INCR, RPUSH, HINCRBY): the rate ferry sustains with --apply exactly-once and at-least-once
# against the same writes sent straight to the target, and the lag (p50/p99) at fixed rates,
# all measured in the same run.
# Usage: ci/bench-incremental.sh [SECONDS] [RATES...]   (default 5 s; 10000 50000 ops/s)
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh >/dev/null
cargo build --quiet --release --locked
cargo run --quiet --release --locked --example bench_incremental -- "$@"
