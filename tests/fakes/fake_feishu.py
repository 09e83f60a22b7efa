#!/usr/bin/env python3
"""A fake Feishu/Lark open platform for chatgate's tests: one process, HTTP
open APIs plus the long-connection (WebSocket) event channel, on 127.0.0.1.

Written independently of chatgate's code, from the platform's published
protocol as summarized in /work/shared/protocols.md ("Feishu / Lark"), checked
against the official SDKs (larksuite/oapi-sdk-go ws client: endpoint answer,
Frame fields, ping/pong with ClientConfig, sum/seq reassembly, ack with
biz_rt; error codes from the open platform documentation). Standard library
plus Debian's python3-websockets (10.x) and python3-cryptography.

    fake_feishu.py --app-id cli_test --app-secret sec_test [--token-expire 7200]
                   [--ping-interval 120] [--endpoint-code 0]

prints "PORT <n>" (the HTTP port) once the HTTP and WebSocket servers listen.
Importable: encrypt/decrypt/sign, frame_encode/frame_decode, message_event.

Open APIs (JSON; business errors come as HTTP 400 {"code":c,"msg":..}):
  POST  /open-apis/auth/v3/tenant_access_token/internal   -> t-<n>, expire
  GET   /open-apis/bot/v3/info                             -> bot.open_id (--bot-open-id)
  POST  /open-apis/im/v1/messages?receive_id_type=..       send
  POST  /open-apis/im/v1/messages/{id}/reply               reply
  PATCH /open-apis/im/v1/messages/{id} (card), PUT (text/post): update one
        of the fake's own messages (kind "patch"/"edit" in the messages)
  POST  /open-apis/cardkit/v1/cards                        -> card_<n>
  PUT   /open-apis/cardkit/v1/cards/{c}/elements/{e}/content
  PATCH /open-apis/cardkit/v1/cards/{c}/settings
  POST  /callback/ws/endpoint  {"AppID","AppSecret"}       -> ws URL, ClientConfig
Every /open-apis call but the token one needs "Authorization: Bearer <token>"
(else HTTP 400, code 99991663). Sends and replies with a known "uuid" answer
the first message's id and are not stored again (counted as duplicates).
A reply must name a message the platform knows: one delivered to the bot
(pushed over the long connection, or registered by the test with
/_control/known for webhook events) or sent by it; else HTTP 400, code
230001 "invalid message_id".

Protocol problems: every refusal of a request chatgate made is recorded in
/_control/problems, except the platform's ordinary answers (an expired
token, wrong credentials, an --endpoint-code, a failure the test injected):
a token never issued or no Authorization, a body that is not JSON or has no
JSON Content-Type, invalid content, a reply to an unknown message, card
sequence errors, unknown routes. So are, on the long connection: text or
undecodable frames, frames for another service id, frames other than pings
and acks, and acks that answer no pushed frame (or one already acked), lack
a numeric biz_rt, or carry a payload other than {"code": int, "data": null
or base64 JSON}. A test asserts the list is empty at its end.

Control API (same port):
  GET  /_control/calls      {"calls":[{method,path,authorization,headers,body,t,
                            status,code[,failed][,token_remaining]
                            [,valid_tokens,issued]}]}  (t monotonic; a token
                            request lists what the earlier tokens had left)
  GET  /_control/messages   {"messages":[{kind,id,message_id|receive_id,
                            receive_id_type,msg_type,content,uuid,
                            reply_in_thread,authorization}],"duplicates":n}
  GET  /_control/cards      {"cards":{id:{card,elements,streaming,sequence,updates}}}
  GET  /_control/problems   {"problems":[{problem, t, ...detail}]}
  GET  /_control/tokens     {"now":t,"tokens":[{token,issued_at,expire,expires_at,valid}]}
                            (times: this machine's monotonic clock, seconds)
  POST /_control/known {"message_ids":[..]}   inbound messages the bot may reply to
  POST /_control/token_expire {"expire":s}    the life of tokens issued from now on
  POST /_control/expire_tokens            every issued token becomes invalid
  POST /_control/fail {"path":prefix,"count":n,"status":429,"code":99991400,
                       "msg":"..","headers":{"x-ogw-ratelimit-reset":"1"}}
                            the next n calls whose path (with query) starts
                            with prefix get that answer and have no effect
  POST /_control/reconnect {"interval":s,"nonce":s,"count":n,"ping_interval":s}
                            ClientConfig handed out from then on
  POST /_control/reset      forget calls, messages, uuids, cards, failures,
                            problems, known ids and the ws records (not tokens,
                            connections, config; history keeps the open ones)
  GET  /_control/ws         {"connections","connects","rejected","pings",
                            "ws_pings","acks","frames","events","clients",
                            "pongs":[{t,PingInterval}],"history"}
                            history: one record per WebSocket connection, in
                            the order they opened: {n, device_id, opened_at,
                            closed_at (null while open), close_code,
                            close_reason, closed_by: "client" (it sent the
                            Close frame first) | "server" (the fake did:
                            /_control/ws/close) | null (no closing handshake:
                            a TCP close or /_control/ws/drop; code 1006)};
                            times on this machine's monotonic clock, taken
                            when the upgrade completed and when the Close
                            frame came (or the TCP connection ended)
  POST /_control/ws/event {"event":{..},"parts":1,"type":"event",
                           "message_id"?:"reuse one","raw"?:"payload text",
                           "reverse"?:false,"pick"?:"newest"}
                            push to the newest open client ("pick":"random":
                            to one of the app's open clients at random, as
                            Feishu spreads events over several) ->
                            {"sent":true,"message_id":..,"device_id":..} or
                            409 {"sent":false}; each ack in /_control/ws
                            names the device_id of the connection it came on
  POST /_control/ws/drop    abort every client's TCP connection -> {"dropped":n}
  POST /_control/ws/close {"code":1000,"reason":".."}  clean close -> {"closed":n}
"""
import argparse
import asyncio
import base64
import hashlib
import http
import json
import logging
import os
import random
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# ---------------------------------------------------------------- helpers

def _aes(encrypt_key, iv):
    key = hashlib.sha256(encrypt_key.encode("utf-8")).digest()
    return Cipher(algorithms.AES(key), modes.CBC(iv))


def encrypt(encrypt_key, plaintext, iv=None):
    """Feishu callback encryption: base64(iv + AES-256-CBC(SHA256(key), PKCS#7))."""
    if isinstance(plaintext, str):
        plaintext = plaintext.encode("utf-8")
    iv = iv if iv is not None else os.urandom(16)
    padder = padding.PKCS7(128).padder()
    data = padder.update(plaintext) + padder.finalize()
    enc = _aes(encrypt_key, iv).encryptor()
    return base64.b64encode(iv + enc.update(data) + enc.finalize()).decode("ascii")


def decrypt(encrypt_key, b64):
    buf = base64.b64decode(b64)
    if len(buf) < 32 or len(buf) % 16:
        raise ValueError("bad ciphertext length %d" % len(buf))
    dec = _aes(encrypt_key, buf[:16]).decryptor()
    data = dec.update(buf[16:]) + dec.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(data) + unpadder.finalize()


def sign(timestamp, nonce, encrypt_key, body):
    """X-Lark-Signature: hex SHA256(timestamp + nonce + encrypt_key + raw body)."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    return hashlib.sha256((timestamp + nonce + encrypt_key).encode("utf-8") + body).hexdigest()


# proto2 Frame (pbbp2): field number -> (name, kind)
_FRAME_FIELDS = {1: ("seq_id", "u64"), 2: ("log_id", "u64"), 3: ("service", "i32"),
                 4: ("method", "i32"), 5: ("headers", "hdr"), 6: ("payload_encoding", "str"),
                 7: ("payload_type", "str"), 8: ("payload", "bytes"), 9: ("log_id_new", "str")}


def _varint(n):
    n &= (1 << 64) - 1  # negative int32 -> ten-byte two's complement, as protobuf does
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf, i):
    n = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("bad varint at %d" % i)
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n & ((1 << 64) - 1), i


def _ld(field, data):
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _fields(buf):
    """Yield (field, wire_type, value) of a message; skips groups (wire types 3/4)."""
    i, groups = 0, []
    while i < len(buf):
        key, i = _read_varint(buf, i)
        field, wt = key >> 3, key & 7
        if field == 0:
            raise ValueError("field number 0")
        if wt == 0:
            val, i = _read_varint(buf, i)
        elif wt in (1, 5):
            size = 8 if wt == 1 else 4
            val, i = buf[i:i + size], i + size
        elif wt == 2:
            size, i = _read_varint(buf, i)
            val, i = buf[i:i + size], i + size
        elif wt == 3:
            groups.append(field)
            continue
        elif wt == 4:
            if not groups or groups.pop() != field:
                raise ValueError("unbalanced group end")
            continue
        else:
            raise ValueError("wire type %d" % wt)
        if i > len(buf):
            raise ValueError("truncated field %d" % field)
        if not groups:
            yield field, wt, val
    if groups:
        raise ValueError("unterminated group")


def frame_encode(frame):
    """Frame dict (seq_id, log_id, service, method, headers [(k, v)] or dict,
    payload_encoding, payload_type, payload, log_id_new) -> proto2 bytes."""
    out = bytearray()
    for num in (1, 2, 3, 4):  # required fields, always written
        out += _varint(num << 3) + _varint(int(frame.get(_FRAME_FIELDS[num][0]) or 0))
    headers = frame.get("headers") or ()
    for key, value in (headers.items() if isinstance(headers, dict) else headers):
        out += _ld(5, _ld(1, str(key).encode()) + _ld(2, str(value).encode()))
    for num in (6, 7, 8, 9):
        value = frame.get(_FRAME_FIELDS[num][0])
        if value is not None:
            out += _ld(num, value.encode() if isinstance(value, str) else bytes(value))
    return bytes(out)


def frame_decode(data):
    """proto2 bytes -> Frame dict; headers as a list of (key, value) pairs.
    Fields may come in any order; unknown fields of any wire type are skipped."""
    frame = {"seq_id": 0, "log_id": 0, "service": 0, "method": 0, "headers": [],
             "payload_encoding": None, "payload_type": None, "payload": None,
             "log_id_new": None}
    for field, wt, val in _fields(bytes(data)):
        name, kind = _FRAME_FIELDS.get(field, (None, None))
        if name is None or (wt == 0) != (kind in ("u64", "i32")):
            continue  # unknown field, or a wire type that does not fit
        if kind == "u64":
            frame[name] = val
        elif kind == "i32":
            val &= 0xFFFFFFFF
            frame[name] = val - (1 << 32) if val >= 1 << 31 else val
        elif kind == "hdr":
            kv = {1: "", 2: ""}
            for f, w, v in _fields(val):
                if f in kv and w == 2:
                    kv[f] = v.decode("utf-8")
            frame["headers"].append((kv[1], kv[2]))
        elif kind == "str":
            frame[name] = val.decode("utf-8")
        else:
            frame[name] = bytes(val)
    return frame


def message_event(message_id, chat_id, chat_type, text, sender_open_id="ou_user",
                  mentions=(), event_id=None, message_type="text", content=None,
                  app_id="cli_test", token="vtoken"):
    """A schema 2.0 im.message.receive_v1 envelope; mentions: (key, open_id, name)."""
    now = str(int(time.time() * 1000))
    tenant = "tk_test"

    def ids(open_id):
        return {"open_id": open_id, "union_id": "on_" + open_id, "user_id": "u_" + open_id}
    return {
        "schema": "2.0",
        "header": {"event_id": event_id or "ev_" + message_id, "event_type": "im.message.receive_v1",
                   "create_time": now, "token": token, "app_id": app_id, "tenant_key": tenant},
        "event": {
            "sender": {"sender_id": ids(sender_open_id), "sender_type": "user", "tenant_key": tenant},
            "message": {
                "message_id": message_id, "root_id": "", "parent_id": "", "create_time": now,
                "update_time": now, "chat_id": chat_id, "chat_type": chat_type,
                "message_type": message_type,
                "content": content if content is not None else json.dumps({"text": text}),
                "mentions": [{"key": key, "id": ids(oid), "name": name, "tenant_key": tenant}
                             for key, oid, name in mentions],
            },
        },
    }


# ---------------------------------------------------------------- state

SERVICE_ID = 7
LOCK = threading.Lock()
RECEIVE_ID_TYPES = ("open_id", "chat_id", "user_id", "union_id", "email")
ENDPOINT_MSGS = {1: "system busy", 1000040350: "exceed connection limit",
                 1000040343: "internal error", 514: "auth failed", 403: "forbidden"}


class Fake:
    def __init__(self, args):
        self.args = args
        self.tokens = {}            # token -> monotonic expiry
        self.issued = {}            # token -> {token, issued_at, expire}: every token issued
        self.token_expire = args.token_expire
        self.n = {}                 # id counters
        self.config = {"ReconnectCount": -1, "ReconnectInterval": 2, "ReconnectNonce": 1,
                       "PingInterval": args.ping_interval}
        self.devices = set()
        self.clients = []           # {"ws", "device_id", "open"}
        self.connects = self.rejected = 0
        self.ws_port = None
        self.loop = None
        self.reset()

    def reset(self):
        self.calls, self.messages, self.uuids, self.duplicates = [], [], {}, 0
        self.cards, self.failures, self.sent = {}, [], {}
        self.acks, self.frames, self.events = [], [], []
        self.pings = self.ws_pings = 0
        self.pongs = []             # {t, PingInterval} handed out with each pong
        self.problems = []          # what chatgate sent that the platform would refuse
        self.known = set()          # inbound message ids the platform delivered
        self.pending = {}           # (device_id, frame message_id) -> unacked pushes,
                                    # each a list of its frames' (seq_id, log_id)
        # One record per WebSocket connection (see GET /_control/ws): the
        # open ones outlive a reset, like the connections themselves.
        self.history = [h for h in getattr(self, "history", []) if h["closed_at"] is None]

    def problem(self, what, **detail):
        """Records something chatgate sent that breaks the protocol (called
        with LOCK held)."""
        self.problems.append(dict(detail, problem=what, t=time.monotonic()))

    def next(self, name):
        self.n[name] = self.n.get(name, 0) + 1
        return self.n[name]

    def take_failure(self, path):
        for f in self.failures:
            if path.startswith(f["path"]) and f["count"] > 0:
                f["count"] -= 1
                return f
        return None

    def token_ok(self, auth):
        """-> None when `auth` carries a valid token; else why not. A token
        that has expired (or was expired by the test) is the platform's
        ordinary refusal; no token, another scheme or a token never issued
        is chatgate's mistake and recorded as a problem."""
        if not auth or not auth.startswith("Bearer "):
            return "no Authorization: Bearer header"
        token = auth[len("Bearer "):]
        expiry = self.tokens.get(token)
        if expiry is None:
            return "expired" if token in self.issued else "a token the platform never issued"
        return None if time.monotonic() < expiry else "expired"

    def remaining(self, token):
        """Seconds `token` has left (negative: expired), None if unknown."""
        expiry = self.tokens.get(token)
        return None if expiry is None else expiry - time.monotonic()


def err(code, msg, status=400):
    return status, {"code": code, "msg": msg, "error": {"log_id": "fake-log"}}


def ok(data=None, **extra):
    body = {"code": 0, "msg": "success"}
    if data is not None:
        body["data"] = data
    body.update(extra)
    return 200, body


# ---------------------------------------------------------------- open APIs

class Api:
    """The /open-apis and /callback routes; called with LOCK held."""

    def __init__(self, fake):
        self.f = fake
        self.legit = False  # a refusal that is the platform's ordinary answer

    def route(self, method, path, query, body, auth, headers):
        """-> (status, answer). Every refusal but the ordinary ones (an
        expired token, wrong credentials, an endpoint code the test asked
        for) is recorded as a protocol problem of chatgate's."""
        f = self.f
        if method in ("POST", "PUT", "PATCH") and not (headers.get("Content-Type") or "") \
                .lower().startswith("application/json"):
            f.problem("a request body without Content-Type: application/json", method=method,
                      path=path, content_type=headers.get("Content-Type"))
        status, obj = self.answer(method, path, query, body, auth)
        if obj.get("code") not in (0, None) and not self.legit:
            f.problem("refused with code %s: %s" % (obj.get("code"), obj.get("msg")),
                      method=method, path=path, body=body)
        return status, obj

    def answer(self, method, path, query, body, auth):
        f = self.f
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/open-apis/auth/v3/tenant_access_token/internal":
            return self.token(body)
        if method == "POST" and path == "/callback/ws/endpoint":
            return self.endpoint(body)
        if not path.startswith("/open-apis/"):
            return 404, {"code": 404, "msg": "not found"}
        why = f.token_ok(auth)
        if why is not None:
            self.legit = why == "expired"
            return err(99991663, "Invalid access token for authorization. "
                       "Please make a request with token attached.")
        if method == "GET" and path == "/open-apis/bot/v3/info":
            # The bot's own identity (GET, no body): how a bot learns the
            # open_id its @-mentions carry.
            return 200, {"code": 0, "msg": "ok",
                         "bot": {"open_id": f.args.bot_open_id, "app_name": "chatgate test bot",
                                 "activate_status": 2, "ip_white_list": []}}
        if not isinstance(body, dict):
            return err(99992402, "field validation failed: body must be a JSON object")
        if parts[:4] == ["open-apis", "im", "v1", "messages"]:
            if method == "POST" and len(parts) == 4:
                return self.send(query, body, auth)
            if method == "POST" and len(parts) == 6 and parts[5] == "reply":
                return self.reply(parts[4], body, auth)
            if method in ("PATCH", "PUT") and len(parts) == 5:
                return self.update(method, parts[4], body, auth)
        if parts[:4] == ["open-apis", "cardkit", "v1", "cards"]:
            if method == "POST" and len(parts) == 4:
                return self.card_create(body)
            if method == "PUT" and len(parts) == 8 and parts[5] == "elements" and parts[7] == "content":
                return self.card_element(parts[4], parts[6], body)
            if method == "PATCH" and len(parts) == 6 and parts[5] == "settings":
                return self.card_settings(parts[4], body)
        return 404, {"code": 404, "msg": "not found"}

    def token(self, body):
        f, a = self.f, self.f.args
        if not isinstance(body, dict) or not isinstance(body.get("app_id"), str) \
                or not isinstance(body.get("app_secret"), str):
            return 200, {"code": 10003, "msg": "invalid param"}
        if body.get("app_id") != a.app_id or body.get("app_secret") != a.app_secret:
            self.legit = True  # wrong credentials: the platform's answer, not a protocol error
            return 200, {"code": 10014, "msg": "app secret invalid"}
        token = "t-%d" % f.next("token")
        now = time.monotonic()
        f.tokens[token] = now + f.token_expire
        f.issued[token] = {"token": token, "issued_at": now, "expire": f.token_expire}
        return 200, {"code": 0, "msg": "ok", "tenant_access_token": token, "expire": f.token_expire}

    def endpoint(self, body):
        f, a = self.f, self.f.args
        if not isinstance(body, dict) or not isinstance(body.get("AppID"), str) \
                or not isinstance(body.get("AppSecret"), str):
            return 200, {"code": 403, "msg": "forbidden: AppID and AppSecret are required"}
        if body.get("AppID") != a.app_id or body.get("AppSecret") != a.app_secret:
            self.legit = True
            return 200, {"code": 403, "msg": "forbidden"}
        if a.endpoint_code:
            self.legit = True
            return 200, {"code": a.endpoint_code, "msg": ENDPOINT_MSGS.get(a.endpoint_code, "error")}
        device = str(f.next("device"))
        f.devices.add(device)
        url = "ws://127.0.0.1:%d/ws?device_id=%s&service_id=%d" % (f.ws_port, device, SERVICE_ID)
        return 200, {"code": 0, "msg": "ok", "data": {"URL": url, "ClientConfig": dict(f.config)}}

    def check_content(self, msg_type, content):
        """-> (error or None, parsed content)."""
        if msg_type not in ("text", "post", "interactive") or not isinstance(content, str):
            return err(230001, "invalid message content"), None
        try:
            parsed = json.loads(content)
        except ValueError:
            return err(230001, "invalid message content"), None
        if not isinstance(parsed, dict) or (msg_type == "text" and not isinstance(parsed.get("text"), str)):
            return err(230001, "invalid message content"), None
        limit = (150 if msg_type == "text" else 30) * 1024
        if len(content.encode("utf-8")) > limit:
            return err(230025, "message content too long"), None
        if msg_type == "interactive" and parsed.get("type") == "card":
            card_id = (parsed.get("data") or {}).get("card_id") if isinstance(parsed.get("data"), dict) else None
            if card_id not in self.f.cards:
                return err(230099, "card not found"), None
        return None, parsed

    def store(self, record, body, chat_id, parent_id=""):
        f = self.f
        uid = body.get("uuid")
        if uid and uid in f.uuids:
            f.duplicates += 1
            return ok(f.sent[f.uuids[uid]])
        mid = "om_r%d" % f.next("message")
        now = str(int(time.time() * 1000))
        record.update(id=mid, uuid=uid)
        f.messages.append(record)
        data = {"message_id": mid, "root_id": parent_id, "parent_id": parent_id,
                "msg_type": record["msg_type"], "create_time": now, "update_time": now,
                "deleted": False, "updated": False, "chat_id": chat_id,
                "sender": {"id": f.args.app_id, "id_type": "app_id", "sender_type": "app",
                           "tenant_key": "tk_test"},
                "body": {"content": body.get("content")}}
        if record.get("reply_in_thread"):
            data["thread_id"] = "omt_%d" % f.next("thread")
        f.sent[mid] = data
        if uid:
            f.uuids[uid] = mid
        return ok(data)

    def send(self, query, body, auth):
        id_type = query.get("receive_id_type", [""])[0]
        receive_id = body.get("receive_id")
        if id_type not in RECEIVE_ID_TYPES or not isinstance(receive_id, str) or not receive_id:
            return err(99992402, "field validation failed: receive_id_type/receive_id")
        error, content = self.check_content(body.get("msg_type"), body.get("content"))
        if error:
            return error
        chat_id = receive_id if id_type == "chat_id" else "oc_p2p_" + receive_id
        return self.store({"kind": "send", "receive_id": receive_id, "receive_id_type": id_type,
                           "msg_type": body["msg_type"], "content": content,
                           "authorization": auth}, body, chat_id)

    def reply(self, message_id, body, auth):
        if message_id not in self.f.known and message_id not in self.f.sent:
            # Neither delivered to the bot nor sent by it: Feishu knows no such message.
            return err(230001, "Your request contains an invalid request parameter, "
                       "ext=invalid message_id: %s" % message_id)
        if "reply_in_thread" in body and not isinstance(body["reply_in_thread"], bool):
            return err(99992402, "field validation failed: reply_in_thread must be a boolean")
        error, content = self.check_content(body.get("msg_type"), body.get("content"))
        if error:
            return error
        return self.store({"kind": "reply", "message_id": message_id, "msg_type": body["msg_type"],
                           "content": content, "reply_in_thread": body.get("reply_in_thread"),
                           "authorization": auth}, body, "oc_fake", parent_id=message_id)

    def update(self, method, message_id, body, auth):
        msg_type = "interactive" if method == "PATCH" else body.get("msg_type")
        if method == "PUT" and msg_type not in ("text", "post"):
            return err(230001, "invalid message content")
        error, content = self.check_content(msg_type, body.get("content"))
        if error:
            return error
        if message_id not in self.f.sent:
            return err(230001, "invalid message_id")
        self.f.messages.append({"kind": "patch" if method == "PATCH" else "edit", "id": message_id,
                                "msg_type": msg_type, "content": content, "authorization": auth})
        return ok({})

    def card_create(self, body):
        try:
            card = json.loads(body.get("data")) if body.get("type") == "card_json" else None
        except (TypeError, ValueError):
            card = None
        if not isinstance(card, dict):
            return err(300301, "invalid card")
        elements = {}

        def walk(node):
            if isinstance(node, dict):
                if isinstance(node.get("element_id"), str):
                    elements[node["element_id"]] = node.get("content", "")
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)
        walk(card)
        card_id = "card_%d" % self.f.next("card")
        config = card.get("config") if isinstance(card.get("config"), dict) else {}
        self.f.cards[card_id] = {"card": card, "elements": elements, "sequence": 0,
                                 "streaming": bool(config.get("streaming_mode")), "updates": []}
        return ok({"card_id": card_id})

    def check_sequence(self, card, body):
        seq = body.get("sequence")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq <= card["sequence"]:
            return err(300317, "sequence number compare failed")
        card["sequence"] = seq
        return None

    def card_element(self, card_id, element_id, body):
        card = self.f.cards.get(card_id)
        if card is None or element_id not in card["elements"]:
            return err(300302, "card or element not found")
        if not isinstance(body.get("content"), str):
            return err(99992402, "field validation failed: content")
        error = self.check_sequence(card, body)
        if error:
            return error
        card["elements"][element_id] = body["content"]
        card["updates"].append({"element_id": element_id, "sequence": body["sequence"],
                                "content": body["content"], "uuid": body.get("uuid"),
                                "streaming": card["streaming"]})
        return ok({})

    def card_settings(self, card_id, body):
        card = self.f.cards.get(card_id)
        if card is None:
            return err(300302, "card or element not found")
        try:
            settings = json.loads(body.get("settings"))
        except (TypeError, ValueError):
            settings = None
        if not isinstance(settings, dict):
            return err(300301, "invalid card settings")
        error = self.check_sequence(card, body)
        if error:
            return error
        config = settings.get("config")
        if isinstance(config, dict) and "streaming_mode" in config:
            card["streaming"] = bool(config["streaming_mode"])
        card["updates"].append({"settings": settings, "sequence": body["sequence"],
                                "uuid": body.get("uuid")})
        return ok({})


# ---------------------------------------------------------------- HTTP

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    @property
    def fake(self):
        return self.server.fake

    def send_json(self, status, obj, extra=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
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
        auth = self.headers.get("Authorization")
        call = {"method": method, "path": self.path, "authorization": auth,
                "headers": dict(self.headers.items()), "body": body, "t": time.monotonic()}
        f = self.fake
        with LOCK:
            f.calls.append(call)
            if auth and auth.startswith("Bearer "):
                call["token_remaining"] = f.remaining(auth[len("Bearer "):])
            if url.path == "/open-apis/auth/v3/tenant_access_token/internal":
                # What the tokens issued so far had left when this one was asked for.
                # (None: revoked by /_control/expire_tokens)
                call["valid_tokens"] = {t: f.remaining(t) for t in f.issued}
            failure = f.take_failure(self.path)
            if failure:
                status, obj, extra = failure["status"], {"code": failure["code"], "msg": failure["msg"]}, failure["headers"]
                call["failed"] = True
            else:
                status, obj = Api(f).route(method, url.path, urllib.parse.parse_qs(url.query), body,
                                           auth, self.headers)
                extra = None
            call.update(status=status, code=obj.get("code"))
            if obj.get("tenant_access_token"):
                call["issued"] = obj["tenant_access_token"]
        self.send_json(status, obj, extra)

    def control(self, method, path, body):
        f = self.fake
        if method == "GET":
            with LOCK:
                if path == "/_control/calls":
                    return self.send_json(200, {"calls": f.calls})
                if path == "/_control/messages":
                    return self.send_json(200, {"messages": f.messages, "duplicates": f.duplicates})
                if path == "/_control/cards":
                    return self.send_json(200, {"cards": f.cards})
                if path == "/_control/problems":
                    return self.send_json(200, {"problems": f.problems})
                if path == "/_control/tokens":
                    now = time.monotonic()
                    return self.send_json(200, {"now": now, "tokens": [
                        dict(t, expires_at=t["issued_at"] + t["expire"],
                             valid=f.tokens.get(t["token"], 0) > now)
                        for t in f.issued.values()]})
                if path == "/_control/ws":
                    clients = [{"device_id": c["device_id"], "open": c["open"]} for c in f.clients]
                    return self.send_json(200, {
                        "connections": sum(c["open"] for c in clients), "connects": f.connects,
                        "rejected": f.rejected, "pings": f.pings, "ws_pings": f.ws_pings,
                        "acks": f.acks, "frames": f.frames, "events": f.events, "clients": clients,
                        "pongs": f.pongs, "history": f.history})
        elif path.startswith("/_control/ws/"):
            return self.control_ws(path, body)
        else:
            with LOCK:
                if path == "/_control/expire_tokens":
                    f.tokens.clear()
                    return self.send_json(200, {"ok": True})
                if path == "/_control/reset":
                    f.reset()
                    return self.send_json(200, {"ok": True})
                if path == "/_control/known":
                    f.known.update(str(m) for m in body.get("message_ids", []))
                    return self.send_json(200, {"known": len(f.known)})
                if path == "/_control/token_expire":
                    f.token_expire = int(body["expire"])
                    return self.send_json(200, {"expire": f.token_expire})
                if path == "/_control/fail":
                    status = int(body.get("status", 500))
                    f.failures.append({
                        "path": body.get("path", "/"), "count": int(body.get("count", 1)),
                        "status": status,
                        "code": body.get("code", 99991400 if status == 429 else 1),
                        "msg": body.get("msg", "request trigger frequency limit" if status == 429
                                        else "fake failure"),
                        "headers": body.get("headers") or {}})
                    return self.send_json(200, {"ok": True})
                if path == "/_control/reconnect":
                    for key, name in (("interval", "ReconnectInterval"), ("nonce", "ReconnectNonce"),
                                      ("count", "ReconnectCount"), ("ping_interval", "PingInterval")):
                        if key in body:
                            f.config[name] = int(body[key])
                    return self.send_json(200, {"ClientConfig": f.config})
        self.send_json(404, {"error": "unknown control path " + path})

    def control_ws(self, path, body):
        f = self.fake
        if path == "/_control/ws/event":
            coro = push_event(f, body)
        elif path == "/_control/ws/drop":
            coro = drop_clients(f)
        elif path == "/_control/ws/close":
            coro = close_clients(f, int(body.get("code", 1000)), body.get("reason", ""))
        else:
            return self.send_json(404, {"error": "unknown control path " + path})
        status, obj = asyncio.run_coroutine_threadsafe(coro, f.loop).result(15)
        self.send_json(status, obj)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # several gateways (and a test's driver) at once

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


# ---------------------------------------------------------------- WebSocket

def open_clients(f):
    return [c for c in f.clients if c["open"]]


def inbound_message_ids(event):
    """The message ids an event delivers to the bot (a message's own, a
    card's), which it may then reply to."""
    event = (event or {}).get("event") if isinstance(event, dict) else None
    if not isinstance(event, dict):
        return []
    ids = []
    for parent, key in (("message", "message_id"), ("context", "open_message_id")):
        node = event.get(parent)
        if isinstance(node, dict) and isinstance(node.get(key), str):
            ids.append(node[key])
    return ids


async def push_event(f, body):
    with LOCK:
        clients = open_clients(f)
        if not clients:
            return 409, {"sent": False}
        # Feishu hands each event to one of the app's connected clients.
        client = random.choice(clients) if body.get("pick") == "random" else clients[-1]
        message_id = body.get("message_id") or "msg_%d" % f.next("ws_message")
        log_id = f.next("log_id")
    payload = body["raw"].encode() if "raw" in body else json.dumps(body.get("event")).encode()
    with LOCK:
        f.known.update(inbound_message_ids(body.get("event")))
    parts = max(1, min(int(body.get("parts", 1)), len(payload)))
    base, extra = divmod(len(payload), parts)
    chunks, start = [], 0
    for i in range(parts):
        size = base + (1 if i < extra else 0)
        chunks.append(payload[start:start + size])
        start += size
    order = list(range(parts))[::-1] if body.get("reverse") else list(range(parts))
    seq_ids = []
    push = []  # this push's frames: an ack of any of them settles it
    with LOCK:
        f.pending.setdefault((client["device_id"], message_id), []).append(push)
    try:
        for i in order:
            with LOCK:
                seq_id = f.next("seq_id")
                push.append((seq_id, log_id))
            seq_ids.append(seq_id)
            headers = [("type", body.get("type", "event")), ("message_id", message_id),
                       ("sum", str(parts)), ("seq", str(i)), ("trace_id", "trace_%d" % log_id),
                       ("timestamp", str(int(time.time() * 1000)))]
            await client["ws"].send(frame_encode({
                "seq_id": seq_id, "log_id": log_id, "service": SERVICE_ID, "method": 1,
                "headers": headers, "payload": chunks[i]}))
    except Exception:
        return 409, {"sent": False, "device_id": client["device_id"]}
    with LOCK:
        f.events.append({"message_id": message_id, "type": body.get("type", "event"),
                         "parts": parts, "seq_ids": seq_ids, "device_id": client["device_id"]})
    return 200, {"sent": True, "message_id": message_id, "device_id": client["device_id"]}


async def drop_clients(f):
    with LOCK:
        clients = open_clients(f)
        for c in clients:
            c["open"] = False
    for c in clients:
        c["ws"].transport.abort()  # TCP close, no close frame
    return 200, {"dropped": len(clients)}


async def close_clients(f, code, reason):
    if not (code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999):
        return 400, {"error": "close code %d cannot be sent on the wire" % code}
    with LOCK:
        clients = open_clients(f)
        for c in clients:
            c["open"] = False
    await asyncio.gather(*(c["ws"].close(code, reason) for c in clients))
    return 200, {"closed": len(clients)}


def make_ws_server(f):
    import websockets

    class Protocol(websockets.WebSocketServerProtocol):
        async def read_frame(self, max_size):
            frame = await super().read_frame(max_size)
            if frame.opcode == websockets.frames.Opcode.PING:
                with LOCK:
                    f.ws_pings += 1
            return frame

    def query_of(path):
        url = urllib.parse.urlsplit(path)
        return url.path, {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}

    async def process_request(path, headers):
        route, q = query_of(path)
        with LOCK:
            good = route == "/ws" and q.get("device_id") in f.devices \
                and q.get("service_id") == str(SERVICE_ID)
            if not good:
                f.rejected += 1
        if not good:
            # oapi-sdk-go reads Handshake-Status/Handshake-Msg on a refused upgrade.
            return (http.HTTPStatus.FORBIDDEN,
                    [("Content-Type", "text/plain"), ("Handshake-Status", "514"),
                     ("Handshake-Msg", "invalid device_id or service_id")], b"forbidden\n")
        return None

    async def on_frame(client, message):
        ws = client["ws"]
        if isinstance(message, str):
            with LOCK:
                f.frames.append({"error": "text message", "text": message})
                f.problem("a text WebSocket message (frames are binary)", text=message[:200])
            return
        try:
            frame = frame_decode(message)
        except (ValueError, UnicodeDecodeError) as exc:
            with LOCK:
                f.frames.append({"error": "undecodable frame: %s" % exc, "hex": message[:64].hex()})
                f.problem("an undecodable frame: %s" % exc, hex=message[:64].hex())
            return
        headers = dict(frame["headers"])
        record = dict(frame, headers=headers,
                      payload=(frame["payload"] or b"").decode("utf-8", "replace"))
        reply = None
        with LOCK:
            f.frames.append(record)
            if frame["service"] != SERVICE_ID:
                f.problem("a frame for service %s, not the URL's service_id %d"
                          % (frame["service"], SERVICE_ID), frame=record)
            if frame["method"] == 0 and headers.get("type") == "ping":
                f.pings += 1
                f.pongs.append({"t": time.monotonic(), "PingInterval": f.config["PingInterval"]})
                reply = frame_encode({"seq_id": 0, "log_id": 0, "service": frame["service"],
                                      "method": 0, "headers": [("type", "pong")],
                                      "payload": json.dumps(f.config).encode()})
            elif frame["method"] == 1:
                ack = {"seq_id": frame["seq_id"], "log_id": frame["log_id"],
                       "service": frame["service"], "headers": headers,
                       "device_id": client["device_id"],
                       "message_id": headers.get("message_id"), "biz_rt": headers.get("biz_rt")}
                try:
                    ack["payload"] = json.loads(record["payload"])
                    data = ack["payload"].get("data") if isinstance(ack["payload"], dict) else None
                    if isinstance(data, str):  # base64(JSON response), e.g. a card answer
                        ack["data_json"] = json.loads(base64.b64decode(data))
                except (ValueError, TypeError):
                    ack.setdefault("payload", record["payload"])
                    f.problem("an ack whose payload or data is not JSON", ack=ack)
                f.acks.append(ack)
                check_ack(client, frame, ack)
            else:
                f.problem("a frame of method %s, type %r: the client sends pings and acks only"
                          % (frame["method"], headers.get("type")), frame=record)
        if reply:
            await ws.send(reply)

    def check_ack(client, frame, ack):
        """An ack answers one pushed frame (the one that completed its
        message), on its connection, once, echoing seq_id and log_id, with
        biz_rt and {"code": int, "headers", "data": null | base64 JSON}."""
        pushes = f.pending.get((client["device_id"], ack["message_id"]), [])
        match = [p for p in pushes if (frame["seq_id"], frame["log_id"]) in p]
        if not match:
            f.problem("an ack for no frame pushed on this connection (or acked twice)", ack=ack,
                      pushed=pushes)
        else:
            pushes.remove(match[0])  # one ack settles the push, every part of it
        if not (ack["biz_rt"] or "").isdigit():
            f.problem("an ack without a numeric biz_rt header", ack=ack)
        payload = ack.get("payload")
        if not isinstance(payload, dict) or not isinstance(payload.get("code"), int) \
                or isinstance(payload.get("code"), bool) \
                or not (payload.get("data") is None or isinstance(payload.get("data"), str)):
            f.problem("an ack payload that is not {code: int, data: null or base64}", ack=ack)

    async def handler(ws):
        _, q = query_of(ws.path)
        client = {"ws": ws, "device_id": q.get("device_id"), "open": True}
        with LOCK:
            record = {"n": f.next("connection"), "device_id": client["device_id"],
                      "opened_at": time.monotonic(), "closed_at": None, "close_code": None,
                      "close_reason": None, "closed_by": None}
            f.history.append(record)
            f.clients.append(client)
            f.connects += 1
        try:
            async for message in ws:
                await on_frame(client, message)
        except websockets.ConnectionClosed:
            pass
        finally:
            # The iteration ends when a Close frame came (and was echoed) or
            # the TCP connection ended: the connection is gone from then on.
            with LOCK:
                client["open"] = False
                f.clients = [c for c in f.clients if c["open"]]  # keep the list short
                record["closed_at"] = time.monotonic()
            await ws.wait_closed()  # the close code is known once the TCP connection ended
            with LOCK:
                record["close_code"] = ws.close_code
                record["close_reason"] = ws.close_reason
                # close_rcvd_then_sent: True when the client's Close frame
                # came first, False when the fake's went first, None when
                # no closing handshake happened.
                first = ws.close_rcvd_then_sent
                record["closed_by"] = None if first is None else ("client" if first else "server")

    return websockets.serve(handler, "127.0.0.1", 0, create_protocol=Protocol,
                            process_request=process_request, max_size=None,
                            ping_interval=None, close_timeout=2)


def main():
    p = argparse.ArgumentParser(description="fake Feishu open platform")
    p.add_argument("--app-id", default="cli_test")
    p.add_argument("--app-secret", default="sec_test")
    p.add_argument("--token-expire", type=int, default=7200)
    p.add_argument("--ping-interval", type=int, default=120)
    p.add_argument("--endpoint-code", type=int, default=0)
    p.add_argument("--bot-open-id", default="ou_bot")
    args = p.parse_args()
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
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    print("PORT %d" % httpd.server_address[1], flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main()
