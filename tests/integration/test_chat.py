"""POST /api/chat end to end: router, context in the memory cache, commands,
errors, through the real binary."""
import http.client
import json
import re
import threading
import time
import unittest

from harness import Chatgate, chat, free_port, get, make_config, post_json, raw_exchange


class ChatTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.port = free_port()
        cls.cg = Chatgate(make_config(cls.port, router_extra="  contextTurns: 3")).start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.cg.stop()
        cls.cg.__exit__(None, None, None)
        assert rc == 0, rc

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
        chat(self.port, "dave", "b")
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
        cls.port = free_port()
        # The model takes a while, so the requests really overlap.
        cls.cg = Chatgate(make_config(cls.port, echo_config="        delayMs: 50",
                                      router_extra="  contextTurns: 20")).start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.cg.stop()
        cls.cg.__exit__(None, None, None)
        assert rc == 0, rc

    def test_pipelined_messages_of_one_conversation_keep_every_turn(self):
        body = json.dumps({"userId": "piper", "query": "q"}).encode()
        one = (b"POST /api/chat HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
        last = one.replace(b"Host: t\r\n", b"Host: t\r\nConnection: close\r\n")
        raw = raw_exchange(self.port, one * 4 + last)
        answers = re.findall(rb'\{"answer":"([^"]*)"\}', raw)
        self.assertEqual(answers, [b"echo: q (turn %d)" % n for n in range(1, 6)], raw)

    def test_parallel_clients_in_one_conversation_keep_every_turn(self):
        results = []
        lock = threading.Lock()

        def one(i):
            r = chat(self.port, "user-%d" % i, "hi", conversationId="shared-room")
            with lock:
                results.append(r)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        self.assertEqual(sorted(r[0] for r in results), [200] * 6)
        turns = sorted(int(re.search(r"turn (\d+)", r[1]["answer"]).group(1)) for r in results)
        self.assertEqual(turns, [1, 2, 3, 4, 5, 6])
        _, body, _ = chat(self.port, "late", "after", conversationId="shared-room")
        self.assertEqual(body["answer"], "echo: after (turn 7)")

    def test_other_conversations_do_not_wait(self):
        # With a 1 s model, 4 conversations served one after the other would
        # take 4 s; side by side they take about 1 s.
        port = free_port()
        with Chatgate(make_config(port, echo_config="        delayMs: 1000")):
            results = []
            threads = [threading.Thread(target=lambda i=i: results.append(
                chat(port, "solo-%d" % i, "x"))) for i in range(4)]
            started = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join(10)
            elapsed = time.monotonic() - started
        self.assertEqual([r[0] for r in results], [200] * 4)
        self.assertLess(elapsed, 2.5)


class BacklogTest(unittest.TestCase):
    def test_a_backlog_older_than_the_model_timeout_is_answered_busy(self):
        # Each answer takes 300 ms; a message that waited over 700 ms behind
        # its conversation's earlier ones is answered busy instead of waiting.
        port = free_port()
        config = make_config(port, echo_config="        delayMs: 300",
                             router_extra="  modelTimeoutMs: 700")
        with Chatgate(config) as cg:
            body = json.dumps({"userId": "pile", "query": "q"}).encode()
            one = (b"POST /api/chat HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(body)) + body
            last = one.replace(b"Host: t\r\n", b"Host: t\r\nConnection: close\r\n")
            raw = raw_exchange(port, one * 4 + last, timeout=10)
            statuses = re.findall(rb"HTTP/1.1 (\d+)", raw)
            self.assertEqual(len(statuses), 5, raw)
            self.assertEqual(statuses[:2], [b"200", b"200"])
            self.assertEqual(statuses[-1], b"503")
            self.assertIn(b"busy", raw.split(b"\r\n\r\n")[-1])
            # Another conversation is answered normally meanwhile and after.
            status, body, _ = chat(port, "other", "hi")
            self.assertEqual(status, 200)
            self.assertEqual(cg.stop(), 0)
            self.assertIn("waited over 700 ms behind earlier ones", cg.log())


class ModelFailureTest(unittest.TestCase):
    def run_with(self, echo_config, router_extra=""):
        port = free_port()
        with Chatgate(make_config(port, echo_config=echo_config, router_extra=router_extra)) as cg:
            status, body, _ = chat(port, "u", "hello")
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
