"""Zero-downtime handover (issue 18) on the platforms' long connections: the
real chatgate, feishu.so in long-connection mode and dingtalk.so in Stream
mode, against the independent fakes (tests/fakes/fake_feishu.py,
fake_dingtalk.py), echo.so as the model (a short delayMs, so that answers
are in flight at the handover) and the in-memory queue and cache.

The test plays the platform: a driver thread pushes each message to one of
the app's open connections at random (the fakes' "pick": "random"; with one
connection open that is the one) at a steady rate, and pushes a message
again (the same message and event ids, a new frame) when its push was not
acked with code 200 within ACK_TIMEOUT seconds, was acked with another
code, found no open connection, or went out on a connection that closed
before its ack, as Feishu and DingTalk do (test_fleet's Pusher, plus the
timeout).

- test_feishu_sigusr2_hands_over_the_long_connection: 160 messages over 20
  chats at 40/s; midway SIGUSR2. The old process exits 0 after the new one
  took over; the new one opened its connection before the old one closed
  its own (make before break: the fake's connection history), which the
  old one closed itself (1000, "handing over") and then answered what it
  had taken (its replies carry its own tenant token); every message has
  exactly one reply (none missing, none doubled; one reply request each,
  so none was even answered twice and deduped by the reply's uuid); the
  admin status names the new pid.
- test_dingtalk_reload_hands_over_the_stream_connection: the same over the
  Stream gateway, the handover started by POST /admin/api/reload after the
  echo instance's prefix changed in the file (200, "handover" naming
  plugins.instances[echo].config, "pid" the new process); the old process
  answers with the old prefix after closing its connection, messages first
  pushed once it had exited (and the last replies) with the new one.
- test_feishu_sigterm_quiesces_and_finishes_what_it_acked: one process, a
  burst of messages acked and still being answered, then SIGTERM while the
  driver goes on pushing: the connection is closed by chatgate (1000)
  while its answers are still going out and before it exits; every
  message it acked is answered before it exits; nothing pushed after the
  quiesce is acked; a second process started afterwards is pushed the rest
  and every message ends with exactly one reply.

Each test ends with the fake's protocol problems empty and every chatgate
process's exit status 0. Run alone (RUN_SERIAL in CMakeLists.txt): the
driver's ACK_TIMEOUT is a platform's patience, and a machine loaded by other
suites could make an ack late enough to be pushed again to the other
process."""
import json
import os
import signal
import sys
import threading
import time
import unittest

from harness import (DEADLINE, HANDOVER_FAILED, SOURCE_DIR, Chatgate, FakeProcess, gateway_config,
                     get, post_json)
from channel_support import wait_for, yaml_value
from test_admin import request

FAKES = os.path.join(SOURCE_DIR, "tests", "fakes")
sys.path.insert(0, FAKES)
import fake_dingtalk  # noqa: E402
import fake_feishu  # noqa: E402

RATE = 40.0          # messages pushed per second
CHATS = 20
PER_CHAT = 8         # 160 messages: four seconds at RATE
ACK_TIMEOUT = 1.5    # a push not acked with 200 by then is pushed again
LOOK_EVERY = 0.1     # how often the driver reads the fake's acks and connections
ECHO_DELAY_MS = 300  # answers in flight at the handover (a dozen at RATE)
TOKEN = "hl-adm1n-T0ken-8812"
BEARER = {"Authorization": "Bearer " + TOKEN}

FS_SECRET = "hlApp-S3cr3t-5521-shrike"
FS_VTOKEN = "hlVerif-T0ken-0917-wren"
DT_CLIENT = "dinghl4417"
DT_SECRET = "hlClient-S3cr3t-3380-dipper"
SECRETS = (FS_SECRET, FS_VTOKEN, DT_SECRET, TOKEN)


# ------------------------------------------------------------------ messages

class Push:
    __slots__ = ("t", "frame", "conn")

    def __init__(self, t, frame, conn):
        self.t, self.frame, self.conn = t, frame, conn  # frame None: not sent


class Inbound:
    """One user message: its platform payload and every push of it."""

    def __init__(self, conv, k, mid, text, payload):
        self.conv, self.k, self.id, self.text, self.payload = conv, k, mid, text, payload
        self.pushes = []
        self.acked_t = None     # when the driver saw its ack with code 200
        self.acked_on = None    # the connection that acked it

    @property
    def first_t(self):
        return self.pushes[0].t if self.pushes else None


# ------------------------------------------------------------------ the platforms

class FeishuPlatform(FakeProcess):
    """fake_feishu.py: pushes over the long connection, replies by the open
    API (each names the inbound message id). Times: the monotonic clock."""

    name = "feishu"
    clock = staticmethod(time.monotonic)

    def __init__(self):
        super().__init__([sys.executable, os.path.join(FAKES, "fake_feishu.py"),
                          "--app-secret", FS_SECRET])

    def get(self, path):
        status, body, _ = get(self.port, path, timeout=30)
        assert status == 200, (path, status, body[:300])
        return json.loads(body)

    def message(self, conv, k, text):
        mid = "om_c%d_m%d" % (conv, k)
        return Inbound(conv, k, mid, text, fake_feishu.message_event(
            mid, "oc_c%d" % conv, "p2p", text, sender_open_id="ou_c%d" % conv,
            event_id="ev_c%d_m%d" % (conv, k), token=FS_VTOKEN))

    def push(self, m):
        """-> (frame id, connection) or None when no connection took it."""
        status, doc, _ = post_json(self.port, "/_control/ws/event",
                                   {"event": m.payload, "pick": "random"}, timeout=30)
        return (doc["message_id"], doc["device_id"]) if status == 200 and doc.get("sent") else None

    def look(self):
        """({frame id: ack code}, {open connection})."""
        ws = self.get("/_control/ws")
        return ({a["message_id"]: (a["payload"] or {}).get("code") for a in ws["acks"]},
                {c["device_id"] for c in ws["clients"] if c["open"]})

    def connections(self):
        """[{conn, opened_at, closed_at, close_code, close_reason, closed_by}]."""
        return [dict(h, conn=h["device_id"]) for h in self.get("/_control/ws")["history"]]

    def replies(self):
        """{inbound id: [reply text]} as the user sees them (a reply request
        repeating a uuid is not stored again)."""
        out = {}
        for r in self.get("/_control/messages")["messages"]:
            if r["kind"] == "reply":
                out.setdefault(r["message_id"], []).append((r["content"] or {}).get("text", ""))
        return out

    def reply_calls(self):
        """[{id: inbound id, t, by: its Authorization}] of every reply
        request, repeats included."""
        out = []
        for c in self.get("/_control/calls")["calls"]:
            path = c["path"].split("?")[0]
            if path.startswith("/open-apis/im/v1/messages/") and path.endswith("/reply"):
                out.append({"id": path.split("/")[5], "t": c["t"], "by": c["authorization"]})
        return out

    def tokens_before(self, t):
        """The Authorization values of the tenant tokens issued before `t`
        (each process fetches its own)."""
        return {"Bearer " + x["token"] for x in self.get("/_control/tokens")["tokens"]
                if x["issued_at"] < t}

    def other_messages(self):
        return [m for m in self.get("/_control/messages")["messages"] if m["kind"] != "reply"]

    def problems(self):
        return self.get("/_control/problems")["problems"]


class DingTalkPlatform(FakeProcess):
    """fake_dingtalk.py: pushes over the Stream connection, replies through
    each message's own session webhook. Times: unix seconds."""

    name = "dingtalk"
    clock = staticmethod(time.time)

    def __init__(self):
        super().__init__([sys.executable, os.path.join(FAKES, "fake_dingtalk.py"),
                          "--client-id", DT_CLIENT, "--client-secret", DT_SECRET])
        self.sessions = {}  # session id -> inbound id

    def get(self, path):
        status, body, _ = get(self.port, path, timeout=30)
        assert status == 200, (path, status, body[:300])
        return json.loads(body)

    def message(self, conv, k, text):
        status, s, _ = post_json(self.port, "/_control/session", {})
        assert status == 200, s
        mid = "msg_c%d_m%d" % (conv, k)
        self.sessions[s["session"]] = mid
        return Inbound(conv, k, mid, text, fake_dingtalk.robot_message(
            mid, "cid_c%d" % conv, "1", text, sender_staff_id="staff_c%d" % conv,
            session_webhook=s["url"], session_expires_ms=s["expires_ms"], robot_code=DT_CLIENT))

    def push(self, m):
        status, doc, _ = post_json(self.port, "/_control/stream/push",
                                   {"data": m.payload, "pick": "random"}, timeout=30)
        return (doc["message_id"], doc["connection_id"]) if status == 200 and doc.get("sent") \
            else None

    def look(self):
        s = self.get("/_control/stream")
        return ({mid: a.get("code") for mid, a in s["acks"].items()},
                {c["connection_id"] for c in s["clients"] if c["open"]})

    def connections(self):
        return [dict(c, conn=c["connection_id"]) for c in self.get("/_control/stream")["clients"]]

    def replies(self):
        out = {}
        for m in self.get("/_control/messages")["messages"]:
            if m["kind"] == "session":
                mid = self.sessions.get(m["session"], "unknown session " + m["session"])
                out.setdefault(mid, []).append((m.get("content") or {}).get("content", ""))
        return out

    def reply_calls(self):
        out = []
        for c in self.get("/_control/calls")["calls"]:
            if c["path"].startswith("/robot/sendBySession?"):
                sid = c["path"].split("session=")[1].split("&")[0]
                out.append({"id": self.sessions.get(sid, "unknown session " + sid), "t": c["at"],
                            "by": None})
        return out

    def other_messages(self):
        return [m for m in self.get("/_control/messages")["messages"] if m["kind"] != "session"]

    def problems(self):
        return self.get("/_control/problems")["problems"]


# ------------------------------------------------------------------ the driver

class Driver(threading.Thread):
    """The platform's side of the long connection, on its own thread:
    pushes scheduled messages when due, reads the fake's acks and open
    connections every LOOK_EVERY seconds, and pushes again what was not
    acked with 200 (see the module's docstring). `again` counts the reasons
    for pushing again."""

    def __init__(self, platform):
        super().__init__(daemon=True)
        self.platform = platform
        self.clock = platform.clock
        self.lock = threading.Lock()
        self.messages = []
        self.due = []           # [(due time, Inbound)], in order
        self.stopping = False
        self.error = None
        self.again = {"not acked in time": 0, "connection gone before its ack": 0,
                      "acked with another code": 0, "not delivered": 0}

    def schedule(self, messages, rate):
        """Pushes `messages` at `rate` per second from now on."""
        with self.lock:
            start = self.clock()
            for i, m in enumerate(messages):
                self.due.append((start + i / rate, m))
                self.messages.append(m)

    def run(self):
        try:
            next_look = 0.0
            while not self.stopping:
                now = self.clock()
                with self.lock:
                    ready = [m for t, m in self.due if t <= now]
                    self.due = [(t, m) for t, m in self.due if t > now]
                for m in ready:
                    self.push(m)
                if now >= next_look:
                    self.look()
                    next_look = self.clock() + LOOK_EVERY
                time.sleep(0.005)
        except BaseException as exc:  # reported by wait_settled
            self.error = exc

    def push(self, m):
        t = self.clock()
        sent = self.platform.push(m)
        m.pushes.append(Push(t, *sent) if sent else Push(t, None, None))

    def look(self):
        acks, open_conns = self.platform.look()  # after every push so far
        now = self.clock()
        with self.lock:
            pending = [m for m in self.messages if m.acked_t is None and m.pushes]
        for m in pending:
            ok = [p for p in m.pushes if p.frame is not None and acks.get(p.frame) == 200]
            if ok:
                m.acked_t, m.acked_on = now, ok[0].conn
                continue
            last = m.pushes[-1]
            if last.frame is None:  # no open connection, or the one picked was closing
                reason = "not delivered"
            elif last.frame in acks:
                reason = "acked with another code"
            elif last.conn not in open_conns:
                reason = "connection gone before its ack"
            elif now - last.t > ACK_TIMEOUT:
                reason = "not acked in time"
            else:
                continue  # its ack may still come
            self.again[reason] += 1
            self.push(m)

    def settled(self):
        with self.lock:
            return not self.due and all(m.acked_t is not None for m in self.messages)

    def wait_settled(self, timeout=DEADLINE):
        def done():
            if self.error:
                raise self.error
            return self.settled()
        wait_for(done, timeout, "every message acked with 200 (%s)" % self.summary())

    def stop(self):
        self.stopping = True
        if self.is_alive():
            self.join(10)

    def summary(self):
        with self.lock:
            acked = sum(m.acked_t is not None for m in self.messages)
            pushes = sum(len(m.pushes) for m in self.messages)
            return "acked %d of %d, %d pushes, pushed again: %s" % (
                acked, len(self.messages), pushes, self.again)


def conversations(platform, chats, per_chat, first=0):
    """The messages of `chats` conversations, interleaved: c0 m0, c1 m0, ...
    (numbered from `first` in each)."""
    return [platform.message(c, k, "c%d m%d" % (c, k))
            for k in range(first, first + per_chat) for c in range(chats)]


# ------------------------------------------------------------------ the tests

def echo_yaml(prefix, delay_ms=ECHO_DELAY_MS):
    return ("    - name: echo\n      plugin: echo.so\n      config:\n"
            "        prefix: %s\n        delayMs: %d\n" % (prefix, delay_ms))


def feishu_config(fake_port, prefix="echo", delay_ms=ECHO_DELAY_MS):
    fs = {"appId": "cli_test", "appSecret": FS_SECRET,
          "domain": "http://127.0.0.1:%d" % fake_port, "mode": "longconn",
          "verificationToken": FS_VTOKEN}
    lines = ["    - name: fs", "      plugin: feishu.so", "      config:"]
    lines += ["        %s: %s" % (k, yaml_value(v)) for k, v in fs.items()]
    instances = "\n".join(lines) + "\n" + echo_yaml(prefix, delay_ms) + \
        "    - name: memory\n      plugin: memory.so\n"
    return gateway_config(0, instances, "echo", "memory")


def dingtalk_config(fake_port, prefix):
    dt = {"clientId": DT_CLIENT, "clientSecret": DT_SECRET,
          "apiBase": "http://127.0.0.1:%d" % fake_port, "mode": "stream"}
    lines = ["    - name: dt", "      plugin: dingtalk.so", "      config:"]
    lines += ["        %s: %s" % (k, yaml_value(v)) for k, v in dt.items()]
    instances = "\n".join(lines) + "\n" + echo_yaml(prefix) + \
        "    - name: memory\n      plugin: memory.so\n"
    return gateway_config(0, instances, "echo", "memory",
                          top_extra="admin:\n  token: ${ADMIN_T}\n")


class HandoverCase(unittest.TestCase):
    def setUp(self):
        self.t_start = time.monotonic()

    def tearDown(self):
        print("\n  %s: %.1f s" % (self.id().split(".")[-1], time.monotonic() - self.t_start))

    def platform(self, cls):
        fake = cls()
        self.addCleanup(fake.close)
        # Run after every chatgate of the test has stopped (cleanups are LIFO).
        self.addCleanup(lambda: self.assertEqual(fake.problems(), [],
                                                 "the fake %s saw protocol problems" % fake.name))
        return fake

    def gateway(self, config, env=None):
        cg = Chatgate(config, env=env)
        self.addCleanup(cg.__exit__, None, None, None)
        return cg.start()

    def driver(self, fake):
        d = Driver(fake)
        self.addCleanup(d.stop)
        d.start()
        return d

    def load_until_midway(self, fake):
        """The driver pushing CHATS x PER_CHAT messages at RATE, returned once
        40% of them are pushed: where a test hands over."""
        driver = self.driver(fake)
        messages = conversations(fake, CHATS, PER_CHAT)
        driver.schedule(messages, RATE)
        wait_for(lambda: sum(bool(m.pushes) for m in messages) >= len(messages) * 0.4,
                 what="40%% of the messages pushed (%s)" % driver.summary())
        return driver, messages

    def open_connections(self, fake, n):
        return wait_for(lambda: (lambda c: c if len(c) == n else None)(
            [c for c in fake.connections() if c["closed_at"] is None]),
            what="%d open connection(s) at the fake" % n)

    def finish(self, cg):
        """SIGTERM, exit 0 (what it took is answered by then), no secret in the log."""
        self.assertEqual(cg.stop(), 0, cg.log()[-3000:])
        log = cg.log()
        for secret in SECRETS:
            self.assertNotIn(secret, log, "a secret in chatgate's log")

    def check_exactly_once(self, fake, messages, prefixes):
        """Every message has one reply, its echo with one of `prefixes`, and
        was answered by one reply request; nothing else was sent."""
        replies, calls = fake.replies(), fake.reply_calls()
        by_id = {m.id: m for m in messages}
        with self.subTest("none missing"):
            missing = sorted(m.id for m in messages if m.id not in replies)
            self.assertEqual(missing, [], "%d of %d messages never answered"
                             % (len(missing), len(messages)))
        with self.subTest("none doubled"):
            self.assertEqual({mid: r for mid, r in replies.items() if len(r) > 1}, {})
            self.assertEqual(sorted(set(replies) - set(by_id)), [], "replies to no message")
        with self.subTest("one reply request per message"):
            sent = {}
            for c in calls:
                sent[c["id"]] = sent.get(c["id"], 0) + 1
            self.assertEqual({mid: n for mid, n in sent.items() if n > 1}, {})
        with self.subTest("each reply is its message's echo"):
            wrong = [(mid, r[0]) for mid, r in replies.items() if mid in by_id and not any(
                r[0].startswith("%s: %s (turn " % (p, by_id[mid].text)) for p in prefixes)]
            self.assertEqual(wrong[:10], [])
        with self.subTest("nothing else sent"):
            self.assertEqual(fake.other_messages(), [])
        return replies

    def check_make_before_break(self, fake, t_handover):
        """One connection before the handover (the old process's), one opened
        after it (the new one's), which opened before the old one closed;
        the old one closed by chatgate with 1000, the new one still open."""
        conns = fake.connections()
        old = [c for c in conns if c["opened_at"] < t_handover]
        new = [c for c in conns if c["opened_at"] >= t_handover]
        self.assertEqual((len(old), len(new)), (1, 1), conns)
        old, new = old[0], new[0]
        with self.subTest("make before break"):
            self.assertIsNotNone(old["closed_at"], conns)
            self.assertLess(new["opened_at"], old["closed_at"], conns)
        with self.subTest("the old connection closed by the old process"):
            self.assertEqual((old["closed_by"], old["close_code"], old["close_reason"]),
                             ("client", 1000, "handing over"), old)
        with self.subTest("the new connection open"):
            self.assertIsNone(new["closed_at"], new)
        return old, new

    def status_pid(self, cg, headers=None):
        status, body, _ = request(cg.admin_port, "/admin/api/status", headers)
        self.assertEqual(status, 200, body)
        return json.loads(body)["pid"]


class LongConnectionHandoverTest(HandoverCase):
    def test_feishu_sigusr2_hands_over_the_long_connection(self):
        fake = self.platform(FeishuPlatform)
        cg = self.gateway(feishu_config(fake.port))
        self.open_connections(fake, 1)
        old_pid = cg.proc.pid
        # Midway: a binary upgrade.
        driver, messages = self.load_until_midway(fake)
        t_handover = fake.clock()
        cg.proc.send_signal(signal.SIGUSR2)
        new_pid = cg.follow_handover()  # the old one exited 0
        t_old_gone = fake.clock()
        self.assertNotEqual(new_pid, old_pid)
        self.assertIn("upgrade (SIGUSR2): pid %d took over; this process (pid %d) stops "
                      "accepting and drains" % (new_pid, old_pid), cg.log())
        driver.wait_settled()
        self.assertEqual(self.status_pid(cg), new_pid)
        old, _ = self.check_make_before_break(fake, t_handover)
        self.finish(cg)  # it drains: every reply it owes is out once it exited
        driver.stop()
        self.check_exactly_once(fake, messages, ["echo"])
        # The old process's replies (its own tenant token) after it closed
        # its connection: what it had taken, finished while it drained.
        by_old = fake.tokens_before(t_handover)
        finished = [c for c in fake.reply_calls() if c["by"] in by_old and old["closed_at"]
                    and c["t"] > old["closed_at"]]
        with self.subTest("the old process answered what it had taken after closing"):
            self.assertGreater(len(finished), 0)
        after = sum(m.first_t > t_old_gone for m in messages)
        print("\n  handover at %d of %d pushed; old pid %d gone %.2f s after SIGUSR2, answering "
              "%d after it closed its connection; %s; first pushed after it left: %d"
              % (sum(m.first_t < t_handover for m in messages), len(messages), old_pid,
                 t_old_gone - t_handover, len(finished), driver.summary(), after))

    def test_dingtalk_reload_hands_over_the_stream_connection(self):
        fake = self.platform(DingTalkPlatform)
        cg = self.gateway(dingtalk_config(fake.port, "before"), env={"ADMIN_T": TOKEN})
        self.open_connections(fake, 1)
        old_pid = cg.proc.pid
        driver, messages = self.load_until_midway(fake)
        cg.rewrite_config("prefix: before", "prefix: after", count=1)
        t_handover = fake.clock()
        status, body, _ = request(cg.admin_port, "/admin/api/reload", BEARER, method="POST",
                                  body="{}")
        doc = json.loads(body)
        self.assertEqual(status, 200, doc)
        self.assertEqual((doc["reloaded"], doc["handover"]),
                         (True, ["plugins.instances[echo].config"]), doc)
        new_pid = cg.follow_handover()
        t_old_gone = fake.clock()
        self.assertEqual(doc["pid"], new_pid)
        self.assertNotEqual(new_pid, old_pid)
        driver.wait_settled()
        self.assertEqual(self.status_pid(cg, BEARER), new_pid)
        old, _ = self.check_make_before_break(fake, t_handover)
        self.finish(cg)
        driver.stop()
        replies = self.check_exactly_once(fake, messages, ["before", "after"])
        # The old process's replies (the old prefix) after it closed its
        # connection: what it had taken, finished while it drained.
        finished = [c for c in fake.reply_calls() if old["closed_at"] and c["t"] > old["closed_at"]
                    and replies.get(c["id"], [""])[0].startswith("before: ")]
        with self.subTest("the old process answered what it had taken after closing"):
            self.assertGreater(len(finished), 0)
        # Answers after the handover carry the new prefix: every message
        # first pushed once the old process had gone, and the last replies.
        late = [m for m in messages if m.first_t > t_old_gone]
        with self.subTest("the new prefix after the handover"):
            self.assertGreaterEqual(len(late), 10, "too few messages after the handover")
            self.assertEqual([(m.id, replies[m.id][0]) for m in late
                              if not replies[m.id][0].startswith("after: ")], [])
            order = [c["id"] for c in sorted(fake.reply_calls(), key=lambda c: c["t"])]
            self.assertTrue(all(replies[mid][0].startswith("after: ") for mid in order[-10:]),
                            [replies[mid][0] for mid in order[-10:]])
        old_prefix = sum(r[0].startswith("before: ") for r in replies.values())
        print("\n  handover at %d of %d pushed; old pid %d gone %.2f s after the reload, "
              "answering %d after it closed its connection; %s; answered with the old prefix %d, "
              "first pushed after it left %d"
              % (sum(m.first_t < t_handover for m in messages), len(messages), old_pid,
                 t_old_gone - t_handover, len(finished), driver.summary(), old_prefix, len(late)))


class ShutdownQuiesceTest(HandoverCase):
    def test_feishu_sigterm_quiesces_and_finishes_what_it_acked(self):
        fake = self.platform(FeishuPlatform)
        config = feishu_config(fake.port, delay_ms=300)
        first = self.gateway(config)
        [conn] = self.open_connections(fake, 1)
        driver = self.driver(fake)
        # A burst, acked at once and answered one after another per chat
        # (300 ms each, 1.2 s a chat): most answers are still to come at the SIGTERM.
        burst = conversations(fake, 10, 4)
        driver.schedule(burst, 200)
        driver.wait_settled()
        replied_before = len(fake.replies())
        self.assertLessEqual(replied_before, len(burst) - 10, "the burst was answered too soon")
        # More messages from now on, while the process shuts down.
        later = conversations(fake, 10, 2, first=4)
        driver.schedule(later, 20)
        t_term = fake.clock()
        first.proc.send_signal(signal.SIGTERM)
        first.wait_log("SIGTERM: 1 channel(s) told to take no new messages")
        t_quiesced = fake.clock()  # the quiesce happened before its line was read
        self.assertEqual(first.wait_exit(), 0, first.log()[-3000:])
        t_exit = fake.clock()
        acks, _ = fake.look()
        acked_by_first = [m for m in burst + later if any(
            p.conn == conn["conn"] and acks.get(p.frame) == 200 for p in m.pushes)]
        replies, calls = fake.replies(), fake.reply_calls()
        [record] = [c for c in fake.connections() if c["conn"] == conn["conn"]]
        with self.subTest("closed by chatgate with 1000 before it exited"):
            self.assertEqual((record["closed_by"], record["close_code"]), ("client", 1000), record)
            self.assertLess(record["closed_at"], t_exit)
        with self.subTest("closed while its answers were still going out"):
            last_reply = max(c["t"] for c in calls)
            self.assertLess(record["closed_at"], last_reply, (record, last_reply))
        with self.subTest("everything it acked answered before it exited"):
            self.assertEqual(sorted(m.id for m in acked_by_first if m.id not in replies), [])
            self.assertEqual(set(replies), {m.id for m in acked_by_first})
        with self.subTest("nothing pushed after the quiesce acked"):
            after = [(m.id, p.frame) for m in later for p in m.pushes
                     if p.t > t_quiesced and p.conn in (None, conn["conn"])]
            self.assertGreaterEqual(len(after), 3, "too few pushes after the quiesce")
            self.assertEqual([(mid, frame, acks[frame]) for mid, frame in after
                              if frame is not None and frame in acks], [])
        # The rest stayed with the platform: another process gets them.
        second = self.gateway(config)
        driver.wait_settled()
        self.finish(second)
        driver.stop()
        self.check_exactly_once(fake, burst + later, ["echo"])
        print("\n  %d of %d answered at the SIGTERM; the connection closed %.2f s after it, "
              "the process exited %.2f s after it; it acked %d; %s"
              % (replied_before, len(burst), record["closed_at"] - t_term, t_exit - t_term,
                 len(acked_by_first), driver.summary()))



class RefusedHandoverTest(HandoverCase):
    def test_a_new_process_whose_long_connection_is_refused_does_not_take_over(self):
        # A reload with a wrong appSecret: --check-config cannot know (no
        # I/O in init), the new process's endpoint call is refused. It must
        # not take over: the old process, whose connection works, goes on.
        fake = self.platform(FeishuPlatform)
        cg = self.gateway(feishu_config(fake.port))
        [first] = self.open_connections(fake, 1)
        pid = cg.proc.pid
        cg.rewrite_config(FS_SECRET, FS_SECRET + "-wrong")
        cg.proc.send_signal(signal.SIGHUP)
        log = cg.wait_log(HANDOVER_FAILED)
        self.assertIn("handover: not taking over, a plugin failed: fs: long connection refused",
                      log)
        self.assertRegex(log, r"handover failed: the new process \(pid [0-9]+\) exited with "
                              r"status 1 before it was ready; this process \(pid %d\) goes on "
                              r"serving" % pid)
        self.assertIsNone(cg.proc.poll())
        self.assertEqual(self.status_pid(cg), pid)
        # Its connection never closed, and it still answers.
        [still] = [c for c in fake.connections() if c["conn"] == first["conn"]]
        self.assertIsNone(still["closed_at"], still)
        driver = self.driver(fake)
        messages = conversations(fake, 2, 2)
        driver.schedule(messages, 20)
        driver.wait_settled()
        self.finish(cg)
        driver.stop()
        self.check_exactly_once(fake, messages, ["echo"])

if __name__ == "__main__":
    unittest.main()
