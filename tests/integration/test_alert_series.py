"""Every series the operator's alert rules read (packaging/prometheus/
chatgate-rules.yml) appears in a real chatgate's /metrics, with the label
values the rules select on. promtool's rule tests (tests/prometheus) prove
the rules fire on given series; this proves chatgate exports those series,
so a renamed metric or label cannot leave an alert silently dead.

The chatgate here has what the rules watch: a TLS listener (certificate
expiry), openai.so (its circuit breaker gauge) against the fake model, a
channel instance with a WebSocket connection (the wsprobe fixture against
fake_ws.py), and one answered chat (per-channel message counters and the
reply latency histogram).

The rules of the group "chatgate-queue" read chatgate_queue_*, which only a
chatgate with the durable queue exports: they are checked against a second
chatgate with router.queue on a real redis-server (unix socket), after one
message went through the queue, one duplicate was refused and one
unreadable entry went to the dead letters; with Redis stopped, the same
chatgate shows what ChatgateQueueRedisUnreachable and
ChatgateQueueUnavailable watch for (the cache's state 2, /readyz 503, a
refused enqueue counted as "unavailable")."""
import json
import os
import re
import ssl
import sys
import tempfile
import textwrap
import unittest
import http.client

from channel_support import parse_metrics
from harness import (FIXTURE_DIR, SOURCE_DIR, Chatgate, FakeProcess, gateway_config, get,
                     make_cert, post_json, wait_for)
from test_redis import RedisServer

FAKES = os.path.join(SOURCE_DIR, "tests", "fakes")
RULES = os.path.join(SOURCE_DIR, "packaging", "prometheus", "chatgate-rules.yml")
# Series Prometheus makes itself, not chatgate.
PROMETHEUS_OWN = {"up"}
# The rule group whose series only a chatgate with router.queue exports.
QUEUE_GROUP = "chatgate-queue"
CG_EEXIST, CG_EUNAVAIL = -4, -13


def rule_exprs(path):
    """[(group name, expr text)] for every `expr:` of a rules file, inline or
    a block. Groups are the `- name:` lines (rules have `alert:`/`record:`)."""
    with open(path) as f:
        text = f.read()
    exprs = []
    group = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        g = re.match(r"\s*-\s+name:\s*(\S+)\s*$", lines[i])
        if g:
            group = g.group(1).strip("'\"")
        m = re.match(r"(\s*)expr:\s*(.*)$", lines[i])
        if not m:
            i += 1
            continue
        indent, rest = len(m.group(1)), m.group(2).strip()
        if rest in ("|", ">", "|-", ">-"):
            block = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or
                                      len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i])
                i += 1
            exprs.append((group, "\n".join(block)))
        else:
            exprs.append((group, rest))
            i += 1
    return exprs


def rule_selectors(path, groups=None, exclude=()):
    """[(metric, [(label, op, value)])] for every metric an `expr:` uses, in
    the named groups (None: all) but those in `exclude`."""
    found = []
    for group, expr in rule_exprs(path):
        if (groups is not None and group not in groups) or group in exclude:
            continue
        for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?", expr):
            name, braces = m.group(1), m.group(2) or ""
            if not (name.startswith("chatgate_") or name in PROMETHEUS_OWN):
                continue
            matchers = re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', braces)
            found.append((name, matchers))
    return found


def recorded_names_used(path):
    """Recording-rule names (level:metric:operation, chatgate:...) the exprs
    read, and the names the file records."""
    used = set()
    for _, expr in rule_exprs(path):
        used |= set(re.findall(r"\b(chatgate:[a-zA-Z0-9_:]+)", expr))
    with open(path) as f:
        recorded = set(re.findall(r"^\s*-?\s*record:\s*(\S+)\s*$", f.read(), re.M))
    return used, recorded


def missing_series(samples, selectors):
    """The selectors no sample matches, written as PromQL."""
    missing = []
    for name, matchers in selectors:
        if name in PROMETHEUS_OWN:
            continue
        if not any(n == name and matches(labels, matchers) for n, labels, _ in samples):
            missing.append("%s%s" % (name, "{%s}" % ",".join(
                '%s%s"%s"' % m for m in matchers) if matchers else ""))
    return missing


def sample(samples, name, **labels):
    """The value of the one sample named `name` with these labels, or None."""
    for n, l, v in samples:
        if n == name and all(l.get(k) == want for k, want in labels.items()):
            return v
    return None


def scrape(admin_port):
    status, text, _ = get(admin_port, "/metrics", timeout=30)
    assert status == 200, (status, text)
    return parse_metrics(text)


def matches(labels, matchers):
    for label, op, value in matchers:
        have = labels.get(label, "")
        if op == "=" and have != value:
            return False
        if op == "!=" and have == value:
            return False
        if op == "=~" and not re.fullmatch(value, have):
            return False
        if op == "!~" and re.fullmatch(value, have):
            return False
    return True


class RuleParserTest(unittest.TestCase):
    def test_reads_block_and_inline_exprs(self):
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            f.write(textwrap.dedent("""\
                groups:
                  - rules:
                      - alert: A
                        expr: rate(chatgate_a_total{level="error"}[5m]) > 1
                      - alert: B
                        expr: |
                          sum by (x) (rate(chatgate_b_bucket[5m]))
                          / chatgate_c{kind!="channel"}
                        for: 5m
                """))
        self.addCleanup(os.unlink, f.name)
        self.assertEqual(rule_selectors(f.name), [
            ("chatgate_a_total", [("level", "=", "error")]),
            ("chatgate_b_bucket", []),
            ("chatgate_c", [("kind", "!=", "channel")])])

    def test_tells_groups_apart(self):
        with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
            f.write(textwrap.dedent("""\
                groups:
                  - name: one
                    rules:
                      - alert: A
                        expr: chatgate_a > 1
                  - name: "two"
                    rules:
                      - record: chatgate:b:sum
                        expr: sum(chatgate_b)
                      - alert: C
                        expr: |
                          chatgate_c
                          < on (job) chatgate:b:sum
                """))
        self.addCleanup(os.unlink, f.name)
        self.assertEqual(rule_selectors(f.name, groups={"one"}), [("chatgate_a", [])])
        self.assertEqual(rule_selectors(f.name, exclude={"one"}),
                         [("chatgate_b", []), ("chatgate_c", [])])
        self.assertEqual(recorded_names_used(f.name), ({"chatgate:b:sum"}, {"chatgate:b:sum"}))

    def test_the_rules_file_uses_chatgate_series(self):
        names = {n for n, _ in rule_selectors(RULES)}
        self.assertIn("chatgate_plugin_breaker_open", names)
        self.assertGreaterEqual(len(names - PROMETHEUS_OWN), 8, names)
        queue = {n for n, _ in rule_selectors(RULES, groups={QUEUE_GROUP})}
        self.assertGreaterEqual(queue, {"chatgate_queue_oldest_pending_seconds",
                                        "chatgate_queue_dead_lettered_total",
                                        "chatgate_queue_enqueued_total",
                                        "chatgate_queue_partitions_owned",
                                        "chatgate_queue_length", "chatgate_plugin_state"})
        # Only the queue group reads the queue's series: the others must hold
        # for a chatgate without router.queue.
        self.assertFalse({n for n, _ in rule_selectors(RULES, exclude={QUEUE_GROUP})
                          if n.startswith("chatgate_queue_")})

    def test_every_recorded_series_a_rule_reads_is_recorded_there(self):
        used, recorded = recorded_names_used(RULES)
        self.assertIn("chatgate:queue_partitions:configured", used)
        self.assertLessEqual(used, recorded)


class AlertSeriesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory(prefix="chatgate-alerts-")
        cls.addClassCleanup(cls.dir.cleanup)
        cls.cert, cls.key = make_cert(cls.dir.name, "127.0.0.1", "IP:127.0.0.1")
        cls.model = FakeProcess([sys.executable, os.path.join(FAKES, "fake_openai.py")])
        cls.addClassCleanup(cls.model.close)
        cls.ws = FakeProcess([sys.executable, os.path.join(FAKES, "fake_ws.py")])
        cls.addClassCleanup(cls.ws.close)

    def config(self):
        instances = textwrap.dedent("""\
                - name: gpt
                  plugin: openai.so
                  config:
                    endpoint: http://127.0.0.1:{model}/v1
                    apiKey: sk-alerts
                    model: fake-model
                - name: memory
                  plugin: memory.so
                - name: probe
                  plugin: {fixtures}/wsprobe.so
                  config:
                    url: ws://127.0.0.1:{ws}/echo
            """).format(model=self.model.port, fixtures=FIXTURE_DIR, ws=self.ws.port)
        instances = textwrap.indent(instances, "    ")
        tls = "    tls:\n      certFile: %s\n      keyFile: %s\n" % (self.cert, self.key)
        return gateway_config(0, instances, "gpt", "memory", api_extra=tls)

    def https(self, port, method, path, body=None):
        ctx = ssl.create_default_context(cafile=self.cert)
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=ctx)
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read().decode("utf-8", "replace")
        conn.close()
        return resp.status, data

    def metrics(self, cg):
        conn = http.client.HTTPConnection("127.0.0.1", cg.admin_port, timeout=30)
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        conn.close()
        self.assertEqual(resp.status, 200)
        return parse_metrics(text)

    def test_every_series_an_alert_rule_reads_is_exported(self):
        with Chatgate(self.config()) as cg:
            status, body = self.https(cg.port, "POST", "/api/chat",
                                      json.dumps({"userId": "u1", "query": "hello"}))
            self.assertEqual(status, 200, body)
            status, body = self.https(cg.port, "POST", "/wsprobe/probe/connect", b"")
            self.assertEqual(status, 200, body)
            wait_for(lambda: any(n == "chatgate_websocket_open" and l.get("plugin_instance") == "probe"
                                 and v == 1 for n, l, v in self.metrics(cg)),
                     "the probe's WebSocket to open")
            samples = self.metrics(cg)
            missing = missing_series(samples, rule_selectors(RULES, exclude={QUEUE_GROUP}))
            self.assertEqual(missing, [], "alert rules read series chatgate does not export")


class QueueAlertSeriesTest(unittest.TestCase):
    """The queue group's series on a chatgate with the durable queue in a
    real redis-server: echo.so answers, redis.so is cache and queue, the
    wsprobe fixture hands messages in through emit_message_durable."""
    PARTITIONS = 4

    def setUp(self):
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.close)
        instances = textwrap.indent(textwrap.dedent("""\
                - name: echo
                  plugin: echo.so
                - name: redis
                  plugin: redis.so
                  config:
                    unixSocket: {socket}
                - name: probe
                  plugin: {fixtures}/wsprobe.so
                  config:
                    url: ws://127.0.0.1:9/
            """).format(socket=self.redis.socket, fixtures=FIXTURE_DIR), "    ")
        tail = "queue:\n  partitions: %d\n  leaseMs: 1000\n" % self.PARTITIONS
        self.cg = Chatgate(gateway_config(0, instances, "echo", "redis", "  queue: redis\n",
                                          tail=tail)).start()
        self.addCleanup(self.cg.__exit__, None, None, None)
        # The one instance takes every partition.
        wait_for(lambda: sample(scrape(self.cg.admin_port), "chatgate_queue_partitions_owned")
                 == self.PARTITIONS, "the instance to own every partition")

    def emit(self, conversation, dedupe, text):
        status, body, _ = post_json(self.cg.port, "/wsprobe/probe/emitdurable",
                                    "%s %s %s" % (conversation, dedupe, text), timeout=30)
        self.assertEqual(status, 200, body)
        return body

    def test_every_series_a_queue_alert_rule_reads_is_exported(self):
        self.assertEqual(self.emit("c1", "evt-1", "hello"), 0)
        self.assertEqual(self.emit("c1", "evt-1", "hello"), CG_EEXIST)
        wait_for(lambda: sample(scrape(self.cg.admin_port), "chatgate_queue_acked_total") == 1,
                 "the message to be answered and acknowledged")
        # An entry no instance can read goes to the dead letters at once.
        self.redis.command("XADD", "chatgate:q:0", "*", "m", "not an encoded message")
        wait_for(lambda: sample(scrape(self.cg.admin_port), "chatgate_queue_dead_letters") == 1,
                 "the unreadable entry in the dead-letter stream (the stats every 5 s)")
        samples = scrape(self.cg.admin_port)
        self.assertEqual(missing_series(samples, rule_selectors(RULES, groups={QUEUE_GROUP})), [],
                         "queue alert rules read series chatgate does not export")
        # What the rules count moved as the messages did.
        self.assertEqual(sample(samples, "chatgate_queue_dead_lettered_total"), 1)
        self.assertEqual(sample(samples, "chatgate_queue_enqueued_total", result="ok"), 1)
        self.assertEqual(sample(samples, "chatgate_queue_enqueued_total", result="duplicate"), 1)
        self.assertEqual(sample(samples, "chatgate_queue_members"), 1)
        self.assertEqual(sample(samples, "chatgate_queue_length"), 0)
        self.assertEqual(sample(samples, "chatgate_queue_oldest_pending_seconds"), 0)
        self.assertEqual(sample(samples, "chatgate_plugin_state", plugin_instance="redis",
                                kind="cache"), 1)

    def test_redis_gone_shows_as_the_rules_expect(self):
        self.assertEqual(get(self.cg.admin_port, "/readyz")[0], 200)
        self.redis.stop()
        # ChatgateQueueRedisUnreachable: the queue's cache at state >= 2 on an
        # instance that exports chatgate_queue_partitions_owned.
        wait_for(lambda: (sample(scrape(self.cg.admin_port), "chatgate_plugin_state",
                                 plugin_instance="redis", kind="cache") or 0) >= 2,
                 "the queue's cache instance to be degraded")
        self.assertIsNotNone(sample(scrape(self.cg.admin_port), "chatgate_queue_partitions_owned"))
        self.assertEqual(get(self.cg.admin_port, "/readyz")[0], 503)
        self.assertEqual(get(self.cg.port, "/readyz")[0], 503)
        # ChatgateQueueUnavailable: a refused message counted as "unavailable".
        self.assertEqual(self.emit("c2", "evt-2", "lost?"), CG_EUNAVAIL)
        self.assertEqual(sample(scrape(self.cg.admin_port), "chatgate_queue_enqueued_total",
                                result="unavailable"), 1)


if __name__ == "__main__":
    unittest.main()
