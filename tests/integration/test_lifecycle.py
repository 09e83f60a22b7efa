"""Start-up failures and graceful shutdown of the real binary."""
import os
import signal
import socket
import threading
import time
import unittest

from harness import FIXTURE_DIR, Chatgate, chat, free_port, make_config


class ShutdownTest(unittest.TestCase):
    def test_sigterm_lets_in_flight_request_finish_and_exits_zero(self):
        port = free_port()
        cg = Chatgate(make_config(port, echo_config="        delayMs: 700")).start()
        result = {}

        def call():
            result["r"] = chat(port, "slow", "take your time")

        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.25)  # the request is now waiting on the model
        cg.proc.send_signal(signal.SIGTERM)
        time.sleep(0.15)
        # While that request is still in flight, new connections are refused.
        self.assertIsNone(cg.proc.poll())
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        t.join(10)
        status, body, _ = result["r"]
        self.assertEqual(status, 200)
        self.assertEqual(body["answer"], "echo: take your time (turn 1)")
        self.assertEqual(cg.wait_exit(), 0)
        log = cg.log()
        self.assertIn("SIGTERM: shutting down", log)
        self.assertIn("chatgate stopped", log)
        cg.__exit__(None, None, None)

    def test_deadline_cancels_stuck_requests(self):
        port = free_port()
        cg = Chatgate(make_config(port, echo_config="        delayMs: 60000", shutdown_ms=300)).start()
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("r", chat(port, "stuck", "never")))
        t.start()
        time.sleep(0.25)
        started = time.time()
        cg.proc.send_signal(signal.SIGINT)
        self.assertEqual(cg.wait_exit(), 0)
        self.assertLess(time.time() - started, 5)
        t.join(5)
        status, body, _ = result["r"]
        self.assertEqual(status, 503)
        self.assertIn("restarting", body["answer"])
        self.assertIn("deadline of 300 ms passed", cg.log())
        cg.__exit__(None, None, None)


class StartupFailureTest(unittest.TestCase):
    def run_failing(self, config_text):
        cg = Chatgate(config_text, expect_exit=1)
        cg.start(wait_ready=False)
        rc = cg.wait_exit()
        log = cg.log()
        cg.__exit__(None, None, None)
        self.assertNotEqual(rc, 0, log)
        return log

    def test_port_in_use_names_listener_address_and_key(self):
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        try:
            log = self.run_failing(make_config(port))
        finally:
            blocker.close()
        self.assertIn("listener 'api' cannot listen on 127.0.0.1:%d" % port, log)
        self.assertIn("address already in use", log)
        self.assertIn("listeners.api.port", log)

    def fixture_config(self, fixture, extra=""):
        return make_config(free_port(), extra_instances=(
            "    - name: broken\n"
            "      plugin: %s/%s\n%s" % (FIXTURE_DIR, fixture, extra)))

    def test_wrong_abi_plugin_stops_startup_with_one_line(self):
        log = self.run_failing(self.fixture_config("wrong_major.so"))
        lines = [l for l in log.splitlines() if "wrong_major.so" in l]
        self.assertEqual(len(lines), 1, log)
        self.assertIn("ABI major mismatch: expected 1.x, found 2.0", lines[0])
        self.assertIn("plugins.instances[2]", lines[0])

    def test_not_a_plugin_stops_startup(self):
        log = self.run_failing(self.fixture_config("no_entry.so"))
        self.assertIn("expected the symbol cg_plugin_entry, found none", log)

    def test_plugin_init_failure_is_logged_with_its_reason(self):
        log = self.run_failing(self.fixture_config(
            "init_fails.so", "      config:\n        token: s3cr3t-value\n"))
        self.assertIn("init failed", log)
        self.assertIn("no frobnicator configured", log)
        self.assertNotIn("s3cr3t-value", log)

    def test_missing_required_plugin_key(self):
        log = self.run_failing(self.fixture_config("good.so"))
        self.assertIn("token", log)
        self.assertIn("plugins.instances[2].config", log)


if __name__ == "__main__":
    unittest.main()
