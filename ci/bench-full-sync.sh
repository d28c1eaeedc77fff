#!/usr/bin/env bash
# Full sync of a 3-master cluster into a 3-master cluster: ferry's wall time, CPU seconds
# and peak RSS, against the target's write limit (RESTORE via redis-cli --pipe) and native
# replication, all measured in the same run.
# Usage: ci/bench-full-sync.sh [KEYS] [RUNS]   (default 1000000 keys, 1 run; FERRY_BASELINE_BIN:
# another build copies the same source in every run, for a same-run comparison)
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh >/dev/null
cargo build --quiet --release --locked
cargo run --quiet --release --locked --example bench_full_sync -- "$@"
