"""Secrets hygiene: chatgate runs with known secret values in every plugin
and core setting that takes one, the test drives the paths that log
(refused credentials, model errors that quote the key back, timeouts, bad
signatures, wrong tokens, a Redis that refuses the password, platforms
that cannot be reached, a refused reload), and then scans the log at debug
level, every admin API answer and /metrics for the values."""
import http.client
import json
import signal
import unittest
import urllib.request

from channel_support import FakeOpenAI
from harness import Chatgate, ClosedPort, FIXTURE_DIR, gateway_config, post_json, wait_until
from test_redis import RedisServer

SECRETS = {
    "CHATGATE_ADMIN_TOKEN": "adm-SECRET-7f3a9c0e5d",
    "MODEL_SERVICE_KEY": "sk-SECRET-model-5b2e8d41aa",
    "REDIS_PASSWORD": "redis-SECRET-91c0ffee",
    "FEISHU_APP_SECRET": "fs-SECRET-app-0d9e77",
    "FEISHU_ENCRYPT_KEY": "fs-SECRET-enc-77aa12",
    "FEISHU_VTOKEN": "fs-SECRET-vt-31bb56",
    "DINGTALK_SECRET": "dt-SECRET-cs-42f1cd",
    "BRIDGE_TOKEN": "br-SECRET-tok-1188ab",
}


class SecretsTest(unittest.TestCase):
    def setUp(self):
        self.model = FakeOpenAI()
        self.addCleanup(self.model.close)
        # The server's password differs from the one chatgate is given.
        self.redis = RedisServer(password="the-real-redis-password").start()
        self.addCleanup(self.redis.close)
        # Loopback ports that refuse connections, held for the test's life.
        closed = [ClosedPort() for _ in range(3)]
        for c in closed:
            self.addCleanup(c.close)
        instances = self.model.instance_yaml("gpt").replace(
            "        retries: 0\n", "        retries: 0\n        apiKey: ${MODEL_SERVICE_KEY}\n")
        instances += """\
    - name: cache
      plugin: redis.so
      config:
        unixSocket: %s
        password: ${REDIS_PASSWORD}
        commandTimeoutMs: 300
    - name: fs
      plugin: feishu.so
      config:
        appId: cli_secret_test
        appSecret: ${FEISHU_APP_SECRET}
        encryptKey: ${FEISHU_ENCRYPT_KEY}
        verificationToken: ${FEISHU_VTOKEN}
        domain: http://127.0.0.1:%d
        mode: webhook
    - name: dt
      plugin: dingtalk.so
      config:
        clientId: ding_secret_test
        clientSecret: ${DINGTALK_SECRET}
        apiBase: http://127.0.0.1:%d
        mode: stream
    - name: bridge
      plugin: %s/http_bridge.so
      config:
        callbackUrl: http://127.0.0.1:%d/answers
        token: ${BRIDGE_TOKEN}
""" % (self.redis.socket, closed[0].port, closed[1].port, FIXTURE_DIR, closed[2].port)
        text = gateway_config(0, instances, "gpt", "cache",
                              router_extra="  modelTimeoutMs: 1500\n",
                              top_extra="admin:\n  token: ${CHATGATE_ADMIN_TOKEN}\n")
        self.cg = Chatgate(text, env=SECRETS)
        # Listening, though not ready (/readyz): the channels cannot reach
        # their platforms (on purpose).
        self.cg.start()
        self.addCleanup(self.cg.__exit__, None, None, None)
        self.port, self.admin = self.cg.port, self.cg.admin_port
        self.answers = []

    def admin_get(self, path, token=SECRETS["CHATGATE_ADMIN_TOKEN"]):
        conn = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=10)
        conn.request("GET", path, headers={"Authorization": "Bearer " + token})
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
        headers = "\n".join("%s: %s" % kv for kv in resp.getheaders())
        conn.close()
        self.answers.append("%s\n%s\n%s" % (path, headers, body))
        return resp.status, body

    def drive(self):
        # Model errors: the key quoted back (whole and in part), a 500, a timeout.
        self.model.script("status:leak", "status:401", "status:500", "hang")
        for i in range(4):
            status, body, headers = post_json(self.port, "/api/chat",
                                              {"userId": "u%d" % i, "query": "q"}, timeout=10)
            self.answers.append(json.dumps(body) + json.dumps(headers))
            self.assertEqual(status, 503, body)
        # Streaming, with the key quoted back again.
        self.model.script("status:leak")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("POST", "/api/chat", json.dumps({"userId": "s", "query": "q", "stream": True}),
                     {"Content-Type": "application/json"})
        self.answers.append(conn.getresponse().read().decode())
        conn.close()
        # Feishu webhook: a bad signature and a wrong verification token.
        for body, headers in [
            (b'{"encrypt":"AAAA"}', {"X-Lark-Request-Timestamp": "1", "X-Lark-Request-Nonce": "n",
                                     "X-Lark-Signature": "bad"}),
            (json.dumps({"type": "url_verification", "token": "wrong", "challenge": "c"}).encode(),
             {}),
        ]:
            status, resp, _ = post_json(self.port, "/webhook/fs", body, headers=headers)
            self.answers.append(str(resp))
            self.assertGreaterEqual(status, 400)
        # The bridge with a wrong token, and with the right one (its answer
        # cannot be delivered: the callback port is closed).
        for token in ("wrong", SECRETS["BRIDGE_TOKEN"]):
            req = urllib.request.Request(
                "http://127.0.0.1:%d/webhook/bridge?conversation=c&user=u&id=%s" % (self.port, token),
                data=b"hello", method="POST", headers={"X-Bridge-Token": token})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    self.answers.append(r.read().decode())
            except urllib.error.HTTPError as e:
                self.answers.append(e.read().decode())
        # Admin: a wrong token, then every read endpoint with the right one.
        self.assertEqual(self.admin_get("/admin/api/status", token="not-the-token")[0], 401)
        for path in ("/admin/api/status", "/admin/api/plugins", "/admin/api/config",
                     "/admin/api/history", "/admin/api/metrics",
                     "/admin/api/logs?level=trace&lines=1000", "/admin/api/conversations",
                     "/readyz", "/metrics"):
            self.admin_get(path)
        # A reload that fails (the file now names an unset variable).
        self.cg.rewrite_config("${DINGTALK_SECRET}", "${UNSET_SECRET_VARIABLE}")
        self.cg.proc.send_signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: "refused, nothing changed" in self.cg.log()), self.cg.log())

    def test_no_secret_in_logs_admin_answers_or_metrics(self):
        self.drive()
        # The paths were taken (so a clean scan means something).
        log = self.cg.log()
        for expected in ("model 'gpt' failed", "cache 'cache' unavailable", "refused, nothing changed"):
            self.assertIn(expected, log)
        self.assertTrue(wait_until(lambda: "[dt]" in self.cg.log() and "[fs]" in self.cg.log()))
        self.assertEqual(self.cg.stop(), 0)
        log = self.cg.log()
        places = {"log": log, "admin and API answers": "\n".join(self.answers)}
        for where, text in places.items():
            for name, value in SECRETS.items():
                self.assertNotIn(value, text, "%s (%s) appears in the %s" % (name, value, where))
        # The masked config shows that the secrets are set, not what they are,
        # beside the values that are not secret (so the scan saw real answers).
        config = [a for a in self.answers if a.startswith("/admin/api/config")][0]
        self.assertIn("********", config)
        self.assertIn("cli_secret_test", config)
        self.assertIn("ding_secret_test", config)
        # The model's error that quoted the key is withheld from the log.
        self.assertIn("quoted the API key and is withheld", log)


if __name__ == "__main__":
    unittest.main()
