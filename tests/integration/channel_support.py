"""What the channel suites (test_feishu.py, test_dingtalk.py) share: polling
with a deadline, the fake OpenAI-compatible model behind openai.so, YAML
values for generated configs, and /metrics parsing."""
import json
import os
import re
import sys
import textwrap
import time

from harness import DEADLINE, SOURCE_DIR, FakeProcess, get, post_json

FAKES = os.path.join(SOURCE_DIR, "tests", "fakes")


def wait_for(predicate, timeout=DEADLINE, what="a condition"):
    """Polls `predicate` until it returns something true; returns that."""
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(0.02)


class FakeOpenAI(FakeProcess):
    def __init__(self):
        super().__init__([sys.executable, os.path.join(FAKES, "fake_openai.py")])
        self.base = "http://127.0.0.1:%d" % self.port

    def script(self, *steps):
        assert post_json(self.port, "/control", {"script": list(steps)})[0] == 200

    def reset(self):
        assert post_json(self.port, "/reset", {})[0] == 200

    def instance_yaml(self, name="gpt"):
        """An openai.so instance pointed at this fake (no retries), indented
        for plugins.instances."""
        return textwrap.indent(textwrap.dedent("""\
            - name: {name}
              plugin: openai.so
              config:
                endpoint: {base}/v1
                model: fake-model
                retries: 0
        """).format(name=name, base=self.base), "    ")

    def requests(self):
        return json.loads(get(self.port, "/requests")[1])


HELD_BACK = re.compile(r"\(and (\d+) more like it since the last such line\)")
# A cause that went quiet: its count, written a second after its last line.
FLUSHED = re.compile(r"\] (\d+) more like this were held back, none since: ")


def refusals_accounted(log, marker="refused a callback"):
    """Refusals the log stands for: each line written for one, plus the
    count that a later line of the same cause says was held back (warnings
    that can repeat per request are written at most once a second per
    cause)."""
    total = 0
    for line in log.splitlines():
        if marker in line:
            flushed = FLUSHED.search(line)
            if flushed:
                total += int(flushed.group(1))
                continue
            m = HELD_BACK.search(line)
            total += 1 + (int(m.group(1)) if m else 0)
    return total


def check_refusals_logged(test, cases, send, log, flood=30):
    """Sends every case (name, cause, expected status, ...) through
    `send(case) -> status`, then `flood` more of the first case as fast as
    it goes: that flood may write at most a line a second. Once the
    throttle's second has passed, one case per cause goes again, so every
    held-back count is written out, and every refusal must be accounted for
    by `log()` exactly."""
    def refusal_lines():
        return [l for l in log().splitlines() if "refused a callback" in l]

    for case in cases:
        with test.subTest(case[0]):
            test.assertEqual(send(case), case[2], case[0])
    wait_for(lambda: len(refusal_lines()) >= 1, DEADLINE, "a refusal in the log")
    # The first case's reason, as its line (the first one written) says it:
    # the flood is counted by that reason alone, so the other causes' lines,
    # which the log's own thread may write later, do not count.
    reason = HELD_BACK.sub("", refusal_lines()[0].split(": ", 2)[-1]).strip()

    def lines():
        return len([l for l in refusal_lines() if reason in l])

    before = lines()
    started = time.monotonic()
    for _ in range(flood):
        test.assertEqual(send(cases[0]), cases[0][2])
    # A held-back count is written with the cause's next line once its
    # second has passed (the throttle has no timer): let the window pass
    # (a lower bound on time, which a slow machine only lengthens), then
    # one more refusal per cause carries each count.
    time.sleep(1.1)
    firsts = list({case[1]: case for case in cases}.values())
    for case in firsts:
        test.assertEqual(send(case), case[2], case[0])
    expected = len(cases) + flood + len(firsts)
    # Every refusal is accounted for once the held-back counts are written:
    # no line of this cause can come after that, so the count is final.
    wait_for(lambda: refusals_accounted(log()) >= expected, DEADLINE, "every refusal in the log")
    span = time.monotonic() - started
    test.assertEqual(refusals_accounted(log()), expected, log())
    # At most a line a second for the cause, the first at once.
    test.assertLessEqual(lines() - before, int(span) + 2, log())
    return expected


def yaml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a YAML double-quoted scalar
    return str(value)


def parse_metrics(text):
    """Prometheus text -> [(name, {label: value}, float)]."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)', line)
        assert m, "unparsable metrics line: %r" % line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def with_durable_queue(config, redis_socket, partitions=2, lease_ms=1000, max_deliveries=3):
    """`config` (a channel test's, on memory.so) with redis.so on
    `redis_socket` as the cache and the durable queue (router.queue)."""
    memory = "    - name: memory\n      plugin: memory.so\n"
    assert memory in config and "  cache: memory\n" in config, config
    config = config.replace(memory, "    - name: shared\n      plugin: redis.so\n      config:\n"
                                    "        unixSocket: %s\n" % redis_socket)
    config = config.replace("  cache: memory\n", "  cache: shared\n  queue: shared\n")
    return config + ("queue:\n  partitions: %d\n  leaseMs: %d\n  maxDeliveries: %d\n"
                     % (partitions, lease_ms, max_deliveries))
