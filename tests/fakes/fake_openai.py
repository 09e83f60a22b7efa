#!/usr/bin/env python3
"""A fake OpenAI-compatible Chat Completions server for chatgate's tests.

Written from the public API reference (POST /v1/chat/completions, JSON or
server-sent events with `data: {...}` chunks ending in `data: [DONE]`; errors
as {"error": {"message", "type", "param", "code"}}) and the server-sent
events format (WHATWG HTML, "Server-sent events"), independently of
chatgate's code. Standard library only.

    fake_openai.py [--port N] [--tls CERT KEY] [--ignore-stream]
                   [--key KEY] [--models NAME,NAME...] [--framing F,F...]
                                                 prints "PORT <n>" once listening

Like the real service it refuses what a real one would refuse, and records
each refusal as a problem (GET /problems) so a test can assert there was none:
  --key KEY     "Authorization: Bearer KEY" is required: 401 otherwise
                (code invalid_api_key; the message quotes the key's ends).
  --models L    the known model names: another gets 404 model_not_found.
  always        the body must be a JSON object (Content-Type
                application/json) with a model string and a non-empty
                messages list of {"role", "content"} objects, roles system /
                user / assistant, content strings, the last one the user's;
                known parameters only, of the right types: 400 otherwise.

The answer is "reply to: <last user message> (<n> messages)", so a test sees
the context that was sent. Tests steer the next requests with

    POST /control   {"script": ["status:429:1", "status:500", "ok"],
                     "framing": ["crlf", "split"]}

"script" has one entry per coming request (then the default, "ok"
unless set): "ok", "delay:MS", "delay:MIN-MAX" (a random delay in that
range), "status:CODE[:RETRY_AFTER_SECONDS]", "drop[:N]" (a stream: close
after N deltas, 2 when not given, 0 = after the first chunk, which has the
role and no text, as OpenAI's has; a JSON answer: close before it), "trickle:MS" (stream one word every MS), "hang" (never answer), "hold"
(answer once POST /release is called), "json[:CONTENT_TYPE]" (one whole
chat.completion JSON body even when `"stream": true` was asked, as some
compatible servers and proxies do; Content-Type "application/json;
charset=utf-8" unless given, e.g. "json:text/event-stream" for a mislabelled
one). --ignore-stream makes "json" every request's default.

"framing" (also --framing) shapes the event stream as real servers may:
  crlf       CR LF line ends instead of LF
  comments   `: keep-alive` comment lines before and inside the events
  split      each event cut into pieces, each its own write (TCP_NODELAY,
             a short pause between): one event across several reads
  coalesce   every event (and [DONE]) in one write
  multiline  each event's JSON spread over several `data:` lines
  nospace    `data:` without the space after the colon
  nofinalblank  the body ends after `data: [DONE]` and its line end,
             without the blank line that ends the event

"default" (POST /control {"default": "delay:50-200"}) is the behaviour
once the script is used up (a fleet test's steady model latency), and
"rules" ({"rules": [{"contains": "poison", "behaviour": "status:500"}]})
give every request whose last user message contains a text that
behaviour, before the script: a message that always fails.

GET /requests returns every request seen: path, headers and body; GET
/calls the same requests in short: [{"path", "text" (the last user
message), "t" (monotonic seconds at arrival)}], for counting the calls per
message when there are thousands; GET /aborted how many streams the client closed before their end; GET /problems
what the fake refused and why (POST /problems/take returns and forgets
them). POST /release lets the held requests answer. POST /reset forgets the script, the
framing (back to --framing), the requests, the count and the problems, and
releases held requests.
"""
import json
import random
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def arg_value(name, default=None):
    if name in sys.argv:
        return sys.argv[sys.argv.index(name) + 1]
    return default


DEFAULT = "json" if "--ignore-stream" in sys.argv else "ok"
KEY = arg_value("--key")
MODELS = [m for m in arg_value("--models", "").split(",") if m]
FRAMINGS = {"crlf", "comments", "split", "coalesce", "multiline", "nospace", "nofinalblank"}
DEFAULT_FRAMING = [f for f in arg_value("--framing", "").split(",") if f]
ROLES = ("system", "user", "assistant")
# The request parameters chatgate may send, and their JSON types (the real
# service refuses an unknown one: "Unrecognized request argument supplied").
PARAMS = {"model": (str,), "messages": (list,), "stream": (bool,), "temperature": (int, float),
          "max_tokens": (int,), "top_p": (int, float), "stream_options": (dict,),
          "user": (str,)}

STATE = {"script": [], "requests": [], "calls": [], "aborted": 0, "problems": [],
         "framing": list(DEFAULT_FRAMING), "release": threading.Event(),
         "default": DEFAULT, "rules": []}
LOCK = threading.Lock()


def next_behaviour(text):
    with LOCK:
        for rule in STATE["rules"]:
            if rule["contains"] in text:
                return rule["behaviour"]
        return STATE["script"].pop(0) if STATE["script"] else STATE["default"]


def error_body(message, type_, code=None, param=None):
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def check_messages(messages):
    """What is wrong with the messages list, or None."""
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty array"
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            return "messages[%d] is not an object" % i
        if set(m) != {"role", "content"}:
            return "messages[%d] has keys %s, expected role and content" % (i, sorted(m))
        if m["role"] not in ROLES:
            return "messages[%d].role %r is not one of %s" % (i, m["role"], ", ".join(ROLES))
        if not isinstance(m["content"], str):
            return "messages[%d].content is not a string" % i
        if m["role"] == "system" and i != 0:
            return "messages[%d] is a system message after the first" % i
    if messages[-1]["role"] != "user":
        return "the last message is not the user's"
    return None


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

    def refuse(self, code, problem, body):
        """Answers as the real service would, and records why."""
        with LOCK:
            STATE["problems"].append("%s %s: HTTP %d: %s" % (self.command, self.path, code, problem))
        self.send_json(code, body)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        if self.path == "/requests":
            with LOCK:
                self.send_json(200, STATE["requests"])
            return
        if self.path == "/calls":
            with LOCK:
                self.send_json(200, STATE["calls"])
            return
        if self.path == "/aborted":
            # Streams the client closed before their end.
            with LOCK:
                self.send_json(200, {"aborted": STATE["aborted"]})
            return
        if self.path == "/problems":
            with LOCK:
                self.send_json(200, STATE["problems"])
            return
        self.refuse(404, "unknown path", error_body("Unknown request URL: GET %s" % self.path,
                                                    "invalid_request_error", "unknown_url"))

    def do_POST(self):
        raw = self.read_body()
        if self.path == "/control":
            control = json.loads(raw)
            with LOCK:
                if "script" in control:
                    STATE["script"] = list(control["script"])
                if "framing" in control:
                    unknown = set(control["framing"]) - FRAMINGS
                    if unknown:
                        self.send_json(400, {"error": "unknown framing %s" % sorted(unknown)})
                        return
                    STATE["framing"] = list(control["framing"])
                if "default" in control:
                    STATE["default"] = control["default"]
                if "rules" in control:
                    STATE["rules"] = [{"contains": r["contains"], "behaviour": r["behaviour"]}
                                      for r in control["rules"]]
            self.send_json(200, {"ok": True})
            return
        if self.path == "/reset":
            with LOCK:
                STATE["script"] = []
                STATE["requests"] = []
                STATE["calls"] = []
                STATE["default"] = DEFAULT
                STATE["rules"] = []
                STATE["aborted"] = 0
                STATE["problems"] = []
                STATE["framing"] = list(DEFAULT_FRAMING)
                STATE["release"].set()
                STATE["release"] = threading.Event()
            self.send_json(200, {"ok": True})
            return
        if self.path == "/problems/take":
            # The problems so far, forgotten: a test that provoked them.
            with LOCK:
                problems, STATE["problems"] = STATE["problems"], []
            self.send_json(200, problems)
            return
        if self.path == "/release":
            with LOCK:
                STATE["release"].set()
            self.send_json(200, {"ok": True})
            return
        if not self.path.endswith("/chat/completions"):
            self.refuse(404, "unknown path", error_body(
                "Unknown request URL: POST %s" % self.path, "invalid_request_error", "unknown_url"))
            return
        req = self.checked_request(raw)
        if req is None:
            return
        text = req["messages"][-1]["content"]
        with LOCK:
            STATE["requests"].append({"path": self.path, "headers": dict(self.headers.items()),
                                      "body": req})
            STATE["calls"].append({"path": self.path, "text": text, "t": time.monotonic()})
            release = STATE["release"]
            framing = set(STATE["framing"])
        behaviour = next_behaviour(text)
        kind, _, arg = behaviour.partition(":")
        if kind == "hang":
            time.sleep(3600)
            return
        if kind == "hold":
            release.wait(120)
        if kind == "delay":
            low, _, high = arg.partition("-")
            time.sleep(random.uniform(int(low), int(high or low)) / 1000.0)
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
        messages = req["messages"]
        answer = "reply to: %s (%d messages)" % (messages[-1]["content"], len(messages))
        if req.get("stream") and kind != "json":
            try:
                self.stream(answer, kind, arg, framing)
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

    def checked_request(self, raw):
        """The request body, or None once it was refused as the real
        service would refuse it."""
        if KEY is not None:
            auth = self.headers.get("Authorization")
            if auth is None or not auth.startswith("Bearer "):
                self.refuse(401, "no Bearer API key", error_body(
                    "You didn't provide an API key. You need to provide your API key in an "
                    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                    "invalid_request_error"))
                return None
            given = auth[len("Bearer "):]
            if given != KEY:
                self.refuse(401, "wrong API key", error_body(
                    "Incorrect API key provided: %s***%s. You can find your API key at "
                    "https://platform.openai.com/account/api-keys." % (given[:6], given[-4:]),
                    "invalid_request_error", "invalid_api_key"))
                return None
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            self.refuse(400, "Content-Type %r" % content_type, error_body(
                "Invalid Content-Type header (%s), expected application/json." % content_type,
                "invalid_request_error"))
            return None
        try:
            req = json.loads(raw)
        except ValueError:
            req = None
        if not isinstance(req, dict):
            self.refuse(400, "the body is not a JSON object", error_body(
                "We could not parse the JSON body of your request.", "invalid_request_error"))
            return None
        for name, value in req.items():
            if name not in PARAMS:
                self.refuse(400, "unknown parameter %r" % name, error_body(
                    "Unrecognized request argument supplied: %s" % name, "invalid_request_error"))
                return None
            if not isinstance(value, PARAMS[name]) or (
                    isinstance(value, bool) and bool not in PARAMS[name]):
                self.refuse(400, "%s has the wrong type" % name, error_body(
                    "Invalid type for '%s'." % name, "invalid_request_error",
                    "invalid_type", name))
                return None
        if "model" not in req or not req["model"]:
            self.refuse(400, "no model", error_body(
                "you must provide a model parameter", "invalid_request_error"))
            return None
        if MODELS and req["model"] not in MODELS:
            self.refuse(404, "unknown model %r" % req["model"], error_body(
                "The model `%s` does not exist or you do not have access to it." % req["model"],
                "invalid_request_error", "model_not_found"))
            return None
        wrong = check_messages(req.get("messages"))
        if wrong:
            self.refuse(400, wrong, error_body(
                "Invalid 'messages': " + wrong, "invalid_request_error", None, "messages"))
            return None
        return req

    def stream(self, answer, kind, arg, framing):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        eol = b"\r\n" if "crlf" in framing else b"\n"
        field = b"data:" if "nospace" in framing else b"data: "

        def event(obj, last=False):
            """One event's bytes, as `framing` says."""
            if "multiline" in framing and not isinstance(obj, str):
                lines = json.dumps(obj, indent=1).encode().split(b"\n")
            else:
                lines = [obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()]
            out = b""
            if "comments" in framing:
                out += b": keep-alive" + eol
            for line in lines:
                out += field + line + eol
            return out if last and "nofinalblank" in framing else out + eol

        if "comments" in framing:
            self.chunk(b": connected" + eol + eol)
        drop_after = (int(arg) if arg else 2) if kind == "drop" else None
        # As OpenAI does, the first chunk gives the role and no text.
        pending = [event({"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                          "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                       "finish_reason": None}]})]
        if "coalesce" not in framing:
            self.write_events(pending, framing)
        words = answer.split(" ")
        for i, word in enumerate(words):
            if drop_after is not None and i == drop_after:
                self.write_events(pending, framing)
                self.close_hard()
                return
            piece = word if i == 0 else " " + word
            pending.append(event({"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                                  "choices": [{"index": 0, "delta": {"content": piece},
                                               "finish_reason": None}]}))
            if "coalesce" not in framing:
                self.write_events(pending, framing)
            if kind == "trickle":
                time.sleep(int(arg) / 1000.0)
        pending.append(event({"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                              "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        pending.append(event("[DONE]", last=True))
        self.write_events(pending, framing)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def write_events(self, pending, framing):
        """Writes the pending events (emptying the list): all in one write,
        or each cut in pieces written apart when `split`."""
        if not pending:
            return
        if "split" not in framing:
            self.chunk(b"".join(pending))
        else:
            for data in pending:
                # Cut inside the field name, after the colon, mid-JSON and
                # between the line end and the blank line.
                cuts = sorted({2, 6, len(data) // 2, len(data) - 1})
                start = 0
                for cut in cuts + [len(data)]:
                    if start < cut <= len(data):
                        self.chunk(data[start:cut])
                        time.sleep(0.005)
                        start = cut
        del pending[:]

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def close_hard(self):
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # several gateways opening connections at once

    def handle_error(self, request, client_address):
        # A client that hangs up mid-answer is a test case, not a fault.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class NoDelayHandler(Handler):
    def setup(self):
        super().setup()
        # Each write its own segment: `split` reaches the client in pieces.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def main():
    unknown = set(DEFAULT_FRAMING) - FRAMINGS
    if unknown:
        sys.exit("unknown framing %s" % sorted(unknown))
    port = int(arg_value("--port", "0"))
    server = Server(("127.0.0.1", port), NoDelayHandler)
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
