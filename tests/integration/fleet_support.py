"""What test_fleet.py's tests share: a durable redis-server (AOF) on a unix
socket, Debian's HAProxy in front of several chatgate processes, the fleet
of chatgates with their configs, a driver that sends signed Feishu webhook
callbacks at a steady rate and retries what was not answered 2xx (as Feishu
does), and the checks on what the fakes recorded.

Independent of chatgate's code: Redis is read with test_redis's RESP client,
HAProxy is steered over its runtime API (a unix socket), callbacks are
encrypted and signed with the fake Feishu's helpers.

CHATGATE_FLEET_QUEUE=memory configures the instances without `router.queue`
and `queue:` (the in-memory queue, Redis only as the cache): the mechanics
run end to end against a chatgate that does not have the durable queue yet,
and the checks show what it loses."""
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid

from harness import (DEADLINE, SOURCE_DIR, Chatgate, FakeProcess, gateway_config, get, post_json,
                     wait_for)
from channel_support import FakeOpenAI, parse_metrics, yaml_value
from test_redis import REDIS, RespError, read_reply

FAKES = os.path.join(SOURCE_DIR, "tests", "fakes")
sys.path.insert(0, FAKES)
import fake_feishu  # noqa: E402  (the fake's helpers: encrypt, sign, message_event)

HAPROXY = "/usr/sbin/haproxy"
DURABLE = os.environ.get("CHATGATE_FLEET_QUEUE", "redis") != "memory"
PARTITIONS = 16
LEASE_MS = 2000
MAX_DELIVERIES = 3
KEY_PREFIX = "chatgate:"
DEAD = KEY_PREFIX + "q:dead"
MEMBERS = KEY_PREFIX + "q:members"
GROUP = "chatgate"

APP_SECRET = "fleetApp-S3cr3t-2231-grebe"
VTOKEN = "fleetVerif-T0ken-7712-tern"
ENCRYPT_KEY = "fleetEncrypt-K3y-5519-avocet"
SECRETS = (APP_SECRET, VTOKEN, ENCRYPT_KEY)
BOT_LEARNED = "the bot's open_id is ou_bot"
MODEL_ERROR = "try again"  # in the short error reply a failed model call gets


def stream(p):
    return "%sq:%d" % (KEY_PREFIX, p)


# ------------------------------------------------------------------ Redis

def stop_process(proc, signum, name):
    """Sends `signum` and waits; the exit status (None if never started).
    A process that does not stop in time is killed and the test fails."""
    if proc and proc.poll() is None:
        proc.send_signal(signum)
        try:
            proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("%s did not stop on %s" % (name, signal.Signals(signum).name))
    return proc.returncode if proc else None


def close_process(proc, directory):
    """Kills what is still running and removes its temporary directory."""
    if proc and proc.poll() is None:
        proc.kill()
        proc.wait()
    directory.cleanup()


class DurableRedis:
    """redis-server on a unix socket in a temporary directory, with the
    append-only file on (appendfsync everysec), as docs/fleet.md recommends.
    stop() is a SIGTERM (Redis writes the AOF and exits 0); start() again
    brings it back on the same socket and directory with what the AOF kept."""

    def __init__(self):
        self.proc = None
        self.dir = tempfile.TemporaryDirectory(prefix="cg-fleet-redis-")
        self.socket = os.path.join(self.dir.name, "redis.sock")
        self.log_path = os.path.join(self.dir.name, "redis.log")

    def start(self):
        args = [REDIS, "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
                "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                "--dir", self.dir.name, "--logfile", self.log_path]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answers():
            if self.proc.poll() is not None:
                raise AssertionError("redis-server exited with %s:\n%s"
                                     % (self.proc.returncode, self.log()[-2000:]))
            try:
                return self.command("PING") == b"PONG"
            except OSError:
                return False
            except RespError:  # LOADING: still reading the AOF
                return False
        wait_for(answers, "redis-server to answer on " + self.socket)
        return self

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def command(self, *words, timeout=5):
        """One command over RESP; an error reply is raised as RespError."""
        deadline = time.monotonic() + timeout
        s = socket.socket(socket.AF_UNIX)
        try:
            s.settimeout(timeout)
            s.connect(self.socket)
            s.sendall(b"*%d\r\n" % len(words) + b"".join(
                b"$%d\r\n%s\r\n" % (len(w), w) for w in
                (x if isinstance(x, bytes) else str(x).encode() for x in words)))
            reply = read_reply(s, deadline)
        finally:
            s.close()
        if isinstance(reply, RespError):
            raise reply
        return reply

    def stop(self):
        """SIGTERM; returns redis-server's exit status."""
        return stop_process(self.proc, signal.SIGTERM, "redis-server")

    def close(self):
        close_process(self.proc, self.dir)

    # What the durable queue left in Redis (read here, not through chatgate).

    def xlen(self, key):
        return self.command("XLEN", key)

    def queued(self):
        """Entries still in the partitions' streams, and pending (read, not
        acknowledged) in their consumer groups: (length, pending)."""
        length = pending = 0
        for p in range(PARTITIONS):
            length += self.xlen(stream(p))
            try:
                summary = self.command("XPENDING", stream(p), GROUP)
            except RespError:  # no such stream or group (yet)
                continue
            pending += summary[0]
        return length, pending

    def streams(self):
        """{partition: the names of its stream's consumer groups} for every
        partition whose stream exists."""
        out = {}
        for p in range(PARTITIONS):
            if self.command("EXISTS", stream(p)):
                out[p] = [dict(zip(g[::2], g[1::2]))[b"name"].decode()
                          for g in self.command("XINFO", "GROUPS", stream(p))]
        return out

    def owners(self):
        """{partition: the instance name holding its lease} (None: nobody).
        An instance's name is "<host>-<pid>-<random>"."""
        return {p: (lambda v: v.decode() if v is not None else None)(
            self.command("GET", stream(p) + ":owner")) for p in range(PARTITIONS)}

    def live_members(self):
        """The instances whose heartbeat in the members set has not run out
        (scored by expiry, in Redis's own clock), sorted."""
        seconds, micros = self.command("TIME")
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        return sorted(m.decode() for m in self.command(
            "ZRANGEBYSCORE", MEMBERS, "(%d" % now_ms, "+inf"))

    def dead_letters(self):
        """The dead-letter stream's entries: [(id, {field: value})]."""
        out = []
        for entry_id, fields in self.command("XRANGE", DEAD, "-", "+") or []:
            out.append((entry_id.decode(), {fields[i].decode(): fields[i + 1]
                                            for i in range(0, len(fields), 2)}))
        return out


# ------------------------------------------------------------------ HAProxy

class HAProxy:
    """Debian's HAProxy in http mode in front of the fleet's API ports, with
    `option httpchk GET /readyz` every 200 ms. HAProxy cannot listen on port
    0, so the frontend's port is found by binding a socket on 0, closing it
    and starting HAProxy on it; if someone took it meanwhile, HAProxy fails
    to bind and exits, and the next port is tried. Servers are moved to a
    restarted instance's new port over the runtime API (a unix socket)."""

    def __init__(self, ports):
        self.dir = tempfile.TemporaryDirectory(prefix="cg-fleet-haproxy-")
        self.admin = os.path.join(self.dir.name, "admin.sock")
        self.servers = ["s%d" % (i + 1) for i in range(len(ports))]
        self.ports = list(ports)
        self.proc = None
        self.port = None
        self.log_path = os.path.join(self.dir.name, "haproxy.log")

    def config(self, port):
        servers = "".join("    server %s 127.0.0.1:%d check\n" % (name, p)
                          for name, p in zip(self.servers, self.ports))
        return textwrap.dedent("""\
            global
                maxconn 4096
                noreuseport
                stats socket {admin} mode 600 level admin
            defaults
                mode http
                timeout connect 1s
                timeout client 30s
                timeout server 30s
                timeout check 1s
                retries 2
                option redispatch
            frontend webhooks
                bind 127.0.0.1:{port}
                default_backend fleet
            backend fleet
                balance roundrobin
                option httpchk GET /readyz
                default-server inter 200ms fall 2 rise 2
            """).format(admin=self.admin, port=port) + servers

    def start(self):
        for _ in range(20):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            path = os.path.join(self.dir.name, "haproxy.cfg")
            with open(path, "w") as f:
                f.write(self.config(port))
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen([HAPROXY, "-f", path, "-db"], stdout=log,
                                         stderr=subprocess.STDOUT)
            log.close()

            def up():
                if self.proc.poll() is not None:
                    return "exited"
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        pass
                    return os.path.exists(self.admin) and "listening"
                except OSError:
                    return False
            state = wait_for(up, "haproxy to listen on %d" % port)
            if state == "listening":
                self.port = port
                return self
            if "cannot bind" not in self.log() and "Address already in use" not in self.log():
                raise AssertionError("haproxy exited with %s:\n%s" % (self.proc.returncode,
                                                                     self.log()[-3000:]))
        raise AssertionError("haproxy found no free port in 20 tries:\n" + self.log()[-3000:])

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def runtime(self, command):
        """One runtime API command; its answer."""
        s = socket.socket(socket.AF_UNIX)
        try:
            s.settimeout(5)
            s.connect(self.admin)
            s.sendall(command.encode() + b"\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return data.decode()
                data += chunk
        finally:
            s.close()

    def status(self):
        """{server: "UP" | "DOWN" | ...} of the backend, from `show stat`."""
        lines = self.runtime("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == "fleet" and row.get("svname") in self.servers:
                out[row["svname"]] = row["status"]
        return out

    def wait_up(self, servers=None):
        servers = servers or self.servers
        wait_for(lambda: all(self.status().get(s) == "UP" for s in servers),
                 "haproxy to see %s UP (%s)" % (servers, self.status()))

    def move(self, index, port):
        """Points server `index` at a new port (a restarted instance's)."""
        self.ports[index] = port
        answer = self.runtime("set server fleet/%s addr 127.0.0.1 port %d"
                              % (self.servers[index], port))
        if "port changed" not in answer and "no need to change" not in answer:
            raise AssertionError("haproxy refused the new port: %r" % answer)

    def stop(self):
        """A soft stop (SIGUSR1); HAProxy's exit status."""
        return stop_process(self.proc, signal.SIGUSR1, "haproxy")

    def close(self):
        close_process(self.proc, self.dir)


# ------------------------------------------------------------------ fakes

class FakeFeishu(FakeProcess):
    def __init__(self, *args):
        super().__init__([sys.executable, os.path.join(FAKES, "fake_feishu.py"),
                          "--app-secret", APP_SECRET] + list(args))

    def get(self, path):
        status, body, _ = get(self.port, path, timeout=60)
        assert status == 200, (path, status, body[:300])
        return json.loads(body)

    def control(self, path, body=None):
        status, doc, _ = post_json(self.port, path, body or {}, timeout=60)
        assert status == 200, (path, status, doc)
        return doc

    def known(self, message_ids):
        """The platform delivered these messages to the bot (the driver
        posts them itself): the bot may reply to them."""
        self.control("/_control/known", {"message_ids": list(message_ids)})

    def replies(self):
        """Every reply the fake stored (one per uuid), in arrival order."""
        return [m for m in self.get("/_control/messages")["messages"] if m["kind"] == "reply"]

    def reply_calls(self):
        """Every reply request chatgate made, uuid duplicates included:
        [(inbound message id, t)], t on this machine's monotonic clock."""
        out = []
        for c in self.get("/_control/calls")["calls"]:
            m = re.match(r"/open-apis/im/v1/messages/([^/?]+)/reply", c["path"])
            if m:
                out.append((m.group(1), c["t"]))
        return out

    def tokens(self):
        """Every tenant token issued: [{token, issued_at, ...}], issued_at on
        this machine's monotonic clock. Each chatgate process fetches its
        own, so a reply's `authorization` names the process that sent it."""
        return self.get("/_control/tokens")["tokens"]

    def problems(self):
        return self.get("/_control/problems")["problems"]


class Model(FakeOpenAI):
    """fake_openai with a steady latency. Each instance's openai.so points
    at its own path prefix (`/<tag>/v1`), so every call says which instance
    made it."""

    def setup(self, delay="delay:50-200", rules=()):
        assert post_json(self.port, "/control", {"default": delay, "rules": list(rules)})[0] == 200

    def calls(self):
        """[(tag, text, t)] of every call, t on this machine's monotonic clock."""
        out = []
        for c in json.loads(get(self.port, "/calls", timeout=60)[1]):
            out.append((c["path"].strip("/").split("/")[0], c["text"], c["t"]))
        return out

    def problems(self):
        return json.loads(get(self.port, "/problems")[1])


# ------------------------------------------------------------------ the fleet

def instance_config(redis_socket, fs_port, model, tag, mode="webhook", durable=DURABLE,
                    feishu_extra=None, echo=None, top_extra=""):
    """The instances redis (the cache, and the queue when `durable`), feishu
    and model: openai.so on `model` under the path `/<tag>/v1`, or, given
    `echo` (its config: {"prefix": ..., "delayMs": ...}), echo.so.
    `top_extra` is YAML for the top level (an admin token, say)."""
    fs = {"appId": "cli_test", "appSecret": APP_SECRET,
          "domain": "http://127.0.0.1:%d" % fs_port, "mode": mode,
          "verificationToken": VTOKEN}
    fs.update(feishu_extra or {})
    if mode == "webhook":
        fs["encryptKey"] = ENCRYPT_KEY  # callbacks encrypted and signed
    lines = ["    - name: redis", "      plugin: redis.so", "      config:",
             "        unixSocket: %s" % redis_socket,
             "    - name: feishu", "      plugin: feishu.so", "      config:"]
    lines += ["        %s: %s" % (k, yaml_value(v)) for k, v in fs.items()]
    if echo is None:
        lines += ["    - name: model", "      plugin: openai.so", "      config:",
                  "        endpoint: %s/%s/v1" % (model.base, tag),
                  "        model: fake-model", "        retries: 0"]
    else:
        lines += ["    - name: model", "      plugin: echo.so", "      config:"]
        lines += ["        %s: %s" % (k, yaml_value(v)) for k, v in echo.items()]
    instances = "\n".join(lines) + "\n"
    router_extra = "  queue: redis\n" if durable else ""
    tail = "shutdown:\n  deadlineMs: 10000\n"
    if durable:
        tail = ("queue:\n  partitions: %d\n  leaseMs: %d\n  maxDeliveries: %d\n"
                % (PARTITIONS, LEASE_MS, MAX_DELIVERIES)) + tail
    return gateway_config(0, instances, "model", "redis", router_extra, top_extra=top_extra,
                          tail=tail)


class Member:
    """One chatgate of the fleet; `tag` names its model path."""

    def __init__(self, test, config, tag):
        self.tag = tag
        self.starts = 0
        self.cg = Chatgate(config)
        test.addCleanup(self.cg.__exit__, None, None, None)

    def start(self):
        self.cg.start()
        self.starts += 1
        self.cg.wait_log(BOT_LEARNED, count=self.starts)
        return self

    @property
    def port(self):
        return self.cg.port

    def alive(self):
        return self.cg.proc is not None and self.cg.proc.poll() is None

    def metrics(self):
        status, text, _ = get(self.cg.admin_port, "/metrics")
        assert status == 200, status
        return parse_metrics(text)

    def metric(self, name):
        """The sum of a metric's series (0 when absent)."""
        return sum(v for n, _, v in self.metrics() if n == name)

    def readyz(self):
        try:
            return get(self.port, "/readyz", timeout=5)[0]
        except OSError:
            return None


def owned(members):
    """Partitions owned by the live members, summed."""
    return sum(m.metric("chatgate_queue_partitions_owned") for m in members if m.alive())


# ------------------------------------------------------------------ the driver

class Message:
    __slots__ = ("conv", "k", "message_id", "event_id", "text", "event", "attempts",
                 "statuses", "first_t", "accepted_t")

    def __init__(self, conv, k, text=None):
        self.conv, self.k = conv, k
        self.message_id = "om_c%d_m%d" % (conv, k)
        self.event_id = "ev_c%d_m%d" % (conv, k)
        self.text = text or "c%d m%d" % (conv, k)
        self.event = fake_feishu.message_event(
            self.message_id, "oc_c%d" % conv, "p2p", self.text, sender_open_id="ou_c%d" % conv,
            event_id=self.event_id, token=VTOKEN)
        self.attempts = 0
        self.statuses = []
        self.first_t = None
        self.accepted_t = None


def conversations(n_conv, per_conv, texts=None):
    """[[Message]] per conversation; `texts` maps (conv, k) to another text."""
    texts = texts or {}
    return [[Message(c, k, texts.get((c, k))) for k in range(per_conv)] for c in range(n_conv)]


class Driver:
    """Feishu's side of the webhook: sends each message's callback (encrypted
    and signed, a fresh timestamp and nonce per try, the same event id) to
    127.0.0.1:`port`; a callback not answered 2xx (or a connection error or
    no answer within `attempt_timeout`) is sent again after a short pause.
    The messages of a conversation go one after the other (the next once
    the one before was answered 2xx); over all conversations at `rate` per
    second. Runs on its own thread with an asyncio loop."""

    def __init__(self, port, convs, rate, retry_pause=(0.1, 0.3), attempt_timeout=5.0):
        self.port = port
        self.convs = convs
        self.rate = rate
        self.retry_pause = retry_pause
        self.attempt_timeout = attempt_timeout
        self.lock = threading.Lock()
        self.accepted = 0
        self.refused = {}      # status (or "error: ...") -> count
        self.refusals = 0
        self.stopping = False
        self.done = threading.Event()
        self.thread = None
        self.error = None

    @property
    def messages(self):
        return [m for conv in self.convs for m in conv]

    def start(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by wait()
            self.error = exc
        finally:
            self.done.set()

    async def _main(self):
        t0 = time.monotonic()
        n = len(self.convs)
        await asyncio.gather(*(self._conversation(conv, i, n, t0)
                               for i, conv in enumerate(self.convs)))

    async def _conversation(self, conv, i, n, t0):
        for m in conv:
            due = t0 + (m.k * n + i) / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            while not self.stopping:
                status = await self._attempt(m)
                if isinstance(status, int) and 200 <= status < 300:
                    m.accepted_t = time.monotonic()
                    with self.lock:
                        self.accepted += 1
                    break
                with self.lock:
                    self.refused[status] = self.refused.get(status, 0) + 1
                    self.refusals += 1
                await asyncio.sleep(random.uniform(*self.retry_pause))
            if self.stopping:
                return

    def request(self, m):
        """The callback's bytes: the event encrypted, a fresh timestamp and
        nonce, signed (a new IV, nonce and signature on every try)."""
        cipher = fake_feishu.encrypt(ENCRYPT_KEY, json.dumps(m.event))
        body = json.dumps({"encrypt": cipher}).encode()
        ts = str(int(time.time()))
        nonce = uuid.uuid4().hex
        headers = {"X-Lark-Request-Timestamp": ts, "X-Lark-Request-Nonce": nonce,
                   "X-Lark-Signature": fake_feishu.sign(ts, nonce, ENCRYPT_KEY, body)}
        head = "POST /webhook/feishu HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % self.port
        head += "Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        head += "Connection: close\r\n"
        head += "".join("%s: %s\r\n" % kv for kv in headers.items()) + "\r\n"
        return head.encode() + body

    def post(self, m, port=None, timeout=10):
        """One callback for `m`, sent at once (not paced): its HTTP status,
        or None on a connection error."""
        try:
            with socket.create_connection(("127.0.0.1", port or self.port), timeout=timeout) as s:
                s.sendall(self.request(m))
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except OSError:
            return None
        match = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
        return int(match.group(1)) if match else None

    async def _attempt(self, m):
        m.attempts += 1
        if m.first_t is None:
            m.first_t = time.monotonic()
        writer = None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port), self.attempt_timeout)
            writer.write(self.request(m))
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), self.attempt_timeout)
            match = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
            status = int(match.group(1)) if match else "error: no status line %r" % data[:40]
        except asyncio.TimeoutError:
            status = "error: no answer in %ss" % self.attempt_timeout
        except OSError as exc:
            status = "error: %s" % type(exc).__name__
        finally:
            if writer is not None:
                writer.close()
        m.statuses.append(status)
        return status

    def wait(self, timeout):
        """Waits until every message was answered 2xx (or `timeout`), then
        stops retrying; returns the messages never answered 2xx."""
        self.done.wait(timeout)
        self.stopping = True
        self.done.wait(30)
        if self.error:
            raise self.error
        return [m for m in self.messages if m.accepted_t is None]

    def summary(self):
        with self.lock:
            return "accepted %d of %d, refusals %d %s" % (
                self.accepted, len(self.messages), self.refusals,
                dict(sorted(((str(k), v) for k, v in self.refused.items()))))


# ------------------------------------------------------------------ checks

def answered_all(fake, messages):
    """True once every message has a reply at the fake."""
    replied = {r["message_id"] for r in fake.replies()}
    return all(m.message_id in replied for m in messages)


class Outcome:
    """What the fakes recorded for a run, checked against the messages:
    replies per message id, their order per conversation, the raw reply
    calls (uuid duplicates included) and the model calls per message and
    instance tag."""

    def __init__(self, fake, model, messages):
        self.messages = messages
        self.by_id = {m.message_id: m for m in messages}
        self.replies = fake.replies()
        self.raw = fake.reply_calls()
        self.calls = model.calls()
        self.replies_per = {}
        for r in self.replies:
            self.replies_per.setdefault(r["message_id"], []).append(r)
        self.raw_per = {}
        self.first_sent = {}
        for mid, t in self.raw:
            self.raw_per[mid] = self.raw_per.get(mid, 0) + 1
            self.first_sent[mid] = min(t, self.first_sent.get(mid, t))
        self.calls_per = {}  # text -> [(tag, t)]
        for tag, text, t in self.calls:
            self.calls_per.setdefault(text, []).append((tag, t))

    def lost(self):
        return sorted(m.message_id for m in self.messages if m.message_id not in self.replies_per)

    def doubled(self):
        """Messages the user saw answered more than once."""
        return sorted(mid for mid, rs in self.replies_per.items() if len(rs) > 1)

    def unknown(self):
        """Replies to no message the driver sent."""
        return sorted(mid for mid in self.replies_per if mid not in self.by_id)

    def wrong_text(self, special=None):
        """Replies whose text is not the model's answer to their message
        (`special` maps a message id to a predicate for its text instead)."""
        special = special or {}
        out = []
        for mid, rs in self.replies_per.items():
            m = self.by_id.get(mid)
            if m is None:
                continue
            text = (rs[0]["content"] or {}).get("text", "")
            ok = special[mid](text) if mid in special else \
                text.startswith("reply to: %s (" % m.text)
            if not ok:
                out.append((mid, text))
        return sorted(out)

    def out_of_order(self):
        """Conversations whose replies did not arrive in message order."""
        seen = {}
        for r in self.replies:
            m = self.by_id.get(r["message_id"])
            if m is not None:
                seen.setdefault(m.conv, []).append(m.k)
        return {c: ks for c, ks in seen.items() if ks != sorted(ks)}

    def sent_twice(self):
        """Messages whose reply was sent more than once (the later ones
        deduped by their uuid at the platform): {message id: sends}."""
        return {mid: n for mid, n in self.raw_per.items() if n > 1}

    def model_calls(self, m):
        return self.calls_per.get(m.text, [])

    def called_twice(self):
        """Messages the model was asked about more than once:
        {message id: [tags]}."""
        return {m.message_id: [tag for tag, _ in self.model_calls(m)]
                for m in self.messages if len(self.model_calls(m)) > 1}

    def touched_by(self, tag):
        """Message ids the instance tagged `tag` asked the model about."""
        return {m.message_id for m in self.messages
                if any(t == tag for t, _ in self.model_calls(m))}

    def in_flight(self, tag, t_kill, margin=0.5):
        """What the instance tagged `tag`, killed at `t_kill`, may have left
        half done: messages it asked the model about whose reply had not
        reached the platform by then (or only within `margin` seconds
        before, the window in which the reply went out and its record was
        not yet written). Only these may be asked and sent again."""
        return {mid for mid in self.touched_by(tag)
                if mid not in self.first_sent or self.first_sent[mid] >= t_kill - margin}


class Pusher:
    """Feishu's side of the long connection: pushes each message's event to
    one of the app's connected clients at random (the fake's "pick":
    "random"), a conversation's next event once the one before was acked
    with code 200. An event is pushed again, as Feishu does, when its ack
    says other than 200 or when the connection it went out on closed
    without acking it (or the push found no client). Call step() in a loop."""

    def __init__(self, fake, convs):
        self.fake = fake
        self.convs = convs
        self.pushes = {}    # message id -> [(frame id, device id) | None (not sent)]
        self.settled = 0
        self.waiting = {}
        self.again = {"not acked, connection gone": 0, "acked with another code": 0,
                      "not sent": 0}

    @property
    def messages(self):
        return [m for conv in self.convs for m in conv]

    def push(self, m):
        status, doc, _ = post_json(self.fake.port, "/_control/ws/event",
                                   {"event": m.event, "pick": "random"}, timeout=30)
        m.attempts += 1
        if m.first_t is None:
            m.first_t = time.monotonic()
        sent = status == 200 and doc.get("sent")
        self.pushes.setdefault(m.message_id, []).append(
            (doc["message_id"], doc["device_id"]) if sent else None)

    def step(self):
        """One look at the fake's acks and connections, and the pushes that
        follow from it. True once every event was acked with 200."""
        ws = self.fake.get("/_control/ws")
        acks = {a["message_id"]: a["payload"].get("code") for a in ws["acks"]}
        open_devices = {c["device_id"] for c in ws["clients"] if c["open"]}
        self.waiting = {}  # device id -> pushes it has not acked yet
        for tries in self.pushes.values():
            for p in tries:
                if p and p[0] not in acks:
                    self.waiting[p[1]] = self.waiting.get(p[1], 0) + 1
        for conv in self.convs:
            current = next((m for m in conv if m.accepted_t is None), None)
            if current is None:
                continue
            tries = self.pushes.get(current.message_id, [])
            if any(p and acks.get(p[0]) == 200 for p in tries):
                current.accepted_t = time.monotonic()
                self.settled += 1
                current = next((m for m in conv if m.accepted_t is None), None)
                if current is not None:
                    self.push(current)
                continue
            if not tries:
                self.push(current)
                continue
            last = tries[-1]
            if last is None:
                self.again["not sent"] += 1
            elif last[0] in acks:
                self.again["acked with another code"] += 1
            elif last[1] not in open_devices:
                self.again["not acked, connection gone"] += 1
            else:
                continue  # its ack may still come
            self.push(current)
        return self.settled == len(self.messages)

    def summary(self):
        return "acked 200 %d of %d, pushed again: %s" % (self.settled, len(self.messages),
                                                         self.again)
