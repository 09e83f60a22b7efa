"""Zero-downtime upgrades and reloads through the real binary
(docs/upgrades.md): under a steady load on the
chat API (keep-alive connections, a new connection per request, and answers
streamed over 5 seconds each), SIGUSR2 hands over to the binary now at the
path chatgate was started from (a second build, chatgate-next, put there as
dpkg would), and a reload that changes a plugin's section hands over to a
process with the new config. No request may fail or be refused, every
stream must complete, and afterwards the new process serves, with the new
version and the new config. A handover that cannot happen (a binary that
exits at once, a broken config) leaves the old process serving, with one
error line and nothing refused.

The model is tests/fakes/fake_openai.py: it answers at once, except a query
holding "slow-stream", which it streams one word every 400 ms (about 5 s)."""
import http.client
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import unittest

from harness import (BIN, DEADLINE, HANDOVER_FAILED, NEXT_BIN, SOURCE_DIR, Chatgate,
                     FakeProcess, gateway_config)

FAKE = os.path.join(SOURCE_DIR, "tests", "fakes", "fake_openai.py")
TOKEN = "upgrade-test-token-0123456789"
BEARER = {"Authorization": "Bearer " + TOKEN}
# 13 words at 400 ms: a stream of about 5 s.
SLOW_QUERY = "slow-stream one two three four five six seven eight"


def config(endpoint, model="model-a"):
    instances = (
        "    - name: gpt\n"
        "      plugin: openai.so\n"
        "      config:\n"
        "        endpoint: %s\n"
        "        apiKey: test-key\n"
        "        model: %s\n"
        "    - name: memory\n"
        "      plugin: memory.so\n" % (endpoint, model))
    return gateway_config(0, instances, "gpt", "memory", top_extra="admin:\n  token: %s\n" % TOKEN,
                          router_extra="  maxConversationBacklog: 1000\n",
                          tail="shutdown:\n  deadlineMs: 15000\n")


def admin(port, path, method="GET", body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, body=body, headers=BEARER)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data)


class Load:
    """Requests at a steady rate until stopped, each one recorded: (start,
    end, outcome), outcome "ok" or what went wrong. `port` is read for each
    new connection, so a test that moves the API can point it elsewhere."""

    def __init__(self, port, keepalive=3, fresh=1, streams=2, every=0.04):
        self.port = port
        self.every = every
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.results = []  # (kind, start, end, outcome)
        self.threads = [threading.Thread(target=self.keepalive, args=(i,)) for i in range(keepalive)]
        self.threads += [threading.Thread(target=self.fresh, args=(i,)) for i in range(fresh)]
        self.threads += [threading.Thread(target=self.stream, args=(i,)) for i in range(streams)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def finish(self, timeout=DEADLINE):
        self.stop.set()
        for t in self.threads:
            t.join(timeout)
        return self.results

    def record(self, kind, start, outcome):
        with self.lock:
            self.results.append((kind, start, time.monotonic(), outcome))

    def ask(self, conn, user, query, stream=False):
        body = {"userId": user, "query": query}
        if stream:
            body["stream"] = True
        conn.request("POST", "/api/chat", body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            return "HTTP %d: %r" % (resp.status, data[:200])
        if not stream:
            return "ok" if json.loads(data).get("answer") else "no answer: %r" % data[:200]
        events = [json.loads(line[6:]) for line in data.decode().split("\n")
                  if line.startswith("data: ")]
        if not events or not events[-1].get("done") or "error" in events[-1]:
            return "stream did not complete: %r" % data[-200:]
        if len(events) < 3:
            return "not streamed (%d events)" % len(events)
        return "ok"

    def paced(self, n):
        # Steady: the next request at a fixed time, not after the last one.
        next_at = time.monotonic()
        while not self.stop.is_set():
            yield n
            n += 1
            next_at += self.every
            time.sleep(max(0.0, next_at - time.monotonic()))

    def keepalive(self, i):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        for n in self.paced(0):
            start = time.monotonic()
            try:
                outcome = self.ask(conn, "ka-%d-%d" % (i, n % 50), "hello %d" % n)
            except (OSError, http.client.HTTPException) as e:
                outcome = "%s: %s" % (type(e).__name__, e)
            self.record("keepalive", start, outcome)
            if outcome != "ok" or conn.sock is None:
                # A server that closed the connection (Connection: close,
                # as a draining one does) is reconnected to, as any client
                # does; a failure above is already recorded.
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        conn.close()

    def fresh(self, i):
        for n in self.paced(0):
            start = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
            try:
                outcome = self.ask(conn, "fresh-%d-%d" % (i, n % 50), "hi %d" % n)
            except (OSError, http.client.HTTPException) as e:
                outcome = "%s: %s" % (type(e).__name__, e)
            finally:
                conn.close()
            self.record("fresh", start, outcome)

    def stream(self, i):
        n = 0
        while not self.stop.is_set():
            start = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                outcome = self.ask(conn, "stream-%d-%d" % (i, n), SLOW_QUERY, stream=True)
            except (OSError, http.client.HTTPException) as e:
                outcome = "%s: %s" % (type(e).__name__, e)
            finally:
                conn.close()
            self.record("stream", start, outcome)
            n += 1


class UpgradeTest(unittest.TestCase):
    def setUp(self):
        self.fake = FakeProcess([sys.executable, FAKE])
        self.addCleanup(self.fake.close)
        self.endpoint = "http://127.0.0.1:%d/v1" % self.fake.port
        self.control({"rules": [{"contains": "slow-stream", "behaviour": "trickle:400"}]})

    def control(self, body):
        conn = http.client.HTTPConnection("127.0.0.1", self.fake.port, timeout=10)
        conn.request("POST", "/control", body=json.dumps(body),
                     headers={"Content-Type": "application/json"})
        self.assertEqual(conn.getresponse().status, 200)
        conn.close()

    def models_asked(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.fake.port, timeout=10)
        conn.request("GET", "/requests")
        requests = json.loads(conn.getresponse().read())
        conn.close()
        return [r["body"].get("model") for r in requests if isinstance(r.get("body"), dict)]

    def gateway(self, binary, **kw):
        return Chatgate(config(self.endpoint, **kw), binary=binary)

    def installed_binary(self, source):
        """A copy of `source` at a path of the test's own, which an upgrade
        then replaces the way dpkg does: a new file renamed over the old."""
        directory = self.enterContext(tempfile.TemporaryDirectory(prefix="cg-bin-"))
        path = os.path.join(directory, "chatgate")
        shutil.copy2(source, path)
        return path

    def replace_binary(self, path, source):
        shutil.copy2(source, path + ".dpkg-new")
        os.replace(path + ".dpkg-new", path)

    def assert_no_failure(self, results, streams_expected):
        failures = [r for r in results if r[3] != "ok"]
        self.assertEqual(failures, [], "%d of %d requests failed" % (len(failures), len(results)))
        streams = [r for r in results if r[0] == "stream"]
        self.assertGreaterEqual(len(streams), streams_expected)
        self.assertGreater(len([r for r in results if r[0] == "fresh"]), 20)
        self.assertGreater(len([r for r in results if r[0] == "keepalive"]), 60)

    def test_upgrade_and_reload_under_load(self):
        binary = self.installed_binary(BIN)
        with self.gateway(binary) as gw:
            first_pid = admin(gw.admin_port, "/admin/api/status")[1]["pid"]
            load = Load(gw.port).start()
            self.addCleanup(load.finish)
            time.sleep(1.5)  # streams under way when the upgrade comes
            # The upgrade: the new build is put where the binary was, then
            # SIGUSR2 (the .deb's postinst does the same).
            self.replace_binary(binary, NEXT_BIN)
            gw.proc.send_signal(signal.SIGUSR2)
            second_pid = gw.follow_handover()
            status = admin(gw.admin_port, "/admin/api/status")[1]
            self.assertEqual((status["pid"], status["version"][-5:]), (second_pid, "+next"))
            self.assertNotEqual(second_pid, first_pid)
            time.sleep(1.0)
            # A plugin's section changes: a reload hands over again.
            gw.rewrite_config("model: model-a", "model: model-b")
            reloaded_at = int(time.time())
            code, doc = admin(gw.admin_port, "/admin/api/reload", "POST", "{}")
            self.assertEqual(code, 200, doc)
            self.assertEqual(doc["handover"], ["plugins.instances[gpt].config"])
            third_pid = gw.follow_handover(count=2)
            self.assertEqual(doc["pid"], third_pid)
            time.sleep(1.5)
            results = load.finish()
            status = admin(gw.admin_port, "/admin/api/status")[1]
            self.assertEqual((status["pid"], status["version"][-5:]), (third_pid, "+next"))
            self.assertEqual(status["config"]["file"], gw.config_path)
            self.assertGreaterEqual(status["config"]["loadedAt"], reloaded_at)
            effective = admin(gw.admin_port, "/admin/api/config")[1]
            self.assertIn("model-b", json.dumps(effective))
            # The model is asked with the new config from then on.
            self.assertEqual(self.models_asked()[-1], "model-b")
            log = gw.log()
        # Streams began before each handover and ended after it: the old
        # processes finished them.
        self.assert_no_failure(results, streams_expected=4)
        self.assertNotIn(HANDOVER_FAILED, log)
        self.assertEqual(log.count("stops accepting and drains"), 2)

    def test_a_binary_that_exits_at_once_changes_nothing(self):
        binary = self.installed_binary(BIN)
        broken = os.path.join(os.path.dirname(binary), "broken")
        with open(broken, "w") as f:
            f.write("#!/bin/sh\necho 'broken build' >&2\nexit 3\n")
        os.chmod(broken, 0o755)
        # One that passes the check and then exits before it is ready.
        late = os.path.join(os.path.dirname(binary), "late")
        with open(late, "w") as f:
            f.write("#!/bin/sh\ncase \"$*\" in *--check-config*) exit 0;; esac\nexit 4\n")
        os.chmod(late, 0o755)
        with self.gateway(binary) as gw:
            pid = admin(gw.admin_port, "/admin/api/status")[1]["pid"]
            load = Load(gw.port, keepalive=1, fresh=1, streams=1).start()
            self.addCleanup(load.finish)
            self.replace_binary(binary, broken)
            gw.proc.send_signal(signal.SIGUSR2)
            log = gw.wait_log(HANDOVER_FAILED)
            self.assertIn("--check-config' exited with status 3: broken build; this process "
                          "(pid %d) goes on serving" % pid, log)
            self.replace_binary(binary, late)
            gw.proc.send_signal(signal.SIGUSR2)
            log = gw.wait_log(HANDOVER_FAILED, count=2)
            self.assertIn("exited with status 4 before it was ready", log)
            # No binary at all where it was started from.
            os.unlink(binary)
            gw.proc.send_signal(signal.SIGUSR2)
            log = gw.wait_log(HANDOVER_FAILED, count=3)
            self.assertIn("handover failed: cannot start %s: no such file or directory" % binary,
                          log)
            time.sleep(0.5)
            results = load.finish()
            self.assertEqual(admin(gw.admin_port, "/admin/api/status")[1]["pid"], pid)
            self.assertIsNone(gw.proc.poll())
            # One error line per failed handover, and nothing else at error.
            errors = [line for line in gw.log().splitlines() if " error " in line]
            self.assertEqual(len(errors), 3, errors)
        failures = [r for r in results if r[3] != "ok"]
        self.assertEqual(failures, [])
        self.assertGreater(len(results), 20)

    def test_a_broken_config_changes_nothing(self):
        with self.gateway(BIN) as gw:
            pid = admin(gw.admin_port, "/admin/api/status")[1]["pid"]
            # Valid YAML and keys, but a plugin that does not exist: only a
            # new process would load it, so only its check finds it.
            gw.rewrite_config("plugin: memory.so", "plugin: nosuch.so")
            code, doc = admin(gw.admin_port, "/admin/api/reload", "POST", "{}")
            self.assertEqual(code, 400, doc)
            self.assertIn("nosuch.so", doc["error"])
            self.assertIn("nothing changed", doc["error"])
            gw.proc.send_signal(signal.SIGUSR2)
            log = gw.wait_log(HANDOVER_FAILED, count=2)
            self.assertIn("nosuch.so", log.split(HANDOVER_FAILED)[2])
            self.assertEqual(admin(gw.admin_port, "/admin/api/status")[1]["pid"], pid)
            status = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
            status.request("POST", "/api/chat", body=json.dumps({"userId": "u", "query": "hi"}))
            self.assertEqual(status.getresponse().status, 200)
            status.close()


if __name__ == "__main__":
    unittest.main()
