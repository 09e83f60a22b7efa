"""systemd's Type=notify protocol through the real binary: a unix datagram
socket made here stands in for systemd's NOTIFY_SOCKET (sd_notify(3) sends
one datagram per notification). chatgate must say READY=1 once its
listeners are open, ping WATCHDOG=1 at half of WATCHDOG_USEC from its loop,
say RELOADING=1 then READY=1 around a SIGHUP reload, and STOPPING=1 on
SIGTERM, after which no ping follows while the shutdown drains."""
import os
import re
import signal
import socket
import tempfile
import threading
import time
import unittest

from harness import DEADLINE, Chatgate, chat, get, make_config, wait_for


class NotifySocket:
    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="cg-notify-")
        self.path = os.path.join(self.dir.name, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.seen = []  # (monotonic time received, datagram)

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
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            self.seen.append((time.monotonic(), data))
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
                self.seen.append((time.monotonic(), self.sock.recv(4096).decode()))
            except socket.timeout:
                pass
        self.sock.setblocking(False)
        while True:
            try:
                self.seen.append((time.monotonic(), self.sock.recv(4096).decode()))
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


if __name__ == "__main__":
    unittest.main()
