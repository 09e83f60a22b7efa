"""ABI 1.4 through the real binary, with the wsprobe fixture channel: a
channel instance narrows its capabilities at init (the router then sends it
no partial updates), a bit beyond the descriptor's and a call after init are
refused, and the router dedupes once per message on the channel's
dedupe_key, at three cache calls a message (dedupe, context load, store)."""
import json
import unittest

from harness import FIXTURE_DIR, wait_until
from test_admin import ECHO_MEMORY, Gateway, request, scrape

CG_EINVAL, CG_EBUSY, CG_EPERM = -1, -5, -15


def probe(name, extra=""):
    return ("    - name: %s\n      plugin: %s/wsprobe.so\n      config:\n"
            "        url: ws://127.0.0.1:9/\n%s" % (name, FIXTURE_DIR, extra))


class ChannelPortTest(unittest.TestCase):
    def setUp(self):
        self.gw = Gateway(ECHO_MEMORY + probe("shows") + probe("plain", "        partials: false\n"))
        self.gw.start()
        self.addCleanup(self.gw.__exit__, None, None, None)

    def post(self, path, body):
        return request(self.gw.api_port, path, method="POST", body=body)

    def sent(self, name):
        return [json.loads(l) for l in
                request(self.gw.api_port, "/wsprobe/%s/sent" % name)[1].splitlines()]

    def finals(self, name):
        return [r for r in self.sent(name) if r["flags"] & 2]

    def cache_calls(self):
        m = scrape(self.gw.admin_port)
        return sum(v for k, v in m.items() if k.startswith('chatgate_cache_calls_total{'))

    def test_partial_updates_only_where_the_instance_shows_them(self):
        for name in ("shows", "plain"):
            self.assertEqual(self.post("/wsprobe/%s/emit" % name, "c1 - hello")[1], "0")
        self.assertTrue(wait_until(lambda: self.finals("shows") and self.finals("plain")))
        shows, plain = self.sent("shows"), self.sent("plain")
        # echo.so streams its answer as one delta: one partial, then the final.
        self.assertEqual([r["flags"] for r in shows], [1, 2], shows)
        self.assertEqual([r["flags"] for r in plain], [2], plain)
        self.assertEqual(plain[0]["text"], "echo: hello (turn 1)")

    def test_capabilities_are_bounded_and_set_only_at_init(self):
        self.assertEqual(request(self.gw.api_port, "/wsprobe/plain/initcaps")[1],
                         "%d 0" % CG_EINVAL)
        self.assertEqual(self.post("/wsprobe/shows/setcaps", "0")[1], str(CG_EPERM))
        # The refused calls changed nothing: "shows" still gets partials.
        self.post("/wsprobe/shows/emit", "c9 - again")
        self.assertTrue(wait_until(lambda: self.finals("shows")))
        self.assertEqual([r["flags"] for r in self.sent("shows")], [1, 2])

    def test_one_dedupe_per_message_on_the_dedupe_key(self):
        before = self.cache_calls()
        self.assertEqual(self.post("/wsprobe/plain/emit", "c2 evt-1 first")[1], "0")
        self.assertTrue(wait_until(lambda: len(self.finals("plain")) == 1))
        self.assertEqual(self.cache_calls() - before, 3)
        # Another message id with the same dedupe key (a redelivery) is
        # dropped; without a key the message id is what counts.
        self.assertEqual(self.post("/wsprobe/plain/emit", "c2 evt-1 first")[1], "0")
        self.assertEqual(self.post("/wsprobe/plain/emit", "c2 - second")[1], "0")
        self.assertTrue(wait_until(lambda: len(self.finals("plain")) == 2))
        self.assertTrue(wait_until(lambda: scrape(self.gw.admin_port).get(
            'chatgate_messages_dropped_total{channel="plain",reason="duplicate"}') == 1))
        self.assertEqual([r["text"] for r in self.finals("plain")],
                         ["echo: first (turn 1)", "echo: second (turn 2)"])


    def test_durable_emit_answers_once_the_router_holds_the_message(self):
        # ABI 1.5: the channel is told through done, after the call returned
        # (the fixture answers its HTTP request from done).
        self.assertEqual(self.post("/wsprobe/plain/emitdurable", "c4 evt-9 held")[1], "0")
        self.assertTrue(wait_until(lambda: len(self.finals("plain")) == 1))
        self.assertEqual(self.finals("plain")[0]["text"], "echo: held (turn 1)")


class DurableEmitRefusalTest(unittest.TestCase):
    """A message the router does not take reaches the channel's done as the
    refusal (here the conversation's backlog cap), so it acknowledges
    nothing and the platform delivers it again."""

    def test_refusal_reaches_done(self):
        slow = ECHO_MEMORY.replace("plugin: echo.so\n",
                                   "plugin: echo.so\n      config:\n        delayMs: 60000\n")
        gw = Gateway(slow + probe("plain", "        partials: false\n"),
                     router_extra="  maxConversationBacklog: 1\n")
        with gw:
            post = lambda body: request(gw.api_port, "/wsprobe/plain/emitdurable", method="POST",
                                        body=body)[1]
            self.assertEqual(post("c5 - first"), "0")
            self.assertEqual(post("c5 - second"), str(CG_EBUSY))
            # Another conversation is not held back by c5's cap.
            self.assertEqual(post("c6 - other"), "0")


if __name__ == "__main__":
    unittest.main()
