"""Slow and hostile clients against the real binary: slowloris heads, a
client that sends requests and never reads the answers, request smuggling
attempts, and 10,000 idle connections, with normal requests answered
meanwhile (the loop never blocks on any of them). These tests check order
and outcome; how fast the answers come is bench/'s business."""
import re
import resource
import select
import socket
import time
import unittest

from harness import DEADLINE, Chatgate, get, make_config, read_until_closed, wait_for


def simple_get(port, path="/healthz"):
    """The status of one request on a new connection (0 if no status line)."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
        data = read_until_closed(s)
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def gauge(admin, name):
    """The api listener's `name` gauge; a missing series fails the test."""
    _, text, _ = get(admin, "/metrics")
    m = re.search(r'^%s\{listener="api"\} (\S+)$' % name, text, re.M)
    if m is None:
        raise AssertionError("no %s{listener=\"api\"} series in /metrics:\n%s" % (name, text))
    return float(m.group(1))


def connections(admin):
    return gauge(admin, "chatgate_http_connections")


class HostileClientTest(unittest.TestCase):
    def start(self, api_extra):
        cg = Chatgate(make_config(api_extra=api_extra))
        cg.start()
        self.addCleanup(cg.__exit__, None, None, None)
        self.port, self.admin = cg.port, cg.admin_port
        return cg

    def test_slowloris_heads_time_out_while_others_are_served(self):
        self.start("    headerTimeoutMs: 3000\n")
        slow = []
        try:
            for _ in range(200):
                s = socket.create_connection(("127.0.0.1", self.port))
                s.sendall(b"GET /healthz HTTP/1.1\r\n")
                slow.append(s)
            # One header byte each, never the blank line; between the drips
            # normal requests are answered.
            for _ in range(5):
                for s in slow:
                    try:
                        s.send(b"X")
                    except OSError as e:
                        self.fail("a slow head was closed (%r) before the normal requests were "
                                  "all answered" % e)
                self.assertEqual(simple_get(self.port), 200)
            # Order: those answers came while every slow head still waited
            # (none has been answered or closed yet; the head timeout is ten
            # times what the rounds above take).
            poller = select.poll()
            for s in slow:
                poller.register(s, select.POLLIN)
            self.assertEqual(poller.poll(0), [],
                             "a slow client was answered before the normal requests were")
            # Past the head timeout every slow client got 408 and was closed.
            for s in slow:
                data = read_until_closed(s)
                self.assertTrue(data.startswith(b"HTTP/1.1 408 "), data[:60])
        finally:
            for s in slow:
                s.close()
        wait_for(lambda: connections(self.admin) == 0, "the api listener's connections to reach 0")

    def test_a_client_that_never_reads_is_paused_then_dropped(self):
        cg = self.start("    sendTimeoutMs: 1000\n    maxBufferedBytes: 65536\n")
        s = socket.socket()
        self.addCleanup(s.close)
        # A small receive window so the server's writes stall soon.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", self.port))
        s.setblocking(False)
        req = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 1000
        # Send until the server stops taking bytes (back-pressure): it stops
        # reading once its answers pile up, so the kernel buffers fill.
        deadline = time.monotonic() + DEADLINE
        while True:
            self.assertLess(time.monotonic(), deadline,
                            "the server still reads from a client that never reads")
            try:
                s.send(req)
            except BlockingIOError:
                break
        # Meanwhile another client is served.
        self.assertEqual(simple_get(self.port), 200)
        # No write progress for sendTimeoutMs: the connection is closed.
        cg.wait_log("read no answer bytes for 1000 ms; closed")
        wait_for(lambda: connections(self.admin) == 0, "the api listener's connections to reach 0")
        s.setblocking(True)
        read_until_closed(s)

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
                # A request smuggled behind the first rides on the same bytes.
                with socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE) as s:
                    s.sendall(raw + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                    out = read_until_closed(s)
                self.assertTrue(out.startswith(b"HTTP/1.1 400 "), out[:80])
                # Exactly one answer, then the close: nothing behind it was served.
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
            wait_for(lambda: connections(self.admin) >= 10000, "10,000 open connections")
            # Normal requests are answered with all of them open...
            for _ in range(20):
                self.assertEqual(simple_get(self.port), 200)
            # ...and they are all still there (none was dropped to make room).
            self.assertGreaterEqual(connections(self.admin), 10000)
        finally:
            for s in idle:
                s.close()
        wait_for(lambda: connections(self.admin) == 0, "the api listener's connections to reach 0")


if __name__ == "__main__":
    unittest.main()
