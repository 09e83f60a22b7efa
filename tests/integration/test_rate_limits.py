"""The router's rate limits through the real binary: per sender and per
conversation token buckets, the "slow down" notice at most once per window
on a plugin channel (the SDK's http_bridge example, answering to a callback
server started here), 429 on the HTTP chat API, per-channel overrides, the
global cap on model calls in flight, and a live change by reload."""
import http.server
import os
import re
import signal
import threading
import time
import unittest
import urllib.request

from harness import (FIXTURE_DIR, Chatgate, gateway_config, get, post_json, wait_for,
                     wait_until)

SLOW_DOWN = "You are sending messages faster than I can answer."


class Callback:
    """Collects what the bridge posts: (conversation, text)."""

    def __init__(self):
        self.got = []
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                outer.got.append((self.headers["X-Conversation-Id"], body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def metric(admin, name, default=None, **labels):
    """One series' value from /metrics (labels in any order). A series not
    there is `default`, or fails the test when no default is given."""
    _, text, _ = get(admin, "/metrics")
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^%s(?:\{(.*)\})? (\S+)$" % re.escape(name), line)
        if m and ",".join(sorted((m.group(1) or "").split(","))).strip(",") == want:
            return float(m.group(2))
    if default is None:
        raise AssertionError("no series %s{%s} in /metrics:\n%s" % (name, want, text))
    return default


class RateLimitTest(unittest.TestCase):
    def start(self, router_extra, echo_config="", cb=None, extra_instances=""):
        instances = ("    - name: echo\n      plugin: echo.so\n      config:\n        prefix: echo\n"
                     + echo_config +
                     "    - name: memory\n      plugin: memory.so\n") + extra_instances
        if cb is not None:
            instances += ("    - name: bridge\n      plugin: %s/http_bridge.so\n      config:\n"
                          "        callbackUrl: http://127.0.0.1:%d/answers\n" % (FIXTURE_DIR, cb.port))
        cg = Chatgate(gateway_config(0, instances, "echo", "memory", router_extra))
        cg.start()
        self.addCleanup(cg.__exit__, None, None, None)
        self.port, self.admin = cg.port, cg.admin_port
        return cg

    def in_flight(self, n):
        wait_for(lambda: metric(self.admin, "chatgate_model_calls_in_flight") == n,
                 "%d model call(s) in flight" % n)

    def bridge(self, text, user="u1", conv="c1", msg_id=None):
        q = "conversation=%s&user=%s&id=%s" % (conv, user, msg_id or "m%f" % time.time())
        req = urllib.request.Request("http://127.0.0.1:%d/webhook/bridge?%s" % (self.port, q),
                                     data=text.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status

    def test_plugin_channel_gets_one_notice_per_window(self):
        cb = Callback()
        self.addCleanup(cb.close)
        self.start("  rateLimits:\n    perSender: {perSecond: 0.01, burst: 2}\n"
                   "    noticeIntervalSeconds: 3600\n", cb=cb)
        for i in range(6):
            self.assertEqual(self.bridge("hi %d" % i, msg_id="m%d" % i), 202)
        # Another sender in the same conversation has a bucket of their own;
        # its message is also the sentinel: one conversation's messages are
        # handled in order, so once it is answered the six before it were
        # handled too, and what they were to send was sent.
        self.assertEqual(self.bridge("me too", user="u2", msg_id="x1"), 202)
        wait_for(lambda: any(t == "echo: me too (turn 3)" for _, t in cb.got), "the sentinel's answer")
        texts = [t for _, t in cb.got]
        self.assertEqual(len(texts), 4, texts)
        self.assertEqual(texts[-1], "echo: me too (turn 3)")
        self.assertEqual(sorted(t for t in texts[:3] if t.startswith("echo")),
                         ["echo: hi 0 (turn 1)", "echo: hi 1 (turn 2)"])
        self.assertEqual(len([t for t in texts if t.startswith(SLOW_DOWN)]), 1, texts)
        self.assertEqual(metric(self.admin, "chatgate_messages_dropped_total", channel="bridge",
                                reason="rate_limited"), 4)

    def test_conversation_limit_covers_every_sender(self):
        cb = Callback()
        self.addCleanup(cb.close)
        self.start("  rateLimits:\n    perConversation: {perSecond: 0.01, burst: 1}\n", cb=cb)
        self.assertEqual(self.bridge("a", user="u1", msg_id="a"), 202)
        self.assertTrue(wait_until(lambda: len(cb.got) == 1))
        self.assertEqual(self.bridge("b", user="u2", msg_id="b"), 202)
        self.assertTrue(wait_until(lambda: len(cb.got) == 2))
        self.assertTrue(cb.got[1][1].startswith(SLOW_DOWN))
        # Other conversations are not held back.
        self.assertEqual(self.bridge("c", user="u3", conv="c2", msg_id="c"), 202)
        self.assertTrue(wait_until(lambda: len(cb.got) == 3))
        self.assertEqual(cb.got[2], ("c2", "echo: c (turn 1)"))

    def test_chat_api_answers_429_every_time(self):
        self.start("  rateLimits:\n    perSender: {perSecond: 0.01, burst: 1}\n")
        chat = lambda user: post_json(self.port, "/api/chat", {"userId": user, "query": "q"})
        self.assertEqual(chat("alice")[0], 200)
        for _ in range(2):
            status, body, _ = chat("alice")
            self.assertEqual(status, 429)
            self.assertIn("slow down", body["error"])
        self.assertEqual(chat("bob")[0], 200)

    def test_channel_override_and_live_reload(self):
        cg = self.start("  rateLimits:\n    perSender: {perSecond: 0.01, burst: 1}\n"
                        "    channels:\n      api: {perSender: {perSecond: 0.01, burst: 3}}\n")
        chat = lambda: post_json(self.port, "/api/chat", {"userId": "carol", "query": "q"})[0]
        self.assertEqual([chat() for _ in range(4)], [200, 200, 200, 429])
        # Reload without limits: carol is let through at once.
        with open(cg.config_path) as f:
            text = f.read()
        text = re.sub(r"  rateLimits:\n(    .*\n)+", "", text)
        with open(cg.config_path, "w") as f:
            f.write(text)
        cg.proc.send_signal(signal.SIGHUP)
        cg.wait_log("config reload from %s: applied router.rateLimits" % cg.config_path)
        self.assertEqual([chat() for _ in range(3)], [200, 200, 200])

    def test_model_call_cap_answers_busy(self):
        self.start("  maxModelCalls: 1\n", echo_config="        delayMs: 3000\n")
        first = {}
        t = threading.Thread(target=lambda: first.setdefault(
            "r", post_json(self.port, "/api/chat", {"userId": "u0", "query": "q"})))
        t.start()
        self.in_flight(1)
        # While that call runs, two more are over the cap: busy at once.
        for user in ("u1", "u2"):
            status, body, _ = post_json(self.port, "/api/chat", {"userId": user, "query": "q"})
            self.assertEqual(status, 503, body)
            self.assertIn("busy", body["answer"])
        self.assertNotIn("r", first)
        t.join(30)
        self.assertEqual(first["r"][0], 200, first["r"])
        self.assertEqual(metric(self.admin, "chatgate_model_calls_capped_total", channel="api"), 2)
        self.assertEqual(metric(self.admin, "chatgate_model_calls_in_flight"), 0)
        # The slot is free again.
        self.assertEqual(post_json(self.port, "/api/chat", {"userId": "u3", "query": "q"})[0], 200)

    def test_conversation_backlog_cap_spares_other_conversations(self):
        # Two messages of one conversation may wait (one runs, one queues);
        # its next ones are refused at once, counted, and the platform told
        # to retry (503 on the chat API), while another conversation is
        # answered as usual.
        cg = self.start("  maxConversationBacklog: 2\n", echo_config="        delayMs: 3000\n")
        results, lock = [], threading.Lock()

        def one(conv, i):
            r = post_json(self.port, "/api/chat",
                          {"userId": "u%d" % i, "conversationId": conv, "query": "q%d" % i})
            with lock:
                results.append((conv, r[0], time.monotonic()))

        flood = [threading.Thread(target=one, args=("flood", i)) for i in range(6)]
        flood[0].start()
        self.in_flight(1)  # the first runs; the others come while it does
        for t in flood[1:]:
            t.start()
        wait_for(lambda: metric(self.admin, "chatgate_messages_dropped_total", 0.0, channel="api",
                                reason="conversation_backlog") == 4,
                 "four of the flood refused")
        other = threading.Thread(target=one, args=("calm", 99))
        other.start()
        for t in flood + [other]:
            t.join(30)
        flood_statuses = sorted(s for c, s, _ in results if c == "flood")
        self.assertEqual(flood_statuses, [200, 200, 503, 503, 503, 503], results)
        # The other conversation was answered beside the flood, before the
        # flood's queued second message (which waited for the first).
        [calm] = [when for c, s, when in results if c == "calm" and s == 200]
        self.assertLess(calm, max(when for c, s, when in results if c == "flood" and s == 200))
        self.assertEqual(metric(self.admin, "chatgate_messages_received_total", channel="api"), 3)
        lines = [l for l in cg.log().splitlines() if "maxConversationBacklog" in l]
        self.assertGreaterEqual(len(lines), 1)
        self.assertIn("'flood'", lines[0])
        # The cap counts messages not yet finished: once answered, the
        # conversation is taken again.
        self.assertEqual(post_json(self.port, "/api/chat",
                                   {"userId": "u", "conversationId": "flood", "query": "again"})[0],
                         200)

    def test_a_full_queue_answers_503_and_tells_channels_to_retry(self):
        # router.maxQueue: messages accepted and not yet answered; beyond,
        # the chat API answers 503 and a channel's emit gets CG_EBUSY
        # ("tell the platform to retry"), counted as reason="queue_full".
        probe = ("    - name: probe\n      plugin: %s/wsprobe.so\n      config:\n"
                 "        url: ws://127.0.0.1:9/\n        partials: false\n" % FIXTURE_DIR)
        cg = self.start("  maxQueue: 2\n", echo_config="        delayMs: 3000\n",
                        extra_instances=probe)
        results = {}

        def one(user):
            results[user] = post_json(self.port, "/api/chat", {"userId": user, "query": "q"})

        threads = [threading.Thread(target=one, args=(u,)) for u in ("u1", "u2")]
        for t in threads:
            t.start()
        self.in_flight(2)  # both accepted and running: the queue is full
        status, body, _ = post_json(self.port, "/api/chat", {"userId": "u3", "query": "q"})
        self.assertEqual((status, body), (503, {"error": "busy, try again later"}))
        emit = lambda text: post_json(self.port, "/wsprobe/probe/emit", text)[1]
        self.assertEqual(emit("c1 - refused"), -5)  # CG_EBUSY
        self.assertEqual(results, {})  # the two are still running
        self.assertEqual(metric(self.admin, "chatgate_messages_dropped_total", channel="api",
                                reason="queue_full"), 1)
        self.assertEqual(metric(self.admin, "chatgate_messages_dropped_total", channel="probe",
                                reason="queue_full"), 1)
        self.assertEqual(metric(self.admin, "chatgate_messages_received_total", channel="api"), 2)
        cg.wait_log("router: inbound queue full (2 messages); 'api' told to retry")
        for t in threads:
            t.join(30)
        self.assertEqual([results[u][0] for u in ("u1", "u2")], [200, 200], results)
        # Answered, they leave the queue: new messages are taken again.
        self.assertEqual(post_json(self.port, "/api/chat", {"userId": "u3", "query": "q"})[0], 200)
        self.assertEqual(emit("c1 - taken"), 0)
        wait_for(lambda: "echo: taken (turn 1)" in get(self.port, "/wsprobe/probe/sent")[1],
                 "the channel's message answered")

    def test_config_errors(self):
        import subprocess
        from harness import BIN
        for extra, key, what in [
            ("  rateLimits:\n    channels:\n      nosuch: {perSender: {perSecond: 1}}\n",
             "router.rateLimits.channels.nosuch", "no channel named"),
            ("  rateLimits:\n    perSender: {perSecond: fast}\n",
             "router.rateLimits.perSender.perSecond", "expected a number"),
            ("  rateLimits:\n    perSender: {rate: 1}\n", "router.rateLimits.perSender.rate",
             "unknown key"),
        ]:
            with self.subTest(key=key):
                path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "cg-rl-%d.yaml" % os.getpid())
                with open(path, "w") as f:
                    f.write(gateway_config(0, "    - name: echo\n      plugin: echo.so\n"
                                           "    - name: memory\n      plugin: memory.so\n",
                                           "echo", "memory", extra))
                p = subprocess.run([BIN, "--check-config", "--config", path], capture_output=True,
                                   text=True, timeout=20)
                os.unlink(path)
                self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
                self.assertIn(key, p.stdout + p.stderr)
                self.assertIn(what, p.stdout + p.stderr)


if __name__ == "__main__":
    unittest.main()
