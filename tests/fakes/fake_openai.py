#!/usr/bin/env python3
"""A fake OpenAI-compatible Chat Completions server for chatgate's tests.

Written from the public API reference (POST /v1/chat/completions, JSON or
server-sent events with `data: {...}` chunks ending in `data: [DONE]`),
independently of chatgate's code. Standard library only.

    fake_openai.py [--port N] [--tls CERT KEY] [--ignore-stream]
                                                 prints "PORT <n>" once listening

The answer is "reply to: <last user message> (<n> messages)", so a test sees
the context that was sent. Tests steer the next requests with

    POST /control   {"script": ["status:429:1", "status:500", "ok"]}

one entry per coming request (then "ok" again): "ok", "delay:MS",
"status:CODE[:RETRY_AFTER_SECONDS]", "drop" (close mid-answer),
"trickle:MS" (stream one word every MS), "hang" (never answer),
"json[:CONTENT_TYPE]" (one whole chat.completion JSON body even when
`"stream": true` was asked, as some compatible servers and proxies do;
Content-Type "application/json; charset=utf-8" unless given, e.g.
"json:text/event-stream" for a mislabelled one). --ignore-stream makes
"json" every request's default.
GET /requests returns every request seen: path, headers and body; GET
/aborted how many streams the client closed before their end.
POST /reset forgets the script and the requests.
"""
import json
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"script": [], "requests": [], "aborted": 0}
LOCK = threading.Lock()
DEFAULT = "json" if "--ignore-stream" in sys.argv else "ok"


def next_behaviour():
    with LOCK:
        return STATE["script"].pop(0) if STATE["script"] else DEFAULT


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet
        pass

    def send_json(self, code, obj, extra=None):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        if self.path == "/requests":
            with LOCK:
                self.send_json(200, STATE["requests"])
            return
        if self.path == "/aborted":
            # Streams the client closed before their end.
            with LOCK:
                self.send_json(200, {"aborted": STATE["aborted"]})
            return
        self.send_json(404, {"error": {"message": "not found"}})

    def do_POST(self):
        raw = self.read_body()
        if self.path == "/control":
            with LOCK:
                STATE["script"] = list(json.loads(raw)["script"])
            self.send_json(200, {"ok": True})
            return
        if self.path == "/reset":
            with LOCK:
                STATE["script"] = []
                STATE["requests"] = []
                STATE["aborted"] = 0
            self.send_json(200, {"ok": True})
            return
        if not self.path.endswith("/chat/completions"):
            self.send_json(404, {"error": {"message": "unknown path " + self.path}})
            return
        try:
            req = json.loads(raw)
        except ValueError:
            self.send_json(400, {"error": {"message": "bad json"}})
            return
        with LOCK:
            STATE["requests"].append({"path": self.path, "headers": dict(self.headers.items()),
                                      "body": req})
        behaviour = next_behaviour()
        kind, _, arg = behaviour.partition(":")
        if kind == "hang":
            time.sleep(3600)
            return
        if kind == "delay":
            time.sleep(int(arg) / 1000.0)
        if kind == "status":
            code, _, retry_after = arg.partition(":")
            extra = {"Retry-After": retry_after} if retry_after else None
            message = "fake error %s" % code
            if code == "leak":
                # A sloppy server that quotes the whole key back, in the
                # body and a header: chatgate must not pass it on.
                key = self.headers.get("Authorization", "")
                self.send_json(401, {"error": {"message": "bad key " + key, "type": "fake"}},
                               {"X-Debug-Auth": key})
                return
            if code == "401":
                # As OpenAI does: the message quotes the key's ends.
                key = self.headers.get("Authorization", "").replace("Bearer ", "")
                message = "Incorrect API key provided: %s***%s" % (key[:6], key[-4:])
            self.send_json(int(code), {"error": {"message": message, "type": "fake"}}, extra)
            return
        messages = req.get("messages", [])
        last_user = [m for m in messages if m.get("role") == "user"][-1]["content"]
        answer = "reply to: %s (%d messages)" % (last_user, len(messages))
        if req.get("stream") and kind != "json":
            try:
                self.stream(answer, kind, arg)
            except (BrokenPipeError, ConnectionResetError):
                with LOCK:
                    STATE["aborted"] += 1
                self.close_connection = True
            return
        if kind == "drop":
            self.close_hard()
            return
        completion = {
            "id": "chatcmpl-fake", "object": "chat.completion", "model": req.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        if kind == "json":
            # A server that ignores "stream": true: the whole completion at once.
            data = json.dumps(completion).encode()
            self.send_response(200)
            self.send_header("Content-Type", arg or "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_json(200, completion)

    def stream(self, answer, kind, arg):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        words = answer.split(" ")
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            event = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            self.chunk(b"data: " + json.dumps(event).encode() + b"\n\n")
            if kind == "drop" and i == 1:
                self.close_hard()
                return
            if kind == "trickle":
                time.sleep(int(arg) / 1000.0)
        final = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        self.chunk(b"data: " + json.dumps(final).encode() + b"\n\n")
        self.chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def close_hard(self):
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that hangs up mid-answer is a test case, not a fault.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def main():
    port = 0
    if "--port" in sys.argv:
        port = int(sys.argv[sys.argv.index("--port") + 1])
    server = Server(("127.0.0.1", port), Handler)
    if "--tls" in sys.argv:
        # --tls CERT KEY: HTTPS with the test's own certificate.
        i = sys.argv.index("--tls")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[i + 1], sys.argv[i + 2])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
