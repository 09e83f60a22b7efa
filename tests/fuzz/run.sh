#!/bin/sh
# make fuzz: runs every libFuzzer target in DIR for SECONDS each, starting
# from its seed corpus (tests/fuzz/corpus/<target>/, read only: what the run
# finds goes to a scratch corpus). A crash, leak, sanitizer report or
# timeout fails the run and leaves the input in DIR/artifacts/, to become a
# regression seed.
set -u
dir=$1
seconds=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir/artifacts"
passed=0
failed=0
for target in fuzz_http fuzz_chat_request fuzz_config fuzz_ws_frame fuzz_queue_message fuzz_sse fuzz_feishu_event \
              fuzz_feishu_frame fuzz_dingtalk; do
  scratch=$(mktemp -d)
  seeds="$here/corpus/$target"
  [ -d "$seeds" ] || { echo "fuzz: no seed corpus $seeds" >&2; exit 1; }
  log="$dir/artifacts/$target.log"
  if "$dir/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
      -print_final_stats=1 -artifact_prefix="$dir/artifacts/$target-" "$scratch" "$seeds" \
      >"$log" 2>&1; then
    passed=$((passed + 1))
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
    echo "fuzz: $target: ok, $runs runs in ${seconds}s, $cov"
  else
    failed=$((failed + 1))
    echo "fuzz: $target: FAILED (input and log in $dir/artifacts/)"
    tail -n 40 "$log"
  fi
  rm -rf "$scratch"
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
