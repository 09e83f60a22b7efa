"""The command line: --version, --check-config, --list-plugins."""
import os
import re
import subprocess
import tempfile
import unittest

from harness import BIN, FIXTURE_DIR, PLUGIN_DIR, SOURCE_DIR, make_config, sdk_abi


def run(*args, env=None):
    p = subprocess.run([BIN] + list(args), capture_output=True, text=True, timeout=20,
                       env=dict(os.environ, **(env or {})))
    return p.returncode, p.stdout + p.stderr


def write(text):
    f = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    f.write(text)
    f.close()
    return f.name


class CliTest(unittest.TestCase):
    def test_version(self):
        rc, out = run("--version")
        self.assertEqual(rc, 0)
        self.assertRegex(out, r"^chatgate \d+\.\d+\.\d+ \(plugin ABI %s\)" % re.escape(sdk_abi()))

    def test_unknown_argument(self):
        rc, out = run("--frobnicate")
        self.assertEqual(rc, 2)
        self.assertIn("unknown argument '--frobnicate'", out)

    def test_check_config_accepts_the_shipped_default(self):
        rc, out = run("--check-config", "--config", os.path.join(SOURCE_DIR, "config/chatgate.yaml"),
                      env={"CHATGATE_PLUGIN_DIR": PLUGIN_DIR})
        self.assertEqual(rc, 0, out)
        self.assertIn("config OK", out)

    def test_check_config_accepts_the_embedded_default(self):
        rc, out = run("--check-config", env={"CHATGATE_PLUGIN_DIR": PLUGIN_DIR})
        self.assertEqual(rc, 0, out)
        self.assertIn("config OK: <embedded default config>", out)

    def test_check_config_names_file_line_and_key(self):
        text = make_config().replace("port:", "prot:")
        path = write(text)
        try:
            rc, out = run("--check-config", "--config", path)
        finally:
            os.unlink(path)
        self.assertEqual(rc, 1)
        line = text.splitlines().index("    prot: %s" % text.split("prot: ")[1].split("\n")[0]) + 1
        self.assertIn("%s:%d:" % (path, line), out)
        self.assertIn("listeners.api.prot", out)
        self.assertIn("unknown key", out)

    def test_check_config_catches_bad_plugin_section(self):
        text = make_config(echo_config="        delayMs: lots")
        path = write(text)
        try:
            rc, out = run("--check-config", "--config", path)
        finally:
            os.unlink(path)
        self.assertEqual(rc, 1)
        self.assertIn("plugins.instances[0].config.delayMs", out)
        line = text.splitlines().index("        delayMs: lots") + 1
        self.assertIn("%s:%d:" % (path, line), out)

    def test_check_config_catches_router_naming_wrong_kind(self):
        text = make_config().replace("  model: echo", "  model: memory")
        path = write(text)
        try:
            rc, out = run("--check-config", "--config", path)
        finally:
            os.unlink(path)
        self.assertEqual(rc, 1)
        line = text.splitlines().index("  model: memory") + 1
        self.assertIn("%s:%d: router.model: 'memory' must name a model backend instance, "
                      "found a cache plugin" % (path, line), out)

    def test_check_config_opens_no_port(self):
        # The port is held by this test: a --check-config that tried to
        # listen would fail with "address already in use".
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            path = write(make_config(s.getsockname()[1]))
            try:
                rc, out = run("--check-config", "--config", path)
            finally:
                os.unlink(path)
        self.assertEqual(rc, 0, out)
        self.assertIn("config OK", out)

    def test_check_config_runs_plugin_init(self):
        # The schema allows any prefix string; echo's init refuses one of
        # 64 bytes or more. --check-config must catch what a start would.
        text = make_config().replace("prefix: echo", "prefix: " + "p" * 70)
        path = write(text)
        try:
            rc, out = run("--check-config", "--config", path)
        finally:
            os.unlink(path)
        self.assertEqual(rc, 1, out)
        line = text.splitlines().index("    - name: echo") + 1
        self.assertIn("%s:%d: plugins.instances[0]: plugin instance 'echo'" % (path, line), out)
        self.assertIn("init failed", out)

    def test_missing_config_file(self):
        rc, out = run("--check-config", "--config", "/nonexistent/chatgate.yaml")
        self.assertEqual(rc, 1)
        self.assertIn("/nonexistent/chatgate.yaml", out)

    def test_list_plugins(self):
        rc, out = run("--list-plugins", PLUGIN_DIR)
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"echo\s+kind=model\s+version=1\.0\.0\s+ABI 1\.0")
        self.assertRegex(out, r"memory\s+kind=cache\s+version=1\.0\.0\s+ABI 1\.0")
        self.assertIn("maxBytes", out)

    def test_list_plugins_reports_refusals(self):
        rc, out = run("--list-plugins", FIXTURE_DIR)
        self.assertEqual(rc, 0, out)
        self.assertIn("refused: plugin %s/wrong_major.so: ABI major mismatch" % FIXTURE_DIR, out)


if __name__ == "__main__":
    unittest.main()
