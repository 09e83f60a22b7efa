"""Every openai.so example in docs/model-backends.md passes --check-config,
which validates the schema and runs the plugin's own init."""
import os
import re
import subprocess
import tempfile
import textwrap
import unittest

from harness import BIN, PLUGIN_DIR, SOURCE_DIR

DOC = os.path.join(SOURCE_DIR, "docs", "model-backends.md")


def examples():
    with open(DOC) as f:
        text = f.read()
    return re.findall(r"```yaml\n(.*?)```", text, re.S)


class ModelExamplesTest(unittest.TestCase):
    def test_there_is_an_example_per_service(self):
        names = [re.search(r"- name: (\S+)", e).group(1) for e in examples()]
        self.assertEqual(names, ["gpt", "deepseek", "qwen", "moonshot", "zhipu", "vllm",
                                 "ollama", "llamacpp"])

    def test_each_example_passes_check_config(self):
        self.assertEqual(len(examples()), 8)  # none skipped unseen
        for example in examples():
            name = re.search(r"- name: (\S+)", example).group(1)
            config = textwrap.dedent("""\
                listeners:
                  api:
                    port: 0
                plugins:
                  dir: {plugin_dir}
                  instances:
                {example}    - name: memory
                      plugin: memory.so
                router:
                  model: {name}
                  cache: memory
                """).format(plugin_dir=PLUGIN_DIR, example=example, name=name)
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
                f.write(config)
            try:
                p = subprocess.run([BIN, "--check-config", "--config", f.name],
                                   capture_output=True, text=True, timeout=20,
                                   env=dict(os.environ, MODEL_SERVICE_KEY="sk-example"))
            finally:
                os.unlink(f.name)
            with self.subTest(name=name):
                self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
                self.assertIn("config OK", p.stdout)
                self.assertIn("(2 plugin instances", p.stdout)
                self.assertNotIn("sk-example", p.stdout + p.stderr)


class BadOpenAIConfigTest(unittest.TestCase):
    def check(self, instance_config):
        config = textwrap.dedent("""\
            plugins:
              dir: {plugin_dir}
              instances:
                - name: gpt
                  plugin: openai.so
                  config:
            {cfg}
                - name: memory
                  plugin: memory.so
            router:
              model: gpt
              cache: memory
            """).format(plugin_dir=PLUGIN_DIR, cfg=instance_config)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(config)
        try:
            p = subprocess.run([BIN, "--check-config", "--config", f.name],
                               capture_output=True, text=True, timeout=20)
        finally:
            os.unlink(f.name)
        return p.returncode, p.stdout + p.stderr

    def test_endpoint_must_be_http(self):
        rc, out = self.check("            endpoint: ftp://models.example\n"
                             "            model: m")
        self.assertEqual(rc, 1)
        self.assertIn("endpoint must start with http:// or https://", out)

    def test_header_without_a_colon_is_refused(self):
        rc, out = self.check("            endpoint: https://models.example/v1\n"
                             "            model: m\n"
                             "            headers: [\"X-Team engineering\"]")
        self.assertEqual(rc, 1)
        self.assertIn("headers[0] must be \"Name: value\"", out)

    def test_missing_model_names_the_key(self):
        rc, out = self.check("            endpoint: https://models.example/v1")
        self.assertEqual(rc, 1)
        self.assertIn("plugins.instances[0].config.model: required key missing", out)


if __name__ == "__main__":
    unittest.main()
