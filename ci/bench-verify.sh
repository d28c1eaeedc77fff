#!/usr/bin/env bash
# ferry verify over identical 3-master clusters (keys/s, CPU, peak RSS) against listing both
# clusters with redis-cli --scan, measured in the same run.
# Usage: ci/bench-verify.sh [KEYS] [RUNS]   (default 1000000 keys, 1 run; medians over RUNS)
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh >/dev/null
cargo build --quiet --release --locked
cargo run --quiet --release --locked --example bench_verify -- "$@"
