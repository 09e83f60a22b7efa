"""Listener access policy through the real binary: source-address allow
lists per listener and per route (IPv4 and IPv6), X-Forwarded-For from
trusted proxies only, the per-address connection cap and request rate.
Clients pick their source address on 127.0.0.0/8 (every 127.x address is
this host's loopback), so one machine plays several clients."""
import http.client
import json
import re
import socket
import subprocess
import tempfile
import os
import unittest

from harness import BIN, DEADLINE, Chatgate, get, make_config, wait_for


def request(port, path="/healthz", source="127.0.0.1", method="GET", body=None, headers=None,
            host="127.0.0.1"):
    conn = http.client.HTTPConnection(host, port, timeout=DEADLINE, source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), dict(resp.getheaders())
    finally:
        conn.close()


def chat(port, source="127.0.0.1", headers=None):
    return request(port, "/api/chat", source, "POST",
                   json.dumps({"userId": "u-" + source, "query": "hi"}),
                   dict({"Content-Type": "application/json"}, **(headers or {})))


def refused(admin_port, reason, listener="api"):
    _, text, _ = get(admin_port, "/metrics")
    m = re.search(r'^chatgate_http_refused_total\{listener="%s",reason="%s"\} (\S+)$'
                  % (listener, reason), text, re.M)
    return float(m.group(1)) if m else 0.0


def config(access, address="127.0.0.1"):
    """The api listener on `address`, port 0, with the access keys `access`."""
    text = make_config(api_extra=access)
    return text.replace("    address: 127.0.0.1\n    port: 0", "    address: %s\n    port: 0" % address, 1)


class AccessTest(unittest.TestCase):
    def start(self, access, address="127.0.0.1"):
        cg = Chatgate(config(access, address))
        cg.start()
        self.addCleanup(cg.__exit__, None, None, None)
        self.port, self.admin = cg.port, cg.admin_port
        return cg

    def test_listener_allow_list_refuses_other_addresses_at_accept(self):
        self.start("    allowFrom: [127.0.0.2/32, 127.0.1.0/24]\n")
        self.assertEqual(request(self.port, source="127.0.0.2")[0], 200)
        self.assertEqual(request(self.port, source="127.0.1.77")[0], 200)
        status, body, headers = request(self.port, source="127.0.0.1")
        self.assertEqual((status, json.loads(body)), (403, {"error": "forbidden"}))
        self.assertEqual(headers.get("Connection"), "close")
        self.assertEqual(chat(self.port, source="127.0.0.3")[0], 403)
        self.assertEqual(refused(self.admin, "address"), 2)
        # The admin listener has its own (empty) list: it still answers.
        self.assertEqual(get(self.admin, "/healthz")[0], 200)

    def test_route_allow_list_guards_its_paths_only(self):
        self.start("    routes:\n"
                   "      - path: /api/chat\n"
                   "        allowFrom: [127.0.0.5]\n")
        self.assertEqual(request(self.port, "/healthz", source="127.0.0.1")[0], 200)
        self.assertEqual(chat(self.port, source="127.0.0.1")[0], 403)
        self.assertEqual(chat(self.port, source="127.0.0.5")[0], 200)
        # A rule covers its path and what is below it, not a longer name.
        self.assertEqual(request(self.port, "/api/chat/x", source="127.0.0.1",
                                 method="POST", body="{}")[0], 403)
        self.assertEqual(request(self.port, "/api/chatter", source="127.0.0.1")[0], 404)
        self.assertEqual(refused(self.admin, "address"), 2)

    def test_forwarded_for_is_believed_only_from_trusted_proxies(self):
        self.start("    allowFrom: [203.0.113.0/24]\n"
                   "    trustedProxies: [127.0.0.1/32, 127.0.0.9/32]\n")
        xff = lambda v, src="127.0.0.1": request(self.port, source=src,
                                                 headers={"X-Forwarded-For": v})[0]
        self.assertEqual(xff("203.0.113.7"), 200)
        self.assertEqual(xff("198.51.100.1"), 403)
        # What the client wrote itself sits left of what the proxy appended.
        self.assertEqual(xff("203.0.113.7, 198.51.100.1"), 403)
        self.assertEqual(xff("198.51.100.1, 203.0.113.7"), 200)
        # Two trusted hops: the entry before them is the client.
        self.assertEqual(xff("203.0.113.8, 127.0.0.9"), 200)
        self.assertEqual(xff("garbage"), 403)
        # No header: the proxy itself is the client, and it is not allowed.
        self.assertEqual(request(self.port, source="127.0.0.1")[0], 403)
        # An untrusted peer cannot claim an allowed address.
        self.assertEqual(xff("203.0.113.7", src="127.0.0.2"), 403)

    def test_forwarded_address_reaches_the_rate_limit_and_the_admin_lockout(self):
        # Behind a trusted proxy the per-address request rate counts the
        # forwarded clients apart.
        self.start("    trustedProxies: [127.0.0.1/32]\n"
                   "    requestRatePerIp: {perSecond: 0.01, burst: 1}\n")
        h = lambda ip: request(self.port, headers={"X-Forwarded-For": ip})[0]
        self.assertEqual(h("192.0.2.1"), 200)
        self.assertEqual(h("192.0.2.1"), 429)
        self.assertEqual(h("192.0.2.2"), 200)

    def test_ipv6_allow_list(self):
        self.start("    allowFrom: ['::1/128']\n", address="::1")
        self.assertEqual(request(self.port, source="::1", host="::1")[0], 200)

    def test_ipv6_address_outside_the_list_is_refused(self):
        self.start("    allowFrom: ['2001:db8::/32', 127.0.0.1]\n", address="::1")
        self.assertEqual(request(self.port, source="::1", host="::1")[0], 403)

    def test_connections_per_address_are_capped(self):
        self.start("    maxConnectionsPerIp: 3\n")
        held = []
        try:
            for _ in range(3):
                s = socket.create_connection(("127.0.0.1", self.port),
                                             source_address=("127.0.0.1", 0))
                held.append(s)
            status, _, _ = request(self.port, source="127.0.0.1")
            self.assertEqual(status, 503)
            # Another address has its own count.
            self.assertEqual(request(self.port, source="127.0.0.2")[0], 200)
            held.pop().close()
            wait_for(lambda: request(self.port, source="127.0.0.1")[0] == 200,
                     "a freed slot to admit 127.0.0.1 again")
        finally:
            for s in held:
                s.close()
        self.assertGreaterEqual(refused(self.admin, "connections_per_ip"), 1)

    def test_request_rate_per_address(self):
        self.start("    requestRatePerIp: {perSecond: 0.5, burst: 2}\n")
        self.assertEqual(chat(self.port)[0], 200)
        self.assertEqual(request(self.port)[0], 200)
        status, body, headers = request(self.port)
        self.assertEqual((status, json.loads(body)), (429, {"error": "too many requests"}))
        self.assertEqual(headers["Retry-After"], "2")
        self.assertEqual(request(self.port, source="127.0.0.2")[0], 200)
        self.assertEqual(refused(self.admin, "request_rate"), 1)


class AccessConfigTest(unittest.TestCase):
    def check(self, access):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(make_config(api_extra=access))
        try:
            p = subprocess.run([BIN, "--check-config", "--config", f.name], capture_output=True,
                               text=True, timeout=DEADLINE)
        finally:
            os.unlink(f.name)
        return p.returncode, p.stdout + p.stderr

    def test_bad_entries_are_named(self):
        for access, key, what in [
            ("    allowFrom: [10.0.0.1/8]\n", "listeners.api.allowFrom[0]", "host bits"),
            ("    allowFrom: [10.0.0.0/8, example.com]\n", "listeners.api.allowFrom[1]",
             "expected an IPv4 or IPv6 address or CIDR block"),
            ("    trustedProxies: ['::1/200']\n", "listeners.api.trustedProxies[0]", "0..128"),
            ("    routes: [{path: webhook, allowFrom: []}]\n", "listeners.api.routes[0].path",
             "starting with '/'"),
            ("    routes: [{path: /webhook/}]\n", "listeners.api.routes[0].allowFrom",
             "required key missing"),
            ("    routes: [{path: /x, allowFrom: [], deny: []}]\n", "listeners.api.routes[0].deny",
             "unknown key"),
            ("    requestRatePerIp: {perSecond: -1}\n", "listeners.api.requestRatePerIp.perSecond",
             "expected a number >= 0"),
            ("    maxConnectionsPerIp: -3\n", "listeners.api.maxConnectionsPerIp",
             "expected an integer"),
        ]:
            with self.subTest(key=key):
                rc, out = self.check(access)
                self.assertEqual(rc, 1, out)
                self.assertIn(key, out)
                self.assertIn(what, out)


if __name__ == "__main__":
    unittest.main()
