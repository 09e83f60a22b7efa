#!/bin/sh
# /api/chat through openai.so against a fake model server that answers after
# a fixed delay (bench/fake_model.c, 200 ms; FAKE=node uses the Node.js
# bench/fake_model.js instead, which costs far more CPU), with many concurrent
# conversations. Reports requests/s against the ideal (concurrency / delay),
# chatgate's added latency (its percentiles minus the fake's own, measured
# with the same wrk settings directly against the fake), and RSS at idle and
# under load.
#
#   bench/backend.sh                      (after make build)
#   PIN=1 bench/backend.sh                chatgate on CPU 1, the load on CPU 0
#   CONNECTIONS=1000 DURATION=20 DELAY_MS=200 bench/backend.sh
#   FAKE=node bench/backend.sh
#   STEADY=0 bench/backend.sh             wrk only
#
# After wrk, bench/loadgen.c (libuv, built here with cc) measures the steady
# state: the same connections, WARMUP seconds unrecorded, then DURATION
# seconds recorded. wrk counts its opening burst (every connection's first
# request in one instant) in its percentiles; the steady-state figures are
# what a gateway with long-lived connections sees.
set -eu
cd "$(dirname "$0")/.."
BIN=${BIN:-build/chatgate}
PLUGINS=${PLUGINS:-build/plugins}
# Long enough that the first second (1,000 connections opening at once,
# each with its first request) is not itself the 99th percentile.
DURATION=${DURATION:-30}
CONNECTIONS=${CONNECTIONS:-1000}
THREADS=${THREADS:-2}
export DELAY_MS=${DELAY_MS:-200}
# Each wrk thread cycles over BENCH_USERS users: with the default, twice as
# many conversations as its connections, so two requests of one
# conversation are almost never in flight together (the router would
# rightly serialize them), and every conversation keeps a real history.
export BENCH_USERS=${BENCH_USERS:-$CONNECTIONS}

[ -x "$BIN" ] || { echo "bench: build first (make build)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench: wrk missing" >&2; exit 1; }
FAKE=${FAKE:-c}
# PIN=1: chatgate alone on CPU 1, wrk and the fake on CPU 0, so the figures
# are not the kernel scheduler sharing two cores among four busy threads.
if [ "${PIN:-0}" = 1 ]; then
  CG_CPU="taskset -c 1"; LOAD_CPU="taskset -c 0"
else
  CG_CPU=""; LOAD_CPU=""
fi
if [ "$FAKE" = node ]; then
  command -v node >/dev/null || { echo "bench: node missing" >&2; exit 1; }
fi
ulimit -n 65536 2>/dev/null || true

work=$(mktemp -d)
cleanup() {
  [ -n "${cg_pid:-}" ] && kill "$cg_pid" 2>/dev/null || true
  [ -n "${fake_pid:-}" ] && kill "$fake_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CG_PORT=$(free_port)
FAKE_PORT=$(free_port)

if [ "$FAKE" = node ]; then
  $LOAD_CPU node bench/fake_model.js "$FAKE_PORT" > "$work/fake.out" &
else
  cc -O2 -o "$work/fake_model" bench/fake_model.c $(pkg-config --cflags --libs libuv)
  $LOAD_CPU "$work/fake_model" "$FAKE_PORT" > "$work/fake.out" &
fi
fake_pid=$!

cat > "$work/chatgate.yaml" <<YAML
logging:
  level: warn
listeners:
  api:
    address: 127.0.0.1
    port: $CG_PORT
    maxConnections: 20000
plugins:
  dir: $PLUGINS
  instances:
    - name: model
      plugin: openai.so
      config:
        endpoint: http://127.0.0.1:$FAKE_PORT/v1
        model: bench
        stream: false
        maxConcurrent: 4096
        maxQueue: 4096
    - name: memory
      plugin: memory.so
router:
  model: model
  cache: memory
  maxQueue: 8192
YAML

$CG_CPU "$BIN" --config "$work/chatgate.yaml" 2>"$work/chatgate.log" &
cg_pid=$!
python3 - "$CG_PORT" "$FAKE_PORT" <<'PY'
import socket, sys, time
for port in sys.argv[1:]:
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", int(port)), timeout=1).close(); break
        except OSError:
            time.sleep(0.01)
PY
sleep 0.5
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
IDLE_RSS=$(rss_kb "$cg_pid")

# The fake alone, with the same wrk settings: its own latency is the floor.
BENCH_PATH=/v1/chat/completions $LOAD_CPU wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency \
  -s bench/chat.lua "http://127.0.0.1:$FAKE_PORT" > "$work/direct.txt"

echo "== chatgate + openai.so: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s POST /api/chat (model answers after ${DELAY_MS} ms)"
$LOAD_CPU wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -s bench/chat.lua "http://127.0.0.1:$CG_PORT" > /dev/null
$LOAD_CPU wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/chat.lua \
  "http://127.0.0.1:$CG_PORT" > "$work/cg.txt" &
wrk_pid=$!
sleep $((DURATION / 2))
LOAD_RSS=$(rss_kb "$cg_pid")
wait "$wrk_pid"
cat "$work/cg.txt"

pct() { awk -v p="$2" '$1 == p {print $2}' "$1"; }
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) printf "%.3f", v / 1000; else if (v ~ /ms$/) printf "%.3f", v + 0; else printf "%.3f", v * 1000 }'; }
rps_of() { awk '/Requests\/sec/ {print $2}' "$1"; }

CG_RPS=$(rps_of "$work/cg.txt")
IDEAL=$(awk -v c="$CONNECTIONS" -v d="$DELAY_MS" 'BEGIN { printf "%.0f", c / (d / 1000) }')
CG50=$(to_ms "$(pct "$work/cg.txt" 50%)"); CG99=$(to_ms "$(pct "$work/cg.txt" 99%)")
D50=$(to_ms "$(pct "$work/direct.txt" 50%)"); D99=$(to_ms "$(pct "$work/direct.txt" 99%)")
ERRORS=$(grep -E "Non-2xx|Socket errors" "$work/cg.txt" || true)

echo
echo "== summary"
echo "requests/s:              $CG_RPS (ideal $IDEAL = $CONNECTIONS / ${DELAY_MS} ms; $(awk -v a="$CG_RPS" -v b="$IDEAL" 'BEGIN { printf "%.1f%%", 100 * a / b }'))"
echo "fake model alone p50/p99: $D50 / $D99 ms ($(rps_of "$work/direct.txt") req/s)"
echo "through chatgate p50/p99: $CG50 / $CG99 ms"
echo "added by chatgate p50:   $(awk -v a="$CG50" -v b="$D50" 'BEGIN { printf "%.2f ms", a - b }')"
echo "added by chatgate p99:   $(awk -v a="$CG99" -v b="$D99" 'BEGIN { printf "%.2f ms", a - b }')"
echo "RSS idle / under load:   $IDLE_RSS kB / $LOAD_RSS kB ($(awk -v l="$LOAD_RSS" -v i="$IDLE_RSS" -v c="$CONNECTIONS" 'BEGIN { printf "%.1f", (l - i) / c }') kB per in-flight conversation)"
echo "model retries logged:    $(grep -c "retrying in" "$work/chatgate.log" || true)"
grep "retrying in" "$work/chatgate.log" | head -3 || true
[ -z "$ERRORS" ] || echo "errors:                  $ERRORS"

if [ "${STEADY:-1}" = 1 ]; then
  WARMUP=${WARMUP:-5}
  cc -O2 -o "$work/loadgen" bench/loadgen.c $(pkg-config --cflags --libs libuv)
  echo
  echo "== steady state (bench/loadgen.c): $CONNECTIONS connections, ${WARMUP} s warm-up, ${DURATION} s recorded"
  $LOAD_CPU "$work/loadgen" "$FAKE_PORT" /v1/chat/completions "$CONNECTIONS" "$WARMUP" "$DURATION" \
    "$BENCH_USERS" > "$work/steady_direct.txt"
  $LOAD_CPU "$work/loadgen" "$CG_PORT" /api/chat "$CONNECTIONS" "$WARMUP" "$DURATION" \
    "$BENCH_USERS" > "$work/steady_cg.txt"
  lg() { awk -v k="$2" '{for (i = 1; i < NF; i++) if ($i == k) print $(i + 1)}' "$1"; }
  echo "fake model alone:        $(sed -n 2p "$work/steady_direct.txt") ($(sed -n 1p "$work/steady_direct.txt"))"
  echo "through chatgate:        $(sed -n 2p "$work/steady_cg.txt") ($(sed -n 1p "$work/steady_cg.txt"))"
  for p in p50 p99 p99.9; do
    echo "added by chatgate $p:$(printf '%*s' $((7 - ${#p})) '')$(awk -v a="$(lg "$work/steady_cg.txt" "$p")" -v b="$(lg "$work/steady_direct.txt" "$p")" 'BEGIN { printf "%.2f ms", a - b }')"
  done
fi
