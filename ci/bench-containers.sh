#!/usr/bin/env bash
# Container cluster start (ContainerCluster) against local processes (LocalCluster), measured
# in the same run. Usage: ci/bench-containers.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh >/dev/null
bash ci/redis-image.sh
cargo run --quiet --release -p ferry-fixtures --example bench_container_start -- "$@"
