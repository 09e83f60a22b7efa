"""What the channel suites (test_feishu.py, test_dingtalk.py) share: polling
with a deadline, the fake OpenAI-compatible model behind openai.so, YAML
values for generated configs, and /metrics parsing."""
import json
import os
import re
import sys
import textwrap
import time

from harness import SOURCE_DIR, FakeProcess, get, post_json

FAKES = os.path.join(SOURCE_DIR, "tests", "fakes")


def wait_for(predicate, timeout=5.0, what="a condition"):
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
