#!/bin/sh
# Installs the Debian 12 packages chatgate needs to build, run and
# benchmark, if any are missing; with --test also what only the tests need,
# and tests/browser's npm packages. (prometheus is there for promtool; on a
# machine with systemd the package also starts a Prometheus server on port
# 9090, which chatgate's tests do not use.) Idempotent and quiet when all
# are present. Runs apt-get as root, or through sudo otherwise.
set -eu

PACKAGES="
build-essential
cmake
pkg-config
libuv1-dev
libsystemd-dev
node-llhttp
libsimdjson-dev
libssl-dev
libcurl4-openssl-dev
libyaml-cpp-dev
libyaml-dev
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
libprotobuf-dev
protobuf-compiler
redis-server
python3-websockets
libjs-chart.js
"
# Only the tests need these (--test): promtool checks the alert rules, the
# browser test drives chromium, the fake Feishu platform does its own AES,
# the container-files test reads the Kubernetes YAML (python3-yaml),
# lintian checks the .deb packages, HAProxy fronts the fleet test's three
# instances (tests/integration/test_fleet.py), and a CJK font makes the
# browser test's Chinese screenshot readable (the test passes without it).
TEST_PACKAGES="
prometheus
haproxy
chromium
fonts-wqy-zenhei
python3-cryptography
python3-yaml
lintian
"
# make fuzz (--fuzz): clang with libFuzzer and the sanitizer runtimes.
FUZZ_PACKAGES="
clang
libclang-rt-14-dev
"
WITH_TESTS=0
[ "${1:-}" = "--test" ] && WITH_TESTS=1 && PACKAGES="$PACKAGES $TEST_PACKAGES"
[ "${1:-}" = "--fuzz" ] && PACKAGES="$PACKAGES $FUZZ_PACKAGES"

missing=""
for p in $PACKAGES; do
  # Installed means dpkg says "install ok installed".
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
# npm comes with NodeSource's nodejs, but is its own package in Debian's.
if [ "$WITH_TESTS" = 1 ]; then
  command -v npm >/dev/null 2>&1 || missing="$missing npm"
fi

if [ -n "$missing" ]; then
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
fi

# The browser test's driver, playwright-core, from the npm registry at the
# version its lockfile pins (it uses Debian's chromium; no browser download).
browser_dir="$(dirname "$0")/../tests/browser"
if [ "$WITH_TESTS" = 1 ] && [ ! -d "$browser_dir/node_modules/playwright-core" ]; then
  echo "install-build-deps: npm ci in tests/browser"
  (cd "$browser_dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
