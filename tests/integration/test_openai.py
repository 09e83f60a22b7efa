"""openai.so end to end: the real chatgate, the real openai.so and the host's
HTTP client, against tests/fakes/fake_openai.py (an independent fake of the
OpenAI Chat Completions API) on loopback."""
import http.client
import json
import os
import socket
import ssl
import sys
import tempfile
import textwrap
import threading
import time
import unittest
import urllib.request

from harness import (SOURCE_DIR, Chatgate, ClosedPort, FakeProcess, chat, gateway_config,
                     make_cert, wait_for)

FAKE = os.path.join(SOURCE_DIR, "tests", "fakes", "fake_openai.py")
PROXY = os.path.join(SOURCE_DIR, "tests", "fakes", "fake_proxy.py")
KEY = "sk-test-5ecretKEYvalue-9876"
MODEL_ARGS = ["--key", KEY, "--models", "fake-model"]  # what the fake accepts


class FakeOpenAI(FakeProcess):
    def __init__(self, args=()):
        super().__init__([sys.executable, FAKE] + list(args))
        self.base = "http://127.0.0.1:%d" % self.port
        self.context = None

    def call(self, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(req, timeout=10, context=self.context) as r:
            return json.loads(r.read())

    def script(self, *steps):
        self.call("/control", {"script": list(steps)})

    def framing(self, *framing):
        self.call("/control", {"framing": list(framing)})

    def requests(self):
        return self.call("/requests")

    def problems(self):
        return self.call("/problems")

    def release(self):
        self.call("/release", {})

    def reset(self):
        self.call("/reset", {})


def sse_events(resp):
    """The data events of a chat API stream, parsed."""
    return [json.loads(line[6:]) for line in resp.read().decode().split("\n")
            if line.startswith("data: ")]


def openai_config(endpoint, extra="", router_extra="", top_extra="", model="fake-model"):
    instances = textwrap.dedent("""\
            - name: gpt
              plugin: openai.so
              config:
                endpoint: {endpoint}
                apiKey: ${{TEST_MODEL_KEY}}
                model: {model}
                systemPrompt: You are terse.
        {extra}
            - name: memory
              plugin: memory.so
        """).format(endpoint=endpoint, extra=extra, model=model)
    return gateway_config(0, instances, "gpt", "memory", router_extra, top_extra)


class FakeChecked:
    """Each test ends with the fake having refused nothing (a wrong key,
    model or message shape): a test that provokes a refusal takes it with
    take_problems()."""

    def setUp(self):
        self.fake.reset()
        self.addCleanup(self.check_no_problems)

    def check_no_problems(self):
        self.assertEqual(self.fake.problems(), [], "the fake model refused requests")

    def take_problems(self):
        return self.fake.call("/problems/take", {})


class OpenAITest(FakeChecked, unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fake = FakeOpenAI(MODEL_ARGS)

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()

    def start(self, extra="", router_extra="", endpoint=None, key=KEY, model="fake-model"):
        cg = Chatgate(openai_config(endpoint or self.fake.base + "/v1", extra, router_extra,
                                    model=model),
                      env={"TEST_MODEL_KEY": key}).start()
        self.addCleanup(cg.__exit__, None, None, None)
        return cg.port, cg

    def stop_and_log(self, cg, key=KEY):
        self.assertEqual(cg.stop(), 0)
        log = cg.log()
        for fragment in (key, key[:6] + "***", key[3:12]) if key else ():
            self.assertNotIn(fragment, log)
        return log

    def sse_chat(self, port, user, query):
        """POST /api/chat with "stream": true; the data events, parsed."""
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", "/api/chat", json.dumps(
            {"userId": user, "query": query, "stream": True}))
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.getheader("Content-Type"), "text/event-stream")
        events = sse_events(resp)
        conn.close()
        return events

    def test_answers_with_context_and_sends_what_the_api_expects(self):
        port, cg = self.start()
        status, body, _ = chat(port, "ann", "hello")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["answer"], "reply to: hello (2 messages)")  # system + user
        _, body, _ = chat(port, "ann", "again")
        self.assertEqual(body["answer"], "reply to: again (4 messages)")
        reqs = self.fake.requests()
        self.assertEqual(len(reqs), 2)
        self.assertEqual(reqs[0]["path"], "/v1/chat/completions")
        self.assertEqual(reqs[0]["headers"]["Authorization"], "Bearer " + KEY)
        sent = reqs[1]["body"]
        self.assertEqual(sent["model"], "fake-model")
        self.assertIs(sent["stream"], True)
        self.assertEqual(sent["messages"], [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "reply to: hello (2 messages)"},
            {"role": "user", "content": "again"}])
        self.stop_and_log(cg)

    def test_non_streaming_mode(self):
        port, cg = self.start(extra="        stream: false")
        status, body, _ = chat(port, "nos", "plain")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["answer"], "reply to: plain (2 messages)")
        self.assertNotIn("stream", self.fake.requests()[0]["body"])
        self.stop_and_log(cg)

    def test_sse_framings_of_real_servers_give_the_whole_answer(self):
        # Each framing once, through the real HTTP client: CR LF line ends,
        # comment lines (keep-alives), an event cut across several writes,
        # every event in one write, JSON over several data lines, "data:"
        # without its space, a body that ends without the last blank line.
        port, cg = self.start()
        framings = ("crlf", "comments", "split", "coalesce", "multiline", "nospace",
                    "nofinalblank")
        for n, framing in enumerate(framings):
            with self.subTest(framing=framing):
                self.fake.framing(framing)
                query = "framed %s one two three" % framing
                events = self.sse_chat(port, "fr-" + framing, query)
                final = events[-1]
                answer = "reply to: %s (2 messages)" % query
                self.assertEqual(final, {"answer": answer, "done": True}, events)
                deltas = [e["delta"] for e in events[:-1]]
                self.assertEqual(len(deltas), len(events) - 1, events)
                self.assertEqual("".join(deltas), answer)
                if framing != "coalesce":
                    # Word by word as sent (a write's deltas may merge on the way).
                    self.assertGreater(len(deltas), 1, events)
                self.assertEqual(len(self.fake.requests()), n + 1)  # no retry
        log = self.stop_and_log(cg)
        self.assertNotIn("failed", log)

    def test_retries_429_with_retry_after_and_500_then_answers(self):
        port, cg = self.start()
        # Retry-After 2 s: without it the two backoffs take under 0.75 s.
        self.fake.script("status:429:2", "status:500", "ok")
        started = time.monotonic()
        status, body, _ = chat(port, "rita", "retry me")
        elapsed = time.monotonic() - started
        self.assertEqual(status, 200, body)
        self.assertEqual(body["answer"], "reply to: retry me (2 messages)")
        self.assertEqual(len(self.fake.requests()), 3)
        self.assertGreaterEqual(elapsed, 2.0)  # Retry-After was honored
        log = self.stop_and_log(cg)
        self.assertIn("attempt 1 failed (HTTP 429: fake error 429); retrying in 2000 ms", log)
        self.assertIn("attempt 2 failed (HTTP 500: fake error 500)", log)

    def test_gives_up_after_the_configured_retries(self):
        port, cg = self.start(extra="        retries: 1")
        self.fake.script("status:503", "status:503", "ok")
        status, body, _ = chat(port, "gus", "fail")
        self.assertEqual(status, 503)
        self.assertEqual(body["error"], "model_unavailable")
        self.assertEqual(len(self.fake.requests()), 2)
        log = self.stop_and_log(cg)
        self.assertIn("HTTP 503: fake error 503", log)

    def test_stream_dropped_before_any_delta_is_retried(self):
        # The chat API call streams, so a delta would reach the user at once:
        # the retry is allowed only because none had come.
        port, cg = self.start()
        self.fake.script("drop:0", "ok")
        events = self.sse_chat(port, "dora", "drop me")
        answer = "reply to: drop me (2 messages)"
        self.assertEqual(events[-1], {"answer": answer, "done": True}, events)
        self.assertEqual("".join(e["delta"] for e in events[:-1]), answer)  # said once
        self.assertEqual(len(self.fake.requests()), 2)
        log = self.stop_and_log(cg)
        self.assertEqual(log.count("retrying in"), 1, log)
        self.assertIn("attempt 1 failed (", log)

    def test_no_retry_once_part_of_the_answer_reached_the_user(self):
        # Retries allowed, but two words already went out: the user gets that
        # partial answer once, then the error; the model is not asked again.
        port, cg = self.start(extra="        retries: 3")
        self.fake.script("drop:2", "ok", "ok")
        events = self.sse_chat(port, "pat", "cut me short")
        self.assertEqual([e["delta"] for e in events[:-1]], ["reply", " to:"], events)
        final = events[-1]
        self.assertTrue(final["done"], events)
        self.assertEqual(final.get("error"), "model_unavailable", events)
        self.assertNotIn("cut me short", final["answer"])
        # Sentinel: a later message is answered, and it is the model's second
        # request, so no retry of the first came in between.
        status, body, _ = chat(port, "sentinel", "after")
        self.assertEqual(status, 200, body)
        bodies = [r["body"]["messages"][-1]["content"] for r in self.fake.requests()]
        self.assertEqual(bodies, ["cut me short", "after"])
        log = self.stop_and_log(cg)
        self.assertNotIn("retrying in", log)

    def test_model_timeout_is_answered(self):
        port, cg = self.start(router_extra="  modelTimeoutMs: 500")
        self.fake.script("hang")
        status, body, _ = chat(port, "tim", "slow")
        self.assertEqual(status, 503)
        self.assertIn("too long", body["answer"])
        log = self.stop_and_log(cg)
        self.assertIn("CG_ETIMEDOUT", log)

    def test_a_401_quoting_the_key_is_reported_without_the_key(self):
        port, cg = self.start()
        self.fake.script("status:401")
        status, body, _ = chat(port, "kim", "who am i")
        self.assertEqual(status, 503)
        self.assertEqual(len(self.fake.requests()), 1)  # a 401 is not retried
        log = self.stop_and_log(cg)
        self.assertIn("HTTP 401", log)
        self.assertIn("quoted the API key and is withheld", log)

    def test_a_wrong_key_is_refused_by_the_service_and_not_retried(self):
        wrong = "sk-wrong-0123456789abcdef"
        port, cg = self.start(key=wrong, extra="        retries: 2")
        status, body, _ = chat(port, "kim", "who am i")
        self.assertEqual(status, 503, body)
        self.assertEqual(body["error"], "model_unavailable")
        self.assertEqual(len(self.fake.requests()), 0)  # refused before it was read
        self.assertEqual(len(self.take_problems()), 1)
        log = self.stop_and_log(cg, key=wrong)
        self.assertIn("HTTP 401", log)
        self.assertIn("CG_EPERM", log)
        self.assertIn("quoted the API key and is withheld", log)
        self.assertNotIn("retrying in", log)

    def test_no_key_sends_no_authorization(self):
        port, cg = self.start(key="")
        status, body, _ = chat(port, "nokey", "hello")
        self.assertEqual(status, 503, body)
        self.assertEqual(self.take_problems(),
                         ["POST /v1/chat/completions: HTTP 401: no Bearer API key"])
        log = self.stop_and_log(cg, key="")
        self.assertIn("(no API key)", log)
        self.assertIn("HTTP 401: You didn't provide an API key", log)

    def test_an_unknown_model_is_reported_and_not_retried(self):
        port, cg = self.start(model="gpt-nope", extra="        retries: 2")
        status, body, _ = chat(port, "mo", "which model")
        self.assertEqual(status, 503, body)
        self.assertEqual(self.take_problems(),
                         ["POST /v1/chat/completions: HTTP 404: unknown model 'gpt-nope'"])
        log = self.stop_and_log(cg)
        self.assertIn("HTTP 404: The model `gpt-nope` does not exist", log)
        self.assertNotIn("retrying in", log)

    def test_unreachable_service_is_retried_then_reported(self):
        with ClosedPort() as dead:
            port, cg = self.start(endpoint="http://127.0.0.1:%d/v1" % dead.port,
                                  extra="        retries: 2")
            status, body, _ = chat(port, "ned", "anyone")
            self.assertEqual(status, 503)
            log = self.stop_and_log(cg)
        self.assertEqual(log.count("retrying in"), 2)
        self.assertIn("CG_EIO", log)

    def test_circuit_breaker_opens_fails_fast_and_closes_after_a_probe(self):
        port, cg = self.start(extra="        retries: 0\n        breakerThreshold: 2\n"
                                    "        breakerCooldownMs: 2000")
        self.fake.script("status:500", "status:500")
        self.assertEqual(chat(port, "bea", "x")[0], 503)
        opened = time.monotonic()  # the breaker opens after this instant
        self.assertEqual(chat(port, "bea", "x")[0], 503)
        self.assertEqual(len(self.fake.requests()), 2)
        status, body, _ = chat(port, "bea", "x")  # open: not sent
        self.assertEqual(status, 503)
        self.assertLess(time.monotonic() - opened, 2.0, "too slow to see the breaker open")
        self.assertEqual(len(self.fake.requests()), 2)
        # Failing fast until the cooldown ends; then one probe, which succeeds.
        wait_for(lambda: chat(port, "bea", "probe")[0] == 200, "the breaker's probe", interval=0.2)
        self.assertGreaterEqual(time.monotonic() - opened, 2.0)
        self.assertEqual(len(self.fake.requests()), 3)
        status, _, _ = chat(port, "bea", "closed")
        self.assertEqual(status, 200)
        self.assertEqual(len(self.fake.requests()), 4)
        log = self.stop_and_log(cg)
        self.assertIn("circuit breaker open after 2 consecutive failures", log)
        self.assertIn("circuit breaker closed", log)

    def test_stream_true_gives_server_sent_events(self):
        port, cg = self.start()
        events = self.sse_chat(port, "sse", "one two three")
        deltas = [e["delta"] for e in events if "delta" in e]
        self.assertGreater(len(deltas), 1)  # word by word, as the fake streams
        final = events[-1]
        self.assertEqual(final, {"answer": "reply to: one two three (2 messages)", "done": True})
        self.assertEqual("".join(deltas), final["answer"])
        self.stop_and_log(cg)

    def test_a_json_completion_to_a_stream_request_is_the_whole_answer(self):
        # A server or proxy that ignores "stream": true answers one
        # chat.completion (application/json): that is the answer, not a
        # broken stream, and it is neither retried nor failed.
        port, cg = self.start()
        self.fake.script("json", "json")
        events = self.sse_chat(port, "jay", "whole at once")
        final = events[-1]
        self.assertTrue(final["done"], events)
        self.assertNotIn("error", final)
        self.assertEqual(final["answer"], "reply to: whole at once (2 messages)")
        deltas = [e["delta"] for e in events if "delta" in e]
        self.assertIn("".join(deltas), ("", final["answer"]))
        # The turn was stored like any other: the next request carries it.
        self.assertEqual(self.sse_chat(port, "jay", "again")[-1]["answer"],
                         "reply to: again (4 messages)")
        reqs = self.fake.requests()
        self.assertEqual(len(reqs), 2)  # no retry
        self.assertTrue(all(r["body"]["stream"] for r in reqs))  # a stream was asked for
        self.assertEqual(reqs[0]["headers"]["Accept"], "text/event-stream")
        log = self.stop_and_log(cg)
        self.assertEqual(log.count('ignores "stream": true'), 1, log)  # said once
        self.assertNotIn("ended early", log)

    def test_a_json_body_labelled_as_a_stream_is_still_a_broken_stream(self):
        # The Content-Type decides: JSON sent as text/event-stream is a stream
        # without a [DONE], failed (and retried) as before.
        port, cg = self.start(extra="        retries: 1")
        self.fake.script("json:text/event-stream", "json:text/event-stream")
        status, body, _ = chat(port, "mel", "mislabelled")
        self.assertEqual(status, 503, body)
        self.assertNotIn("reply to", body["answer"])
        self.assertEqual(len(self.fake.requests()), 2)
        log = self.stop_and_log(cg)
        self.assertIn("the stream ended early (no [DONE])", log)

    def test_json_errors_to_a_stream_request_behave_as_before(self):
        # A JSON error body (application/json too) is an error, not an answer:
        # 4xx fails at once, 5xx is retried.
        port, cg = self.start(extra="        retries: 1")
        self.fake.script("status:400", "status:503", "json")
        final = self.sse_chat(port, "erin", "bad request")[-1]
        self.assertEqual(final.get("error"), "model_unavailable", final)
        self.assertNotIn("fake error", final["answer"])
        self.assertEqual(len(self.fake.requests()), 1)  # a 400 is not retried
        final = self.sse_chat(port, "erin", "server error")[-1]
        self.assertEqual(final["answer"], "reply to: server error (2 messages)")
        self.assertEqual(len(self.fake.requests()), 3)  # the 503 was retried
        log = self.stop_and_log(cg)
        self.assertIn("HTTP 400: fake error 400", log)
        self.assertIn("attempt 1 failed (HTTP 503: fake error 503)", log)

    def test_client_leaving_mid_stream_cancels_the_backend_and_stores_no_turn(self):
        port, cg = self.start()
        self.fake.script("trickle:200")
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        body = json.dumps({"userId": "leaver", "query": "a b c d e f g h", "stream": True})
        s.sendall(("POST /api/chat HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s"
                   % (len(body), body)).encode())
        got = b""
        while b"delta" not in got:
            data = s.recv(4096)
            self.assertTrue(data, "closed before the first delta: %r" % got)
            got += data
        s.close()  # gone after the first delta
        # The fake streams for 2 s more unless chatgate closes the transfer.
        wait_for(lambda: self.fake.call("/aborted")["aborted"] == 1, "the model stream's abort")
        # The abandoned turn was not stored: the next one starts afresh.
        _, answer, _ = chat(port, "leaver", "again")
        self.assertEqual(answer["answer"], "reply to: again (2 messages)")
        log = self.stop_and_log(cg)
        self.assertIn("left; dropped", log)

    def test_beyond_max_concurrent_and_queue_the_user_hears_busy(self):
        port, cg = self.start(extra="        maxConcurrent: 1\n        maxQueue: 0")
        self.fake.script("hold")
        results = {}
        t = threading.Thread(target=lambda: results.setdefault("first", chat(port, "c1", "a")))
        t.start()
        self.addCleanup(t.join, 30)
        self.addCleanup(self.fake.release)
        wait_for(lambda: len(self.fake.requests()) == 1, "the first call at the model")
        second = chat(port, "c2", "b")  # the one slot is taken, no queue
        self.assertEqual(second[0], 503)
        self.assertIn("busy", second[1]["answer"])
        self.assertEqual(len(self.fake.requests()), 1)
        self.fake.release()
        t.join(30)
        self.assertEqual(results["first"][0], 200, results)
        self.assertEqual(results["first"][1]["answer"], "reply to: a (2 messages)")
        self.stop_and_log(cg)


class ProxyAndLimitTest(FakeChecked, unittest.TestCase):
    """http_proxy / no_proxy from chatgate's environment, and the response
    body limit (httpClient.maxResponseBytes)."""

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeOpenAI(MODEL_ARGS)
        cls.proxy = FakeProcess([sys.executable, PROXY])
        cls.proxy_port = cls.proxy.port

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()
        cls.proxy.close()

    def forwarded(self):
        url = "http://127.0.0.1:%d/proxy-count" % self.proxy_port
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.read())

    def run_chat(self, env, query="via proxy", top_extra=""):
        env = dict(env, TEST_MODEL_KEY=KEY)
        with Chatgate(openai_config(self.fake.base + "/v1", "        retries: 0",
                                    top_extra=top_extra), env=env) as cg:
            result = chat(cg.port, "px", query)
            self.assertEqual(cg.stop(), 0)
            return result, cg.log()

    def test_http_proxy_from_the_environment_is_used(self):
        before = self.forwarded()
        proxy = "http://127.0.0.1:%d" % self.proxy_port
        (status, body, _), _ = self.run_chat({"http_proxy": proxy, "no_proxy": ""})
        self.assertEqual(status, 200, body)
        self.assertEqual(body["answer"], "reply to: via proxy (2 messages)")
        self.assertEqual(self.forwarded(), before + 1)
        self.assertEqual(len(self.fake.requests()), 1)

    def test_no_proxy_bypasses_it(self):
        before = self.forwarded()
        proxy = "http://127.0.0.1:%d" % self.proxy_port
        (status, body, _), _ = self.run_chat({"http_proxy": proxy, "no_proxy": "127.0.0.1"})
        self.assertEqual(status, 200, body)
        self.assertEqual(self.forwarded(), before)
        self.assertEqual(len(self.fake.requests()), 1)

    def test_a_response_over_the_limit_is_refused(self):
        (status, body, _), log = self.run_chat(
            {}, query="x" * 3000, top_extra="httpClient:\n  maxResponseBytes: 1024")
        self.assertEqual(status, 503)
        self.assertNotIn("xxx", body["answer"])
        self.assertIn("response body over 1024 bytes", log)


class TlsTest(FakeChecked, unittest.TestCase):
    """HTTPS to the model with a certificate the test makes: verified against
    httpClient.caFile, refused without it (peers are always verified)."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory(prefix="chatgate-tls-")
        cls.cert, cls.key = make_cert(cls.dir.name, "127.0.0.1", "IP:127.0.0.1")
        cls.fake = FakeOpenAI(["--tls", cls.cert, cls.key] + MODEL_ARGS)
        cls.fake.base = "https://127.0.0.1:%d" % cls.fake.port
        cls.fake.context = ssl.create_default_context(cafile=cls.cert)

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()
        cls.dir.cleanup()

    def run_chat(self, top_extra="", env=None):
        with Chatgate(openai_config(self.fake.base + "/v1", "        retries: 0",
                                    top_extra=top_extra),
                      env=dict(env or {}, TEST_MODEL_KEY=KEY)) as cg:
            status, body, _ = chat(cg.port, "tls", "secure hello")
            self.assertEqual(cg.stop(), 0)
            return status, body, cg.log()

    def test_https_with_the_operators_ca_file(self):
        status, body, log = self.run_chat("httpClient:\n  caFile: %s" % self.cert)
        self.assertEqual(status, 200, log)
        self.assertEqual(body["answer"], "reply to: secure hello (2 messages)")

    def test_https_proxy_tunnels_with_connect(self):
        proxy = FakeProcess([sys.executable, PROXY])
        try:
            proxy_port = proxy.port
            url = "http://127.0.0.1:%d/tunnel-count" % proxy_port
            status, body, log = self.run_chat(
                "httpClient:\n  caFile: %s" % self.cert,
                env={"https_proxy": "http://127.0.0.1:%d" % proxy_port, "no_proxy": ""})
            self.assertEqual(status, 200, log)
            self.assertEqual(body["answer"], "reply to: secure hello (2 messages)")
            with urllib.request.urlopen(url, timeout=10) as r:
                self.assertEqual(int(r.read()), 1)
        finally:
            proxy.close()

    def test_http2_is_negotiated_and_the_connection_reused(self):
        fake = FakeProcess(["node", os.path.join(SOURCE_DIR, "tests", "fakes", "fake_h2.js"),
                            self.cert, self.key])
        try:
            h2_port = fake.port
            endpoint = "https://127.0.0.1:%d/v1" % h2_port
            config = openai_config(endpoint, "        retries: 0\n        stream: false",
                                   top_extra="httpClient:\n  caFile: %s" % self.cert)
            with Chatgate(config, env={"TEST_MODEL_KEY": KEY}) as cg:
                for i in range(3):
                    status, body, _ = chat(cg.port, "h2-%d" % i, "hello")
                    self.assertEqual(status, 200, cg.log())
                    self.assertEqual(body["answer"], "reply over HTTP/2.0")
                self.assertEqual(cg.stop(), 0)
            ctx = ssl.create_default_context(cafile=self.cert)
            with urllib.request.urlopen("https://127.0.0.1:%d/stats" % h2_port, timeout=10,
                                        context=ctx) as r:
                stats = json.loads(r.read())
            # Three requests, one TLS connection (plus this /stats one).
            self.assertEqual(stats["versions"], ["2.0"] * 3)
            self.assertEqual(stats["sessions"], 2)
        finally:
            fake.close()

    def test_an_unknown_certificate_is_refused(self):
        status, body, log = self.run_chat()
        self.assertEqual(status, 503)
        self.assertIn("SSL certificate problem", log)
        self.assertNotIn(KEY, log)
        self.assertEqual(len(self.fake.requests()), 0)


if __name__ == "__main__":
    unittest.main()
