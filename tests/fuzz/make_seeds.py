#!/usr/bin/env python3
"""Writes the seed corpora in tests/fuzz/corpus/ (run from anywhere; the
files are committed, this script is how they were made). Inputs are the
shapes the integration tests send, written here by hand or with the
standard library, not with chatgate's code."""
import base64
import hashlib
import json
import os
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# --- HTTP -------------------------------------------------------------------
write("fuzz_http", "get", "GET /h HTTP/1.1\r\nHost: x\r\n\r\n")
write("fuzz_http", "pipelined", "GET /h HTTP/1.1\r\nHost: x\r\n\r\n"
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
      "GET /stream/a?b=c HTTP/1.1\r\nHost: x\r\n\r\n")
write("fuzz_http", "chunked", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n0\r\n\r\n")
write("fuzz_http", "xff", "GET /private/x HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.1.2.3, 127.0.0.1\r\n\r\n"
      "GET /h HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: [2001:db8::1]:443\r\n\r\n")
write("fuzz_http", "cors", "OPTIONS /echo HTTP/1.1\r\nHost: x\r\nOrigin: https://chat.example\r\n"
      "Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\n\r\n")
write("fuzz_http", "http10", "GET /h HTTP/1.0\r\n\r\n")
write("fuzz_http", "expect", "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
      "Content-Length: 3\r\n\r\nabc")
write("fuzz_http", "smuggle", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
write("fuzz_http", "head", "HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")

# --- /api/chat --------------------------------------------------------------
for i, body in enumerate([
    {"userId": "alice", "query": "hello"},
    {"userId": "alice", "query": "hi", "conversationId": "c1", "messageId": "m1", "stream": True},
    {"userId": "u", "query": "q", "conversationId": None, "stream": None},
    {"userId": 5, "query": "q"},
    [1, 2, 3],
]):
    write("fuzz_chat_request", "body%d" % i, json.dumps(body))
write("fuzz_chat_request", "utf8", "{\"userId\":\"\\u4f60\",\"query\":\"\xe4\xbd\xa0\xe5\xa5\xbd\"}")

# --- durable queue entries (router/queue_codec.h: "cgq1" then <len>:<bytes>) --
def netfields(*fields):
    out = b""
    for f in fields:
        f = f if isinstance(f, bytes) else str(f).encode()
        out += b"%d:" % len(f) + f
    return out


entry = b"cgq1" + netfields("fs", 2, 1, 0, 1764000000123, "om_1", "oc_1", "ou_1", "Name",
                            "hi\nthere", "om_1|t", "ev_1", 1, 1, "https://img", "k", "image/png",
                            "a.png")
write("fuzz_queue_message", "entry", entry)
write("fuzz_queue_message", "empty", b"cgq1" + netfields("api", 0, 0, 0, 0, "", "", "", "", "", "",
                                                        "", 0))
write("fuzz_queue_message", "truncated", entry[:-3])
write("fuzz_queue_message", "huge_length", b"cgq1" + b"99999999999999999999:x")
write("fuzz_queue_message", "later_version_tail", entry + netfields("new field"))

# --- config -----------------------------------------------------------------
for name, path in [("default", "config/chatgate.yaml"), ("docker", "packaging/docker/chatgate.yaml")]:
    with open(os.path.join(ROOT, path)) as f:
        write("fuzz_config", name, f.read())
write("fuzz_config", "access", """listeners:
  api:
    address: ::1
    port: ${FUZZ_SET}
    allowFrom: [10.0.0.0/8, '2001:db8::/32']
    trustedProxies: [127.0.0.1]
    routes: [{path: /webhook/, allowFrom: [192.0.2.0/24]}]
    requestRatePerIp: {perSecond: 1.5, burst: 3}
    tls: {certFile: /a.pem, keyFile: /a.key, minVersion: '1.3'}
plugins:
  instances: [{name: echo, plugin: echo.so}, {name: m, plugin: memory.so}]
router:
  model: echo
  cache: m
  rateLimits:
    perSender: {perSecond: 0.5, burst: 5}
    channels: {api: {perConversation: {perSecond: 1}}}
""")

# --- WebSocket frames (server to client: unmasked) -------------------------
def ws(opcode, payload, fin=True):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n < 65536:
        head += bytes([126]) + struct.pack(">H", n)
    else:
        head += bytes([127]) + struct.pack(">Q", n)
    return head + payload

write("fuzz_ws_frame", "text", b"\x07" + ws(1, b"hello"))
write("fuzz_ws_frame", "fragments", b"\x03" + ws(1, b"hel", False) + ws(9, b"p") + ws(0, b"lo"))
write("fuzz_ws_frame", "close", b"\x10" + ws(8, struct.pack(">H", 1000) + b"bye"))
write("fuzz_ws_frame", "binary16", b"\x1f" + ws(2, b"x" * 300))

# --- SSE --------------------------------------------------------------------
def delta(text):
    return "data: " + json.dumps({"choices": [{"delta": {"content": text}}]}) + "\n\n"

write("fuzz_sse", "stream", b"\x05" + (delta("Hel") + delta("lo") + "data: [DONE]\n\n").encode())
write("fuzz_sse", "crlf", b"\x01" + (": keep-alive\r\n" + delta("x").replace("\n", "\r\n")).encode())
write("fuzz_sse", "roles", b"\x20" + ("data: " + json.dumps({"choices": [{"delta": {"role": "assistant"}}, {"delta": {"content": ""}}]}) + "\n").encode())

# --- Feishu -----------------------------------------------------------------
message = {"schema": "2.0", "header": {"event_id": "e1", "event_type": "im.message.receive_v1",
                                       "token": "vt", "create_time": "1700000000000"},
           "event": {"sender": {"sender_id": {"open_id": "ou_u"}, "sender_type": "user"},
                     "message": {"message_id": "om_1", "chat_id": "oc_1", "chat_type": "group",
                                 "message_type": "text", "content": json.dumps({"text": "@_user_1 hi"}),
                                 "mentions": [{"key": "@_user_1", "id": {"open_id": "ou_bot"},
                                               "name": "Bot"}]}}}
post = json.loads(json.dumps(message))
post["event"]["message"]["message_type"] = "post"
post["event"]["message"]["content"] = json.dumps({"zh_cn": {"title": "T", "content": [[{"tag": "text", "text": "a"}, {"tag": "at", "user_id": "@_user_1"}, {"tag": "img", "image_key": "img_1"}]]}})
card = {"schema": "2.0", "header": {"event_id": "e2", "event_type": "card.action.trigger", "token": "vt"},
        "event": {"operator": {"open_id": "ou_u"}, "action": {"value": {"value": "yes"}},
                  "context": {"open_chat_id": "oc_1", "open_message_id": "om_1"}}}
v1 = {"uuid": "u1", "token": "vt", "type": "event_callback", "event": {"type": "message", "text": "hi"}}
verify = {"type": "url_verification", "token": "vt", "challenge": "abc"}
for name, ev in [("message", message), ("post", post), ("card", card), ("v1", v1), ("verify", verify)]:
    write("fuzz_feishu_event", name, json.dumps(ev))


def feishu_encrypt(key, plain):
    k = hashlib.sha256(key.encode()).digest()
    iv = b"0123456789abcdef"
    data = plain.encode()
    pad = 16 - len(data) % 16
    data += bytes([pad]) * pad
    enc = Cipher(algorithms.AES(k), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + enc.update(data) + enc.finalize()).decode()

write("fuzz_feishu_event", "encrypted",
      json.dumps({"encrypt": feishu_encrypt("fuzz-encrypt-key", json.dumps(message))}))


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def field(num, wire, value):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(value)
    return key + varint(len(value)) + value


def frame(headers, payload, method=1):
    out = field(1, 0, 7) + field(2, 0, 9) + field(3, 0, 1) + field(4, 0, method)
    for k, v in headers:
        out += field(5, 2, field(1, 2, k.encode()) + field(2, 2, v.encode()))
    return out + field(8, 2, payload)

write("fuzz_feishu_frame", "event", frame([("type", "event"), ("message_id", "m1"), ("sum", "1"),
                                           ("seq", "0")], json.dumps(message).encode()))
write("fuzz_feishu_frame", "part", frame([("type", "event"), ("message_id", "m2"), ("sum", "2"),
                                          ("seq", "1")], json.dumps(message).encode()[:40]))
write("fuzz_feishu_frame", "pong", frame([("type", "pong")], b'{"PingInterval":120}', method=0))

# --- DingTalk ---------------------------------------------------------------
robot = {"msgId": "msg1", "msgtype": "text", "text": {"content": "hi"}, "conversationId": "cid1",
         "conversationType": "2", "senderStaffId": "s1", "senderId": "$:x", "senderNick": "N",
         "robotCode": "ding1", "sessionWebhook": "http://127.0.0.1/session",
         "sessionWebhookExpiredTime": 1700000000000, "createAt": 1700000000000, "isInAtList": True}
rich = dict(robot, msgtype="richText", content={"richText": [{"text": "a"}, {"downloadCode": "d1", "type": "picture"}]})
write("fuzz_dingtalk", "robot", json.dumps(robot))
write("fuzz_dingtalk", "rich", json.dumps(rich))
for name, fr in [
    ("callback", {"specVersion": "1.0", "type": "CALLBACK", "headers": {"topic": "/v1.0/im/bot/messages/get", "messageId": "f1", "contentType": "application/json"}, "data": json.dumps(robot)}),
    ("ping", {"type": "SYSTEM", "headers": {"topic": "ping", "messageId": "p1"}, "data": "{\"opaque\":\"x\"}"}),
    ("disconnect", {"type": "SYSTEM", "headers": {"topic": "disconnect", "messageId": "d1"}}),
    ("event", {"type": "EVENT", "headers": {"topic": "x", "messageId": "e1"}, "data": "{}"}),
]:
    write("fuzz_dingtalk", name, json.dumps(fr))
print("seeds written")
