#!/usr/bin/env python3
"""Heap allocations per request on chatgate's hot paths, counted with the
bench/malloc_count.c preload: N keep-alive requests after a warm-up, the
process's malloc/calloc/realloc total read before and after (SIGUSR2).

    bench/allocs.py BIN CONFIG PORT PRELOAD_SO [N]
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

binary, config, port, preload = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
n = int(sys.argv[5]) if len(sys.argv) > 5 else 2000

log = tempfile.NamedTemporaryFile(prefix="allocs-", suffix=".log", delete=False)
proc = subprocess.Popen([binary, "--config", config], stdout=log, stderr=log,
                        env=dict(os.environ, LD_PRELOAD=preload))


def read_log():
    with open(log.name, "rb") as f:
        return f.read().decode("utf-8", "replace")


def total():
    before = len(re.findall(r"MALLOC_COUNT (\d+)", read_log()))
    proc.send_signal(signal.SIGUSR2)
    for _ in range(200):
        counts = re.findall(r"MALLOC_COUNT (\d+)", read_log())
        if len(counts) > before:
            return int(counts[-1])
        time.sleep(0.01)
    sys.exit("no MALLOC_COUNT line from chatgate")


def read_answer(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, rest = buf.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(rest) < length:
        rest += s.recv(65536)


def run(label, make_request, count):
    s = socket.create_connection(("127.0.0.1", port))
    for i in range(200):  # warm-up: pools, spare jobs, metric series
        s.sendall(make_request(i))
        read_answer(s)
    time.sleep(0.1)
    start = total()
    for i in range(count):
        s.sendall(make_request(i))
        read_answer(s)
    time.sleep(0.1)
    end = total()
    s.close()
    print("%-40s %6.1f allocations/request" % (label, (end - start) / count))


def chat(user_fn):
    def make(i):
        body = b'{"userId":"%s","query":"hello from the benchmark"}' % user_fn(i)
        return (b"POST /api/chat HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body)) + body
    return make


try:
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.01)
    run("GET /healthz (keep-alive)", lambda i: b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n", n)
    # Context is bounded by contextTurns, so after warm-up each turn stores
    # a full context: the steady state of a long conversation.
    run("POST /api/chat, one conversation", chat(lambda i: b"user-1"), n)
    run("POST /api/chat, 10000 conversations", chat(lambda i: b"user-%d" % (i % 10000)), n)
finally:
    proc.terminate()
    proc.wait()
    os.unlink(log.name)
