#!/bin/sh
# Throughput of POST /api/chat (echo backend, memory cache, one loop thread)
# against nginx answering a fixed 200 with one worker, both with wrk on
# loopback at the same concurrency. Also idle RSS and start-to-ready.
#
#   bench/chat.sh                 (after make build; or: make bench)
#   DURATION=20 CONNECTIONS=64 bench/chat.sh
set -eu
cd "$(dirname "$0")/.."
BIN=${BIN:-build/chatgate}
PLUGINS=${PLUGINS:-build/plugins}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
export BENCH_USERS=${BENCH_USERS:-10000}

[ -x "$BIN" ] || { echo "bench: build first (make build)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench: wrk missing (packaging/install-build-deps.sh)" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

work=$(mktemp -d)
cleanup() {
  [ -n "${cg_pid:-}" ] && kill "$cg_pid" 2>/dev/null || true
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CG_PORT=$(free_port)
NG_PORT=$(free_port)

cat > "$work/chatgate.yaml" <<YAML
logging:
  level: warn
listeners:
  api:
    address: 127.0.0.1
    port: $CG_PORT
plugins:
  dir: $PLUGINS
  instances:
    - name: echo
      plugin: echo.so
    - name: memory
      plugin: memory.so
router:
  model: echo
  cache: memory
YAML

mkdir -p "$work/nginx"
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server {
    listen 127.0.0.1:$NG_PORT;
    location / {
      default_type application/json;
      return 200 '{"answer":"echo: hello from the benchmark (turn 1)"}';
    }
  }
}
NGINX

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
rps_of() { awk '/Requests\/sec/ {print $2}' "$1"; }

echo "== start-to-ready (median of 10 spawns)"
READY_MS=$(python3 bench/startup.py "$BIN" "$work/chatgate.yaml" "$CG_PORT" 10)
echo "$READY_MS ms"

"$BIN" --config "$work/chatgate.yaml" 2>"$work/chatgate.log" &
cg_pid=$!
python3 - "$CG_PORT" <<'PY'
import socket, sys, time
for _ in range(500):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close(); break
    except OSError:
        time.sleep(0.01)
PY
sleep 0.5
IDLE_RSS=$(rss_kb "$cg_pid")
echo "== chatgate idle RSS: $IDLE_RSS kB"

"$NGINX" -c "$work/nginx.conf" -p "$work/nginx" 2>>"$work/nginx/error.log" &
sleep 0.5

echo "== warm-up"
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -s bench/chat.lua "http://127.0.0.1:$CG_PORT" >/dev/null
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -s bench/chat.lua "http://127.0.0.1:$NG_PORT" >/dev/null

echo "== chatgate: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s -s bench/chat.lua POST /api/chat"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/chat.lua "http://127.0.0.1:$CG_PORT" | tee "$work/cg.txt"
LOAD_RSS=$(rss_kb "$cg_pid")
echo "== nginx (1 worker, fixed 200): same wrk command"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/chat.lua "http://127.0.0.1:$NG_PORT" | tee "$work/ng.txt"

CG_RPS=$(rps_of "$work/cg.txt")
NG_RPS=$(rps_of "$work/ng.txt")
RATIO=$(awk -v a="$CG_RPS" -v b="$NG_RPS" 'BEGIN { printf "%.2f", a / b }')
ERRORS=$(grep -E "Non-2xx|Socket errors" "$work/cg.txt" || true)

echo
echo "== summary"
echo "chatgate requests/s:   $CG_RPS"
echo "nginx requests/s:      $NG_RPS"
echo "ratio chatgate/nginx:  $RATIO"
echo "idle RSS:              $IDLE_RSS kB"
echo "RSS after load:        $LOAD_RSS kB"
echo "start to ready:        $READY_MS ms"
[ -z "$ERRORS" ] || echo "chatgate errors:       $ERRORS"

echo
echo "== heap allocations per request (LD_PRELOAD counter, keep-alive, after warm-up)"
cc -O2 -shared -fPIC -o "$work/malloc_count.so" bench/malloc_count.c
kill "$cg_pid" 2>/dev/null; wait "$cg_pid" 2>/dev/null || true; cg_pid=
python3 bench/allocs.py "$BIN" "$work/chatgate.yaml" "$CG_PORT" "$work/malloc_count.so"
