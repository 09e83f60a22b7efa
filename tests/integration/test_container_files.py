"""The container and cluster files (packaging/docker, packaging/kubernetes)
agree with the .deb and with each other, and their configs work with the
real binary; the .deb's systemd units (packaging/debian) agree with its
config and with the way it installs them. The image itself is not built
here: no Docker engine on the test machines (packaging/docker/README.md),
and no cluster: the Kubernetes files are read as YAML, the single-pod
overlay is rendered here (and by `kubectl kustomize` too where kubectl is
installed)."""
import copy
import http.client
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import unittest

import yaml

from harness import BIN, SOURCE_DIR, Chatgate, get

DOCKER = os.path.join(SOURCE_DIR, "packaging/docker")
KUBE = os.path.join(SOURCE_DIR, "packaging/kubernetes")
FLEET = os.path.join(KUBE, "fleet")
SINGLE = os.path.join(KUBE, "single")
DEBIAN = os.path.join(SOURCE_DIR, "packaging/debian")
SOCKET_UNITS = {"chatgate-api.socket": "api", "chatgate-admin.socket": "admin"}


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


def kube(name, folder=FLEET):
    with open(os.path.join(folder, name)) as f:
        return yaml.safe_load(f)


def yaml_files(folder):
    return sorted(f for f in os.listdir(folder)
                  if f.endswith(".yaml") and f != "kustomization.yaml")


def resource_key(obj):
    return (obj["kind"], obj["metadata"]["name"])


def merge_patch(target, patch):
    """A strategic merge patch as far as the overlay uses one: maps merged
    key by key, anything else replaced."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def render(folder):
    """{(kind, name): object} of a kustomization made of resources (files or
    folders with their own kustomization.yaml) and patch files, as kustomize
    builds this repository's (no generators, no list merges)."""
    k = kube("kustomization.yaml", folder)
    out = {}
    for res in k.get("resources", []):
        path = os.path.normpath(os.path.join(folder, res))
        if os.path.isdir(path):
            out.update(render(path))
        else:
            obj = kube(res, folder)
            out[resource_key(obj)] = obj
    for p in k.get("patches", []):
        assert set(p) == {"path"}, "only patch files are rendered here: %r" % p
        patch = kube(p["path"], folder)
        key = resource_key(patch)
        assert key in out, "patch %s names no resource: %r" % (p["path"], key)
        if patch.get("$patch") == "delete":
            del out[key]
        else:
            merge_patch(out[key], patch)
    return out


def kinds(resources):
    return {kind: obj for (kind, _), obj in resources.items()}


def container_of(deploy):
    return deploy["spec"]["template"]["spec"]["containers"][0]


def secrets_env(container, resources):
    """The variables the container gets from Secrets (envFrom), as the
    Secret manifests write them."""
    env = {}
    for ref in container.get("envFrom", []):
        secret = resources[("Secret", ref["secretRef"]["name"])]
        env.update(secret["stringData"])
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
    return env


def unit_exec_start():
    """The systemd unit's ExecStart, split: the .deb's way to run chatgate."""
    for line in read(os.path.join(SOURCE_DIR, "packaging/debian/chatgate.service")).splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line[len("ExecStart="):])
    raise AssertionError("no ExecStart in chatgate.service")


def unit_values(name, section, key):
    """A key's values in one section of a systemd unit in packaging/debian,
    as systemd reads a list: an empty assignment drops the ones before it,
    a value may list several items."""
    values, current = [], None
    for line in read(os.path.join(DEBIAN, name)).splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            continue
        k, _, v = line.partition("=")
        if current == section and k.strip() == key:
            v = v.strip()
            values = values + v.split() if v else []
    return values


def packaged_config_default(value):
    """A config value as the packaged service reads it with no environment
    set: ${VAR:-default} is the default."""
    m = re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", str(value))
    return m.group(1) if m else str(value)


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
    """The fleet (packaging/kubernetes/fleet): three pods on one Redis with
    the durable queue, an HPA and a PodDisruptionBudget."""

    def setUp(self):
        self.resources = render(FLEET)
        by_kind = kinds(self.resources)
        self.deploy = by_kind["Deployment"]
        self.pod = self.deploy["spec"]["template"]["spec"]
        self.container = container_of(self.deploy)
        self.configmap = by_kind["ConfigMap"]
        self.secret = by_kind["Secret"]
        self.hpa = by_kind["HorizontalPodAutoscaler"]
        self.pdb = by_kind["PodDisruptionBudget"]
        self.config_text = self.configmap["data"]["chatgate.yaml"]
        self.config = yaml.safe_load(self.config_text)

    def test_every_manifest_parses_and_is_listed(self):
        expected = {
            "configmap.yaml": ("v1", "ConfigMap"),
            "secret.yaml": ("v1", "Secret"),
            "deployment.yaml": ("apps/v1", "Deployment"),
            "service.yaml": ("v1", "Service"),
            "pdb.yaml": ("policy/v1", "PodDisruptionBudget"),
            "hpa.yaml": ("autoscaling/v2", "HorizontalPodAutoscaler"),
        }
        self.assertEqual(yaml_files(FLEET), sorted(expected))
        for name, (api, kind) in expected.items():
            with open(os.path.join(FLEET, name)) as f:
                docs = list(yaml.safe_load_all(f))
            self.assertEqual(len(docs), 1, name)
            self.assertEqual((docs[0]["apiVersion"], docs[0]["kind"]), (api, kind), name)
            self.assertEqual(docs[0]["metadata"]["name"], "chatgate", name)
            self.assertEqual(docs[0]["metadata"]["labels"],
                             {"app.kubernetes.io/name": "chatgate"}, name)
        self.assertEqual(sorted(kube("kustomization.yaml")["resources"]), sorted(expected))
        # `kubectl apply -k packaging/kubernetes` is the fleet.
        self.assertEqual(kube("kustomization.yaml", KUBE)["resources"], ["fleet"])
        self.assertEqual(render(KUBE), self.resources)

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
        # /readyz is 503 while the queue's Redis is unreachable: the pod
        # leaves the Service; /healthz is not, so the pods are not restarted.
        self.assertEqual(probes["readinessProbe"]["path"], "/readyz")
        for probe in probes.values():
            self.assertEqual(probe["port"], "admin")
        # The kubelet probes from outside the pod: the listener must not be loopback.
        self.assertEqual(self.config["listeners"]["admin"]["address"], "0.0.0.0")

    def test_grace_period_outlasts_the_pause_and_the_shutdown_deadline(self):
        pre_stop = self.container["lifecycle"]["preStop"]
        if "sleep" in pre_stop:
            # The kubelet's own sleep action (Kubernetes 1.30+): no binary needed.
            pause_s = pre_stop["sleep"]["seconds"]
        else:
            pause = pre_stop["exec"]["command"]
            self.assertEqual(pause[0], "sleep")
            pause_s = int(pause[1])
            # The exec'd `sleep` must be in the image: coreutils, on the
            # runtime stage's Debian base (not a distroless or scratch image).
            runtime = [a for w, a in dockerfile_instructions() if w == "FROM"][-1]
            self.assertTrue(runtime.startswith("debian:"), runtime)
        self.assertGreater(pause_s, 0)
        # chatgate is gone at most delayMs + deadlineMs + 2 s after SIGTERM
        # (docs/operator-guide.md); the pause comes before the SIGTERM and
        # the grace period counts from the pause's start.
        shutdown = self.config.get("shutdown", {})
        stop_ms = shutdown.get("delayMs", 0) + shutdown.get("deadlineMs", 10000) + 2000
        self.assertGreater(self.pod["terminationGracePeriodSeconds"] * 1000,
                           pause_s * 1000 + stop_ms)

    def test_rolling_update_never_drops_capacity(self):
        strategy = self.deploy["spec"]["strategy"]
        self.assertEqual(strategy["type"], "RollingUpdate")
        # No old pod stops before its replacement is ready, so a new one
        # must be allowed to start beside the old ones.
        self.assertEqual(strategy["rollingUpdate"]["maxUnavailable"], 0)
        self.assertIsInstance(strategy["rollingUpdate"]["maxSurge"], int)
        self.assertGreaterEqual(strategy["rollingUpdate"]["maxSurge"], 1)

    def test_service_publishes_the_api_port_only(self):
        svc = self.resources[("Service", "chatgate")]
        self.assertEqual(svc["spec"]["selector"], self.deploy["spec"]["selector"]["matchLabels"])
        self.assertEqual(self.deploy["spec"]["selector"]["matchLabels"],
                         self.deploy["spec"]["template"]["metadata"]["labels"])
        self.assertEqual([(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]],
                         [(8080, "api")])

    def test_three_replicas_share_the_durable_queue_on_redis(self):
        self.assertEqual(self.deploy["spec"]["replicas"], 3)
        router = self.config["router"]
        redis = [i for i in self.config["plugins"]["instances"] if i["plugin"] == "redis.so"]
        self.assertEqual(len(redis), 1)
        self.assertEqual(router["queue"], router["cache"])
        self.assertEqual(router["queue"], redis[0]["name"])
        self.assertEqual(self.config["queue"]["partitions"], 16)
        # Every pod of the HPA's maximum can own a partition.
        self.assertGreaterEqual(self.config["queue"]["partitions"], self.hpa["spec"]["maxReplicas"])
        # The partition count the alert rules record is this one.
        rules = read(os.path.join(SOURCE_DIR, "packaging/prometheus/chatgate-rules.yml"))
        recorded = re.search(r"record: chatgate:queue_partitions:configured\s+expr: vector\((\d+)\)",
                             rules)
        self.assertEqual(int(recorded.group(1)), self.config["queue"]["partitions"])

    def test_redis_address_and_password_come_from_the_secret(self):
        redis = [i for i in self.config["plugins"]["instances"] if i["plugin"] == "redis.so"][0]
        cfg = redis["config"]
        # Required variables (no default): a missing key is a named error at start.
        self.assertEqual(cfg["host"], "${REDIS_HOST}")
        self.assertEqual(cfg["password"], "${REDIS_PASSWORD}")
        self.assertEqual(cfg["port"], "${REDIS_PORT:-6379}")
        refs = [r["secretRef"]["name"] for r in self.container["envFrom"]]
        self.assertEqual(refs, [self.secret["metadata"]["name"]])
        for key in ("REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD"):
            self.assertIn(key, self.secret["stringData"])
        # Nothing in the Deployment sets them past the Secret.
        self.assertFalse([e for e in self.container.get("env", []) if e["name"].startswith("REDIS_")])

    def test_every_required_variable_is_supplied(self):
        supplied = set(secrets_env(self.container, self.resources))
        required = {name for name, has_default in env_refs(self.config_text) if not has_default}
        self.assertTrue(required, "the ConfigMap reads no required variable?")
        self.assertLessEqual({"CHATGATE_ADMIN_TOKEN", "MODEL_SERVICE_KEY", "REDIS_HOST",
                              "REDIS_PASSWORD"}, required)
        self.assertLessEqual(required, supplied)

    def test_hpa_scales_the_deployment_from_3_to_10_on_cpu(self):
        spec = self.hpa["spec"]
        target = spec["scaleTargetRef"]
        self.assertEqual((target["apiVersion"], target["kind"], target["name"]),
                         (self.deploy["apiVersion"], "Deployment", self.deploy["metadata"]["name"]))
        self.assertEqual((spec["minReplicas"], spec["maxReplicas"]), (3, 10))
        self.assertEqual(spec["minReplicas"], self.deploy["spec"]["replicas"])
        self.assertEqual(spec["metrics"], [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}])
        # Utilization is of the CPU request: without one the HPA cannot work.
        self.assertIn("cpu", self.container["resources"]["requests"])
        # One pod at a time on the way down: each hands its partitions over.
        self.assertEqual(spec["behavior"]["scaleDown"]["policies"],
                         [{"type": "Pods", "value": 1, "periodSeconds": 60}])

    def test_pdb_keeps_two_of_the_pods(self):
        spec = self.pdb["spec"]
        self.assertEqual(spec["minAvailable"], 2)
        self.assertNotIn("maxUnavailable", spec)
        self.assertEqual(spec["selector"]["matchLabels"],
                         self.deploy["spec"]["template"]["metadata"]["labels"])
        # Below the fleet's smallest size, so a drain can evict one pod.
        self.assertLess(spec["minAvailable"], self.hpa["spec"]["minReplicas"])
        self.assertEqual(spec["unhealthyPodEvictionPolicy"], "AlwaysAllow")

    def test_pods_spread_across_zones(self):
        spread = {c["topologyKey"]: c for c in self.pod["topologySpreadConstraints"]}
        self.assertIn("topology.kubernetes.io/zone", spread)
        for c in spread.values():
            self.assertEqual(c["maxSkew"], 1)
            self.assertIn(c["whenUnsatisfiable"], ("ScheduleAnyway", "DoNotSchedule"))
            self.assertEqual(c["labelSelector"]["matchLabels"],
                             self.deploy["spec"]["template"]["metadata"]["labels"])

    def test_readme_names_every_file(self):
        readme = read(os.path.join(KUBE, "README.md"))
        for folder in (FLEET, SINGLE):
            for name in yaml_files(folder) + ["kustomization.yaml"]:
                rel = os.path.relpath(os.path.join(folder, name), KUBE)
                self.assertIn("`%s`" % rel, readme)

    def test_configmap_config_passes_check_config(self):
        env = secrets_env(self.container, self.resources)
        rc, out = check_config(self.config_text, env)
        self.assertEqual(rc, 0, out)
        self.assertIn("config OK", out)
        # Without the Secret's keys: a named error each.
        for key in ("CHATGATE_ADMIN_TOKEN", "REDIS_HOST", "REDIS_PASSWORD"):
            rc, out = check_config(self.config_text, {k: v for k, v in env.items() if k != key})
            self.assertEqual(rc, 1, out)
            self.assertIn("%s is not set" % key, out)


class KubernetesSingleTest(unittest.TestCase):
    """The single-pod overlay (packaging/kubernetes/single): the fleet's
    files with one replica, no PDB, no HPA, memory.so and no queue."""

    def setUp(self):
        self.fleet = render(FLEET)
        self.single = render(SINGLE)
        self.deploy = kinds(self.single)["Deployment"]
        self.config_text = kinds(self.single)["ConfigMap"]["data"]["chatgate.yaml"]
        self.config = yaml.safe_load(self.config_text)

    def test_overlay_lists_its_patches_and_builds_on_the_fleet(self):
        k = kube("kustomization.yaml", SINGLE)
        self.assertEqual(k["resources"], ["../fleet"])
        self.assertEqual(sorted(p["path"] for p in k["patches"]), yaml_files(SINGLE))

    def test_one_replica_without_pdb_or_hpa(self):
        self.assertEqual(sorted(self.single), sorted(
            k for k in self.fleet if k[0] not in ("PodDisruptionBudget", "HorizontalPodAutoscaler")))
        self.assertEqual(self.deploy["spec"]["replicas"], 1)
        # The rest of the Deployment is the fleet's.
        fleet_deploy = copy.deepcopy(kinds(self.fleet)["Deployment"])
        fleet_deploy["spec"]["replicas"] = 1
        self.assertEqual(self.deploy, fleet_deploy)

    def test_config_runs_on_memory_without_the_queue(self):
        router = self.config["router"]
        self.assertNotIn("queue", router)
        self.assertNotIn("queue", self.config)
        self.assertEqual(router["cache"], "memory")
        plugins = {i["name"]: i["plugin"] for i in self.config["plugins"]["instances"]}
        self.assertEqual(plugins[router["cache"]], "memory.so")
        self.assertNotIn("redis.so", plugins.values())
        # Everything else is the fleet's config.
        fleet = yaml.safe_load(kinds(self.fleet)["ConfigMap"]["data"]["chatgate.yaml"])
        for key in ("logging", "listeners", "admin", "shutdown"):
            self.assertEqual(self.config[key], fleet[key], key)
        self.assertEqual(router["model"], fleet["router"]["model"])
        model = [i for i in fleet["plugins"]["instances"] if i["name"] == router["model"]]
        self.assertIn(model[0], self.config["plugins"]["instances"])

    def test_config_passes_check_config_with_the_fleets_secret(self):
        env = secrets_env(container_of(self.deploy), self.single)
        rc, out = check_config(self.config_text, env)
        self.assertEqual(rc, 0, out)
        self.assertIn("config OK", out)

    def test_kubectl_kustomize_builds_the_same(self):
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            self.skipTest("kubectl not installed: the overlays are rendered by this test only")
        for folder, mine in ((KUBE, render(KUBE)), (SINGLE, self.single)):
            p = subprocess.run([kubectl, "kustomize", folder], capture_output=True, text=True,
                               timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            theirs = {resource_key(o): o for o in yaml.safe_load_all(p.stdout) if o}
            self.assertEqual(theirs, mine)


class DebSocketUnitsTest(unittest.TestCase):
    """Socket activation in the .deb: chatgate-api.socket and
    chatgate-admin.socket hold the listening sockets for chatgate.service,
    which adopts each by its FileDescriptorName (docs/operator-guide.md)."""

    def test_names_are_the_listener_names(self):
        for unit, listener in SOCKET_UNITS.items():
            self.assertEqual(unit_values(unit, "Socket", "FileDescriptorName"), [listener], unit)
            self.assertEqual(unit_values(unit, "Socket", "Service"), ["chatgate.service"], unit)
            self.assertEqual(unit_values(unit, "Install", "WantedBy"), ["sockets.target"], unit)

    def test_the_packaged_config_speaks_chinese_and_differs_in_nothing_else(self):
        # Written by cmake/packaging.cmake beside the build's binary.
        packaged = os.path.join(os.path.dirname(os.path.abspath(BIN)), "packaged",
                                "chatgate.yaml")
        if not os.path.exists(packaged):
            self.skipTest("no build beside CHATGATE_BIN: " + packaged)
        embedded = yaml.safe_load(read(os.path.join(SOURCE_DIR, "config/chatgate.yaml")))
        shipped = yaml.safe_load(read(packaged))
        self.assertEqual((embedded["router"]["locale"], shipped["router"]["locale"]),
                         ("en", "zh-CN"))
        shipped["router"]["locale"] = "en"
        self.assertEqual(shipped, embedded)

    def test_listen_where_the_packaged_config_does(self):
        # The .deb installs config/chatgate.yaml, its router.locale turned
        # to zh-CN (and nothing else changed), as /etc/chatgate/chatgate.yaml.
        cmake = read(os.path.join(SOURCE_DIR, "cmake/packaging.cmake"))
        self.assertRegex(cmake, r"file\(READ \$\{CMAKE_SOURCE_DIR\}/config/chatgate\.yaml ")
        self.assertRegex(cmake, r"install\(FILES \$\{CG_PACKAGED_CONFIG\} DESTINATION /etc/chatgate")
        config = yaml.safe_load(read(os.path.join(SOURCE_DIR, "config/chatgate.yaml")))
        listeners = config["listeners"]
        for unit, listener in SOCKET_UNITS.items():
            cfg = listeners[listener]
            expected = "%s:%s" % (packaged_config_default(cfg["address"]),
                                  packaged_config_default(cfg["port"]))
            self.assertEqual(unit_values(unit, "Socket", "ListenStream"), [expected], unit)
        self.assertEqual(unit_values("chatgate-api.socket", "Socket", "ListenStream"),
                         ["127.0.0.1:8080"])
        self.assertEqual(unit_values("chatgate-admin.socket", "Socket", "ListenStream"),
                         ["127.0.0.1:18789"])

    def test_service_takes_and_requires_both_sockets(self):
        service = "chatgate.service"
        for section, key in (("Service", "Sockets"), ("Unit", "After")):
            self.assertLessEqual(set(SOCKET_UNITS), set(unit_values(service, section, key)), key)
        # The API's socket is required; the admin's only wanted, so that it
        # can be masked when listeners.admin is off.
        self.assertIn("chatgate-api.socket", unit_values(service, "Unit", "Requires"))
        self.assertIn("chatgate-admin.socket", unit_values(service, "Unit", "Wants"))
        # The old main process announces its successor (MAINPID=, READY=1)
        # itself on a handover: nothing else may notify.
        self.assertEqual(unit_values(service, "Service", "Type"), ["notify"])
        self.assertEqual(unit_values(service, "Service", "NotifyAccess"), ["main"])
        self.assertEqual(unit_values(service, "Service", "ExecReload"),
                         ["/bin/kill", "-HUP", "$MAINPID"])

    def test_stop_timeout_outlasts_the_shutdown_deadline(self):
        cfg = yaml.safe_load(read(os.path.join(SOURCE_DIR, "config/chatgate.yaml")))
        stop = unit_values("chatgate.service", "Service", "TimeoutStopSec")
        # chatgate is gone at most deadlineMs + 2 s after SIGTERM
        # (docs/operator-guide.md).
        self.assertGreater(int(stop[0]) * 1000, int(cfg["shutdown"]["deadlineMs"]) + 2000)

    def test_installed_beside_the_service_and_handled_by_the_maintainer_scripts(self):
        cmake = read(os.path.join(SOURCE_DIR, "cmake/packaging.cmake"))
        installs = re.findall(r"install\(FILES ([^)]*?) DESTINATION (\S+)", cmake)
        dest = {os.path.basename(f): d for files, d in installs for f in files.split()}
        self.assertEqual(dest.get("chatgate.service"), "/lib/systemd/system")
        for unit in SOCKET_UNITS:
            self.assertEqual(dest.get(unit), "/lib/systemd/system", unit)
            self.assertTrue(os.path.isfile(os.path.join(DEBIAN, unit)), unit)
        # Enabled by postinst, stopped by prerm, masked and purged by postrm,
        # like the service.
        for script in ("postinst", "prerm", "postrm"):
            text = read(os.path.join(DEBIAN, script))
            for unit in list(SOCKET_UNITS) + ["chatgate.service"]:
                self.assertIn(unit, text, "%s does not name %s" % (script, unit))
        postinst = read(os.path.join(DEBIAN, "postinst"))
        self.assertIn("systemctl kill --kill-who=main --signal=SIGUSR2 chatgate.service", postinst)

    def test_systemd_analyze_verify(self):
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            self.skipTest("systemd-analyze not installed")
        tmp = tempfile.mkdtemp(prefix="cg-units-")
        self.addCleanup(shutil.rmtree, tmp)
        # ExecStart must name an executable: the built binary stands in for
        # /usr/bin/chatgate.
        bin_path = os.path.abspath(BIN)
        for unit in list(SOCKET_UNITS) + ["chatgate.service"]:
            text = read(os.path.join(DEBIAN, unit))
            if unit == "chatgate.service":
                self.assertIn("ExecStart=/usr/bin/chatgate ", text)
                text = text.replace("ExecStart=/usr/bin/chatgate ", "ExecStart=%s " % bin_path)
            with open(os.path.join(tmp, unit), "w") as f:
                f.write(text)
        units = [os.path.join(tmp, u) for u in ["chatgate.service"] + list(SOCKET_UNITS)]
        p = subprocess.run([analyze, "verify"] + units, capture_output=True, text=True, timeout=60)
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 0, out)
        # verify exits 0 on a setting it ignores; its warning names the file.
        self.assertNotIn("chatgate", out)


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
