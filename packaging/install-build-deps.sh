#!/bin/sh
# Installs the Debian 12 packages chatgate needs to build, test and
# benchmark, if any are missing. (prometheus is there for promtool, which
# checks the alert rules; on a machine with systemd the package also starts
# a Prometheus server on port 9090, which chatgate's tests do not use.)
# Idempotent and quiet when all are present. Runs apt-get as root, or
# through sudo otherwise.
set -eu

PACKAGES="
build-essential
cmake
pkg-config
libuv1-dev
node-llhttp
libsimdjson-dev
libssl-dev
libcurl4-openssl-dev
libyaml-cpp-dev
libspdlog-dev
libfmt-dev
catch2
python3
curl
openssl
wrk
nginx-light
nodejs
libhiredis-dev
redis-server
python3-websockets
prometheus
libjs-chart.js
"

missing=""
for p in $PACKAGES; do
  # Installed means dpkg says "install ok installed".
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "install-build-deps: missing packages:$missing" >&2
  echo "install-build-deps: run as root or install sudo" >&2
  exit 1
fi

echo "install-build-deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
