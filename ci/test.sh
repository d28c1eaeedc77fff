#!/usr/bin/env bash
# The whole test suite: installs what it needs, checks formatting and lints, runs every test.
# Usage: ci/test.sh            (from anywhere; CI runs it from a clean clone via .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/setup.sh
bash ci/redis-image.sh
export FERRY_SERVERS_DIR="${FERRY_SERVERS_DIR:-$HOME/.cache/ferry/servers}"

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked
