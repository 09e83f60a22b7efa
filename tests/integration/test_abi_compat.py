"""A plugin built against the ABI 1.0 headers (tests/abi/sdk-1.0: the echo
backend and the SDK as 1.0 shipped them) loads into today's host and
answers through the router: the promise that minor versions only append."""
import json
import os
import unittest

from harness import FIXTURE_DIR, Chatgate, chat, free_port, gateway_config, get

OLD_ECHO = os.path.join(FIXTURE_DIR, "echo_1_0.so")


class Abi10Test(unittest.TestCase):
    def test_a_1_0_plugin_loads_and_answers(self):
        self.assertTrue(os.path.exists(OLD_ECHO), OLD_ECHO)
        port, admin = free_port(), free_port()
        instances = ("    - name: old\n      plugin: %s\n"
                     "    - name: memory\n      plugin: memory.so\n" % OLD_ECHO)
        with Chatgate(gateway_config(port, instances, "old", "memory", admin_port=admin)) as gw:
            status, doc, _ = chat(port, "u", "hello")
            self.assertEqual((status, doc), (200, {"answer": "echo: hello (turn 1)"}))
            self.assertEqual(chat(port, "u", "again")[1]["answer"], "echo: again (turn 2)")
            plugins = json.loads(get(admin, "/admin/api/plugins")[1])["plugins"]
            old = next(p for p in plugins if p["instance"] == "old")
            self.assertEqual((old["abi"], old["state"]), ("1.0", "running"))
            self.assertEqual(gw.stop(), 0)


if __name__ == "__main__":
    unittest.main()
