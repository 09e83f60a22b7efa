"""Slow and hostile clients against the real binary: slowloris heads, a
client that sends requests and never reads the answers, request smuggling
attempts, and 10,000 idle connections, with a normal request answered
within 100 ms meanwhile (the loop never blocks on any of them)."""
import re
import resource
import socket
import time
import unittest

from harness import Chatgate, free_port, get, make_config, raw_exchange, wait_until


def timed_get(port, path="/healthz"):
    """(status, seconds) of one request on a new connection."""
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, time.monotonic() - t0


def gauge(admin, name):
    _, text, _ = get(admin, "/metrics")
    m = re.search(r'^%s\{listener="api"\} (\S+)$' % name, text, re.M)
    return float(m.group(1)) if m else -1


class HostileClientTest(unittest.TestCase):
    def start(self, api_extra):
        self.port, self.admin = free_port(), free_port()
        text = make_config(self.port, api_extra=api_extra)
        text = re.sub(r"(  admin:\n    address: 127.0.0.1\n    port: )\d+",
                      r"\g<1>%d" % self.admin, text)
        cg = Chatgate(text)
        cg.start()
        self.addCleanup(cg.__exit__, None, None, None)
        return cg

    def test_slowloris_heads_time_out_while_others_are_served(self):
        self.start("    headerTimeoutMs: 1000\n")
        slow = []
        for i in range(200):
            s = socket.create_connection(("127.0.0.1", self.port))
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
            slow.append(s)
        try:
            worst = 0.0
            deadline = time.monotonic() + 0.8
            while time.monotonic() < deadline:
                for s in slow:  # one header byte each, never the blank line
                    try:
                        s.send(b"X")
                    except OSError:
                        pass
                status, secs = timed_get(self.port)
                self.assertEqual(status, 200)
                worst = max(worst, secs)
                time.sleep(0.05)
            self.assertLess(worst, 0.1)
            # Past the head timeout every slow client got 408 and was closed.
            for s in slow:
                s.settimeout(3)
                data = b""
                while True:
                    try:
                        chunk = s.recv(4096)
                    except (ConnectionResetError, socket.timeout):
                        break
                    if not chunk:
                        break
                    data += chunk
                self.assertTrue(data.startswith(b"HTTP/1.1 408 "), data[:60])
        finally:
            for s in slow:
                s.close()
        self.assertTrue(wait_until(lambda: gauge(self.admin, "chatgate_http_connections") <= 1))

    def test_a_client_that_never_reads_is_paused_then_dropped(self):
        self.start("    sendTimeoutMs: 1000\n    maxBufferedBytes: 65536\n")
        s = socket.socket()
        # A small receive window so the server's writes stall soon.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", self.port))
        s.setblocking(False)
        req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 1000
        sent = 0
        t_end = time.monotonic() + 2
        while time.monotonic() < t_end:
            try:
                sent += s.send(req)
            except BlockingIOError:
                time.sleep(0.01)  # the server stopped reading: back-pressure
            except OSError:
                break
        # The server does not read (or buffer) without end: what it took is
        # bounded by the kernel buffers and maxBufferedBytes, not by `sent`.
        try:
            while True:
                s.send(req)
        except BlockingIOError:
            pass
        except OSError:
            pass
        status, secs = timed_get(self.port)
        self.assertEqual(status, 200)
        self.assertLess(secs, 0.1)
        # No write progress for sendTimeoutMs: the connection is closed.
        self.assertTrue(wait_until(lambda: gauge(self.admin, "chatgate_http_connections") <= 0,
                                   timeout=6), gauge(self.admin, "chatgate_http_connections"))
        s.close()

    def test_smuggling_shapes_are_refused(self):
        self.start("")
        for raw in [
            # Content-Length with Transfer-Encoding (CL.TE / TE.CL).
            b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            # Two different Content-Lengths.
            b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
            # Transfer-Encoding that does not end in chunked.
            b"POST /api/chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc",
            # Obfuscated header name (space before the colon).
            b"POST /api/chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
            # A bare LF inside a chunk size line.
            b"POST /api/chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        ]:
            with self.subTest(raw=raw[:70]):
                out = raw_exchange(self.port, raw, timeout=3)
                self.assertTrue(out.startswith(b"HTTP/1.1 400 "), out[:80])
                # Exactly one answer: nothing smuggled behind it was served.
                self.assertEqual(out.count(b"HTTP/1.1 "), 1, out)

    def test_ten_thousand_idle_connections(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = 10000 + 200
        if hard != resource.RLIM_INFINITY and hard < need:
            self.fail("this test needs an open file limit of %d (hard limit here: %d)" % (need, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
        self.start("    maxConnections: 12000\n    headerTimeoutMs: 60000\n    idleTimeoutMs: 60000\n")
        idle = []
        try:
            # Spread over source addresses so no one address runs out of ports.
            for i in range(10000):
                s = socket.socket()
                s.bind(("127.0.%d.%d" % (1 + i // 250, 1 + i % 250), 0))
                s.connect(("127.0.0.1", self.port))
                idle.append(s)
            self.assertTrue(wait_until(
                lambda: gauge(self.admin, "chatgate_http_connections") >= 10000, timeout=20),
                gauge(self.admin, "chatgate_http_connections"))
            times = []
            for _ in range(20):
                status, secs = timed_get(self.port)
                self.assertEqual(status, 200)
                times.append(secs)
            times.sort()
            self.assertLess(times[-1], 0.1, times)
            # They are all still there (none was dropped to make room).
            self.assertGreaterEqual(gauge(self.admin, "chatgate_http_connections"), 10000)
        finally:
            for s in idle:
                s.close()
        self.assertTrue(wait_until(lambda: gauge(self.admin, "chatgate_http_connections") <= 1,
                                   timeout=20))


if __name__ == "__main__":
    unittest.main()
