"""TLS on the listeners through the real binary, with certificates the test
makes with the openssl command: HTTPS with TLS 1.2 and 1.3 (older versions
refused, and 1.2 too with minVersion "1.3"), ALPN, keep-alive and
pipelining over TLS, a large body, plain HTTP on a TLS port, the allow list
on a TLS listener, clear errors for missing, unreadable and mismatched
files, and certificate reloads (file change, debounced, and SIGHUP) while
traffic runs, without dropping open connections."""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

from harness import (BIN, DEADLINE, Chatgate, get, make_cert, make_config, read_until_closed,
                     wait_for)


def tls_config(cert, key, extra="", listener_extra=""):
    """A config whose api listener (port 0) serves TLS; `extra` goes into
    its tls block, `listener_extra` into the listener (YAML indented for
    their places)."""
    tls = "    tls:\n      certFile: %s\n      keyFile: %s\n%s%s" % (cert, key, extra, listener_extra)
    return make_config(api_extra=tls)


def client_context(cafile, **kw):
    ctx = ssl.create_default_context(cafile=cafile)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def tls_connect(port, ctx, source="127.0.0.1"):
    """A TLS socket to the listener, handshake done (with a timeout)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE,
                                   source_address=(source, 0))
    try:
        return ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    except BaseException:
        raw.close()
        raise


def peer_cert(port, cafile):
    """The DER certificate a new connection is served."""
    with tls_connect(port, client_context(cafile)) as s:
        return s.getpeercert(binary_form=True)


def der(cert_path):
    with open(cert_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def https(port, cafile, method="GET", path="/healthz", body=None, headers=None, source="127.0.0.1"):
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=DEADLINE,
                                       context=client_context(cafile),
                                       source_address=(source, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def metric(admin, name, **labels):
    _, text, _ = get(admin, "/metrics")
    want = ",".join('%s="%s"' % kv for kv in labels.items())
    m = re.search(r"^%s\{%s\} (\S+)$" % (re.escape(name), re.escape(want)), text, re.M)
    return float(m.group(1)) if m else None


def s_client(port, *args):
    """Runs `openssl s_client` against the listener (a client that is not
    Python's, and that can still offer TLS 1.1). Returns (exit code, output)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise AssertionError("this test needs the openssl command (Debian package openssl)")
    p = subprocess.run([openssl, "s_client", "-connect", "127.0.0.1:%d" % port, "-state"]
                       + list(args), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=DEADLINE)
    return p.returncode, p.stdout + p.stderr


class TlsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="chatgate-tls-")
        self.addCleanup(self.tmp.cleanup)
        self.certs = {}
        for name in ("a", "b"):
            d = os.path.join(self.tmp.name, name)
            os.mkdir(d)
            self.certs[name] = make_cert(d, "chatgate-test-" + name, "IP:127.0.0.1,DNS:localhost")
        # The files the server reads; a reload replaces them.
        self.cert = os.path.join(self.tmp.name, "server.pem")
        self.key = os.path.join(self.tmp.name, "server.key")
        self.install("a")
        # One bundle that trusts both, as a client would after a renewal.
        self.ca = os.path.join(self.tmp.name, "ca.pem")
        with open(self.ca, "w") as out:
            for name in ("a", "b"):
                with open(self.certs[name][0]) as f:
                    out.write(f.read())

    def install(self, name, which=(0, 1)):
        # As renewal tools do: write beside, then rename over.
        for i in which:
            src, dst = self.certs[name][i], (self.cert, self.key)[i]
            shutil.copy(src, dst + ".new")
            os.replace(dst + ".new", dst)

    def start(self, extra="", listener_extra=""):
        cg = Chatgate(tls_config(self.cert, self.key, extra, listener_extra))
        cg.start()
        self.addCleanup(cg.__exit__, None, None, None)
        self.port, self.admin = cg.port, cg.admin_port
        return cg

    def handshake_errors(self):
        return metric(self.admin, "chatgate_tls_handshake_errors_total", listener="api") or 0

    def test_https_chat_and_versions(self):
        cg = self.start()
        self.assertEqual(https(self.port, self.ca), (200, '{"status":"ok"}'))
        status, body = https(self.port, self.ca, "POST", "/api/chat",
                             json.dumps({"userId": "t", "query": "over tls"}),
                             {"Content-Type": "application/json"})
        self.assertEqual((status, json.loads(body)), (200, {"answer": "echo: over tls (turn 1)"}))
        for version, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
            ctx = client_context(self.ca, minimum_version=version, maximum_version=version)
            with tls_connect(self.port, ctx) as s:
                self.assertEqual(s.version(), name)
                if version == ssl.TLSVersion.TLSv1_2:
                    self.assertRegex(s.cipher()[0], "GCM|CHACHA20")
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                self.assertTrue(read_until_closed(s).startswith(b"HTTP/1.1 200 "))
        self.assertIn("listening on https://127.0.0.1:", cg.log())
        self.assertIn("api on https://127.0.0.1:", cg.log())
        secs = metric(self.admin, "chatgate_tls_certificate_expiry_seconds", listener="api")
        self.assertTrue(secs is not None and 0 < secs <= 86400 + 60, secs)
        self.assertEqual(self.handshake_errors(), 0)

    def test_tls_1_1_and_plain_http_are_refused_and_counted(self):
        # A cipher list that still has TLS 1.1 suites (and security level
        # 0), so that only the protocol version can refuse the client.
        cg = self.start('      ciphers: "DEFAULT:@SECLEVEL=0"\n')
        rc, out = s_client(self.port, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
        # The client did offer TLS 1.1 (it wrote its hello)...
        self.assertIn("SSL_connect:SSLv3/TLS write client hello", out)
        self.assertNotIn("no protocols available", out)
        # ...and the server refused it for its version, saying so with a
        # protocol_version alert rather than cutting the connection.
        self.assertNotEqual(rc, 0, out)
        self.assertIn("Cipher is (NONE)", out)
        self.assertIn("SSL3 alert read:fatal:protocol version", out)
        cg.wait_log("listener 'api': TLS: error:0A000102:SSL routines::unsupported protocol")
        self.assertEqual(self.handshake_errors(), 1)
        # Plain HTTP on the TLS port: the connection closes, nothing is served.
        with socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            data = read_until_closed(s)
        self.assertNotIn(b"HTTP/1.1", data)
        self.assertEqual(self.handshake_errors(), 2)
        # TLS 1.2 and 1.3 still work.
        for flag in ("-tls1_2", "-tls1_3"):
            rc, out = s_client(self.port, flag, "-CAfile", self.ca)
            self.assertEqual(rc, 0, out)
            self.assertIn("Verify return code: 0 (ok)", out)
        self.assertEqual(https(self.port, self.ca)[0], 200)

    def test_min_version_1_3_refuses_a_1_2_client(self):
        cg = self.start('      minVersion: "1.3"\n')
        only_12 = client_context(self.ca, minimum_version=ssl.TLSVersion.TLSv1_2,
                                 maximum_version=ssl.TLSVersion.TLSv1_2)
        with self.assertRaises(ssl.SSLError) as refused:
            tls_connect(self.port, only_12).close()
        self.assertIn("TLSV1_ALERT_PROTOCOL_VERSION", str(refused.exception))
        cg.wait_log("listener 'api': TLS: error:0A000102:SSL routines::unsupported protocol")
        self.assertEqual(self.handshake_errors(), 1)
        # The same client with 1.3 allowed gets 1.3 and an answer.
        ctx = client_context(self.ca, minimum_version=ssl.TLSVersion.TLSv1_2)
        with tls_connect(self.port, ctx) as s:
            self.assertEqual(s.version(), "TLSv1.3")
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            self.assertTrue(read_until_closed(s).startswith(b"HTTP/1.1 200 "))
        self.assertEqual(self.handshake_errors(), 1)

    def test_alpn_answers_http_1_1(self):
        self.start()
        for offered, expected in [(["h2", "http/1.1"], "http/1.1"),
                                  (["http/1.1"], "http/1.1"),
                                  # Never h2: a client offering only h2 gets
                                  # no ALPN answer (and may speak HTTP/1.1).
                                  (["h2"], None)]:
            with self.subTest(offered=offered):
                ctx = client_context(self.ca)
                ctx.set_alpn_protocols(offered)
                with tls_connect(self.port, ctx) as s:
                    self.assertEqual(s.selected_alpn_protocol(), expected)
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    self.assertTrue(read_until_closed(s).startswith(b"HTTP/1.1 200 "))

    def test_allow_list_on_a_tls_listener_closes_before_the_handshake(self):
        # The head timeout is long, so only the allow list can close the
        # refused connections within the test's deadline.
        cg = self.start(listener_extra="    allowFrom: [127.0.0.2/32]\n"
                                       "    headerTimeoutMs: 60000\n")
        self.assertEqual(https(self.port, self.ca, source="127.0.0.2"), (200, '{"status":"ok"}'))
        # A refused client that says nothing: closed without a byte (no 403,
        # which could not be sent before a handshake, and no handshake).
        with socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE,
                                      source_address=("127.0.0.1", 0)) as s:
            self.assertEqual(read_until_closed(s), b"")
        # One that tries a handshake fails it.
        with self.assertRaises(OSError):  # ssl.SSLError, or the connection cut
            tls_connect(self.port, client_context(self.ca), source="127.0.0.3").close()
        self.assertEqual(metric(self.admin, "chatgate_http_refused_total", listener="api",
                                reason="address"), 2)
        self.assertEqual(cg.wait_log("closed before the TLS handshake", count=2)
                         .count("closed before the TLS handshake"), 2)
        # The allowed address is still served.
        self.assertEqual(https(self.port, self.ca, source="127.0.0.2")[0], 200)

    def test_keep_alive_pipelining_and_a_large_body(self):
        self.start("      reloadCheckMs: 0\n")
        with tls_connect(self.port, client_context(self.ca)) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 40)
            data = b""
            deadline = time.monotonic() + DEADLINE
            while data.count(b"HTTP/1.1 200 ") < 40:
                self.assertLess(time.monotonic(), deadline, data[-200:])
                chunk = s.recv(65536)
                self.assertTrue(chunk, data[-200:])
                data += chunk
        big = "x" * 900000
        status, body = https(self.port, self.ca, "POST", "/api/chat",
                             json.dumps({"userId": "big", "query": big}),
                             {"Content-Type": "application/json"})
        self.assertEqual(status, 200)
        self.assertEqual(len(json.loads(body)["answer"]), len("echo:  (turn 1)") + len(big))

    def test_reload_on_file_change_keeps_open_connections(self):
        cg = self.start("      reloadCheckMs: 200\n")
        self.assertEqual(peer_cert(self.port, self.ca), der(self.certs["a"][0]))
        errors, done, count = [], threading.Event(), [0]
        kept = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=DEADLINE,
                                           context=client_context(self.ca))

        def traffic():
            while not done.is_set():
                try:
                    kept.request("GET", "/healthz")  # one keep-alive connection throughout
                    r = kept.getresponse()
                    r.read()
                    if r.status != 200:
                        errors.append(r.status)
                    count[0] += 1
                except Exception as e:  # noqa: BLE001 - any failure is the finding
                    errors.append(repr(e))
                    return

        t = threading.Thread(target=traffic)
        t.start()
        try:
            wait_for(lambda: count[0] >= 5 or errors, "traffic on the kept connection")
            self.install("b")
            cg.wait_log("TLS certificate reloaded")
            self.assertEqual(peer_cert(self.port, self.ca), der(self.certs["b"][0]))
            # The kept connection goes on after the reload, with the
            # certificate it began with.
            after = count[0]
            wait_for(lambda: count[0] >= after + 5 or errors, "traffic after the reload")
            self.assertEqual(kept.sock.getpeercert(binary_form=True), der(self.certs["a"][0]))
        finally:
            done.set()
            t.join(DEADLINE)
            kept.close()
        self.assertEqual(errors, [])
        self.assertEqual(metric(self.admin, "chatgate_tls_reloads_total", listener="api",
                                result="ok"), 1)

    def test_files_written_one_after_the_other_are_reloaded_once(self):
        # The files are polled every 20 ms; the reload waits until they have
        # been quiet for 500 ms (docs/security.md). A renewal that writes the
        # certificate and, 80 ms later, its key (the poll sees the
        # mismatched pair in between), then rewrites both twice, makes one
        # reload of the final pair. 500 ms is over five times the longest
        # quiet gap here.
        cg = self.start("      reloadCheckMs: 20\n")
        for name in ("b", "a", "b"):
            self.install(name, which=(0,))
            time.sleep(0.08)
            self.install(name, which=(1,))
            time.sleep(0.02)
        cg.wait_log("TLS certificate reloaded")
        self.assertEqual(peer_cert(self.port, self.ca), der(self.certs["b"][0]))
        log = cg.log()
        self.assertEqual(log.count("TLS certificate or key file changed; reloading"), 1, log)
        self.assertNotIn("TLS reload failed", log)
        self.assertEqual(metric(self.admin, "chatgate_tls_reloads_total", listener="api",
                                result="ok"), 1)
        self.assertIsNone(metric(self.admin, "chatgate_tls_reloads_total", listener="api",
                                 result="failed"))

    def test_sighup_reload_and_a_bad_renewal_keeps_the_old_certificate(self):
        cg = self.start("      reloadCheckMs: 0\n")
        # A mismatched pair (b's certificate, a's key): refused, a stays.
        shutil.copy(self.certs["b"][0], self.cert)
        cg.proc.send_signal(signal.SIGHUP)
        cg.wait_log("TLS reload failed")
        self.assertIn("does not match", cg.log())
        self.assertEqual(peer_cert(self.port, self.ca), der(self.certs["a"][0]))
        self.assertEqual(https(self.port, self.ca)[0], 200)
        # The matching key arrives; the next SIGHUP takes both.
        shutil.copy(self.certs["b"][1], self.key)
        cg.proc.send_signal(signal.SIGHUP)
        cg.wait_log("TLS certificate reloaded")
        self.assertEqual(peer_cert(self.port, self.ca), der(self.certs["b"][0]))
        self.assertEqual(metric(self.admin, "chatgate_tls_reloads_total", listener="api",
                                result="failed"), 1)
        self.assertEqual(metric(self.admin, "chatgate_tls_reloads_total", listener="api",
                                result="ok"), 1)

    def test_admin_listener_over_tls_sets_a_secure_session_cookie(self):
        text = make_config().replace(
            "  admin:\n    address: 127.0.0.1\n",
            "  admin:\n    address: 127.0.0.1\n    tls: {certFile: %s, keyFile: %s}\n"
            % (self.cert, self.key), 1)
        text = "admin:\n  token: tls-admin-token-123456\n" + text
        with Chatgate(text) as cg:
            self.assertIn("admin on https://127.0.0.1:%d" % cg.admin_port, cg.log())
            conn = http.client.HTTPSConnection("127.0.0.1", cg.admin_port, timeout=DEADLINE,
                                               context=client_context(self.ca))
            conn.request("POST", "/admin/api/login", json.dumps({"token": "tls-admin-token-123456"}),
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            self.assertEqual(resp.status, 200)
            self.assertIn("; Secure", resp.getheader("Set-Cookie"))
            conn.close()
            self.assertEqual(https(cg.admin_port, self.ca, path="/readyz")[0], 200)


class TlsConfigErrorTest(unittest.TestCase):
    def run_with(self, cert, key, extra="", check=False):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(tls_config(cert, key, extra))
        try:
            args = [BIN, "--config", f.name] + (["--check-config"] if check else [])
            p = subprocess.run(args, capture_output=True, text=True, timeout=DEADLINE)
        finally:
            os.unlink(f.name)
        return p.returncode, p.stdout + p.stderr

    def test_missing_unreadable_mismatched_and_garbage_files(self):
        with tempfile.TemporaryDirectory() as d:
            os.mkdir(os.path.join(d, "a"))
            os.mkdir(os.path.join(d, "b"))
            cert_a, key_a = make_cert(os.path.join(d, "a"), "a", "IP:127.0.0.1")
            cert_b, key_b = make_cert(os.path.join(d, "b"), "b", "IP:127.0.0.1")
            garbage = os.path.join(d, "garbage.pem")
            with open(garbage, "w") as f:
                f.write("not a certificate\n")
            cases = [
                (os.path.join(d, "nope.pem"), key_a, "cannot read certFile",
                 "No such file or directory"),
                (cert_a, d, "cannot read keyFile", "Is a directory"),
                (cert_a, key_b, "does not match certFile", ""),
                (garbage, key_a, "holds no PEM certificate", ""),
                (cert_a, garbage, "holds no usable PEM private key", ""),
            ]
            for cert, key, what, detail in cases:
                for check in (True, False):
                    with self.subTest(what=what, check=check):
                        rc, out = self.run_with(cert, key, check=check)
                        self.assertEqual(rc, 1, out)
                        self.assertIn("listeners.api.tls: ", out)
                        self.assertIn(what, out)
                        self.assertIn(detail, out)
                        # No port was opened before the error.
                        self.assertNotIn("listening on", out)
                        with open(key_a) as f:
                            self.assertNotIn(f.read().splitlines()[1], out)

    def test_schema_errors(self):
        for extra, key, what in [
            ("      minVersion: '1.1'\n", "listeners.api.tls.minVersion", "expected one of: 1.2, 1.3"),
            ("      ciphers: NOPE-NOTHING\n", "listeners.api.tls", "no usable cipher"),
        ]:
            with self.subTest(key=key):
                with tempfile.TemporaryDirectory() as d:
                    cert, k = make_cert(d, "x", "IP:127.0.0.1")
                    rc, out = self.run_with(cert, k, extra, check=True)
                self.assertEqual(rc, 1, out)
                self.assertIn(key, out)
                self.assertIn(what, out)
        # certFile without keyFile.
        text = make_config(api_extra="    tls:\n      certFile: /x.pem\n")
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(text)
        try:
            p = subprocess.run([BIN, "--check-config", "--config", f.name], capture_output=True,
                               text=True, timeout=DEADLINE)
        finally:
            os.unlink(f.name)
        self.assertEqual(p.returncode, 1)
        self.assertIn("listeners.api.tls.keyFile: required with certFile", p.stdout + p.stderr)


if __name__ == "__main__":
    unittest.main()
