"""systemd's side of chatgate through the real binary.

Type=notify: a unix datagram socket made here stands in for systemd's
NOTIFY_SOCKET (sd_notify(3) sends one datagram per notification; the
kernel names the sender when the socket asks with SO_PASSCRED). chatgate
must say READY=1 once its listeners are open, ping WATCHDOG=1 at half of
WATCHDOG_USEC from its loop, say RELOADING=1 then READY=1 around a SIGHUP
reload, and STOPPING=1 on SIGTERM, after which no ping follows while the
shutdown drains. A handover (SIGUSR2): the old process says RELOADING=1,
then MAINPID=<new pid> and READY=1, and nothing after; the new one pings.

Socket activation: Debian's systemd-socket-activate hands chatgate named
listening sockets (sd_listen_fds(3)); and sockets held here across a stop
and a start, as a socket unit holds them across `systemctl restart`, lose
no connection made in between."""
import fcntl
import json
import os
import re
import signal
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from harness import (BIN, DEADLINE, Chatgate, chat, free_port, gateway_config, get, make_config,
                     wait_for)


class NotifySocket:
    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="cg-notify-")
        self.path = os.path.join(self.dir.name, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.seen = []  # (monotonic time received, datagram)
        self.senders = []  # the pid that sent each datagram in `seen`

    def receive(self):
        """One datagram into `seen` and its sender's pid into `senders`."""
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = None
        for level, kind, cred in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = int.from_bytes(cred[0:4], "little")
        self.seen.append((time.monotonic(), data.decode()))
        self.senders.append(pid)
        return data.decode()

    def states(self, start=0):
        return [d for _, d in self.seen[start:]]

    def read_until(self, state, timeout=DEADLINE):
        """Reads datagrams until one holds the line `state`; returns its
        index in `seen`. Fails the test naming what came meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %r from chatgate within %ss; got %r"
                                     % (state, timeout, self.states()))
            self.sock.settimeout(left)
            try:
                data = self.receive()
            except socket.timeout:
                continue
            if state in data.split("\n"):
                return len(self.seen) - 1

    def drain_after_exit(self, proc, timeout=DEADLINE):
        """Reads until `proc` has exited and then empties the socket: every
        datagram the process ever sent is in `seen` afterwards (a unix
        datagram is queued on the receiving socket when it is sent)."""
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("chatgate did not exit within %ss" % timeout)
            self.sock.settimeout(0.05)
            try:
                self.receive()
            except socket.timeout:
                pass
        self.sock.setblocking(False)
        while True:
            try:
                self.receive()
            except BlockingIOError:
                return

    def close(self):
        self.sock.close()
        self.dir.cleanup()


def index_of(states, line):
    """Index of the first datagram holding the line `line`, or None."""
    return next((i for i, s in enumerate(states) if line in s.split("\n")), None)


class NotifyTest(unittest.TestCase):
    def setUp(self):
        self.notify = NotifySocket()
        self.addCleanup(self.notify.close)

    def test_ready_watchdog_reload_and_stopping(self):
        # The echo backend answers after 2 s, so a request in flight keeps
        # the shutdown draining long enough for a stray ping to show.
        env = {"NOTIFY_SOCKET": self.notify.path, "WATCHDOG_USEC": "200000"}
        with Chatgate(make_config(echo_config="        delayMs: 2000"), env=env) as gw:
            ready = self.notify.seen[self.notify.read_until("READY=1")][1]
            self.assertIn("STATUS=api on 127.0.0.1:%d" % gw.port, ready)
            # Ready means the listener answers.
            self.assertEqual(get(gw.port, "/healthz")[0], 200)
            # Pings keep coming from the loop. Half of 200 ms is 100 ms; the
            # check allows five times that on average (a loaded machine),
            # which still catches pings that stop or come rarely.
            first = self.notify.read_until("WATCHDOG=1")
            last = first
            for _ in range(5):
                last = self.notify.read_until("WATCHDOG=1", timeout=5)
            mean = (self.notify.seen[last][0] - self.notify.seen[first][0]) / 5
            self.assertLess(mean, 0.5, self.notify.states())
            # A reload: RELOADING=1, then READY=1 again.
            gw.proc.send_signal(signal.SIGHUP)
            reloading = self.notify.read_until("RELOADING=1")
            self.assertGreater(self.notify.read_until("READY=1"), reloading)
            # A request in flight, then SIGTERM: the drain waits for it.
            answers = []
            client = threading.Thread(target=lambda: answers.append(chat(gw.port, "u", "late")))
            client.start()
            wait_for(lambda: re.search(r"^chatgate_model_calls_in_flight 1$",
                                       get(gw.admin_port, "/metrics")[1], re.M),
                     "the chat request to reach the model")
            gw.proc.send_signal(signal.SIGTERM)
            self.notify.drain_after_exit(gw.proc)
            client.join(DEADLINE)
            self.assertEqual(gw.proc.returncode, 0, gw.log())
            # The shutdown did wait for the answer (so it lasted long
            # enough for pings to have been sent had the timer run on)...
            self.assertEqual([a[:2] for a in answers], [(200, {"answer": "echo: late (turn 1)"})])
            # ...and no ping came after STOPPING=1.
            states = self.notify.states()
            stopping = index_of(states, "STOPPING=1")
            self.assertIsNotNone(stopping, states)
            self.assertNotIn("WATCHDOG=1", states[stopping + 1:], states[stopping:])

    def test_without_watchdog_usec_there_are_no_pings(self):
        with Chatgate(make_config(), env={"NOTIFY_SOCKET": self.notify.path}) as gw:
            self.notify.read_until("READY=1")
            # A window of a second (five times the 200 ms period above),
            # closed by a sentinel: the RELOADING=1 of a SIGHUP and the
            # datagrams up to the process's exit.
            time.sleep(1.0)
            gw.proc.send_signal(signal.SIGHUP)
            self.notify.read_until("RELOADING=1")
            gw.proc.send_signal(signal.SIGTERM)
            self.notify.drain_after_exit(gw.proc)
            self.assertEqual(gw.proc.returncode, 0, gw.log())
            states = self.notify.states()
            self.assertIsNotNone(index_of(states, "STOPPING=1"), states)
            self.assertNotIn("WATCHDOG=1", states)



class HandoverNotifyTest(unittest.TestCase):
    """SIGUSR2 under systemd: the old process tells systemd who serves now."""

    def setUp(self):
        self.notify = NotifySocket()
        self.addCleanup(self.notify.close)

    def test_mainpid_moves_to_the_new_process_which_pings(self):
        # systemd sets WATCHDOG_PID to the main process; started through sh
        # so that it is chatgate's own pid, as under systemd. The new
        # process must not inherit it, or sd_watchdog_enabled(3) would turn
        # its pings off.
        wrapper = os.path.join(self.notify.dir.name, "chatgate-wrapper")
        with open(wrapper, "w") as f:
            f.write('#!/bin/sh\nWATCHDOG_PID=$$ exec "%s" "$@"\n' % os.path.abspath(BIN))
        os.chmod(wrapper, 0o755)
        env = {"NOTIFY_SOCKET": self.notify.path, "WATCHDOG_USEC": "200000"}
        with Chatgate(make_config(), env=env, binary=wrapper) as gw:
            old = gw.proc.pid
            self.notify.read_until("READY=1")
            self.notify.read_until("WATCHDOG=1")
            gw.proc.send_signal(signal.SIGUSR2)
            reloading = self.notify.read_until("RELOADING=1")
            self.assertEqual(self.notify.senders[reloading], old)
            new = gw.follow_handover()
            # Datagrams wait in the socket until read: this one was sent
            # before the old process exited.
            announced = self.notify.read_until("MAINPID=%d" % new)
            datagram = self.notify.seen[announced][1].split("\n")
            self.assertIn("READY=1", datagram)
            self.assertEqual(self.notify.senders[announced], old)
            # The new process pings the watchdog; the old one said nothing
            # more (no STOPPING=1: the service goes on).
            ping = self.notify.read_until("WATCHDOG=1")
            while self.notify.senders[ping] != new:
                ping = self.notify.read_until("WATCHDOG=1")
            after = list(zip(self.notify.senders[announced + 1:], self.notify.states(announced + 1)))
            self.assertFalse([d for pid, d in after if pid == old], after)
            self.assertNotIn("STOPPING=1", "\n".join(self.notify.states()))


def read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def listening_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(4096)
    return s


def config_on(api_port, admin_port):
    return gateway_config(api_port, "    - name: echo\n      plugin: echo.so\n"
                          "    - name: memory\n      plugin: memory.so\n", "echo", "memory",
                          admin_port=admin_port)


@unittest.skipUnless(shutil.which("systemd-socket-activate"), "needs systemd-socket-activate")
class SocketActivationTest(unittest.TestCase):
    def test_named_sockets_from_systemd_socket_activate(self):
        api_port, admin_port = free_port(), free_port()
        with tempfile.TemporaryDirectory(prefix="cg-sa-") as tmp:
            path = os.path.join(tmp, "chatgate.yaml")
            with open(path, "w") as f:
                f.write(config_on(api_port, admin_port))
            log_path = os.path.join(tmp, "log")
            with open(log_path, "wb") as log:
                # systemd-socket-activate execs chatgate at the first
                # connection, with LISTEN_FDS=2 and LISTEN_FDNAMES=api:admin,
                # as a socket unit with FileDescriptorName= would.
                proc = subprocess.Popen(
                    ["systemd-socket-activate", "-l", "127.0.0.1:%d" % api_port,
                     "-l", "127.0.0.1:%d" % admin_port, "--fdname=api:admin",
                     BIN, "--config", path], stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_for(lambda: "Listening on 127.0.0.1:%d" % admin_port in read(log_path),
                         "systemd-socket-activate to listen")
                # This first request starts chatgate and waits in the
                # socket's queue until chatgate serves it.
                self.assertEqual(chat(api_port, "u", "first")[:2],
                                 (200, {"answer": "echo: first (turn 1)"}))
                self.assertEqual(get(admin_port, "/readyz")[0], 200)
                text = read(log_path)
                self.assertIn("listening sockets inherited from systemd", text)
                self.assertIn("listener 'api': listening on http://127.0.0.1:%d (inherited socket)"
                              % api_port, text)
                self.assertIn("listener 'admin': listening on http://127.0.0.1:%d (inherited "
                              "socket)" % admin_port, text)
            finally:
                proc.send_signal(signal.SIGTERM)
                self.assertEqual(proc.wait(DEADLINE), 0, read(log_path))


class HeldSocketsRestartTest(unittest.TestCase):
    """What a socket unit does for `systemctl restart`: the listening sockets
    stay open here while one chatgate stops and the next starts, so a
    client that connects in between waits in the kernel's queue and is
    served by the next one, not refused."""

    def setUp(self):
        self.api, self.admin = listening_socket(), listening_socket()
        self.addCleanup(self.api.close)
        self.addCleanup(self.admin.close)
        self.tmp = tempfile.TemporaryDirectory(prefix="cg-held-")
        self.addCleanup(self.tmp.cleanup)
        self.config = os.path.join(self.tmp.name, "chatgate.yaml")
        with open(self.config, "w") as f:
            f.write(config_on(self.api.getsockname()[1], self.admin.getsockname()[1]))
        self.log_path = os.path.join(self.tmp.name, "log")

    def launch(self):
        """chatgate with the sockets as descriptors 3 and 4 and the
        variables systemd sets (LISTEN_PID is the exec'd process's own pid:
        sh's $$, kept by exec)."""
        fds = (self.api.fileno(), self.admin.fileno())

        def as_3_and_4():
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 200) for fd in fds]
            for target, fd in zip((3, 4), high):
                os.dup2(fd, target)
                os.close(fd)

        env = dict(os.environ, LISTEN_FDS="2", LISTEN_FDNAMES="api:admin")
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"', BIN,
                                     "--config", self.config], env=env, close_fds=False,
                                    preexec_fn=as_3_and_4, stdout=log, stderr=subprocess.STDOUT)

    def log(self):
        return read(self.log_path)

    def test_a_restart_refuses_nothing(self):
        port = self.api.getsockname()[1]
        first = self.launch()
        self.addCleanup(lambda: first.poll() is None and first.kill())
        wait_for(lambda: "ready in" in self.log(), "the first chatgate")
        results, stop = [], threading.Event()

        def client():
            n = 0
            while not stop.is_set():
                start = time.monotonic()
                try:
                    status = chat(port, "u%d" % (n % 20), "q%d" % n)[0]
                except OSError as e:
                    status = repr(e)
                results.append((start, time.monotonic(), status))
                n += 1
                time.sleep(0.01)

        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            first.send_signal(signal.SIGTERM)
            self.assertEqual(first.wait(DEADLINE), 0, self.log())
            gap_start = time.monotonic()
            time.sleep(0.5)  # no process at all: connections wait in the queue
            second = self.launch()
            self.addCleanup(lambda: second.poll() is None and second.kill())
            wait_for(lambda: self.log().count("ready in") == 2, "the second chatgate")
            gap_end = time.monotonic()
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(DEADLINE)
        failed = [r for r in results if r[2] != 200]
        self.assertEqual(failed, [], self.log()[-3000:])
        # Requests were waiting in the queue while no chatgate ran at all
        # (in flight across the middle of the gap), and were answered (200,
        # above) once the second one started.
        middle = (gap_start + gap_end) / 2
        waited = [r for r in results if r[0] < middle < r[1]]
        self.assertTrue(waited, "no request was waiting during the gap")
        self.assertIn("listening sockets inherited from systemd", self.log())
        second.send_signal(signal.SIGTERM)
        self.assertEqual(second.wait(DEADLINE), 0, self.log())

    def test_an_overlapping_address_serves_the_units_socket(self):
        # The unit holds 127.0.0.1:P, the YAML says 0.0.0.0:P: that cannot
        # be bound beside systemd's socket, and failing would loop through
        # Restart=. chatgate serves the unit's socket and says so.
        port = self.api.getsockname()[1]
        with open(self.config) as f:
            text = f.read()
        with open(self.config, "w") as f:
            f.write(text.replace("address: 127.0.0.1\n    port: %d" % port,
                                 "address: 0.0.0.0\n    port: %d" % port, 1))
        proc = self.launch()
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        wait_for(lambda: "ready in" in self.log() or proc.poll() is not None, "chatgate to start")
        self.assertIsNone(proc.poll(), self.log())
        self.assertIn("listener 'api': systemd's socket is bound to 127.0.0.1:%d, but "
                      "listeners.api says 0.0.0.0:%d, which cannot be bound beside it; serving "
                      "systemd's socket" % (port, port), self.log())
        self.assertEqual(chat(port, "u", "served")[0], 200)
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(DEADLINE), 0, self.log())

if __name__ == "__main__":
    unittest.main()
