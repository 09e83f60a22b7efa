"""HTTP behaviour of the API listener through the real binary: limits,
keep-alive, pipelining, chunked bodies, CORS (with Vary: Origin on the
answers that name an origin)."""
import json
import socket
import time
import unittest

from harness import Chatgate, make_config, raw_exchange

API_EXTRA = """\
    maxHeaderBytes: 2048
    maxBodyBytes: 4096
    headerTimeoutMs: 300
    cors:
      allowedOrigins: ["https://chat.example.com"]
"""


def status_of(response):
    return int(response.split(b" ", 2)[1])


def read_responses(sock, count, timeout=5):
    """Reads `count` complete HTTP responses (Content-Length bodies)."""
    sock.settimeout(timeout)
    buf = b""
    out = []
    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError("closed early after %r" % buf)
            buf += chunk
        head, rest = buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError("closed mid-body")
            rest += chunk
        out.append((head, rest[:length]))
        buf = rest[length:]
    return out


def chat_request(user, query, extra_headers=b""):
    body = json.dumps({"userId": user, "query": query}).encode()
    return (b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
            extra_headers + b"Content-Length: %d\r\n\r\n" % len(body) + body)


class HttpLimitsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cg = Chatgate(make_config(api_extra=API_EXTRA)).start()
        cls.port = cls.cg.port

    @classmethod
    def tearDownClass(cls):
        cls.cg.__exit__(None, None, None)

    def test_oversized_body_is_413(self):
        body = json.dumps({"userId": "u", "query": "x" * 5000}).encode()
        resp = raw_exchange(self.port, b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                            % len(body) + body)
        self.assertEqual(status_of(resp), 413)

    def test_oversized_headers_are_431(self):
        resp = raw_exchange(self.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n")
        self.assertEqual(status_of(resp), 431)

    def test_malformed_request_is_400(self):
        resp = raw_exchange(self.port, b"THIS IS NOT HTTP\r\n\r\n")
        self.assertEqual(status_of(resp), 400)

    def test_slow_headers_get_408(self):
        resp = raw_exchange(self.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", timeout=3)
        self.assertEqual(status_of(resp), 408)

    def test_keep_alive_and_pipelining_answer_in_order(self):
        s = socket.create_connection(("127.0.0.1", self.port))
        try:
            s.sendall(chat_request("pipe", "first") + chat_request("pipe2", "second") +
                      b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            responses = read_responses(s, 3)
            self.assertEqual(json.loads(responses[0][1])["answer"], "echo: first (turn 1)")
            self.assertEqual(json.loads(responses[1][1])["answer"], "echo: second (turn 1)")
            self.assertEqual(json.loads(responses[2][1]), {"status": "ok"})
            # Same connection still usable.
            s.sendall(chat_request("pipe", "third"))
            (head, body), = read_responses(s, 1)
            self.assertEqual(json.loads(body)["answer"], "echo: third (turn 2)")
        finally:
            s.close()

    def test_chunked_request_body(self):
        body = json.dumps({"userId": "chunky", "query": "in pieces"}).encode()
        a, b = body[:10], body[10:]
        req = (b"POST /api/chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
               b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(a), a, len(b), b))
        s = socket.create_connection(("127.0.0.1", self.port))
        try:
            s.sendall(req)
            (head, resp_body), = read_responses(s, 1)
            self.assertEqual(json.loads(resp_body)["answer"], "echo: in pieces (turn 1)")
        finally:
            s.close()

    def test_cors_preflight_and_origin(self):
        resp = raw_exchange(self.port, b"OPTIONS /api/chat HTTP/1.1\r\nHost: x\r\n"
                            b"Origin: https://chat.example.com\r\n"
                            b"Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n")
        self.assertEqual(status_of(resp), 204)
        head = resp.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        self.assertIn(b"Access-Control-Allow-Origin: https://chat.example.com", head)
        self.assertIn(b"Vary: Origin", head)
        self.assertTrue(any(h.startswith(b"Access-Control-Allow-Methods: ") for h in head), head)
        s = socket.create_connection(("127.0.0.1", self.port))
        try:
            s.sendall(chat_request("cors", "hi", b"Origin: https://chat.example.com\r\n"))
            (head, _), = read_responses(s, 1)
            self.assertIn(b"Access-Control-Allow-Origin: https://chat.example.com", head.split(b"\r\n"))
            # The answer depends on the Origin header: a shared cache must
            # not hand it to another origin.
            self.assertIn(b"Vary: Origin", head.split(b"\r\n"))
            s.sendall(chat_request("cors", "hi", b"Origin: https://evil.example\r\n"))
            (head, _), = read_responses(s, 1)
            self.assertNotIn(b"Access-Control-Allow-Origin", head)
            # Refused origins get the same Vary: a cache that kept this answer
            # must not hand it to an allowed origin (Fetch standard, CORS
            # and HTTP caches).
            self.assertIn(b"Vary: Origin", head.split(b"\r\n"))
        finally:
            s.close()
        # An error answered once the head was read names the origin too.
        body = json.dumps({"userId": "u", "query": "x" * 5000}).encode()
        resp = raw_exchange(self.port, b"POST /api/chat HTTP/1.1\r\nHost: x\r\n"
                            b"Origin: https://chat.example.com\r\nContent-Length: %d\r\n\r\n"
                            % len(body) + body)
        self.assertEqual(status_of(resp), 413)
        head = resp.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        self.assertIn(b"Access-Control-Allow-Origin: https://chat.example.com", head)
        self.assertIn(b"Vary: Origin", head)

    def test_still_serving_after_bad_clients(self):
        for _ in range(3):
            raw_exchange(self.port, b"\x00\x01garbage\r\n\r\n")
        s = socket.create_connection(("127.0.0.1", self.port))
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            (head, body), = read_responses(s, 1)
            self.assertEqual(json.loads(body), {"status": "ok"})
        finally:
            s.close()


if __name__ == "__main__":
    unittest.main()
