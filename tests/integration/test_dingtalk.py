"""dingtalk.so end to end: the real chatgate with its DingTalk channel plugin
against tests/fakes/fake_dingtalk.py (an independent fake of the DingTalk
open platform: the OpenAPI, session webhooks, custom group robots, AI cards
and the Stream gateway over WebSocket) on loopback.

Stream mode: connect (the connections/open body and its subscription), a
robot message answered through its session webhook with the sender
@-mentioned, the ack's exact format, SYSTEM pings, the host's WebSocket
pings at pingIntervalMs and a silent gateway dropped and reconnected,
SYSTEM disconnect and a dropped connection (both reconnect with a new
ticket), a message redelivered after a reconnect answered once, the mention
policy and single chats (a conversationType other than the string "1"
counts as a group), unsupported message types acked, answered
(the catalog's text, or silence) and dropped, answers
over 18,000 bytes split, the OpenAPI when the session webhook has expired
or refuses, an expired access token replaced, and refused credentials in
/readyz.
OpenAPI: the access token fetched again before it expires, 429 / 5xx /
network errors retried maxRetries times, then given up with one log line.
HTTP callback mode: a signed callback answered, and every refusal (bad sign,
stale and future timestamps, missing headers, malformed bodies) logged once
and routed nowhere.
AI cards with openai.so and tests/fakes/fake_openai.py: streamed, finalized,
failed, no model retry once part of the answer is out, and the markdown
fallback. Custom group robots (signed, and a wrong secret reaching the
admin API as 502) and the admin API's OpenAPI sends.
Acknowledged only once the router holds the message (ABI 1.5), in both
modes: a message the router refuses (its conversation's backlog full) gets
503 / a code-500 Stream ack and is answered once DingTalk delivers it again.

Every test ends by asserting that the fake saw no protocol problem in what
chatgate sent (GET /_control/problems), and no secret reaches chatgate's
log. "Nothing else arrived" is proven by a sentinel: a later message whose
answer the fake records after anything the action could still have caused."""
import json
import os
import sys
import time
import unittest

from harness import (DEADLINE, SOURCE_DIR, Chatgate, FakeProcess, gateway_config, get, post_json,
                     wait_for)
from test_redis import RedisServer
from channel_support import (FakeOpenAI, check_refusals_logged, parse_metrics, refusals_accounted,
                             with_durable_queue, yaml_value)

FAKES = os.path.join(SOURCE_DIR, "tests", "fakes")
sys.path.insert(0, FAKES)
import fake_dingtalk  # noqa: E402  (the fake's helpers: callback_sign, robot_sign, robot_message)

# The message catalog's "unsupported" text (core/config/user_messages.cc),
# which dingtalk.so reads through the host (ABI 1.8) when unsupportedReply is unset.
UNSUPPORTED = "Sorry, I can't read this kind of message yet. Please send it as text."

CLIENT_ID = "dingtest7781"
# Distinctive secrets, so that a leak into the log is unmistakable.
CLIENT_SECRET = "dtClient-S3cr3t-6021-egret"
WRONG_SECRET = "dtWrong-S3cr3t-8830-ibis"
ROBOT_SECRET = "SECabc"
WRONG_ROBOT_SECRET = "SECwrong-9142-avocet"
ROBOT_TOKEN = "tok1"
SECRETS = (CLIENT_SECRET, WRONG_SECRET, ROBOT_SECRET, WRONG_ROBOT_SECRET,
           ROBOT_TOKEN, "access_token=" + ROBOT_TOKEN)
BOT_TOPIC = fake_dingtalk.BOT_TOPIC
STAFF = "staff_alice"
PART_LIMIT = 18000  # bytes of one message, as docs/channels/dingtalk.md promises


class FakeDingTalk(FakeProcess):
    def __init__(self, *args):
        super().__init__([sys.executable, os.path.join(FAKES, "fake_dingtalk.py"),
                          "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET] + list(args))
        self.base = "http://127.0.0.1:%d" % self.port

    def get(self, path):
        status, body, _ = get(self.port, path)
        assert status == 200, (path, status, body)
        return json.loads(body)

    def post(self, path, body=None):
        status, doc, _ = post_json(self.port, path, body or {})
        return status, doc

    def control(self, path, body=None):
        status, doc = self.post(path, body)
        assert status == 200, (path, status, doc)
        return doc

    def reset(self):
        self.control("/_control/reset")

    def calls(self, path_prefix=""):
        return [c for c in self.get("/_control/calls")["calls"] if c["path"].startswith(path_prefix)]

    def messages(self, kind=None):
        """Every message delivered, in the order the fake took them."""
        return [m for m in self.get("/_control/messages")["messages"] if kind in (None, m["kind"])]

    def problems(self):
        return self.get("/_control/problems")["problems"]

    def tokens(self):
        return self.get("/_control/tokens")["tokens"]

    def cards(self):
        return self.get("/_control/cards")["cards"]

    def stream(self):
        return self.get("/_control/stream")

    def fail(self, **failure):
        self.control("/_control/fail", failure)

    def session(self, expires_in_ms=90 * 60 * 1000):
        """A fresh session webhook: {"url", "session", "expires_ms"}."""
        return self.control("/_control/session", {"expires_in_ms": expires_in_ms})

    def session_replies(self, session):
        return [m for m in self.messages("session") if m["session"] == session]

    def wait_session_reply(self, session, count=1, timeout=DEADLINE):
        def enough():
            replies = self.session_replies(session)
            return replies if len(replies) >= count else None
        return wait_for(enough, "%d reply(s) through session %s" % (count, session), timeout)

    def wait_messages(self, kind, count=1, timeout=DEADLINE, **match):
        def enough():
            found = [m for m in self.messages(kind) if all(m.get(k) == v for k, v in match.items())]
            return found if len(found) >= count else None
        return wait_for(enough, "%d %s message(s) matching %r" % (count, kind, match), timeout)

    def push(self, data, **options):
        """Pushes a robot message over the Stream connection; returns the frame's messageId."""
        status, doc = self.post("/_control/stream/push", dict(options, data=data))
        assert status == 200 and doc["sent"], (status, doc)
        return doc["message_id"]

    def wait_ack(self, frame_id, timeout=DEADLINE):
        return wait_for(lambda: self.stream()["acks"].get(frame_id), "the ack of frame %s" % frame_id,
                        timeout)

    def tokens_seen(self):
        return {c["token"] for c in self.get("/_control/calls")["calls"] if c.get("token")}


def dingtalk_config(fake_port, model="echo", model_instance=None, router_extra="", **settings):
    """A gateway on port 0 with instance dt (dingtalk.so, Stream mode unless
    `mode` is given), the model (echo.so unless `model_instance` gives
    another) and memory.so. A setting of None leaves the key out;
    `router_extra` is YAML for the router section, already indented."""
    cfg = {"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET,
           "apiBase": "http://127.0.0.1:%d" % fake_port, "mode": "stream"}
    cfg.update(settings)
    lines = ["    - name: dt", "      plugin: dingtalk.so", "      config:"]
    lines += ["        %s: %s" % (k, yaml_value(v)) for k, v in cfg.items() if v is not None]
    instances = "\n".join(lines) + "\n"
    instances += model_instance or "    - name: echo\n      plugin: echo.so\n"
    instances += "    - name: memory\n      plugin: memory.so\n"
    return gateway_config(0, instances, model, "memory", router_extra=router_extra)


def incoming(fake, msg_id, text, conv, group=True, at_bot=True, staff=STAFF, expires_in_ms=None,
             **extra):
    """A robot message with a session webhook the fake issued; returns
    (message body, session id)."""
    session = fake.session(expires_in_ms) if expires_in_ms is not None else fake.session()
    body = fake_dingtalk.robot_message(msg_id, conv, "2" if group else "1", text,
                                       sender_staff_id=staff, at_bot=at_bot,
                                       session_webhook=session["url"],
                                       session_expires_ms=session["expires_ms"],
                                       robot_code=CLIENT_ID, **extra)
    return body, session["session"]


def signed_headers(secret=CLIENT_SECRET, ts_ms=None):
    ts = str(int(time.time() * 1000) if ts_ms is None else ts_ms)
    return {"timestamp": ts, "sign": fake_dingtalk.callback_sign(ts, secret)}


def utf8_len(text):
    return len(text.encode("utf-8"))


class DingTalkCase(unittest.TestCase):
    """Starts chatgate per test; `finish` stops it and checks the log holds
    no secret. The class's fake is reset before each test, and after the
    test's chatgate has stopped it must have seen no protocol problem."""

    fake = None

    def setUp(self):
        if self.fake is not None:
            self.fake.reset()
            # Registered before any chatgate's cleanup, so run after it.
            self.addCleanup(self.assert_no_protocol_problems, self.fake)

    def assert_no_protocol_problems(self, fake):
        problems = fake.problems()
        self.assertEqual(problems, [], "the fake DingTalk saw protocol problems:\n"
                         + json.dumps(problems, indent=1, ensure_ascii=False)[:6000])

    def start(self, config):
        cg = Chatgate(config).start()
        self.addCleanup(cg.__exit__, None, None, None)
        return cg

    def gateway(self, fake=None, **settings):
        cg = self.start(dingtalk_config((fake or self.fake).port, **settings))
        return cg.port, cg

    def finish(self, cg):
        self.assertEqual(cg.stop(), 0, cg.log()[-3000:])
        log = cg.log()
        secrets = list(SECRETS)
        if self.fake is not None:
            # The OpenAPI access tokens this test's gateway was given.
            secrets += sorted(self.fake.tokens_seen())
        for secret in secrets:
            self.assertNotIn(secret, log, "a secret (%s...) in chatgate's log" % secret[:4])
        return log

    def admin_send(self, cg, body):
        csrf = json.loads(get(cg.admin_port, "/admin/api/session")[1])["csrf"]
        status, doc, _ = post_json(cg.admin_port, "/admin/api/send", body, timeout=DEADLINE,
                                   headers={"X-CSRF-Token": csrf})
        return status, doc

    def metric(self, cg, name, **labels):
        status, text, _ = get(cg.admin_port, "/metrics")
        self.assertEqual(status, 200)
        for n, ls, value in parse_metrics(text):
            if n == name and all(ls.get(k) == v for k, v in labels.items()):
                return value
        return 0.0

    def webhook(self, port, body, headers=None):
        return post_json(port, "/webhook/dt", body, headers=headers)


# ------------------------------------------------------------------ Stream mode

class StreamTest(DingTalkCase):
    @classmethod
    def setUpClass(cls):
        cls.fake = FakeDingTalk()

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()

    def setUp(self):
        # The previous test's gateway has closed its connection.
        wait_for(lambda: self.fake.stream()["connections"] == 0, "no open Stream connection")
        super().setUp()

    def connect(self, **settings):
        port, cg = self.gateway(**settings)
        wait_for(lambda: self.fake.stream()["connections"] == 1, "the Stream connection")
        return port, cg

    def test_a_zh_cn_instance_gets_the_chinese_texts(self):
        # The model fails: the failed text reaches the user in Chinese.
        failing = "    - name: echo\n      plugin: echo.so\n      config: {fail: error}\n"
        config = dingtalk_config(self.fake.port, model_instance=failing).replace(
            "      plugin: dingtalk.so\n", "      plugin: dingtalk.so\n      locale: zh-CN\n", 1)
        cg = self.start(config)
        wait_for(lambda: self.fake.stream()["connections"] == 1, "the Stream connection")
        body, session = incoming(self.fake, "msg_zh1", " 你好", "cid_zh")
        self.fake.push(body)
        [reply] = self.fake.wait_session_reply(session)
        self.assertEqual(reply["content"], {"content": "抱歉，回答时出了点问题，请重试。"})
        # What dingtalk.so says on its own (ABI 1.8's user_text).
        body, session = incoming(self.fake, "msg_zh_voice", "", "cid_zh_voice", msgtype="audio",
                                 content={"duration": "1000", "downloadCode": "dc_zh"})
        self.fake.push(body)
        [reply] = self.fake.wait_session_reply(session)
        self.assertEqual(reply["content"], {"content": "抱歉，我暂时还看不懂这类消息，请发送文字。"})
        self.finish(cg)

    def reconnected(self, connects):
        def check():
            s = self.fake.stream()
            return s["connects"] == connects and s["connections"] == 1
        return check

    def test_connects_answers_through_the_session_webhook_and_acks(self):
        port, cg = self.connect()
        stream = self.fake.stream()
        self.assertEqual(stream["connects"], 1, stream)
        [opened] = stream["opens"]
        self.assertEqual(opened["status"], 200, opened)
        self.assertEqual((opened["body"]["clientId"], opened["body"]["clientSecret"]),
                         (CLIENT_ID, CLIENT_SECRET))
        self.assertIn({"type": "CALLBACK", "topic": BOT_TOPIC}, opened["subscriptions"])
        self.assertEqual(stream["tickets_used"], [opened["ticket"]])
        self.assertEqual(stream["rejections"], [])

        body, session = incoming(self.fake, "msg_s1", " what time is it", "cid_stream1")
        frame_id = self.fake.push(body)
        [reply] = self.fake.wait_session_reply(session)
        self.assertEqual(reply["msgtype"], "text")
        self.assertEqual(reply["content"], {"content": "echo: what time is it (turn 1)"})
        self.assertEqual(reply["atUserIds"], [STAFF])

        ack = self.fake.wait_ack(frame_id)
        self.assertEqual(ack["problems"], [], ack)
        # Exactly the ack's fields (the fake adds message_id, data_json and problems).
        frame = {k: v for k, v in ack.items() if k not in ("message_id", "data_json", "problems")}
        self.assertEqual(frame, {
            "code": 200, "headers": {"messageId": frame_id, "contentType": "application/json"},
            "message": "OK", "data": frame.get("data")}, ack)
        self.assertIsInstance(frame["data"], str)
        self.assertEqual(ack["data_json"], {"response": None}, ack)

        # The same conversation goes on.
        body, session = incoming(self.fake, "msg_s2", " and now", "cid_stream1")
        self.fake.push(body)
        [reply] = self.fake.wait_session_reply(session)
        self.assertEqual(reply["content"], {"content": "echo: and now (turn 2)"})
        self.assertTrue(all(not a["problems"] for a in self.fake.stream()["acks"].values()))
        # Ready once the Stream connection is open.
        wait_for(lambda: get(port, "/readyz")[0] == 200, "/readyz 200")
        # A Stream-mode instance takes no callbacks.
        status, _, _ = self.webhook(port, body, signed_headers())
        self.assertEqual(status, 403)
        self.assertEqual([m["kind"] for m in self.fake.messages()], ["session", "session"])
        log = self.finish(cg)
        self.assertEqual(log.count("refused a callback"), 1, log)

    def test_system_ping_is_answered_with_the_same_opaque(self):
        port, cg = self.connect()
        sent = self.fake.control("/_control/stream/ping")
        ping = wait_for(lambda: [p for p in self.fake.stream()["pings"]
                                 if p["message_id"] == sent["message_id"] and p["answered"]],
                        "the ping's answer")[0]
        self.assertTrue(ping["ok"], ping)
        ack = self.fake.stream()["acks"][sent["message_id"]]
        self.assertEqual(ack["problems"], [], ack)
        self.assertEqual(ack["code"], 200, ack)
        self.assertEqual(ack["data_json"], {"opaque": sent["opaque"]}, ack)
        # Still connected, still answering.
        self.assertEqual(self.fake.stream()["connects"], 1)
        body, session = incoming(self.fake, "msg_after_ping", "still there?", "cid_ping")
        self.fake.push(body)
        self.fake.wait_session_reply(session)
        self.finish(cg)

    def test_websocket_pings_keep_the_connection_and_a_silent_gateway_is_left(self):
        # The docs: the host pings every pingIntervalMs (60 s; 1 s here) and
        # drops a connection silent for two intervals, then reconnects.
        interval = 1.0
        port, cg = self.connect(pingIntervalMs=int(interval * 1000))
        first = self.fake.stream()["clients"][-1]["connection_id"]

        def pings(connection_id):
            return [p for p in self.fake.stream()["ws_ping_log"] if p["connection_id"] == connection_id]
        got = wait_for(lambda: (lambda p: p if len(p) >= 3 else None)(pings(first)),
                       "three WebSocket pings")
        gaps = [b["at"] - a["at"] for a, b in zip(got, got[1:])]
        # Paced by the interval (5x margins: not a burst, not a stall).
        self.assertTrue(all(interval / 5 <= g <= interval * 5 for g in gaps), gaps)
        # Answered pings keep the connection: three intervals, still the first.
        stream = self.fake.stream()
        self.assertEqual((stream["connects"], stream["connections"]), (1, 1), stream["clients"])
        # The gateway goes silent: no pong, no frame.
        self.fake.control("/_control/stream/config", {"answer_pings": False})
        wait_for(lambda: not [c for c in self.fake.stream()["clients"]
                              if c["connection_id"] == first][0]["open"],
                 "chatgate to leave the silent connection")
        self.fake.control("/_control/stream/config", {"answer_pings": True})
        old = [c for c in self.fake.stream()["clients"] if c["connection_id"] == first][0]
        self.assertFalse(old["closed_by_server"], old)
        # Not before two intervals of silence: chatgate cannot have heard the
        # last pong before the fake read the ping it answered (less 10% for
        # the timers' granularity), nor closed after the fake saw the close.
        answered = [p["at"] for p in pings(first) if p["answered"]]
        self.assertGreaterEqual(old["closed_at"] - answered[-1], 2 * interval * 0.9,
                                (old, pings(first)))
        cg.wait_log("no frame from the server for")
        wait_for(self.reconnected(2), "the reconnect with a new ticket")
        stream = self.fake.stream()
        self.assertEqual(len(set(stream["tickets_used"])), 2, stream["tickets_used"])
        # The new connection works: a message answered through it.
        body, session = incoming(self.fake, "msg_after_silence", "back?", "cid_silence")
        self.fake.wait_ack(self.fake.push(body))
        [reply] = self.fake.wait_session_reply(session)
        self.assertEqual(reply["content"], {"content": "echo: back? (turn 1)"})
        self.finish(cg)

    def test_system_disconnect_reconnects_with_a_new_ticket(self):
        port, cg = self.connect()
        # DingTalk closes 10 s after its notice; the client leaves before.
        delay = 10
        sent = self.fake.control("/_control/stream/disconnect", {"delay": delay, "reason": "restart"})
        self.assertEqual(sent["sent"], 1, sent)
        wait_for(self.reconnected(2), "the reconnect after SYSTEM disconnect")
        stream = self.fake.stream()
        self.assertEqual(len(stream["tickets_used"]), 2, stream)
        self.assertEqual(len(set(stream["tickets_used"])), 2, stream["tickets_used"])
        self.assertEqual([o["status"] for o in stream["opens"]], [200, 200], stream["opens"])
        self.assertEqual(stream["rejections"], [])
        # The client closed the old connection itself, well before the
        # gateway would have (5x margin).
        [record] = stream["disconnects"]
        self.assertIsNotNone(record["client_left_after"], record)
        self.assertLess(record["client_left_after"], delay / 5, record)
        body, session = incoming(self.fake, "msg_after_disc", "after the disconnect", "cid_disc")
        frame_id = self.fake.push(body)
        [reply] = self.fake.wait_session_reply(session)
        self.assertEqual(reply["content"], {"content": "echo: after the disconnect (turn 1)"})
        self.assertEqual(self.fake.wait_ack(frame_id)["problems"], [])
        self.assertEqual(self.fake.stream()["connections"], 1)
        self.finish(cg)

    def test_reconnects_after_a_drop_and_answers_a_redelivery_once(self):
        port, cg = self.connect()
        first, session = incoming(self.fake, "msg_redeliver", "before the drop", "cid_drop")
        first_frame = self.fake.push(first)
        self.fake.wait_session_reply(session)
        self.fake.wait_ack(first_frame)
        self.assertEqual(self.fake.post("/_control/stream/drop")[1], {"dropped": 1})
        wait_for(self.reconnected(2), "the reconnect after a drop")
        stream = self.fake.stream()
        self.assertEqual(len(set(stream["tickets_used"])), 2, stream["tickets_used"])
        # DingTalk delivers the first message again, on the new connection.
        again = self.fake.push(first)
        self.assertNotEqual(again, first_frame)
        ack = self.fake.wait_ack(again)
        self.assertEqual((ack["code"], ack["problems"]), (200, []), ack)
        # Sentinel: a later message in the same conversation. Its lane runs
        # after the redelivery's, so an answer to that would come first.
        body, barrier = incoming(self.fake, "msg_drop_barrier", "after the drop", "cid_drop")
        self.fake.push(body)
        [reply] = self.fake.wait_session_reply(barrier)
        self.assertEqual(reply["content"], {"content": "echo: after the drop (turn 2)"})
        self.assertEqual([(m["kind"], m.get("session")) for m in self.fake.messages()],
                         [("session", session), ("session", barrier)])
        self.finish(cg)

    def test_group_messages_need_the_mention_single_chats_do_not(self):
        port, cg = self.connect()
        body, ignored = incoming(self.fake, "msg_no_at", "just chatting", "cid_policy",
                                 at_bot=False)
        frame_id = self.fake.push(body)
        # Acked all the same: DingTalk must not deliver it again.
        self.assertEqual(self.fake.wait_ack(frame_id)["code"], 200)
        body, single = incoming(self.fake, "msg_single", "hello bot", "cid_single", group=False,
                                at_bot=False)
        self.fake.push(body)
        [reply] = self.fake.wait_session_reply(single)
        self.assertEqual(reply["content"], {"content": "echo: hello bot (turn 1)"})
        self.assertEqual(reply["atUserIds"], [])
        # Sentinel: the ignored message was never routed: the next, mentioning, is turn 1.
        body, mentioned = incoming(self.fake, "msg_at", " now with @", "cid_policy")
        self.fake.push(body)
        [reply] = self.fake.wait_session_reply(mentioned)
        self.assertEqual(reply["content"], {"content": "echo: now with @ (turn 1)"})
        self.assertEqual([m.get("session") for m in self.fake.messages()], [single, mentioned])
        self.assertEqual(self.metric(cg, "chatgate_messages_dropped_total", channel="dt",
                                     reason="policy"), 1)
        self.finish(cg)

    def test_a_conversation_type_not_the_string_1_is_a_group(self):
        # The policy fails closed: conversationType as a number (2, or even
        # 1), unknown or missing makes a group message, and one that does not
        # mention the robot is acked, never answered, and counted dropped.
        port, cg = self.connect()
        shapes = [("num2", 2), ("num1", 1), ("unknown", "3"), ("missing", None)]
        for name, value in shapes:
            body, session = incoming(self.fake, "msg_ct_" + name, "no mention " + name,
                                     "cid_ct", group=False, at_bot=False)
            if value is None:
                del body["conversationType"]
            else:
                body["conversationType"] = value
            self.assertEqual(self.fake.wait_ack(self.fake.push(body))["code"], 200)
        # Sentinel: the same conversation, mentioning the robot, is turn 1,
        # so none of the above was routed, and it is the only answer.
        body, mentioned = incoming(self.fake, "msg_ct_at", "with the mention", "cid_ct")
        body["conversationType"] = 2
        self.fake.push(body)
        [reply] = self.fake.wait_session_reply(mentioned)
        self.assertEqual(reply["content"], {"content": "echo: with the mention (turn 1)"})
        self.assertEqual(reply["atUserIds"], [STAFF])  # answered as in a group
        self.assertEqual([m.get("session") for m in self.fake.messages()], [mentioned])
        self.assertEqual(self.metric(cg, "chatgate_messages_dropped_total", channel="dt",
                                     reason="policy"), len(shapes))
        self.finish(cg)

    def test_unsupported_message_types_are_acked_answered_and_dropped(self):
        # The docs: text, richText and pictures are read; other types are
        # acknowledged (so that DingTalk does not deliver them again),
        # answered with the catalog's "unsupported" text through the
        # session webhook, not routed, and counted as reason="unsupported".
        port, cg = self.connect()
        kinds = {"audio": {"duration": "4000", "downloadCode": "dc_audio", "recognition": "hello"},
                 "video": {"duration": "12", "videoType": "mp4", "downloadCode": "dc_video"},
                 "file": {"fileName": "a.pdf", "downloadCode": "dc_file", "spaceId": "1",
                          "fileId": "2"}}
        sessions = []
        for kind, content in kinds.items():
            body, session = incoming(self.fake, "msg_un_" + kind, "", "cid_unsupported",
                                     msgtype=kind, content=content)
            self.assertEqual(self.fake.wait_ack(self.fake.push(body))["code"], 200, kind)
            [reply] = self.fake.wait_session_reply(session)
            self.assertEqual(reply["content"], {"content": UNSUPPORTED}, kind)
            sessions.append(session)
        # Sentinel: the same conversation's next message is its first turn.
        body, session = incoming(self.fake, "msg_un_text", " and text?", "cid_unsupported")
        self.fake.push(body)
        [reply] = self.fake.wait_session_reply(session)
        self.assertEqual(reply["content"], {"content": "echo: and text? (turn 1)"})
        self.assertEqual([m.get("session") for m in self.fake.messages()], sessions + [session])
        self.assertEqual(self.metric(cg, "chatgate_messages_dropped_total", channel="dt",
                                     reason="unsupported"), len(kinds))
        self.finish(cg)

    def test_an_empty_unsupported_reply_stays_silent(self):
        port, cg = self.connect(unsupportedReply="")
        body, _ = incoming(self.fake, "msg_quiet_audio", "", "cid_quiet", msgtype="audio",
                           content={"duration": "1000", "downloadCode": "dc_q"})
        self.assertEqual(self.fake.wait_ack(self.fake.push(body))["code"], 200)
        body, session = incoming(self.fake, "msg_quiet_text", " hi", "cid_quiet")
        self.fake.push(body)
        [reply] = self.fake.wait_session_reply(session)
        self.assertEqual(reply["content"], {"content": "echo: hi (turn 1)"})
        # Nothing was sent for the audio message: the text's answer is the only one.
        self.assertEqual([m.get("session") for m in self.fake.messages()], [session])
        self.finish(cg)

    def check_parts(self, parts, answer):
        sizes = [utf8_len(p) for p in parts]
        self.assertTrue(all(0 < n <= PART_LIMIT for n in sizes), sizes)
        self.assertGreaterEqual(len(parts), -(-utf8_len(answer) // PART_LIMIT), sizes)
        self.assertEqual("".join(parts), answer, sizes)  # in order, nothing lost

    def test_answers_over_18000_bytes_go_as_several_messages(self):
        port, cg = self.connect()
        # Three-byte characters after a two-byte start, so that a cut at
        # exactly 18,000 bytes would fall inside one; no line break.
        text = "ab" + "\u4e2d" * 13000
        body, session = incoming(self.fake, "msg_long_cjk", text, "cid_long_cjk")
        self.fake.push(body)
        answer = "echo: %s (turn 1)" % text
        # Sentinel: the next turn's short answer comes after every part.
        body, barrier = incoming(self.fake, "msg_long_next", "short", "cid_long_cjk")
        self.fake.push(body)
        self.fake.wait_session_reply(barrier)
        parts = self.fake.session_replies(session)
        self.assertTrue(all(p["atUserIds"] == [STAFF] and p["msgtype"] == "text" for p in parts))
        self.check_parts([p["content"]["content"] for p in parts], answer)
        self.assertEqual([m.get("session") for m in self.fake.messages()],
                         [session] * len(parts) + [barrier])
        # Lines of ASCII through the OpenAPI (the single chat's session
        # webhook has expired): the same rule.
        text = "\n".join("line %05d of a long answer, with some words to fill it" % i
                         for i in range(800))
        body, gone = incoming(self.fake, "msg_long_lines", text, "cid_long_lines", group=False,
                              staff="staff_long", expires_in_ms=1000)
        self.fake.push(body)
        answer = "echo: %s (turn 1)" % text
        body, gone2 = incoming(self.fake, "msg_long_lines_next", "short", "cid_long_lines",
                               group=False, staff="staff_long", expires_in_ms=1000)
        self.fake.push(body)
        sent = self.fake.wait_messages("o2o", userIds=["staff_long"],
                                       msgParam={"content": "echo: short (turn 2)"})
        o2o = self.fake.messages("o2o")
        self.assertEqual(o2o[-1]["msgParam"], {"content": "echo: short (turn 2)"}, sent)
        self.check_parts([m["msgParam"]["content"] for m in o2o[:-1]], answer)
        self.finish(cg)

    def test_expired_session_webhooks_fall_back_to_the_openapi(self):
        port, cg = self.connect()
        # A group message whose session webhook ends in 3 s: too close to use.
        body, short = incoming(self.fake, "msg_exp_group", " group late", "cid_exp_group",
                               expires_in_ms=3000)
        self.fake.push(body)
        [sent] = self.fake.wait_messages("group", openConversationId="cid_exp_group")
        self.assertEqual(sent["robotCode"], CLIENT_ID)
        self.assertEqual(sent["msgKey"], "sampleText")
        self.assertEqual(sent["msgParam"], {"content": "echo: group late (turn 1)"})
        self.assertRegex(sent["token"], r"^tok-\d+$")
        # A single chat whose session webhook DingTalk already retired.
        body, gone = incoming(self.fake, "msg_exp_single", "single late", "cid_exp_single",
                              group=False, staff="staff_bob")
        self.fake.control("/_control/session/expire", {"session": gone})
        self.fake.push(body)
        [sent1] = self.fake.wait_messages("o2o", userIds=["staff_bob"])
        self.assertEqual(sent1["robotCode"], CLIENT_ID)
        self.assertEqual(sent1["msgKey"], "sampleText")
        self.assertEqual(sent1["msgParam"], {"content": "echo: single late (turn 1)"})
        self.assertEqual(sent1["token"], sent["token"])  # the cached token
        self.assertEqual(self.fake.messages("session"), [])
        # Each OpenAPI call carried the token; it was fetched once.
        api_calls = self.fake.calls("/v1.0/robot/")
        self.assertEqual([(c["path"], c["status"]) for c in api_calls],
                         [("/v1.0/robot/groupMessages/send", 200),
                          ("/v1.0/robot/oToMessages/batchSend", 200)], api_calls)
        self.assertTrue(all(c["headers"].get("x-acs-dingtalk-access-token") == sent["token"]
                            for c in api_calls), api_calls)
        self.assertEqual(len(self.fake.calls("/v1.0/oauth2/accessToken")), 1)
        # The retired webhook was tried first and refused.
        tried = self.fake.calls("/robot/sendBySession?session=" + gone)
        self.assertEqual([c.get("errcode") for c in tried], [300001], tried)
        self.assertEqual(self.fake.calls("/robot/sendBySession?session=" + short), [])
        self.finish(cg)

    def test_an_expired_access_token_is_replaced(self):
        port, cg = self.connect()
        body, gone = incoming(self.fake, "msg_tok1", "first", "cid_tok1", group=False,
                              staff="staff_tok1", expires_in_ms=1000)
        self.fake.push(body)
        [first] = self.fake.wait_messages("o2o", userIds=["staff_tok1"])
        old = first["token"]
        self.fake.control("/_control/expire_tokens")
        body, gone = incoming(self.fake, "msg_tok2", "second", "cid_tok2", group=False,
                              staff="staff_tok2", expires_in_ms=1000)
        self.fake.push(body)
        [second] = self.fake.wait_messages("o2o", userIds=["staff_tok2"])
        self.assertEqual(second["msgParam"], {"content": "echo: second (turn 1)"})
        self.assertNotEqual(second["token"], old)
        attempts = self.fake.calls("/v1.0/robot/oToMessages/batchSend")
        self.assertEqual([(c["token"], c["status"], c.get("code")) for c in attempts],
                         [(old, 200, None), (old, 400, "InvalidAuthentication"),
                          (second["token"], 200, None)], attempts)
        self.assertEqual(len(self.fake.calls("/v1.0/oauth2/accessToken")), 2)
        self.finish(cg)


class StreamRefusedTest(DingTalkCase):
    @classmethod
    def setUpClass(cls):
        cls.fake = FakeDingTalk()

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()

    def test_refused_credentials_fail_readiness_without_a_retry_loop(self):
        port, cg = self.gateway(clientSecret=WRONG_SECRET)

        def failed():
            status, body, _ = get(port, "/readyz")
            if status != 503:
                return None
            items = [i for i in json.loads(body)["notReady"] if i["instance"] == "dt"]
            return items if items and "Stream connection refused" in items[0]["reason"] else None
        # Failed, not degraded: a reconnect (which says "degraded ...;
        # reconnecting" in the same turn) was not scheduled.
        [item] = wait_for(failed, "/readyz 503 naming dt with 'Stream connection refused'")
        self.assertEqual(item["state"], "failed", item)
        # Sentinel: a chat answered after the refusal; the log thread writes
        # in order, so a reconnect's line would be in before its answer's.
        status, doc, _ = post_json(port, "/api/chat", {"userId": "u1", "query": "still up?"},
                                   timeout=DEADLINE)
        self.assertEqual((status, doc), (200, {"answer": "echo: still up? (turn 1)"}))
        self.assertEqual(get(port, "/healthz")[0], 200)
        stream = self.fake.stream()
        self.assertEqual([o["status"] for o in stream["opens"]], [401], stream["opens"])
        self.assertEqual(stream["connects"], 0)
        log = self.finish(cg)
        errors = [l for l in log.splitlines() if " error " in l and "Stream connection refused" in l]
        self.assertEqual(len(errors), 1, log)
        self.assertNotIn("reconnecting", log)
        self.assertEqual([o["status"] for o in self.fake.stream()["opens"]], [401])


# ------------------------------------------------------------------ OpenAPI

class OpenApiTest(DingTalkCase):
    """The OpenAPI robot sends, driven by the admin API's proactive sends and
    by replies whose session webhook has expired."""

    # An access token lives 8 s here: less than twice the documented
    # 5-minute margin, so it is kept for half its life (4 s).
    TOKEN_LIFE = 8

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeDingTalk("--token-expire", str(cls.TOKEN_LIFE))

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()

    def send_group(self, cg, conv, text):
        return self.admin_send(cg, {"channel": "dt", "conversationId": conv,
                                    "conversationType": "group", "text": text})

    def new_tokens(self, before):
        return [t for t in self.fake.tokens() if t["token"] not in before]

    def test_the_access_token_is_fetched_again_before_it_expires(self):
        before = {t["token"] for t in self.fake.tokens()}  # the fake keeps them across tests
        port, cg = self.gateway(mode="webhook")
        self.assertEqual(self.send_group(cg, "cid_tok_a", "one"), (200, {"sent": True, "channel": "dt"}))
        [first] = self.new_tokens(before)
        self.assertEqual(first["expire_in"], self.TOKEN_LIFE)
        # Timing is the behaviour: wait until three quarters of the token's
        # life have passed (a second past the refresh point, two before the end).
        wait_for(lambda: time.time() >= first["issued_at"] + self.TOKEN_LIFE * 0.75,
                 "three quarters of the token's life", timeout=self.TOKEN_LIFE)
        self.assertEqual(self.send_group(cg, "cid_tok_b", "two")[0], 200)
        tokens = self.new_tokens(before)
        self.assertEqual(len(tokens), 2, tokens)
        second = tokens[1]
        # Fetched before the first one ran out, and used from then on.
        self.assertLess(second["issued_at"], first["expires_at"], tokens)
        self.assertEqual(self.send_group(cg, "cid_tok_c", "three")[0], 200)
        sent = self.fake.messages("group")
        self.assertEqual([(m["openConversationId"], m["token"]) for m in sent],
                         [("cid_tok_a", first["token"]), ("cid_tok_b", second["token"]),
                          ("cid_tok_c", second["token"])], sent)
        # Never refused: no call went out with a token DingTalk no longer took.
        self.assertEqual([c["status"] for c in self.fake.calls("/v1.0/robot/")], [200, 200, 200])
        self.assertEqual(len(self.fake.calls("/v1.0/oauth2/accessToken")), 2)
        self.finish(cg)

    def test_429_5xx_and_network_errors_are_retried(self):
        port, cg = self.gateway(mode="webhook")
        path = "/v1.0/robot/groupMessages/send"
        self.fake.fail(path=path, count=1, status=429,
                       body={"code": "Forbidden.AccessDenied.QpsLimitForApi", "message": "qps"})
        self.fake.fail(path=path, count=1, status=503)
        self.fake.fail(path=path, count=1, drop=True)
        status, doc = self.send_group(cg, "cid_retry", "deploy at 5")
        self.assertEqual((status, doc), (200, {"sent": True, "channel": "dt"}))
        # Sentinel: a second send, after which nothing of the first may come.
        self.assertEqual(self.send_group(cg, "cid_retry_next", "next")[0], 200)
        calls = self.fake.calls(path)
        self.assertEqual([(c["body"]["openConversationId"], c["status"]) for c in calls],
                         [("cid_retry", 429), ("cid_retry", 503), ("cid_retry", 0),
                          ("cid_retry", 200), ("cid_retry_next", 200)], calls)
        self.assertEqual([(m["openConversationId"], m["msgParam"]) for m in self.fake.messages()],
                         [("cid_retry", {"content": "deploy at 5"}),
                          ("cid_retry_next", {"content": "next"})])
        self.finish(cg)

    def test_retries_end_after_max_retries_with_one_log_line(self):
        # A reply whose session webhook has expired goes by the OpenAPI,
        # which fails 1 + maxRetries (documented default 3) times.
        port, cg = self.gateway(mode="webhook")
        path = "/v1.0/robot/oToMessages/batchSend"
        self.fake.fail(path=path, count=4, status=503)
        body, _ = incoming(self.fake, "msg_exhaust", "lost", "cid_exhaust", group=False,
                           staff="staff_ex", expires_in_ms=1000)
        self.assertEqual(self.webhook(port, body, signed_headers())[0], 200)
        line = "message to conversation cid_exhaust failed: injected failure (HTTP 503"
        cg.wait_log(line)
        # Sentinel: the same conversation's next message (its turn stored,
        # so this is turn 2) is answered, and nothing came in between.
        body, _ = incoming(self.fake, "msg_exhaust_next", "again", "cid_exhaust", group=False,
                           staff="staff_ex", expires_in_ms=1000)
        self.assertEqual(self.webhook(port, body, signed_headers())[0], 200)
        self.fake.wait_messages("o2o", userIds=["staff_ex"])
        self.assertEqual([(m["userIds"], m["msgParam"]) for m in self.fake.messages()],
                         [(["staff_ex"], {"content": "echo: again (turn 2)"})])
        calls = self.fake.calls(path)
        self.assertEqual([(c["body"]["msgParam"], c["status"]) for c in calls],
                         [('{"content":"echo: lost (turn 1)"}', 503)] * 4 +
                         [('{"content":"echo: again (turn 2)"}', 200)], calls)
        log = self.finish(cg)
        self.assertEqual([l for l in log.splitlines() if "failed: " in l and "dt" in l
                          and " error " in l and "cid_exhaust" in l and "message to" in l],
                         [l for l in log.splitlines() if line in l], log)
        self.assertEqual(log.count(line), 1, log)


# ------------------------------------------------------------------ HTTP callback mode

class CallbackTest(DingTalkCase):
    @classmethod
    def setUpClass(cls):
        cls.fake = FakeDingTalk()

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()

    def test_a_signed_callback_is_answered(self):
        port, cg = self.gateway(mode="webhook")
        body, session = incoming(self.fake, "msg_cb1", " over http", "cid_cb1")
        status, doc, _ = self.webhook(port, body, signed_headers())
        self.assertEqual((status, doc), (200, {}))
        [reply] = self.fake.wait_session_reply(session)
        self.assertEqual(reply["content"], {"content": "echo: over http (turn 1)"})
        self.assertEqual(reply["atUserIds"], [STAFF])
        # Delivered again (DingTalk retries): accepted, answered once.
        status, doc, _ = self.webhook(port, body, signed_headers())
        self.assertEqual(status, 200, doc)
        # Sentinel: the conversation's next message is turn 2, and its answer
        # is the next message the fake saw.
        body2, barrier = incoming(self.fake, "msg_cb2", " next", "cid_cb1")
        self.webhook(port, body2, signed_headers())
        [reply] = self.fake.wait_session_reply(barrier)
        self.assertEqual(reply["content"], {"content": "echo: next (turn 2)"})
        self.assertEqual([m.get("session") for m in self.fake.messages()], [session, barrier])
        # No Stream connection in callback mode.
        self.assertEqual(self.fake.stream()["opens"], [])
        self.finish(cg)

    def test_every_refusal_is_logged_once_and_routes_nothing(self):
        port, cg = self.gateway(mode="webhook", timestampWindowSeconds=60)
        conv = "cid_refusals"
        now = int(time.time() * 1000)

        def good(mid):
            return json.dumps(incoming(self.fake, mid, " should not pass", conv)[0])
        # (name, cause: the reason up to its first ':', status, body, headers)
        cases = [
            ("bad sign", "sign", 401, good("msg_r_sig"), signed_headers(secret="not-the-secret")),
            ("stale timestamp", "ts", 401, good("msg_r_stale"), signed_headers(ts_ms=now - 120000)),
            ("future timestamp", "ts", 401, good("msg_r_future"),
             signed_headers(ts_ms=now + 120000)),
            ("missing headers", "headers", 401, good("msg_r_none"), {}),
            ("missing sign", "headers", 401, good("msg_r_nosign"), {"timestamp": str(now)}),
            ("malformed JSON", "malformed", 400, '{"msgId": "msg_r_json", ', signed_headers()),
            ("not a robot message", "malformed", 400, '{"hello": "world"}', signed_headers()),
        ]

        def send(case):
            return self.webhook(port, case[3], case[4])[0]

        refusals = check_refusals_logged(self, cases, send, cg.log)
        # Sentinel: a good callback in the same conversation is its first
        # turn and the only message the fake saw.
        body, session = incoming(self.fake, "msg_r_ok", " now pass", conv)
        status, doc, _ = self.webhook(port, body, signed_headers())
        self.assertEqual((status, doc), (200, {}))
        [reply] = self.fake.wait_session_reply(session)
        self.assertEqual(reply["content"], {"content": "echo: now pass (turn 1)"})
        self.assertEqual([m.get("session") for m in self.fake.messages()], [session])
        log = self.finish(cg)
        self.assertEqual(refusals_accounted(log), refusals, log)


# ------------------------------------------------------------------ AI cards

class AiCardCase(DingTalkCase):
    """A fake DingTalk and a fake model shared by a class's tests, and the
    wait for an AI card to end."""
    TEMPLATE = "tpl_ai.schema"

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeDingTalk()
        cls.model = FakeOpenAI()

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()
        cls.model.close()

    def setUp(self):
        super().setUp()
        self.model.reset()

    def final_card(self, out_track_id, timeout=DEADLINE):
        def ended():
            card = self.fake.cards().get(out_track_id)
            return card if card and card["state"] in ("finished", "failed") else None
        return wait_for(ended, "card %s to end" % out_track_id, timeout)


class AiCardTest(AiCardCase):
    def gateway(self, retries=0, **settings):
        gpt = self.model.instance_yaml()
        if retries:
            gpt = gpt.replace("retries: 0", "retries: %d" % retries)
            self.assertIn("retries: %d" % retries, gpt)
        return super().gateway(model="gpt", model_instance=gpt, mode="webhook",
                               replyStyle="ai-card", cardTemplateId=self.TEMPLATE,
                               streamUpdateMs=100, **settings)

    def sentinel(self, port, conv, msg_id, **options):
        """Sends the conversation's next message and waits for its card to
        finish: whatever the previous answer could still cause has come."""
        body, _ = incoming(self.fake, msg_id, " sentinel", conv, **options)
        self.assertEqual(self.webhook(port, body, signed_headers())[0], 200)
        card = self.final_card("cg_" + msg_id)
        self.assertEqual(card["state"], "finished", card)
        return card

    def test_answer_streams_into_one_card_then_finalizes_it(self):
        port, cg = self.gateway()
        self.model.script("trickle:150")
        text = "tell me a longer story please"
        answer = "reply to: %s (1 messages)" % text
        body, session = incoming(self.fake, "msg_card1", " " + text, "cid_card1")
        self.assertEqual(self.webhook(port, body, signed_headers())[0], 200)
        self.final_card("cg_msg_card1")
        self.sentinel(port, "cid_card1", "msg_card1_next")
        cards = self.fake.cards()
        self.assertEqual(sorted(cards), ["cg_msg_card1", "cg_msg_card1_next"], cards)
        card = cards["cg_msg_card1"]
        self.assertEqual(len(self.fake.calls("/v1.0/card/instances/createAndDeliver")), 2)
        self.assertEqual(card["cardTemplateId"], self.TEMPLATE)
        self.assertEqual(card["spaces"], [{"spaceType": "IM_GROUP", "spaceId": "cid_card1"}])
        self.assertTrue(all(r["success"] for r in card["deliverResults"]), card["deliverResults"])
        updates = card["updates"]
        self.assertGreater(len(updates), 1, updates)
        self.assertTrue(all(u["type"] == "streaming" and u["key"] == "content" and u["isFull"]
                            for u in updates), updates)
        last = updates[-1]
        self.assertTrue(last["isFinalize"], updates)
        self.assertFalse(last["isError"], updates)
        self.assertEqual(last["content"], answer)
        self.assertEqual(card["content"]["content"], answer)
        self.assertEqual(card["state"], "finished")
        # Nothing after the final update, and no earlier one finalized.
        self.assertEqual(card["late_updates"], 0, updates)
        self.assertFalse(any(u["isFinalize"] for u in updates[:-1]), updates)
        # Each update shows a prefix of the answer, growing.
        contents = [u["content"] for u in updates]
        self.assertTrue(all(answer.startswith(c) for c in contents), contents)
        self.assertEqual(contents, sorted(contents, key=len), contents)
        # The card is the answer: no other message.
        self.assertEqual(self.fake.messages(), [])
        self.finish(cg)

    def test_model_error_finalizes_the_card_as_failed(self):
        port, cg = self.gateway()
        self.model.script(*["status:500"] * 4)
        body, session = incoming(self.fake, "msg_card_err", "fail please", "cid_card_err",
                                 group=False, staff="staff_carol")
        self.assertEqual(self.webhook(port, body, signed_headers())[0], 200)
        self.final_card("cg_msg_card_err")
        self.model.script("ok")
        self.sentinel(port, "cid_card_err", "msg_card_err_next", group=False, staff="staff_carol")
        card = self.fake.cards()["cg_msg_card_err"]
        self.assertEqual(card["spaces"], [{"spaceType": "IM_ROBOT", "spaceId": "staff_carol"}])
        self.assertEqual(card["state"], "failed", card["updates"])
        last = card["updates"][-1]
        self.assertTrue(last["isFinalize"] and last["isError"], card["updates"])
        self.assertIn("try again", last["content"], card["updates"])
        self.assertEqual(card["late_updates"], 0, card["updates"])
        self.assertEqual(len(self.model.requests()), 2)  # retries: 0, and the sentinel's
        self.assertEqual(self.fake.messages(), [])
        self.finish(cg)

    def test_no_model_retry_once_part_of_the_answer_is_out(self):
        # openai.so retries (here twice) only while nothing of the answer
        # has reached the user: a stream that breaks after two deltas (the
        # card already created and delivered) ends this answer's one card as
        # failed, with no second answer and no second card.
        port, cg = self.gateway(retries=2)
        self.model.script("drop")
        body, session = incoming(self.fake, "msg_card_drop", "break after a while", "cid_card_drop")
        self.assertEqual(self.webhook(port, body, signed_headers())[0], 200)
        card = self.final_card("cg_msg_card_drop")
        # Sentinel: the conversation's next answer (its own card, finished).
        self.sentinel(port, "cid_card_drop", "msg_card_drop_next")
        cards = self.fake.cards()
        self.assertEqual(sorted(cards), ["cg_msg_card_drop", "cg_msg_card_drop_next"], cards)
        card = cards["cg_msg_card_drop"]
        self.assertEqual(card["state"], "failed", card["updates"])
        last = card["updates"][-1]
        self.assertTrue(last["isFinalize"] and last["isError"], card["updates"])
        self.assertEqual(len(self.model.requests()), 2, self.model.requests())  # one each
        self.assertEqual(len(self.fake.calls("/v1.0/card/instances/createAndDeliver")), 2)
        self.assertEqual(self.fake.messages(), [])
        self.finish(cg)

    def test_card_creation_failure_falls_back_to_markdown(self):
        port, cg = self.gateway()
        self.fake.fail(path="/v1.0/card/instances/createAndDeliver", count=1, status=400,
                       body={"code": "invalidParameter.cardTemplateId",
                             "message": "card template not found"})
        self.model.script("trickle:50")
        body, session = incoming(self.fake, "msg_card_fb", " no card for me", "cid_card_fb")
        self.assertEqual(self.webhook(port, body, signed_headers())[0], 200)
        [reply] = self.fake.wait_session_reply(session)
        self.assertEqual(reply["msgtype"], "markdown")
        self.assertEqual(reply["content"]["text"], "reply to: no card for me (1 messages)")
        self.assertTrue(reply["content"]["title"])
        self.assertEqual(reply["atUserIds"], [STAFF])
        self.sentinel(port, "cid_card_fb", "msg_card_fb_next")
        self.assertEqual(sorted(self.fake.cards()), ["cg_msg_card_fb_next"])
        self.assertEqual([m.get("session") for m in self.fake.messages()], [session])
        self.assertEqual({c["body"]["outTrackId"] for c in self.fake.calls("/v1.0/card/streaming")},
                         {"cg_msg_card_fb_next"})
        self.finish(cg)


class DurableAiCardTest(AiCardCase):
    """With the durable queue (router.queue, a real redis-server), a model
    failure is tried again; the later attempt (cg_reply_t.delivery 2)
    streams into the card the first one made (its record in the cache),
    rather than creating a second card or leaving the first one typing."""

    def setUp(self):
        super().setUp()
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.close)

    def gateway(self, retries=0, **settings):
        cg = self.start(with_durable_queue(
            dingtalk_config(self.fake.port, model="gpt", model_instance=self.model.instance_yaml(),
                            mode="webhook", replyStyle="ai-card", cardTemplateId=self.TEMPLATE,
                            streamUpdateMs=100, **settings), self.redis.socket))
        return cg.port, cg

    def test_a_retry_continues_the_first_attempts_card(self):
        port, cg = self.gateway()
        # The first attempt's stream breaks after two words (its card made
        # and showing them); the second answers in full.
        self.model.script("drop:2", "trickle:50")
        text = "break then go on"
        answer = "reply to: %s (1 messages)" % text
        body, session = incoming(self.fake, "msg_card_retry", " " + text, "cid_card_retry")
        self.assertEqual(self.webhook(port, body, signed_headers())[0], 200)
        card = self.final_card("cg_msg_card_retry")
        self.assertEqual(card["state"], "finished", card["updates"])
        self.assertEqual(card["content"]["content"], answer)
        self.assertEqual(sorted(self.fake.cards()), ["cg_msg_card_retry"])
        self.assertEqual(len(self.fake.calls("/v1.0/card/instances/createAndDeliver")), 1)
        self.assertEqual(len(self.model.requests()), 2, self.model.requests())
        last = card["updates"][-1]
        self.assertTrue(last["isFinalize"] and not last["isError"], card["updates"])
        self.assertEqual(card["late_updates"], 0, card["updates"])
        self.assertEqual(self.fake.messages(), [])
        self.assertIn("continued AI card cg_msg_card_retry (attempt 2)", cg.log())
        self.finish(cg)

    def test_every_attempt_failing_ends_the_card_as_failed(self):
        # Three deliveries, each failing at the model: the third answers
        # the error into the one card (no part of an answer ever streamed:
        # the first attempt made no card, so none is continued).
        port, cg = self.gateway()
        self.model.script(*["status:500"] * 3)
        body, session = incoming(self.fake, "msg_card_dead", "fail always", "cid_card_dead")
        self.assertEqual(self.webhook(port, body, signed_headers())[0], 200)
        card = self.final_card("cg_msg_card_dead")
        self.assertEqual(card["state"], "failed", card["updates"])
        self.assertIn("try again", card["updates"][-1]["content"], card["updates"])
        self.assertEqual(len(self.model.requests()), 3, self.model.requests())
        self.assertEqual(len(self.fake.calls("/v1.0/card/instances/createAndDeliver")), 1)
        self.assertEqual(self.fake.messages(), [])
        wait_for(lambda: self.redis.command("XLEN", "chatgate:q:dead") == 1,
                 "the message in the dead letters")
        self.finish(cg)


# ------------------------------------------------------------------ acknowledged once held

class DurableAckTest(DingTalkCase):
    """ABI 1.5: DingTalk is acknowledged (the callback's 2xx, the Stream
    ack with code 200) only once the router holds the message. A message it
    refuses (here: router.maxConversationBacklog 1 while the conversation's
    first message is held at the model) gets 503 / a code-500 ack, and is
    answered, once, after DingTalk delivers it again."""

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeDingTalk()
        cls.model = FakeOpenAI()

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()
        cls.model.close()

    def setUp(self):
        # A previous test's gateway has closed its Stream connection.
        wait_for(lambda: self.fake.stream()["connections"] == 0, "no open Stream connection")
        super().setUp()
        self.model.reset()

    def deliver_until_taken(self, deliver, taken, refused):
        """Delivers again, as DingTalk does, until `deliver()` answers
        `taken`; every answer before that must be `refused`."""
        answers = []

        def done():
            answers.append(deliver())
            return answers[-1] == taken
        wait_for(done, "a delivery taken")
        self.assertEqual(set(answers[:-1]) - {refused}, set(), answers)

    def gateway(self, **settings):
        return super().gateway(model="gpt", model_instance=self.model.instance_yaml(),
                               router_extra="  maxConversationBacklog: 1\n", **settings)

    def release(self):
        self.assertEqual(post_json(self.model.port, "/release", {})[0], 200)

    def held_first(self):
        """The conversation's first message reached the model, which holds
        it: its lane is full until the answer is sent."""
        wait_for(lambda: len(self.model.requests()) == 1, "the first message at the model")

    def answered_in_order(self, sessions):
        replies = [self.fake.wait_session_reply(s)[0]["content"]["content"] for s in sessions]
        self.assertEqual([m.get("session") for m in self.fake.messages()], sessions)
        return replies

    def test_a_refused_callback_gets_no_2xx_and_is_answered_when_delivered_again(self):
        port, cg = self.gateway(mode="webhook")
        conv = "cid_durable_cb"
        self.model.script("hold")
        first, s1 = incoming(self.fake, "msg_dcb1", " first", conv)
        self.assertEqual(self.webhook(port, first, signed_headers())[:2], (200, {}))
        self.held_first()
        second, s2 = incoming(self.fake, "msg_dcb2", " second", conv)
        # Not held by the router: no 2xx, so DingTalk delivers it again.
        status, doc, _ = self.webhook(port, second, signed_headers())
        self.assertEqual((status, doc), (503, {"msg": "busy, retry"}))
        self.release()
        self.fake.wait_session_reply(s1)
        # DingTalk delivers it again until it is taken: 503 while the first
        # answer is still on its way out, then 200.
        def deliver(body):
            self.deliver_until_taken(
                lambda: self.webhook(port, body, signed_headers())[0], 200, 503)
        deliver(second)
        self.fake.wait_session_reply(s2)
        # Sentinel: the next message's answer comes after the second's, and
        # nothing else came (the second was answered once, as turn 2).
        third, s3 = incoming(self.fake, "msg_dcb3", " third", conv)
        deliver(third)
        self.assertEqual(self.answered_in_order([s1, s2, s3]),
                         ["reply to: first (1 messages)", "reply to: second (3 messages)",
                          "reply to: third (5 messages)"])
        log = self.finish(cg)
        self.assertIn("the router is full: DingTalk is told to deliver msg_dcb2 again", log)

    def test_a_refused_stream_message_gets_no_ok_ack_and_is_answered_when_delivered_again(self):
        port, cg = self.gateway()
        wait_for(lambda: self.fake.stream()["connections"] == 1, "the Stream connection")
        conv = "cid_durable_stream"
        self.model.script("hold")
        first, s1 = incoming(self.fake, "msg_dst1", " first", conv)
        ack = self.fake.wait_ack(self.fake.push(first))
        self.assertEqual((ack["code"], ack["data_json"]), (200, {"response": None}), ack)
        self.held_first()
        second, s2 = incoming(self.fake, "msg_dst2", " second", conv)
        # Not held by the router: the ack says so (not 200), so DingTalk
        # delivers it again.
        ack = self.fake.wait_ack(self.fake.push(second))
        self.assertEqual((ack["code"], ack["message"], ack["problems"]), (500, "error", []), ack)
        self.release()
        self.fake.wait_session_reply(s1)
        # Delivered again (a new frame each time) until an ack says 200.
        def deliver(body):
            self.deliver_until_taken(
                lambda: self.fake.wait_ack(self.fake.push(body))["code"], 200, 500)
        deliver(second)
        self.fake.wait_session_reply(s2)
        third, s3 = incoming(self.fake, "msg_dst3", " third", conv)
        deliver(third)
        self.assertEqual(self.answered_in_order([s1, s2, s3]),
                         ["reply to: first (1 messages)", "reply to: second (3 messages)",
                          "reply to: third (5 messages)"])
        log = self.finish(cg)
        self.assertIn("the router is full: DingTalk is told to deliver msg_dst2 again", log)


# ------------------------------------------------------------------ proactive sends

class ProactiveTest(DingTalkCase):
    @classmethod
    def setUpClass(cls):
        cls.fake = FakeDingTalk("--robot-secret", ROBOT_SECRET)

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()

    def robot(self, secret):
        return ["ops http://127.0.0.1:%d/robot/send?access_token=%s %s"
                % (self.fake.port, ROBOT_TOKEN, secret)]

    def test_the_sign_helper_agrees_with_the_known_answer(self):
        self.assertEqual(fake_dingtalk.robot_sign("1577262236757", "this is secret"),
                         "hmPWwU+7lVdm3ZZz0r9tSfx0L4Q26jWOZr9+Gs6EZQM=")

    def test_custom_robot_send_is_signed(self):
        port, cg = self.gateway(mode="webhook", customRobots=self.robot(ROBOT_SECRET))
        status, doc = self.admin_send(cg, {"channel": "dt", "conversationId": "robot:ops",
                                           "conversationType": "group", "text": "deploy at 5"})
        self.assertEqual((status, doc), (200, {"sent": True, "channel": "dt"}))
        [sent] = self.fake.messages("robot")
        self.assertEqual(sent["access_token"], ROBOT_TOKEN)
        self.assertEqual(sent["msgtype"], "text")
        self.assertEqual(sent["content"], {"content": "deploy at 5"})
        self.assertLess(abs(int(sent["timestamp"]) - time.time() * 1000), 60000)
        self.assertEqual(sent["sign"], fake_dingtalk.robot_sign(sent["timestamp"], ROBOT_SECRET))
        [call] = self.fake.calls("/robot/send")
        self.assertEqual(call["errcode"], 0, call)
        self.finish(cg)

    def test_custom_robot_with_a_wrong_secret_is_a_502(self):
        port, cg = self.gateway(mode="webhook", customRobots=self.robot(WRONG_ROBOT_SECRET))
        status, doc = self.admin_send(cg, {"channel": "dt", "conversationId": "robot:ops",
                                           "conversationType": "group", "text": "deploy at 5"})
        self.assertEqual(status, 502, doc)
        self.assertEqual(self.fake.messages(), [])
        self.assertEqual([c.get("errcode") for c in self.fake.calls("/robot/send")], [310000])
        log = self.finish(cg)
        self.assertTrue([l for l in log.splitlines() if "310000" in l], log)
        # The documented line, naming the robot.
        self.assertIn("message to custom robot 'ops' failed: ", log)

    def test_admin_send_through_the_openapi(self):
        port, cg = self.gateway(mode="webhook")
        status, doc = self.admin_send(cg, {"channel": "dt", "conversationId": "cid_news",
                                           "conversationType": "group", "text": "deploy at 5"})
        self.assertEqual((status, doc), (200, {"sent": True, "channel": "dt"}))
        [group] = self.fake.messages("group")
        self.assertEqual((group["openConversationId"], group["msgParam"]),
                         ("cid_news", {"content": "deploy at 5"}))
        status, doc = self.admin_send(cg, {"channel": "dt", "conversationId": "staff_dave",
                                           "conversationType": "direct", "text": "hi dave"})
        self.assertEqual((status, doc), (200, {"sent": True, "channel": "dt"}))
        [o2o] = self.fake.messages("o2o")
        self.assertEqual((o2o["userIds"], o2o["msgParam"]), (["staff_dave"], {"content": "hi dave"}))
        # DingTalk refusing it reaches the admin as 502.
        self.fake.fail(path="/v1.0/robot/groupMessages/send", count=1, status=400,
                       body={"code": "resource.not.found", "message": "robot not in group"})
        status, doc = self.admin_send(cg, {"channel": "dt", "conversationId": "cid_gone",
                                           "conversationType": "group", "text": "x"})
        self.assertEqual(status, 502, doc)
        self.finish(cg)


if __name__ == "__main__":
    unittest.main()
