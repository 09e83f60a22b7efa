"""feishu.so end to end: the real chatgate with its Feishu channel plugin
against tests/fakes/fake_feishu.py (an independent fake of the Feishu open
platform: HTTP open APIs plus the long-connection WebSocket) on loopback.

Webhook mode: URL verification (plain and encrypted), replies to p2p and
group messages (mention required, allowedChats, directMessages; chat_type
and mentions failing closed), encrypted and signed callbacks and every
refusal (bad signature, stale timestamp, replayed nonce, missing
signature, undecryptable, malformed, wrong token, encrypted without an
encryptKey), a re-pushed event answered once and again after
router.dedupeTtlSeconds, the unsupported-type answer (and silence when it
is empty), the tenant token refreshed before it expires, an expired tenant
token and a 429 retried, and streaming CardKit cards with openai.so and
tests/fakes/fake_openai.py (updates, fallback to text, model errors, no
model retry once part of the answer is shown); post and card styles, a
long answer split into messages, topics (their own conversations, replies
in the thread), the v1 envelope, card buttons (a toast, routed once), and
the admin API's send to a chat.
Long-connection mode: connect, events acked with biz_rt, a card button
acked with a toast, pings and the pong's config, multi-part events,
reconnect after a drop (the first try after a random part of
ReconnectNonce, then every ReconnectInterval) without answering a replay
twice, webhook callbacks off without a verificationToken, and the
refusals (wrong credentials, a refused reconnect, the connection limit) in
/readyz without a retry loop.
Both modes: Feishu is acknowledged only for a message the router took (ABI
1.5's emit_message_durable): one refused by the conversation's backlog cap
gets a 503 / an ack with code 500, and is answered once delivered again.

Every chatgate listens on port 0. That nothing else arrived is shown by a
sentinel: a later message, in the same conversation where the router's
lane orders it after what came before, whose answer is awaited. Every test
ends by asserting that the fake saw no protocol problem in what chatgate
sent, and no secret reaches chatgate's log in any test.

CHATGATE_TEST_SLOW=1 adds a test of the slow retries (the bot's open_id
every 30 s, the connection limit every 60 s): about 65 s."""
import json
import os
import re
import sys
import time
import unittest
import uuid

from harness import (DEADLINE, SOURCE_DIR, Chatgate, FakeProcess, gateway_config, get, post_json,
                     wait_for)
from test_redis import RedisServer
from channel_support import (FakeOpenAI, check_refusals_logged, parse_metrics, refusals_accounted,
                             with_durable_queue, yaml_value)

FAKES = os.path.join(SOURCE_DIR, "tests", "fakes")
sys.path.insert(0, FAKES)
import fake_feishu  # noqa: E402  (the fake's helpers: encrypt, sign, message_event)

# Distinctive secrets, so that a leak into the log is unmistakable.
APP_SECRET = "fsApp-S3cr3t-7781-kestrel"
WRONG_SECRET = "fsWrong-S3cr3t-5150-heron"
VTOKEN = "fsVerif-T0ken-4410-osprey"
ENCRYPT_KEY = "fsEncrypt-K3y-9023-plover"
SECRETS = (APP_SECRET, WRONG_SECRET, VTOKEN, ENCRYPT_KEY)
# The message catalog's "unsupported" text (core/config/user_messages.cc),
# which feishu.so reads through the host (ABI 1.8) when unsupportedReply is unset.
UNSUPPORTED = "Sorry, I can't read this kind of message yet. Please send it as text."
BOT_LEARNED = "the bot's open_id is ou_bot"
ENDPOINT = "/callback/ws/endpoint"
# How long a test watches for a retry that must not come: ten times the
# plugin's shortest reconnect delay (200 ms).
NO_RETRY_WINDOW = 2.0


class FakeFeishu(FakeProcess):
    live = []  # every running fake: each learns the inbound message ids a test makes

    def __init__(self, *args):
        super().__init__([sys.executable, os.path.join(FAKES, "fake_feishu.py"),
                          "--app-secret", APP_SECRET] + list(args))
        self.base = "http://127.0.0.1:%d" % self.port
        FakeFeishu.live.append(self)

    def close(self):
        if self in FakeFeishu.live:
            FakeFeishu.live.remove(self)
        super().close()

    @classmethod
    def delivered(cls, *message_ids):
        """The platform delivered these messages to the bot (a webhook test
        posts them itself): the bot may reply to them."""
        for fake in cls.live:
            fake.control("/_control/known", {"message_ids": list(message_ids)})

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

    def calls(self, path=None):
        calls = self.get("/_control/calls")["calls"]
        return [c for c in calls if path is None or c["path"].startswith(path)]

    def messages(self):
        return self.get("/_control/messages")["messages"]

    def cards(self):
        return self.get("/_control/cards")["cards"]

    def problems(self):
        return self.get("/_control/problems")["problems"]

    def tokens(self):
        return self.get("/_control/tokens")

    def ws(self):
        return self.get("/_control/ws")

    def fail(self, **failure):
        self.control("/_control/fail", failure)

    def replies_to(self, message_id):
        return [m for m in self.messages() if m["kind"] == "reply" and m["message_id"] == message_id]

    def reply_order(self):
        """The message ids replied to, in the order the replies arrived."""
        return [m["message_id"] for m in self.messages() if m["kind"] == "reply"]

    def wait_reply(self, message_id, count=1, timeout=DEADLINE):
        def enough():
            replies = self.replies_to(message_id)
            return replies if len(replies) >= count else None
        return wait_for(enough, "%d reply(s) to %s" % (count, message_id), timeout)

    def push(self, event, **options):
        """Pushes an event over the long connection; returns the frame message_id."""
        body = dict(options, event=event)
        status, doc = self.post("/_control/ws/event", body)
        assert status == 200 and doc["sent"], (status, doc)
        return doc["message_id"]

    def wait_ack(self, frame_id):
        return wait_for(lambda: [a for a in self.ws()["acks"] if a["message_id"] == frame_id],
                        "the ack of frame %s" % frame_id)


def feishu_config(fake_port, model="echo", model_instance=None, router_extra="", **settings):
    """A gateway on port 0 with instance fs (feishu.so, webhook mode unless
    `mode` is given), the model (echo.so unless `model_instance` gives
    another) and memory.so. A setting of None leaves the key out."""
    cfg = {"appId": "cli_test", "appSecret": APP_SECRET,
           "domain": "http://127.0.0.1:%d" % fake_port, "mode": "webhook",
           "verificationToken": VTOKEN}
    cfg.update(settings)
    lines = ["    - name: fs", "      plugin: feishu.so", "      config:"]
    lines += ["        %s: %s" % (k, yaml_value(v)) for k, v in cfg.items() if v is not None]
    instances = "\n".join(lines) + "\n"
    instances += model_instance or "    - name: echo\n      plugin: echo.so\n"
    instances += "    - name: memory\n      plugin: memory.so\n"
    return gateway_config(0, instances, model, "memory", router_extra)


def text_event(message_id, text="hello", chat_id=None, chat_type="p2p", **kw):
    """A message event (chat oc_<message_id> unless given) that the fakes
    count as delivered to the bot."""
    kw.setdefault("token", VTOKEN)
    FakeFeishu.delivered(message_id)
    return fake_feishu.message_event(message_id, chat_id or "oc_" + message_id, chat_type, text,
                                     **kw)


def signed(payload, key=ENCRYPT_KEY, ts=None, nonce=None, sign_key=None):
    """An encrypted callback body (bytes) and its X-Lark-* headers. `payload`
    is a dict (encrypted) or raw bytes (sent as they are, signed)."""
    if isinstance(payload, dict):
        raw = json.dumps({"encrypt": fake_feishu.encrypt(key, json.dumps(payload))}).encode()
    else:
        raw = payload
    ts = str(int(time.time())) if ts is None else ts
    nonce = nonce or uuid.uuid4().hex
    return raw, {"X-Lark-Request-Timestamp": ts, "X-Lark-Request-Nonce": nonce,
                 "X-Lark-Signature": fake_feishu.sign(ts, nonce, sign_key or key, raw)}


def card_action_event(event_id, value="yes", message_id="om_card", chat_id="oc_cards"):
    """A schema 2.0 card.action.trigger callback, as the platform sends it."""
    FakeFeishu.delivered(message_id)
    return {"schema": "2.0",
            "header": {"event_id": event_id, "event_type": "card.action.trigger",
                       "create_time": str(int(time.time() * 1000)), "token": VTOKEN,
                       "app_id": "cli_test", "tenant_key": "tk_test"},
            "event": {"operator": {"tenant_key": "tk_test", "open_id": "ou_presser"},
                      "token": "c-token", "action": {"value": {"value": value}, "tag": "button"},
                      "host": "im_message",
                      "context": {"open_message_id": message_id, "open_chat_id": chat_id}}}


class FeishuCase(unittest.TestCase):
    """Starts chatgate per test; `finish` stops it and checks the log holds
    no secret. Every fake a test uses is checked for protocol problems once
    the test's chatgates have stopped."""

    def watch(self, fake):
        """At the test's end (after the chatgates it starts from now on have
        stopped), the fake must have seen no protocol problem."""
        def check():
            problems = fake.problems()
            self.assertEqual(problems, [], "the fake saw protocol problems in what chatgate sent")
        self.addCleanup(check)

    def new_fake(self, *args):
        fake = FakeFeishu(*args)
        self.addCleanup(fake.close)
        self.watch(fake)
        return fake

    def start(self, config, wait_bot=True):
        cg = Chatgate(config).start()
        self.addCleanup(cg.__exit__, None, None, None)
        if wait_bot:
            cg.wait_log(BOT_LEARNED)
        return cg

    def gateway(self, fake, **settings):
        cg = self.start(feishu_config(fake.port, **settings))
        return cg.port, cg

    def finish(self, cg):
        self.assertEqual(cg.stop(), 0, cg.log()[-3000:])
        log = cg.log()
        for secret in SECRETS:
            self.assertNotIn(secret, log, "a secret in chatgate's log")
        return log

    def metric(self, cg, name, **labels):
        status, text, _ = get(cg.admin_port, "/metrics")
        self.assertEqual(status, 200)
        for n, ls, value in parse_metrics(text):
            if n == name and all(ls.get(k) == v for k, v in labels.items()):
                return value
        return 0.0

    def webhook(self, port, body, headers=None):
        return post_json(port, "/webhook/fs", body, headers=headers)

    def say(self, port, message_id, text, chat_id, **kw):
        """A p2p message by webhook, awaited at the fake: its reply."""
        status, body, _ = self.webhook(port, text_event(message_id, text, chat_id=chat_id, **kw))
        self.assertEqual((status, body), (200, {"msg": "success"}))
        [reply] = self.fake.wait_reply(message_id)
        return reply


# ------------------------------------------------------------------ webhook

class WebhookTest(FeishuCase):
    @classmethod
    def setUpClass(cls):
        cls.fake = FakeFeishu()

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()

    def setUp(self):
        self.fake.reset()
        self.watch(self.fake)

    def test_url_verification_answers_the_challenge_and_checks_the_token(self):
        port, cg = self.gateway(self.fake)
        status, body, _ = self.webhook(port, {"challenge": "c1", "token": VTOKEN,
                                              "type": "url_verification"})
        self.assertEqual((status, body), (200, {"challenge": "c1"}))
        status, body, _ = self.webhook(port, {"challenge": "c2", "token": "not-the-token",
                                              "type": "url_verification"})
        self.assertEqual(status, 401, body)
        self.assertNotIn("c2", json.dumps(body))
        log = self.finish(cg)
        self.assertEqual(log.count("refused a callback"), 1, log)

    def test_p2p_text_is_answered_with_a_reply(self):
        port, cg = self.gateway(self.fake)
        status, body, _ = self.webhook(port, text_event("om_p2p1", "hello"))
        self.assertEqual((status, body), (200, {"msg": "success"}))
        [reply] = self.fake.wait_reply("om_p2p1")
        self.assertEqual(reply["msg_type"], "text")
        self.assertEqual(reply["content"], {"text": "echo: hello (turn 1)"})
        self.assertRegex(reply["authorization"], r"^Bearer t-\d+$")
        self.assertTrue(reply["uuid"])
        # A second message in the same chat continues the conversation.
        reply = self.say(port, "om_p2p2", "again", "oc_om_p2p1")
        self.assertEqual(reply["content"], {"text": "echo: again (turn 2)"})
        self.finish(cg)

    def test_an_event_pushed_twice_is_answered_once(self):
        port, cg = self.gateway(self.fake)
        event = text_event("om_dup", "once please")
        calls = lambda: sum(self.metric(cg, "chatgate_cache_calls_total", result=r)
                            for r in ("ok", "absent", "error"))
        before = calls()
        self.assertEqual(self.webhook(port, event)[:2], (200, {"msg": "success"}))
        self.fake.wait_reply("om_dup")
        status, body, _ = self.webhook(port, event)
        self.assertEqual(status, 200, body)
        # Sentinel: the next message of that chat runs after the duplicate
        # is settled, and is the conversation's second turn.
        reply = self.say(port, "om_dup_next", "next", "oc_om_dup")
        self.assertEqual(reply["content"], {"text": "echo: next (turn 2)"})
        self.assertEqual(self.fake.reply_order(), ["om_dup", "om_dup_next"])
        self.assertEqual(self.fake.get("/_control/messages")["duplicates"], 0)
        self.assertEqual(self.metric(cg, "chatgate_messages_dropped_total", channel="fs",
                                     reason="duplicate"), 1)
        # Per answer one dedupe (the router's, on the event id), the context
        # load and the store; the duplicate's dedupe; and the plugin makes
        # no cache call of its own.
        wait_for(lambda: calls() - before >= 7, "the cache calls counted")
        self.assertEqual(calls() - before, 7)
        self.finish(cg)

    def start_ttl(self, ttl):
        cg = self.start(feishu_config(self.fake.port,
                                      router_extra="  dedupeTtlSeconds: %d\n" % ttl))
        return cg.port, cg

    def test_a_redelivery_is_deduped_within_dedupe_ttl_and_answered_after_it(self):
        ttl = 3  # the router's dedupeTtlSeconds; it runs from the first claim
        port, cg = self.start_ttl(ttl)
        event = text_event("om_ttl", "ttl")
        started = time.monotonic()
        self.assertEqual(self.webhook(port, event)[0], 200)
        self.fake.wait_reply("om_ttl")
        # Within the TTL (a redelivery right away): dropped as a duplicate.
        self.assertEqual(self.webhook(port, event)[0], 200)
        reply = self.say(port, "om_ttl_next", "next", "oc_om_ttl")
        self.assertLess(time.monotonic() - started, ttl, "too slow to redeliver within the TTL")
        self.assertEqual(reply["content"], {"text": "echo: next (turn 2)"})
        self.assertEqual(self.fake.reply_order(), ["om_ttl", "om_ttl_next"])
        self.assertEqual(self.metric(cg, "chatgate_messages_dropped_total", channel="fs",
                                     reason="duplicate"), 1)
        # Redelivered until it is answered again: only once the TTL is over.
        path = "/open-apis/im/v1/messages/om_ttl/reply"
        posts = 0
        while len(self.fake.calls(path)) < 2:
            self.assertLess(time.monotonic() - started, DEADLINE, "never answered again")
            self.assertEqual(self.webhook(port, event)[0], 200)
            posts += 1
            try:
                wait_for(lambda: len(self.fake.calls(path)) >= 2, "a second answer", 0.25)
            except AssertionError:
                pass
        first, second = self.fake.calls(path)
        self.assertGreaterEqual(second["t"] - started, ttl)
        # The router answered it as the conversation's third turn; the
        # reply's uuid is the first one's (derived from the message), so
        # Feishu's idempotency shows the user one answer.
        self.assertEqual(json.loads(second["body"]["content"]), {"text": "echo: ttl (turn 3)"})
        self.assertEqual(second["body"]["uuid"], first["body"]["uuid"])
        self.assertEqual(self.fake.get("/_control/messages")["duplicates"], 1)
        # Every redelivery but the answered one was a duplicate.
        wait_for(lambda: self.metric(cg, "chatgate_messages_dropped_total", channel="fs",
                                     reason="duplicate") >= posts, "the duplicates counted")
        self.assertEqual(self.metric(cg, "chatgate_messages_dropped_total", channel="fs",
                                     reason="duplicate"), posts)
        self.finish(cg)

    def test_group_messages_need_the_bots_mention(self):
        port, cg = self.gateway(self.fake)
        chat = "oc_group1"
        self.assertEqual(self.webhook(port, text_event("om_g1", "no mention", chat_id=chat,
                                                       chat_type="group"))[0], 200)
        # A mention of someone else is not a mention of the bot.
        self.assertEqual(self.webhook(port, text_event(
            "om_g2", "@_user_1 for you", chat_id=chat, chat_type="group",
            mentions=[("@_user_1", "ou_someone", "Someone")]))[0], 200)
        self.assertEqual(self.webhook(port, text_event(
            "om_g3", "@_user_1 what time", chat_id=chat, chat_type="group",
            mentions=[("@_user_1", "ou_bot", "Bot")]))[0], 200)
        [reply] = self.fake.wait_reply("om_g3")
        # The mention key is stripped; the first turn of the chat: nothing
        # else was routed to it, and nothing else was answered.
        self.assertEqual(reply["content"], {"text": "echo: what time (turn 1)"})
        self.assertEqual(self.fake.reply_order(), ["om_g3"])
        self.assertEqual(self.metric(cg, "chatgate_messages_dropped_total", channel="fs",
                                     reason="policy"), 2)
        self.finish(cg)

    def test_chat_type_and_mentions_fail_closed(self):
        # Anything but the string "p2p" is a group; a mention counts only when
        # it names the bot's open_id. Without it, all are dropped by policy.
        port, cg = self.gateway(self.fake)
        chat = "oc_strict"
        events = []
        for name, value in (("num", 1), ("null", None), ("private", "private")):
            ev = text_event("om_ct_" + name, "hi", chat_id=chat)
            ev["event"]["message"]["chat_type"] = value
            events.append(ev)
        ev = text_event("om_ct_missing", "hi", chat_id=chat)
        del ev["event"]["message"]["chat_type"]
        events.append(ev)
        # The bot's mention without its id, and with the bot's id only as union_id.
        ev = text_event("om_m_noid", "@_user_1 hi", chat_id=chat, chat_type="group",
                        mentions=[("@_user_1", "ou_bot", "Bot")])
        del ev["event"]["message"]["mentions"][0]["id"]
        events.append(ev)
        ev = text_event("om_m_union", "@_user_1 hi", chat_id=chat, chat_type="group",
                        mentions=[("@_user_1", "ou_bot", "Bot")])
        ev["event"]["message"]["mentions"][0]["id"] = {"union_id": "ou_bot"}
        events.append(ev)
        ev = text_event("om_m_obj", "@_user_1 hi", chat_id=chat, chat_type="group")
        ev["event"]["message"]["mentions"] = {"key": "@_user_1", "id": {"open_id": "ou_bot"}}
        events.append(ev)
        for ev in events:
            self.assertEqual(self.webhook(port, ev)[0], 200)
        # A sentinel in the same chat, mentioning the bot: turn 1, so none
        # of the above was routed, and nothing else was answered.
        self.webhook(port, text_event("om_ct_at", "@_user_1 now", chat_id=chat, chat_type="group",
                                      mentions=[("@_user_1", "ou_bot", "Bot")]))
        [reply] = self.fake.wait_reply("om_ct_at")
        self.assertEqual(reply["content"], {"text": "echo: now (turn 1)"})
        self.assertEqual(self.fake.reply_order(), ["om_ct_at"])
        self.assertEqual(self.metric(cg, "chatgate_messages_dropped_total", channel="fs",
                                     reason="policy"), len(events))
        self.finish(cg)

    def test_no_mention_counts_while_the_bots_id_is_unknown(self):
        # bot/v3/info refused: the bot's open_id is unknown, so a mention
        # cannot be shown to be the bot's; the group message is dropped.
        self.fake.fail(path="/open-apis/bot/v3/info", count=1, status=400, code=99991672,
                       msg="no permission")
        cg = self.start(feishu_config(self.fake.port), wait_bot=False)
        port = cg.port
        cg.wait_log("cannot learn the bot's open_id")
        self.webhook(port, text_event("om_unknown_bot", "@_user_1 hi", chat_id="oc_unknown",
                                      chat_type="group", mentions=[("@_user_1", "ou_bot", "Bot")]))
        # A sentinel in the same chat needs no mention when it is p2p: the
        # chat's first turn.
        reply = self.say(port, "om_unknown_p2p", "direct", "oc_unknown")
        self.assertEqual(reply["content"], {"text": "echo: direct (turn 1)"})
        self.assertEqual(self.fake.reply_order(), ["om_unknown_p2p"])
        self.assertEqual(self.metric(cg, "chatgate_messages_dropped_total", channel="fs",
                                     reason="policy"), 1)
        log = self.finish(cg)
        self.assertNotIn(BOT_LEARNED, log)
        # One warning (the retry comes 30 s later: CHATGATE_TEST_SLOW).
        self.assertEqual(log.count("cannot learn the bot's open_id"), 1, log)
        self.assertIn("no @-mention counts as the bot's", log)

    def test_allowed_chats_and_direct_messages_off_drop_by_policy(self):
        port, cg = self.gateway(self.fake, allowedChats=["oc_allowed"], directMessages=False)
        mention = {"chat_type": "group", "mentions": [("@_user_1", "ou_bot", "Bot")]}
        self.webhook(port, text_event("om_a1", "@_user_1 elsewhere", chat_id="oc_other", **mention))
        self.webhook(port, text_event("om_a2", "direct", chat_id="oc_allowed"))
        self.webhook(port, text_event("om_a3", "@_user_1 here", chat_id="oc_allowed", **mention))
        [reply] = self.fake.wait_reply("om_a3")
        self.assertEqual(reply["content"], {"text": "echo: here (turn 1)"})
        self.assertEqual(self.fake.reply_order(), ["om_a3"])
        self.assertEqual(self.metric(cg, "chatgate_messages_dropped_total", channel="fs",
                                     reason="policy"), 2)
        self.finish(cg)

    def test_unsupported_type_gets_the_fixed_answer_and_is_not_routed(self):
        port, cg = self.gateway(self.fake)
        event = text_event("om_audio", chat_id="oc_unsup", message_type="audio",
                           content='{"file_key":"x"}')
        self.assertEqual(self.webhook(port, event)[:2], (200, {"msg": "success"}))
        [reply] = self.fake.wait_reply("om_audio")
        self.assertEqual(reply["msg_type"], "text")
        self.assertEqual(reply["content"], {"text": UNSUPPORTED})
        # The model never saw it: the next text in that chat is its first turn.
        reply = self.say(port, "om_after_audio", "words", "oc_unsup")
        self.assertEqual(reply["content"], {"text": "echo: words (turn 1)"})
        self.assertEqual(self.fake.reply_order(), ["om_audio", "om_after_audio"])
        self.assertEqual(self.metric(cg, "chatgate_messages_dropped_total", channel="fs",
                                     reason="unsupported"), 1)
        self.finish(cg)

    def test_an_empty_unsupported_reply_stays_silent(self):
        port, cg = self.gateway(self.fake, unsupportedReply="")
        event = text_event("om_sticker", chat_id="oc_silent", message_type="sticker",
                           content='{"file_key":"s"}')
        self.assertEqual(self.webhook(port, event)[:2], (200, {"msg": "success"}))
        reply = self.say(port, "om_after_sticker", "words", "oc_silent")
        self.assertEqual(reply["content"], {"text": "echo: words (turn 1)"})
        # No reply to the sticker was even tried.
        self.assertEqual(self.fake.calls("/open-apis/im/v1/messages/om_sticker"), [])
        self.assertEqual(self.fake.reply_order(), ["om_after_sticker"])
        self.assertEqual(self.metric(cg, "chatgate_messages_dropped_total", channel="fs",
                                     reason="unsupported"), 1)
        self.finish(cg)

    def test_an_encrypted_callback_without_an_encrypt_key_is_refused(self):
        port, cg = self.gateway(self.fake)  # no encryptKey
        payload = text_event("om_enc_nokey", "sealed", chat_id="oc_nokey")
        status, body, _ = self.webhook(
            port, {"encrypt": fake_feishu.encrypt(ENCRYPT_KEY, json.dumps(payload))})
        self.assertEqual(status, 400, body)
        cg.wait_log("an encrypted callback, but no encryptKey is configured")
        reply = self.say(port, "om_nokey_plain", "plain", "oc_nokey")
        self.assertEqual(reply["content"], {"text": "echo: plain (turn 1)"})
        self.assertEqual(self.fake.reply_order(), ["om_nokey_plain"])
        log = self.finish(cg)
        self.assertEqual(refusals_accounted(log), 1, log)

    def test_expired_token_is_replaced_and_the_reply_retried(self):
        port, cg = self.gateway(self.fake)
        self.webhook(port, text_event("om_tok1", "first"))
        [first] = self.fake.wait_reply("om_tok1")
        old = first["authorization"]
        self.fake.control("/_control/expire_tokens")
        self.webhook(port, text_event("om_tok2", "second"))
        [second] = self.fake.wait_reply("om_tok2")
        self.assertEqual(second["content"], {"text": "echo: second (turn 1)"})
        old_n = int(old.rsplit("-", 1)[1])
        self.assertEqual(second["authorization"], "Bearer t-%d" % (old_n + 1))
        attempts = self.fake.calls("/open-apis/im/v1/messages/om_tok2/reply")
        self.assertEqual([(c["authorization"], c["code"]) for c in attempts],
                         [(old, 99991663), (second["authorization"], 0)], attempts)
        self.finish(cg)

    def test_the_tenant_token_is_refreshed_before_it_expires(self):
        # The token is kept until 3 minutes before it expires, or half its
        # life when that is longer (a token living under 6 minutes): one
        # issued for 12 s is used for 6 s, then a new one is fetched at the
        # next call, while the old one still had 6 s to live.
        life = 12
        self.fake.control("/_control/token_expire", {"expire": life})
        self.addCleanup(self.fake.control, "/_control/token_expire", {"expire": 7200})
        port, cg = self.gateway(self.fake)
        [issue] = self.fake.calls("/open-apis/auth/v3/tenant_access_token/internal")
        first = issue["issued"]
        reply = self.say(port, "om_ref1", "early", "oc_refresh")
        self.assertEqual(reply["authorization"], "Bearer " + first)
        # Past half its life (by the platform's clock: the same monotonic
        # clock as the test's), before its end.
        while time.monotonic() < issue["t"] + life / 2 + 0.5:
            time.sleep(0.05)
        reply = self.say(port, "om_ref2", "later", "oc_refresh")
        fetches = self.fake.calls("/open-apis/auth/v3/tenant_access_token/internal")
        self.assertEqual(len(fetches), 2, fetches)
        second = fetches[1]["issued"]
        self.assertEqual(reply["authorization"], "Bearer " + second)
        self.assertGreater(fetches[1]["valid_tokens"][first], 0,
                           "the new token was fetched only once the old one had expired")
        # No call was ever refused for an invalid token.
        self.assertNotIn(99991663, [c["code"] for c in self.fake.calls()])
        self.finish(cg)

    def test_429_is_retried_then_answered(self):
        port, cg = self.gateway(self.fake)
        self.fake.fail(path="/open-apis/im/v1/messages", count=1, status=429, code=99991400,
                       headers={"x-ogw-ratelimit-reset": "0"})
        self.webhook(port, text_event("om_429", "busy?"))
        [reply] = self.fake.wait_reply("om_429")
        self.assertEqual(reply["content"], {"text": "echo: busy? (turn 1)"})
        attempts = self.fake.calls("/open-apis/im/v1/messages")
        self.assertEqual([(c["status"], c["code"], bool(c.get("failed"))) for c in attempts],
                         [(429, 99991400, True), (200, 0, False)], attempts)
        # A retry of the same reply carries the same idempotency key.
        self.assertEqual(attempts[0]["body"]["uuid"], attempts[1]["body"]["uuid"])
        self.finish(cg)


class RepliesTest(FeishuCase):
    """Reply styles, long answers, topics, v1 envelopes, card buttons and
    the admin API's send."""

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeFeishu()

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()

    def setUp(self):
        self.fake.reset()
        self.watch(self.fake)

    def test_a_zh_cn_instance_gets_the_chinese_texts(self):
        # locale: beside name and plugin (docs/operator-guide.md): the busy
        # and the command texts reach the fake in Chinese; a messages:
        # override wins over both locales.
        busy = "    - name: echo\n      plugin: echo.so\n      config: {fail: busy}\n"
        config = feishu_config(self.fake.port, model_instance=busy).replace(
            "      plugin: feishu.so\n", "      plugin: feishu.so\n      locale: zh-CN\n", 1)
        cg = self.start(config)
        self.webhook(cg.port, text_event("om_zh_busy", "你好"))
        [reply] = self.fake.wait_reply("om_zh_busy")
        self.assertEqual(reply["content"], {"text": "模型正忙，请稍后再试。"})
        self.webhook(cg.port, text_event("om_zh_reset", "/reset"))
        [reply] = self.fake.wait_reply("om_zh_reset")
        self.assertEqual(reply["content"], {"text": "已清除对话上下文，我们重新开始吧。"})
        # What feishu.so says on its own (ABI 1.8's user_text): the
        # unsupported-type answer and a card button's toast.
        self.webhook(cg.port, text_event("om_zh_audio", chat_id="oc_zh_audio",
                                         message_type="audio", content='{"file_key":"x"}'))
        [reply] = self.fake.wait_reply("om_zh_audio")
        self.assertEqual(reply["content"], {"text": "抱歉，我暂时还看不懂这类消息，请发送文字。"})
        status, body, _ = self.webhook(cg.port, card_action_event("ev_zh_btn", "approve"))
        self.assertEqual((status, body["toast"]), (200, {"type": "info", "content": "已收到"}))
        self.fake.wait_reply("om_card")
        self.finish(cg)
        cg = self.start(config + "messages:\n  busy: \"稍等一下\"\n  unsupported: \"只收文字\"\n")
        self.webhook(cg.port, text_event("om_zh_override", "你好"))
        [reply] = self.fake.wait_reply("om_zh_override")
        self.assertEqual(reply["content"], {"text": "稍等一下"})
        self.webhook(cg.port, text_event("om_zh_sticker", chat_id="oc_zh_sticker",
                                         message_type="sticker", content='{"file_key":"s"}'))
        [reply] = self.fake.wait_reply("om_zh_sticker")
        self.assertEqual(reply["content"], {"text": "只收文字"})
        self.finish(cg)
        # The instance's own unsupportedReply wins over the catalog.
        cg = self.start(config.replace("      config:\n", "      config:\n        unsupportedReply: \"own words\"\n", 1))
        self.webhook(cg.port, text_event("om_zh_own", chat_id="oc_zh_own",
                                         message_type="audio", content='{"file_key":"y"}'))
        [reply] = self.fake.wait_reply("om_zh_own")
        self.assertEqual(reply["content"], {"text": "own words"})
        self.finish(cg)

    def test_post_and_card_styles(self):
        port, cg = self.gateway(self.fake, replyStyle="post")
        self.webhook(port, text_event("om_post", "two\nlines"))
        [reply] = self.fake.wait_reply("om_post")
        self.assertEqual(reply["msg_type"], "post")
        paragraphs = reply["content"]["zh_cn"]["content"]
        self.assertEqual([[i["text"] for i in p] for p in paragraphs],
                         [["echo: two"], ["lines (turn 1)"]])
        self.finish(cg)
        port, cg = self.gateway(self.fake, replyStyle="card")
        self.webhook(port, text_event("om_card1", "**bold**"))
        [reply] = self.fake.wait_reply("om_card1")
        self.assertEqual(reply["msg_type"], "interactive")
        [element] = reply["content"]["body"]["elements"]
        self.assertEqual((element["tag"], element["content"]),
                         ("markdown", "echo: **bold** (turn 1)"))
        self.finish(cg)

    def test_a_long_answer_is_split_into_messages(self):
        port, cg = self.gateway(self.fake)
        # 150 KB of text: more than one text message may hold.
        line = "0123456789abcdef" * 8 + "\n"
        text = line * 1200
        self.assertEqual(self.webhook(port, text_event("om_long", text))[0], 200)
        # Sentinel: the chat's next message runs once the whole answer is out.
        reply = self.say(port, "om_long_next", "next", "oc_om_long")
        self.assertEqual(reply["content"], {"text": "echo: next (turn 2)"})
        self.assertEqual(self.fake.reply_order(), ["om_long", "om_long", "om_long_next"])
        replies = self.fake.replies_to("om_long")
        joined = "".join(r["content"]["text"] for r in replies)
        # (The inbound text is trimmed: its last line break goes.)
        self.assertEqual(joined, "echo: " + text.rstrip("\n") + " (turn 1)")
        self.assertTrue(all(len(r["content"]["text"].encode()) <= 150 * 1024 for r in replies))
        # Cut at a line break; each part has its own idempotency key.
        self.assertTrue(replies[0]["content"]["text"].endswith("\n"))
        self.assertNotEqual(replies[0]["uuid"], replies[1]["uuid"])
        self.finish(cg)

    def test_topics_are_their_own_conversations_and_replies_stay_in_them(self):
        port, cg = self.gateway(self.fake, requireMention=False)
        for mid, thread in (("om_t1", "omt_a"), ("om_t2", "omt_b"), ("om_t3", "omt_a")):
            ev = text_event(mid, "in " + thread, chat_id="oc_topics", chat_type="topic_group")
            ev["event"]["message"]["thread_id"] = thread
            self.webhook(port, ev)
            self.fake.wait_reply(mid)
        turns = {mid: self.fake.replies_to(mid)[0] for mid in ("om_t1", "om_t2", "om_t3")}
        self.assertEqual(turns["om_t2"]["content"]["text"], "echo: in omt_b (turn 1)")
        self.assertEqual(turns["om_t3"]["content"]["text"], "echo: in omt_a (turn 2)")
        self.assertTrue(all(r["reply_in_thread"] is True for r in turns.values()))
        self.finish(cg)

    def test_v1_envelope_is_read(self):
        port, cg = self.gateway(self.fake)
        v2 = text_event("om_v1", "old style")
        v1 = {"uuid": "u-om_v1", "ts": "1700000000.0", "token": VTOKEN, "type": "event_callback",
              "event": dict(v2["event"], type="im.message.receive_v1")}
        status, body, _ = self.webhook(port, v1)
        self.assertEqual(status, 200, body)
        # v1 names the event type inside the event; the plugin reads the
        # message fields the same way.
        [reply] = self.fake.wait_reply("om_v1")
        self.assertEqual(reply["content"], {"text": "echo: old style (turn 1)"})
        self.finish(cg)

    def test_card_button_gets_a_toast_and_is_routed(self):
        port, cg = self.gateway(self.fake)
        status, body, _ = self.webhook(port, card_action_event("ev_btn1", "approve"))
        self.assertEqual(status, 200)
        self.assertEqual(body["toast"], {"type": "info", "content": "Received"})
        # Routed as what the user said, answered under the card's message.
        [reply] = self.fake.wait_reply("om_card")
        self.assertEqual(reply["content"], {"text": "echo: approve (turn 1)"})
        # Pressed again (the same callback pushed twice): acknowledged, not routed.
        status, body, _ = self.webhook(port, card_action_event("ev_btn1", "approve"))
        self.assertEqual(status, 200)
        # Sentinel: a message in the card's chat is its second turn.
        reply = self.say(port, "om_card_next", "next", "oc_cards")
        self.assertEqual(reply["content"], {"text": "echo: next (turn 2)"})
        self.assertEqual(self.fake.reply_order(), ["om_card", "om_card_next"])
        self.finish(cg)

    def test_two_bots_run_side_by_side(self):
        config = feishu_config(self.fake.port)
        second = config.replace("    - name: fs\n", "    - name: fs2\n", 1).split(
            "    - name: echo")[0].split("  instances:\n")[1]
        second = second.replace(VTOKEN, VTOKEN + "-2")
        config = config.replace("    - name: echo", second + "    - name: echo", 1)
        cg = self.start(config)
        port = cg.port
        ok = post_json(port, "/webhook/fs2",
                       text_event("om_bot2", "to the second", token=VTOKEN + "-2"))
        self.assertEqual(ok[0], 200, ok)
        self.assertEqual(self.fake.wait_reply("om_bot2")[0]["content"],
                         {"text": "echo: to the second (turn 1)"})
        # Each route checks its own bot's token.
        self.assertEqual(post_json(port, "/webhook/fs2", text_event("om_x", "x"))[0], 401)
        self.assertEqual(self.webhook(port, text_event("om_bot1", "to the first"))[0], 200)
        self.fake.wait_reply("om_bot1")
        self.finish(cg)

    def test_admin_send_posts_to_a_chat(self):
        port, cg = self.gateway(self.fake)
        admin = cg.admin_port
        csrf = json.loads(get(admin, "/admin/api/session")[1])["csrf"]
        status, body, _ = post_json(admin, "/admin/api/send",
                                    {"channel": "fs", "conversationId": "oc_news",
                                     "conversationType": "group", "text": "deploy at 5"},
                                    headers={"X-CSRF-Token": csrf})
        self.assertEqual((status, body), (200, {"sent": True, "channel": "fs"}))
        [sent] = [m for m in self.fake.messages() if m["kind"] == "send"]
        self.assertEqual((sent["receive_id"], sent["receive_id_type"]), ("oc_news", "chat_id"))
        self.assertEqual(sent["content"], {"text": "deploy at 5"})
        # Feishu refusing it reaches the admin as 502.
        self.fake.fail(path="/open-apis/im/v1/messages", count=1, status=400, code=230002,
                       msg="bot not in chat")
        status, body, _ = post_json(admin, "/admin/api/send",
                                    {"channel": "fs", "conversationId": "oc_gone", "text": "x"},
                                    headers={"X-CSRF-Token": csrf})
        self.assertEqual(status, 502, body)
        self.finish(cg)


class EncryptedWebhookTest(FeishuCase):
    @classmethod
    def setUpClass(cls):
        cls.fake = FakeFeishu()

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()

    def setUp(self):
        self.fake.reset()
        self.watch(self.fake)

    def gateway(self, fake=None, **settings):
        settings.setdefault("encryptKey", ENCRYPT_KEY)
        return super().gateway(fake or self.fake, **settings)

    def test_encrypted_url_verification_without_signature(self):
        port, cg = self.gateway()
        challenge = json.dumps({"challenge": "c1", "token": VTOKEN, "type": "url_verification"})
        status, body, _ = self.webhook(port, {"encrypt": fake_feishu.encrypt(ENCRYPT_KEY, challenge)})
        self.assertEqual((status, body), (200, {"challenge": "c1"}))
        self.finish(cg)

    def test_signed_event_is_answered_and_a_replay_refused(self):
        port, cg = self.gateway()
        raw, headers = signed(text_event("om_enc1", "secret hello"))
        status, body, _ = self.webhook(port, raw, headers)
        self.assertEqual((status, body), (200, {"msg": "success"}))
        [reply] = self.fake.wait_reply("om_enc1")
        self.assertEqual(reply["content"], {"text": "echo: secret hello (turn 1)"})
        # The very same request again: the nonce was seen.
        status, body, _ = self.webhook(port, raw, headers)
        self.assertEqual(status, 401, body)
        # Sentinel: the chat's next (signed) message is its second turn.
        raw, headers = signed(text_event("om_enc2", "next", chat_id="oc_om_enc1"))
        self.assertEqual(self.webhook(port, raw, headers)[:2], (200, {"msg": "success"}))
        [reply] = self.fake.wait_reply("om_enc2")
        self.assertEqual(reply["content"], {"text": "echo: next (turn 2)"})
        self.assertEqual(self.fake.reply_order(), ["om_enc1", "om_enc2"])
        log = self.finish(cg)
        self.assertEqual(log.count("refused a callback"), 1, log)
        self.assertIn("replayed nonce", log)

    def test_every_refusal_is_logged_once_and_routes_nothing(self):
        port, cg = self.gateway()
        chat = "oc_refusals"
        now = int(time.time())

        def good(mid, text="should not pass", **kw):
            return text_event(mid, text, chat_id=chat, **kw)
        wrong_key_cipher = fake_feishu.encrypt("some-other-key", json.dumps(good("om_r_key")),
                                               iv=b"\0" * 16)
        with self.assertRaises(ValueError):  # the test's own input: really undecryptable
            fake_feishu.decrypt(ENCRYPT_KEY, wrong_key_cipher)
        # (name, cause: the reason up to its first ':', status, a fresh
        # request each call: a repeated nonce would be refused as a replay)
        cases = [
            ("bad signature", "sig", 401,
             lambda: signed(good("om_r_sig"), sign_key="not-the-key")),
            ("stale timestamp", "ts", 401, lambda: signed(good("om_r_ts"), ts=str(now - 600))),
            ("future timestamp", "ts", 401, lambda: signed(good("om_r_ts2"), ts=str(now + 600))),
            ("unencrypted, unsigned", "headers", 401,
             lambda: (json.dumps(good("om_r_plain")).encode(), {})),
            ("encrypted, unsigned", "headers", 401,
             lambda: (json.dumps({"encrypt": fake_feishu.encrypt(
                 ENCRYPT_KEY, json.dumps(good("om_r_ns")))}), {})),
            ("not base64", "decrypt", 400,
             lambda: signed(b'{"encrypt":"this is not base64 at all!"}')),
            ("wrong key", "decrypt", 400,
             lambda: signed(json.dumps({"encrypt": wrong_key_cipher}).encode())),
            ("malformed JSON", "malformed", 400, lambda: signed(b'{"encrypt": "abc"')),
            ("token mismatch", "token", 401, lambda: signed(good("om_r_token", token="wrong-token"))),
        ]

        def send(case):
            raw, headers = case[3]()
            return self.webhook(port, raw, headers)[0]

        refusals = check_refusals_logged(self, cases, send, cg.log)
        # Sentinel: a good event in the same chat is that conversation's first turn.
        raw, headers = signed(good("om_r_ok", text="now pass"))
        status, body, _ = self.webhook(port, raw, headers)
        self.assertEqual((status, body), (200, {"msg": "success"}))
        [reply] = self.fake.wait_reply("om_r_ok")
        self.assertEqual(reply["content"], {"text": "echo: now pass (turn 1)"})
        self.assertEqual([m["message_id"] for m in self.fake.messages()], ["om_r_ok"])
        log = self.finish(cg)
        self.assertEqual(refusals_accounted(log), refusals, log)


# ------------------------------------------------------------------ streaming cards

class StreamingCardCase(FeishuCase):
    """A fake Feishu and a fake model shared by a class's tests, and the
    wait for an answer (and its card) to end."""

    @classmethod
    def setUpClass(cls):
        cls.fake = FakeFeishu()
        cls.model = FakeOpenAI()

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()
        cls.model.close()

    def setUp(self):
        self.fake.reset()
        self.model.reset()
        self.watch(self.fake)

    def final_reply(self, message_id):
        """Waits for the answer to end: a reply, and no card left streaming."""
        [reply] = self.fake.wait_reply(message_id)
        if reply["msg_type"] == "interactive" and reply["content"].get("type") == "card":
            card_id = reply["content"]["data"]["card_id"]
            wait_for(lambda: not self.fake.cards()[card_id]["streaming"],
                     "card %s to stop streaming" % card_id)
        return reply


class StreamingCardTest(StreamingCardCase):
    def gateway(self, retries=0, **settings):
        gpt = self.model.instance_yaml().replace("retries: 0", "retries: %d" % retries)
        return super().gateway(self.fake, model="gpt", model_instance=gpt,
                               replyStyle="streaming-card", streamUpdateMs=100, **settings)

    def shown(self, reply):
        """What the user sees of an answer: a streaming card's text, or the message."""
        if reply["msg_type"] == "interactive" and reply["content"].get("type") == "card":
            return self.fake.cards()[reply["content"]["data"]["card_id"]]["elements"]["stream_md"]
        return json.dumps(reply["content"])

    def sentinel(self, port, message_id, chat_id):
        """The chat's next message (the model answers "ok" unless scripted):
        its answer, once it has ended."""
        event = text_event(message_id, "next", chat_id=chat_id)
        self.assertEqual(self.webhook(port, event)[0], 200)
        return self.final_reply(message_id)

    def user_messages(self):
        """The last user message of each model request, in order."""
        return [[m for m in r["body"]["messages"] if m["role"] == "user"][-1]["content"]
                for r in self.model.requests()]

    def test_answer_streams_into_one_card_then_closes_it(self):
        port, cg = self.gateway()
        self.model.script("trickle:150")
        answer = "reply to: tell me a longer story please (1 messages)"
        self.webhook(port, text_event("om_sc1", "tell me a longer story please"))
        reply = self.final_reply("om_sc1")
        cards = self.fake.cards()
        self.assertEqual(len(cards), 1, cards)
        [(card_id, card)] = cards.items()
        self.assertEqual(reply["msg_type"], "interactive")
        self.assertEqual(reply["content"], {"type": "card", "data": {"card_id": card_id}})
        self.assertTrue(card["card"]["config"]["streaming_mode"])  # created streaming
        self.assertTrue(card["elements"]["stream_md"].endswith(answer), card["elements"])
        contents = [u for u in card["updates"] if "element_id" in u]
        self.assertGreater(len(contents), 1, card["updates"])
        self.assertTrue(all(u["element_id"] == "stream_md" for u in contents))
        sequences = [u["sequence"] for u in card["updates"]]
        self.assertEqual(sequences, sorted(set(sequences)), card["updates"])
        last = card["updates"][-1]
        self.assertIn("settings", last, card["updates"])
        self.assertEqual(last["settings"]["config"]["streaming_mode"], False)
        self.assertFalse(card["streaming"])
        self.assertEqual(self.fake.reply_order(), ["om_sc1"])
        self.finish(cg)

    def test_card_creation_failure_falls_back_to_a_text_reply(self):
        port, cg = self.gateway()
        self.fake.fail(path="/open-apis/cardkit/v1/cards", count=1, status=400, code=300301,
                       msg="invalid card")
        self.model.script("trickle:50")
        self.webhook(port, text_event("om_sc2", "no card for me"))
        [reply] = self.fake.wait_reply("om_sc2")
        self.assertEqual(reply["msg_type"], "text")
        self.assertEqual(reply["content"], {"text": "reply to: no card for me (1 messages)"})
        self.assertEqual(self.fake.cards(), {})
        # Sentinel: the chat's next answer (a card again) comes after it, alone.
        reply = self.sentinel(port, "om_sc2_next", "oc_om_sc2")
        self.assertEqual(self.shown(reply), "reply to: next (3 messages)")
        self.assertEqual(self.fake.reply_order(), ["om_sc2", "om_sc2_next"])
        self.finish(cg)

    def test_model_error_is_answered_without_a_streaming_card_left(self):
        port, cg = self.gateway()  # retries: 0
        self.model.script("status:500")
        self.webhook(port, text_event("om_sc3", "fail please"))
        reply = self.final_reply("om_sc3")
        self.assertIn("try again", self.shown(reply), reply)
        self.assertTrue(all(not c["streaming"] for c in self.fake.cards().values()))
        # Sentinel: the next message of the chat is answered (the failed turn
        # was not stored), and the model saw nothing in between.
        reply = self.sentinel(port, "om_sc3_next", "oc_om_sc3")
        self.assertEqual(self.shown(reply), "reply to: next (1 messages)")
        self.assertEqual(self.user_messages(), ["fail please", "next"])
        self.assertEqual(self.fake.reply_order(), ["om_sc3", "om_sc3_next"])
        self.finish(cg)

    def test_model_failing_mid_stream_closes_the_card_and_is_not_retried(self):
        # retries: 3, yet once part of the answer is on the user's card the
        # model is not asked again: one card, ended with the error.
        port, cg = self.gateway(retries=3)
        self.model.script("drop", "status:500")  # two words, then the connection is cut
        self.webhook(port, text_event("om_sc4", "break midway"))
        reply = self.final_reply("om_sc4")
        self.assertIn("try again", self.shown(reply))
        # The card showed the first words before the error replaced them.
        card = self.fake.cards()[reply["content"]["data"]["card_id"]]
        texts = [card["card"]["body"]["elements"][0]["content"]]
        texts += [u["content"] for u in card["updates"] if "content" in u]
        self.assertTrue(texts[0].startswith("reply"), texts)
        # Sentinel: the chat's next message; its first try fails (500) and
        # is retried, so retries are on.
        reply = self.sentinel(port, "om_sc4_next", "oc_om_sc4")
        self.assertEqual(self.shown(reply), "reply to: next (1 messages)")
        self.assertEqual(self.user_messages(), ["break midway", "next", "next"])
        self.assertEqual(self.fake.reply_order(), ["om_sc4", "om_sc4_next"])
        self.assertEqual(len(self.fake.cards()), 2, self.fake.cards())
        self.assertTrue(all(not c["streaming"] for c in self.fake.cards().values()))
        self.finish(cg)


class DurableStreamingCardTest(StreamingCardCase):
    """With the durable queue (router.queue, a real redis-server), a model
    failure mid-stream is tried again; the later attempt (cg_reply_t
    delivery 2) finds the first attempt's card by its record in the cache
    and continues it: one card, showing the whole answer, closed."""

    def setUp(self):
        super().setUp()
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.close)

    def test_a_retry_continues_the_first_attempts_card(self):
        cg = self.start(with_durable_queue(
            feishu_config(self.fake.port, model="gpt", model_instance=self.model.instance_yaml(),
                          replyStyle="streaming-card", streamUpdateMs=100), self.redis.socket))
        # The first attempt's stream breaks after two words (its card made
        # and showing them); the second answers in full.
        self.model.script("drop:2", "trickle:50")
        text = "break then go on"
        answer = "reply to: %s (1 messages)" % text
        self.assertEqual(self.webhook(cg.port, text_event("om_dsc1", text))[0], 200)
        reply = self.final_reply("om_dsc1")
        cards = self.fake.cards()
        self.assertEqual(len(cards), 1, cards)
        [(card_id, card)] = cards.items()
        self.assertEqual(reply["content"], {"type": "card", "data": {"card_id": card_id}})
        self.assertTrue(card["elements"]["stream_md"].endswith(answer), card["elements"])
        self.assertFalse(card["streaming"])
        self.assertEqual(len(self.fake.replies_to("om_dsc1")), 1)
        self.assertEqual(len(self.model.requests()), 2, self.model.requests())
        self.assertIn("continuing streaming card %s for message om_dsc1 (attempt 2)" % card_id,
                      cg.log())
        self.finish(cg)


# ------------------------------------------------------------------ long connection

class LongConnectionCase(FeishuCase):
    def not_ready_reason(self, port, fragment):
        def check():
            status, body, _ = get(port, "/readyz")
            if status != 503:
                return None
            items = [i for i in json.loads(body)["notReady"] if i["instance"] == "fs"]
            return items if items and fragment in items[0]["reason"] else None
        return wait_for(check, "/readyz 503 naming fs with %r" % fragment)[0]

    def error_lines(self, log, fragment):
        return [l for l in log.splitlines() if " error " in l and fragment in l]


class LongConnectionTest(LongConnectionCase):
    @classmethod
    def setUpClass(cls):
        cls.fake = FakeFeishu("--ping-interval", "1")
        cls.fake.control("/_control/reconnect", {"interval": 0, "nonce": 0})

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()

    def setUp(self):
        # The previous test's gateway has closed its connection.
        wait_for(lambda: self.fake.ws()["connections"] == 0, "no open connection")
        self.fake.reset()
        self.watch(self.fake)

    def connect(self, **settings):
        port, cg = self.gateway(self.fake, mode="longconn", **settings)
        wait_for(lambda: self.fake.ws()["connections"] == 1, "the long connection")
        return port, cg

    def converse(self, message_id, text, chat_id, **kw):
        """A p2p message pushed over the long connection: its reply."""
        self.fake.push(text_event(message_id, text, chat_id=chat_id, **kw))
        [reply] = self.fake.wait_reply(message_id)
        return reply

    def test_connects_answers_acks_and_pings(self):
        connects = self.fake.ws()["connects"]
        port, cg = self.connect()
        self.assertEqual(self.fake.ws()["connects"], connects + 1)
        frame_id = self.fake.push(text_event("om_ws1", "over the wire"))
        [reply] = self.fake.wait_reply("om_ws1")
        self.assertEqual(reply["content"], {"text": "echo: over the wire (turn 1)"})
        self.assertRegex(reply["authorization"], r"^Bearer t-\d+$")
        acks = self.fake.wait_ack(frame_id)
        self.assertEqual(len(acks), 1, acks)
        self.assertEqual(acks[0]["payload"]["code"], 200, acks)
        self.assertRegex(acks[0]["biz_rt"] or "", r"^\d+$", acks)
        wait_for(lambda: self.fake.ws()["pings"] >= 1, "a ping")
        # Ready once the long connection is open.
        wait_for(lambda: get(port, "/readyz")[0] == 200, "/readyz 200")
        self.finish(cg)

    def test_the_pongs_client_config_is_applied(self):
        port, cg = self.connect()
        wait_for(lambda: self.fake.ws()["pings"] >= 1, "a ping at the 1 s interval")
        # From the next pong on, PingInterval is 60 s.
        self.fake.control("/_control/reconnect", {"ping_interval": 60})
        self.addCleanup(self.fake.control, "/_control/reconnect", {"ping_interval": 1})
        handed = wait_for(lambda: [p for p in self.fake.ws()["pongs"] if p["PingInterval"] == 60],
                          "a pong handing out PingInterval 60")[0]
        # Three of the old intervals: the old schedule would ping about three times.
        time.sleep(3)
        later = [p for p in self.fake.ws()["pongs"] if p["t"] > handed["t"]]
        self.assertEqual(later, [], "pings went on at the old interval")
        self.finish(cg)

    def test_multi_part_event_is_reassembled_and_answered_once(self):
        port, cg = self.connect()
        chat = "oc_ws_parts"
        self.fake.push(text_event("om_ws_parts", "in three parts " + "x" * 300, chat_id=chat),
                       parts=3)
        [reply] = self.fake.wait_reply("om_ws_parts")
        self.assertEqual(reply["content"],
                         {"text": "echo: in three parts %s (turn 1)" % ("x" * 300)})
        self.fake.push(text_event("om_ws_rev", "backwards", chat_id=chat), parts=3, reverse=True)
        [reply] = self.fake.wait_reply("om_ws_rev")
        self.assertEqual(reply["content"], {"text": "echo: backwards (turn 2)"})
        # Sentinel: the chat's third turn, and nothing else answered.
        reply = self.converse("om_ws_parts_next", "next", chat)
        self.assertEqual(reply["content"], {"text": "echo: next (turn 3)"})
        self.assertEqual(self.fake.reply_order(), ["om_ws_parts", "om_ws_rev", "om_ws_parts_next"])
        acks = self.fake.ws()["acks"]
        self.assertEqual([a["payload"]["code"] for a in acks], [200, 200, 200], acks)
        self.finish(cg)

    def test_reconnects_after_a_drop_and_answers_a_replay_once(self):
        port, cg = self.connect()
        first = text_event("om_ws_before", "before the drop")
        self.fake.push(first)
        self.fake.wait_reply("om_ws_before")
        connects = self.fake.ws()["connects"]
        self.assertEqual(self.fake.post("/_control/ws/drop")[1], {"dropped": 1})

        def reconnected():
            ws = self.fake.ws()
            return ws["connects"] == connects + 1 and ws["connections"] == 1
        wait_for(reconnected, "the reconnect (connects %d -> %d)" % (connects, connects + 1))
        reply = self.converse("om_ws_after", "after the drop", "oc_ws_after")
        self.assertEqual(reply["content"], {"text": "echo: after the drop (turn 1)"})
        # The platform pushes the first event again (same event, same frame id reused).
        self.fake.push(first)
        self.fake.push(first, message_id="reused_frame")
        self.fake.push(first, message_id="reused_frame")
        # Sentinel: the first event's chat; its second turn.
        reply = self.converse("om_ws_barrier", "barrier", "oc_om_ws_before")
        self.assertEqual(reply["content"], {"text": "echo: barrier (turn 2)"})
        self.assertEqual(self.fake.reply_order(), ["om_ws_before", "om_ws_after", "om_ws_barrier"])
        self.assertEqual([a["payload"]["code"] for a in self.fake.ws()["acks"]], [200] * 6)
        self.assertEqual(self.fake.ws()["connections"], 1)
        self.finish(cg)

    def test_reconnects_after_part_of_the_nonce_then_every_interval(self):
        # ReconnectNonce 1 s, ReconnectInterval 3 s: after a drop the first
        # try comes within a second (at least 200 ms), the next ones every
        # 3 s; an open connection starts the count again.
        self.fake.control("/_control/reconnect", {"interval": 3, "nonce": 1})
        self.addCleanup(self.fake.control, "/_control/reconnect", {"interval": 0, "nonce": 0})
        port, cg = self.connect()
        # The first endpoint request after the drop is refused (busy): one retry.
        self.fake.fail(path=ENDPOINT, count=1, status=200, code=1, msg="system busy")
        connects = self.fake.ws()["connects"]
        dropped = time.monotonic()
        self.assertEqual(self.fake.post("/_control/ws/drop")[1], {"dropped": 1})

        def degraded():
            status, body, _ = get(port, "/readyz")
            items = [i for i in json.loads(body)["degraded"] if i["instance"] == "fs"]
            return status == 200 and items and "reconnecting" in items[0]["reason"]
        wait_for(degraded, "/readyz listing fs degraded, reconnecting")
        wait_for(lambda: self.fake.ws()["connects"] == connects + 1, "the reconnect")
        tries = [c for c in self.fake.calls(ENDPOINT) if c["t"] > dropped]
        self.assertEqual([bool(c.get("failed")) for c in tries], [True, False], tries)
        self.assertLess(tries[0]["t"] - dropped, 2.5, "the first try waited more than the nonce")
        gap = tries[1]["t"] - tries[0]["t"]
        self.assertGreaterEqual(gap, 2.7, "the second try came before ReconnectInterval")
        self.assertLess(gap, 9, "the second try came long after ReconnectInterval")
        wait_for(lambda: get(port, "/readyz")[0] == 200 and
                 json.loads(get(port, "/readyz")[1])["degraded"] == [], "ready, not degraded")
        # Dropped again: the first try is again a part of the nonce.
        self.assertEqual(self.fake.post("/_control/ws/drop")[1], {"dropped": 1})
        wait_for(lambda: self.fake.ws()["connects"] == connects + 2, "the second reconnect")
        delays = [int(d) for d in re.findall(r"reconnecting in (\d+) ms", cg.log())]
        self.assertEqual(len(delays), 3, delays)
        self.assertTrue(200 <= delays[0] < 1000, delays)
        self.assertEqual(delays[1], 3000, delays)
        self.assertTrue(200 <= delays[2] < 1000, delays)
        self.assertIn("long connection closed (", cg.log())
        self.finish(cg)

    def test_a_refused_reconnect_is_not_retried(self):
        # ReconnectInterval and Nonce 0: a reconnect comes after 200 ms, so
        # a retry loop would show well within NO_RETRY_WINDOW.
        port, cg = self.connect()
        self.fake.fail(path=ENDPOINT, count=1000, status=200, code=403, msg="forbidden")
        dropped = time.monotonic()
        self.assertEqual(self.fake.post("/_control/ws/drop")[1], {"dropped": 1})
        item = self.not_ready_reason(port, "long connection refused")
        self.assertEqual(item["state"], "failed")
        time.sleep(NO_RETRY_WINDOW)
        # Sentinel: the instance still answers webhook callbacks (its token is set).
        reply = self.say(port, "om_refused", "still here", "oc_refused")
        self.assertEqual(reply["content"], {"text": "echo: still here (turn 1)"})
        tries = [c for c in self.fake.calls(ENDPOINT) if c["t"] > dropped]
        self.assertEqual(len(tries), 1, tries)
        log = cg.log()
        self.assertEqual(len(self.error_lines(log, "long connection refused")), 1, log)
        self.assertEqual(log.count("reconnecting in"), 1, log)  # the drop's
        self.finish(cg)

    def test_webhook_callbacks_are_off_without_a_verification_token(self):
        port, cg = self.connect(verificationToken=None)
        status, body, _ = self.webhook(port, text_event("om_off", "by http", chat_id="oc_off"))
        self.assertEqual(status, 403, body)
        cg.wait_log("webhook callbacks are off: set verificationToken")
        # Sentinel over the long connection, in the same chat: its first turn.
        reply = self.converse("om_off_ws", "by ws", "oc_off")
        self.assertEqual(reply["content"], {"text": "echo: by ws (turn 1)"})
        self.assertEqual(self.fake.reply_order(), ["om_off_ws"])
        self.finish(cg)

    def test_a_missing_chat_type_is_a_group_over_the_long_connection_too(self):
        port, cg = self.connect()
        ev = text_event("om_ws_noct", "no chat type", chat_id="oc_ws_strict")
        del ev["event"]["message"]["chat_type"]
        frame_id = self.fake.push(ev)
        self.fake.wait_ack(frame_id)
        self.fake.push(text_event("om_ws_at", "@_user_1 now", chat_id="oc_ws_strict",
                                  chat_type="group", mentions=[("@_user_1", "ou_bot", "Bot")]))
        [reply] = self.fake.wait_reply("om_ws_at")
        self.assertEqual(reply["content"], {"text": "echo: now (turn 1)"})
        self.assertEqual(self.fake.reply_order(), ["om_ws_at"])
        self.assertEqual(self.metric(cg, "chatgate_messages_dropped_total", channel="fs",
                                     reason="policy"), 1)
        self.finish(cg)

    def test_card_button_over_the_long_connection_is_acked_with_a_toast(self):
        port, cg = self.connect()
        frame_id = self.fake.push(card_action_event("ev_ws_btn", "later"), type="card")
        [reply] = self.fake.wait_reply("om_card")
        self.assertEqual(reply["content"], {"text": "echo: later (turn 1)"})
        acks = self.fake.wait_ack(frame_id)
        self.assertEqual(acks[0]["payload"]["code"], 200)
        self.assertEqual(acks[0]["data_json"]["toast"], {"type": "info", "content": "Received"})
        self.finish(cg)


class AckAfterTheRouterTest(FeishuCase):
    """Feishu is acknowledged (the webhook's 2xx, the long connection's ack
    code 200) only once the router holds the message: with a 1.5 host the
    answer waits for emit_message_durable's done. A conversation's second
    message while its first is with the model (held by the fake model) is
    refused by router.maxConversationBacklog 1: it gets no acknowledgement,
    and is answered once Feishu delivers it again. Like the platform, the
    test delivers it again until it is taken: the lane frees once the first
    reply's delivery completed, just after the fake recorded it."""

    @classmethod
    def setUpClass(cls):
        cls.model = FakeOpenAI()

    @classmethod
    def tearDownClass(cls):
        cls.model.close()

    def setUp(self):
        self.model.reset()
        self.model.script("hold")  # the conversation's first answer waits for release()

    def release(self):
        self.assertEqual(post_json(self.model.port, "/release", {})[0], 200)

    def gateway(self, **settings):
        self.fake = self.new_fake()
        return super().gateway(self.fake, model="gpt", model_instance=self.model.instance_yaml(),
                               router_extra="  maxConversationBacklog: 1\n", **settings)

    def redeliver_until_taken(self, deliver, refused):
        """Delivers the refused message again until it is acknowledged;
        every answer before that must be the refusal. How many refusals."""
        answers = []

        def taken():
            answers.append(deliver())
            self.assertIn(answers[-1], ("taken", refused), answers)
            return answers[-1] == "taken"
        wait_for(taken, "the redelivered message to be taken")
        return len(answers) - 1

    def assert_taken_once(self, cg, refusals):
        """The refused message reached the model once, after the first
        answer (its context holds the first turn), and was answered once;
        every refusal was the backlog cap's."""
        [second] = self.fake.wait_reply("om_ack2")
        self.assertEqual(second["content"], {"text": "reply to: second (3 messages)"})
        self.assertEqual(self.fake.reply_order(), ["om_ack1", "om_ack2"])
        self.assertEqual(len(self.model.requests()), 2, self.model.requests())
        self.assertEqual(self.metric(cg, "chatgate_messages_dropped_total", channel="fs",
                                     reason="conversation_backlog"), float(refusals))
        log = self.finish(cg)
        self.assertIn("the router is full: Feishu is told to push event ev_om_ack2 again", log)

    def test_webhook_answers_2xx_only_for_a_message_the_router_took(self):
        port, cg = self.gateway()
        first = text_event("om_ack1", "first", chat_id="oc_ack")
        second = text_event("om_ack2", "second", chat_id="oc_ack")
        self.assertEqual(self.webhook(port, first)[:2], (200, {"msg": "success"}))
        # The lane is full while the first answer is held: not taken, not 2xx.
        self.assertEqual(self.webhook(port, second)[:2], (503, {"msg": "busy, retry"}))
        self.release()
        [reply] = self.fake.wait_reply("om_ack1")
        self.assertEqual(reply["content"], {"text": "reply to: first (1 messages)"})

        def deliver():
            answer = self.webhook(port, second)[:2]
            return "taken" if answer == (200, {"msg": "success"}) else answer
        refusals = 1 + self.redeliver_until_taken(deliver, (503, {"msg": "busy, retry"}))
        self.assert_taken_once(cg, refusals)

    def test_long_connection_acks_only_a_message_the_router_took(self):
        port, cg = self.gateway(mode="longconn")
        wait_for(lambda: self.fake.ws()["connections"] == 1, "the long connection")
        second = text_event("om_ack2", "second", chat_id="oc_ack")
        frame = self.fake.push(text_event("om_ack1", "first", chat_id="oc_ack"))
        self.assertEqual([a["payload"]["code"] for a in self.fake.wait_ack(frame)], [200])
        # The lane is full while the first answer is held: acked with 500,
        # which makes Feishu push the event again.
        frame = self.fake.push(second)
        self.assertEqual([a["payload"]["code"] for a in self.fake.wait_ack(frame)], [500])
        self.release()
        self.fake.wait_reply("om_ack1")

        def deliver():  # the platform's redelivery: a new push of the event
            [ack] = self.fake.wait_ack(self.fake.push(second))
            return "taken" if ack["payload"]["code"] == 200 else ack["payload"]["code"]
        refusals = 1 + self.redeliver_until_taken(deliver, 500)
        codes = [a["payload"]["code"] for a in self.fake.ws()["acks"]]
        self.assertEqual(codes, [200] + [500] * refusals + [200])
        self.assert_taken_once(cg, refusals)


class LongConnectionRefusedTest(LongConnectionCase):
    @classmethod
    def setUpClass(cls):
        cls.fake = FakeFeishu()

    @classmethod
    def tearDownClass(cls):
        cls.fake.close()

    def setUp(self):
        self.fake.reset()
        self.watch(self.fake)

    def assert_keeps_running(self, cg, port):
        self.assertIsNone(cg.proc.poll(), cg.log())
        self.assertEqual(get(port, "/healthz")[0], 200)

    def test_wrong_credentials_fail_readiness_and_are_not_retried(self):
        cg = self.start(feishu_config(self.fake.port, mode="longconn", appSecret=WRONG_SECRET),
                        wait_bot=False)
        port = cg.port
        item = self.not_ready_reason(port, "long connection refused")
        # Failed, not degraded-and-reconnecting, and no retry within ten
        # times the shortest reconnect delay (test_a_refused_reconnect_is_not_retried
        # watches the same after a drop, with the server's delays at 0).
        self.assertEqual(item["state"], "failed")
        time.sleep(NO_RETRY_WINDOW)
        self.assert_keeps_running(cg, port)
        log = cg.log()
        self.assertEqual(len(self.error_lines(log, "long connection refused")), 1, log)
        self.assertNotIn("reconnecting", log)
        self.assertEqual(len(self.fake.calls(ENDPOINT)), 1)
        self.assertEqual(self.fake.ws()["connects"], 0)
        self.finish(cg)

    def test_connection_limit_is_reported_and_not_retried_at_once(self):
        fake = self.new_fake("--endpoint-code", "1000040350")
        cg = self.start(feishu_config(fake.port, mode="longconn"))
        port = cg.port
        item = self.not_ready_reason(port, "connection limit")
        self.assertEqual(item["state"], "failed")
        self.assertIn("long connection refused", item["reason"])
        self.assertIn("retrying every 60 s", item["reason"])
        # Ten times the shortest reconnect delay: no retry loop (the retry a
        # minute later: CHATGATE_TEST_SLOW).
        time.sleep(NO_RETRY_WINDOW)
        self.assert_keeps_running(cg, port)
        self.assertEqual(len(fake.calls(ENDPOINT)), 1)
        self.assertEqual(len(self.error_lines(cg.log(), "connection limit")), 1, cg.log())
        self.finish(cg)


@unittest.skipUnless(os.environ.get("CHATGATE_TEST_SLOW"), "slow retries: set CHATGATE_TEST_SLOW=1")
class SlowRetriesTest(LongConnectionCase):
    def test_the_bot_info_and_the_connection_limit_are_retried(self):
        # The bot's open_id is asked again every 30 s; the connection limit
        # every 60 s.
        fake = self.new_fake()
        fake.fail(path="/open-apis/bot/v3/info", count=1, status=400, code=99991672,
                  msg="no permission")
        fake.fail(path=ENDPOINT, count=1, status=200, code=1000040350,
                  msg="exceed connection limit")
        cg = self.start(feishu_config(fake.port, mode="longconn"), wait_bot=False)
        port = cg.port
        self.not_ready_reason(port, "connection limit")
        cg.wait_log(BOT_LEARNED, timeout=30 + DEADLINE)
        info = fake.calls("/open-apis/bot/v3/info")
        self.assertEqual(len(info), 2, info)
        self.assertGreaterEqual(info[1]["t"] - info[0]["t"], 29.5)
        wait_for(lambda: fake.ws()["connections"] == 1, "the connection a minute later",
                 60 + DEADLINE)
        tries = fake.calls(ENDPOINT)
        self.assertEqual(len(tries), 2, tries)
        self.assertGreaterEqual(tries[1]["t"] - tries[0]["t"], 59.5)
        wait_for(lambda: get(port, "/readyz")[0] == 200, "/readyz 200")
        fake.push(text_event("om_slow", "at last"))
        self.assertEqual(fake.wait_reply("om_slow")[0]["content"],
                         {"text": "echo: at last (turn 1)"})
        self.finish(cg)


if __name__ == "__main__":
    unittest.main()
