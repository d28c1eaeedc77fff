#!/usr/bin/env bash
# Full sync over TLS (rediss://) against plain TCP on the same 3-master clusters, both
# measured in the same run; prints the TLS / plain ratios of wall and CPU time.
# Usage: ci/bench-tls.sh [KEYS]   (default 200000)
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh >/dev/null
cargo build --quiet --release --locked
cargo run --quiet --release --locked --example bench_tls -- "$@"
