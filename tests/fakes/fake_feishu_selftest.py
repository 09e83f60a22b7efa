#!/usr/bin/env python3
"""Self-test of fake_feishu.py: its helpers against the known-answer vectors
of /work/shared/protocols.md, then the running fake over HTTP and WebSocket.

    /usr/bin/python3 tests/fakes/fake_feishu_selftest.py
"""
import asyncio
import base64
import http.client
import json
import os
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fake_feishu as ff  # noqa: E402

import websockets  # noqa: E402

APP = {"app_id": "cli_test", "app_secret": "sec_test"}


def api(port, method, path, body=None, token=None, conn=None):
    """One JSON request -> (status, parsed body, lower-cased headers)."""
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    c.request(method, path, body=None if body is None else json.dumps(body).encode(), headers=headers)
    r = c.getresponse()
    data = json.loads(r.read())
    if conn is None:
        c.close()
    return r.status, data, {k.lower(): v for k, v in r.getheaders()}


class Helpers(unittest.TestCase):
    def test_decrypt_vectors(self):
        got = ff.decrypt("mazhe.nerd",
                         "tT1xP+ovuc0T3b/rnZX3ax76exqAn0ANQ6/U45GcciC0mgNBc8JtvqOJGNAPMKpgRs2dVU1NYk9VDeqS8T4S"
                         "YtU0hzNU54aS84WnxvZ3VFfDcy/RyABlNqlUiGyLDzFI0yxdCMT4KR/YEQXlt6nZi50KwRlZ+A75r645Kes"
                         "ZuLMljezYyY8VeeXEVjPw35+e")
        self.assertEqual(got, b'{"challenge":"5634b122-c042-4634-bc7f-b07a3c3e77ad",'
                              b'"token":"iRdCP2WwXNBXRM3mGLqhrgch3cn0gbT6","type":"url_verification"}')
        self.assertEqual(ff.decrypt("test key", "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="),
                         b"hello world")

    def test_sign_vector(self):
        body = b'{"encrypt":"P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="}'
        self.assertEqual(ff.sign("1700000000", "abc", "test key", body),
                         "0c09d96c2aef2ad08179b3967ea410bbc91dab24ce3aec05af962cf1935844af")

    def test_encrypt_round_trip(self):
        # With the vector's IV, encryption reproduces the vector exactly.
        vector = "P37w+VZImNgPEO1RBhJ6RtKl7n6zymIbEG1pReEzghk="
        iv = base64.b64decode(vector)[:16]
        self.assertEqual(ff.encrypt("test key", b"hello world", iv=iv), vector)
        for text in (b"", b"x" * 16, "héllo 飞书".encode(), os.urandom(1000)):
            token = ff.encrypt("k", text)
            self.assertEqual(ff.decrypt("k", token), text)
        self.assertNotEqual(ff.encrypt("k", b"a"), ff.encrypt("k", b"a"))  # random IV

    def test_frame_round_trip(self):
        frame = {"seq_id": 2 ** 64 - 1, "log_id": 123456789012, "service": 7, "method": 1,
                 "headers": [("type", "event"), ("sum", "2"), ("type", "again"), ("ключ", "値")],
                 "payload_encoding": "gzip", "payload_type": "json",
                 "payload": bytes(i % 251 for i in range(1 << 20)), "log_id_new": "L-1"}
        self.assertEqual(ff.frame_decode(ff.frame_encode(frame)), frame)
        small = {"seq_id": 0, "log_id": 0, "service": -1, "method": 0, "headers": [],
                 "payload_encoding": None, "payload_type": None, "payload": None, "log_id_new": None}
        self.assertEqual(ff.frame_decode(ff.frame_encode(small)), small)
        self.assertEqual(ff.frame_decode(ff.frame_encode({"method": 0, "headers": {"type": "ping"}}))
                         ["headers"], [("type", "ping")])

    def test_frame_decode_any_order_and_unknown_fields(self):
        v = ff._varint
        data = (ff._ld(8, b"body") + v(4 << 3) + v(1)            # payload before method
                + v(20 << 3) + v(99)                             # unknown varint
                + v(21 << 3 | 1) + b"\0" * 8                     # unknown fixed64
                + v(22 << 3 | 5) + b"\0" * 4                     # unknown fixed32
                + ff._ld(23, b"whatever")                        # unknown bytes
                + v(24 << 3 | 3) + v(1 << 3) + v(5) + v(24 << 3 | 4)  # unknown group
                + ff._ld(5, ff._ld(2, b"v") + ff._ld(1, b"k") + v(3 << 3) + v(0))
                + v(3 << 3) + v(7) + v(1 << 3) + v(300))
        got = ff.frame_decode(data)
        self.assertEqual((got["seq_id"], got["service"], got["method"], got["payload"], got["headers"]),
                         (300, 7, 1, b"body", [("k", "v")]))
        with self.assertRaises(ValueError):
            ff.frame_decode(b"\x0a\x05ab")  # truncated

    def test_message_event(self):
        ev = ff.message_event("om_1", "oc_1", "group", "@_user_1 hi",
                              mentions=[("@_user_1", "ou_bot", "Bot")])
        self.assertEqual(ev["schema"], "2.0")
        self.assertEqual(ev["header"]["event_id"], "ev_om_1")
        self.assertEqual(ev["header"]["event_type"], "im.message.receive_v1")
        msg = ev["event"]["message"]
        self.assertEqual(json.loads(msg["content"]), {"text": "@_user_1 hi"})
        self.assertEqual(msg["mentions"][0]["id"]["open_id"], "ou_bot")
        self.assertEqual(ev["event"]["sender"]["sender_id"]["open_id"], "ou_user")
        self.assertTrue(ev["header"]["create_time"].isdigit())


class Running(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "fake_feishu.py"), "--app-id", "cli_test",
             "--app-secret", "sec_test", "--ping-interval", "5"],
            stdout=subprocess.PIPE, text=True)
        line = cls.proc.stdout.readline()
        assert line.startswith("PORT "), line
        cls.port = int(line.split()[1])

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(5)
        cls.proc.stdout.close()

    def setUp(self):
        self.call("POST", "/_control/reset")
        # The inbound messages these tests reply to, as a webhook test registers them.
        self.call("POST", "/_control/known", {"message_ids": ["om_1", "om_2"]})

    def problems(self):
        return self.call("GET", "/_control/problems")[1]["problems"]

    def call(self, method, path, body=None, token=None, conn=None):
        return api(self.port, method, path, body, token, conn)

    def token(self):
        status, data, _ = self.call("POST", "/open-apis/auth/v3/tenant_access_token/internal", APP)
        self.assertEqual((status, data["code"], data["expire"]), (200, 0, 7200))
        return data["tenant_access_token"]

    def reply(self, token, text="hi", uuid=None, msg_id="om_1"):
        body = {"msg_type": "text", "content": json.dumps({"text": text})}
        if uuid:
            body["uuid"] = uuid
        return self.call("POST", "/open-apis/im/v1/messages/%s/reply" % msg_id, body, token)

    def test_tokens_and_replies(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)  # keep-alive
        status, data, _ = self.call("POST", "/open-apis/auth/v3/tenant_access_token/internal",
                                    {"app_id": "cli_test", "app_secret": "nope"}, conn=conn)
        self.assertEqual((status, data["code"]), (200, 10014))
        status, data, _ = self.call("POST", "/open-apis/auth/v3/tenant_access_token/internal", APP, conn=conn)
        t1 = data["tenant_access_token"]
        self.assertTrue(t1.startswith("t-"))
        status, data, _ = self.reply(None)
        self.assertEqual((status, data["code"]), (400, 99991663))
        status, data, _ = self.reply("t-bogus")
        self.assertEqual((status, data["code"]), (400, 99991663))
        status, data, _ = self.reply(t1, uuid="u-1")
        self.assertEqual((status, data["code"]), (200, 0))
        first = data["data"]["message_id"]
        status, data, _ = self.reply(t1, "hi again", uuid="u-1")
        self.assertEqual(data["data"]["message_id"], first)
        status, data, _ = self.call("POST", "/open-apis/im/v1/messages?receive_id_type=chat_id",
                                    {"receive_id": "oc_9", "msg_type": "post",
                                     "content": json.dumps({"zh_cn": {"title": "T", "content": []}})}, t1)
        self.assertEqual(data["code"], 0)
        self.assertNotEqual(data["data"]["message_id"], first)
        # validation
        for body, code in (({"msg_type": "text", "content": "{not json"}, 230001),
                           ({"msg_type": "text", "content": json.dumps({"txt": "x"})}, 230001),
                           ({"msg_type": "audio", "content": "{}"}, 230001),
                           ({"msg_type": "text", "content": json.dumps({"text": "x" * 160000})}, 230025),
                           ({"msg_type": "interactive", "content": json.dumps(
                               {"type": "card", "data": {"card_id": "card_x"}})}, 230099)):
            status, data, _ = self.call("POST", "/open-apis/im/v1/messages/om_1/reply", body, t1)
            self.assertEqual((status, data["code"]), (400, code), body["content"][:40])
        _, data, _ = self.call("GET", "/_control/messages")
        self.assertEqual(data["duplicates"], 1)
        self.assertEqual([m["kind"] for m in data["messages"]], ["reply", "send"])
        reply, send = data["messages"]
        self.assertEqual((reply["message_id"], reply["content"], reply["uuid"], reply["authorization"]),
                         ("om_1", {"text": "hi"}, "u-1", "Bearer " + t1))
        self.assertEqual((send["receive_id"], send["receive_id_type"], send["msg_type"]),
                         ("oc_9", "chat_id", "post"))
        # expiry
        self.call("POST", "/_control/expire_tokens")
        status, data, _ = self.reply(t1)
        self.assertEqual((status, data["code"]), (400, 99991663))
        t2 = self.token()
        self.assertNotEqual(t1, t2)
        self.assertEqual(self.reply(t2)[1]["code"], 0)
        _, data, _ = self.call("GET", "/_control/calls")
        self.assertEqual(data["calls"][0]["body"], {"app_id": "cli_test", "app_secret": "nope"})
        self.assertEqual(data["calls"][3]["authorization"], "Bearer t-bogus")
        # The token request says what the earlier tokens had left; calls, the token's life.
        second = [c for c in data["calls"] if c.get("issued") == t2][0]
        self.assertIsNone(second["valid_tokens"][t1])  # revoked
        self.assertGreater([c for c in data["calls"] if c["authorization"] == "Bearer " + t2][-1]
                           ["token_remaining"], 7000)
        _, tokens, _ = self.call("GET", "/_control/tokens")
        self.assertEqual([(t["token"], t["valid"]) for t in tokens["tokens"]][-2:],
                         [(t1, False), (t2, True)])
        # Problems: no token, a bogus one, and the five invalid bodies; the
        # wrong secret and the expired token are the platform's ordinary answers.
        problems = [p["problem"] for p in self.problems()]
        self.assertEqual(len(problems), 7, problems)
        self.assertEqual(sum("99991663" in p for p in problems), 2, problems)
        conn.close()

    def test_fail_injection(self):
        t = self.token()
        self.call("POST", "/_control/fail", {"path": "/open-apis/im/", "count": 1, "status": 429,
                                             "code": 99991400, "msg": "rate limited",
                                             "headers": {"x-ogw-ratelimit-reset": "1"}})
        status, data, headers = self.reply(t)
        self.assertEqual((status, data["code"], headers["x-ogw-ratelimit-reset"]), (429, 99991400, "1"))
        status, data, _ = self.reply(t)
        self.assertEqual((status, data["code"]), (200, 0))
        _, data, _ = self.call("GET", "/_control/messages")
        self.assertEqual(len(data["messages"]), 1)
        _, data, _ = self.call("GET", "/_control/calls")
        self.assertEqual([c.get("failed", False) for c in data["calls"]], [False, True, False])
        self.assertEqual(self.problems(), [])

    def test_replies_need_a_known_message_and_a_json_request(self):
        t = self.token()
        status, data, _ = self.reply(t, msg_id="om_never_delivered")
        self.assertEqual((status, data["code"]), (400, 230001))
        self.assertIn("invalid message_id", data["msg"])
        self.assertEqual(data["error"], {"log_id": "fake-log"})
        # A reply to the bot's own message is fine.
        status, data, _ = self.reply(t, msg_id="om_1")
        own = data["data"]["message_id"]
        self.assertEqual(self.reply(t, msg_id=own)[1]["code"], 0)
        # A body sent without a JSON Content-Type.
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("POST", "/open-apis/im/v1/messages/om_1/reply",
                  body=json.dumps({"msg_type": "text", "content": json.dumps({"text": "x"})}),
                  headers={"Authorization": "Bearer " + t, "Content-Type": "text/plain"})
        self.assertEqual(c.getresponse().status, 200)
        c.close()
        problems = [p["problem"] for p in self.problems()]
        self.assertEqual(len(problems), 2, problems)
        self.assertIn("invalid message_id", problems[0])
        self.assertIn("Content-Type", problems[1])
        # Reset forgets problems and known ids.
        self.call("POST", "/_control/reset")
        self.assertEqual(self.problems(), [])
        self.assertEqual(self.reply(t, msg_id="om_1")[1]["code"], 230001)

    def test_token_expire_control(self):
        self.assertEqual(self.call("POST", "/_control/token_expire", {"expire": 190})[1],
                         {"expire": 190})
        try:
            _, data, _ = self.call("POST", "/open-apis/auth/v3/tenant_access_token/internal", APP)
            self.assertEqual(data["expire"], 190)
            _, tokens, _ = self.call("GET", "/_control/tokens")
            [mine] = [t for t in tokens["tokens"] if t["token"] == data["tenant_access_token"]]
            self.assertAlmostEqual(mine["expires_at"] - mine["issued_at"], 190)
            self.assertTrue(mine["valid"])
        finally:
            self.call("POST", "/_control/token_expire", {"expire": 7200})

    def test_cards(self):
        t = self.token()
        card = {"schema": "2.0", "config": {"streaming_mode": True, "summary": {"content": "..."}},
                "body": {"elements": [{"tag": "markdown", "element_id": "stream_md", "content": ""}]}}
        _, data, _ = self.call("POST", "/open-apis/cardkit/v1/cards", {"type": "card_json", "data": "{x"}, t)
        self.assertEqual(data["code"], 300301)
        _, data, _ = self.call("POST", "/open-apis/cardkit/v1/cards",
                               {"type": "card_json", "data": json.dumps(card)}, t)
        card_id = data["data"]["card_id"]
        _, data, _ = self.call("POST", "/open-apis/im/v1/messages/om_2/reply", {
            "msg_type": "interactive", "content": json.dumps({"type": "card", "data": {"card_id": card_id}})}, t)
        self.assertEqual(data["code"], 0)
        path = "/open-apis/cardkit/v1/cards/%s/elements/stream_md/content" % card_id
        for seq, text, code in ((1, "Hel", 0), (2, "Hello", 0), (2, "stale", 300317), (1, "older", 300317)):
            status, data, _ = self.call("PUT", path, {"content": text, "sequence": seq, "uuid": "s%d" % seq}, t)
            self.assertEqual(data["code"], code, text)
        _, data, _ = self.call("PUT", path.replace("stream_md", "nope"), {"content": "x", "sequence": 9}, t)
        self.assertEqual(data["code"], 300302)
        settings = {"settings": json.dumps({"config": {"streaming_mode": False}}), "sequence": 2}
        _, data, _ = self.call("PATCH", "/open-apis/cardkit/v1/cards/%s/settings" % card_id, settings, t)
        self.assertEqual(data["code"], 300317)
        settings["sequence"] = 3
        _, data, _ = self.call("PATCH", "/open-apis/cardkit/v1/cards/%s/settings" % card_id, settings, t)
        self.assertEqual(data["code"], 0)
        _, data, _ = self.call("GET", "/_control/cards")
        got = data["cards"][card_id]
        self.assertEqual(got["elements"], {"stream_md": "Hello"})
        self.assertFalse(got["streaming"])
        self.assertEqual([u["sequence"] for u in got["updates"]], [1, 2, 3])
        self.assertEqual(got["updates"][2]["settings"], {"config": {"streaming_mode": False}})

    def test_websocket(self):
        status, data, _ = self.call("POST", "/callback/ws/endpoint", {"AppID": "cli_test", "AppSecret": "x"})
        self.assertEqual(data["code"], 403)
        self.call("POST", "/_control/reconnect", {"interval": 0, "nonce": 0})
        status, data, _ = self.call("POST", "/callback/ws/endpoint", {"AppID": "cli_test", "AppSecret": "sec_test"})
        self.assertEqual(data["code"], 0)
        url = data["data"]["URL"]
        self.assertEqual(data["data"]["ClientConfig"], {"ReconnectCount": -1, "ReconnectInterval": 0,
                                                        "ReconnectNonce": 0, "PingInterval": 5})
        self.assertIn("service_id=7", url)
        status, data, _ = self.call("POST", "/_control/ws/event", {"event": {"x": 1}})
        self.assertEqual((status, data["sent"]), (409, False))
        asyncio.run(self.ws_session(url))
        _, data, _ = self.call("GET", "/_control/ws")
        self.assertEqual((data["connections"], data["connects"], data["pings"], data["rejected"]), (0, 3, 2, 1))
        # One record per connection, in order: dropped (no closing
        # handshake), closed by the fake, closed by the client.
        history = data["history"]
        self.assertEqual([(h["n"], h["close_code"], h["close_reason"], h["closed_by"]) for h in history],
                         [(1, 1006, "", None), (2, 4000, "bye", "server"), (3, 1000, "done", "client")])
        for h in history:
            self.assertLessEqual(h["opened_at"], h["closed_at"])
        for earlier, later in zip(history, history[1:]):
            self.assertLessEqual(earlier["closed_at"], later["opened_at"])
        self.assertEqual({h["device_id"] for h in history}, {url.split("device_id=")[1].split("&")[0]})
        self.assertGreaterEqual(data["ws_pings"], 1)
        self.assertEqual(len(data["acks"]), 3)
        ack = data["acks"][0]
        self.assertEqual((ack["biz_rt"], ack["payload"]["code"], ack["message_id"]), ("3", 200, "msg_1"))
        self.assertEqual(ack["data_json"], {"toast": {"type": "info", "content": "ok"}})
        self.assertIn("error", data["frames"][-1])  # the text message
        self.assertEqual(data["pongs"][0]["PingInterval"], 5)
        # The session's protocol problems, in order: the same ack again, an
        # ack without biz_rt (of a frame never pushed), a ping for another
        # service, and the text message.
        problems = [p["problem"] for p in self.problems()]
        self.assertEqual(len(problems), 5, problems)
        self.assertIn("acked twice", problems[0])
        self.assertIn("acked twice", problems[1])
        self.assertIn("biz_rt", problems[2])
        self.assertIn("service 3", problems[3])
        self.assertIn("text WebSocket message", problems[4])
        # A message pushed to the bot may be replied to.
        self.assertEqual(self.reply(self.token(), msg_id="om_9")[1]["code"], 0)

    async def ws_session(self, url):
        bad = url.replace("device_id=", "device_id=9")
        with self.assertRaises(websockets.InvalidStatusCode) as cm:
            async with websockets.connect(bad):
                pass
        self.assertEqual(cm.exception.status_code, 403)
        async with websockets.connect(url) as ws:
            await ws.ping()
            await ws.send(ff.frame_encode({"method": 0, "service": 7, "headers": [("type", "ping")]}))
            pong = ff.frame_decode(await asyncio.wait_for(ws.recv(), 5))
            self.assertEqual((pong["method"], pong["service"], dict(pong["headers"])["type"]), (0, 7, "pong"))
            self.assertEqual(json.loads(pong["payload"])["PingInterval"], 5)
            event = ff.message_event("om_9", "oc_1", "p2p", "hello " * 50)
            status, data, _ = await asyncio.to_thread(
                self.call, "POST", "/_control/ws/event", {"event": event, "parts": 2, "type": "event"})
            self.assertEqual((status, data["sent"]), (200, True))
            frames = [ff.frame_decode(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2)]
            heads = [dict(f["headers"]) for f in frames]
            self.assertEqual([(h["sum"], h["seq"], h["type"]) for h in heads], [("2", "0", "event"), ("2", "1", "event")])
            self.assertEqual({h["message_id"] for h in heads}, {data["message_id"]})
            self.assertTrue(all(f["method"] == 1 and f["service"] == 7 and f["payload"] for f in frames))
            self.assertEqual(json.loads(frames[0]["payload"] + frames[1]["payload"]), event)
            answer = base64.b64encode(json.dumps({"toast": {"type": "info", "content": "ok"}}).encode()).decode()
            ack = dict(frames[0], headers=frames[0]["headers"] + [("biz_rt", "3")],
                       payload=json.dumps({"code": 200, "headers": None, "data": answer}).encode())
            await ws.send(ff.frame_encode(ack))
            await ws.send(ff.frame_encode(ack))  # acked twice
            await ws.send(ff.frame_encode(dict(ack, seq_id=999, headers=frames[0]["headers"])))
            await ws.send(ff.frame_encode({"method": 0, "service": 3, "headers": [("type", "ping")]}))
            await ws.recv()  # its pong
            await ws.send("not a frame")
            for _ in range(50):
                _, got, _ = await asyncio.to_thread(self.call, "GET", "/_control/ws")
                if len(got["acks"]) >= 3 and len(got["frames"]) >= 6:
                    break
                await asyncio.sleep(0.02)
            self.assertEqual(got["connections"], 1)
            _, data, _ = await asyncio.to_thread(self.call, "POST", "/_control/ws/drop")
            self.assertEqual(data["dropped"], 1)
            with self.assertRaises(websockets.ConnectionClosed) as cm:
                await asyncio.wait_for(ws.recv(), 5)
            self.assertEqual(cm.exception.code, 1006)  # no close frame
        for _ in range(50):
            _, got, _ = await asyncio.to_thread(self.call, "GET", "/_control/ws")
            if got["connections"] == 0:
                break
            await asyncio.sleep(0.02)
        # A clean close with a chosen code (the URL stays usable).
        async with websockets.connect(url) as ws:
            _, data, _ = await asyncio.to_thread(self.call, "POST", "/_control/ws/close",
                                                 {"code": 4000, "reason": "bye"})
            self.assertEqual(data["closed"], 1)
            with self.assertRaises(websockets.ConnectionClosed) as cm:
                await asyncio.wait_for(ws.recv(), 5)
            self.assertEqual((cm.exception.code, cm.exception.reason), (4000, "bye"))
        # The client closes: the record says so, and keeps it open until then.
        async with websockets.connect(url) as ws:
            for _ in range(50):
                _, got, _ = await asyncio.to_thread(self.call, "GET", "/_control/ws")
                if got["connections"] == 1:
                    break
                await asyncio.sleep(0.02)
            self.assertEqual((got["history"][-1]["n"], got["history"][-1]["closed_at"]), (3, None))
            await ws.close(1000, "done")
        for _ in range(50):
            _, got, _ = await asyncio.to_thread(self.call, "GET", "/_control/ws")
            if got["history"][-1]["close_code"] is not None:
                break
            await asyncio.sleep(0.02)


class Options(unittest.TestCase):
    def test_token_expire_and_endpoint_code(self):
        proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "fake_feishu.py"), "--app-id", "cli_test",
             "--app-secret", "sec_test", "--token-expire", "1", "--endpoint-code", "1000040350"],
            stdout=subprocess.PIPE, text=True)
        try:
            port = int(proc.stdout.readline().split()[1])

            def run(*args):
                return api(port, *args)
            _, data, _ = run("POST", "/open-apis/auth/v3/tenant_access_token/internal", APP)
            self.assertEqual(data["expire"], 1)
            token = data["tenant_access_token"]
            body = {"receive_id": "ou_1", "msg_type": "text", "content": json.dumps({"text": "x"})}
            self.assertEqual(run("POST", "/open-apis/im/v1/messages?receive_id_type=open_id", body, token)[1]["code"], 0)
            _, data, _ = run("POST", "/callback/ws/endpoint", {"AppID": "cli_test", "AppSecret": "sec_test"})
            self.assertEqual(data["code"], 1000040350)
            time.sleep(1.1)
            status, data, _ = run("POST", "/open-apis/im/v1/messages?receive_id_type=open_id", body, token)
            self.assertEqual((status, data["code"]), (400, 99991663))
        finally:
            proc.terminate()
            proc.wait(5)
            proc.stdout.close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
