#!/usr/bin/env python3
"""A minimal forward HTTP proxy for chatgate's tests: plain http:// targets
in absolute form (RFC 9112 section 3.2.2), and CONNECT tunnels for https://
targets (RFC 9110 section 9.3.6). Counts what it forwarded and tunnelled:
GET /proxy-count and GET /tunnel-count on the proxy itself. Standard library
only.   fake_proxy.py    prints "PORT <n>" once listening"""
import http.client
import select
import socket
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNT = {"forwarded": 0, "tunnels": 0}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def forward(self):
        if self.path in ("/proxy-count", "/tunnel-count"):
            body = str(COUNT["forwarded" if self.path == "/proxy-count" else "tunnels"]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        url = urllib.parse.urlsplit(self.path)
        if url.scheme != "http":
            self.send_error(400, "absolute http:// URL expected")
            return
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n) if n else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("proxy-connection", "connection", "host")}
        upstream = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=10)
        upstream.request(self.command, url.path + ("?" + url.query if url.query else ""),
                         body=data, headers=headers)
        resp = upstream.getresponse()
        payload = resp.read()
        with LOCK:
            COUNT["forwarded"] += 1
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        upstream.close()

    do_GET = forward
    do_POST = forward

    def do_CONNECT(self):
        host, _, port = self.path.rpartition(":")
        try:
            upstream = socket.create_connection((host, int(port)), timeout=10)
        except (OSError, ValueError):
            self.send_error(502, "cannot reach " + self.path)
            return
        with LOCK:
            COUNT["tunnels"] += 1
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        # Bytes both ways until either side closes; the TLS inside is not ours.
        client = self.connection
        try:
            while True:
                ready, _, _ = select.select([client, upstream], [], [], 30)
                if not ready:
                    break
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (upstream if s is client else client).sendall(data)
        except OSError:
            pass
        finally:
            upstream.close()
            self.close_connection = True


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
