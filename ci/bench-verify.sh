#!/usr/bin/env bash
# ferry verify over identical 3-master clusters (keys/s, CPU, peak RSS) against listing both
# clusters with redis-cli --scan, measured in the same run.
# Then one 1M-field hash (BIG_KEY_FIELDS), identical and with one field changed: peak RSS
# against the hash's MEMORY USAGE.
# Usage: ci/bench-verify.sh [KEYS] [RUNS]   (default 1000000 keys, 1 run; medians over RUNS)
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh >/dev/null
cargo build --quiet --release --locked
cargo run --quiet --release --locked --example bench_verify -- "$@"
# One huge key: a 1M-field hash, peak RSS against the value's size on the server.
cargo run --quiet --release --locked --example bench_verify_big_key -- "${BIG_KEY_FIELDS:-1000000}"
