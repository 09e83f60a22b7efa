"""The admin listener through the real binary: probes on both listeners,
/metrics after known traffic, the admin API's token, lockout and security
headers, and the refusal to expose an admin listener without a token."""
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from channel_support import FakeOpenAI
from harness import (BIN, DEADLINE, FIXTURE_DIR, ClosedPort, Chatgate, chat, gateway_config, sdk_abi,
                     wait_for)

TOKEN = "adm-7e5t-T0ken-value-31337"
ECHO_MEMORY = """\
    - name: echo
      plugin: echo.so
    - name: memory
      plugin: memory.so
"""


def probe(state, name="probe"):
    """A wsprobe instance that reports a CG_STATE_* (1 running, 2 degraded,
    3 failed) after start."""
    return ("    - name: %s\n      plugin: %s/wsprobe.so\n      config:\n"
            "        url: ws://127.0.0.1:9/\n        state: %d\n" % (name, FIXTURE_DIR, state))


def request(port, path, headers=None, method="GET", body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read().decode("utf-8", "replace")
    conn.close()
    return resp.status, body, dict(resp.getheaders())


class Gateway(Chatgate):
    """Both listeners on port 0: `api_port` (the harness's `port`) and
    `admin_port` come from the ready line. `admin_extra` is YAML for
    listeners.admin (indented four spaces), `api_extra` for listeners.api."""

    def __init__(self, instances=ECHO_MEMORY, top_extra="", env=None, model="echo",
                 api_extra="", admin_extra="", router_extra=""):
        config = gateway_config(0, instances, model, "memory", router_extra=router_extra,
                                top_extra=top_extra, api_extra=api_extra)
        if admin_extra:
            config = config.replace("  admin:\n    address: 127.0.0.1\n",
                                    "  admin:\n    address: 127.0.0.1\n" + admin_extra, 1)
        super().__init__(config, env=env)

    @property
    def api_port(self):
        return self.port


def read_until(sock, marker, what, received=b"", timeout=DEADLINE):
    """Reads from `sock` until `marker` is in what was received (returned);
    fails naming `what` when the peer closes or the deadline passes."""
    deadline = time.monotonic() + timeout
    while marker not in received:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out after %ss waiting for %s; received %r"
                                 % (timeout, what, received[-2000:]))
        sock.settimeout(min(left, 1.0))
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            continue
        if not chunk:
            raise AssertionError("connection closed while waiting for %s; received %r"
                                 % (what, received[-2000:]))
        received += chunk
    return received


def read_to_close(sock, what, timeout=DEADLINE):
    """Reads until the peer closes the connection (an EOF or a reset);
    returns every byte read. Fails naming `what` if it stays open."""
    deadline = time.monotonic() + timeout
    received = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("the connection stayed open for %ss: %s (%d bytes read)"
                                 % (timeout, what, sum(map(len, received))))
        sock.settimeout(min(left, 1.0))
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return b"".join(received)
        if not chunk:
            return b"".join(received)
        received.append(chunk)


def open_tail(port, query="", headers=""):
    """A live log tail over a raw socket, read up to its head."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(("GET /admin/api/logs/stream%s HTTP/1.1\r\nHost: localhost\r\n%s\r\n"
               % (query, headers)).encode())
    return s, read_until(s, b"text/event-stream", "the log tail's head")


def sse_events(data):
    """The events of a server-sent event stream read raw (chunked): one
    chunk may carry several events."""
    return [json.loads(l[6:].rstrip("\r")) for l in data.decode("utf-8", "replace").split("\n")
            if l.startswith("data: ")]


def scrape(port):
    """/metrics as {series text: value}, checking every line parses."""
    status, text, headers = request(port, "/metrics")
    assert status == 200, status
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers
    series = {}
    for line in text.splitlines():
        if not line or line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)', line)
        assert m, "unparsable metrics line: %r" % line
        series[m.group(1)] = float(m.group(2))
    return series


class ProbeTest(unittest.TestCase):
    def test_probes_on_both_listeners_when_all_run(self):
        with Gateway() as gw:
            for port in (gw.api_port, gw.admin_port):
                status, body, _ = request(port, "/healthz")
                self.assertEqual((status, json.loads(body)), (200, {"status": "ok"}))
                status, body, headers = request(port, "/readyz")
                self.assertEqual(status, 200, body)
                self.assertEqual(json.loads(body), {"ready": True, "notReady": [], "degraded": []})
                self.assertEqual(headers["Cache-Control"], "no-store")

    def test_a_failed_instance_makes_readyz_503_with_the_reason(self):
        with Gateway(ECHO_MEMORY + probe(3, "broken") + probe(2, "limping")) as gw:
            status, body, _ = wait_for(
                lambda: (lambda r: r if r[0] == 503 else None)(request(gw.admin_port, "/readyz")),
                "/readyz to answer 503")
            doc = json.loads(body)
            self.assertFalse(doc["ready"])
            self.assertEqual([i["instance"] for i in doc["notReady"]], ["broken"])
            self.assertEqual(doc["notReady"][0]["state"], "failed")
            self.assertIn("told to report", doc["notReady"][0]["reason"])
            # Degraded serves, so it is listed but does not block readiness.
            self.assertEqual([i["instance"] for i in doc["degraded"]], ["limping"])
            self.assertEqual(request(gw.api_port, "/readyz")[0], 503)
            # The series the channel alert reads (>= 2 for 2 minutes):
            # degraded 2, failed 3.
            m = scrape(gw.admin_port)
            self.assertEqual(m['chatgate_plugin_state{plugin_instance="broken",kind="channel"}'], 3)
            self.assertEqual(m['chatgate_plugin_state{plugin_instance="limping",kind="channel"}'], 2)
            self.assertEqual(m['chatgate_plugin_state{plugin_instance="echo",kind="model"}'], 1)

    def test_degraded_alone_is_ready(self):
        with Gateway(ECHO_MEMORY + probe(2)) as gw:
            status, body, _ = wait_for(
                lambda: (lambda r: r if json.loads(r[1])["degraded"] else None)(
                    request(gw.admin_port, "/readyz")), "the probe to report degraded")
            self.assertEqual(status, 200, body)
            self.assertEqual(json.loads(body)["degraded"][0]["state"], "degraded")


class MetricsTest(unittest.TestCase):
    def test_metrics_after_known_traffic(self):
        with Gateway() as gw:
            for i in range(3):
                self.assertEqual(chat(gw.api_port, "m%d" % i, "hello")[0], 200)
            m = scrape(gw.admin_port)
            self.assertEqual(m['chatgate_messages_received_total{channel="api"}'], 3)
            self.assertEqual(m['chatgate_messages_answered_total{channel="api"}'], 3)
            self.assertEqual(m['chatgate_messages_failed_total{channel="api"}'], 0)
            self.assertEqual(m['chatgate_reply_latency_seconds_count{channel="api"}'], 3)
            self.assertEqual(m['chatgate_model_latency_seconds_count{model="echo"}'], 3)
            self.assertEqual(m['chatgate_plugin_state{plugin_instance="echo",kind="model"}'], 1)
            self.assertEqual(m['chatgate_plugin_state{plugin_instance="memory",kind="cache"}'], 1)
            self.assertEqual(m['chatgate_build_info{version="0.1.0",abi="%s"}' % sdk_abi()], 1)
            self.assertGreater(m["process_resident_memory_bytes"], 1e6)
            self.assertGreater(m["process_open_fds"], 3)
            self.assertGreater(m["process_cpu_seconds_total"], 0)
            # Every answer by listener, matched route and status.
            self.assertEqual(
                m['chatgate_http_requests_total{listener="api",route="/api/chat",status="200"}'], 3)
            request(gw.api_port, "/no/such/path")
            status, _, _ = request(gw.admin_port, "/admin/api/status")
            self.assertEqual(status, 200)
            m = scrape(gw.admin_port)
            self.assertEqual(m['chatgate_http_requests_total{listener="api",route="",status="404"}'], 1)
            self.assertEqual(m['chatgate_http_requests_total{listener="admin",route="/metrics",'
                               'status="200"}'], 1)
            self.assertEqual(m['chatgate_http_requests_total{listener="admin",'
                               'route="/admin/api/status",status="200"}'], 1)
            # The start-up warning about the missing admin token was counted.
            self.assertGreaterEqual(m['chatgate_log_messages_total{level="warn"}'], 1)
            # A duplicate message id is counted as dropped, by reason.
            chat(gw.api_port, "dup", "once", messageId="mid-1")
            chat(gw.api_port, "dup", "twice", messageId="mid-1")
            m = scrape(gw.admin_port)
            self.assertEqual(m['chatgate_messages_dropped_total{channel="api",reason="duplicate"}'], 1)


class AlertSeriesTest(unittest.TestCase):
    """The series packaging/prometheus/chatgate-rules.yml reads, driven to
    the values that fire (and clear) its alerts."""

    def test_breaker_open_gauge_goes_to_one_and_back(self):
        # ChatgateModelBreakerOpen: chatgate_plugin_breaker_open == 1.
        fake = FakeOpenAI()
        self.addCleanup(fake.close)
        instances = fake.instance_yaml("gpt") + (
            "        breakerThreshold: 2\n        breakerCooldownMs: 2000\n"
            "    - name: memory\n      plugin: memory.so\n")
        series = 'chatgate_plugin_breaker_open{plugin_instance="gpt"}'
        with Gateway(instances, model="gpt") as gw:
            self.assertEqual(scrape(gw.admin_port)[series], 0)
            fake.script("status:500", "status:500")
            for i in range(2):
                self.assertEqual(chat(gw.api_port, "bo", "fail %d" % i)[0], 503)
            opened = time.monotonic()
            m = scrape(gw.admin_port)
            self.assertEqual(m[series], 1)
            self.assertEqual(m['chatgate_plugin_requests_total{plugin_instance="gpt",'
                               'result="error"}'], 2)
            # Open: the next message fails at once and never reaches the model.
            self.assertEqual(chat(gw.api_port, "bo", "while open")[0], 503)
            self.assertEqual(len(fake.requests()), 2)
            self.assertEqual(scrape(gw.admin_port)[series], 1)
            # After the cooldown one probe goes through; it succeeds, the
            # breaker closes and the gauge is 0 again.
            status, body, _ = wait_for(
                lambda: (lambda r: r if r[0] == 200 else None)(chat(gw.api_port, "bo", "probe")),
                "a probe through the breaker", interval=0.1)
            self.assertGreaterEqual(time.monotonic() - opened, 1.9)
            self.assertEqual(body["answer"], "reply to: probe (1 messages)")
            self.assertEqual(len(fake.requests()), 3)
            self.assertEqual(scrape(gw.admin_port)[series], 0)
            gw.wait_log("[gpt] circuit breaker closed")

    def test_error_lines_are_counted_by_level(self):
        # ChatgateErrorLogRateHigh: chatgate_log_messages_total{level="error"}.
        with Gateway() as gw:
            before = scrape(gw.admin_port)['chatgate_log_messages_total{level="error"}']
            with open(gw.config_path, "a") as f:
                f.write("router: [\n")
            for n in (1, 2):
                gw.proc.send_signal(signal.SIGHUP)
                gw.wait_log("refused, nothing changed", count=n)
                wait_for(lambda: scrape(gw.admin_port)['chatgate_log_messages_total{level="error"}']
                         == before + n, "%d error line(s) counted" % n)


class HistoryTest(unittest.TestCase):
    def test_history_holds_interval_samples(self):
        with Gateway(top_extra="admin:\n  chartIntervalSeconds: 1\n") as gw:
            for i in range(4):
                chat(gw.api_port, "h%d" % (i % 2), "hello")
            def history():
                status, body, _ = request(gw.admin_port, "/admin/api/history")
                self.assertEqual(status, 200, body)
                doc = json.loads(body)
                self.assertEqual(doc["intervalSeconds"], 1)
                samples = doc["samples"]
                return samples if sum(s["in"].get("api", 0) for s in samples) >= 4 else None

            samples = wait_for(history, "four messages in the history's samples")
            self.assertEqual(sum(s["in"].get("api", 0) for s in samples), 4, samples)
            self.assertEqual(sum(s["out"].get("api", 0) for s in samples), 4)
            busy = [s for s in samples if s["in"].get("api", 0) > 0]
            for s in busy:
                self.assertEqual(s["success"], 1)
                self.assertEqual(len(s["reply"]), 3)
                self.assertLessEqual(s["reply"][0], s["reply"][2])
            # Two users, two messages each: the second of each found its
            # context. Each message loads its context once, so the hits are
            # ratio x messages, whichever samples the four fell into.
            hits = sum(s["cacheHit"] * s["in"]["api"] for s in busy)
            self.assertAlmostEqual(hits, 2)
            # The summary: the same fields over the whole run.
            status, body, _ = request(gw.admin_port, "/admin/api/metrics")
            self.assertEqual(status, 200, body)
            total = json.loads(body)
            self.assertEqual((total["in"], total["out"], total["failed"]),
                             ({"api": 4}, {"api": 4}, {"api": 0}))
            self.assertEqual((total["success"], total["cacheHit"], total["errors"]), (1, 0.5, 0))
            self.assertGreater(total["reply"][0], 0)
            self.assertLessEqual(total["reply"][0], total["reply"][2])


class AuthTest(unittest.TestCase):
    def gateway(self, extra=""):
        return Gateway(top_extra="admin:\n  token: ${ADMIN_T}\n  maxLoginFailures: 3\n"
                                 "  lockoutSeconds: 1\n" + extra, env={"ADMIN_T": TOKEN})

    def test_token_required_and_checked(self):
        with self.gateway() as gw:
            status, body, headers = request(gw.admin_port, "/admin/api/status")
            self.assertEqual(status, 401, body)
            self.assertEqual(headers["WWW-Authenticate"], "Bearer")
            status, _, _ = request(gw.admin_port, "/admin/api/status",
                                   {"Authorization": "Bearer " + TOKEN + "x"})
            self.assertEqual(status, 401)
            status, body, headers = request(gw.admin_port, "/admin/api/status",
                                            {"Authorization": "Bearer " + TOKEN})
            self.assertEqual(status, 200, body)
            doc = json.loads(body)
            self.assertEqual(doc["version"], "0.1.0")
            self.assertEqual([l["port"] for l in doc["listeners"]], [gw.api_port, gw.admin_port])
            self.assertEqual((doc["instances"], doc["running"]), (2, 2))
            for name, value in (("X-Frame-Options", "DENY"), ("Cache-Control", "no-store"),
                                ("X-Content-Type-Options", "nosniff")):
                self.assertEqual(headers[name], value)
            self.assertIn("default-src 'none'", headers["Content-Security-Policy"])
            status, body, _ = request(gw.admin_port, "/admin/api/plugins",
                                      {"Authorization": "Bearer " + TOKEN})
            plugins = json.loads(body)["plugins"]
            self.assertEqual([(p["instance"], p["kind"], p["state"]) for p in plugins],
                             [("echo", "model", "running"), ("memory", "cache", "running")])
            self.assertEqual(plugins[0]["abi"], "1.0")
            # The probes and /metrics need no token.
            self.assertEqual(request(gw.admin_port, "/metrics")[0], 200)
            self.assertEqual(request(gw.admin_port, "/readyz")[0], 200)

    def test_lockout_after_repeated_failures(self):
        with self.gateway() as gw:
            bad = {"Authorization": "Bearer nope"}
            for _ in range(2):
                self.assertEqual(request(gw.admin_port, "/admin/api/status", bad)[0], 401)
            locked_at = time.monotonic()  # no later than the third failure
            self.assertEqual(request(gw.admin_port, "/admin/api/status", bad)[0], 401)
            # Locked: even the right token is refused for lockoutSeconds.
            good = {"Authorization": "Bearer " + TOKEN}
            status, _, headers = request(gw.admin_port, "/admin/api/status", good)
            self.assertEqual(status, 429)
            self.assertEqual(headers["Retry-After"], "1")
            # ... and served again once the second has passed, not before.
            wait_for(lambda: request(gw.admin_port, "/admin/api/status", good)[0] == 200,
                     "the lockout to end")
            self.assertGreaterEqual(time.monotonic() - locked_at, 0.95)
            gw.wait_log("listener 'admin': 3 wrong admin tokens from 127.0.0.1; "
                        "locked out for 1 s")

    def test_the_token_appears_in_no_answer_and_no_log(self):
        with self.gateway() as gw:
            chat(gw.api_port, "s", "hello")
            good = {"Authorization": "Bearer " + TOKEN}
            bodies = [request(gw.admin_port, p, good)[1]
                      for p in ("/admin/api/status", "/admin/api/plugins", "/metrics", "/readyz",
                                "/healthz", "/nope")]
            bodies.append(request(gw.admin_port, "/admin/api/status", {"Authorization": "Bearer x"})[1])
            for body in bodies:
                self.assertNotIn(TOKEN, body)
            self.assertEqual(gw.stop(), 0)
            self.assertNotIn(TOKEN, gw.log())


class PageTest(unittest.TestCase):
    """The page's own calls: session cookie, CSRF token, the web channel."""

    def gateway(self):
        return Gateway(top_extra="admin:\n  token: ${ADMIN_T}\n", env={"ADMIN_T": TOKEN})

    def login(self, gw):
        status, body, headers = request(gw.admin_port, "/admin/api/login", method="POST",
                                        body=json.dumps({"token": TOKEN}))
        self.assertEqual(status, 200, body)
        cookie = headers["Set-Cookie"]
        for attr in ("HttpOnly", "SameSite=Strict", "Path=/"):
            self.assertIn(attr, cookie)
        return cookie.split(";")[0], json.loads(body)["csrf"]

    def test_page_and_assets_are_served_with_a_strict_policy(self):
        with self.gateway() as gw:
            status, _, headers = request(gw.admin_port, "/")
            self.assertEqual((status, headers["Location"]), (302, "/admin/"))
            status, html, headers = request(gw.admin_port, "/admin/")
            self.assertEqual(status, 200)
            self.assertIn('<script src="/admin/app.js"', html)
            self.assertNotIn("<script>", html)  # no inline script anywhere
            csp = headers["Content-Security-Policy"]
            self.assertIn("script-src 'self'", csp)
            self.assertNotIn("unsafe-inline", csp)
            self.assertEqual(headers["X-Frame-Options"], "DENY")
            status, js, _ = request(gw.admin_port, "/admin/chart.min.js")
            self.assertEqual(status, 200)
            self.assertIn("Chart.js v3", js[:200])
            self.assertEqual(request(gw.admin_port, "/admin/app.js")[0], 200)
            self.assertEqual(request(gw.admin_port, "/admin/i18n.js")[0], 200)
            self.assertEqual(request(gw.admin_port, "/admin/style.css")[0], 200)
            self.assertEqual(request(gw.admin_port, "/admin/nope.js")[0], 404)

    def test_login_session_csrf_and_web_chat(self):
        with self.gateway() as gw:
            self.assertEqual(request(gw.admin_port, "/admin/api/session")[0], 401)
            status, body, _ = request(gw.admin_port, "/admin/api/login", method="POST",
                                      body=json.dumps({"token": "wrong"}))
            self.assertEqual(status, 401)
            for bad in ("not json", '{"token": 5}', "{}"):
                status, body, _ = request(gw.admin_port, "/admin/api/login", method="POST", body=bad)
                self.assertEqual(status, 400, bad)
                self.assertIn("expected", json.loads(body)["error"])
            cookie, csrf = self.login(gw)
            status, body, _ = request(gw.admin_port, "/admin/api/session", {"Cookie": cookie})
            self.assertEqual(json.loads(body), {"auth": "token", "csrf": csrf})
            self.assertEqual(request(gw.admin_port, "/admin/api/plugins", {"Cookie": cookie})[0], 200)
            chat_body = json.dumps({"userId": "web-user", "query": "hi there", "stream": True})
            # The cookie alone does not make a POST: the CSRF token must come too.
            status, body, _ = request(gw.admin_port, "/admin/api/chat", {"Cookie": cookie},
                                      method="POST", body=chat_body)
            self.assertEqual(status, 403, body)
            status, body, headers = request(gw.admin_port, "/admin/api/chat",
                                            {"Cookie": cookie, "X-CSRF-Token": csrf},
                                            method="POST", body=chat_body)
            self.assertEqual(status, 200, body)
            self.assertEqual(headers["Content-Type"], "text/event-stream")
            events = [json.loads(l[6:]) for l in body.splitlines() if l.startswith("data: ")]
            self.assertEqual(events[-1], {"answer": "echo: hi there (turn 1)", "done": True})
            # It went through the router as the web channel.
            m = scrape(gw.admin_port)
            self.assertEqual(m['chatgate_messages_answered_total{channel="web"}'], 1)
            # Logout ends the session.
            status, _, headers = request(gw.admin_port, "/admin/api/logout",
                                         {"Cookie": cookie, "X-CSRF-Token": csrf}, method="POST",
                                         body="{}")
            self.assertEqual(status, 200)
            self.assertIn("Max-Age=0", headers["Set-Cookie"])
            self.assertEqual(request(gw.admin_port, "/admin/api/session", {"Cookie": cookie})[0], 401)

    def test_without_a_token_posts_still_need_the_csrf_token(self):
        with Gateway() as gw:
            status, body, _ = request(gw.admin_port, "/admin/api/session")
            doc = json.loads(body)
            self.assertEqual(doc["auth"], "none")
            chat_body = json.dumps({"userId": "u", "query": "hello"})
            self.assertEqual(request(gw.admin_port, "/admin/api/chat", method="POST",
                                     body=chat_body)[0], 403)
            status, body, _ = request(gw.admin_port, "/admin/api/chat", {"X-CSRF-Token": doc["csrf"]},
                                      method="POST", body=chat_body)
            self.assertEqual((status, json.loads(body)["answer"]), (200, "echo: hello (turn 1)"))

    def test_without_a_token_only_loopback_host_names_are_served(self):
        # A page whose DNS name was rebound to 127.0.0.1 sends its own Host.
        with Gateway() as gw:
            status, body, _ = request(gw.admin_port, "/admin/api/session",
                                      {"Host": "evil.example:%d" % gw.admin_port})
            self.assertEqual(status, 403, body)
            self.assertNotIn("csrf", body)
            for host in ("localhost", "127.0.0.1:%d" % gw.admin_port, "[::1]:1"):
                self.assertEqual(request(gw.admin_port, "/admin/api/session", {"Host": host})[0],
                                 200, host)

    def test_login_failures_lock_out_too(self):
        with Gateway(top_extra="admin:\n  token: ${ADMIN_T}\n  maxLoginFailures: 2\n",
                     env={"ADMIN_T": TOKEN}) as gw:
            for _ in range(2):
                request(gw.admin_port, "/admin/api/login", method="POST",
                        body=json.dumps({"token": "guess"}))
            status, _, _ = request(gw.admin_port, "/admin/api/login", method="POST",
                                   body=json.dumps({"token": TOKEN}))
            self.assertEqual(status, 429)


class ConfigTest(unittest.TestCase):
    def test_effective_config_masks_every_secret(self):
        refusing = ClosedPort()  # where the redis instance points
        self.addCleanup(refusing.close)
        secrets = {"TEST_MODEL_KEY": "sk-cfg-Secret-4242", "TEST_HDR": "hdr-Secret-7373",
                   "TEST_REDIS_PW": "redis-Secret-9191"}
        instances = ECHO_MEMORY + (
            "    - name: gpt\n"
            "      plugin: openai.so\n"
            "      config:\n"
            "        endpoint: http://127.0.0.1:9/v1\n"
            "        model: some-model\n"
            "        apiKey: ${TEST_MODEL_KEY}\n"
            "        headers: [\"X-Api-Key: ${TEST_HDR}\"]\n"
            "    - name: shared\n"
            "      plugin: redis.so\n"
            "      config:\n"
            "        port: %d\n"
            "        password: ${TEST_REDIS_PW}\n" % refusing.port)
        env = dict(secrets, ADMIN_T=TOKEN)
        with Gateway(instances, top_extra="admin:\n  token: ${ADMIN_T}\n", env=env) as gw:
            status, body, _ = request(gw.admin_port, "/admin/api/config",
                                      {"Authorization": "Bearer " + TOKEN})
            self.assertEqual(status, 200, body)
            doc = json.loads(body)
            self.assertEqual(doc["admin"]["token"], "********")
            by_name = {i["name"]: i["config"] for i in doc["plugins"]["instances"]}
            self.assertEqual(by_name["gpt"]["apiKey"], "********")
            self.assertEqual(by_name["gpt"]["headers"], "********")
            self.assertEqual(by_name["gpt"]["model"], "some-model")
            self.assertEqual(by_name["shared"]["password"], "********")
            self.assertEqual(doc["router"]["model"], "echo")
            for value in list(secrets.values()) + [TOKEN]:
                self.assertNotIn(value, body)
            self.assertEqual(request(gw.admin_port, "/admin/api/config")[0], 401)


class ConversationsTest(unittest.TestCase):
    def run_conversations(self, show_content):
        top = "admin:\n  showContent: %s\n" % ("true" if show_content else "false")
        with Gateway(top_extra=top) as gw:
            chat(gw.api_port, "ann", "first question")
            chat(gw.api_port, "ann", "second question")
            chat(gw.api_port, "bob", "hello")
            status, body, _ = request(gw.admin_port, "/admin/api/conversations")
            self.assertEqual(status, 200, body)
            convs = json.loads(body)["conversations"]
            # Most recent first.
            self.assertEqual([(c["channel"], c["conversation"], c["messages"], c["turns"])
                              for c in convs], [("api", "bob", 1, 1), ("api", "ann", 2, 2)])
            status, body, _ = request(gw.admin_port, "/admin/api/conversations?channel=web")
            self.assertEqual(json.loads(body)["conversations"], [])
            # Reset ann's context through the admin API (CSRF token required).
            csrf = json.loads(request(gw.admin_port, "/admin/api/session")[1])["csrf"]
            reset = json.dumps({"channel": "api", "conversation": "ann"})
            self.assertEqual(request(gw.admin_port, "/admin/api/conversations/reset", method="POST",
                                     body=reset)[0], 403)
            status, body, _ = request(gw.admin_port, "/admin/api/conversations/reset",
                                      {"X-CSRF-Token": csrf}, method="POST", body=reset)
            self.assertEqual((status, json.loads(body)), (200, {"reset": True}))
            self.assertEqual(chat(gw.api_port, "ann", "after reset")[1]["answer"],
                             "echo: after reset (turn 1)")
            status, body, _ = request(gw.admin_port, "/admin/api/conversations/reset",
                                      {"X-CSRF-Token": csrf}, method="POST", body="{}")
            self.assertEqual(status, 400)
            return json.loads(request(gw.admin_port, "/admin/api/conversations")[1])["conversations"]

    def test_content_is_hidden_by_default(self):
        convs = self.run_conversations(False)
        self.assertNotIn("question", convs[0])
        self.assertNotIn("answer", convs[0])
        self.assertEqual((convs[0]["conversation"], convs[0]["turns"]), ("ann", 1))

    def test_content_shows_with_show_content(self):
        convs = self.run_conversations(True)
        self.assertEqual(convs[0]["question"], "after reset")
        self.assertEqual(convs[0]["answer"], "echo: after reset (turn 1)")


class LogsTest(unittest.TestCase):
    def test_last_lines_and_a_live_tail_filtered_by_level(self):
        with Gateway(top_extra="admin:\n  token: ${ADMIN_T}\n  maxLoginFailures: 2\n",
                     env={"ADMIN_T": TOKEN}) as gw:
            good = {"Authorization": "Bearer " + TOKEN}
            status, body, _ = request(gw.admin_port, "/admin/api/logs?level=info&lines=50", good)
            self.assertEqual(status, 200, body)
            texts = [l["text"] for l in json.loads(body)["lines"]]
            self.assertTrue(any(" ready in " in t for t in texts), texts)
            self.assertEqual(request(gw.admin_port, "/admin/api/logs?level=loud", good)[0], 400)
            self.assertEqual(request(gw.admin_port, "/admin/api/logs")[0], 401)

            # A live tail at warn level, read over a raw socket.
            s, received = open_tail(gw.admin_port, "?level=warn",
                                    "Authorization: Bearer %s\r\n" % TOKEN)
            self.addCleanup(s.close)
            # Two wrong logins from this address: the lockout warning is
            # logged, and arrives live.
            for _ in range(2):
                request(gw.admin_port, "/admin/api/login", method="POST",
                        body=json.dumps({"token": "nope"}))
            lockout = "2 wrong admin tokens from 127.0.0.1; locked out"
            received = read_until(s, lockout.encode(), "the lockout warning", received)
            # Lines below warn: a duplicate message (debug) and a reload of
            # the unchanged file (info) ...
            chat(gw.api_port, "u", "once", messageId="below-warn")
            chat(gw.api_port, "u", "twice", messageId="below-warn")
            gw.proc.send_signal(signal.SIGHUP)
            gw.wait_log("router: duplicate message below-warn on 'api' dropped")
            gw.wait_log("nothing to apply")
            # ... then an error as the sentinel: a reload of a broken file.
            with open(gw.config_path, "a") as f:
                f.write("router: [\n")
            gw.proc.send_signal(signal.SIGHUP)
            received = read_until(s, b"refused, nothing changed", "the reload's error", received)
            text = received.decode()
            events = [e for e in sse_events(received)]
            self.assertTrue(all(e["level"] in ("warning", "error") for e in events), events)
            [locked] = [e for e in events if lockout in e["text"]]
            [refused] = [e for e in events if "refused, nothing changed" in e["text"]]
            self.assertEqual((locked["level"], refused["level"]), ("warning", "error"))
            # Nothing came between the two, though the log has lines there.
            self.assertEqual([e for e in events if locked["seq"] < e["seq"] < refused["seq"]], [])
            log = gw.log()
            between = log[log.index(lockout):log.index("refused, nothing changed")]
            self.assertIn(" debug router: duplicate message below-warn", between)
            self.assertIn(" info config reload from", between)
            self.assertNotIn(TOKEN, text)
            # Shutdown with the tail still open ends it and exits cleanly.
            self.assertEqual(gw.stop(), 0, gw.log())
            rest = read_to_close(s, "the tail after shutdown")
            self.assertTrue((received + rest).endswith(b"\r\n0\r\n\r\n"), rest[-200:])

    def test_a_tail_client_that_leaves_is_forgotten(self):
        with Gateway() as gw:
            s, _ = open_tail(gw.admin_port)
            s.close()
            # Lines logged after the client left go nowhere ...
            for i in range(3):
                chat(gw.api_port, "u", "hello", messageId="gone")
            gw.wait_log("router: duplicate message gone on 'api' dropped", count=2)
            # ... and the tail still works for the next client, which gets
            # each line once (a tail left behind for the first client would
            # write into whatever took its place).
            s2, got = open_tail(gw.admin_port)
            self.addCleanup(s2.close)
            for mark in ("after-1", "after-2"):
                chat(gw.api_port, "u", "hello", messageId=mark)
                chat(gw.api_port, "u", "hello", messageId=mark)
                got = read_until(s2, ("duplicate message %s on" % mark).encode(),
                                 "a line in the second tail", got)
            seqs = [e["seq"] for e in sse_events(got)]
            self.assertEqual(len(seqs), len(set(seqs)), got.decode())
            self.assertEqual(seqs, sorted(seqs))
            self.assertEqual(got.count(b"duplicate message after-1 on"), 1)
            self.assertEqual(request(gw.admin_port, "/readyz")[0], 200)

    def test_a_tail_client_that_does_not_read_is_dropped(self):
        # Answer bytes held for a stream beyond 8 x maxBufferedBytes drop
        # the client (docs/operator-guide.md). The send timeout is far off,
        # so only that mark can close it. The lines come from refused
        # requests with 1 MB paths (logged at debug level); the kernel
        # buffers up to tcp_wmem's maximum first.
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            wmem_max = int(f.read().split()[2])
        mb = 1 << 20
        with Gateway(api_extra="    maxHeaderBytes: 2000000\n"
                               "    routes: [{path: /closed, allowFrom: [192.0.2.0/24]}]\n",
                     admin_extra="    maxBufferedBytes: 4096\n    sendTimeoutMs: 600000\n") as gw:
            s = socket.socket()
            self.addCleanup(s.close)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", gw.admin_port))
            s.sendall(b"GET /admin/api/logs/stream HTTP/1.1\r\nHost: localhost\r\n\r\n")
            lines = wmem_max // mb + 4
            log_before = os.path.getsize(gw.log_path)
            for i in range(lines):
                self.assertEqual(request(gw.api_port, "/closed/%d/" % i + "p" * mb)[0], 403)
            wait_for(lambda: os.path.getsize(gw.log_path) - log_before > lines * mb,
                     "%d lines of 1 MB in the log" % lines)
            data = read_to_close(s, "a tail client that reads nothing, %d MB later" % lines)
            self.assertIn(b"text/event-stream", data[:1000])
            self.assertLess(len(data), lines * mb)  # cut off, not ended
            # chatgate serves on, and the next tail works.
            self.assertEqual(request(gw.admin_port, "/readyz")[0], 200)
            s2, head = open_tail(gw.admin_port)
            self.addCleanup(s2.close)
            request(gw.api_port, "/closed/after-the-drop")
            read_until(s2, b"403 for GET /closed/after-the-drop", "a line in the next tail", head)


class ExposureTest(unittest.TestCase):
    def run_config(self, top_extra, admin_address):
        config = gateway_config(0, ECHO_MEMORY, "echo", "memory", top_extra=top_extra)
        config = config.replace("  admin:\n    address: 127.0.0.1",
                                "  admin:\n    address: %s" % admin_address)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(config)
        try:
            return subprocess.run([BIN, "--check-config", "--config", f.name],
                                  capture_output=True, text=True, timeout=20)
        finally:
            os.unlink(f.name)

    def test_admin_beyond_loopback_without_token_is_refused(self):
        p = self.run_config("", "0.0.0.0")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("listeners.admin.address", p.stderr + p.stdout)
        self.assertIn("without admin.token", p.stderr + p.stdout)

    def test_admin_beyond_loopback_with_token_is_accepted(self):
        p = self.run_config("admin:\n  token: something-long\n", "0.0.0.0")
        self.assertEqual(p.returncode, 0, p.stderr + p.stdout)
        self.assertNotIn("something-long", p.stderr + p.stdout)

    def test_loopback_without_token_starts_with_a_warning(self):
        with Gateway() as gw:
            # The warning names the address and the port actually bound.
            self.assertIn("warning listener 'admin': no admin.token is set, so anyone who can reach "
                          "127.0.0.1:%d may use the admin API" % gw.admin_port, gw.log())
            self.assertEqual(request(gw.admin_port, "/admin/api/status")[0], 200)

    def test_admin_listener_can_be_disabled(self):
        # The admin port is one this test holds bound: a listener that
        # tried to open it would stop start-up (address already in use).
        with ClosedPort() as held:
            config = gateway_config(0, ECHO_MEMORY, "echo", "memory", admin_port=held.port)
            config = config.replace("    port: %d\n" % held.port,
                                    "    port: %d\n    enabled: false\n" % held.port)
            with Chatgate(config) as gw:
                self.assertIsNone(gw.admin_port)
                self.assertNotIn("admin on", gw.log())
                self.assertNotIn("listener 'admin'", gw.log())
                self.assertEqual(request(gw.port, "/healthz")[0], 200)
                with self.assertRaises(ConnectionRefusedError):
                    request(held.port, "/healthz")

    def test_an_enabled_admin_listener_on_a_taken_port_stops_start_up(self):
        # The counterpart of the test above: the held port does refuse a
        # listener, so that test means something.
        with ClosedPort() as held:
            gw = Chatgate(gateway_config(0, ECHO_MEMORY, "echo", "memory", admin_port=held.port),
                          expect_exit=1)
            gw.start(wait_ready=False)
            rc, log = gw.wait_exit(), gw.log()
            gw.__exit__(None, None, None)
            self.assertEqual(rc, 1, log)
            self.assertIn("listener 'admin' cannot listen on 127.0.0.1:%d: address already in use"
                          % held.port, log)

if __name__ == "__main__":
    unittest.main()
