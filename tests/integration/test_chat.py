"""POST /api/chat end to end: router, context in the memory cache, commands,
errors, through the real binary."""
import http.client
import json
import re
import threading
import unittest

from harness import Chatgate, chat, get, make_config, post_json, raw_exchange, wait_for
from test_openai import KEY, MODEL_ARGS, FakeChecked, FakeOpenAI, openai_config


class ChatTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cg = Chatgate(make_config(0, router_extra="  contextTurns: 3")).start()
        cls.port = cls.cg.port

    @classmethod
    def tearDownClass(cls):
        cls.cg.__exit__(None, None, None)  # stops it; fails unless it exits 0

    def test_answer_counts_context_turns(self):
        for turn in (1, 2, 3):
            status, body, headers = chat(self.port, "alice", "hello %d" % turn)
            self.assertEqual(status, 200, body)
            self.assertEqual(body, {"answer": "echo: hello %d (turn %d)" % (turn, turn)})
            self.assertEqual(headers["Content-Type"], "application/json")

    def test_context_is_bounded_by_context_turns(self):
        for i in range(6):
            status, body, _ = chat(self.port, "bounded", "q%d" % i)
        # 3 stored turns + this one.
        self.assertEqual(body["answer"], "echo: q5 (turn 4)")

    def test_conversations_are_separate(self):
        chat(self.port, "bob", "one")
        chat(self.port, "bob", "two")
        _, body, _ = chat(self.port, "bob", "three", conversationId="bob-second")
        self.assertEqual(body["answer"], "echo: three (turn 1)")
        _, body, _ = chat(self.port, "carol", "hi")
        self.assertEqual(body["answer"], "echo: hi (turn 1)")

    def test_reset_clears_context(self):
        chat(self.port, "dave", "a")
        _, body, _ = chat(self.port, "dave", "b")
        self.assertEqual(body["answer"], "echo: b (turn 2)")  # there was a context
        status, body, _ = chat(self.port, "dave", "/reset")
        self.assertEqual(status, 200)
        self.assertIn("cleared", body["answer"])
        _, body, _ = chat(self.port, "dave", "c")
        self.assertEqual(body["answer"], "echo: c (turn 1)")

    def test_help_lists_commands(self):
        status, body, _ = chat(self.port, "erin", "  /HELP ")
        self.assertEqual(status, 200)
        self.assertIn("/reset", body["answer"])
        self.assertIn("/help", body["answer"])

    def test_unknown_command_points_to_help(self):
        _, body, _ = chat(self.port, "erin", "/frobnicate now")
        self.assertIn("Unknown command /frobnicate", body["answer"])

    def test_unicode_and_control_characters_round_trip(self):
        query = 'line1\nline2 "quoted" \\ tab\t 你好 👋 \u0001'
        status, body, _ = chat(self.port, "unicode-user", query)
        self.assertEqual(status, 200)
        self.assertEqual(body["answer"], "echo: %s (turn 1)" % query)

    def test_bad_json_is_400(self):
        status, body, _ = post_json(self.port, "/api/chat", b'{"userId": "x", "query": ')
        self.assertEqual(status, 400)
        self.assertIn("not valid JSON", body["error"])

    def test_invalid_utf8_is_400_and_says_so(self):
        status, body, _ = post_json(self.port, "/api/chat", b'{"userId": "u", "query": "a\xff b"}')
        self.assertEqual(status, 400)
        self.assertIn("not valid UTF-8", body["error"])

    def test_null_conversation_id_counts_as_absent(self):
        status, body, _ = chat(self.port, "nully", "hi", conversationId=None)
        self.assertEqual(status, 200, body)
        _, body, _ = chat(self.port, "nully", "again")
        self.assertEqual(body["answer"], "echo: again (turn 2)")

    def test_stream_with_echo_ends_with_the_whole_answer(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("POST", "/api/chat", json.dumps(
            {"userId": "streamer", "query": "hi", "stream": True}))
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        events = [json.loads(line[6:]) for line in resp.read().decode().split("\n")
                  if line.startswith("data: ")]
        conn.close()
        self.assertEqual(events[-1], {"answer": "echo: hi (turn 1)", "done": True})
        self.assertEqual("".join(e.get("delta", "") for e in events), "echo: hi (turn 1)")

    def test_stream_must_be_a_boolean(self):
        status, body, _ = chat(self.port, "u", "x", stream="yes")
        self.assertEqual(status, 400)
        self.assertIn("stream", body["error"])

    def test_missing_or_wrong_fields_are_400(self):
        for payload, word in (({"query": "hi"}, "userId"), ({"userId": "u"}, "query"),
                              ({"userId": "", "query": "x"}, "userId"),
                              ({"userId": 5, "query": "x"}, "userId"),
                              ({"userId": "u", "query": "x", "conversationId": 3}, "conversationId"),
                              ([1, 2], "object")):
            status, body, _ = post_json(self.port, "/api/chat", payload)
            self.assertEqual(status, 400, payload)
            self.assertIn(word, body["error"])

    def test_duplicate_message_id_answered_once(self):
        status, body, _ = chat(self.port, "frank", "pay once", messageId="m-1")
        self.assertEqual(status, 200)
        self.assertEqual(body["answer"], "echo: pay once (turn 1)")
        status, body, _ = chat(self.port, "frank", "pay once", messageId="m-1")
        self.assertEqual(status, 409)
        self.assertIn("duplicate", body["error"])
        # The duplicate did not add a turn.
        _, body, _ = chat(self.port, "frank", "next")
        self.assertEqual(body["answer"], "echo: next (turn 2)")

    def test_healthz(self):
        status, body, _ = get(self.port, "/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body), {"status": "ok"})

    def test_unknown_route_404_and_wrong_method_405(self):
        status, _, _ = get(self.port, "/nope")
        self.assertEqual(status, 404)
        status, _, headers = get(self.port, "/api/chat")
        self.assertEqual(status, 405)
        self.assertIn("POST", headers.get("Allow", ""))


class ConcurrentConversationTest(unittest.TestCase):
    """Messages of one conversation that arrive together each see the turn
    the one before stored: none is lost, and they are answered in order."""

    @classmethod
    def setUpClass(cls):
        # The model takes a while, so the requests really overlap.
        cls.cg = Chatgate(make_config(0, echo_config="        delayMs: 50",
                                      router_extra="  contextTurns: 20")).start()
        cls.port = cls.cg.port

    @classmethod
    def tearDownClass(cls):
        cls.cg.__exit__(None, None, None)  # stops it; fails unless it exits 0

    def test_pipelined_messages_of_one_conversation_keep_every_turn(self):
        body = json.dumps({"userId": "piper", "query": "q"}).encode()
        one = (b"POST /api/chat HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
        last = one.replace(b"Host: t\r\n", b"Host: t\r\nConnection: close\r\n")
        raw = raw_exchange(self.port, one * 4 + last, timeout=30)
        answers = re.findall(rb'\{"answer":"([^"]*)"\}', raw)
        self.assertEqual(answers, [b"echo: q (turn %d)" % n for n in range(1, 6)], raw)


def received(cg):
    """chatgate_messages_received_total{channel="api"}, from /metrics."""
    _, text, _ = get(cg.admin_port, "/metrics")
    m = re.search(r'^chatgate_messages_received_total\{channel="api"\} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


class HeldModelTest(FakeChecked, unittest.TestCase):
    """Concurrency seen at the model itself: tests/fakes/fake_openai.py holds
    calls until the test releases them, so overlap is a fact, not a timing."""

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeOpenAI(MODEL_ARGS)

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()

    def start(self):
        cg = Chatgate(openai_config(self.fake.base + "/v1", router_extra="  contextTurns: 20"),
                      env={"TEST_MODEL_KEY": KEY}).start()
        self.addCleanup(cg.__exit__, None, None, None)
        return cg

    def run_threads(self, calls):
        """One thread per call: (port, user, query[, conversationId]).
        Returns the threads and the list their results are appended to."""
        results = []
        lock = threading.Lock()

        def one(args):
            port, user, query = args[:3]
            extra = {"conversationId": args[3]} if len(args) > 3 else {}
            r = chat(port, user, query, **extra)
            with lock:
                results.append(r)

        threads = [threading.Thread(target=one, args=(args,)) for args in calls]
        for t in threads:
            t.start()
        self.addCleanup(lambda: [t.join(30) for t in threads])
        self.addCleanup(self.fake.release)
        return threads, results

    def test_parallel_clients_in_one_conversation_keep_every_turn(self):
        # Six clients of one conversation at once: the first reaches the model
        # and is held there; the other five are all in chatgate meanwhile,
        # behind it. Released, each sees every turn before it.
        cg = self.start()
        self.fake.script("hold")
        threads, results = self.run_threads(
            [(cg.port, "user-%d" % i, "hi", "shared-room") for i in range(6)])
        wait_for(lambda: len(self.fake.requests()) >= 1, "the first call at the model")
        wait_for(lambda: received(cg) == 6, "all six messages in chatgate")
        self.assertEqual(len(self.fake.requests()), 1)  # the others wait their turn
        self.assertEqual(results, [])
        self.fake.release()
        for t in threads:
            t.join(30)
        self.assertEqual(sorted(r[0] for r in results), [200] * 6, results)
        # system prompt + 2 messages per earlier turn + this one.
        counts = sorted(int(re.search(r"\((\d+) messages\)", r[1]["answer"]).group(1))
                        for r in results)
        self.assertEqual(counts, [2, 4, 6, 8, 10, 12])
        _, body, _ = chat(cg.port, "late", "after", conversationId="shared-room")
        self.assertEqual(body["answer"], "reply to: after (14 messages)")

    def test_other_conversations_do_not_wait(self):
        # Four conversations reach the model side by side: all four calls
        # are at the model at once, none answered yet.
        cg = self.start()
        self.fake.script("hold", "hold", "hold", "hold")
        threads, results = self.run_threads(
            [(cg.port, "solo-%d" % i, "x") for i in range(4)])
        wait_for(lambda: len(self.fake.requests()) == 4, "four calls at the model at once")
        self.assertEqual(results, [])
        self.fake.release()
        for t in threads:
            t.join(30)
        self.assertEqual(sorted(r[0] for r in results), [200] * 4, results)


class BacklogTest(unittest.TestCase):
    def test_a_backlog_older_than_the_model_timeout_is_answered_busy(self):
        # Each answer takes 100 ms; a message that waited over 1000 ms behind
        # its conversation's earlier ones is answered busy instead of waiting.
        # The second waits about 100 ms (10x under the limit); the 14th at
        # least 1100 ms: a lower bound no load can shorten.
        config = make_config(0, echo_config="        delayMs: 100",
                             router_extra="  modelTimeoutMs: 1000")
        with Chatgate(config) as cg:
            body = json.dumps({"userId": "pile", "query": "q"}).encode()
            one = (b"POST /api/chat HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(body)) + body
            last = one.replace(b"Host: t\r\n", b"Host: t\r\nConnection: close\r\n")
            raw = raw_exchange(cg.port, one * 13 + last, timeout=60)
            statuses = re.findall(rb"HTTP/1.1 (\d+)", raw)
            self.assertEqual(len(statuses), 14, raw)
            self.assertEqual(statuses[:2], [b"200", b"200"])
            self.assertEqual(statuses[-1], b"503")
            self.assertIn(b"busy", raw.split(b"\r\n\r\n")[-1])
            # Another conversation is answered normally afterwards.
            status, body, _ = chat(cg.port, "other", "hi")
            self.assertEqual(status, 200)
            self.assertEqual(body["answer"], "echo: hi (turn 1)")
            self.assertEqual(cg.stop(), 0)
            self.assertIn("waited over 1000 ms behind earlier ones", cg.log())


class ModelFailureTest(unittest.TestCase):
    def run_with(self, echo_config, router_extra=""):
        with Chatgate(make_config(0, echo_config=echo_config, router_extra=router_extra)) as cg:
            status, body, _ = chat(cg.port, "u", "hello")
            # Logging is asynchronous: the line may trail the answer, and is
            # flushed by the time the process has exited.
            self.assertEqual(cg.stop(), 0)
            return status, body, cg.log()

    def test_busy_model_gives_user_visible_reply_and_log_line(self):
        status, body, log = self.run_with("        fail: busy")
        self.assertEqual(status, 503)
        self.assertIn("busy", body["answer"])
        self.assertIn("model 'echo' failed", log)
        self.assertIn("CG_EBUSY", log)

    def test_model_timeout_is_answered(self):
        status, body, log = self.run_with("        delayMs: 3000", "  modelTimeoutMs: 200")
        self.assertEqual(status, 503)
        self.assertIn("too long", body["answer"])
        self.assertIn("CG_ETIMEDOUT", log)


if __name__ == "__main__":
    unittest.main()
