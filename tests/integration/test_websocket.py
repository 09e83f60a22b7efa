"""The host's WebSocket client (ABI 1.2), through the real binary: the
wsprobe fixture plugin puts ws_connect/ws_send/ws_ping/ws_close behind HTTP
routes, and tests/fakes/fake_ws.py (Debian's python3-websockets, no
chatgate code) is the server, over TLS with a certificate made here and
over plain ws://. A few cases need a server that breaks the protocol on
purpose; those are small raw-socket servers in this file."""
import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
import unittest

from harness import (DEADLINE, FIXTURE_DIR, SOURCE_DIR, Chatgate, ClosedPort, FakeProcess, get,
                     make_cert, make_config, post_json)

FAKE = os.path.join(SOURCE_DIR, "tests", "fakes", "fake_ws.py")
OPEN, MESSAGE, CLOSED = 1, 2, 3
TEXT, BINARY = 1, 2
# CG_E* codes from sdk/include/chatgate/common.h.
EIO, ETIMEDOUT, ECANCELED, EPROTO, ETOOBIG, ENOENT, EINVAL = -8, -6, -7, -10, -14, -3, -1


class FakeWs(FakeProcess):
    def __init__(self, args=()):
        super().__init__([sys.executable, FAKE] + list(args))


def probe_instances(probes):
    """YAML for wsprobe instances: {name: {"url": ..., other config}}."""
    out = ""
    for name, cfg in probes.items():
        out += "    - name: %s\n      plugin: %s/wsprobe.so\n      config:\n" % (name, FIXTURE_DIR)
        for k, v in cfg.items():
            out += "        %s: %s\n" % (k, json.dumps(v))
    return out


class Probe:
    """One wsprobe instance of a running gateway."""

    def __init__(self, gw, name):
        self.gw, self.name = gw, name

    def call(self, verb, body=b""):
        status, text, _ = post_json(self.gw.port, "/wsprobe/%s/%s" % (self.name, verb), body)
        assert status == 200, (status, text)
        return int(text)

    def events(self):
        status, text, _ = get(self.gw.port, "/wsprobe/%s/events" % self.name)
        assert status == 200
        return [json.loads(line) for line in text.splitlines()]

    def last(self):
        conn = __import__("http.client").client.HTTPConnection("127.0.0.1", self.gw.port, timeout=DEADLINE)
        conn.request("GET", "/wsprobe/%s/last" % self.name)
        data = conn.getresponse().read()
        conn.close()
        return data

    def wait(self, pred, timeout=DEADLINE):
        deadline = time.time() + timeout
        while time.time() < deadline:
            evs = self.events()
            if pred(evs):
                return evs
            time.sleep(0.02)
        raise AssertionError("condition not met; events: %s\nlog:\n%s" % (self.events(), self.gw.log()))

    def wait_type(self, type_, count=1, timeout=DEADLINE):
        return self.wait(lambda evs: sum(e["type"] == type_ for e in evs) >= count, timeout)

    def closed(self, timeout=DEADLINE):
        return [e for e in self.wait_type(CLOSED, timeout=timeout) if e["type"] == CLOSED][-1]


class TlsWebSocketTest(unittest.TestCase):
    """wss:// against the python3-websockets server with a test-made CA file."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory(prefix="chatgate-ws-")
        cls.cert, key = make_cert(cls.dir.name, "localhost", "DNS:localhost")
        cls.fake = FakeWs(["--tls", cls.cert, key])

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()
        cls.dir.cleanup()

    def gateway(self, probes, ca=True, env=None):
        config = make_config(extra_instances=probe_instances(probes))
        if ca:
            config = "httpClient:\n  caFile: %s\n" % self.cert + config
        return Chatgate(config, env=env)

    def url(self, path, host="localhost"):
        return "wss://%s:%d%s" % (host, self.fake.port, path)

    def test_echo_text_and_binary_over_tls(self):
        with self.gateway({"p": {"url": self.url("/echo")}}) as gw:
            p = Probe(gw, "p")
            self.assertEqual(p.call("connect"), 0)
            p.wait_type(OPEN)
            self.assertEqual(p.call("text", "héllo wörld".encode()), 0)
            evs = p.wait_type(MESSAGE)
            self.assertEqual([e["opcode"] for e in evs if e["type"] == MESSAGE], [TEXT])
            self.assertEqual(p.last(), "héllo wörld".encode())
            self.assertEqual(p.call("binary", b"\x00\x01\xff"), 0)
            evs = p.wait_type(MESSAGE, 2)
            self.assertEqual([e["opcode"] for e in evs if e["type"] == MESSAGE], [TEXT, BINARY])
            self.assertEqual(p.last(), b"\x00\x01\xff")
            # A clean close we begin: the server echoes the code.
            self.assertEqual(p.call("close", b"1000 done"), 0)
            c = p.closed()
            self.assertEqual((c["result"], c["code"]), (0, 1000), c)
            # The id is gone once CLOSED came.
            self.assertEqual(p.call("text", b"late"), ENOENT)

    def test_host_name_is_verified(self):
        # The certificate names only localhost (every other test connects
        # to that name), so the same server by its address must fail.
        with self.gateway({"p": {"url": self.url("/echo", "127.0.0.1")}}) as gw:
            p = Probe(gw, "p")
            p.call("connect")
            c = p.closed()
            self.assertEqual(c["result"], EIO, c)
            self.assertIn("certificate verify failed", c["reason"])
            self.assertNotIn(OPEN, [e["type"] for e in p.events()])

    def test_untrusted_certificate_is_refused(self):
        with self.gateway({"p": {"url": self.url("/echo")}}, ca=False) as gw:
            p = Probe(gw, "p")
            p.call("connect")
            c = p.closed()
            self.assertEqual(c["result"], EIO, c)
            self.assertIn("certificate verify failed", c["reason"])

    def test_fragmented_message_is_joined(self):
        with self.gateway({"p": {"url": self.url("/fragmented")}}) as gw:
            p = Probe(gw, "p")
            p.call("connect")
            evs = p.wait_type(MESSAGE)
            msgs = [e for e in evs if e["type"] == MESSAGE]
            self.assertEqual((msgs[0]["opcode"], msgs[0]["len"]), (TEXT, len("alpha-beta-gamma")))
            self.assertEqual(p.last(), b"alpha-beta-gamma")

    def test_one_mebibyte_each_way(self):
        with self.gateway({"p": {"url": self.url("/big")}}) as gw:
            p = Probe(gw, "p")
            p.call("connect")
            p.wait_type(MESSAGE)
            expected = bytes(i % 251 for i in range(1 << 20))
            self.assertEqual(p.last(), expected)
            # And a 1 MiB message out, which the server echoes.
            mine = bytes((i * 7) % 256 for i in range(1 << 20))
            self.assertEqual(p.call("binary", mine), 0)
            p.wait_type(MESSAGE, 2)
            self.assertEqual(p.last(), mine)

    def test_message_over_the_limit_closes_with_1009(self):
        with self.gateway({"p": {"url": self.url("/big"), "maxMessageBytes": 65536}}) as gw:
            p = Probe(gw, "p")
            p.call("connect")
            c = p.closed()
            self.assertEqual((c["result"], c["code"]), (ETOOBIG, 1009), c)
            self.assertNotIn(MESSAGE, [e["type"] for e in p.events()])

    def test_server_ping_is_answered(self):
        with self.gateway({"p": {"url": self.url("/ping")}}) as gw:
            p = Probe(gw, "p")
            p.call("connect")
            p.wait_type(MESSAGE)
            self.assertEqual(p.last(), b"pong received")

    def test_server_close_code_and_reason_reach_the_plugin(self):
        with self.gateway({"p": {"url": self.url("/close")}}) as gw:
            p = Probe(gw, "p")
            p.call("connect")
            c = p.closed()
            self.assertEqual((c["result"], c["code"], c["reason"]), (0, 4001, "bye now"), c)
            types = [e["type"] for e in p.events()]
            self.assertEqual(types, [OPEN, CLOSED])
            # Reconnecting after a close is a fresh connection with a new id.
            p.call("connect")
            evs = p.wait_type(CLOSED, 2)
            self.assertEqual([e["type"] for e in evs], [OPEN, CLOSED, OPEN, CLOSED])
            self.assertNotEqual(evs[0]["id"], evs[2]["id"])

    def test_server_vanishing_mid_frame(self):
        with self.gateway({"p": {"url": self.url("/vanish")}}) as gw:
            p = Probe(gw, "p")
            p.call("connect")
            c = p.closed()
            self.assertEqual((c["result"], c["code"]), (EIO, 1006), c)
            self.assertIn("mid-frame", c["reason"])
            # The gateway goes on: a new connection works.
            self.assertEqual(get(gw.port, "/healthz")[0], 200)

    def test_silent_server_is_dropped_by_client_pings(self):
        with self.gateway({"p": {"url": self.url("/silent"), "pingIntervalMs": 200}}) as gw:
            p = Probe(gw, "p")
            p.call("connect")
            p.wait_type(OPEN)
            t0 = time.monotonic()
            c = p.closed()
            self.assertEqual((c["result"], c["code"]), (ETIMEDOUT, 1006), c)
            # Dropped after two ping intervals without a frame: not before,
            # and well within five times that (a loaded machine).
            silent = int(re.search(r"no frame from the server for (\d+) ms", c["reason"]).group(1))
            self.assertGreaterEqual(silent, 400, c)
            self.assertLess(time.monotonic() - t0, 5 * 0.4 + 1, c)

    def test_refused_upgrade_reports_the_status(self):
        with self.gateway({"p": {"url": self.url("/reject")}}) as gw:
            p = Probe(gw, "p")
            p.call("connect")
            c = p.closed()
            self.assertEqual((c["result"], c["http"]), (EPROTO, 403), c)
            self.assertIn("HTTP 403", c["reason"])

    def test_extra_header_reaches_the_server(self):
        with self.gateway({"p": {"url": self.url("/headers"), "header": "X-Probe: it-works"}}) as gw:
            p = Probe(gw, "p")
            p.call("connect")
            p.wait_type(MESSAGE)
            self.assertEqual(p.last(), b"it-works")

    def test_https_proxy_tunnels_wss_and_no_proxy_bypasses_it(self):
        proxy = FakeProcess([sys.executable, os.path.join(SOURCE_DIR, "tests", "fakes",
                                                          "fake_proxy.py")])
        try:
            def tunnels():
                return int(get(proxy.port, "/tunnel-count")[1])
            env = {"https_proxy": "http://127.0.0.1:%d" % proxy.port, "no_proxy": ""}
            with self.gateway({"p": {"url": self.url("/echo")}}, env=env) as gw:
                p = Probe(gw, "p")
                p.call("connect")
                p.wait_type(OPEN)
                p.call("text", b"through the tunnel")
                p.wait_type(MESSAGE)
                self.assertEqual(p.last(), b"through the tunnel")
            self.assertEqual(tunnels(), 1)
            env["no_proxy"] = "example.org,localhost"
            with self.gateway({"p": {"url": self.url("/echo")}}, env=env) as gw:
                p = Probe(gw, "p")
                p.call("connect")
                p.wait_type(OPEN)
            self.assertEqual(tunnels(), 1)  # direct this time
        finally:
            proxy.close()

    def test_a_refusing_proxy_is_reported(self):
        def refuse(conn):
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            read_until_eof(conn)
        server, port = raw_server(refuse)
        try:
            env = {"https_proxy": "http://127.0.0.1:%d" % port, "no_proxy": ""}
            with self.gateway({"p": {"url": self.url("/echo")}}, env=env) as gw:
                p = Probe(gw, "p")
                p.call("connect")
                c = p.closed()
                self.assertEqual(c["result"], EIO, c)
                self.assertIn("proxy refused the tunnel: HTTP 407", c["reason"])
        finally:
            server.close()

    def test_shutdown_closes_open_connections(self):
        with self.gateway({"p": {"url": self.url("/echo")}}) as gw:
            p = Probe(gw, "p")
            p.call("connect")
            p.wait_type(OPEN)
            self.assertEqual(gw.stop(), 0, gw.log())
            self.assertNotIn("handles still open", gw.log())


class PlainWebSocketTest(unittest.TestCase):
    """ws:// and the failure paths that need a misbehaving raw server."""

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeWs()

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()

    def gateway(self, probes):
        return Chatgate(make_config(extra_instances=probe_instances(probes)))

    def test_plain_ws_echo_and_several_connections(self):
        url = "ws://127.0.0.1:%d/echo" % self.fake.port
        with self.gateway({"a": {"url": url}, "b": {"url": url}}) as gw:
            a, b = Probe(gw, "a"), Probe(gw, "b")
            for p in (a, b):
                self.assertEqual(p.call("connect"), 0)
                p.wait_type(OPEN)
            a.call("text", b"for a")
            b.call("text", b"for b")
            a.wait_type(MESSAGE)
            b.wait_type(MESSAGE)
            self.assertEqual((a.last(), b.last()), (b"for a", b"for b"))
            self.assertEqual(a.call("ping", b"x" * 126), EINVAL)
            self.assertEqual(a.call("ping", b"hi"), 0)
            self.assertEqual(a.call("close", b"999 bad code"), EINVAL)

    def test_connections_are_counted_in_metrics(self):
        url = "ws://127.0.0.1:%d/echo" % self.fake.port
        closed_port = ClosedPort()
        self.addCleanup(closed_port.close)
        refused = "ws://127.0.0.1:%d/" % closed_port.port
        with self.gateway({"a": {"url": url}, "b": {"url": refused}}) as gw:
            a, b = Probe(gw, "a"), Probe(gw, "b")
            self.assertEqual(a.call("connect"), 0)
            a.wait_type(OPEN)
            admin = gw.admin_port

            def metric(name, labels):
                text = get(admin, "/metrics")[1]
                m = re.search(r"^%s\{%s\} (\S+)$" % (name, re.escape(labels)), text, re.M)
                return float(m.group(1)) if m else None

            self.assertEqual(metric("chatgate_websocket_open", 'plugin_instance="a"'), 1)
            self.assertEqual(metric("chatgate_websocket_connects_total",
                                    'plugin_instance="a",result="open"'), 1)
            a.call("close", b"1000 bye")
            a.closed()
            b.call("connect")
            b.closed()
            self.assertEqual(metric("chatgate_websocket_open", 'plugin_instance="a"'), 0)
            self.assertEqual(metric("chatgate_websocket_disconnects_total",
                                    'plugin_instance="a"'), 1)
            self.assertEqual(metric("chatgate_websocket_connects_total",
                                    'plugin_instance="b",result="failed"'), 1)
            self.assertIsNone(metric("chatgate_websocket_connects_total",
                                     'plugin_instance="b",result="open"'))

    def test_connection_refused(self):
        with ClosedPort() as closed_port, \
                self.gateway({"p": {"url": "ws://127.0.0.1:%d/" % closed_port.port}}) as gw:
            p = Probe(gw, "p")
            p.call("connect")
            c = p.closed()
            self.assertEqual(c["result"], EIO, c)
            self.assertIn("connect: connection refused", c["reason"])

    def test_bad_url_is_refused_at_once(self):
        with self.gateway({"p": {"url": "http://127.0.0.1:1/"},
                           "q": {"url": "ws://user@127.0.0.1/"}}) as gw:
            self.assertEqual(Probe(gw, "p").call("connect"), EINVAL)
            self.assertEqual(Probe(gw, "q").call("connect"), EINVAL)

    def test_send_before_open_and_abandon(self):
        server, port = raw_server(read_until_eof)  # accepts, never answers
        try:
            with self.gateway({"p": {"url": "ws://127.0.0.1:%d/" % port}}) as gw:
                p = Probe(gw, "p")
                p.call("connect")
                self.assertEqual(p.call("text", b"too early"), -16)  # CG_EAGAIN
                self.assertEqual(p.call("close", b"1000 never mind"), 0)
                c = p.closed()
                self.assertEqual(c["result"], ECANCELED, c)
        finally:
            server.close()

    def closed_against_raw(self, answer, **probe_config):
        """Connects to a raw server that runs answer(conn) for each connection,
        and returns the connection's CLOSED event and the seconds from the
        connect call to it."""
        server, port = raw_server(answer)
        try:
            config = dict({"url": "ws://127.0.0.1:%d/" % port}, **probe_config)
            with self.gateway({"p": config}) as gw:
                p = Probe(gw, "p")
                t0 = time.monotonic()
                p.call("connect")
                c = p.closed()
                self.elapsed = time.monotonic() - t0
                return c
        finally:
            server.close()

    def test_connect_timeout(self):
        c = self.closed_against_raw(read_until_eof, connectTimeoutMs=300)
        self.assertEqual(c["result"], ETIMEDOUT, c)
        self.assertIn("waiting for the upgrade answer", c["reason"])
        # The server never answers: only the 300 ms limit ends the wait
        # (allowed five times that on a loaded machine).
        self.assertLess(self.elapsed, 1.5, c)

    def test_wrong_accept_key_is_refused(self):
        def answer(conn):
            read_head(conn)
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Accept: bm90IHRoZSBrZXk=\r\n\r\n")
            read_until_eof(conn)
        c = self.closed_against_raw(answer)
        self.assertEqual((c["result"], c["http"]), (EPROTO, 101), c)
        self.assertIn("Sec-WebSocket-Accept", c["reason"])

    def test_masked_server_frame_is_a_protocol_error(self):
        def answer(conn):
            key = read_head(conn)
            conn.sendall(upgrade_answer(key))
            conn.sendall(b"\x81\x82abcd" + bytes([ord("h") ^ ord("a"), ord("i") ^ ord("b")]))
            read_until_eof(conn)
        c = self.closed_against_raw(answer)
        self.assertEqual((c["result"], c["code"]), (EPROTO, 1002), c)
        self.assertIn("masked frame", c["reason"])


def read_until_eof(conn):
    """Holds a raw server's connection open, reading and dropping what
    comes, until the client (chatgate) closes it, or DEADLINE passes."""
    conn.settimeout(DEADLINE)
    try:
        while conn.recv(4096):
            pass
    except socket.timeout:
        pass


def read_head(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    for line in data.decode().split("\r\n"):
        if line.lower().startswith("sec-websocket-key:"):
            return line.split(":", 1)[1].strip()
    return ""


def upgrade_answer(key):
    import base64
    import hashlib
    accept = base64.b64encode(hashlib.sha1(
        (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Accept: %s\r\n\r\n" % accept).encode()


class RawServer:
    def __init__(self, handler):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.stopped = False
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.one, args=(conn,), daemon=True).start()

    def one(self, conn):
        try:
            self.handler(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stopped = True
        self.sock.close()


def raw_server(handler):
    s = RawServer(handler)
    return s, s.port


if __name__ == "__main__":
    unittest.main()
