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
. bench/feishu_common.sh
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

bench_init
cg_pid=
CG_PORT=$(free_port)
build_load
start_platform

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
$(feishu_instance_yaml)
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

start_cg() { # $1: config name
  "$BIN" --config "$work/$1.yaml" 2>"$work/$1.log" &
  cg_pid=$!
  track "$cg_pid"
  wait_port "$CG_PORT"
  sleep 1
}
stop_cg() {
  kill "$cg_pid" 2>/dev/null || true
  wait "$cg_pid" 2>/dev/null || true
  untrack "$cg_pid"
  cg_pid=
}
COMMON="-k $EKEY -t $VTOKEN -u /webhook/feishu -w $WARMUP -d $DURATION"

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
    track "$cg_pid"
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
  track "$lg_pid"
  sleep 3  # the load generator precomputes first
  perf record -F 999 -g -o "$work/perf.data" -p "$cg_pid" -- sleep "$PROFILE_S" 2>"$work/perf.err" &
  perf_pid=$!
  track "$perf_pid"
  wait "$perf_pid" || true; untrack "$perf_pid"
  wait "$lg_pid" || true; untrack "$lg_pid"
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
PIPE_REPLIES=$(platform_of "$work/r1.txt")
SLOW_ACKS=$(acks_of "$work/r2.txt" closed)
SLOW_REPLIES=$(platform_of "$work/r2.txt")
NG_ACKS=$(acks_of "$work/r3.txt" closed)

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
echo "steady alone, reply p50 / p99:      $(echo "$RL4" | awk '{print $1 " / " $3 " ms (" $4 " replies matched, " $5 " sent without a reply seen)"}')"
echo "with flood, steady ack p50 / p99:   $(p "$work/r5.txt" steady p50) / $(p "$work/r5.txt" steady p99) ms ($(other "$work/r5.txt" steady))"
echo "with flood, steady reply p50 / p99: $(echo "$RL5" | awk '{print $1 " / " $3 " ms (" $4 " replies matched, " $5 " sent without a reply seen)"}')"
echo "flood chat:                         $(acks_of "$work/r5.txt" flood) acks/s ($(other "$work/r5.txt" flood)); platform $(grep '^platform:' "$work/r5.txt" | sed 's/.*: \([0-9]*\) replies\/s/\1/') requests/s"
echo "steady p99 with / without flood:    ack $(ratio "$(p "$work/r5.txt" steady p99)" "$(p "$work/r4.txt" steady p99)")x, reply $(ratio "$(echo "$RL5" | cut -d' ' -f3)" "$(echo "$RL4" | cut -d' ' -f3)")x"
echo "chatgate log lines, start to exit:  flood run $LINES5, steady run $LINES4 (same start and stop), pipeline $LINES1, ack only $LINES2"
