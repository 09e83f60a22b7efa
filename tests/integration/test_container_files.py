"""The container and cluster files (packaging/docker, packaging/kubernetes)
agree with the .deb and with each other, and their configs work with the
real binary. The image itself is not built here: no Docker engine on the
test machines (packaging/docker/README.md)."""
import http.client
import json
import os
import re
import shlex
import subprocess
import unittest

import yaml

from harness import BIN, SOURCE_DIR, Chatgate, get

DOCKER = os.path.join(SOURCE_DIR, "packaging/docker")
KUBE = os.path.join(SOURCE_DIR, "packaging/kubernetes")


def read(path):
    with open(path) as f:
        return f.read()


def dockerfile_instructions():
    """(INSTRUCTION, argument text) pairs, continuation lines joined."""
    out, cur = [], ""
    for line in read(os.path.join(DOCKER, "Dockerfile")).splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        cur += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = cur.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            cur = ""
    return out


def kube(name):
    with open(os.path.join(KUBE, name)) as f:
        return yaml.safe_load(f)


def unit_exec_start():
    """The systemd unit's ExecStart, split: the .deb's way to run chatgate."""
    for line in read(os.path.join(SOURCE_DIR, "packaging/debian/chatgate.service")).splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line[len("ExecStart="):])
    raise AssertionError("no ExecStart in chatgate.service")


def env_refs(text):
    """(name, has_default) for every ${VAR} in a config text, comments aside."""
    live = "\n".join(line.split("#")[0] for line in text.splitlines())
    return [(m.group(1), m.group(2) is not None)
            for m in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}", live)]


def check_config(text, env):
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "cg-container-%d.yaml" % os.getpid())
    with open(path, "w") as f:
        f.write(text)
    try:
        p = subprocess.run([BIN, "--check-config", "--config", path], capture_output=True,
                           text=True, timeout=20, env=dict(os.environ, **env))
    finally:
        os.unlink(path)
    return p.returncode, p.stdout + p.stderr


class DockerfileTest(unittest.TestCase):
    def setUp(self):
        self.ins = dockerfile_instructions()

    def args(self, word):
        return [a for w, a in self.ins if w == word]

    def test_two_stages_on_debian_12_slim_installing_the_deb(self):
        froms = self.args("FROM")
        self.assertEqual(froms, ["debian:12-slim AS build", "debian:12-slim"])
        runs = self.args("RUN")
        self.assertTrue(any("make deb" in r for r in runs), runs)
        copies = self.args("COPY")
        # The runtime stage takes the package that `make deb` writes (CPack's
        # DEB-DEFAULT name in build-deb/) and installs it with apt.
        self.assertIn("--from=build /src/build-deb/chatgate_*_amd64.deb /tmp/", copies)
        self.assertTrue(any("apt-get install" in r and "/tmp/chatgate_*_amd64.deb" in r
                            for r in runs), runs)
        makefile = read(os.path.join(SOURCE_DIR, "Makefile"))
        self.assertIn("DEB_DIR ?= build-deb", makefile)

    def test_runs_the_packaged_binary_on_the_packaged_config_path(self):
        unit = unit_exec_start()
        entry = yaml.safe_load(self.args("ENTRYPOINT")[0])
        cmd = yaml.safe_load(self.args("CMD")[0])
        self.assertEqual(entry + cmd, unit)
        self.assertIn("packaging/docker/chatgate.yaml %s" % unit[-1], self.args("COPY"))
        self.assertTrue(os.path.isfile(os.path.join(DOCKER, "chatgate.yaml")))

    def test_user_is_the_packaged_user_with_the_kubernetes_uid(self):
        uid = re.search(r"CHATGATE_UID=(\d+)", " ".join(self.args("ARG"))).group(1)
        run = " ".join(self.args("RUN"))
        self.assertRegex(run, r"groupadd --system --gid \"\$\{CHATGATE_UID\}\" chatgate")
        self.assertRegex(run, r"useradd --system --uid \"\$\{CHATGATE_UID\}\" --gid chatgate "
                              r"--home-dir /var/lib/chatgate")
        # The user must exist before the package, whose postinst keeps it.
        postinst = read(os.path.join(SOURCE_DIR, "packaging/debian/postinst"))
        self.assertIn("if ! getent passwd chatgate", postinst)
        self.assertLess(run.index("useradd"), run.index("apt-get install"))
        self.assertEqual(self.args("USER"), ["%s:%s" % (uid, uid)])
        ctx = kube("deployment.yaml")["spec"]["template"]["spec"]["securityContext"]
        self.assertEqual((ctx["runAsUser"], ctx["runAsGroup"]), (int(uid), int(uid)))
        self.assertTrue(ctx["runAsNonRoot"])
        self.assertEqual(self.args("WORKDIR")[-1], "/var/lib/chatgate")

    def test_exposes_the_configured_ports(self):
        exposed = sorted(int(p) for p in self.args("EXPOSE")[0].split())
        cfg = yaml.safe_load(read(os.path.join(DOCKER, "chatgate.yaml")))
        ports = sorted(int(re.search(r":-(\d+)", str(cfg["listeners"][n]["port"])).group(1))
                       for n in ("api", "admin"))
        self.assertEqual(exposed, ports)
        self.assertEqual(exposed, [8080, 18789])

    def test_dockerignore_keeps_build_trees_out_of_the_context(self):
        ignored = read(os.path.join(SOURCE_DIR, ".dockerignore")).split()
        for entry in ("build", "build-*", ".git"):
            self.assertIn(entry, ignored)


class KubernetesTest(unittest.TestCase):
    def setUp(self):
        self.deploy = kube("deployment.yaml")
        self.pod = self.deploy["spec"]["template"]["spec"]
        self.container = self.pod["containers"][0]
        self.configmap = kube("configmap.yaml")
        self.secret = kube("secret.yaml")
        self.config_text = self.configmap["data"]["chatgate.yaml"]
        self.config = yaml.safe_load(self.config_text)

    def test_kustomization_lists_every_manifest(self):
        listed = sorted(kube("kustomization.yaml")["resources"])
        present = sorted(f for f in os.listdir(KUBE)
                         if f.endswith(".yaml") and f != "kustomization.yaml")
        self.assertEqual(listed, present)

    def test_config_is_mounted_where_the_image_reads_it(self):
        unit = unit_exec_start()
        self.assertEqual(self.container["args"], unit[1:])
        mount = self.container["volumeMounts"][0]
        self.assertEqual(mount["mountPath"], unit[-1])
        self.assertIn(mount["subPath"], self.configmap["data"])
        volume = [v for v in self.pod["volumes"] if v["name"] == mount["name"]][0]
        self.assertEqual(volume["configMap"]["name"], self.configmap["metadata"]["name"])

    def test_probes_hit_healthz_and_readyz_on_the_admin_listener(self):
        ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        self.assertEqual(ports, {"api": self.config["listeners"]["api"]["port"],
                                 "admin": self.config["listeners"]["admin"]["port"]})
        probes = {k: self.container[k]["httpGet"] for k in
                  ("livenessProbe", "readinessProbe", "startupProbe")}
        self.assertEqual(probes["livenessProbe"]["path"], "/healthz")
        self.assertEqual(probes["startupProbe"]["path"], "/healthz")
        self.assertEqual(probes["readinessProbe"]["path"], "/readyz")
        for probe in probes.values():
            self.assertEqual(probe["port"], "admin")
        # The kubelet probes from outside the pod: the listener must not be loopback.
        self.assertEqual(self.config["listeners"]["admin"]["address"], "0.0.0.0")

    def test_grace_period_outlasts_the_shutdown_deadline(self):
        self.assertGreater(self.pod["terminationGracePeriodSeconds"] * 1000,
                           self.config["shutdown"]["deadlineMs"])

    def test_service_publishes_the_api_port_only(self):
        svc = kube("service.yaml")
        self.assertEqual(svc["spec"]["selector"], self.deploy["spec"]["selector"]["matchLabels"])
        self.assertEqual(self.deploy["spec"]["selector"]["matchLabels"],
                         self.deploy["spec"]["template"]["metadata"]["labels"])
        self.assertEqual([(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]],
                         [(8080, "api")])

    def test_every_required_variable_is_supplied(self):
        secret_ref = self.container["envFrom"][0]["secretRef"]["name"]
        self.assertEqual(secret_ref, self.secret["metadata"]["name"])
        supplied = set(self.secret["stringData"]) | {e["name"] for e in self.container["env"]}
        required = {name for name, has_default in env_refs(self.config_text) if not has_default}
        self.assertTrue(required, "the ConfigMap reads no required variable?")
        self.assertLessEqual(required, supplied)

    def test_configmap_config_passes_check_config(self):
        env = dict(self.secret["stringData"])
        env.update({e["name"]: e["value"] for e in self.container["env"]})
        rc, out = check_config(self.config_text, env)
        self.assertEqual(rc, 0, out)
        self.assertIn("config OK", out)
        # Without the Secret the admin token is missing: a named error.
        env.pop("CHATGATE_ADMIN_TOKEN")
        rc, out = check_config(self.config_text, env)
        self.assertEqual(rc, 1, out)
        self.assertIn("CHATGATE_ADMIN_TOKEN is not set", out)


class ContainerConfigRunTest(unittest.TestCase):
    """The image's config with the real binary (addresses moved to loopback
    through the variables the config reads)."""

    def setUp(self):
        self.text = read(os.path.join(DOCKER, "chatgate.yaml"))
        self.env = {"CHATGATE_API_ADDRESS": "127.0.0.1", "CHATGATE_ADMIN_ADDRESS": "127.0.0.1",
                    "CHATGATE_API_PORT": "0", "CHATGATE_ADMIN_PORT": "0"}

    def test_serves_probes_chat_and_a_guarded_admin_api(self):
        token = "container-test-token-0123456789"
        with Chatgate(self.text, env=dict(self.env, CHATGATE_ADMIN_TOKEN=token)) as cg:
            self.api, self.admin = cg.port, cg.admin_port
            self.assertEqual(get(self.admin, "/healthz")[0], 200)
            status, body, _ = get(self.admin, "/readyz")
            self.assertEqual(status, 200, body)
            conn = http.client.HTTPConnection("127.0.0.1", self.api, timeout=10)
            conn.request("POST", "/api/chat", json.dumps({"userId": "c", "query": "hi"}),
                         {"Content-Type": "application/json"})
            resp = conn.getresponse()
            self.assertEqual((resp.status, json.loads(resp.read())),
                             (200, {"answer": "echo: hi (turn 1)"}))
            conn.close()
            self.assertEqual(get(self.admin, "/admin/api/status")[0], 401)
            conn = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=10)
            conn.request("GET", "/admin/api/status", headers={"Authorization": "Bearer " + token})
            self.assertEqual(conn.getresponse().status, 200)
            conn.close()
            self.assertNotIn(token, cg.log())

    def test_refuses_all_addresses_without_a_token(self):
        env = dict(self.env, CHATGATE_ADMIN_TOKEN="")
        del env["CHATGATE_ADMIN_ADDRESS"]  # the image's default: 0.0.0.0
        rc, out = check_config(self.text, env)
        self.assertEqual(rc, 1, out)
        self.assertIn("listeners.admin.address", out)


if __name__ == "__main__":
    unittest.main()
