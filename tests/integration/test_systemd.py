"""systemd's Type=notify protocol through the real binary: a unix datagram
socket made here stands in for systemd's NOTIFY_SOCKET (sd_notify(3) sends
one datagram per notification). chatgate must say READY=1 once its
listeners are open, ping WATCHDOG=1 at half of WATCHDOG_USEC from its loop,
say RELOADING=1 then READY=1 around a SIGHUP reload, and STOPPING=1 on
SIGTERM."""
import os
import signal
import socket
import tempfile
import time
import unittest

from harness import Chatgate, free_port, get, make_config


class NotifySocket:
    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="cg-notify-")
        self.path = os.path.join(self.dir.name, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.seen = []

    def read(self, timeout=3.0, until=None):
        """Collects datagrams until `until` (a state line) arrives or the time is up."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                self.seen.append(self.sock.recv(4096).decode())
            except socket.timeout:
                continue
            if until is not None and until in self.seen[-1].split("\n"):
                return self.seen[-1]
        return None

    def close(self):
        self.sock.close()
        self.dir.cleanup()


class NotifyTest(unittest.TestCase):
    def setUp(self):
        self.notify = NotifySocket()
        self.addCleanup(self.notify.close)

    def test_ready_watchdog_reload_and_stopping(self):
        port = free_port()
        env = {"NOTIFY_SOCKET": self.notify.path, "WATCHDOG_USEC": "200000"}
        with Chatgate(make_config(port), env=env) as gw:
            ready = self.notify.read(until="READY=1")
            self.assertIsNotNone(ready, self.notify.seen)
            self.assertIn("STATUS=api on 127.0.0.1:%d" % port, ready)
            # Ready means the listener answers.
            self.assertEqual(get(port, "/healthz")[0], 200)
            # Half of 200 ms: about five pings a second.
            start = len(self.notify.seen)
            self.notify.read(timeout=1.0)
            pings = [s for s in self.notify.seen[start:] if s == "WATCHDOG=1"]
            self.assertGreaterEqual(len(pings), 3, self.notify.seen)
            gw.proc.send_signal(signal.SIGHUP)
            self.assertIsNotNone(self.notify.read(until="RELOADING=1"), self.notify.seen)
            self.assertIsNotNone(self.notify.read(until="READY=1"), self.notify.seen)
            self.assertEqual(gw.stop(), 0)
            self.assertIsNotNone(self.notify.read(timeout=1.0, until="STOPPING=1"),
                                 self.notify.seen)
            # No pings after STOPPING (the last datagrams are the shutdown's).
            after = self.notify.seen[self.notify.seen.index(
                next(s for s in self.notify.seen if s.startswith("STOPPING=1"))) + 1:]
            self.assertNotIn("WATCHDOG=1", after)

    def test_without_watchdog_usec_there_are_no_pings(self):
        port = free_port()
        with Chatgate(make_config(port), env={"NOTIFY_SOCKET": self.notify.path}) as gw:
            self.assertIsNotNone(self.notify.read(until="READY=1"))
            self.notify.read(timeout=0.5)
            self.assertNotIn("WATCHDOG=1", self.notify.seen)
            self.assertEqual(gw.stop(), 0)


if __name__ == "__main__":
    unittest.main()
