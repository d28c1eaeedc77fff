#!/usr/bin/env bash
# The README's main command: installs what is missing, builds ferry, runs `ferry demo`
# (local source and target clusters, sample data, precheck, full sync, verify, cleanup).
# Usage: ci/demo.sh [ferry demo flags, e.g. --keys 1000000]
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh >/dev/null
cargo build --quiet --release --locked
exec ./target/release/ferry demo "$@"
