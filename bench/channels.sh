#!/bin/sh
# Feishu webhook callbacks through the whole channel pipeline, against nginx
# answering a fixed 200 on the same machine in the same run (issue 15).
#
#   bench/channels.sh                       (after make build)
#   DURATION=20 WARMUP=3 bench/channels.sh
#   PROFILE=1 bench/channels.sh             also perf record the pipeline
#   CALLGRIND=1 bench/channels.sh           only: instructions per event (valgrind)
#
# Every callback is what Feishu sends in webhook mode with an Encrypt Key:
# a schema-2.0 im.message.receive_v1 event, AES-256-CBC encrypted, signed
# with X-Lark-Signature, with its own event_id, message_id and nonce, in a
# p2p chat (no mention needed). bench/feishu_load.c (libuv + OpenSSL, built
# here with cc) precomputes them before it connects. Runs, each against a
# fresh chatgate (feishu.so in webhook mode, memory.so, replyStyle text):
#
#  1. pipeline: 64 keep-alive connections, closed loop, chats cycling over
#     5,000: verify, decrypt, dedupe, route, echo.so (answers at once), the
#     reply API on a fake open platform (nginx, fixed JSON, 1 worker).
#     Counted where the replies arrive: the platform's requests in the window
#     (nginx stub_status), and the acknowledgements the load generator got.
#  2. ack only: the same, echo.so held slow (delayMs: 10 min, its maximum; router queue and
#     model-call caps lifted so nothing is refused), so only verification,
#     dedupe and queueing are measured; no reply is sent.
#     2b: the same on a fresh chatgate for 0.5 + 2 s, under feishu.so's
#     100,000-nonce cap (the 10 s run crosses it; see below).
#  3. nginx: the same load generator and callbacks against nginx `return 200`
#     (1 worker) on the same path.
#  4. steady: 100 chats, one connection each, one callback per chat every
#     100 ms (open loop; latency from the intended send time).
#  5. flood: the same 100 steady chats plus FLOOD connections sending one
#     chat at full speed. Also the lines chatgate logs in this run.
#  For 4 and 5 the steady chats' reply latency (callback sent -> reply
#  request at the platform) comes from nginx's access log.
#
# chatgate runs with logging.level LOG_LEVEL (default info, the default an
# operator gets) and otherwise default router limits, except in run 2.
set -eu
cd "$(dirname "$0")/.."
BIN=${BIN:-build/chatgate}
PLUGINS=${PLUGINS:-build/plugins}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-64}
CHATS=${CHATS:-5000}
POOL=${POOL:-500000}          # callbacks precomputed per closed-loop run
STEADY=${STEADY:-100}
INTERVAL_MS=${INTERVAL_MS:-100}
FLOOD=${FLOOD:-4}             # connections of the flooding chat
LOG_LEVEL=${LOG_LEVEL:-info}
PROFILE=${PROFILE:-0}
PROFILE_S=${PROFILE_S:-8}
CALLGRIND=${CALLGRIND:-0}

[ -x "$BIN" ] || { echo "bench: build first (make build)" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { echo "bench: nginx missing" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || true

work=$(mktemp -d)
cg_pid=
cleanup() {
  [ -n "$cg_pid" ] && kill "$cg_pid" 2>/dev/null || true
  [ -n "${perf_pid:-}" ] && kill "$perf_pid" 2>/dev/null || true
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CG_PORT=$(free_port)
NG_PORT=$(free_port)   # nginx: fixed 200
PF_PORT=$(free_port)   # nginx: the fake open platform
EKEY=bench-encrypt-key
VTOKEN=bench-verification-token

cc -O2 -o "$work/feishu_load" bench/feishu_load.c $(pkg-config --cflags --libs libuv) -lcrypto -lpthread -lm
"$work/feishu_load" selftest

mkdir -p "$work/nginx"
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path $work/nginx/body;
  client_body_buffer_size 16k;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  default_type application/json;
  # Replies to the steady chats' messages (ids om_s...), for their latency.
  map \$request_uri \$steady_reply { ~^/open-apis/im/v1/messages/om_s 1; default 0; }
  log_format replies '\$msec \$request_uri';
  server {
    listen 127.0.0.1:$NG_PORT;
    location / { return 200 '{"msg":"success"}'; }
  }
  server {
    listen 127.0.0.1:$PF_PORT;
    location = /open-apis/auth/v3/tenant_access_token/internal {
      return 200 '{"code":0,"msg":"ok","tenant_access_token":"t-bench","expire":7200}';
    }
    location = /open-apis/bot/v3/info {
      return 200 '{"code":0,"msg":"ok","bot":{"open_id":"ou_bench_bot","app_name":"bench"}}';
    }
    location /open-apis/im/v1/messages {
      access_log $work/replies.log replies buffer=64k flush=1s if=\$steady_reply;
      return 200 '{"code":0,"msg":"success","data":{"message_id":"om_x"}}';
    }
    location = /nginx_status { stub_status; }
    location / { return 404 '{"code":404,"msg":"not in the fake"}'; }
  }
}
NGINX
"$NGINX" -c "$work/nginx.conf" -p "$work/nginx" 2>>"$work/nginx/error.log" &

# $1: name; $2: echo delayMs; $3: extra router lines
write_config() {
  cat > "$work/$1.yaml" <<YAML
logging:
  level: $LOG_LEVEL
listeners:
  api:
    address: 127.0.0.1
    port: $CG_PORT
plugins:
  dir: $PLUGINS
  instances:
    - name: echo
      plugin: echo.so
      config:
        delayMs: $2
    - name: memory
      plugin: memory.so
    - name: feishu
      plugin: feishu.so
      config:
        appId: cli_bench
        appSecret: bench-app-secret
        verificationToken: $VTOKEN
        encryptKey: $EKEY
        domain: http://127.0.0.1:$PF_PORT
        mode: webhook
        replyStyle: text
router:
  model: echo
  cache: memory
$3
YAML
}
write_config pipeline 0 ""
write_config slow 600000 "  maxQueue: 100000000
  maxModelCalls: 0
  modelTimeoutMs: 7200000"

wait_port() {
  python3 - "$1" <<'PY'
import socket, sys, time
for _ in range(500):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close(); break
    except OSError:
        time.sleep(0.01)
PY
}
start_cg() { # $1: config name
  "$BIN" --config "$work/$1.yaml" 2>"$work/$1.log" &
  cg_pid=$!
  wait_port "$CG_PORT"
  sleep 1
}
stop_cg() {
  kill "$cg_pid" 2>/dev/null || true
  wait "$cg_pid" 2>/dev/null || true
  cg_pid=
}
wait_port "$PF_PORT"
wait_port "$NG_PORT"

LOAD="$work/feishu_load"
COMMON="-k $EKEY -t $VTOKEN -u /webhook/feishu -w $WARMUP -d $DURATION"
field() { awk -v k="$2" '{for (i = 1; i < NF; i++) if ($i == k) print $(i + 1)}' "$1" | head -1; }
acks_of() { grep "^$2:" "$1" | sed -n 1p | sed 's/.*: \([0-9]*\) acks\/s.*/\1/'; }

# Reply latency of the steady chats: send log joined with nginx's access log.
reply_latency() { # $1: send log; prints "p50 p99 count missing"
  sleep 1.5  # access_log flush=1s
  python3 - "$1" "$work/replies.log" <<'PY'
import sys
sent = {}
with open(sys.argv[1]) as f:
    for line in f:
        mid, t = line.split()
        sent[mid] = float(t)
lat = []
try:
    with open(sys.argv[2]) as f:
        for line in f:
            t, uri = line.split()
            mid = uri.split("/")[5] if uri.count("/") >= 5 else ""
            if mid in sent:
                lat.append(float(t) * 1000 - sent.pop(mid))
except FileNotFoundError:
    pass
lat.sort()
pct = lambda p: lat[int((len(lat) - 1) * p)] if lat else float("nan")
print("%.1f %.1f %d %d" % (pct(0.5), pct(0.99), len(lat), len(sent)))
PY
  : > "$work/replies.log"
}

if [ "$CALLGRIND" = 1 ]; then
  # Instructions per event in chatgate's user space, whatever else the
  # machine does: the pipeline under callgrind for 1,000 and then 3,000
  # callbacks (8 connections, no reuse), and the difference over 2,000, so
  # start-up and shutdown cancel out. Crypto is overstated (valgrind hides
  # the CPU's SHA and AES instructions from OpenSSL).
  for n in 1000 3000; do
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.$n" "$BIN" --config "$work/pipeline.yaml" \
      2>"$work/cg$n.log" &
    cg_pid=$!
    wait_port "$CG_PORT"; sleep 2
    "$LOAD" closed -p "$CG_PORT" -c 8 -C 1000 -n $n -S "$PF_PORT" -k $EKEY -t $VTOKEN \
      -u /webhook/feishu -w 0 -d 60 | grep '^closed: acks'
    stop_cg
    callgrind_annotate --inclusive=yes --threshold=100 "$work/cg.$n" 2>/dev/null \
      | grep -E '^ *[0-9,]+ ' | sed 's/,//g' > "$work/in.$n"
  done
  python3 - "$work/in.1000" "$work/in.3000" <<'PY'
import re, sys
def load(path):
    out = {}
    for line in open(path):
        m = re.match(r" *(\d+) (?:\([^)]*\) )?\s*(.*)$", line.rstrip())
        if m:
            out[m.group(2)] = out.get(m.group(2), 0) + int(m.group(1))
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
rows = sorted(((b.get(k, 0) - a.get(k, 0)) / 2000, k) for k in b if not k.startswith("=>"))
rows.reverse()
print("instructions per event (inclusive), the 30 largest:")
for v, k in rows[:30]:
    print("%9.0f  %s" % (v, k[:140]))
PY
  exit 0
fi

echo "== 1. pipeline: $CONNECTIONS connections, $CHATS chats, echo at once, replies to the fake platform"
start_cg pipeline
"$LOAD" closed -p "$CG_PORT" -c "$CONNECTIONS" -C "$CHATS" -n "$POOL" -S "$PF_PORT" $COMMON | tee "$work/r1.txt"
stop_cg
LINES1=$(wc -l < "$work/pipeline.log")
if [ "$PROFILE" = 1 ]; then
  # A fresh chatgate: feishu.so's nonce map starts empty as in run 1.
  echo "== profile of the pipeline (perf record -g, ${PROFILE_S} s, a separate run on a fresh chatgate)"
  cp "$work/pipeline.yaml" "$work/profile.yaml"
  start_cg profile
  "$LOAD" closed -p "$CG_PORT" -c "$CONNECTIONS" -C "$CHATS" -n "$POOL" -k $EKEY -t $VTOKEN \
    -u /webhook/feishu -w 1 -d $((PROFILE_S + 1)) > "$work/rp.txt" &
  lg_pid=$!
  sleep 3  # the load generator precomputes first
  perf record -F 999 -g -o "$work/perf.data" -p "$cg_pid" -- sleep "$PROFILE_S" 2>"$work/perf.err" &
  perf_pid=$!
  wait "$perf_pid" || true; perf_pid=
  wait "$lg_pid" || true
  cat "$work/rp.txt"
  perf report -i "$work/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | sed -E 's/ +$//; s/ {2,}/  /g' | cut -c1-200 | head -15 | tee "$work/profile.txt"
  echo "-- by object"
  perf report -i "$work/perf.data" --no-children --sort dso --stdio 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | head -8
  [ -n "${PERF_OUT:-}" ] && cp "$work/perf.data" "$PERF_OUT"
  stop_cg
fi

echo "== 2. ack only: the same, echo held slow (delayMs 10 min)"
start_cg slow
"$LOAD" closed -p "$CG_PORT" -c "$CONNECTIONS" -C "$CHATS" -n "$POOL" -S "$PF_PORT" $COMMON | tee "$work/r2.txt"
stop_cg
LINES2=$(wc -l < "$work/slow.log")
cp "$work/slow.log" "$work/slow10.log"
# feishu.so keeps at most 100,000 nonces and, once full, scans them all on
# every callback (plugins/feishu/feishu.cc, kMaxNonces): the run above
# crosses that in its warm-up. The same on a fresh chatgate, 0.5 s warm-up
# and a 2 s window, stays under it.
echo "== 2b. ack only, short: fresh chatgate, 0.5 s warm-up, 2 s window (under feishu.so's 100,000 nonces)"
start_cg slow
"$LOAD" closed -p "$CG_PORT" -c "$CONNECTIONS" -C "$CHATS" -n "$POOL" -S "$PF_PORT" -k $EKEY -t $VTOKEN \
  -u /webhook/feishu -w 0.5 -d 2 | tee "$work/r2b.txt"
stop_cg

echo "== 3. nginx, 1 worker, fixed 200: the same load generator and callbacks"
"$LOAD" closed -p "$NG_PORT" -c "$CONNECTIONS" -C "$CHATS" -n 200000 -r $COMMON | tee "$work/r3.txt"

echo "== 4. steady alone: $STEADY chats, one callback each per ${INTERVAL_MS} ms"
write_config pipeline 0 ""
cp "$work/pipeline.yaml" "$work/steady.yaml"
start_cg steady
: > "$work/replies.log"
"$LOAD" flood -p "$CG_PORT" -s "$STEADY" -i "$INTERVAL_MS" -f 0 -L "$work/sent4.txt" $COMMON | tee "$work/r4.txt"
RL4=$(reply_latency "$work/sent4.txt")
stop_cg
LINES4=$(wc -l < "$work/steady.log")

echo "== 5. flood: the same steady chats + one chat at full speed on $FLOOD connections"
cp "$work/pipeline.yaml" "$work/flood.yaml"
start_cg flood
"$LOAD" flood -p "$CG_PORT" -s "$STEADY" -i "$INTERVAL_MS" -f "$FLOOD" -n "$POOL" -S "$PF_PORT" \
  -L "$work/sent5.txt" $COMMON | tee "$work/r5.txt"
RL5=$(reply_latency "$work/sent5.txt")
stop_cg
LINES5=$(wc -l < "$work/flood.log")
log_top() { # $1: run name; the most frequent lines, digits as N
  echo "-- chatgate's log in the $1 run: $(wc -l < "$work/$1.log") lines, most frequent first"
  sed -E 's/^[^ ]+ //; s/[0-9]+/N/g' "$work/$1.log" | sort | uniq -c | sort -rn | head -"${2:-4}"
}
log_top pipeline
log_top slow10
log_top steady
log_top flood 8

PIPE_ACKS=$(acks_of "$work/r1.txt" closed)
PIPE_REPLIES=$(grep '^platform:' "$work/r1.txt" | sed 's/.*: \([0-9]*\) replies\/s/\1/')
SLOW_ACKS=$(acks_of "$work/r2.txt" closed)
SLOW_REPLIES=$(grep '^platform:' "$work/r2.txt" | sed 's/.*: \([0-9]*\) replies\/s/\1/')
NG_ACKS=$(acks_of "$work/r3.txt" closed)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
p() { grep "^$2: latency" "$1" | awk -v k="$3" '{for (i = 1; i < NF; i++) if ($i == k) print $(i + 1)}'; }
other() { grep "^$2: acks" "$1" | sed 's/.*other \([0-9]*\), socket errors \([0-9]*\);.*/\1 non-2xx, \2 socket errors/'; }

echo
echo "callbacks sent over each whole run (feishu.so's nonce cap is 100,000): pipeline $(grep '^closed: acks' "$work/r1.txt" | sed 's/.*whole run 2xx \([0-9]*\).*/\1/'), ack only $(grep '^closed: acks' "$work/r2.txt" | sed 's/.*whole run 2xx \([0-9]*\).*/\1/'), short ack only $(grep '^closed: acks' "$work/r2b.txt" | sed 's/.*whole run 2xx \([0-9]*\).*/\1/')"
echo "== summary (loopback, $(nproc) cores, ${DURATION} s windows after ${WARMUP} s, log level $LOG_LEVEL)"
echo "pipeline, replies at the platform:  $PIPE_REPLIES /s ($(ratio "$PIPE_REPLIES" "$NG_ACKS")x nginx)"
echo "pipeline, acks:                     $PIPE_ACKS /s ($(other "$work/r1.txt" closed)); ack p50 / p99 $(p "$work/r1.txt" closed p50) / $(p "$work/r1.txt" closed p99) ms"
SHORT_ACKS=$(acks_of "$work/r2b.txt" closed)
echo "ack only, short, under nonce cap:   $SHORT_ACKS /s ($(ratio "$SHORT_ACKS" "$NG_ACKS")x nginx; $(other "$work/r2b.txt" closed)); ack p50 / p99 $(p "$work/r2b.txt" closed p50) / $(p "$work/r2b.txt" closed p99) ms"
echo "ack only (model slow):              $SLOW_ACKS /s ($(ratio "$SLOW_ACKS" "$NG_ACKS")x nginx; $(other "$work/r2.txt" closed); platform requests $SLOW_REPLIES /s); ack p50 / p99 $(p "$work/r2.txt" closed p50) / $(p "$work/r2.txt" closed p99) ms"
echo "nginx fixed 200:                    $NG_ACKS /s; p50 / p99 $(p "$work/r3.txt" closed p50) / $(p "$work/r3.txt" closed p99) ms"
echo "steady alone, ack p50 / p99:        $(p "$work/r4.txt" steady p50) / $(p "$work/r4.txt" steady p99) ms ($(other "$work/r4.txt" steady))"
echo "steady alone, reply p50 / p99:      $(echo "$RL4" | awk '{print $1 " / " $2 " ms (" $3 " replies matched, " $4 " sent without a reply seen)"}')"
echo "with flood, steady ack p50 / p99:   $(p "$work/r5.txt" steady p50) / $(p "$work/r5.txt" steady p99) ms ($(other "$work/r5.txt" steady))"
echo "with flood, steady reply p50 / p99: $(echo "$RL5" | awk '{print $1 " / " $2 " ms (" $3 " replies matched, " $4 " sent without a reply seen)"}')"
echo "flood chat:                         $(acks_of "$work/r5.txt" flood) acks/s ($(other "$work/r5.txt" flood)); platform $(grep '^platform:' "$work/r5.txt" | sed 's/.*: \([0-9]*\) replies\/s/\1/') requests/s"
echo "steady p99 with / without flood:    ack $(ratio "$(p "$work/r5.txt" steady p99)" "$(p "$work/r4.txt" steady p99)")x, reply $(ratio "$(echo "$RL5" | cut -d' ' -f2)" "$(echo "$RL4" | cut -d' ' -f2)")x"
echo "chatgate log lines, start to exit:  flood run $LINES5, steady run $LINES4 (same start and stop), pipeline $LINES1, ack only $LINES2"
