#!/bin/sh
# make test-stress: the whole suite, three times, with `ctest -j4` while
# two busy loops keep both cores loaded, as a slow CI machine or a noisy
# neighbour would. A test that passes only on an idle machine fails here.
#
#   sh tests/stress.sh [BUILD_DIR] [ROUNDS]
set -u
build=${1:-build}
rounds=${2:-3}
[ -d "$build" ] || { echo "stress: no build in $build (make build first)" >&2; exit 2; }
pids=
cleanup() { [ -n "$pids" ] && kill $pids 2>/dev/null; }
trap cleanup EXIT INT TERM
for _ in 1 2; do
  sh -c 'while :; do :; done' &
  pids="$pids $!"
done
failed=0
round=1
while [ "$round" -le "$rounds" ]; do
  echo "== stress round $round of $rounds: ctest -j4 with both cores busy"
  start=$(date +%s)
  if (cd "$build" && ctest --output-on-failure -j4); then
    echo "== stress round $round: passed in $(( $(date +%s) - start )) s"
  else
    echo "== stress round $round: FAILED"
    failed=$((failed + 1))
  fi
  round=$((round + 1))
done
[ "$failed" -eq 0 ] || { echo "stress: $failed of $rounds rounds failed" >&2; exit 1; }
echo "stress: $rounds rounds passed"
