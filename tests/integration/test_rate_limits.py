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

from harness import (FIXTURE_DIR, Chatgate, free_port, gateway_config, get, post_json,
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


def metric(admin, name, **labels):
    _, text, _ = get(admin, "/metrics")
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^%s\{(.*)\} (\S+)$" % name, line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return 0.0


class RateLimitTest(unittest.TestCase):
    def start(self, router_extra, echo_config="", cb=None):
        self.port, self.admin = free_port(), free_port()
        instances = ("    - name: echo\n      plugin: echo.so\n      config:\n        prefix: echo\n"
                     + echo_config +
                     "    - name: memory\n      plugin: memory.so\n")
        if cb is not None:
            instances += ("    - name: bridge\n      plugin: %s/http_bridge.so\n      config:\n"
                          "        callbackUrl: http://127.0.0.1:%d/answers\n" % (FIXTURE_DIR, cb.port))
        text = gateway_config(self.port, instances, "echo", "memory", router_extra,
                              admin_port=self.admin)
        cg = Chatgate(text)
        cg.start()
        self.addCleanup(cg.__exit__, None, None, None)
        return cg

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
        self.assertTrue(wait_until(lambda: len(cb.got) >= 3))
        time.sleep(0.3)  # nothing more may arrive
        texts = [t for _, t in cb.got]
        self.assertEqual(len(texts), 3, texts)
        self.assertEqual(sorted(t for t in texts if t.startswith("echo")),
                         ["echo: hi 0 (turn 1)", "echo: hi 1 (turn 2)"])
        self.assertEqual(len([t for t in texts if t.startswith(SLOW_DOWN)]), 1, texts)
        self.assertEqual(metric(self.admin, "chatgate_messages_dropped_total", channel="bridge",
                                reason="rate_limited"), 4)
        # Another sender in the same conversation has a bucket of their own.
        self.assertEqual(self.bridge("me too", user="u2", msg_id="x1"), 202)
        self.assertTrue(wait_until(lambda: len(cb.got) == 4))
        self.assertEqual(cb.got[-1][1], "echo: me too (turn 3)")

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
        self.assertTrue(wait_until(lambda: "router.rateLimits" in cg.log(), timeout=5), cg.log())
        self.assertEqual([chat() for _ in range(3)], [200, 200, 200])

    def test_model_call_cap_answers_busy(self):
        self.start("  maxModelCalls: 1\n", echo_config="        delayMs: 800\n")
        results = []

        def one(user):
            results.append(post_json(self.port, "/api/chat", {"userId": user, "query": "q"}))

        threads = [threading.Thread(target=one, args=("u%d" % i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(r[0] for r in results)
        self.assertEqual(statuses, [200, 503, 503], results)
        busy = [r[1] for r in results if r[0] == 503]
        self.assertTrue(all("busy" in b["answer"] for b in busy), busy)
        self.assertEqual(metric(self.admin, "chatgate_model_calls_capped_total", channel="api"), 2)
        self.assertEqual(metric(self.admin, "chatgate_model_calls_in_flight"), 0)

    def test_conversation_backlog_cap_spares_other_conversations(self):
        # Two messages of one conversation may wait (one runs, one queues);
        # its next ones are refused at once, counted, and the platform told
        # to retry (503 on the chat API), while another conversation is
        # answered as usual.
        cg = self.start("  maxConversationBacklog: 2\n", echo_config="        delayMs: 1500\n")
        results, lock = [], threading.Lock()

        def one(conv, i):
            r = post_json(self.port, "/api/chat",
                          {"userId": "u%d" % i, "conversationId": conv, "query": "q%d" % i})
            with lock:
                results.append((conv, r[0]))

        flood = [threading.Thread(target=one, args=("flood", i)) for i in range(6)]
        for t in flood:
            t.start()
        self.assertTrue(wait_until(
            lambda: metric(self.admin, "chatgate_messages_dropped_total", channel="api",
                           reason="conversation_backlog") == 4, timeout=10))
        other = threading.Thread(target=one, args=("calm", 99))
        other.start()
        for t in flood + [other]:
            t.join()
        flood_statuses = sorted(s for c, s in results if c == "flood")
        self.assertEqual(flood_statuses, [200, 200, 503, 503, 503, 503], results)
        self.assertIn(("calm", 200), results)
        self.assertEqual(metric(self.admin, "chatgate_messages_received_total", channel="api"), 3)
        lines = [l for l in cg.log().splitlines() if "maxConversationBacklog" in l]
        self.assertGreaterEqual(len(lines), 1)
        self.assertIn("'flood'", lines[0])
        # The cap counts messages not yet finished: once answered, the
        # conversation is taken again.
        self.assertEqual(post_json(self.port, "/api/chat",
                                   {"userId": "u", "conversationId": "flood", "query": "again"})[0],
                         200)

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
                    f.write(gateway_config(free_port(), "    - name: echo\n      plugin: echo.so\n"
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
