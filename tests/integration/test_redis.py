"""redis.so end to end: a real redis-server on a free loopback port, started
and killed by the test; the real chatgate (one or two processes) with the
echo backend and the Redis cache."""
import shutil
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
import unittest

from harness import Chatgate, chat, free_port, gateway_config, wait_until

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    def __init__(self, port=None, password=None):
        self.port = port or free_port()
        self.password = password
        self.proc = None
        self.dir = tempfile.TemporaryDirectory(prefix="chatgate-redis-")

    def start(self):
        args = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.dir.name]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise AssertionError("redis-server did not start")

    def command(self, *words):
        """One command over RESP, answered as raw bytes (independent of chatgate)."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        out = b""
        if self.password:
            s.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(self.password),
                                                            self.password.encode()))
            s.recv(100)
        s.sendall(b"*%d\r\n" % len(words) +
                  b"".join(b"$%d\r\n%s\r\n" % (len(w), w.encode()) for w in words))
        out = s.recv(65536)
        s.close()
        return out

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        self.stop()
        self.dir.cleanup()


def redis_config(port, redis_port, extra=""):
    instances = textwrap.dedent("""\
            - name: echo
              plugin: echo.so
            - name: shared
              plugin: redis.so
              config:
                host: localhost
                port: {redis_port}
        {extra}
        """).format(redis_port=redis_port, extra=extra)
    return gateway_config(port, instances, "echo", "shared")


class RedisCacheTest(unittest.TestCase):
    def setUp(self):
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.close)

    def chatgate(self, extra=""):
        port = free_port()
        cg = Chatgate(redis_config(port, self.redis.port, extra)).start()
        self.addCleanup(cg.__exit__, None, None, None)
        wait_until(lambda: "connected to redis" in cg.log())
        return port, cg

    def test_context_lives_in_redis_under_the_prefix(self):
        port, cg = self.chatgate()
        self.assertEqual(chat(port, "ria", "one")[1]["answer"], "echo: one (turn 1)")
        self.assertEqual(chat(port, "ria", "two")[1]["answer"], "echo: two (turn 2)")
        keys = self.redis.command("KEYS", "*")
        self.assertIn(b"chatgate:c:api:ria", keys)
        ttl = int(self.redis.command("PTTL", "chatgate:c:api:ria")[1:].strip())
        self.assertGreater(ttl, 86000 * 1000)  # contextTtlSeconds: 86400
        self.assertEqual(cg.stop(), 0)

    def test_redis_going_away_degrades_and_recovers(self):
        port, cg = self.chatgate()
        chat(port, "kai", "before")
        self.redis.stop()
        status, body, _ = chat(port, "kai", "during")
        self.assertEqual(status, 200)
        self.assertEqual(body["answer"], "echo: during (turn 1)")  # no history, but an answer
        self.redis.start()  # same port, empty (no persistence)
        self.assertTrue(wait_until(lambda: "reconnected to redis" in cg.log()), cg.log())
        self.assertEqual(chat(port, "kai", "after")[1]["answer"], "echo: after (turn 1)")
        self.assertEqual(chat(port, "kai", "again")[1]["answer"], "echo: again (turn 2)")
        self.assertEqual(cg.stop(), 0)
        log = cg.log()
        self.assertEqual(log.count("unavailable ("), 1)  # one line per outage
        self.assertIn("answering without it", log)

    def test_redis_absent_at_start_is_not_fatal(self):
        self.redis.stop()
        port = free_port()
        cg = Chatgate(redis_config(port, self.redis.port)).start()
        self.addCleanup(cg.__exit__, None, None, None)
        self.assertEqual(chat(port, "early", "hi")[0], 200)
        self.redis.start()
        self.assertTrue(wait_until(lambda: "connected to redis" in cg.log(), 8), cg.log())
        chat(port, "early", "a")
        self.assertEqual(chat(port, "early", "b")[1]["answer"], "echo: b (turn 2)")
        self.assertEqual(cg.stop(), 0)

    def test_two_instances_share_conversations_and_dedupe(self):
        port_a, a = self.chatgate()
        port_b, b = self.chatgate()
        self.assertEqual(chat(port_a, "zoe", "1")[1]["answer"], "echo: 1 (turn 1)")
        self.assertEqual(chat(port_b, "zoe", "2")[1]["answer"], "echo: 2 (turn 2)")
        self.assertEqual(chat(port_a, "zoe", "3")[1]["answer"], "echo: 3 (turn 3)")
        # A platform retry that lands on the other instance is not answered twice.
        self.assertEqual(chat(port_a, "zoe", "pay", messageId="msg-42")[0], 200)
        status, body, _ = chat(port_b, "zoe", "pay", messageId="msg-42")
        self.assertEqual(status, 409)
        self.assertEqual(a.stop(), 0)
        self.assertEqual(b.stop(), 0)


class SilentRedisTest(unittest.TestCase):
    def test_a_redis_that_never_answers_times_out_and_the_chat_goes_on(self):
        # Accepts connections, reads, never answers: a hung Redis.
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        self.addCleanup(listener.close)
        held = []

        def accept_forever():
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                held.append(conn)

        threading.Thread(target=accept_forever, daemon=True).start()
        port = free_port()
        cg = Chatgate(redis_config(port, listener.getsockname()[1],
                                   "        commandTimeoutMs: 300")).start()
        self.addCleanup(cg.__exit__, None, None, None)
        self.assertTrue(wait_until(lambda: "connected to redis" in cg.log()), cg.log())
        started = time.monotonic()
        status, body, _ = chat(port, "hung", "hello")
        self.assertEqual(status, 200)
        self.assertEqual(body["answer"], "echo: hello (turn 1)")
        self.assertLess(time.monotonic() - started, 5)
        # The connection is remade (the silent server accepts it again).
        self.assertTrue(wait_until(lambda: "reconnected to redis" in cg.log()), cg.log())
        self.assertEqual(cg.stop(), 0)
        self.assertIn("did not answer within 300 ms; reconnecting", cg.log())
        for c in held:
            c.close()


class RedisAuthTest(unittest.TestCase):
    def test_password_and_a_refused_one(self):
        redis = RedisServer(password="s3cret-redis-pw").start()
        self.addCleanup(redis.close)
        port = free_port()
        good = Chatgate(redis_config(port, redis.port,
                                     "        password: s3cret-redis-pw")).start()
        self.addCleanup(good.__exit__, None, None, None)
        self.assertTrue(wait_until(lambda: "connected to redis" in good.log()), good.log())
        chat(port, "pw", "a")
        self.assertEqual(chat(port, "pw", "b")[1]["answer"], "echo: b (turn 2)")

        bad_port = free_port()
        bad = Chatgate(redis_config(bad_port, redis.port, "        password: wrong")).start()
        self.addCleanup(bad.__exit__, None, None, None)
        self.assertTrue(wait_until(lambda: "refused the handshake" in bad.log()), bad.log())
        self.assertEqual(chat(bad_port, "pw2", "still answers")[0], 200)
        self.assertEqual(good.stop(), 0)
        self.assertEqual(bad.stop(), 0)
        for log in (good.log(), bad.log()):
            self.assertNotIn("s3cret-redis-pw", log)
            self.assertNotIn("password: wrong", log)


if __name__ == "__main__":
    unittest.main()
