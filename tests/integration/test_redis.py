"""redis.so end to end: a real redis-server on a unix socket in a temporary
directory (no TCP port), started, killed and restarted on the same path by
the test; the real chatgate (one or two processes, on port 0) with the echo
backend and the Redis cache."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
import unittest

from harness import DEADLINE, Chatgate, chat, gateway_config, wait_for

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"


class RespError(Exception):
    pass


def read_reply(sock, deadline):
    """One RESP reply from `sock` as Python values (bytes, int, list, None;
    an error reply as a RespError value); fails at `deadline`."""
    buf = bytearray()

    def fill():
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("redis-server did not answer in time (got %r)" % bytes(buf))
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("redis-server closed the connection (got %r)" % bytes(buf))
        buf.extend(chunk)

    def line():
        while b"\r\n" not in buf:
            fill()
        i = buf.index(b"\r\n")
        out = bytes(buf[:i])
        del buf[:i + 2]
        return out

    def value():
        head = line()
        kind, rest = head[:1], head[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(buf) < n + 2:
                fill()
            out = bytes(buf[:n])
            del buf[:n + 2]
            return out
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [value() for _ in range(n)]
        raise AssertionError("not a RESP reply: %r" % head)

    return value()


class RedisServer:
    """redis-server listening only on a unix socket in a temporary directory.
    stop() then start() brings it back on the same path, empty."""

    def __init__(self, password=None):
        self.password = password
        self.proc = None
        self.dir = tempfile.TemporaryDirectory(prefix="cg-redis-")
        self.socket = os.path.join(self.dir.name, "redis.sock")

    def start(self):
        args = [REDIS, "--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700",
                "--save", "", "--appendonly", "no", "--dir", self.dir.name]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def answers():
            if self.proc.poll() is not None:
                raise AssertionError("redis-server exited with %s" % self.proc.returncode)
            try:
                return self.command("PING") == b"PONG"
            except OSError:
                return False

        wait_for(answers, "redis-server to answer on " + self.socket)
        return self

    def command(self, *words, timeout=5):
        """One command over RESP, answered as Python values (independent of
        chatgate)."""
        deadline = time.monotonic() + timeout
        s = socket.socket(socket.AF_UNIX)
        try:
            s.settimeout(timeout)
            s.connect(self.socket)
            if self.password:
                s.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(self.password),
                                                                self.password.encode()))
                auth = read_reply(s, deadline)
                if auth != b"OK":
                    raise AssertionError("AUTH: %r" % auth)
            s.sendall(b"*%d\r\n" % len(words) +
                      b"".join(b"$%d\r\n%s\r\n" % (len(w), w.encode()) for w in words))
            return read_reply(s, deadline)
        finally:
            s.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        self.stop()
        self.dir.cleanup()


def redis_config(unix_socket, extra="", router_extra=""):
    instances = textwrap.dedent("""\
            - name: echo
              plugin: echo.so
            - name: shared
              plugin: redis.so
              config:
                unixSocket: {path}
        {extra}
        """).format(path=unix_socket, extra=extra)
    return gateway_config(0, instances, "echo", "shared", router_extra=router_extra)


class RedisCacheTest(unittest.TestCase):
    def setUp(self):
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.close)

    def chatgate(self, extra="", router_extra=""):
        cg = Chatgate(redis_config(self.redis.socket, extra, router_extra)).start()
        self.addCleanup(cg.__exit__, None, None, None)
        cg.wait_log("connected to redis")
        return cg.port, cg

    def test_context_lives_in_redis_under_the_prefix(self):
        port, cg = self.chatgate()
        self.assertEqual(chat(port, "ria", "one")[1]["answer"], "echo: one (turn 1)")
        self.assertEqual(chat(port, "ria", "two")[1]["answer"], "echo: two (turn 2)")
        self.assertEqual(self.redis.command("KEYS", "*"), [b"chatgate:c:api:ria"])
        ttl = self.redis.command("PTTL", "chatgate:c:api:ria")
        self.assertGreater(ttl, 86000 * 1000)  # contextTtlSeconds: 86400
        self.assertLessEqual(ttl, 86400 * 1000)
        self.assertEqual(cg.stop(), 0)

    def test_dedupe_ttl_is_router_dedupe_ttl_seconds(self):
        # router.dedupeTtlSeconds: how long a platform message id (the chat
        # API's messageId) is remembered; live on reload.
        port, cg = self.chatgate(router_extra="  dedupeTtlSeconds: 1\n")
        key = "chatgate:d:api:ttl-1"
        self.assertEqual(chat(port, "dd", "pay", messageId="ttl-1")[0], 200)
        ttl = self.redis.command("PTTL", key)
        self.assertTrue(0 < ttl <= 1000, ttl)
        status, body, _ = chat(port, "dd", "pay", messageId="ttl-1")
        self.assertEqual(status, 409, body)
        # Once it expired, the same id is a new message.
        wait_for(lambda: self.redis.command("EXISTS", key) == 0, "the dedupe key to expire")
        status, body, _ = chat(port, "dd", "pay", messageId="ttl-1")
        self.assertEqual((status, body["answer"]), (200, "echo: pay (turn 2)"))
        cg.rewrite_config("  dedupeTtlSeconds: 1\n", "  dedupeTtlSeconds: 600\n")
        cg.proc.send_signal(signal.SIGHUP)
        cg.wait_log("applied router.dedupeTtlSeconds")
        self.assertEqual(chat(port, "dd", "next", messageId="ttl-2")[0], 200)
        ttl = self.redis.command("PTTL", "chatgate:d:api:ttl-2")
        self.assertTrue(590 * 1000 < ttl <= 600 * 1000, ttl)

    def test_redis_going_away_degrades_and_recovers(self):
        port, cg = self.chatgate()
        self.assertEqual(chat(port, "kai", "before")[1]["answer"], "echo: before (turn 1)")
        self.redis.stop()
        status, body, _ = chat(port, "kai", "during")
        self.assertEqual(status, 200)
        self.assertEqual(body["answer"], "echo: during (turn 1)")  # no history, but an answer
        self.redis.start()  # the same socket path, empty (no persistence)
        cg.wait_log("reconnected to redis")
        self.assertEqual(chat(port, "kai", "after")[1]["answer"], "echo: after (turn 1)")
        self.assertEqual(chat(port, "kai", "again")[1]["answer"], "echo: again (turn 2)")
        self.assertEqual(cg.stop(), 0)
        log = cg.log()
        self.assertEqual(log.count("unavailable ("), 1)  # one line per outage
        self.assertIn("answering without it", log)

    def test_redis_absent_at_start_is_not_fatal(self):
        self.redis.stop()
        cg = Chatgate(redis_config(self.redis.socket)).start()
        self.addCleanup(cg.__exit__, None, None, None)
        self.assertEqual(chat(cg.port, "early", "hi")[0], 200)
        self.assertNotIn("connected to redis", cg.log())
        self.redis.start()
        cg.wait_log("connected to redis")
        chat(cg.port, "early", "a")
        self.assertEqual(chat(cg.port, "early", "b")[1]["answer"], "echo: b (turn 2)")
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


class SilentRedis:
    """A unix socket that accepts connections and reads, never answering: a
    hung Redis. Accepts until closed; the accepting thread polls with a
    timeout, so it ends when the test does."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="cg-silent-")
        self.socket = os.path.join(self.dir.name, "silent.sock")
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(self.socket)
        self.listener.listen(16)
        self.listener.settimeout(0.1)
        self.held = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.accept, daemon=True)
        self.thread.start()

    def accept(self):
        while not self.done.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.held.append(conn)

    def close(self):
        self.done.set()
        self.thread.join(DEADLINE)
        self.listener.close()
        for c in self.held:
            c.close()
        self.dir.cleanup()


class SilentRedisTest(unittest.TestCase):
    def test_a_redis_that_never_answers_times_out_and_the_chat_goes_on(self):
        silent = SilentRedis()
        self.addCleanup(silent.close)
        cg = Chatgate(redis_config(silent.socket, "        commandTimeoutMs: 300")).start()
        self.addCleanup(cg.__exit__, None, None, None)
        cg.wait_log("connected to redis")
        status, body, _ = chat(cg.port, "hung", "hello")
        self.assertEqual(status, 200)
        self.assertEqual(body["answer"], "echo: hello (turn 1)")
        # The command timed out (it did not wait forever), and the
        # connection is remade (the silent server accepts it again).
        cg.wait_log("did not answer within 300 ms; reconnecting")
        cg.wait_log("reconnected to redis")
        wait_for(lambda: len(silent.held) >= 2, "a second connection")
        self.assertEqual(cg.stop(), 0)


class RedisAuthTest(unittest.TestCase):
    def test_password_and_a_refused_one(self):
        redis = RedisServer(password="s3cret-redis-pw").start()
        self.addCleanup(redis.close)
        good = Chatgate(redis_config(redis.socket, "        password: s3cret-redis-pw")).start()
        self.addCleanup(good.__exit__, None, None, None)
        good.wait_log("connected to redis")
        chat(good.port, "pw", "a")
        self.assertEqual(chat(good.port, "pw", "b")[1]["answer"], "echo: b (turn 2)")
        self.assertEqual(redis.command("EXISTS", "chatgate:c:api:pw"), 1)

        bad = Chatgate(redis_config(redis.socket, "        password: wrong")).start()
        self.addCleanup(bad.__exit__, None, None, None)
        bad.wait_log("refused the handshake")
        self.assertEqual(chat(bad.port, "pw2", "still answers")[0], 200)
        self.assertEqual(chat(bad.port, "pw2", "no history")[1]["answer"],
                         "echo: no history (turn 1)")
        self.assertEqual(redis.command("EXISTS", "chatgate:c:api:pw2"), 0)
        self.assertEqual(good.stop(), 0)
        self.assertEqual(bad.stop(), 0)
        for log in (good.log(), bad.log()):
            self.assertNotIn("s3cret-redis-pw", log)
            self.assertNotIn("password: wrong", log)


if __name__ == "__main__":
    unittest.main()
