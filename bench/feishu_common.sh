# Sourced by bench/channels.sh and bench/fleet.sh (POSIX sh, from the
# repository's root): what both Feishu webhook benchmarks share.
#
#   bench_init             the temporary directory $work, the EXIT trap
#   track PID / untrack PID
#                          processes the trap stops (and checks are gone)
#   free_port, wait_port PORT
#   build_load             bench/feishu_load.c with cc into $LOAD, selftest
#   start_platform         nginx, 1 worker: the fake open platform on $PF_PORT
#                          (tenant token, bot info, the send/reply APIs,
#                          stub_status; the steady chats' replies logged with
#                          $msec to $work/replies.log) and a fixed 200 on
#                          $NG_PORT
#   feishu_instance_yaml   the feishu.so instance (webhook mode) for a config
#   reply_latency SENDLOG  "p50 p90 p99 matched missing mean" of the steady chats
#   acks_of, p, other, platform_of, ratio: figures out of feishu_load's output
BIN=${BIN:-build/chatgate}
PLUGINS=${PLUGINS:-build/plugins}
EKEY=bench-encrypt-key
VTOKEN=bench-verification-token
BENCH_PIDS=

track() { BENCH_PIDS="$BENCH_PIDS $1"; }
untrack() { BENCH_PIDS=$(echo " $BENCH_PIDS " | sed "s/ $1 / /; s/^ *//; s/ *$//"); }

# Stops what is still tracked (SIGTERM, then SIGKILL after 5 s), then says
# whether any process started from $work is left, and removes $work
# (KEEP=1 keeps it: configs, logs, the load generator's output).
bench_cleanup() {
  for pid in $BENCH_PIDS; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=
    for pid in $BENCH_PIDS; do kill -0 "$pid" 2>/dev/null && alive="$alive $pid"; done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  for pid in $BENCH_PIDS; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${work:-}" ] && [ -d "$work" ]; then
    left=$(pgrep -f "$work" || true)
    if [ -n "$left" ]; then
      echo "bench: processes of this run still alive: $(echo $left)" >&2
    elif [ "${BENCH_REPORT_LEFT:-0}" = 1 ]; then
      echo "bench: no process started by this run is left (pgrep -f $work)"
    fi
    if [ "${KEEP:-0}" = 1 ]; then echo "bench: kept $work (KEEP=1)"; else rm -rf "$work"; fi
  fi
}

bench_init() {
  [ -x "$BIN" ] || { echo "bench: build first (make build)" >&2; exit 1; }
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
  [ -x "$NGINX" ] || { echo "bench: nginx missing" >&2; exit 1; }
  ulimit -n 65536 2>/dev/null || true
  work=$(mktemp -d)
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

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

build_load() {
  LOAD="$work/feishu_load"
  cc -O2 -o "$LOAD" bench/feishu_load.c $(pkg-config --cflags --libs libuv) -lcrypto -lpthread -lm
  "$LOAD" selftest
}

start_platform() {
  NG_PORT=$(free_port)   # nginx: fixed 200
  PF_PORT=$(free_port)   # nginx: the fake open platform
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
  NGINX_PID=$!
  track "$NGINX_PID"
  wait_port "$PF_PORT"
  wait_port "$NG_PORT"
}

# The feishu.so instance of a config, as a plugins.instances item.
feishu_instance_yaml() {
  cat <<YAML
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
YAML
}

# Reply latency of the steady chats: send log joined with nginx's access log.
# nginx's $msec has millisecond resolution (the send times are finer), so
# every latency is up to 1 ms short, the same in every run; the mean
# (last field) shows differences below a millisecond better than the p50.
reply_latency() { # $1: send log; prints "p50 p90 p99 matched missing mean"
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
mean = sum(lat) / len(lat) if lat else float("nan")
print("%.1f %.1f %.1f %d %d %.2f" % (pct(0.5), pct(0.9), pct(0.99), len(lat), len(sent), mean))
PY
  : > "$work/replies.log"
}

# Out of feishu_load's output ($1: its file, $2: closed|steady|flood):
acks_of() { grep "^$2:" "$1" | sed -n 1p | sed 's/.*: \([0-9]*\) acks\/s.*/\1/'; }
p() { grep "^$2: latency" "$1" | awk -v k="$3" '{for (i = 1; i < NF; i++) if ($i == k) print $(i + 1)}'; }
other() { grep "^$2: acks" "$1" | sed 's/.*other \([0-9]*\), socket errors \([0-9]*\);.*/\1 non-2xx, \2 socket errors/'; }
platform_of() { grep '^platform:' "$1" | sed 's/.*: \([0-9]*\) replies\/s/\1/'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
