#!/bin/sh
# TLS on the API listener against plain HTTP, same build and config: wrk on
# loopback, POST /api/chat over keep-alive connections (record cost), then
# GET /healthz with a new connection per request (handshake cost, ECDHE +
# RSA-2048), then the memory one idle TLS connection holds.
#
#   bench/tls.sh                  (after make build)
#   DURATION=20 CONNECTIONS=64 bench/tls.sh
set -eu
cd "$(dirname "$0")/.."
BIN=${BIN:-build/chatgate}
PLUGINS=${PLUGINS:-build/plugins}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
IDLE=${IDLE:-1000}
export BENCH_USERS=${BENCH_USERS:-10000}
[ -x "$BIN" ] || { echo "bench: build first (make build)" >&2; exit 1; }

work=$(mktemp -d)
cleanup() {
  for p in ${plain_pid:-} ${tls_pid:-}; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=bench -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

config() {  # port, extra api lines
  cat <<YAML
logging: {level: warn}
listeners:
  api:
    address: 127.0.0.1
    port: $1
$2
  admin: {enabled: false}
plugins:
  dir: $PLUGINS
  instances: [{name: echo, plugin: echo.so}, {name: memory, plugin: memory.so}]
router: {model: echo, cache: memory}
YAML
}
PLAIN=$(free_port); TLS=$(free_port)
config "$PLAIN" "" > "$work/plain.yaml"
config "$TLS" "    tls: {certFile: $work/cert.pem, keyFile: $work/key.pem}" > "$work/tls.yaml"
"$BIN" --config "$work/plain.yaml" 2>"$work/plain.log" & plain_pid=$!
"$BIN" --config "$work/tls.yaml" 2>"$work/tls.log" & tls_pid=$!
sleep 1
rps_of() { awk '/Requests\/sec/ {print $2}' "$1"; }
p99_of() { awk '$1 == "99%" {print $2}' "$1"; }

for kind in plain tls; do
  if [ $kind = plain ]; then url="http://127.0.0.1:$PLAIN"; else url="https://127.0.0.1:$TLS"; fi
  wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -s bench/chat.lua "$url" >/dev/null
  echo "== $kind: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s -s bench/chat.lua (keep-alive)"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/chat.lua "$url" | tee "$work/$kind-ka.txt"
  echo "== $kind: wrk -H 'Connection: close' GET /healthz (a new connection per request)"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Connection: close" "$url/healthz" \
    | tee "$work/$kind-new.txt"
done

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
before=$(rss_kb "$tls_pid")
python3 - "$TLS" "$IDLE" "$work/cert.pem" "$tls_pid" "$work/idle.txt" <<'PY'
import resource, socket, ssl, sys, time
port, n, ca, pid, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 100), hard))
ctx = ssl.create_default_context(cafile=ca)
held = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    held.append(ctx.wrap_socket(s, server_hostname="127.0.0.1"))
time.sleep(1)
rss = [l for l in open("/proc/%s/status" % pid) if l.startswith("VmRSS")][0].split()[1]
open(out, "w").write(rss)
PY
after=$(cat "$work/idle.txt")

echo
echo "== summary"
printf "keep-alive /api/chat req/s:      plain %s, tls %s (p99 %s / %s)\n" \
  "$(rps_of "$work/plain-ka.txt")" "$(rps_of "$work/tls-ka.txt")" \
  "$(p99_of "$work/plain-ka.txt")" "$(p99_of "$work/tls-ka.txt")"
printf "new connection /healthz req/s:   plain %s, tls %s (p99 %s / %s)\n" \
  "$(rps_of "$work/plain-new.txt")" "$(rps_of "$work/tls-new.txt")" \
  "$(p99_of "$work/plain-new.txt")" "$(p99_of "$work/tls-new.txt")"
echo "RSS with $IDLE idle TLS connections: $before kB -> $after kB ($(( (after - before) * 1024 / IDLE )) bytes each)"
