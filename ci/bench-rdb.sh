#!/usr/bin/env bash
# RDB parse throughput of `ferry rdb inspect` against `redis-check-rdb` on the same files, in
# the same run: (a) KEYS small mixed keys, (b) a file dominated by big values. Both files are
# saved by a real redis-server from the fixtures' datasets. Prints wall time (median of RUNS),
# MB/s, the ratio, and the peak RSS of each tool.
# Usage: ci/bench-rdb.sh [RUNS] [KEYS] [BIG_STRING_MIB]   (defaults: 3 1000000 450)
# Set FERRY_BENCH_RDB_DIR to keep the files there and reuse them in later runs (delete them to
# make new ones); otherwise they go to a temporary directory removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
keys=${2:-1000000}
big_mib=${3:-450}

bash ci/setup.sh >/dev/null
if [ ! -x /usr/bin/time ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
fi
check_rdb=$(command -v redis-check-rdb)

cargo build --quiet --release -p ferry
ferry="${CARGO_TARGET_DIR:-target}/release/ferry"
work=${FERRY_BENCH_RDB_DIR:-}
if [ -z "$work" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
if [ ! -f "$work/small.rdb" ] || [ ! -f "$work/big.rdb" ]; then
  cargo run --quiet --release -p ferry-fixtures --example bench_rdb_files -- "$work" "$keys" "$big_mib"
fi

# run_once CMD...: prints "<wall seconds> <peak RSS KiB>" for one run (output discarded).
run_once() {
  local start end
  start=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$work/rss" "$@" >/dev/null 2>"$work/stderr" || {
    echo "bench-rdb: $* failed:" >&2
    cat "$work/stderr" >&2
    exit 1
  }
  end=$(date +%s.%N)
  echo "$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.4f", e - s }') $(cat "$work/rss")"
}

# measure CMD...: median wall time and highest peak RSS over $runs runs.
measure() {
  local i
  for ((i = 0; i < runs; i++)); do run_once "$@"; done |
    sort -n | awk '{ t[NR] = $1; if ($2 > rss) rss = $2 } END { printf "%s %s", t[int((NR + 1) / 2)], rss }'
}

echo "bench-rdb: $runs runs each, medians; $(nproc) cores; $("$check_rdb" --version 2>/dev/null | head -1 || echo redis-check-rdb)"
for name in small big; do
  file="$work/$name.rdb"
  bytes=$(stat -c %s "$file")
  cat "$file" >/dev/null # page cache: both tools read from memory
  read -r ours ours_rss <<<"$(measure "$ferry" rdb inspect "$file")"
  read -r theirs theirs_rss <<<"$(measure "$check_rdb" "$file")"
  awk -v n="$name" -v b="$bytes" -v o="$ours" -v orss="$ours_rss" -v t="$theirs" -v trss="$theirs_rss" 'BEGIN {
    mb = b / 1e6
    printf "%-5s %8.1f MB: ferry rdb inspect %7.3f s %8.1f MB/s peak RSS %7.1f MiB | redis-check-rdb %7.3f s %8.1f MB/s peak RSS %7.1f MiB | %.2fx faster\n",
      n, mb, o, mb / o, orss / 1024, t, mb / t, trss / 1024, t / o
  }'
done
read -r json _ <<<"$(measure sh -c "\"$ferry\" rdb inspect --json \"$work/small.rdb\" >/dev/null")"
echo "small with --json (a JSON line per key, to /dev/null): $json s"
"$ferry" rdb inspect "$work/small.rdb" | sed -n '1,12p'
