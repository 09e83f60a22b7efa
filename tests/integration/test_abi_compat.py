"""Plugins built against older ABI headers load into today's host and work
through the router: the promise that minor versions only append.
- tests/abi/sdk-1.0: the echo backend and the SDK as 1.0 shipped them.
- tests/abi/sdk-1.3: the http_bridge channel and the SDK as 1.3 shipped
  them (a cg_message_t without 1.4's dedupe_key: deduped on its id)."""
import json
import os
import re
import unittest
import urllib.request

from harness import FIXTURE_DIR, Chatgate, chat, gateway_config, get, wait_for
from test_rate_limits import Callback

OLD_ECHO = os.path.join(FIXTURE_DIR, "echo_1_0.so")
BRIDGE_1_3 = os.path.join(FIXTURE_DIR, "http_bridge_1_3.so")


class Abi10Test(unittest.TestCase):
    def test_a_1_0_plugin_loads_and_answers(self):
        self.assertTrue(os.path.exists(OLD_ECHO), OLD_ECHO)
        instances = ("    - name: old\n      plugin: %s\n"
                     "    - name: memory\n      plugin: memory.so\n" % OLD_ECHO)
        with Chatgate(gateway_config(0, instances, "old", "memory")) as gw:
            port, admin = gw.port, gw.admin_port
            status, doc, _ = chat(port, "u", "hello")
            self.assertEqual((status, doc), (200, {"answer": "echo: hello (turn 1)"}))
            self.assertEqual(chat(port, "u", "again")[1]["answer"], "echo: again (turn 2)")
            plugins = json.loads(get(admin, "/admin/api/plugins")[1])["plugins"]
            old = next(p for p in plugins if p["instance"] == "old")
            self.assertEqual((old["abi"], old["state"]), ("1.0", "running"))
            self.assertEqual(gw.stop(), 0)


def counter(admin, name, labels):
    """A series' value; 0 while the counter has not been made yet."""
    text = get(admin, "/metrics")[1]
    m = re.search(r"^%s\{%s\} (\S+)$" % (re.escape(name), re.escape(labels)), text, re.M)
    return float(m.group(1)) if m else 0.0


class Abi13Test(unittest.TestCase):
    def test_a_1_3_channel_is_answered_and_deduped_on_its_id(self):
        self.assertTrue(os.path.exists(BRIDGE_1_3), BRIDGE_1_3)
        answers = Callback()
        self.addCleanup(answers.close)
        instances = ("    - name: echo\n      plugin: echo.so\n"
                     "    - name: memory\n      plugin: memory.so\n"
                     "    - name: old\n      plugin: %s\n      config:\n"
                     "        callbackUrl: http://127.0.0.1:%d/answers\n" % (BRIDGE_1_3, answers.port))
        with Chatgate(gateway_config(0, instances, "echo", "memory")) as gw:
            port, admin = gw.port, gw.admin_port

            def send(text, msg_id):
                req = urllib.request.Request(
                    "http://127.0.0.1:%d/webhook/old?conversation=c1&user=u1&id=%s" % (port, msg_id),
                    data=text.encode(), method="POST")
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status

            self.assertEqual(send("hello", "m1"), 202)
            self.assertEqual(send("hello", "m1"), 202)  # a platform retry
            self.assertEqual(send("again", "m2"), 202)  # also the sentinel (one conversation)
            wait_for(lambda: len(answers.got) >= 2 and ("c1", "echo: again (turn 2)") in answers.got,
                     "both answers")
            self.assertEqual(counter(admin, "chatgate_messages_dropped_total",
                                     'channel="old",reason="duplicate"'), 1)
            self.assertEqual(sorted(t for _, t in answers.got),
                             ["echo: again (turn 2)", "echo: hello (turn 1)"])
            plugins = json.loads(get(admin, "/admin/api/plugins")[1])["plugins"]
            old = next(p for p in plugins if p["instance"] == "old")
            self.assertEqual(old["state"], "running")
            self.assertEqual(gw.stop(), 0)


if __name__ == "__main__":
    unittest.main()
