#!/bin/sh
# The durable inbound queue (router.queue: redis, Redis Streams) against the
# in-memory queue, one chatgate and three sharing one Redis, on this machine
# (issue 17). Feishu webhook callbacks as in bench/channels.sh (which this
# shares bench/feishu_common.sh and bench/feishu_load.c with).
#
#   bench/fleet.sh                                (after make build)
#   BIN=/path/chatgate PLUGINS=/path/plugins bench/fleet.sh
#   DURATION=10 WARMUP=2 INSTANCES=3 AOF_NO=1 bench/fleet.sh
#   ONLY="rd1 rd3" KEEP=1 bench/fleet.sh       some runs; keep the logs
#   PROFILE="rm1 rd1" bench/fleet.sh            perf record (-g) chatgate and
#                                               redis-server in these runs
#
# Every run starts fresh: its own redis-server (unix socket in the run's
# temporary directory, `--save ''`, `--appendonly yes --appendfsync
# everysec` (docs/fleet.md's recommendation) unless named), its own chatgate(s)
# (feishu.so in webhook mode, echo.so answering at once, logging.level
# LOG_LEVEL, default router limits), the same nginx as the fake open
# platform the replies go to. The in-memory rows keep Redis as the cache
# (context and dedupe) so only the queue differs, except the first row
# (memory.so, today's single-instance default, for reference).
#
#  1. throughput: CONNECTIONS keep-alive connections, closed loop, chats
#     cycling over CHATS, spread over the instances' ports in turn (one
#     feishu_load process, -p PORT,PORT,PORT). Counted: replies arriving at
#     the platform in the window (nginx stub_status: the real throughput),
#     acks (2xx) the load generator got, each process's CPU in the window
#     (/proc/PID/stat), the durable queue's backlog at the window's end
#     (the partitions' XLEN: acknowledged, not yet answered) and Redis's
#     commands in the window (INFO commandstats, per reply).
#       mm1  memory cache, memory queue, 1 instance       (reference)
#       rm1  redis cache, memory queue, 1 instance
#       rd1  redis cache, durable queue (AOF everysec), 1 instance
#       rdn1 redis cache, durable queue (appendonly no), 1 instance  (AOF_NO=1)
#       rm3  redis cache, memory queue, INSTANCES instances
#       rd3  redis cache, durable queue (AOF everysec), INSTANCES instances
#     With the durable queue the load starts once every partition is held
#     and, with several instances, each holds some and none more than
#     ceil(partitions / instances) (how docs/fleet.md spreads them).
#  2. latency: STEADY chats, one connection each, one callback per chat
#     every INTERVAL_MS (open loop), one instance: reply latency (the
#     callback's intended send time -> the reply request at nginx, nginx's
#     $msec, millisecond resolution) p50 / p90 / p99, and the ack latency
#     the load generator measured; redis cache with the memory queue (sm1),
#     then the durable queue, AOF everysec (sd1), and appendonly no (sdn1,
#     with AOF_NO=1). Added latency = sd1's figure minus sm1's.
#
# The machine has 2 cores: chatgate(s), redis-server, nginx and the load
# generator share them (no pinning).
set -eu
cd "$(dirname "$0")/.."
. bench/feishu_common.sh
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNECTIONS=${CONNECTIONS:-64}
CHATS=${CHATS:-5000}
POOL=${POOL:-400000}          # callbacks precomputed per closed-loop run
STEADY=${STEADY:-100}
INTERVAL_MS=${INTERVAL_MS:-100}
INSTANCES=${INSTANCES:-3}
PARTITIONS=${PARTITIONS:-16}
AOF_NO=${AOF_NO:-1}           # also the durable queue with appendonly no (rdn1, sdn1)
LOG_LEVEL=${LOG_LEVEL:-info}
ONLY=${ONLY:-}                # e.g. ONLY="rd1 rd3": only these runs (names below)
PROFILE=${PROFILE:-}          # e.g. PROFILE="rd1": perf record these runs' window
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || echo /usr/bin/redis-server)}
REDIS_CLI=${REDIS_CLI:-$(command -v redis-cli || echo /usr/bin/redis-cli)}
[ -x "$REDIS_SERVER" ] && [ -x "$REDIS_CLI" ] || { echo "bench: redis-server and redis-cli needed" >&2; exit 1; }

T0=$(date +%s)
BENCH_REPORT_LEFT=1
bench_init
# A copy of the build, so a rebuild while the script runs (the machine is
# shared) cannot mix two builds in one comparison.
mkdir -p "$work/build/plugins"
cp "$BIN" "$work/build/chatgate"
cp "$PLUGINS"/*.so "$work/build/plugins/"
echo "build: $("$BIN" --version | head -1), $BIN of $(date -r "$BIN" '+%F %T'), redis.so of $(date -r "$PLUGINS/redis.so" '+%F %T'); $("$REDIS_SERVER" --version | cut -d' ' -f1-3)"
BIN="$work/build/chatgate"
PLUGINS="$work/build/plugins"
build_load
start_platform
HZ=$(getconf CLK_TCK)
NGINX_WORKER=
for _ in $(seq 100); do
  NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -1 || true)
  [ -n "$NGINX_WORKER" ] && break
  sleep 0.05
done

i=1
CG_PORTS=
while [ "$i" -le "$INSTANCES" ]; do
  CG_PORTS="$CG_PORTS $(free_port)"
  i=$((i + 1))
done
nth() { echo $2 | cut -d' ' -f"$1"; }  # nth N "list"
first_ports() { echo $CG_PORTS | cut -d' ' -f1-"$1" | tr ' ' ,; }

# ---- redis-server
redis_pid=
REDIS_SOCK=
start_redis() { # $1: run name; $2: appendonly yes|no
  mkdir -p "$work/redis-$1"
  REDIS_SOCK="$work/redis-$1/redis.sock"
  "$REDIS_SERVER" --port 0 --unixsocket "$REDIS_SOCK" --unixsocketperm 700 --save '' \
    --appendonly "$2" --appendfsync everysec --dir "$work/redis-$1" \
    --logfile "$work/redis-$1/redis.log" &
  redis_pid=$!
  track "$redis_pid"
  for _ in $(seq 200); do
    [ "$(rcli PING 2>/dev/null)" = PONG ] && return 0
    sleep 0.05
  done
  echo "bench: redis-server did not answer on $REDIS_SOCK" >&2
  exit 1
}
stop_redis() {
  [ -n "$redis_pid" ] || return 0
  kill "$redis_pid" 2>/dev/null || true
  wait "$redis_pid" 2>/dev/null || true
  untrack "$redis_pid"
  redis_pid=
}
rcli() { "$REDIS_CLI" -s "$REDIS_SOCK" "$@"; }
backlog() { # entries in the partitions' streams (acknowledged, not answered)
  n=0 p=0
  while [ "$p" -lt "$PARTITIONS" ]; do
    n=$((n + $(rcli XLEN "chatgate:q:$p")))
    p=$((p + 1))
  done
  echo "$n"
}
# "owners counts": how many partitions each lease holder has, e.g. "3 6,5,5"
owners() {
  p=0
  while [ "$p" -lt "$PARTITIONS" ]; do
    rcli GET "chatgate:q:$p:owner"
    p=$((p + 1))
  done | grep -v '^$' | sort | uniq -c | sort -rn | awk '{n++; c = c (c ? "," : "") $1} END {print n + 0, c}'
}
# $1: instances. Waits until every partition is held, by all the instances,
# none above its share ceil(partitions / instances) (docs/fleet.md).
wait_spread() {
  for _ in $(seq 300); do
    o=$(owners)
    set -- "$1" $o
    if [ "${2:-0}" = "$1" ] && [ -n "${3:-}" ]; then
      echo "$3" | tr , '\n' | awk -v want="$PARTITIONS" -v n="$1" \
        '{s += $1; if ($1 > hi) hi = $1}
         END {exit !(s == want && hi <= int((want + n - 1) / n))}' && { SPREAD=$3; return 0; }
    fi
    sleep 0.1
  done
  echo "bench: partitions not spread over $1 instances after 30 s: $(owners)" >&2
  SPREAD="not spread: $(owners)"
}

# ---- chatgate
# $1: config name; $2: instance number; $3: cache memory|redis; $4: queue memory|redis
write_config() {
  if [ "$3" = redis ]; then
    cache_yaml="    - name: redis
      plugin: redis.so
      config:
        unixSocket: $REDIS_SOCK"
  else
    cache_yaml="    - name: memory
      plugin: memory.so"
  fi
  queue_yaml=
  if [ "$4" = redis ]; then
    queue_yaml="  queue: redis
queue:
  partitions: $PARTITIONS
  leaseMs: 10000
  maxDeliveries: 5
  readBatch: 64"
  fi
  cat > "$work/$1.yaml" <<YAML
logging:
  level: $LOG_LEVEL
listeners:
  api:
    address: 127.0.0.1
    port: $(nth "$2" "$CG_PORTS")
  admin:
    enabled: false
plugins:
  dir: $PLUGINS
  instances:
    - name: echo
      plugin: echo.so
      config:
        delayMs: 0
$cache_yaml
$(feishu_instance_yaml)
router:
  model: echo
  cache: $3
$queue_yaml
YAML
}
CG_PIDS=
start_fleet() { # $1: run name; $2: instances; $3: cache; $4: queue
  CG_PIDS=
  k=1
  while [ "$k" -le "$2" ]; do
    write_config "$1-$k" "$k" "$3" "$4"
    "$BIN" --config "$work/$1-$k.yaml" 2>"$work/$1-$k.log" &
    CG_PIDS="$CG_PIDS $!"
    track "$!"
    k=$((k + 1))
  done
  k=1
  while [ "$k" -le "$2" ]; do wait_port "$(nth "$k" "$CG_PORTS")"; k=$((k + 1)); done
  sleep 1
  SPREAD=-
  [ "$4" = redis ] && wait_spread "$2"
  return 0
}
stop_fleet() {
  for pid in $CG_PIDS; do kill "$pid" 2>/dev/null || true; done
  for pid in $CG_PIDS; do wait "$pid" 2>/dev/null || true; untrack "$pid"; done
  CG_PIDS=
}

# ---- CPU in the window
ticks() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0; }
now() { date +%s.%N; }
# all cores: busy (user, nice, system, irq, softirq) and steal (the host's)
machine_ticks() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8, $9; exit}' /proc/stat; }
cpu_sample() { # $1: file; the pids' ticks with a time stamp
  { now; machine_ticks | awk '{print "machine " $1; print "steal " $2}'
    for pid in $CG_PIDS ${redis_pid:-} $NGINX_WORKER $lg_pid; do echo "$pid $(ticks "$pid")"; done; } > "$1"
}
# "chatgate 95+40+38, redis 31, nginx 17, load 12; machine 180, steal 0" (%
# of one core; machine: all processes and the kernel, out of nproc x 100;
# steal: time the hypervisor gave the cores to others)
cpu_report() { # $1, $2: the samples
  python3 - "$1" "$2" "$HZ" "$(echo $CG_PIDS)" "${redis_pid:-}" "$NGINX_WORKER" "$lg_pid" <<'PY'
import sys
def load(path):
    lines = open(path).read().split("\n")
    return float(lines[0]), {l.split()[0]: int(l.split()[1]) for l in lines[1:] if len(l.split()) == 2}
(t1, a), (t2, b) = load(sys.argv[1]), load(sys.argv[2])
hz, dt = int(sys.argv[3]), t2 - t1
pct = lambda pid: "%.0f" % (100.0 * (b.get(pid, 0) - a.get(pid, 0)) / hz / dt)
out = ["chatgate " + "+".join(pct(p) for p in sys.argv[4].split())]
if sys.argv[5]:
    out.append("redis " + pct(sys.argv[5]))
out += ["nginx " + pct(sys.argv[6]), "load " + pct(sys.argv[7])]
print(", ".join(out) + "; machine " + pct("machine") + ", steal " + pct("steal"))
PY
}

# ---- one run
# The load generator in the background; the window's CPU and Redis figures
# around it. $1: run name; $2: instances; then feishu_load's arguments.
lg_pid=
load_run() {
  name=$1 n=$2
  shift 2
  "$LOAD" "$@" > "$work/$name.txt" 2> "$work/$name.err" &
  lg_pid=$!
  track "$lg_pid"
  while ! grep -q precomputed "$work/$name.err" 2>/dev/null; do
    kill -0 "$lg_pid" 2>/dev/null || break
    sleep 0.02
  done
  sleep "$WARMUP"
  [ -n "$redis_pid" ] && rcli CONFIG RESETSTAT > /dev/null
  cpu_sample "$work/$name.cpu0"
  perf_pid=
  if echo " $PROFILE " | grep -q " $name "; then
    perf record -F 999 -g -o "$work/$name.perf" -p "$(echo $CG_PIDS ${redis_pid:-} | tr ' ' ,)" \
      -- sleep "$(awk -v d="$DURATION" 'BEGIN {print (d > 1 ? d - 0.5 : d)}')" 2> "$work/$name.perf.err" &
    perf_pid=$!
    track "$perf_pid"
  fi
  # sampled 0.3 s before the window's end, while the load generator runs
  sleep "$(awk -v d="$DURATION" 'BEGIN {print (d > 0.5 ? d - 0.3 : d)}')"
  cpu_sample "$work/$name.cpu1"
  [ -n "$redis_pid" ] && rcli INFO commandstats > "$work/$name.cmd"
  wait "$lg_pid" || true
  untrack "$lg_pid"
  if [ -n "$perf_pid" ]; then wait "$perf_pid" || true; untrack "$perf_pid"; fi
  cat "$work/$name.txt"
  if [ -n "$perf_pid" ]; then
    echo "-- profile (perf record -F 999 -g, chatgate and redis-server, self time, share of their samples)"
    perf report -i "$work/$name.perf" --no-children --sort comm,dso --stdio 2>/dev/null \
      | grep -E '^ +[0-9.]+%' | head -10
    perf report -i "$work/$name.perf" --no-children --sort comm,dso,symbol --stdio 2>/dev/null \
      | grep -E '^ +[0-9.]+%' | sed -E 's/ +$//; s/ {2,}/  /g' | cut -c1-160 | head -20
  fi
  CPU=$(cpu_report "$work/$name.cpu0" "$work/$name.cpu1")
  echo "cpu (% of a core, window): $CPU"
}
# Redis's commands in the window per reply: "eval 2.00 (12.0 us), ...";
# commands a script runs are counted too (and inside the script's time)
redis_per_event() { # $1: run name; $2: replies/s
  [ -f "$work/$1.cmd" ] || { echo -; return; }
  python3 - "$work/$1.cmd" "$2" "$DURATION" <<'PY'
import re, sys
events = float(sys.argv[2]) * float(sys.argv[3])
rows = []
for line in open(sys.argv[1]):
    m = re.match(r"cmdstat_(\S+?):calls=(\d+),usec=(\d+),usec_per_call=([\d.]+)", line)
    if m and m.group(1) not in ("config", "info"):
        rows.append((int(m.group(2)), m.group(1), float(m.group(4)), int(m.group(3))))
rows.sort(reverse=True)
print(", ".join("%s %.2f (%.1f us)" % (c, n / events, u) for n, c, u, _ in rows
                if events and n / events >= 0.01) or "-")
PY
}
# CPU time per reply in the window, in microseconds, of the processes named
# (all chatgates together, or redis-server): "-" without them
cpu_us() { # $1: run name; $2: replies/s; $3: pids
  python3 - "$work/$1.cpu0" "$work/$1.cpu1" "$HZ" "$2" $3 <<'PY'
import sys
def load(path):
    lines = open(path).read().split("\n")
    return float(lines[0]), {l.split()[0]: int(l.split()[1]) for l in lines[1:] if len(l.split()) == 2}
(t1, a), (t2, b) = load(sys.argv[1]), load(sys.argv[2])
r, pids = float(sys.argv[4] or 0), sys.argv[5:]
if not pids or not r:
    print("-")
else:
    ticks = sum(b.get(p, 0) - a.get(p, 0) for p in pids)
    print("%.0f" % (ticks / int(sys.argv[3]) / (t2 - t1) / r * 1e6))
PY
}
log_note() { # $1: run name; log lines and warnings of its instances
  cat "$work/$1"-*.log > "$work/$1.alllog" 2>/dev/null || true
  awk '$2 == "warning" || $2 == "error" || $2 == "critical"' "$work/$1.alllog" > "$work/$1.warn"
  echo "$(wc -l < "$work/$1.alllog") log lines, $(wc -l < "$work/$1.warn") warnings or errors"
  sed -E 's/^[^ ]+ //; s/[0-9]+/N/g' "$work/$1.warn" | sort | uniq -c | sort -rn | head -3
}

: > "$work/summary.txt"
# $1: name; $2: label; $3: instances; $4: cache; $5: queue; $6: appendonly (yes|no|-)
closed_run() {
  echo "== 1. throughput: $2"
  [ "$4" = redis ] && start_redis "$1" "$6"
  start_fleet "$1" "$3" "$4" "$5"
  [ "$SPREAD" != - ] && echo "partitions per instance: $SPREAD"
  load_run "$1" "$3" closed -p "$(first_ports "$3")" -c "$CONNECTIONS" -C "$CHATS" -n "$POOL" \
    -S "$PF_PORT" -k "$EKEY" -t "$VTOKEN" -u /webhook/feishu -w "$WARMUP" -d "$DURATION"
  BACKLOG=-
  [ "$5" = redis ] && BACKLOG=$(backlog)
  R=$(platform_of "$work/$1.txt")
  CUS=$(cpu_us "$1" "$R" "$CG_PIDS")
  RUS=$(cpu_us "$1" "$R" "${redis_pid:-}")
  stop_fleet
  RCMD=$(redis_per_event "$1" "$R")
  echo "durable backlog at the window's end: $BACKLOG"
  echo "CPU per reply: chatgate $CUS us, redis-server $RUS us; redis commands per reply (us per call): $RCMD"
  echo "chatgate: $(log_note "$1")"
  stop_redis
  printf '%s|%s|%s|%s|%s / %s|%s|%s|%s|%s / %s|%s\n' "$2" "$R" \
    "$(awk -v r="$R" -v n="$3" 'BEGIN {printf "%.0f", r / n}')" "$(acks_of "$work/$1.txt" closed)" \
    "$(p "$work/$1.txt" closed p50)" "$(p "$work/$1.txt" closed p99)" "$(other "$work/$1.txt" closed)" \
    "$BACKLOG" "$CPU" "$CUS" "$RUS" "$RCMD" >> "$work/summary.txt"
}

: > "$work/latency.txt"
# $1: name; $2: label; $3: cache; $4: queue; $5: appendonly
steady_run() {
  echo "== 2. latency: $2"
  [ "$3" = redis ] && start_redis "$1" "$5"
  start_fleet "$1" 1 "$3" "$4"
  : > "$work/replies.log"
  load_run "$1" 1 flood -p "$(first_ports 1)" -s "$STEADY" -i "$INTERVAL_MS" -f 0 -L "$work/$1.sent" \
    -k "$EKEY" -t "$VTOKEN" -u /webhook/feishu -w "$WARMUP" -d "$DURATION"
  RL=$(reply_latency "$work/$1.sent")
  stop_fleet
  echo "reply latency p50 / p90 / p99: $(echo "$RL" | awk '{print $1 " / " $2 " / " $3 " ms, mean " $6 " ms (" $4 " replies matched, " $5 " sent without a reply seen)"}')"
  echo "chatgate: $(log_note "$1")"
  stop_redis
  printf '%s|%s|%s / %s / %s|%s|%s\n' "$2" \
    "$(echo "$RL" | awk '{print $1 " / " $2 " / " $3 "|" $6 "|" $4 " of " $4 + $5}')" \
    "$(p "$work/$1.txt" steady p50)" "$(p "$work/$1.txt" steady p90)" "$(p "$work/$1.txt" steady p99)" \
    "$(other "$work/$1.txt" steady)" "$CPU" >> "$work/latency.txt"
}

# The machine's state before the runs: other work on the shared cores.
m0=$(machine_ticks | cut -d' ' -f1); sleep 1; m1=$(machine_ticks | cut -d' ' -f1)
echo "machine before the runs: $(nproc) cores, busy $(( (m1 - m0) * 100 / HZ ))% of a core over 1 s;$(uptime | sed 's/.*load/ load/')"
top -b -n2 -d0.5 -o %CPU | awk '/^top -/ {n++} n == 2 && /^ *[0-9]+ / && $9 > 0.5 {print "  busy before the runs: " $12 " (pid " $1 ") " $9 "%"}' | head -5
want() { [ -z "$ONLY" ] || echo " $ONLY " | grep -q " $1 "; }
want mm1 && closed_run mm1 "1 instance, memory cache, memory queue" 1 memory memory -
want rm1 && closed_run rm1 "1 instance, memory queue" 1 redis memory yes
want rd1 && closed_run rd1 "1 instance, durable queue, AOF everysec" 1 redis redis yes
[ "$AOF_NO" = 1 ] && want rdn1 && closed_run rdn1 "1 instance, durable queue, appendonly no" 1 redis redis no
if [ "$INSTANCES" -gt 1 ]; then
  want rm3 && closed_run rm3 "$INSTANCES instances, memory queue" "$INSTANCES" redis memory yes
  want rd3 && closed_run rd3 "$INSTANCES instances, durable queue, AOF everysec" "$INSTANCES" redis redis yes
fi
want sm1 && steady_run sm1 "memory queue" redis memory yes
want sd1 && steady_run sd1 "durable queue, AOF everysec" redis redis yes
[ "$AOF_NO" = 1 ] && want sdn1 && steady_run sdn1 "durable queue, appendonly no" redis redis no

echo
echo "== summary ($(nproc) cores shared by everything, loopback, ${DURATION} s windows after ${WARMUP} s, $CONNECTIONS connections, log level $LOG_LEVEL; redis cache unless named)"
echo "throughput | replies/s at the platform | per instance | acks/s | ack p50 / p99 ms | refused | durable backlog at end | CPU % of a core | CPU us per reply: chatgate(s) / redis | redis commands per reply (us per call)"
cat "$work/summary.txt"
echo
echo "latency, $STEADY chats x 1 per ${INTERVAL_MS} ms, 1 instance | reply p50 / p90 / p99 ms | reply mean ms | replies matched | ack p50 / p90 / p99 ms | refused | CPU % of a core"
cat "$work/latency.txt"
if [ "$(wc -l < "$work/latency.txt")" -ge 2 ]; then
  col() { sed -n "$1p" "$work/latency.txt" | cut -d'|' -f"$2" | awk '{print $1}'; }
  minus() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a - b}'; }
  echo "added by the durable queue: reply p50 $(minus "$(col 2 2)" "$(col 1 2)") ms, reply mean $(minus "$(col 2 3)" "$(col 1 3)") ms, ack p50 $(minus "$(col 2 5)" "$(col 1 5)") ms"
fi
echo "the script took $(( $(date +%s) - T0 )) s"
