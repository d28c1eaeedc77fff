#!/usr/bin/env bash
# Builds the local server images the fixtures' container backend runs: one `FROM scratch` image
# per server binary on this machine, holding the binary and every library `ldd` lists (no
# registry is needed, nothing is pulled). Tags: ferry-redis:<version>, ferry-valkey:<version>.
# Each image carries labels naming the server (ferry.server.family, .version, .path, .sha256);
# an image whose sha256 label matches its binary is not built again.
# Usage: ci/redis-image.sh [SERVER_BINARY...]
#        (default: redis-server on PATH and every build ci/setup.sh put in $FERRY_SERVERS_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! api=$(docker version --format '{{.Server.APIVersion}}' 2>/dev/null) || [ -z "$api" ]; then
    echo "SKIPPED: no Docker engine answers (docker version failed): no server image built"
    exit 0
fi

servers_dir="${FERRY_SERVERS_DIR:-$HOME/.cache/ferry/servers}"
binaries=("$@")
if [ ${#binaries[@]} -eq 0 ]; then
    if default=$(command -v redis-server); then
        binaries+=("$default")
    fi
    for candidate in "$servers_dir"/*/redis-server "$servers_dir"/*/valkey-server; do
        [ -x "$candidate" ] && binaries+=("$candidate")
    done
fi
if [ ${#binaries[@]} -eq 0 ]; then
    echo "SKIPPED: no server binary found (run ci/setup.sh): no server image built"
    exit 0
fi

# Milliseconds since the epoch.
now_ms() { date +%s%3N; }

# The image's size in MB, one decimal.
size_mb() { docker image inspect --format '{{.Size}}' "$1" | awk '{ printf "%.1f", $1 / 1e6 }'; }

build() {
    local binary family version exe tag sha have context started output
    # Not resolved: Debian's redis-server is a link to redis-check-rdb, which acts by its name.
    binary=$1
    # `Redis server v=7.0.15 sha=...` or `Valkey server v=9.1.2 ...`
    read -r family version < <("$binary" --version |
        awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^v=/) v = substr($i, 3); print tolower($1), v }')
    if [ "$family" != redis ] && [ "$family" != valkey ] || [ -z "$version" ]; then
        echo "error: $binary is not a Redis or Valkey server" >&2
        return 1
    fi
    exe="$family-server"
    tag="ferry-$family:$version"
    sha=$(sha256sum "$binary" | cut -d' ' -f1)
    have=$(docker image inspect --format '{{index .Config.Labels "ferry.server.sha256"}}' "$tag" 2>/dev/null || true)
    if [ "$have" = "$sha" ]; then
        echo "$tag: up to date ($(size_mb "$tag") MB, from $binary)"
        return 0
    fi

    started=$(now_ms)
    context=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now: the trap must remove this context
    trap "rm -rf '$context'" RETURN
    mkdir -p "$context/rootfs/usr/local/bin"
    cp -L "$binary" "$context/rootfs/usr/local/bin/$exe"
    # `libfoo.so => /lib/.../libfoo.so (0x...)` and the loader's `/lib64/ld-linux-x86-64.so.2 (0x...)`
    ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
        while read -r lib; do
            mkdir -p "$context/rootfs$(dirname "$lib")"
            cp -L "$lib" "$context/rootfs$lib"
        done
    cat >"$context/Dockerfile" <<EOF
FROM scratch
COPY rootfs/ /
WORKDIR /data
LABEL ferry.server.family="$family" ferry.server.version="$version" \\
      ferry.server.path="$binary" ferry.server.sha256="$sha"
ENTRYPOINT ["/usr/local/bin/$exe"]
EOF
    # The legacy builder's deprecation notice is noise: the output is shown only on failure.
    if ! output=$(docker build --quiet --tag "$tag" "$context" 2>&1); then
        echo "$output" >&2
        return 1
    fi
    echo "$tag: built in $(( $(now_ms) - started )) ms ($(size_mb "$tag") MB, from $binary)"
}

for binary in "${binaries[@]}"; do
    build "$binary"
done
