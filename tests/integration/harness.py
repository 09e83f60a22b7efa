"""Starts the real chatgate binary on loopback with a temporary config and
talks HTTP to it over real sockets. Standard library only."""
import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
import unittest

BIN = os.environ.get("CHATGATE_BIN", "../../build/chatgate")
PLUGIN_DIR = os.environ.get("CHATGATE_TEST_PLUGIN_DIR", "../../build/plugins")
FIXTURE_DIR = os.environ.get("CHATGATE_TEST_FIXTURE_DIR", "../../build/tests/fixtures")
SOURCE_DIR = os.environ.get("CHATGATE_SOURCE_DIR", "../..")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_config(port, echo_config="", router_extra="", api_extra="", extra_instances="",
                shutdown_ms=5000):
    """A config like the embedded default, on `port`, with optional tweaks
    (YAML text, already indented for its place)."""
    instances = textwrap.dedent("""\
            - name: echo
              plugin: echo.so
              config:
                prefix: echo
        {echo_config}
            - name: memory
              plugin: memory.so
        {extra_instances}
        """).format(echo_config=echo_config, extra_instances=extra_instances)
    return gateway_config(port, instances, "echo", "memory", router_extra, api_extra=api_extra,
                          tail="shutdown:\n  deadlineMs: %d\n" % shutdown_ms)


def gateway_config(port, instances, model, cache, router_extra="", top_extra="", api_extra="",
                   tail="", admin_port=None):
    """A config with the API on `port` and the given plugin instances
    (YAML list items, indented four spaces), router.model and router.cache.
    The extras are YAML text already indented for their place."""
    return textwrap.dedent("""\
        {top_extra}
        logging:
          level: debug
        listeners:
          api:
            address: 127.0.0.1
            port: {port}
        {api_extra}
          admin:
            address: 127.0.0.1
            port: {admin_port}
        plugins:
          dir: {plugin_dir}
          instances:
        """).format(top_extra=top_extra, port=port, api_extra=api_extra,
                    admin_port=admin_port or free_port(), plugin_dir=PLUGIN_DIR) + instances + \
        "router:\n  model: %s\n  cache: %s\n%s\n%s" % (model, cache, router_extra, tail)


def make_cert(directory, cn, san):
    """A self-signed certificate and key made by the openssl command (not by
    chatgate's code), valid a day. Returns (cert path, key path)."""
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=" + cn, "-addext", "subjectAltName=" + san,
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


class FakeProcess:
    """A fake server in a child process that prints "PORT n" once listening."""

    def __init__(self, cmd):
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.close()
            raise AssertionError("%s did not start (printed %r)" % (cmd[-1], line))
        self.port = int(line.split()[1])

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


class Chatgate:
    """One chatgate process. Use as a context manager."""

    def __init__(self, config_text=None, args=None, env=None):
        self.port = None
        self.tmp = tempfile.TemporaryDirectory(prefix="chatgate-it-")
        self.log_path = os.path.join(self.tmp.name, "chatgate.log")
        self.config_path = None
        if config_text is not None:
            self.config_path = os.path.join(self.tmp.name, "chatgate.yaml")
            with open(self.config_path, "w") as f:
                f.write(config_text)
        self.args = args
        # Hermetic: a proxy set on the machine must not catch the loopback
        # fakes; a test that wants one passes it in `env`.
        base = {k: v for k, v in os.environ.items()
                if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
        self.env = dict(base, **(env or {}))
        self.proc = None
        self.log_file = None

    def start(self, wait_ready=True, timeout=10):
        cmd = [BIN] + (["--config", self.config_path] if self.config_path else []) + (self.args or [])
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     env=self.env)
        if wait_ready:
            deadline = time.time() + timeout
            while time.time() < deadline:
                if " ready in " in self.log():
                    return self
                if self.proc.poll() is not None:
                    raise AssertionError("chatgate exited with %s:\n%s" % (self.proc.returncode, self.log()))
                time.sleep(0.02)
            raise AssertionError("chatgate not ready after %ss:\n%s" % (timeout, self.log()))
        return self

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_exit(self, timeout=15):
        return self.proc.wait(timeout=timeout)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("chatgate did not stop on %s:\n%s" % (sig, self.log()))
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        try:
            self.stop()
            # Under the sanitizer build a leak or a UB report at exit would
            # otherwise pass unseen in tests that do not check the exit code.
            log = self.log() if self.proc else ""
            for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
                if marker in log and exc[0] is None:
                    raise AssertionError("sanitizer report from chatgate:\n" + log[-6000:])
        finally:
            if self.log_file:
                self.log_file.close()
            self.tmp.cleanup()


def post_json(port, path, body, timeout=10, headers=None):
    """POSTs `body` (a dict, or raw bytes/str sent as is). Returns (status, dict-or-text, headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    conn.request("POST", path, body=data, headers=dict({"Content-Type": "application/json"}, **(headers or {})))
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw.decode("utf-8", "replace")
    return resp.status, parsed, dict(resp.getheaders())


def get(port, path, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", path)
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    return resp.status, raw.decode("utf-8", "replace"), dict(resp.getheaders())


def raw_exchange(port, data, timeout=5, read_until_close=True):
    """Sends raw bytes and returns every byte the server sends back until it
    closes (or `timeout` passes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        chunks = []
        end = time.time() + timeout
        while time.time() < end:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            chunks.append(b)
            if not read_until_close:
                break
        return b"".join(chunks)
    finally:
        s.close()


def wait_until(predicate, timeout=5, interval=0.02):
    """Polls `predicate` until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def chat(port, user, query, **extra):
    body = {"userId": user, "query": query}
    body.update(extra)
    return post_json(port, "/api/chat", body)
