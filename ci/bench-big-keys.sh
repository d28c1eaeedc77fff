#!/usr/bin/env bash
# Full sync of big keys (a 1M-field hash, a 100 MiB string, 1M-element list, set and sorted
# set) between two standalone servers: ferry's wall time, CPU seconds and peak RSS, with
# RESTORE allowed and with --rewrite, each checked exact. With FERRY_BASELINE_BIN set (say, a
# release build of the parent commit) that binary is measured in the same run and the ratios
# are printed.
# Usage: ci/bench-big-keys.sh [SCALE]   (multiplies the big keys' sizes, default 1.0)
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh >/dev/null
cargo build --quiet --release --locked
cargo run --quiet --release --locked --example bench_big_keys -- "$@"
