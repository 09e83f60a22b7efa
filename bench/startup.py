#!/usr/bin/env python3
"""Measures start-to-ready: from spawning chatgate to its first /healthz
answer on a fresh connection. Prints the median of N runs in ms."""
import os
import socket
import statistics
import subprocess
import sys
import time

binary, config, port, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
req = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
samples = []
for _ in range(runs):
    t0 = time.perf_counter()
    p = subprocess.Popen([binary, "--config", config], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            s.sendall(req)
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                s.close()
                break
            s.close()
        except OSError:
            pass
        if time.perf_counter() - t0 > 5:
            p.kill()
            sys.exit("chatgate did not become ready in 5 s")
    samples.append((time.perf_counter() - t0) * 1000)
    p.terminate()
    p.wait()
print("%.1f" % statistics.median(samples))
