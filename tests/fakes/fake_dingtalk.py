#!/usr/bin/env python3
"""A fake DingTalk open platform for chatgate's tests: one process, the
OpenAPI (api.dingtalk.com), the robot webhooks (oapi.dingtalk.com) and the
Stream-mode gateway (WebSocket), on 127.0.0.1.

Written independently of chatgate's code, from the platform's published
protocol as summarized in /work/shared/protocols.md ("DingTalk"), checked
against the official SDKs (open-dingtalk dingtalk-stream-sdk-python/-go:
connections/open body and answer, DataFrame / DataFrameResponse fields, the
SYSTEM ping and disconnect topics, the chatbot callback fields, the AI-card
streaming body; aliyun dingtalk SDK models for the createAndDeliver and
card/streaming answers) and against error bodies seen from the live service
in public bug reports. Standard library plus Debian's python3-websockets (10.x).

    fake_dingtalk.py --client-id dingabc --client-secret sec_test
                     [--robot-code dingabc] [--token-expire 7200]
                     [--robot-secret SEC...] [--open-code 0]
                     [--auth-status 400] [--ticket-ttl 90]

prints "PORT <n>" (the HTTP port) once the HTTP and WebSocket servers listen.
Importable: callback_sign, robot_sign, robot_message, stream_frame, ack_frame.

OpenAPI (JSON; errors are {"code":"<string>","message":..,"requestid":..}):
  POST /v1.0/oauth2/accessToken {"appKey","appSecret"}
        -> {"accessToken":"tok-<n>","expireIn":<--token-expire>}
        wrong -> 400 invalidClientIdOrSecret
  Every /v1.0/robot/* and /v1.0/card/* call needs x-acs-dingtalk-access-token:
        none -> 400 AuthenticationFailed.MissingParameter; unknown or expired
        -> <--auth-status, default 400> InvalidAuthentication "不合法的access_token"
  POST /v1.0/robot/oToMessages/batchSend {"robotCode","userIds","msgKey","msgParam"}
        -> {"processQueryKey":"pqk-<n>","invalidStaffIdList":[],"flowControlledStaffIdList":[]}
  POST /v1.0/robot/groupMessages/send {"robotCode","openConversationId","msgKey","msgParam"}
        -> {"processQueryKey":"pqk-<n>"}
        robotCode != --robot-code -> 400 resource.not.found "robot 不存在";
        msgKey not sampleText/sampleMarkdown -> 400 invalidParameter.msgKey;
        msgParam not a JSON string with the key's fields -> 400 invalidParameter.msgParam
  POST /v1.0/card/instances/createAndDeliver {cardTemplateId,outTrackId,cardData,
        openSpaceId "dtv1.card//IM_GROUP.<cid>" | "dtv1.card//IM_ROBOT.<uid>" (";"-joined),
        imGroupOpenDeliverModel / imRobotOpenDeliverModel, callbackType, ..}
        -> {"success":true,"result":{"outTrackId","deliverResults":[{"success",
        "spaceType","spaceId","carrierId","errorMsg"?}]}}; a field missing ->
        400 Missing<field> "<field> is mandatory for this action."; a known
        outTrackId again -> 400 invalidParameter.outTrackId.duplicate
  PUT  /v1.0/card/streaming {outTrackId,guid,key,content,isFull,isFinalize,isError}
        -> {"success":true,"result":true}; unknown outTrackId -> 400
        invalidParameter.outTrackId.notExist
  PUT  /v1.0/card/instances {outTrackId,cardData{cardParamMap}} (plain card
        data update) -> {"success":true,"result":true}
  POST /v1.0/gateway/connections/open {clientId,clientSecret,subscriptions,ua,localIp}
        -> {"endpoint":"ws://127.0.0.1:<ws>/connect","ticket":"<uuid>"}; wrong
        credentials -> 401 authFailed "鉴权失败"; --open-code n (or
        /_control/stream/config) -> HTTP n with an error body, before any check
Robot webhooks (HTTP 200 always; {"errcode":0,"errmsg":"ok"} or an error):
  POST /robot/sendBySession?session=<id>  text / markdown / actionCard body;
        unknown or expired session -> errcode 300001 "session 不存在";
        bad msgtype or missing fields -> errcode 40035
  POST /robot/send?access_token=t&timestamp=ms&sign=s  (custom group robot)
        with --robot-secret: sign (url-decoded) must equal robot_sign(ts, secret)
        and |now - ts| <= 1 h, else errcode 310000 ("sign not match, more: [..]"
        or "invalid timestamp, more: [..]"); no access_token -> 300005

Stream gateway: ws://127.0.0.1:<ws>/connect?ticket=<t> (ticket single use,
valid --ticket-ttl s; else the upgrade is refused with HTTP 401). Downstream
text frames {"specVersion":"1.0","type":"SYSTEM|EVENT|CALLBACK","headers":{..},
"data":"<JSON>"}; upstream acks {"code":200,"headers":{"messageId",
"contentType"},"message":"OK","data":"<JSON>"} are recorded by messageId.

Problems: whatever the client sends that DingTalk would refuse as malformed
or that breaks the protocol is recorded (GET /_control/problems), so that a
test can assert at its end that there was none: a body that is not UTF-8
JSON or not sent as application/json; an answer with a code that says the
request was built wrong (Missing*, AuthenticationFailed.MissingParameter,
invalidParameter.*, InvalidAction.NotFound, errcode 40035); an access token
used after its expireIn ran out (a revoked one is no problem); a session
webhook used with less than 5 s (less a second's leeway) of its life left;
a card updated after its final update; an upstream Stream frame that is
binary, not JSON, an ack with a malformed field, of a messageId never
sent, or a second ack of one; a WebSocket upgrade with a used, unknown or
expired ticket. Injected failures (/_control/fail) are never checked.

Control API (same HTTP port, JSON):
  GET  /_control/calls     {"calls":[{method,path,headers,token,body,status,
                           at (unix s),code|errcode[,failed]}]}
  GET  /_control/problems  {"problems":[{where:http|stream,problem,..}]}
  GET  /_control/tokens    {"tokens":[{token,issued_at,expires_at (unix s),
                           expire_in,revoked}]}
  GET  /_control/messages  {"messages":[{kind:o2o|group|session|robot,..}],
                           "counts":{o2o,group,session,robot,total}}
  GET  /_control/cards     {"cards":{outTrackId:{request,cardTemplateId,spaces,
                           cardParamMap,updates,content,state,late_updates}}}
  GET  /_control/sessions  {"sessions":{id:{url,expires_ms,expired}}}
  GET  /_control/stream    {"connections","connects","tickets_used","rejected",
                           "rejections","ws_pings","ws_ping_log":[{at,
                           connection_id,answered}],"answer_pings","frames",
                           "acks","opens","pushes","pings","disconnects":[{..,
                           sent_at,client_left_after (s, when the client
                           closed first)}],"clients"}
                           clients: one record per connection (the closed
                           ones until a reset), in the order they opened:
                           {ticket, connection_id, open, opened_at,
                           closed_at (unix s: the upgrade done; the Close
                           frame received or the TCP connection ended),
                           close_code, close_reason, closed_by: "client"
                           (it sent the Close frame first) | "server" (the
                           fake did) | null (no closing handshake: a TCP
                           close or a drop; code 1006), closed_by_server}
  POST /_control/expire_tokens            every issued token becomes invalid
  POST /_control/fail {"path":prefix,"count":n,"status":429,"body":{..},"headers":{..}
                           [,"drop":true]}
                           the next n calls whose path (with query) starts
                           with prefix get that answer (or, with drop, the
                           connection closed in the middle of one) and have
                           no effect
  POST /_control/reset     forget calls, messages, cards, failures, problems
                           and the stream records and counters, answer pings
                           again (not tokens, sessions, tickets or open
                           connections)
  POST /_control/session {"expires_in_ms":n}   -> {"url","session","expires_ms"}
  POST /_control/session/expire {"url"|"session"}  -> {"expired":true} or 404
  POST /_control/stream/config {"open_code":n,"ticket_ttl":s,"answer_pings":bool}
                           answer_pings false: WebSocket pings get no pong
                           (a gateway gone silent)
  POST /_control/stream/push {"topic","type":"CALLBACK","data":{..},
                           "message_id"?,"headers"?:{..},"data_raw"?:"..","raw"?:"..",
                           "pick"?:"newest"}
                           to the newest open connection ("pick":"random":
                           to one of the app's open connections at random,
                           as DingTalk delivers to any connected client of
                           the app) -> {"sent":true,"message_id",
                           "connection_id"} or 409 {"sent":false}
  POST /_control/stream/ping    SYSTEM ping, fresh opaque -> {"message_id","opaque"}
  POST /_control/stream/disconnect {"delay":10,"reason":".."}  SYSTEM
                           disconnect to every open connection, closed (1000)
                           after the delay -> {"sent":n,"message_ids":[..]}
  POST /_control/stream/drop    abort every connection (no close frame)
"""
import argparse
import asyncio
import base64
import hashlib
import hmac
import http
import json
import logging
import random
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# ---------------------------------------------------------------- helpers

SIGN_DOC = "https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq"
BOT_TOPIC = "/v1.0/im/bot/messages/get"
CARD_TOPIC = "/v1.0/card/instances/callback"
NO_WEBHOOK = "http://127.0.0.1:9/robot/sendBySession?session=none"  # discard port: never reachable


def _hmac_b64(key, message):
    digest = hmac.new(key.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def callback_sign(timestamp_ms, app_secret):
    """The `sign` header of an HTTP-mode robot callback (outgoing robot):
    base64(HMAC-SHA256(key = appSecret, message = timestamp + "\\n" + appSecret))."""
    return _hmac_b64(app_secret, "%s\n%s" % (timestamp_ms, app_secret))


def robot_sign(timestamp_ms, secret):
    """The custom group robot signature: base64(HMAC-SHA256(key = secret,
    message = timestamp + "\\n" + secret)). Returned as is; the /robot/send
    query carries it url-encoded (urllib.parse.quote_plus of this value)."""
    return _hmac_b64(secret, "%s\n%s" % (timestamp_ms, secret))


def now_ms():
    return int(time.time() * 1000)


def robot_message(msg_id, conversation_id, conversation_type, text, sender_staff_id="staff_u",
                  sender_nick="User", at_bot=False, session_webhook=None, session_expires_ms=None,
                  msgtype="text", content=None, robot_code="dingabc", at_users=()):
    """A robot message callback body (topic /v1.0/im/bot/messages/get, or the
    HTTP callback). conversation_type "1" single, "2" group. msgtype "text"
    carries text {content}; "picture" and "richText" carry `content` (default
    {"downloadCode"} / {"richText":[{"text": text}]}). at_users: extra
    (dingtalkId, staffId) pairs for atUsers. Without session_webhook the field
    holds an unreachable placeholder: ask the running fake for a real one
    (POST /_control/session)."""
    created = now_ms()
    bot_id = "$:LWCP_v1:$bot_" + robot_code
    at_list = [{"dingtalkId": bot_id}] if at_bot else []
    at_list += [{"dingtalkId": d, "staffId": s} for d, s in at_users]
    body = {
        "conversationId": conversation_id,
        "atUsers": at_list,
        "chatbotCorpId": "dingcorp_test",
        "chatbotUserId": bot_id,
        "msgId": msg_id,
        "senderNick": sender_nick,
        "isAdmin": False,
        "senderStaffId": sender_staff_id,
        "sessionWebhookExpiredTime": session_expires_ms if session_expires_ms is not None
        else created + 90 * 60 * 1000,
        "createAt": created,
        "senderCorpId": "dingcorp_test",
        "conversationType": conversation_type,
        "senderId": "$:LWCP_v1:$" + sender_staff_id,
        "isInAtList": bool(at_bot),
        "sessionWebhook": session_webhook or NO_WEBHOOK,
        "robotCode": robot_code,
        "msgtype": msgtype,
    }
    if conversation_type == "2":  # single chats carry no title
        body["conversationTitle"] = "Test Group"
    if msgtype == "text":
        body["text"] = {"content": text}
    elif content is not None:
        body["content"] = content
    elif msgtype == "picture":
        body["content"] = {"downloadCode": "dc_" + msg_id}
    elif msgtype == "richText":
        body["content"] = {"richText": [{"text": text}]}
    return body


def stream_frame(frame_type, topic, data, message_id, headers=None, app_id="dingabc",
                 connection_id="conn-fake"):
    """A downstream Stream frame; data (any JSON value) is encoded into the
    data string unless it is a str already."""
    h = {"topic": topic, "messageId": message_id, "contentType": "application/json",
         "time": str(now_ms()), "appId": app_id, "connectionId": connection_id}
    if frame_type == "EVENT":
        h.update(eventId="ev-" + message_id, eventType=topic, eventBornTime=str(now_ms()),
                 eventCorpId="dingcorp_test", eventUnifiedAppId="unified-" + app_id)
    h.update(headers or {})
    return {"specVersion": "1.0", "type": frame_type, "headers": h,
            "data": data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}


def ack_frame(message_id, data=None, code=200, message="OK"):
    """An upstream acknowledgement, as a client sends it (data: JSON value or str)."""
    return {"code": code, "headers": {"messageId": message_id, "contentType": "application/json"},
            "message": message,
            "data": data if isinstance(data, str) else json.dumps(data)}


# ---------------------------------------------------------------- state

LOCK = threading.Lock()
# A client keeps off a session webhook with less than this left (the
# channel's documented margin), allowing this long for the request's way.
SESSION_MARGIN_MS, SESSION_LATENCY_MS = 5000, 1000
# Answers that mean the client built the request wrong (not a refused
# credential, a revoked token, a retired session or an unknown robot, which
# tests provoke on purpose): each is recorded as a problem.
WRONG_REQUEST_CODES = ("Missing", "AuthenticationFailed.MissingParameter", "invalidParameter",
                       "InvalidAction.NotFound")
WRONG_REQUEST_ERRCODES = (40035,)
MSG_KEYS = {"sampleText": ("content",), "sampleMarkdown": ("title", "text")}
OPEN_ERRORS = {429: ("Throttling", "请求频率超过限制"), 500: ("unknownError", "未知错误"),
               503: ("ServiceUnavailable", "服务不可用"), 401: ("authFailed", "鉴权失败"),
               403: ("Forbidden", "forbidden")}


class Fake:
    def __init__(self, args):
        self.args = args
        self.tokens = {}            # token -> {"expiry" (monotonic), "issued_at", "expires_at" (unix s), "expire_in", "revoked"}
        self.n = {}                 # id counters
        self.sessions = {}          # id -> {"url", "expires_ms", "expired"}
        self.tickets = {}           # ticket -> {"expiry": monotonic, "used": bool}
        self.open_code = args.open_code
        self.ticket_ttl = args.ticket_ttl
        self.answer_pings = True    # WebSocket pings get their pong
        self.clients = []           # {"ws", "ticket", "connection_id", "open", ...}
        self.http_port = self.ws_port = None
        self.loop = None
        self.reset()

    def reset(self):
        self.calls, self.messages, self.cards, self.failures = [], [], {}, []
        self.frames, self.acks, self.opens, self.pushes = [], {}, [], []
        self.pings, self.disconnects, self.rejections, self.tickets_used = [], [], [], []
        self.problems, self.ws_ping_log = [], []
        self.connects = self.ws_pings = 0
        self.answer_pings = True
        self.clients = [c for c in self.clients if c["open"]]

    def problem(self, where, what, **detail):
        """Records something the client sent that DingTalk would refuse or
        that breaks the protocol's rules (LOCK held)."""
        self.problems.append(dict(detail, where=where, problem=what))

    def next(self, name):
        self.n[name] = self.n.get(name, 0) + 1
        return self.n[name]

    def take_failure(self, path):
        for f in self.failures:
            if path.startswith(f["path"]) and f["count"] > 0:
                f["count"] -= 1
                return f
        return None

    def token_state(self, token):
        """"ok", "unknown", "revoked" (POST /_control/expire_tokens) or
        "expired" (its expireIn has passed: the client should have fetched
        a new one before)."""
        entry = self.tokens.get(token)
        if entry is None:
            return "unknown"
        if entry["revoked"]:
            return "revoked"
        return "ok" if time.monotonic() < entry["expiry"] else "expired"

    def session_url(self, sid):
        return "http://127.0.0.1:%d/robot/sendBySession?session=%s" % (self.http_port, sid)


def api_err(status, code, message):
    return status, {"code": code, "message": message, "requestid": str(uuid.uuid4()).upper()}


def missing(field):
    return api_err(400, "Missing" + field, "%s is mandatory for this action." % field)


def oapi(errcode=0, errmsg="ok"):
    return 200, {"errcode": errcode, "errmsg": errmsg}


def is_str(value, empty_ok=False):
    return isinstance(value, str) and (empty_ok or value != "")


# ---------------------------------------------------------------- HTTP APIs

class Api:
    """The api.dingtalk.com and oapi.dingtalk.com routes; called with LOCK held."""

    def __init__(self, fake):
        self.f = fake

    def route(self, method, path, query, body, token):
        if method == "POST" and path == "/v1.0/oauth2/accessToken":
            return self.access_token(body)
        if method == "POST" and path == "/v1.0/gateway/connections/open":
            return self.open_connection(body)
        if method == "POST" and path == "/robot/sendBySession":
            return self.send_by_session(query, body)
        if method == "POST" and path == "/robot/send":
            return self.custom_robot(query, body)
        if path.startswith("/v1.0/robot/") or path.startswith("/v1.0/card/"):
            if not token:
                return api_err(400, "AuthenticationFailed.MissingParameter",
                               "缺少参数：x-acs-dingtalk-access-token")
            state = self.f.token_state(token)
            if state == "expired":
                entry = self.f.tokens[token]
                self.f.problem("http", "%s %s with access token %s, %.1f s after its expireIn (%d s) ran out"
                               % (method, path, token, time.time() - entry["expires_at"], entry["expire_in"]))
            if state != "ok":
                return api_err(self.f.args.auth_status, "InvalidAuthentication", "不合法的access_token")
            if not isinstance(body, dict):
                return missing("body")
            if method == "POST" and path == "/v1.0/robot/oToMessages/batchSend":
                return self.robot_send("o2o", body, token)
            if method == "POST" and path == "/v1.0/robot/groupMessages/send":
                return self.robot_send("group", body, token)
            if method == "POST" and path == "/v1.0/card/instances/createAndDeliver":
                return self.card_create(body, token)
            if method == "PUT" and path == "/v1.0/card/streaming":
                return self.card_streaming(body)
            if method == "PUT" and path == "/v1.0/card/instances":
                return self.card_update(body)
        return api_err(404, "InvalidAction.NotFound",
                       "Specified api is not found, please check your url and method.")

    # -- tokens and the stream gateway registration

    def access_token(self, body):
        f, a = self.f, self.f.args
        if not isinstance(body, dict):
            return missing("body")
        if body.get("appKey") != a.client_id or body.get("appSecret") != a.client_secret:
            return api_err(400, "invalidClientIdOrSecret", "无效的clientId或者clientSecret")
        token = "tok-%d" % f.next("token")
        now = time.time()
        f.tokens[token] = {"token": token, "expiry": time.monotonic() + a.token_expire, "issued_at": now,
                           "expires_at": now + a.token_expire, "expire_in": a.token_expire, "revoked": False}
        return 200, {"accessToken": token, "expireIn": a.token_expire}

    def open_connection(self, body):
        f, a = self.f, self.f.args
        record = {"body": body, "subscriptions": body.get("subscriptions") if isinstance(body, dict) else None}
        f.opens.append(record)
        if f.open_code:
            code, message = OPEN_ERRORS.get(f.open_code, ("fakeError", "injected open failure"))
            status, obj = api_err(f.open_code, code, message)
        elif not isinstance(body, dict):
            status, obj = missing("body")
        elif body.get("clientId") != a.client_id or body.get("clientSecret") != a.client_secret:
            status, obj = api_err(401, "authFailed", "鉴权失败")
        elif not self.subscriptions_ok(body.get("subscriptions")):
            status, obj = api_err(400, "invalidParameter.subscriptions",
                                  "subscriptions must be a list of {type, topic}")
        else:
            ticket = str(uuid.uuid4())
            f.tickets[ticket] = {"expiry": time.monotonic() + f.ticket_ttl, "used": False}
            status, obj = 200, {"endpoint": "ws://127.0.0.1:%d/connect" % f.ws_port, "ticket": ticket}
            record["ticket"] = ticket
        record["status"] = status
        return status, obj

    @staticmethod
    def subscriptions_ok(subs):
        return isinstance(subs, list) and all(
            isinstance(s, dict) and s.get("type") in ("SYSTEM", "EVENT", "CALLBACK")
            and is_str(s.get("topic")) for s in subs)

    # -- robot OpenAPI sends

    def robot_send(self, kind, body, token):
        f = self.f
        if not is_str(body.get("robotCode")):
            return missing("robotCode")
        if body["robotCode"] != f.args.robot_code:
            return api_err(400, "resource.not.found", "robot 不存在")
        if kind == "o2o":
            users = body.get("userIds")
            if not isinstance(users, list) or not users:
                return missing("userIds")
            if len(users) > 20 or not all(is_str(u) for u in users):
                return api_err(400, "invalidParameter.userIds", "userIds: 1 to 20 staff ids")
        elif not is_str(body.get("openConversationId")):
            return missing("openConversationId")
        key = body.get("msgKey")
        if not is_str(key):
            return missing("msgKey")
        if key not in MSG_KEYS:
            return api_err(400, "invalidParameter.msgKey", "msgKey %s is not supported" % key)
        if not is_str(body.get("msgParam")):
            return missing("msgParam")
        try:
            param = json.loads(body["msgParam"])
        except ValueError:
            param = None
        if not isinstance(param, dict) or not all(is_str(param.get(k), True) for k in MSG_KEYS[key]):
            return api_err(400, "invalidParameter.msgParam",
                           "msgParam must be a JSON object string with %s" % ", ".join(MSG_KEYS[key]))
        pqk = "pqk-%d" % f.next("pqk")
        record = {"kind": kind, "robotCode": body["robotCode"], "msgKey": key, "msgParam": param,
                  "processQueryKey": pqk, "token": token}
        if kind == "o2o":
            record["userIds"] = list(body["userIds"])
            f.messages.append(record)
            return 200, {"processQueryKey": pqk, "invalidStaffIdList": [], "flowControlledStaffIdList": []}
        record["openConversationId"] = body["openConversationId"]
        f.messages.append(record)
        return 200, {"processQueryKey": pqk}

    # -- robot webhooks (oapi.dingtalk.com)

    @staticmethod
    def webhook_body_error(body):
        """-> (errcode, errmsg) or None; body is the robot message JSON."""
        if not isinstance(body, dict):
            return 40035, "缺少参数 json"
        kind = body.get("msgtype")
        need = {"text": ("text", ("content",)), "markdown": ("markdown", ("title", "text")),
                "actionCard": ("actionCard", ("title", "text")), "link": ("link", ("title", "text", "messageUrl")),
                "feedCard": ("feedCard", ("links",))}.get(kind)
        if need is None:
            return 40035, "不合法的参数 msgtype: %r" % (kind,)
        section = body.get(need[0])
        if not isinstance(section, dict):
            return 40035, "缺少参数 %s" % need[0]
        for field in need[1]:
            if field not in section or section[field] in (None, ""):
                return 40035, "缺少参数 %s.%s" % (need[0], field)
        at = body.get("at")
        if at is not None and not isinstance(at, dict):
            return 40035, "不合法的参数 at"
        return None

    def send_by_session(self, query, body):
        f = self.f
        sid = query.get("session", [""])[0]
        session = f.sessions.get(sid)
        if session is not None and not session["expired"] \
                and session["expires_ms"] - now_ms() < SESSION_MARGIN_MS - SESSION_LATENCY_MS:
            # Within the last 5 s (less a second for the request's way) or
            # after its end: the client should have used the OpenAPI.
            f.problem("http", "session webhook %s used %d ms before its sessionWebhookExpiredTime"
                      % (sid, session["expires_ms"] - now_ms()))
        if session is None or session["expired"] or now_ms() >= session["expires_ms"]:
            return oapi(300001, "session 不存在")
        error = self.webhook_body_error(body)
        if error:
            return oapi(*error)
        at = body.get("at") or {}
        f.messages.append({"kind": "session", "session": sid, "msgtype": body["msgtype"],
                           "content": body[body["msgtype"]], "at": at,
                           "atUserIds": at.get("atUserIds") or [], "body": body})
        return oapi()

    def custom_robot(self, query, body):
        f = self.f
        token = query.get("access_token", [""])[0]
        if not token:
            return oapi(300005, "token is not exist")
        timestamp, sign = query.get("timestamp", [""])[0], query.get("sign", [""])[0]
        if f.args.robot_secret:
            try:
                ts = int(timestamp)
            except ValueError:
                return oapi(310000, "invalid timestamp, more: [%s]" % SIGN_DOC)
            if abs(now_ms() - ts) > 3600 * 1000:
                return oapi(310000, "invalid timestamp, more: [%s]" % SIGN_DOC)
            # parse_qs decoded it: a sign sent without url-encoding loses its "+".
            if not hmac.compare_digest(sign, robot_sign(timestamp, f.args.robot_secret)):
                return oapi(310000, "sign not match, more: [%s]" % SIGN_DOC)
        error = self.webhook_body_error(body)
        if error:
            return oapi(*error)
        at = body.get("at") or {}
        f.messages.append({"kind": "robot", "access_token": token, "timestamp": timestamp,
                           "sign": sign, "msgtype": body["msgtype"], "content": body[body["msgtype"]],
                           "at": at, "atUserIds": at.get("atUserIds") or [], "body": body})
        return oapi()

    # -- cards

    def card_create(self, body, token):
        f = self.f
        for field in ("cardTemplateId", "outTrackId"):
            if not is_str(body.get(field)):
                return missing(field)
        out = body["outTrackId"]
        if out in f.cards:
            return api_err(400, "invalidParameter.outTrackId.duplicate", "outTrackId %s already exists" % out)
        card_data = body.get("cardData")
        if not isinstance(card_data, dict):
            return missing("cardData")
        params = card_data.get("cardParamMap") or {}
        if not isinstance(params, dict):
            return api_err(400, "invalidParameter.cardData", "cardParamMap must be an object of strings")
        if not is_str(body.get("openSpaceId")):
            return missing("openSpaceId")
        spaces, results = [], []
        for part in body["openSpaceId"].split(";"):
            part = part.strip()
            if not part:
                continue
            if not part.startswith("dtv1.card//") or "." not in part[len("dtv1.card//"):]:
                return api_err(400, "invalidParameter.openSpaceId", "bad openSpaceId %r" % part)
            space_type, space_id = part[len("dtv1.card//"):].split(".", 1)
            spaces.append({"spaceType": space_type, "spaceId": space_id})
            result = {"spaceType": space_type, "spaceId": space_id, "success": True,
                      "carrierId": "carrier-%d" % f.next("carrier")}
            model = {"IM_GROUP": "imGroupOpenDeliverModel", "IM_ROBOT": "imRobotOpenDeliverModel"}.get(space_type)
            deliver = body.get(model) if model else None
            if model is None:
                result.update(success=False, errorMsg="unsupported spaceType %s" % space_type)
            elif not isinstance(deliver, dict):
                result.update(success=False, errorMsg="%s is required for %s" % (model, space_type))
            elif space_type == "IM_GROUP" and deliver.get("robotCode") != f.args.robot_code:
                result.update(success=False, errorMsg="robot 不存在")
            if not result["success"]:
                del result["carrierId"]
            results.append(result)
        if not spaces:
            return missing("openSpaceId")
        f.cards[out] = {"outTrackId": out, "request": body, "cardTemplateId": body["cardTemplateId"],
                        "openSpaceId": body["openSpaceId"], "spaces": spaces,
                        "callbackType": body.get("callbackType"), "cardParamMap": dict(params),
                        "deliverResults": results, "updates": [], "content": {}, "state": "created",
                        "late_updates": 0, "token": token}
        return 200, {"success": True, "result": {"outTrackId": out, "deliverResults": results}}

    def card_streaming(self, body):
        for field in ("outTrackId", "guid", "key"):
            if not is_str(body.get(field)):
                return missing(field)
        if not isinstance(body.get("content"), str):
            return missing("content")
        for flag in ("isFull", "isFinalize", "isError"):
            if body.get(flag) is not None and not isinstance(body.get(flag), bool):
                return api_err(400, "invalidParameter.%s" % flag, "%s must be a boolean" % flag)
        card = self.f.cards.get(body["outTrackId"])
        if card is None:
            return api_err(400, "invalidParameter.outTrackId.notExist",
                           "card instance %s not found" % body["outTrackId"])
        key, late = body["key"], card["state"] in ("finished", "failed")
        if late:
            card["late_updates"] += 1
            self.f.problem("http", "card %s updated after it was %s" % (body["outTrackId"], card["state"]),
                           update=body)
        if body.get("isFull"):
            card["content"][key] = body["content"]
        else:
            start = card["content"].get(key, card["cardParamMap"].get(key, ""))
            card["content"][key] = (start if isinstance(start, str) else "") + body["content"]
        if body.get("isError"):
            card["state"] = "failed"
        elif body.get("isFinalize"):
            card["state"] = "finished"
        else:
            card["state"] = "inputting"
        card["updates"].append({"type": "streaming", "guid": body["guid"], "key": key,
                                "content": body["content"], "isFull": bool(body.get("isFull")),
                                "isFinalize": bool(body.get("isFinalize")),
                                "isError": bool(body.get("isError")), "state": card["state"],
                                "late": late})
        return 200, {"success": True, "result": True}

    def card_update(self, body):
        if not is_str(body.get("outTrackId")):
            return missing("outTrackId")
        card = self.f.cards.get(body["outTrackId"])
        if card is None:
            return api_err(400, "invalidParameter.outTrackId.notExist",
                           "card instance %s not found" % body["outTrackId"])
        data = body.get("cardData")
        params = data.get("cardParamMap") if isinstance(data, dict) else None
        if not isinstance(params, dict):
            return missing("cardData")
        card["cardParamMap"].update(params)
        card["updates"].append({"type": "instance", "cardParamMap": params,
                                "cardUpdateOptions": body.get("cardUpdateOptions"), "state": card["state"]})
        return 200, {"success": True, "result": True}


# ---------------------------------------------------------------- HTTP

HEADERS_OF_INTEREST = ("x-acs-dingtalk-access-token", "Content-Type", "Accept")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    @property
    def fake(self):
        return self.server.fake

    def send_json(self, status, obj, extra=None):
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method):
        raw = self.read_body()
        url = urllib.parse.urlsplit(self.path)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        if url.path.startswith("/_control/"):
            try:
                self.control(method, url.path, body if isinstance(body, dict) else {})
            except Exception as exc:  # a test's mistake: say so
                self.send_json(400, {"error": repr(exc)})
            return
        token = self.headers.get("x-acs-dingtalk-access-token")
        call = {"method": method, "path": self.path, "token": token, "body": body, "at": time.time(),
                "headers": {k: self.headers[k] for k in HEADERS_OF_INTEREST if k in self.headers}}
        f = self.fake
        with LOCK:
            f.calls.append(call)
            where = "%s %s" % (method, url.path)
            if raw and isinstance(body, str):
                f.problem("http", "%s: the body is not UTF-8 JSON" % where, body=body[:2000])
            if raw and not self.headers.get("Content-Type", "").startswith("application/json"):
                f.problem("http", "%s: Content-Type %r, not application/json"
                          % (where, self.headers.get("Content-Type")))
            failure = f.take_failure(self.path)
            if failure:
                status, obj, extra = failure["status"], failure["body"], failure["headers"]
                call["failed"] = True
            else:
                status, obj = Api(f).route(method, url.path, urllib.parse.parse_qs(url.query), body, token)
                extra = None
                code = obj.get("code") if isinstance(obj, dict) else None
                errcode = obj.get("errcode") if isinstance(obj, dict) else None
                if (isinstance(code, str) and code.startswith(WRONG_REQUEST_CODES)) \
                        or errcode in WRONG_REQUEST_ERRCODES:
                    f.problem("http", "%s: DingTalk would refuse it: %s %s"
                              % (where, code or errcode, obj.get("message") or obj.get("errmsg")), body=body)
            call["status"] = status
            if isinstance(obj, dict):
                for key in ("code", "errcode"):
                    if key in obj:
                        call[key] = obj[key]
            if failure and failure.get("drop"):
                call["status"] = 0
        if failure and failure.get("drop"):
            # A network error: the peer goes away mid-answer (a connection
            # closed before any byte of the answer would be retried by the
            # client's HTTP library on its own when it had been reused).
            self.send_response(200)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", "64")
            self.end_headers()
            self.wfile.write(b'{"processQueryKey"')
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_json(status, obj, extra)

    def control(self, method, path, body):
        f = self.fake
        if method == "GET":
            with LOCK:
                if path == "/_control/calls":
                    return self.send_json(200, {"calls": f.calls})
                if path == "/_control/problems":
                    return self.send_json(200, {"problems": f.problems})
                if path == "/_control/tokens":
                    return self.send_json(200, {"tokens": [
                        {k: v for k, v in t.items() if k != "expiry"} for t in f.tokens.values()]})
                if path == "/_control/messages":
                    counts = {k: sum(m["kind"] == k for m in f.messages)
                              for k in ("o2o", "group", "session", "robot")}
                    counts["total"] = len(f.messages)
                    return self.send_json(200, {"messages": f.messages, "counts": counts})
                if path == "/_control/cards":
                    return self.send_json(200, {"cards": f.cards})
                if path == "/_control/sessions":
                    return self.send_json(200, {"sessions": f.sessions})
                if path == "/_control/stream":
                    return self.send_json(200, stream_report(f))
        elif path.startswith("/_control/stream/") and path != "/_control/stream/config":
            return self.control_stream(path, body)
        else:
            with LOCK:
                if path == "/_control/expire_tokens":
                    for entry in f.tokens.values():
                        entry["revoked"] = True
                    return self.send_json(200, {"ok": True})
                if path == "/_control/reset":
                    f.reset()
                    return self.send_json(200, {"ok": True})
                if path == "/_control/fail":
                    status = int(body.get("status", 500))
                    default = ({"code": "Forbidden.AccessDenied.QpsLimitForApi", "message": "qps limit"}
                               if status == 429 else {"code": "fake.failure", "message": "injected failure"})
                    f.failures.append({"path": body.get("path", "/"), "count": int(body.get("count", 1)),
                                       "status": status, "body": body.get("body", default),
                                       "headers": body.get("headers") or {},
                                       "drop": bool(body.get("drop"))})
                    return self.send_json(200, {"ok": True})
                if path == "/_control/session":
                    sid = uuid.uuid4().hex
                    expires = now_ms() + int(body.get("expires_in_ms", 90 * 60 * 1000))
                    f.sessions[sid] = {"url": f.session_url(sid), "expires_ms": expires, "expired": False}
                    return self.send_json(200, {"url": f.session_url(sid), "session": sid, "expires_ms": expires})
                if path == "/_control/session/expire":
                    sid = body.get("session")
                    if sid is None:
                        q = urllib.parse.parse_qs(urllib.parse.urlsplit(body.get("url", "")).query)
                        sid = q.get("session", [""])[0]
                    if sid not in f.sessions:
                        return self.send_json(404, {"expired": False, "error": "unknown session"})
                    f.sessions[sid]["expired"] = True
                    return self.send_json(200, {"expired": True, "session": sid})
                if path == "/_control/stream/config":
                    if "open_code" in body:
                        f.open_code = int(body["open_code"])
                    if "ticket_ttl" in body:
                        f.ticket_ttl = float(body["ticket_ttl"])
                    if "answer_pings" in body:
                        f.answer_pings = bool(body["answer_pings"])
                    return self.send_json(200, {"open_code": f.open_code, "ticket_ttl": f.ticket_ttl,
                                                "answer_pings": f.answer_pings})
        self.send_json(404, {"error": "unknown control path " + path})

    def control_stream(self, path, body):
        f = self.fake
        if path == "/_control/stream/push":
            coro = push(f, body)
        elif path == "/_control/stream/ping":
            coro = system_ping(f)
        elif path == "/_control/stream/disconnect":
            coro = system_disconnect(f, float(body.get("delay", 10)), body.get("reason", "server is restarting"))
        elif path == "/_control/stream/drop":
            coro = drop_clients(f)
        else:
            return self.send_json(404, {"error": "unknown control path " + path})
        status, obj = asyncio.run_coroutine_threadsafe(coro, f.loop).result(15)
        self.send_json(status, obj)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


# ---------------------------------------------------------------- Stream gateway

def stream_report(f):
    keys = ("ticket", "connection_id", "open", "opened_at", "closed_at", "close_code",
            "close_reason", "closed_by", "closed_by_server")
    clients = [{k: c.get(k) for k in keys} for c in f.clients]
    return {"connections": sum(c["open"] for c in f.clients), "connects": f.connects,
            "tickets_used": f.tickets_used, "rejected": len(f.rejections), "rejections": f.rejections,
            "ws_pings": f.ws_pings, "ws_ping_log": f.ws_ping_log, "answer_pings": f.answer_pings,
            "frames": f.frames, "acks": f.acks, "opens": f.opens,
            "pushes": f.pushes, "pings": f.pings, "disconnects": f.disconnects, "clients": clients}


def open_clients(f):
    return [c for c in f.clients if c["open"]]


def new_message_id(f):
    return "msg-%d-%s" % (f.next("message"), uuid.uuid4().hex[:12])


async def send_frame(f, client, frame_type, topic, data, message_id, headers=None):
    frame = stream_frame(frame_type, topic, data, message_id, headers,
                         app_id=f.args.client_id, connection_id=client["connection_id"])
    await client["ws"].send(json.dumps(frame, ensure_ascii=False))
    return frame


async def push(f, body):
    with LOCK:
        clients = open_clients(f)
        if not clients:
            return 409, {"sent": False}
        # DingTalk delivers to any connected client of the app.
        client = random.choice(clients) if body.get("pick") == "random" else clients[-1]
        message_id = body.get("message_id") or new_message_id(f)
        frame_type, topic = body.get("type", "CALLBACK"), body.get("topic", BOT_TOPIC)
        # Recorded before it is sent: its ack may come back at once.
        record = {"message_id": message_id, "type": frame_type, "topic": topic,
                  "connection_id": client["connection_id"]}
        f.pushes.append(record)
    try:
        if "raw" in body:
            await client["ws"].send(body["raw"])
        else:
            data = body["data_raw"] if "data_raw" in body else json.dumps(body.get("data"), ensure_ascii=False)
            await send_frame(f, client, frame_type, topic, data, message_id, body.get("headers"))
    except Exception:
        with LOCK:
            record["failed"] = True
        return 409, {"sent": False}
    return 200, {"sent": True, "message_id": message_id, "connection_id": client["connection_id"]}


async def system_ping(f):
    with LOCK:
        clients = open_clients(f)
        if not clients:
            return 409, {"sent": False}
        client = clients[-1]
        message_id, opaque = new_message_id(f), uuid.uuid4().hex
        record = {"message_id": message_id, "opaque": opaque, "answered": False, "ok": None,
                  "connection_id": client["connection_id"]}
        f.pings.append(record)
    try:
        await send_frame(f, client, "SYSTEM", "ping", {"opaque": opaque}, message_id)
    except Exception:
        return 409, {"sent": False}
    return 200, {"sent": True, "message_id": message_id, "opaque": opaque}


async def system_disconnect(f, delay, reason):
    with LOCK:
        clients = open_clients(f)
    ids = []
    for client in clients:
        with LOCK:
            message_id = new_message_id(f)
            record = {"message_id": message_id, "connection_id": client["connection_id"],
                      "delay": delay, "closed_by_client_first": None, "sent_at": time.time(),
                      "client_left_after": None}
            f.disconnects.append(record)
        try:
            await send_frame(f, client, "SYSTEM", "disconnect", {"reason": reason}, message_id)
        except Exception:
            continue
        ids.append(message_id)
        f.loop.call_later(delay, lambda c=client, r=record: asyncio.ensure_future(close_later(f, c, r)))
    return 200, {"sent": len(ids), "message_ids": ids}


async def close_later(f, client, record):
    with LOCK:
        record["closed_by_client_first"] = not client["open"]
        if client["open"]:
            client["closed_by_server"] = True
        client["open"] = False
    await client["ws"].close(1000, "disconnect")


async def drop_clients(f):
    with LOCK:
        clients = open_clients(f)
        for c in clients:
            c["open"] = False
            c["closed_by_server"] = True
    for c in clients:
        c["ws"].transport.abort()  # TCP close, no close frame
    return 200, {"dropped": len(clients)}


def record_upstream(f, text):
    """Record one upstream text frame (LOCK held); acks are indexed by messageId."""
    try:
        frame = json.loads(text)
    except ValueError:
        f.frames.append({"error": "not JSON", "text": text[:2000]})
        f.problem("stream", "an upstream frame is not JSON", text=text[:2000])
        return
    record = {"frame": frame}
    f.frames.append(record)
    if not isinstance(frame, dict):
        record["error"] = "not a JSON object"
        f.problem("stream", "an upstream frame is not a JSON object", text=text[:2000])
        return
    headers = frame.get("headers") if isinstance(frame.get("headers"), dict) else {}
    message_id = headers.get("messageId")
    problems = []
    if not isinstance(frame.get("code"), int):
        problems.append("code is not an integer")
    if not isinstance(frame.get("headers"), dict):
        problems.append("headers is not an object")
    if not is_str(message_id):
        problems.append("headers.messageId missing")
    if not isinstance(frame.get("message"), str):
        problems.append("message is not a string")
    data = frame.get("data")
    ack = dict(frame, message_id=message_id)
    if isinstance(data, str):
        try:
            ack["data_json"] = json.loads(data) if data else None
        except ValueError:
            problems.append("data is not JSON")
    elif data is not None:
        problems.append("data is not a string")
    known = {p["message_id"] for p in f.pushes} | {p["message_id"] for p in f.pings} \
        | {d["message_id"] for d in f.disconnects}
    if is_str(message_id) and message_id not in known:
        problems.append("unknown messageId")
    if is_str(message_id) and message_id in f.acks:
        problems.append("a second ack of the same messageId")
    ack["problems"] = problems
    for problem in problems:
        f.problem("stream", "ack of %r: %s" % (message_id, problem), frame=frame)
    if is_str(message_id):
        f.acks[message_id] = ack
        for ping in f.pings:
            if ping["message_id"] == message_id:
                got = ack.get("data_json")
                ping["answered"] = True
                ping["ok"] = frame.get("code") == 200 and isinstance(got, dict) \
                    and got.get("opaque") == ping["opaque"]


def make_ws_server(f):
    import websockets

    class Protocol(websockets.WebSocketServerProtocol):
        connection_id = None

        async def read_frame(self, max_size):
            frame = await super().read_frame(max_size)
            if frame.opcode == websockets.frames.Opcode.PING:
                with LOCK:
                    f.ws_pings += 1
                    f.ws_ping_log.append({"at": time.time(), "connection_id": self.connection_id,
                                          "answered": f.answer_pings})
            return frame

        async def pong(self, data=b""):
            # A gateway gone silent answers nothing (stream/config answer_pings).
            if f.answer_pings:
                await super().pong(data)

    def ticket_of(path):
        url = urllib.parse.urlsplit(path)
        return url.path, urllib.parse.parse_qs(url.query).get("ticket", [""])[0]

    async def process_request(path, headers):
        route, ticket = ticket_of(path)
        with LOCK:
            entry = f.tickets.get(ticket)
            reason = None
            if route != "/connect":
                reason = "unknown path"
            elif entry is None:
                reason = "unknown ticket"
            elif entry["used"]:
                reason = "ticket already used"
            elif time.monotonic() >= entry["expiry"]:
                reason = "ticket expired"
            if reason:
                f.rejections.append({"ticket": ticket, "reason": reason})
                f.problem("stream", "WebSocket upgrade refused: %s" % reason, ticket=ticket)
            else:
                entry["used"] = True
                f.tickets_used.append(ticket)
        if reason:
            return (http.HTTPStatus.UNAUTHORIZED, [("Content-Type", "application/json")],
                    json.dumps({"code": "authFailed", "message": reason}).encode())
        return None

    async def handler(ws):
        _, ticket = ticket_of(ws.path)
        client = {"ws": ws, "ticket": ticket, "connection_id": "conn-%s" % uuid.uuid4().hex[:16],
                  "open": True, "opened_at": time.time(), "closed_at": None, "close_code": None,
                  "close_reason": None, "closed_by": None, "closed_by_server": False}
        ws.connection_id = client["connection_id"]
        with LOCK:
            f.clients.append(client)
            f.connects += 1
        try:
            async for message in ws:
                with LOCK:
                    if isinstance(message, bytes):
                        f.frames.append({"error": "binary message", "hex": message[:64].hex()})
                        f.problem("stream", "a binary upstream message", hex=message[:64].hex())
                    else:
                        record_upstream(f, message)
        except websockets.ConnectionClosed:
            pass
        finally:
            # The iteration ends when a Close frame came (and was echoed) or
            # the TCP connection ended: the connection is gone from then on.
            with LOCK:
                client["open"] = False
                client["closed_at"] = time.time()
                if not client["closed_by_server"]:
                    for d in f.disconnects:
                        if d["connection_id"] == client["connection_id"] and d["client_left_after"] is None:
                            d["client_left_after"] = client["closed_at"] - d["sent_at"]
            await ws.wait_closed()  # the close code is known once the TCP connection ended
            with LOCK:
                client["close_code"] = ws.close_code
                client["close_reason"] = ws.close_reason
                # close_rcvd_then_sent: True when the client's Close frame
                # came first, False when the fake's went first, None when
                # no closing handshake happened.
                first = ws.close_rcvd_then_sent
                client["closed_by"] = None if first is None else ("client" if first else "server")

    return websockets.serve(handler, "127.0.0.1", 0, create_protocol=Protocol,
                            process_request=process_request, max_size=None,
                            ping_interval=None, close_timeout=2)


def main():
    p = argparse.ArgumentParser(description="fake DingTalk open platform")
    p.add_argument("--client-id", default="dingabc")
    p.add_argument("--client-secret", default="sec_test")
    p.add_argument("--robot-code", default=None, help="default: the client id")
    p.add_argument("--token-expire", type=int, default=7200)
    p.add_argument("--robot-secret", default=None)
    p.add_argument("--open-code", type=int, default=0)
    p.add_argument("--auth-status", type=int, default=400,
                   help="HTTP status of an InvalidAuthentication answer (live service: 400)")
    p.add_argument("--ticket-ttl", type=float, default=90.0)
    args = p.parse_args()
    if args.robot_code is None:
        args.robot_code = args.client_id
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    fake = Fake(args)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    fake.loop = loop

    async def start():
        return await make_ws_server(fake)
    ws_server = loop.run_until_complete(start())
    fake.ws_port = ws_server.sockets[0].getsockname()[1]
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.fake = fake
    fake.http_port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    print("PORT %d" % fake.http_port, flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main()
