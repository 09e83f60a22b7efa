#!/usr/bin/env python3
"""Self-test of fake_dingtalk.py: its helpers against the known-answer vector
of /work/shared/protocols.md, then the running fake over HTTP and WebSocket.

    /usr/bin/python3 tests/fakes/fake_dingtalk_selftest.py
"""
import asyncio
import http.client
import json
import os
import subprocess
import sys
import time
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fake_dingtalk as fd  # noqa: E402

import websockets  # noqa: E402

APP = {"appKey": "dingabc", "appSecret": "sec_test"}
SECRET = "SECfake0123456789"


def api(port, method, path, body=None, token=None, conn=None, raw=None):
    """One JSON request -> (status, parsed body, lower-cased headers)."""
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["x-acs-dingtalk-access-token"] = token
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    c.request(method, path, body=data, headers=headers)
    r = c.getresponse()
    parsed = json.loads(r.read())
    if conn is None:
        c.close()
    return r.status, parsed, {k.lower(): v for k, v in r.getheaders()}


def start_fake(*extra):
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_dingtalk.py"),
                             "--client-id", "dingabc", "--client-secret", "sec_test"] + list(extra),
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("PORT "), line
    return proc, int(line.split()[1])


def stop_fake(proc):
    proc.terminate()
    proc.wait(5)
    proc.stdout.close()


class Helpers(unittest.TestCase):
    def test_sign_vectors(self):
        want = "hmPWwU+7lVdm3ZZz0r9tSfx0L4Q26jWOZr9+Gs6EZQM="
        self.assertEqual(fd.robot_sign("1577262236757", "this is secret"), want)
        self.assertEqual(fd.callback_sign("1577262236757", "this is secret"), want)
        self.assertEqual(urllib.parse.quote_plus(want), "hmPWwU%2B7lVdm3ZZz0r9tSfx0L4Q26jWOZr9%2BGs6EZQM%3D")
        self.assertNotEqual(fd.robot_sign("1577262236758", "this is secret"), want)

    def test_robot_message(self):
        m = fd.robot_message("msg1", "cid1", "2", " hello", at_bot=True,
                             session_webhook="http://x/robot/sendBySession?session=s", session_expires_ms=123)
        for key in ("conversationId", "atUsers", "chatbotCorpId", "chatbotUserId", "msgId", "senderNick",
                    "isAdmin", "senderStaffId", "sessionWebhookExpiredTime", "createAt", "senderCorpId",
                    "conversationType", "senderId", "conversationTitle", "isInAtList", "sessionWebhook",
                    "robotCode", "msgtype", "text"):
            self.assertIn(key, m)
        self.assertEqual((m["text"], m["isInAtList"], m["sessionWebhookExpiredTime"], m["robotCode"]),
                         ({"content": " hello"}, True, 123, "dingabc"))
        self.assertEqual(m["atUsers"], [{"dingtalkId": m["chatbotUserId"]}])
        single = fd.robot_message("msg2", "cid2", "1", "hi")
        self.assertNotIn("conversationTitle", single)
        self.assertFalse(single["isInAtList"])
        self.assertTrue(single["sessionWebhook"].startswith("http://127.0.0.1:9/"))
        pic = fd.robot_message("msg3", "cid2", "1", "", msgtype="picture")
        self.assertEqual((pic["content"], "text" in pic), ({"downloadCode": "dc_msg3"}, False))
        rich = fd.robot_message("msg4", "cid2", "1", "", msgtype="richText", content={
            "richText": [{"text": "look"}, {"type": "picture", "downloadCode": "dc"}]})
        self.assertEqual(rich["content"]["richText"][1]["downloadCode"], "dc")

    def test_frames(self):
        frame = fd.stream_frame("EVENT", "chat_update_title", {"a": 1}, "m1")
        self.assertEqual((frame["specVersion"], frame["type"], json.loads(frame["data"])), ("1.0", "EVENT", {"a": 1}))
        for key in ("topic", "messageId", "contentType", "time", "appId", "connectionId", "eventId",
                    "eventType", "eventBornTime", "eventCorpId", "eventUnifiedAppId"):
            self.assertIn(key, frame["headers"])
        ack = fd.ack_frame("m1", {"response": None})
        self.assertEqual((ack["code"], ack["headers"]["messageId"], ack["data"]), (200, "m1", '{"response": null}'))


class Running(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.proc, cls.port = start_fake("--robot-secret", SECRET)

    @classmethod
    def tearDownClass(cls):
        stop_fake(cls.proc)

    def setUp(self):
        self.call("POST", "/_control/reset")

    def call(self, method, path, body=None, token=None, conn=None, raw=None):
        return api(self.port, method, path, body, token, conn, raw)

    def problems(self):
        return self.call("GET", "/_control/problems")[1]["problems"]

    def token(self):
        status, data, _ = self.call("POST", "/v1.0/oauth2/accessToken", APP)
        self.assertEqual((status, data["expireIn"]), (200, 7200))
        return data["accessToken"]

    def o2o(self, token, text="hi", **over):
        body = {"robotCode": "dingabc", "userIds": ["staff_u"], "msgKey": "sampleText",
                "msgParam": json.dumps({"content": text})}
        body.update(over)
        return self.call("POST", "/v1.0/robot/oToMessages/batchSend", body, token)

    def test_tokens_and_robot_sends(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)  # keep-alive
        status, data, headers = self.call("POST", "/v1.0/oauth2/accessToken",
                                          {"appKey": "dingabc", "appSecret": "nope"}, conn=conn)
        self.assertEqual((status, data["code"]), (400, "invalidClientIdOrSecret"))
        self.assertIn("requestid", data)
        self.assertTrue(headers["content-type"].startswith("application/json"))
        t1 = self.token()
        self.assertTrue(t1.startswith("tok-"))
        status, data, _ = self.o2o(None)
        self.assertEqual((status, data["code"]), (400, "AuthenticationFailed.MissingParameter"))
        status, data, _ = self.o2o("tok-bogus")
        self.assertEqual((status, data["code"], data["message"]),
                         (400, "InvalidAuthentication", "不合法的access_token"))
        status, data, _ = self.o2o(t1, "hello")
        self.assertEqual(status, 200)
        self.assertTrue(data["processQueryKey"].startswith("pqk-"))
        self.assertEqual((data["invalidStaffIdList"], data["flowControlledStaffIdList"]), ([], []))
        status, data, _ = self.call("POST", "/v1.0/robot/groupMessages/send", {
            "robotCode": "dingabc", "openConversationId": "cidG", "msgKey": "sampleMarkdown",
            "msgParam": json.dumps({"title": "T", "text": "**b**"})}, t1, conn=conn)
        self.assertEqual(status, 200)
        self.assertNotIn("invalidStaffIdList", data)
        for over, code in (({"robotCode": "other"}, "resource.not.found"),
                           ({"msgKey": "sampleAudio"}, "invalidParameter.msgKey"),
                           ({"msgParam": "{not json"}, "invalidParameter.msgParam"),
                           ({"msgKey": "sampleMarkdown"}, "invalidParameter.msgParam"),
                           ({"msgParam": {"content": "x"}}, "MissingmsgParam"),
                           ({"userIds": []}, "MissinguserIds")):
            status, data, _ = self.o2o(t1, **over)
            self.assertEqual((status, data["code"]), (400, code), over)
        _, data, _ = self.call("GET", "/_control/messages")
        self.assertEqual(data["counts"], {"o2o": 1, "group": 1, "session": 0, "robot": 0, "total": 2})
        o2o, group = data["messages"]
        self.assertEqual((o2o["kind"], o2o["userIds"], o2o["msgParam"], o2o["token"]),
                         ("o2o", ["staff_u"], {"content": "hello"}, t1))
        self.assertEqual((group["kind"], group["openConversationId"], group["msgParam"]["title"]),
                         ("group", "cidG", "T"))
        # expiry
        self.call("POST", "/_control/expire_tokens")
        status, data, _ = self.o2o(t1)
        self.assertEqual((status, data["code"]), (400, "InvalidAuthentication"))
        t2 = self.token()
        self.assertNotEqual(t1, t2)
        self.assertEqual(self.o2o(t2)[0], 200)
        # Requests built wrong are problems; refused credentials, an unknown
        # robot, an unknown or revoked token are not.
        problems = self.problems()
        self.assertEqual([p["problem"].split(": ", 2)[-1].split(" ")[0] for p in problems],
                         ["AuthenticationFailed.MissingParameter", "invalidParameter.msgKey",
                          "invalidParameter.msgParam", "invalidParameter.msgParam", "MissingmsgParam",
                          "MissinguserIds"], problems)
        self.assertTrue(all(p["where"] == "http" for p in problems), problems)
        _, data, _ = self.call("GET", "/_control/tokens")
        self.assertEqual([(t["token"], t["expire_in"], t["revoked"]) for t in data["tokens"]][-2:],
                         [(t1, 7200, True), (t2, 7200, False)])
        self.assertAlmostEqual(data["tokens"][-1]["expires_at"] - data["tokens"][-1]["issued_at"], 7200)
        # Not JSON, or not sent as JSON.
        self.call("POST", "/v1.0/robot/groupMessages/send", token=t2, raw=b"{broken")
        conn2 = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn2.request("POST", "/v1.0/robot/groupMessages/send", body=json.dumps({
            "robotCode": "dingabc", "openConversationId": "cidG", "msgKey": "sampleText",
            "msgParam": json.dumps({"content": "x"})}), headers={"x-acs-dingtalk-access-token": t2,
                                                                 "Content-Type": "text/plain"})
        self.assertEqual(conn2.getresponse().status, 200)
        conn2.close()
        problems = self.problems()[6:]
        self.assertEqual(len(problems), 3, problems)  # the broken body is also Missingbody
        self.assertIn("not UTF-8 JSON", problems[0]["problem"])
        self.assertIn("not application/json", problems[2]["problem"])
        _, data, _ = self.call("GET", "/_control/calls")
        calls = data["calls"]
        self.assertEqual(calls[0]["body"], {"appKey": "dingabc", "appSecret": "nope"})
        self.assertEqual((calls[0]["status"], calls[0]["code"]), (400, "invalidClientIdOrSecret"))
        self.assertEqual(calls[3]["headers"]["x-acs-dingtalk-access-token"], "tok-bogus")
        self.assertEqual(calls[3]["headers"]["Content-Type"], "application/json")
        self.assertNotIn("x-acs-dingtalk-access-token", calls[2]["headers"])
        conn.close()

    def test_fail_injection(self):
        t = self.token()
        self.call("POST", "/_control/fail", {"path": "/v1.0/robot/", "count": 1, "status": 429,
                                             "body": {"code": "Throttling", "message": "slow down"},
                                             "headers": {"Retry-After": "1"}})
        status, data, headers = self.o2o(t)
        self.assertEqual((status, data["code"], headers["retry-after"]), (429, "Throttling", "1"))
        self.assertEqual(self.o2o(t)[0], 200)
        _, data, _ = self.call("GET", "/_control/messages")
        self.assertEqual(data["counts"]["total"], 1)
        _, data, _ = self.call("GET", "/_control/calls")
        self.assertEqual([c.get("failed", False) for c in data["calls"]], [False, True, False])
        # A network error: the connection closes in the middle of the answer.
        self.call("POST", "/_control/fail", {"path": "/v1.0/robot/", "count": 1, "drop": True})
        with self.assertRaises(http.client.IncompleteRead):
            self.o2o(t)
        self.assertEqual(self.o2o(t)[0], 200)
        _, data, _ = self.call("GET", "/_control/calls")
        self.assertEqual([(c.get("failed", False), c["status"]) for c in data["calls"][3:]],
                         [(True, 0), (False, 200)])
        self.assertEqual(self.problems(), [])

    def session(self, expires_in_ms=60000):
        status, data, _ = self.call("POST", "/_control/session", {"expires_in_ms": expires_in_ms})
        self.assertEqual(status, 200)
        return data

    def post_url(self, url, body):
        parts = urllib.parse.urlsplit(url)
        self.assertEqual(parts.port, self.port)
        return self.call("POST", parts.path + "?" + parts.query, body)

    def test_session_webhook(self):
        s = self.session()
        self.assertGreater(s["expires_ms"], time.time() * 1000 + 50000)
        msg = fd.robot_message("m1", "cid1", "2", "hi", session_webhook=s["url"],
                               session_expires_ms=s["expires_ms"])
        url = msg["sessionWebhook"]
        status, data, _ = self.post_url(url, {"msgtype": "text", "text": {"content": "pong"},
                                              "at": {"atUserIds": ["staff_u"]}})
        self.assertEqual((status, data), (200, {"errcode": 0, "errmsg": "ok"}))
        _, data, _ = self.post_url(url, {"msgtype": "markdown", "markdown": {"title": "T", "text": "# x"}})
        self.assertEqual(data["errcode"], 0)
        _, data, _ = self.post_url(url, {"msgtype": "actionCard", "actionCard": {
            "title": "T", "text": "x", "singleTitle": "go", "singleURL": "https://example.invalid"}})
        self.assertEqual(data["errcode"], 0)
        for bad in ({"msgtype": "audio", "audio": {}}, {"msgtype": "text", "text": {}}, {"text": {"content": "x"}}):
            status, data, _ = self.post_url(url, bad)
            self.assertEqual((status, data["errcode"]), (200, 40035), bad)
        _, data, _ = self.call("POST", "/_control/session/expire", {"url": url})
        self.assertTrue(data["expired"])
        status, data, _ = self.post_url(url, {"msgtype": "text", "text": {"content": "late"}})
        self.assertEqual((status, data["errcode"]), (200, 300001))
        problems = self.problems()
        self.assertEqual(len(problems), 3, problems)  # the three bodies DingTalk refuses (40035)
        self.assertTrue(all("40035" in p["problem"] for p in problems), problems)
        short = self.session(1)
        time.sleep(0.01)
        self.assertEqual(self.post_url(short["url"], {"msgtype": "text", "text": {"content": "x"}})[1]["errcode"],
                         300001)
        # Used after its end (and within the 5 s margin): a problem.
        self.assertIn("before its sessionWebhookExpiredTime", self.problems()[-1]["problem"])
        self.assertEqual(len(self.problems()), 4)
        within = self.session(3000)
        self.assertEqual(self.post_url(within["url"], {"msgtype": "text", "text": {"content": "y"}})[1]["errcode"], 0)
        self.assertEqual(len(self.problems()), 5)
        _, data, _ = self.call("POST", "/robot/sendBySession?session=nope",
                               {"msgtype": "text", "text": {"content": "x"}})
        self.assertEqual(data["errcode"], 300001)
        _, data, _ = self.call("GET", "/_control/messages")
        self.assertEqual(data["counts"]["session"], 4)
        first = data["messages"][0]
        self.assertEqual((first["kind"], first["session"], first["content"], first["atUserIds"]),
                         ("session", s["session"], {"content": "pong"}, ["staff_u"]))
        self.assertEqual([m["msgtype"] for m in data["messages"]], ["text", "markdown", "actionCard", "text"])

    def robot_path(self, timestamp, sign, encode=True):
        return "/robot/send?access_token=AT1&timestamp=%s&sign=%s" % (
            timestamp, urllib.parse.quote_plus(sign) if encode else sign)

    def test_custom_robot(self):
        body = {"msgtype": "text", "text": {"content": "alert"}, "at": {"atMobiles": [], "atUserIds": [],
                                                                       "isAtAll": False}}
        now = int(time.time() * 1000)
        ts = next(str(now - i) for i in range(1000) if "+" in fd.robot_sign(str(now - i), SECRET))
        sign = fd.robot_sign(ts, SECRET)
        status, data, _ = self.call("POST", self.robot_path(ts, sign), body)
        self.assertEqual((status, data), (200, {"errcode": 0, "errmsg": "ok"}))
        _, data, _ = self.call("POST", self.robot_path(ts, fd.robot_sign(ts, "wrong")), body)
        self.assertEqual(data["errcode"], 310000)
        self.assertTrue(data["errmsg"].startswith("sign not match"))
        old = str(int(time.time() * 1000) - 2 * 3600 * 1000)
        _, data, _ = self.call("POST", self.robot_path(old, fd.robot_sign(old, SECRET)), body)
        self.assertEqual(data["errcode"], 310000)
        self.assertTrue(data["errmsg"].startswith("invalid timestamp"))
        # a sign sent without url-encoding loses its "+" to the query decoding
        _, data, _ = self.call("POST", self.robot_path(ts, sign, encode=False), body)
        self.assertEqual(data["errcode"], 310000)
        _, data, _ = self.call("POST", "/robot/send?timestamp=%s&sign=x" % ts, body)
        self.assertEqual(data["errcode"], 300005)
        _, data, _ = self.call("GET", "/_control/messages")
        self.assertEqual(data["counts"]["robot"], 1)
        m = data["messages"][0]
        self.assertEqual((m["kind"], m["access_token"], m["timestamp"], m["sign"], m["content"]),
                         ("robot", "AT1", ts, sign, {"content": "alert"}))

    def create_card(self, token, out, space="dtv1.card//IM_GROUP.cidG", **over):
        body = {"cardTemplateId": "tpl.schema", "outTrackId": out,
                "cardData": {"cardParamMap": {"content": "", "config": json.dumps({"autoLayout": True})}},
                "callbackType": "STREAM", "openSpaceId": space,
                "imGroupOpenSpaceModel": {"supportForward": True},
                "imGroupOpenDeliverModel": {"robotCode": "dingabc"},
                "imRobotOpenSpaceModel": {"supportForward": True},
                "imRobotOpenDeliverModel": {"spaceType": "IM_ROBOT"}}
        body.update(over)
        return self.call("POST", "/v1.0/card/instances/createAndDeliver", body, token)

    def stream(self, token, out, content, full=True, final=False, error=False, key="content"):
        return self.call("PUT", "/v1.0/card/streaming", {
            "outTrackId": out, "guid": "g-%f" % time.time(), "key": key, "content": content,
            "isFull": full, "isFinalize": final, "isError": error}, token)

    def test_cards(self):
        t = self.token()
        self.assertEqual(self.create_card(None, "c0")[1]["code"], "AuthenticationFailed.MissingParameter")
        status, data, _ = self.create_card(t, "c0", cardTemplateId=None)
        self.assertEqual((status, data["code"]), (400, "MissingcardTemplateId"))
        status, data, _ = self.create_card(t, None)
        self.assertEqual((status, data["code"]), (400, "MissingoutTrackId"))
        status, data, _ = self.create_card(t, "c1")
        self.assertEqual((status, data["success"], data["result"]["outTrackId"]), (200, True, "c1"))
        deliver = data["result"]["deliverResults"]
        self.assertEqual([(d["success"], d["spaceType"], d["spaceId"]) for d in deliver],
                         [(True, "IM_GROUP", "cidG")])
        status, data, _ = self.create_card(t, "c1")
        self.assertEqual((status, data["code"]), (400, "invalidParameter.outTrackId.duplicate"))
        status, data, _ = self.stream(t, "nope", "x")
        self.assertEqual((status, data["code"]), (400, "invalidParameter.outTrackId.notExist"))
        self.assertEqual(self.stream(t, "c1", "Hel")[1], {"success": True, "result": True})
        self.assertEqual(self.stream(t, "c1", "lo", full=False)[0], 200)
        _, data, _ = self.call("GET", "/_control/cards")
        self.assertEqual((data["cards"]["c1"]["content"], data["cards"]["c1"]["state"]),
                         ({"content": "Hello"}, "inputting"))
        self.assertEqual(self.stream(t, "c1", "Hello, world", final=True)[0], 200)
        # direct chat card, finalized as an error
        status, data, _ = self.create_card(t, "c2", space="dtv1.card//IM_ROBOT.staff_u")
        self.assertEqual(data["result"]["deliverResults"][0]["spaceType"], "IM_ROBOT")
        self.assertEqual(self.stream(t, "c2", "partial")[0], 200)
        self.assertEqual(self.stream(t, "c2", "boom", full=True, final=True, error=True)[0], 200)
        self.assertEqual(self.stream(t, "c2", "after")[0], 200)  # accepted, counted as late
        # a missing deliver model fails that space's delivery only
        _, data, _ = self.create_card(t, "c3", imGroupOpenDeliverModel=None)
        self.assertEqual(data["result"]["deliverResults"][0]["success"], False)
        _, data, _ = self.call("GET", "/_control/cards")
        c1, c2 = data["cards"]["c1"], data["cards"]["c2"]
        self.assertEqual((c1["content"], c1["state"], c1["cardTemplateId"], c1["callbackType"]),
                         ({"content": "Hello, world"}, "finished", "tpl.schema", "STREAM"))
        self.assertEqual([(u["isFull"], u["isFinalize"], u["state"]) for u in c1["updates"]],
                         [(True, False, "inputting"), (False, False, "inputting"), (True, True, "finished")])
        self.assertEqual(c1["spaces"], [{"spaceType": "IM_GROUP", "spaceId": "cidG"}])
        self.assertEqual(c1["request"]["cardData"]["cardParamMap"]["content"], "")
        self.assertEqual((c2["state"], c2["late_updates"], c2["content"]), ("inputting", 1, {"content": "after"}))
        late = [p for p in self.problems() if "updated after" in p["problem"]]
        self.assertEqual([p["problem"] for p in late], ["card c2 updated after it was failed"])
        self.assertEqual([u["state"] for u in c2["updates"]], ["inputting", "failed", "inputting"])

    # ---------------------------------------------------------------- stream

    def open_connection(self, secret="sec_test"):
        return self.call("POST", "/v1.0/gateway/connections/open", {
            "clientId": "dingabc", "clientSecret": secret,
            "subscriptions": [{"type": "EVENT", "topic": "*"}, {"type": "CALLBACK", "topic": fd.BOT_TOPIC}],
            "ua": "chatgate-selftest/1", "localIp": "127.0.0.1"})

    def stream_state(self):
        return self.call("GET", "/_control/stream")[1]

    async def wait_state(self, pred, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            got = await asyncio.to_thread(self.stream_state)
            if pred(got):
                return got
            if time.monotonic() > deadline:
                self.fail("stream state never matched: %s" % json.dumps(got)[:800])
            await asyncio.sleep(0.02)

    def test_stream(self):
        status, data, _ = self.open_connection("wrong")
        self.assertEqual((status, data["code"]), (401, "authFailed"))
        status, data, _ = self.open_connection()
        self.assertEqual(status, 200)
        endpoint, ticket = data["endpoint"], data["ticket"]
        self.assertTrue(endpoint.startswith("ws://127.0.0.1:") and endpoint.endswith("/connect"))
        self.assertEqual(self.call("POST", "/_control/stream/push", {"data": {}})[0], 409)
        url = "%s?ticket=%s" % (endpoint, urllib.parse.quote_plus(ticket))
        asyncio.run(self.ws_session(url))
        # The server sees the last close a moment after the client.
        got = asyncio.run(self.wait_state(lambda g: g["connections"] == 0))
        self.assertEqual((got["connections"], got["connects"]), (0, 4))
        self.assertEqual(got["tickets_used"][0], ticket)
        self.assertEqual([r["reason"] for r in got["rejections"]],
                         ["ticket already used", "unknown ticket", "ticket expired"])
        self.assertEqual(got["rejected"], 3)
        self.assertEqual(got["opens"][1]["subscriptions"][1], {"type": "CALLBACK", "topic": fd.BOT_TOPIC})
        self.assertEqual([o["status"] for o in got["opens"]], [401, 200, 200, 200, 200, 200])
        self.assertGreaterEqual(got["ws_pings"], 1)

    def fresh_url(self):
        _, data, _ = self.open_connection()
        return "%s?ticket=%s" % (data["endpoint"], urllib.parse.quote_plus(data["ticket"]))

    async def ws_session(self, url):
        call = self.call
        async with websockets.connect(url) as ws:
            with self.assertRaises(websockets.InvalidStatusCode) as cm:  # single use
                async with websockets.connect(url):
                    pass
            self.assertEqual(cm.exception.status_code, 401)
            with self.assertRaises(websockets.InvalidStatusCode):
                async with websockets.connect(url.split("?")[0] + "?ticket=bogus"):
                    pass
            await ws.ping()
            # a robot message CALLBACK, acked
            s = (await asyncio.to_thread(call, "POST", "/_control/session", {}))[1]
            msg = fd.robot_message("msgA", "cid1", "1", "hello", session_webhook=s["url"])
            status, data, _ = await asyncio.to_thread(call, "POST", "/_control/stream/push",
                                                      {"topic": fd.BOT_TOPIC, "data": msg})
            self.assertEqual((status, data["sent"]), (200, True))
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            self.assertEqual((frame["specVersion"], frame["type"], frame["headers"]["topic"]),
                             ("1.0", "CALLBACK", fd.BOT_TOPIC))
            self.assertEqual(frame["headers"]["messageId"], data["message_id"])
            self.assertEqual(frame["headers"]["contentType"], "application/json")
            self.assertTrue(frame["headers"]["connectionId"])
            self.assertEqual(json.loads(frame["data"]), msg)
            await ws.send(json.dumps(fd.ack_frame(data["message_id"], {"response": None})))
            mid = data["message_id"]
            got = await self.wait_state(lambda g: mid in g["acks"])
            ack = got["acks"][mid]
            self.assertEqual((ack["code"], ack["data_json"], ack["problems"]), (200, {"response": None}, []))
            self.assertEqual(got["connections"], 1)
            # an EVENT push
            await asyncio.to_thread(call, "POST", "/_control/stream/push", {
                "type": "EVENT", "topic": "chat_update_title", "data": {"title": "x"}})
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            self.assertEqual((frame["type"], frame["headers"]["eventType"]), ("EVENT", "chat_update_title"))
            # SYSTEM ping, answered with the same data
            _, ping, _ = await asyncio.to_thread(call, "POST", "/_control/stream/ping")
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            self.assertEqual((frame["type"], frame["headers"]["topic"], frame["headers"]["messageId"]),
                             ("SYSTEM", "ping", ping["message_id"]))
            self.assertEqual(json.loads(frame["data"]), {"opaque": ping["opaque"]})
            await ws.send(json.dumps(fd.ack_frame(ping["message_id"], frame["data"])))
            got = await self.wait_state(lambda g: g["pings"] and g["pings"][0]["answered"])
            self.assertTrue(got["pings"][0]["ok"])
            problems = await asyncio.to_thread(self.problems)  # the two refused upgrades above
            self.assertEqual([p["problem"] for p in problems],
                             ["WebSocket upgrade refused: ticket already used",
                              "WebSocket upgrade refused: unknown ticket"])
            await ws.send("not json")
            await self.wait_state(lambda g: g["frames"] and g["frames"][-1].get("error") == "not JSON")
            await ws.send(json.dumps(fd.ack_frame(mid, {"response": None})))  # a second ack
            await self.wait_state(lambda g: len(g["frames"]) == 4)
            problems = (await asyncio.to_thread(self.problems))[2:]
            self.assertEqual([(p["where"], p["problem"]) for p in problems],
                             [("stream", "an upstream frame is not JSON"),
                              ("stream", "ack of %r: a second ack of the same messageId" % mid)])
            # A silent gateway: pings get no pong.
            await asyncio.wait_for(await ws.ping(), 5)
            await asyncio.to_thread(call, "POST", "/_control/stream/config", {"answer_pings": False})
            waiter = await ws.ping()
            with self.assertRaises(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), 0.5)
            await asyncio.to_thread(call, "POST", "/_control/stream/config", {"answer_pings": True})
            await asyncio.wait_for(await ws.ping(), 5)  # the answer to this one answers both
            got = await asyncio.to_thread(self.stream_state)
            self.assertEqual([p["answered"] for p in got["ws_ping_log"]][-3:], [True, False, True])
            self.assertTrue(all(p["connection_id"] == frame["headers"]["connectionId"]
                                for p in got["ws_ping_log"][-3:]), got["ws_ping_log"])
            # SYSTEM disconnect, then the server closes
            start = time.monotonic()
            _, data, _ = await asyncio.to_thread(call, "POST", "/_control/stream/disconnect", {"delay": 0.3})
            self.assertEqual(data["sent"], 1)
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            self.assertEqual((frame["type"], frame["headers"]["topic"]), ("SYSTEM", "disconnect"))
            self.assertIn("reason", json.loads(frame["data"]))
            with self.assertRaises(websockets.ConnectionClosed) as cm:
                await asyncio.wait_for(ws.recv(), 5)
            self.assertEqual(cm.exception.code, 1000)
            self.assertGreater(time.monotonic() - start, 0.25)
        got = await self.wait_state(lambda g: g["connections"] == 0)
        self.assertFalse(got["disconnects"][0]["closed_by_client_first"])
        self.assertIsNone(got["disconnects"][0]["client_left_after"])
        # A client that leaves at once on a disconnect notice.
        async with websockets.connect(await asyncio.to_thread(self.fresh_url)) as ws:
            await self.wait_state(lambda g: g["connections"] == 1)
            await asyncio.to_thread(call, "POST", "/_control/stream/disconnect", {"delay": 5})
            frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
            self.assertEqual(frame["headers"]["topic"], "disconnect")
        got = await self.wait_state(lambda g: g["disconnects"][1]["client_left_after"] is not None)
        self.assertLess(got["disconnects"][1]["client_left_after"], 5)
        # a new ticket, then a drop
        async with websockets.connect(await asyncio.to_thread(self.fresh_url)) as ws:
            await self.wait_state(lambda g: g["connections"] == 1)
            _, data, _ = await asyncio.to_thread(call, "POST", "/_control/stream/drop")
            self.assertEqual(data["dropped"], 1)
            with self.assertRaises(websockets.ConnectionClosed) as cm:
                await asyncio.wait_for(ws.recv(), 5)
            self.assertEqual(cm.exception.code, 1006)  # no close frame
        # an expired ticket
        await asyncio.to_thread(call, "POST", "/_control/stream/config", {"ticket_ttl": 0.05})
        url = await asyncio.to_thread(self.fresh_url)
        await asyncio.sleep(0.1)
        with self.assertRaises(websockets.InvalidStatusCode):
            async with websockets.connect(url):
                pass
        await asyncio.to_thread(call, "POST", "/_control/stream/config", {"ticket_ttl": 90})
        async with websockets.connect(await asyncio.to_thread(self.fresh_url)):
            await self.wait_state(lambda g: g["connections"] == 1)

    def test_stream_pick_and_connection_records(self):
        asyncio.run(self.two_connections())

    async def two_connections(self):
        call = self.call
        async with websockets.connect(await asyncio.to_thread(self.fresh_url)) as first:
            got = await self.wait_state(lambda g: g["connections"] == 1)
            first_id = [c for c in got["clients"] if c["open"]][-1]["connection_id"]
            async with websockets.connect(await asyncio.to_thread(self.fresh_url)) as second:
                got = await self.wait_state(lambda g: g["connections"] == 2)
                second_id = [c for c in got["clients"] if c["open"]][-1]["connection_id"]
                self.assertNotEqual(first_id, second_id)
                # The newest open connection unless "pick":"random".
                _, data, _ = await asyncio.to_thread(call, "POST", "/_control/stream/push",
                                                     {"data": {"n": 0}})
                self.assertEqual((data["sent"], data["connection_id"]), (True, second_id))
                self.assertEqual(json.loads(await asyncio.wait_for(second.recv(), 5))["headers"]
                                 ["messageId"], data["message_id"])
                picked = {first_id: [], second_id: []}
                for n in range(40):
                    _, data, _ = await asyncio.to_thread(call, "POST", "/_control/stream/push",
                                                         {"data": {"n": n}, "pick": "random"})
                    picked[data["connection_id"]].append(data["message_id"])
                # Both get some (a chance of 2 ** -39 that one gets none).
                self.assertTrue(picked[first_id] and picked[second_id], picked)
                for ws, conn in ((first, first_id), (second, second_id)):
                    got_ids = [json.loads(await asyncio.wait_for(ws.recv(), 5))["headers"]["messageId"]
                               for _ in picked[conn]]
                    self.assertEqual(got_ids, picked[conn])
                # The first closes (the client's Close frame first), the second is dropped.
                await first.close(1000, "handing over")
                got = await self.wait_state(lambda g: g["connections"] == 1)
                _, data, _ = await asyncio.to_thread(call, "POST", "/_control/stream/drop")
                self.assertEqual(data["dropped"], 1)
                with self.assertRaises(websockets.ConnectionClosed):
                    await asyncio.wait_for(second.recv(), 5)

        def closed(g):
            mine = [c for c in g["clients"] if c["connection_id"] in (first_id, second_id)]
            return len(mine) == 2 and all(c["close_code"] is not None for c in mine)
        got = await self.wait_state(closed)
        one, two = [c for c in got["clients"] if c["connection_id"] in (first_id, second_id)]
        self.assertEqual((one["connection_id"], one["close_code"], one["close_reason"], one["closed_by"],
                          one["closed_by_server"]), (first_id, 1000, "handing over", "client", False))
        self.assertEqual((two["connection_id"], two["close_code"], two["close_reason"], two["closed_by"],
                          two["closed_by_server"]), (second_id, 1006, "", None, True))
        # Opened in order; the second opened before the first closed.
        self.assertLess(one["opened_at"], two["opened_at"])
        self.assertLess(two["opened_at"], one["closed_at"])
        self.assertLess(one["closed_at"], two["closed_at"])
        self.assertEqual(self.problems(), [])


class Options(unittest.TestCase):
    def test_token_expire_open_code_no_secret(self):
        proc, port = start_fake("--token-expire", "1", "--open-code", "429", "--auth-status", "401",
                                "--robot-code", "robot_x")
        try:
            def run(*args):
                return api(port, *args)
            _, data, _ = run("POST", "/v1.0/oauth2/accessToken", APP)
            self.assertEqual(data["expireIn"], 1)
            token = data["accessToken"]
            body = {"robotCode": "robot_x", "openConversationId": "cid", "msgKey": "sampleText",
                    "msgParam": json.dumps({"content": "x"})}
            self.assertEqual(run("POST", "/v1.0/robot/groupMessages/send", body, token)[0], 200)
            status, data, _ = run("POST", "/v1.0/gateway/connections/open",
                                  {"clientId": "dingabc", "clientSecret": "sec_test", "subscriptions": []})
            self.assertEqual((status, data["code"]), (429, "Throttling"))
            run("POST", "/_control/stream/config", {"open_code": 0})
            status, data, _ = run("POST", "/v1.0/gateway/connections/open",
                                  {"clientId": "dingabc", "clientSecret": "sec_test", "subscriptions": []})
            self.assertEqual(status, 200)
            # without --robot-secret the custom robot needs no sign
            _, data, _ = run("POST", "/robot/send?access_token=x", {"msgtype": "text", "text": {"content": "y"}})
            self.assertEqual(data["errcode"], 0)
            time.sleep(1.1)
            status, data, _ = run("POST", "/v1.0/robot/groupMessages/send", body, token)
            self.assertEqual((status, data["code"]), (401, "InvalidAuthentication"))
        finally:
            stop_fake(proc)


if __name__ == "__main__":
    unittest.main(verbosity=2)
