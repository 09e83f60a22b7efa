#!/bin/sh
# make package-test: the .deb packages on this machine, for real. Builds
# them (make deb), installs both with apt, checks the packaged config with
# --check-config, starts the installed binary as the chatgate user on the
# packaged config (ports moved off the defaults through the environment the
# config reads) and talks to it, then purges both packages and checks that
# nothing is left behind: files, the user, the state directory.
# Then builds sdk/examples/http_bridge out of tree against the installed
# SDK only (find_package(chatgate-sdk)), loads it into the installed chatgate
# and exchanges a message through it with a callback server started here.
# Needs root (or sudo): it installs packages.
set -eu
cd "$(dirname "$0")/../.."
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi

make deb
VERSION=$(sed -n 's/^project(chatgate VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
DEBS="build-deb/chatgate_${VERSION}_amd64.deb build-deb/chatgate-dev_${VERSION}_amd64.deb"
lintian --fail-on error $DEBS

cleanup() {
  [ -n "${pid:-}" ] && $SUDO kill "$pid" 2>/dev/null || true
  [ -n "${cb_pid:-}" ] && kill "$cb_pid" 2>/dev/null || true
  $SUDO apt-get purge -y -q chatgate chatgate-dev >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

$SUDO apt-get install -y -q $(for d in $DEBS; do echo "./$d"; done) >/dev/null
echo "installed: $(dpkg-query -W -f='${Package} ${Version}\n' chatgate chatgate-dev | tr '\n' ' ')"
getent passwd chatgate >/dev/null || { echo "package-test: no chatgate user" >&2; exit 1; }
[ "$(stat -c '%a %U:%G' /etc/chatgate/chatgate.env)" = "640 root:chatgate" ] ||
  { echo "package-test: chatgate.env is $(stat -c '%a %U:%G' /etc/chatgate/chatgate.env)" >&2; exit 1; }
# The service and its socket units. verify exits 0 on a setting it ignores
# (a misspelt or invalid value is only a warning), so any line that names
# one of them fails the test too.
UNITS="/lib/systemd/system/chatgate.service /lib/systemd/system/chatgate-api.socket
       /lib/systemd/system/chatgate-admin.socket"
verify=$(systemd-analyze verify $UNITS 2>&1) ||
  { echo "package-test: systemd-analyze verify failed: $verify" >&2; exit 1; }
if echo "$verify" | grep -q chatgate; then
  echo "package-test: systemd-analyze verify: $verify" >&2; exit 1
fi
/usr/bin/chatgate --check-config --config /etc/chatgate/chatgate.yaml
[ -f /usr/share/man/man1/chatgate.1.gz ] || { echo "package-test: no man page" >&2; exit 1; }
# The guides in both languages, as the README's links expect them.
for doc in README.md README.zh-CN.md quickstart.md zh-CN/quickstart.md zh-CN/feishu.md \
           zh-CN/dingtalk.md zh-CN/fleet.md zh-CN/upgrades.md channels/feishu.md; do
  [ -f "/usr/share/doc/chatgate/$doc" ] || { echo "package-test: no /usr/share/doc/chatgate/$doc" >&2; exit 1; }
done

# An upgrade (here: the same package again) keeps the operator's edits to
# the conffiles and the env file's mode.
echo "# edited by the operator" | $SUDO tee -a /etc/chatgate/chatgate.yaml >/dev/null
echo "MODEL_SERVICE_KEY=kept" | $SUDO tee -a /etc/chatgate/chatgate.env >/dev/null
$SUDO apt-get install -y -q --reinstall "./build-deb/chatgate_${VERSION}_amd64.deb" >/dev/null
tail -n 1 /etc/chatgate/chatgate.yaml | grep -qx "# edited by the operator" ||
  { echo "package-test: the reinstall replaced the edited chatgate.yaml" >&2; exit 1; }
$SUDO tail -n 1 /etc/chatgate/chatgate.env | grep -qx "MODEL_SERVICE_KEY=kept" ||
  { echo "package-test: the reinstall replaced the edited chatgate.env" >&2; exit 1; }
[ "$(stat -c '%a %U:%G' /etc/chatgate/chatgate.env)" = "640 root:chatgate" ] ||
  { echo "package-test: after reinstall chatgate.env is $(stat -c '%a %U:%G' /etc/chatgate/chatgate.env)" >&2; exit 1; }
echo "reinstalled: the edited conffiles were kept"

# Listeners on port 0: the ready line in $1 says which ports the kernel
# picked (a probed-and-released port could be taken before chatgate binds it).
ready_ports() {
  line=
  for _ in $(seq 600); do
    line=$(grep -o " ready in .*" "$1") && break
    sleep 0.05
  done
  [ -n "$line" ] || { echo "package-test: chatgate not ready:" >&2; cat "$1" >&2; exit 1; }
  API=$(echo "$line" | sed -n 's/.* api on https*:[^ ]*:\([0-9]*\).*/\1/p')
  ADMIN=$(echo "$line" | sed -n 's/.* admin on https*:[^ ]*:\([0-9]*\).*/\1/p')
}
log=$(mktemp)
$SUDO env CHATGATE_API_PORT=0 CHATGATE_ADMIN_PORT=0 \
  runuser -u chatgate -- /usr/bin/chatgate --config /etc/chatgate/chatgate.yaml >"$log" 2>&1 &
pid=$!
ready_ports "$log"
curl -sf "http://127.0.0.1:$API/healthz" | grep -q '"ok"'
answer=$(curl -sf "http://127.0.0.1:$API/api/chat" -H 'Content-Type: application/json' \
  -d '{"userId":"pkg","query":"hello"}')
[ "$answer" = '{"answer":"echo: hello (turn 1)"}' ] || { echo "package-test: got $answer" >&2; exit 1; }
# The packaged config speaks Chinese to users (router.locale: zh-CN).
grep -q '^  locale: zh-CN' /etc/chatgate/chatgate.yaml ||
  { echo "package-test: the packaged config is not zh-CN" >&2; exit 1; }
help=$(curl -sf "http://127.0.0.1:$API/api/chat" -H 'Content-Type: application/json' \
  -d '{"userId":"pkg","query":"/reset"}')
[ "$help" = '{"answer":"已清除对话上下文，我们重新开始吧。"}' ] ||
  { echo "package-test: /reset answered $help" >&2; exit 1; }
grep -q "plugin instances" "$log"
ps -o user= -p "$(pgrep -n -x chatgate)" | grep -q '^chatgate$'
$SUDO kill -TERM "$(pgrep -n -x chatgate)"
wait "$pid" || true
pid=""
echo "ran as the chatgate user: /healthz and /api/chat answered"

# The SDK: pkg-config and CMake find it; the example builds against it alone.
echo "chatgate-sdk $(pkg-config --modversion chatgate-sdk) (pkg-config)"
ex=$(mktemp -d)
cp -r /usr/share/doc/chatgate-dev/examples/http_bridge "$ex/src"
cmake -S "$ex/src" -B "$ex/build" >/dev/null
cmake --build "$ex/build" >/dev/null
$SUDO install -m 0644 "$ex/build/http_bridge.so" /usr/lib/chatgate/plugins/http_bridge.so
cat > "$ex/callback.py" <<PY
import http.server, os, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open("$ex/answer", "wb") as f:
            f.write(self.headers["X-Conversation-Id"].encode() + b"|" + body)
        self.send_response(204); self.end_headers()
    def log_message(self, *a): pass
server = http.server.HTTPServer(("127.0.0.1", 0), H)
with open("$ex/cb_port.tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename("$ex/cb_port.tmp", "$ex/cb_port")
server.serve_forever()
PY
python3 "$ex/callback.py" & cb_pid=$!
for _ in $(seq 600); do [ -s "$ex/cb_port" ] && break; sleep 0.05; done
CB=$(cat "$ex/cb_port")
cat > "$ex/bridge.yaml" <<YAML
listeners:
  api: {address: 127.0.0.1, port: 0}
  admin: {address: 127.0.0.1, port: 0}
plugins:
  instances:
    - name: bridge
      plugin: http_bridge.so
      config:
        callbackUrl: http://127.0.0.1:$CB/answers
        token: pkg-test-token
    - {name: echo, plugin: echo.so}
    - {name: memory, plugin: memory.so}
router: {model: echo, cache: memory}
YAML
chmod 0755 "$ex"; chmod 0644 "$ex/bridge.yaml"
: > "$log"  # before the start: ready_ports must not read the first run's line
$SUDO runuser -u chatgate -- /usr/bin/chatgate --config "$ex/bridge.yaml" >"$log" 2>&1 &
pid=$!
ready_ports "$log"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'X-Bridge-Token: pkg-test-token' \
  --data-binary 'hello bridge' "http://127.0.0.1:$API/webhook/bridge?conversation=c1&user=u1&id=m1")
[ "$code" = 202 ] || { echo "package-test: the bridge answered $code" >&2; cat "$log" >&2; exit 1; }
for _ in $(seq 100); do [ -s "$ex/answer" ] && break; sleep 0.05; done
[ "$(cat "$ex/answer" 2>/dev/null)" = "c1|echo: hello bridge (turn 1)" ] ||
  { echo "package-test: callback got '$(cat "$ex/answer" 2>/dev/null)'" >&2; cat "$log" >&2; exit 1; }
$SUDO kill -TERM "$(pgrep -n -x chatgate)"
wait "$pid" || true
pid=""
kill "$cb_pid" 2>/dev/null || true
cb_pid=""
$SUDO rm -f /usr/lib/chatgate/plugins/http_bridge.so
rm -rf "$ex"
echo "the SDK example, built out of tree against chatgate-dev, exchanged a message"

$SUDO apt-get purge -y -q chatgate chatgate-dev >/dev/null
left=""
for p in /usr/bin/chatgate /usr/lib/chatgate /etc/chatgate /var/lib/chatgate /usr/include/chatgate \
         /lib/systemd/system/chatgate.service /lib/systemd/system/chatgate-api.socket \
         /lib/systemd/system/chatgate-admin.socket /usr/share/doc/chatgate \
         /usr/share/doc/chatgate-dev /usr/share/man/man1/chatgate.1.gz; do
  [ -e "$p" ] && left="$left $p"
done
getent passwd chatgate >/dev/null && left="$left user:chatgate"
getent group chatgate >/dev/null && left="$left group:chatgate"
[ -z "$left" ] || { echo "package-test: left behind after purge:$left" >&2; exit 1; }
trap - EXIT INT TERM
rm -f "$log"
echo "package-test: OK (installed, checked, ran, purged clean)"
