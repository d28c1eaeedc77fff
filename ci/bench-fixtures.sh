#!/usr/bin/env bash
# Cluster start time and dataset load rate, each with a baseline measured in the same run.
# Usage: ci/bench-fixtures.sh [RUNS] [KEYS]
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh >/dev/null
cargo run --quiet --release -p ferry-fixtures --example bench_fixtures -- "$@"
