#!/usr/bin/env python3
"""What an upgrade costs the chat API's users (docs/benchmarks.md, "Upgrade
handover"): the p99 latency of a steady load with and without handovers,
and the longest gap between two answers the load generator saw.

    python3 bench/upgrade.py [--rate 200] [--seconds 12] [--upgrades 3]

Starts build/chatgate on loopback (echo backend, memory cache), then runs
the same open-loop load twice: once undisturbed, once with --upgrades
SIGUSR2 handovers spread over the run (to the same binary: what is measured
is the handover, not a new version's speed). The load: --rate requests a
second in all, four fifths over keep-alive connections (one thread each,
paced at a fixed schedule, so a slow answer shows as latency, not as fewer
requests) and one fifth on a new connection each. Any failed request is
counted and printed. Standard library only; shares no code with chatgate.
"""
import argparse
import ctypes
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("CHATGATE_BIN", os.path.join(ROOT, "build", "chatgate"))
PLUGINS = os.environ.get("CHATGATE_PLUGIN_DIR", os.path.join(ROOT, "build", "plugins"))
CONFIG = """logging: {level: info}
listeners:
  api: {address: 127.0.0.1, port: 0, maxConnections: 10000}
  admin: {address: 127.0.0.1, port: 0}
plugins:
  dir: %s
  instances:
    - {name: echo, plugin: echo.so}
    - {name: memory, plugin: memory.so}
router: {model: echo, cache: memory}
""" % PLUGINS
READY = re.compile(r"ready in [0-9.]+ ms \(pid ([0-9]+)\): api on http://[^ ]*:([0-9]+), "
                   r"admin on http://[^ ]*:([0-9]+)")


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


class Load:
    def __init__(self, port, rate, seconds):
        self.port = port
        self.seconds = seconds
        self.results = []  # (start, end, ok)
        self.lock = threading.Lock()
        threads = 5
        self.every = threads / rate
        self.threads = [threading.Thread(target=self.run, args=(i, i == threads - 1))
                        for i in range(threads)]

    def run(self, i, fresh):
        conn = None
        start_at = time.monotonic() + i * self.every / 5
        end_at = start_at + self.seconds
        n = 0
        while True:
            at = start_at + n * self.every
            if at > end_at:
                break
            time.sleep(max(0.0, at - time.monotonic()))
            n += 1
            if conn is None or fresh:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            ok = True
            try:
                conn.request("POST", "/api/chat", body=json.dumps(
                    {"userId": "u%d-%d" % (i, n % 20), "query": "hello %d" % n}),
                    headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                ok = resp.status == 200 and b"answer" in resp.read()
            except (OSError, http.client.HTTPException):
                ok = False
            end = time.monotonic()
            # Latency from the scheduled time: a request that had to wait
            # for the one before it counts that wait (no coordinated omission).
            with self.lock:
                self.results.append((at, end, ok))
            if fresh or not ok or conn.sock is None:
                conn.close()
                conn = None

    def go(self):
        for t in self.threads:
            t.start()
        return self

    def wait(self):
        for t in self.threads:
            t.join()
        return self.results


def summary(name, results):
    ok = [r for r in results if r[2]]
    latencies = [(r[1] - r[0]) * 1000 for r in ok]
    ends = sorted(r[1] for r in ok)
    gap = max(b - a for a, b in zip(ends, ends[1:])) * 1000
    print("%-16s %6d requests, %d failed; latency ms p50 %.2f p99 %.2f p99.9 %.2f max %.2f; "
          "longest gap between answers %.1f ms"
          % (name, len(results), len(results) - len(ok), statistics.median(latencies),
             percentile(latencies, 0.99), percentile(latencies, 0.999), max(latencies), gap))
    return percentile(latencies, 0.99), gap


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--seconds", type=float, default=12)
    ap.add_argument("--upgrades", type=int, default=3)
    args = ap.parse_args()
    # The processes a handover starts are orphaned when the old one exits:
    # as a child subreaper this script reaps them and can stop the last.
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
    tmp = tempfile.mkdtemp(prefix="cg-bench-upgrade-")
    config = os.path.join(tmp, "chatgate.yaml")
    with open(config, "w") as f:
        f.write(CONFIG)
    log_path = os.path.join(tmp, "log")
    log = open(log_path, "wb")
    proc = subprocess.Popen([BIN, "--config", config], stdout=log, stderr=subprocess.STDOUT)
    pid = None
    while pid is None:
        m = READY.search(open(log_path).read())
        if m:
            pid, port = int(m.group(1)), int(m.group(2))
        elif proc.poll() is not None:
            sys.exit("chatgate did not start:\n" + open(log_path).read())
        time.sleep(0.02)
    print("chatgate %s, %.0f requests/s for %.0f s per run" % (BIN, args.rate, args.seconds))
    base = summary("no upgrade", Load(port, args.rate, args.seconds).go().wait())
    load = Load(port, args.rate, args.seconds).go()
    for k in range(args.upgrades):
        time.sleep(args.seconds / (args.upgrades + 1))
        os.kill(pid, signal.SIGUSR2)
        deadline = time.time() + 30
        while time.time() < deadline:
            took = re.findall(r"pid ([0-9]+) took over", open(log_path).read())
            if len(took) > k:
                pid = int(took[k])
                break
            time.sleep(0.01)
        else:
            sys.exit("no handover:\n" + open(log_path).read()[-3000:])
    results = load.wait()
    upgraded = summary("%d upgrades" % args.upgrades, results)
    print("added p99 during upgrades: %.2f ms; longest gap %.1f ms"
          % (upgraded[0] - base[0], upgraded[1]))
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                time.sleep(0.05)
        except ChildProcessError:
            break
    failed = sum(1 for r in results if not r[2])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
