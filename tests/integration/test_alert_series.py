"""Every series the operator's alert rules read (packaging/prometheus/
chatgate-rules.yml) appears in a real chatgate's /metrics, with the label
values the rules select on. promtool's rule tests (tests/prometheus) prove
the rules fire on given series; this proves chatgate exports those series,
so a renamed metric or label cannot leave an alert silently dead.

The chatgate here has what the rules watch: a TLS listener (certificate
expiry), openai.so (its circuit breaker gauge) against the fake model, a
channel instance with a WebSocket connection (the wsprobe fixture against
fake_ws.py), and one answered chat (per-channel message counters and the
reply latency histogram)."""
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
from harness import (FIXTURE_DIR, SOURCE_DIR, Chatgate, FakeProcess, gateway_config, make_cert,
                     wait_for)

FAKES = os.path.join(SOURCE_DIR, "tests", "fakes")
RULES = os.path.join(SOURCE_DIR, "packaging", "prometheus", "chatgate-rules.yml")
# Series Prometheus makes itself, not chatgate.
PROMETHEUS_OWN = {"up"}


def rule_selectors(path):
    """[(metric, [(label, op, value)])] for every metric an `expr:` uses."""
    with open(path) as f:
        text = f.read()
    exprs = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
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
            exprs.append("\n".join(block))
        else:
            exprs.append(rest)
            i += 1
    found = []
    for expr in exprs:
        for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?", expr):
            name, braces = m.group(1), m.group(2) or ""
            if not (name.startswith("chatgate_") or name in PROMETHEUS_OWN):
                continue
            matchers = re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', braces)
            found.append((name, matchers))
    return found


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

    def test_the_rules_file_uses_chatgate_series(self):
        names = {n for n, _ in rule_selectors(RULES)}
        self.assertIn("chatgate_plugin_breaker_open", names)
        self.assertGreaterEqual(len(names - PROMETHEUS_OWN), 8, names)


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
            missing = []
            for name, matchers in rule_selectors(RULES):
                if name in PROMETHEUS_OWN:
                    continue
                if not any(n == name and matches(labels, matchers) for n, labels, _ in samples):
                    missing.append("%s%s" % (name, "{%s}" % ",".join(
                        '%s%s"%s"' % m for m in matchers) if matchers else ""))
            self.assertEqual(missing, [], "alert rules read series chatgate does not export")


if __name__ == "__main__":
    unittest.main()
