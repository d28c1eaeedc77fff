#!/usr/bin/env bash
# Builds the local server images the fixtures' container backend runs: one `FROM scratch` image
# per server binary on this machine, holding the binary and every library `ldd` lists (no
# registry is needed, nothing is pulled). Tags: ferry-redis:<version>, ferry-valkey:<version>.
# Each image carries labels naming the server (ferry.server.family, .version, .path, .sha256);
# an image whose sha256 label matches its binary is not built again.
#
# The backend runs other server images too (`redis:7.2`, `valkey/valkey:8`, named by
# FERRY_IMAGE or `.image(...)`): it passes only `--option value` arguments, which the official
# images' docker-entrypoint.sh hands to the server, and learns the server of an image without
# our labels by running it once with `--version`. To test that without a registry, the first
# binary is also built into ferry-<family>-entrypoint:<version>, an imitation of an official
# image: no ferry labels, Debian's dash as /bin/sh, an ENTRYPOINT script that prepends
# <family>-server to arguments starting with `-` (or ending in `.conf`), the server on PATH,
# WORKDIR and VOLUME /data owned by uid 999, run as that uid (as the official one runs after
# gosu). It is built every time: Docker's build cache makes an unchanged one instant.
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

# Sets `family` and `version` (the caller's locals) from `$1 --version`.
describe() {
    # `Redis server v=7.0.15 sha=...` or `Valkey server v=9.1.2 ...`
    read -r family version < <("$1" --version |
        awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^v=/) v = substr($i, 3); print tolower($1), v }')
    if [ "$family" != redis ] && [ "$family" != valkey ] || [ -z "$version" ]; then
        echo "error: $1 is not a Redis or Valkey server" >&2
        return 1
    fi
}

# Copies the executable $1 to $2$3, and every library `ldd` lists to the same path under $2.
copy_with_libraries() {
    mkdir -p "$2$(dirname "$3")"
    cp -L "$1" "$2$3"
    # `libfoo.so => /lib/.../libfoo.so (0x...)` and the loader's `/lib64/ld-linux-x86-64.so.2 (0x...)`
    ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' |
        while read -r lib; do
            mkdir -p "$2$(dirname "$lib")"
            cp -L "$lib" "$2$lib"
        done
}

# Builds the context $2 as $1. The legacy builder's deprecation notice is noise: the output is
# shown only on failure.
docker_build() {
    local output
    if ! output=$(docker build --quiet --tag "$1" "$2" 2>&1); then
        echo "$output" >&2
        return 1
    fi
}

build() {
    local binary family version exe tag sha have context started
    # Not resolved: Debian's redis-server is a link to redis-check-rdb, which acts by its name.
    binary=$1
    describe "$binary"
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
    copy_with_libraries "$binary" "$context/rootfs" "/usr/local/bin/$exe"
    cat >"$context/Dockerfile" <<EOF
FROM scratch
COPY rootfs/ /
WORKDIR /data
LABEL ferry.server.family="$family" ferry.server.version="$version" \\
      ferry.server.path="$binary" ferry.server.sha256="$sha"
ENTRYPOINT ["/usr/local/bin/$exe"]
EOF
    docker_build "$tag" "$context"
    echo "$tag: built in $(( $(now_ms) - started )) ms ($(size_mb "$tag") MB, from $binary)"
}

# The imitation of an official image described at the top, from the server binary $1.
build_entrypoint_image() {
    local binary family version shell tag context started
    binary=$1
    describe "$binary"
    shell=$(readlink -f /bin/sh)
    tag="ferry-$family-entrypoint:$version"
    started=$(now_ms)
    context=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now: the trap must remove this context
    trap "rm -rf '$context'" RETURN
    copy_with_libraries "$binary" "$context/rootfs" "/usr/local/bin/$family-server"
    copy_with_libraries "$shell" "$context/rootfs" /bin/sh
    mkdir -p "$context/data"
    # The official script without its chown and gosu: the image runs as uid 999 instead.
    cat >"$context/rootfs/usr/local/bin/docker-entrypoint.sh" <<EOF
#!/bin/sh
set -e
if [ "\${1#-}" != "\$1" ] || [ "\${1%.conf}" != "\$1" ]; then
    set -- $family-server "\$@"
fi
um="\$(umask)"
if [ "\$um" = '0022' ]; then
    umask 0077
fi
exec "\$@"
EOF
    chmod 755 "$context/rootfs/usr/local/bin/docker-entrypoint.sh"
    cat >"$context/Dockerfile" <<EOF
FROM scratch
COPY rootfs/ /
COPY --chown=999:999 data/ /data/
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
VOLUME /data
WORKDIR /data
USER 999:999
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["$family-server"]
EOF
    docker_build "$tag" "$context"
    echo "$tag: built in $(( $(now_ms) - started )) ms ($(size_mb "$tag") MB, from $binary and $shell)"
}

for binary in "${binaries[@]}"; do
    build "$binary"
done
build_entrypoint_image "${binaries[0]}"
