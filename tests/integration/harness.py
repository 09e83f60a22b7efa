"""Starts the real chatgate binary on loopback with a temporary config and
talks HTTP to it over real sockets. Standard library only."""
import ctypes
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
import unittest

BIN = os.environ.get("CHATGATE_BIN", "../../build/chatgate")
NEXT_BIN = os.environ.get("CHATGATE_NEXT_BIN", "../../build/chatgate-next")
PLUGIN_DIR = os.environ.get("CHATGATE_TEST_PLUGIN_DIR", "../../build/plugins")
FIXTURE_DIR = os.environ.get("CHATGATE_TEST_FIXTURE_DIR", "../../build/tests/fixtures")
SOURCE_DIR = os.environ.get("CHATGATE_SOURCE_DIR", "../..")


def free_port():
    """Deprecated: a probed-and-released port can be taken before the process
    that is handed it binds it. Listen on port 0 instead (Chatgate learns
    its ports from the ready line, fakes print "PORT n")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClosedPort:
    """A loopback port that refuses connections for as long as this object
    lives: the socket is bound but never listens, so nobody else can take
    the port meanwhile. Use as a context manager or keep a reference."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def sdk_abi():
    """The SDK's "major.minor" (sdk/include/chatgate/common.h)."""
    with open(os.path.join(SOURCE_DIR, "sdk", "include", "chatgate", "common.h")) as f:
        text = f.read()
    major = re.search(r"#define CG_ABI_MAJOR (\d+)", text).group(1)
    minor = re.search(r"#define CG_ABI_MINOR (\d+)", text).group(1)
    return "%s.%s" % (major, minor)


DEADLINE = float(os.environ.get("CHATGATE_TEST_DEADLINE", "30"))


def make_config(port=0, echo_config="", router_extra="", api_extra="", extra_instances="",
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
    The extras are YAML text already indented for their place. Port 0 (the
    default, also for the admin listener) lets the kernel pick; the
    Chatgate object learns the bound ports from the ready line."""
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
                    admin_port=admin_port or 0, plugin_dir=PLUGIN_DIR) + instances + \
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


def _become_subreaper():
    """A handover's new process is started by chatgate, not by the test; when
    the old one exits it is handed to the nearest "child subreaper". Being
    one (prctl(2) PR_SET_CHILD_SUBREAPER) makes it this test's child, so
    the test can wait for it and read its exit status as for any other."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except OSError:
        pass


_become_subreaper()


class AdoptedProcess:
    """A process this test did not start but reaps: a handover's successor,
    once its parent (the old chatgate) has exited. The part of Popen's
    interface the harness uses."""

    def __init__(self, pid):
        self.pid = pid
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return None  # not handed to us yet (its parent still runs)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        deadline = None if timeout is None else time.time() + timeout
        while self.poll() is None:
            if deadline is not None and time.time() > deadline:
                raise subprocess.TimeoutExpired("pid %d" % self.pid, timeout)
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, sig):
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self):
        self.send_signal(signal.SIGKILL)


TOOK_OVER_RE = re.compile(r"pid ([0-9]+) took over; this process \(pid ([0-9]+)\)")
HANDOVER_FAILED = "handover failed: "


SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
READY_RE = re.compile(r" ready in [0-9.]+ ms \(pid ([0-9]+)\): api on (https?)://[^ ]*:([0-9]+)"
                      r"(?:, admin on (https?)://[^ ]*:([0-9]+))?")


class Chatgate:
    """One chatgate process. Use as a context manager.

    The listeners may (and should) be configured on port 0: `port` and
    `admin_port` are read from the ready line once it is printed, and again
    after each start. At teardown the process must end with `expect_exit`
    (0 unless the test says otherwise; None when the test checks it itself)
    and without a sanitizer report, or the test fails."""

    def __init__(self, config_text=None, args=None, env=None, expect_exit=0, binary=None):
        self.binary = binary or BIN
        self.port = None
        self.admin_port = None
        self.expect_exit = expect_exit
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
        self._log_offset = 0  # where this start's output begins in the log

    def rewrite_config(self, old, new, count=None):
        """Replaces `old` with `new` in the config file, for the next reload
        or handover to read. `old` must be there (exactly `count` times when
        given), so that a test whose config changed shape fails here."""
        with open(self.config_path) as f:
            text = f.read()
        found = text.count(old)
        if found == 0 or (count is not None and found != count):
            raise AssertionError("%r is in %s %d times, expected %s"
                                 % (old, self.config_path, found, count or "at least once"))
        with open(self.config_path, "w") as f:
            f.write(text.replace(old, new))

    def start(self, wait_ready=True, timeout=DEADLINE):
        cmd = [self.binary] + (["--config", self.config_path] if self.config_path else []) + \
            (self.args or [])
        if self.log_file:
            self.log_file.close()
        self._log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log_file, stderr=subprocess.STDOUT,
                                     env=self.env)
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=DEADLINE):
        """Waits for this start's ready line and learns the bound ports."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                m = READY_RE.search(f.read().decode("utf-8", "replace"))
            if m:
                self.port = int(m.group(3))
                self.admin_port = int(m.group(5)) if m.group(5) else None
                return self
            if self.proc.poll() is not None:
                raise AssertionError("chatgate exited with %s:\n%s" % (self.proc.returncode, self.log()))
            time.sleep(0.02)
        raise AssertionError("chatgate not ready after %ss:\n%s" % (timeout, self.log()))

    def follow_handover(self, timeout=DEADLINE, count=1):
        """After a handover (SIGUSR2, or a reload that needs a new process):
        waits for the `count`th "pid N took over" line, for the old process
        to exit 0, and makes the new one this object's process. Returns its
        pid. The ports are read again from the new process's ready line."""
        log = self.wait_log(" took over; this process (pid ", timeout=timeout, count=count)
        matches = TOOK_OVER_RE.findall(log)
        new_pid, old_pid = int(matches[count - 1][0]), int(matches[count - 1][1])
        if old_pid != self.proc.pid:
            raise AssertionError("pid %d took over from pid %d, not from %d" % (new_pid, old_pid,
                                                                              self.proc.pid))
        rc = self.proc.wait(timeout=timeout)
        if rc != 0:
            raise AssertionError("the old chatgate (pid %d) exited with %s after the handover:\n%s"
                                 % (old_pid, rc, self.log()[-4000:]))
        self.proc = AdoptedProcess(new_pid)
        # Its own ready line (written by its logging thread, so perhaps
        # after the old process's lines); absent when its logging.level is
        # above info, and then the ports are the ones it inherited.
        deadline = time.time() + 2
        while time.time() < deadline:
            ready = [m for m in READY_RE.finditer(self.log()) if int(m.group(1)) == new_pid]
            if ready:
                self.port = int(ready[-1].group(3))
                self.admin_port = int(ready[-1].group(5)) if ready[-1].group(5) else None
                break
            time.sleep(0.02)
        return new_pid

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_log(self, text, timeout=DEADLINE, count=1):
        """Waits until `text` appears `count` times in the log; fails the
        test with the log's tail otherwise. Returns the log."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            log = self.log()
            if log.count(text) >= count:
                return log
            time.sleep(0.02)
        raise AssertionError("%r not seen %d time(s) in %ss:\n%s" % (text, count, timeout, self.log()[-4000:]))

    def wait_exit(self, timeout=DEADLINE):
        return self.proc.wait(timeout=timeout)

    def stop(self, sig=signal.SIGTERM, timeout=DEADLINE):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("chatgate did not stop on %s:\n%s" % (sig, self.log()))
        return self.proc.returncode

    def kill(self):
        """SIGKILL, as a crash or the OOM killer would; the process is then
        expected to have ended with -9 unless the test starts it again."""
        self.expect_exit = -signal.SIGKILL
        return self.stop(signal.SIGKILL)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        try:
            rc = self.stop() if self.proc else None
            log = self.log() if self.proc else ""
            if exc[0] is None and self.proc:
                # Under the sanitizer build a leak or a UB report at exit would
                # otherwise pass unseen in tests that do not check the exit code.
                for marker in SANITIZER_MARKERS:
                    if marker in log:
                        raise AssertionError("sanitizer report from chatgate:\n" + log[-6000:])
                if self.expect_exit is not None and rc != self.expect_exit:
                    raise AssertionError("chatgate exited with %s, expected %s:\n%s"
                                         % (rc, self.expect_exit, log[-4000:]))
        finally:
            self._sweep_successors()
            if self.log_file:
                self.log_file.close()
            self.tmp.cleanup()

    def _sweep_successors(self):
        """A test that failed between a handover and follow_handover must not
        leave the new process running: every pid that took over is stopped."""
        if not os.path.exists(self.log_path):
            return
        for new_pid, _ in TOOK_OVER_RE.findall(self.log()):
            proc = AdoptedProcess(int(new_pid))
            try:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass


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


def wait_for(predicate, what, timeout=DEADLINE, interval=0.02):
    """Waits for an event: polls `predicate` until it returns something
    true, which is returned; fails the test naming `what` after a generous
    deadline. Prefer this to a sleep."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


def read_until_closed(sock, timeout=DEADLINE):
    """Every byte `sock` receives until the peer closes it (EOF or reset);
    fails the test if it is still open after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("still open after %ss; received %r" % (timeout, data[:200]))
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


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
