"""TLS on the listeners through the real binary, with certificates the test
makes with the openssl command: HTTPS with TLS 1.2 and 1.3 (older versions
refused), keep-alive and pipelining over TLS, a large body, plain HTTP on a
TLS port, clear errors for missing, unreadable and mismatched files, and
certificate reloads (file change and SIGHUP) while traffic runs, without
dropping open connections."""
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

from harness import BIN, Chatgate, free_port, get, make_cert, make_config, wait_until


def tls_config(port, admin, cert, key, extra=""):
    tls = "    tls:\n      certFile: %s\n      keyFile: %s\n%s" % (cert, key, extra)
    text = make_config(port, api_extra=tls)
    return re.sub(r"(  admin:\n    address: 127.0.0.1\n    port: )\d+", r"\g<1>%d" % admin, text)


def client_context(cafile, **kw):
    ctx = ssl.create_default_context(cafile=cafile)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def peer_cert(port, cafile):
    """The DER certificate a new connection is served."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with client_context(cafile).wrap_socket(raw, server_hostname="127.0.0.1") as s:
            return s.getpeercert(binary_form=True)


def der(cert_path):
    with open(cert_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def https(port, cafile, method="GET", path="/healthz", body=None, headers=None):
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                       context=client_context(cafile))
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

    def install(self, name):
        # As renewal tools do: write beside, then rename over.
        for src, dst in zip(self.certs[name], (self.cert, self.key)):
            shutil.copy(src, dst + ".new")
            os.replace(dst + ".new", dst)

    def start(self, extra=""):
        self.port, self.admin = free_port(), free_port()
        cg = Chatgate(tls_config(self.port, self.admin, self.cert, self.key, extra))
        cg.start()
        self.addCleanup(cg.__exit__, None, None, None)
        return cg

    def test_https_chat_and_versions(self):
        cg = self.start()
        self.assertEqual(https(self.port, self.ca), (200, '{"status":"ok"}'))
        status, body = https(self.port, self.ca, "POST", "/api/chat",
                             json.dumps({"userId": "t", "query": "over tls"}),
                             {"Content-Type": "application/json"})
        self.assertEqual((status, json.loads(body)), (200, {"answer": "echo: over tls (turn 1)"}))
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = client_context(self.ca, minimum_version=version, maximum_version=version)
            with socket.create_connection(("127.0.0.1", self.port)) as raw:
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                    self.assertEqual(s.version(), {ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                                                   ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version])
                    if version == ssl.TLSVersion.TLSv1_2:
                        self.assertRegex(s.cipher()[0], "GCM|CHACHA20")
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 200 "))
        self.assertIn("listening on https://127.0.0.1:", cg.log())
        self.assertIn("api on https://127.0.0.1:", cg.log())
        days = metric(self.admin, "chatgate_tls_certificate_expiry_seconds", listener="api")
        self.assertTrue(0 < days <= 86400 + 60, days)

    def test_old_protocols_and_plain_http_are_refused_and_counted(self):
        self.start()
        # TLS 1.1 (where this OpenSSL still lets a client offer it).
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
            ctx.set_ciphers("ALL:@SECLEVEL=0")
            offered = True
        except (ValueError, ssl.SSLError):
            offered = False
        if offered:
            with socket.create_connection(("127.0.0.1", self.port)) as raw:
                with self.assertRaises((ssl.SSLError, ConnectionResetError, OSError)):
                    ctx.wrap_socket(raw, server_hostname="127.0.0.1").do_handshake()
        # Plain HTTP on the TLS port: the connection closes, nothing is served.
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            try:
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except ConnectionResetError:
                pass
            self.assertNotIn(b"HTTP/1.1 200", data)
        self.assertGreaterEqual(
            metric(self.admin, "chatgate_tls_handshake_errors_total", listener="api"), 1)
        self.assertEqual(https(self.port, self.ca)[0], 200)

    def test_keep_alive_pipelining_and_a_large_body(self):
        self.start("      reloadCheckMs: 0\n")
        with socket.create_connection(("127.0.0.1", self.port)) as raw:
            with client_context(self.ca).wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 40)
                data = b""
                while data.count(b"HTTP/1.1 200 ") < 40:
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
        errors, done = [], threading.Event()
        kept = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10,
                                           context=client_context(self.ca))

        def traffic():
            n = 0
            while not done.is_set():
                try:
                    kept.request("GET", "/healthz")  # one keep-alive connection throughout
                    r = kept.getresponse()
                    r.read()
                    if r.status != 200:
                        errors.append(r.status)
                    n += 1
                except Exception as e:  # noqa: BLE001 - any failure is the finding
                    errors.append(repr(e))
                    return

        t = threading.Thread(target=traffic)
        t.start()
        try:
            time.sleep(0.2)
            self.install("b")
            self.assertTrue(wait_until(lambda: "TLS certificate reloaded" in cg.log(), timeout=5),
                            cg.log())
            self.assertEqual(peer_cert(self.port, self.ca), der(self.certs["b"][0]))
            time.sleep(0.2)
        finally:
            done.set()
            t.join()
            kept.close()
        self.assertEqual(errors, [])
        self.assertEqual(metric(self.admin, "chatgate_tls_reloads_total", listener="api",
                                result="ok"), 1)

    def test_sighup_reload_and_a_bad_renewal_keeps_the_old_certificate(self):
        cg = self.start("      reloadCheckMs: 0\n")
        # A mismatched pair (b's certificate, a's key): refused, a stays.
        shutil.copy(self.certs["b"][0], self.cert)
        cg.proc.send_signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: "TLS reload failed" in cg.log(), timeout=5), cg.log())
        self.assertIn("does not match", cg.log())
        self.assertEqual(peer_cert(self.port, self.ca), der(self.certs["a"][0]))
        self.assertEqual(https(self.port, self.ca)[0], 200)
        # The matching key arrives; the next SIGHUP takes both.
        shutil.copy(self.certs["b"][1], self.key)
        cg.proc.send_signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: "TLS certificate reloaded" in cg.log(), timeout=5))
        self.assertEqual(peer_cert(self.port, self.ca), der(self.certs["b"][0]))
        self.assertEqual(metric(self.admin, "chatgate_tls_reloads_total", listener="api",
                                result="failed"), 1)


    def test_admin_listener_over_tls_sets_a_secure_session_cookie(self):
        self.port, self.admin = free_port(), free_port()
        text = make_config(self.port).replace(
            "  admin:\n    address: 127.0.0.1\n",
            "  admin:\n    address: 127.0.0.1\n    tls: {certFile: %s, keyFile: %s}\n"
            % (self.cert, self.key), 1)
        text = re.sub(r"(  admin:\n    address: 127.0.0.1\n    tls: .*\n    port: )\d+",
                      r"\g<1>%d" % self.admin, text)
        text = "admin:\n  token: tls-admin-token-123456\n" + text
        with Chatgate(text) as cg:
            self.assertIn("admin on https://127.0.0.1:%d" % self.admin, cg.log())
            conn = http.client.HTTPSConnection("127.0.0.1", self.admin, timeout=10,
                                               context=client_context(self.ca))
            conn.request("POST", "/admin/api/login", json.dumps({"token": "tls-admin-token-123456"}),
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            self.assertEqual(resp.status, 200)
            self.assertIn("; Secure", resp.getheader("Set-Cookie"))
            conn.close()
            self.assertEqual(https(self.admin, self.ca, path="/readyz")[0], 200)


class TlsConfigErrorTest(unittest.TestCase):
    def run_with(self, cert, key, extra="", check=False):
        port = free_port()
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(tls_config(port, free_port(), cert, key, extra))
        try:
            args = [BIN, "--config", f.name] + (["--check-config"] if check else [])
            p = subprocess.run(args, capture_output=True, text=True, timeout=20)
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
        text = make_config(free_port(), api_extra="    tls:\n      certFile: /x.pem\n")
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(text)
        p = subprocess.run([BIN, "--check-config", "--config", f.name], capture_output=True,
                           text=True, timeout=20)
        os.unlink(f.name)
        self.assertEqual(p.returncode, 1)
        self.assertIn("listeners.api.tls.keyFile: required with certFile", p.stdout + p.stderr)


if __name__ == "__main__":
    unittest.main()
