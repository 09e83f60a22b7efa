"""The admin API's actions through the real binary: config reload (SIGHUP and
POST /admin/api/reload) and sending a message through a channel plugin
(POST /admin/api/send, against the wsprobe fixture channel, which records
what the host hands it)."""
import errno
import json
import os
import signal
import threading
import unittest

from harness import (FIXTURE_DIR, HANDOVER_FAILED, PLUGIN_DIR, ClosedPort, Chatgate, chat,
                     free_port, gateway_config, wait_for, wait_until)
from test_admin import ECHO_MEMORY, TOKEN, Gateway, request, scrape

BEARER = {"Authorization": "Bearer " + TOKEN}


class ReloadTest(unittest.TestCase):
    TOP = "admin:\n  token: ${ADMIN_T}\n"

    def gateway(self, top=TOP, instances=ECHO_MEMORY):
        return Gateway(instances, top_extra=top, env={"ADMIN_T": TOKEN, "ADMIN_T2": TOKEN + "-2"})

    def reload(self, gw, headers=BEARER):
        status, body, _ = request(gw.admin_port, "/admin/api/reload", headers, method="POST",
                                  body="{}")
        return status, json.loads(body)

    def effective(self, gw, headers=BEARER):
        return json.loads(request(gw.admin_port, "/admin/api/config", headers)[1])

    def status(self, gw):
        return json.loads(request(gw.admin_port, "/admin/api/status", BEARER)[1])

    def test_sighup_applies_live_keys_in_the_same_process(self):
        with self.gateway(self.TOP + "  showContent: false\n") as gw:
            chat(gw.api_port, "ann", "before")
            pid = self.status(gw)["pid"]
            gw.rewrite_config("  showContent: false\n", "  showContent: true\n")
            gw.rewrite_config("router:\n", "router:\n  contextTurns: 3\n  modelTimeoutMs: 1234\n")
            gw.proc.send_signal(signal.SIGHUP)
            log = gw.wait_log("config reload from %s: applied " % gw.config_path)
            self.assertIn("applied admin.showContent, router.contextTurns, router.modelTimeoutMs",
                          log)
            self.assertNotIn("handing over", log)
            router = self.effective(gw)["router"]
            self.assertEqual((router["contextTurns"], router["modelTimeoutMs"]), (3, 1234))
            # Applied for real: the conversations now keep their text.
            self.assertEqual(chat(gw.api_port, "ann", "after")[0], 200)
            convs = json.loads(request(gw.admin_port, "/admin/api/conversations", BEARER)[1])
            self.assertEqual(convs["conversations"][0]["question"], "after")
            self.assertEqual((self.status(gw)["pid"], gw.proc.poll()), (pid, None))

    def test_sighup_hands_a_listener_change_to_a_new_process(self):
        with self.gateway() as gw:
            old_pid, old_port = self.status(gw)["pid"], gw.api_port
            new_port = free_port()
            gw.rewrite_config("  api:\n    address: 127.0.0.1\n    port: 0\n",
                         "  api:\n    address: 127.0.0.1\n    port: %d\n" % new_port)
            gw.rewrite_config("router:\n", "router:\n  contextTurns: 3\n")
            gw.proc.send_signal(signal.SIGHUP)
            log = gw.wait_log("config reload from %s: listeners.api need a new process; "
                              "handing over" % gw.config_path)
            new_pid = gw.follow_handover()
            self.assertNotEqual(new_pid, old_pid)
            # The new process serves the new port and the live change too;
            # the old port closed with the old process.
            self.assertEqual(gw.api_port, new_port)
            self.assertEqual(chat(new_port, "ann", "moved")[0], 200)
            self.assertEqual(self.status(gw)["pid"], new_pid)
            self.assertEqual(self.effective(gw)["router"]["contextTurns"], 3)
            with self.assertRaises(OSError):
                chat(old_port, "ann", "old port")

    def login(self, gw):
        status, body, headers = request(gw.admin_port, "/admin/api/login",
                                        {"Content-Type": "application/json"}, method="POST",
                                        body=json.dumps({"token": TOKEN}))
        self.assertEqual(status, 200, body)
        return headers["Set-Cookie"].split(";")[0], json.loads(body)["csrf"]

    def test_the_admin_page_stays_logged_in_across_a_handover(self):
        with self.gateway() as gw:
            cookie, csrf = self.login(gw)
            page = {"Cookie": cookie, "X-CSRF-Token": csrf}
            gw.rewrite_config("    - name: memory\n      plugin: memory.so\n",
                         "    - name: memory\n      plugin: memory.so\n"
                         "    - name: echo2\n      plugin: echo.so\n")
            status, body, _ = request(gw.admin_port, "/admin/api/reload", page, method="POST",
                                      body="{}")
            self.assertEqual(status, 200, body)
            gw.follow_handover()
            gw.wait_log("admin page: 1 session(s) carried over from the process before")
            # The same cookie and CSRF token work with the new process.
            self.assertEqual(request(gw.admin_port, "/admin/api/status", page)[0], 200)
            status, body, _ = request(gw.admin_port, "/admin/api/reload", page, method="POST",
                                      body="{}")
            self.assertEqual(status, 200, body)
            # A new token in the next handover ends the sessions, as a
            # reload that changes it does.
            gw.rewrite_config("token: ${ADMIN_T}", "token: ${ADMIN_T2}")
            gw.rewrite_config("    - name: echo2\n      plugin: echo.so\n", "")
            status, body, _ = request(gw.admin_port, "/admin/api/reload", page, method="POST",
                                      body="{}")
            self.assertEqual(status, 200, body)
            gw.follow_handover(count=2)
            gw.wait_log("admin page: 0 session(s) carried over from the process before")
            self.assertEqual(request(gw.admin_port, "/admin/api/status", page)[0], 401)

    def test_a_handover_that_fails_changes_nothing(self):
        with self.gateway() as gw:
            pid = self.status(gw)["pid"]
            # A port held here: the new process cannot bind it, exits, and
            # the old one goes on serving as it was.
            held = ClosedPort()
            self.addCleanup(held.close)
            gw.rewrite_config("  api:\n    address: 127.0.0.1\n    port: 0\n",
                         "  api:\n    address: 127.0.0.1\n    port: %d\n" % held.port)
            status, doc = self.reload(gw)
            self.assertEqual(status, 500, doc)
            self.assertFalse(doc["reloaded"])
            self.assertIn("before it was ready", doc["error"])
            self.assertIn("nothing changed", doc["error"])
            log = gw.wait_log(HANDOVER_FAILED)
            self.assertEqual(log.count(HANDOVER_FAILED), 1)
            self.assertIn("this process (pid %d) goes on serving" % pid, log)
            self.assertEqual(chat(gw.api_port, "ann", "still here")[0], 200)
            self.assertEqual(self.status(gw)["pid"], pid)

    def test_context_turns_take_effect_for_the_next_message(self):
        with self.gateway() as gw:
            for i in range(4):
                chat(gw.api_port, "ann", "q%d" % i)
            self.assertEqual(chat(gw.api_port, "ann", "q4")[1]["answer"], "echo: q4 (turn 5)")
            gw.rewrite_config("router:\n", "router:\n  contextTurns: 2\n")
            status, doc = self.reload(gw)
            self.assertEqual((status, doc["applied"]), (200, ["router.contextTurns"]), doc)
            # The context stored from now on keeps the last two exchanges.
            chat(gw.api_port, "ann", "q5")
            self.assertEqual(chat(gw.api_port, "ann", "q6")[1]["answer"], "echo: q6 (turn 3)")

    def test_api_reload_reports_both_lists(self):
        with self.gateway() as gw:
            gw.rewrite_config("  level: debug", "  level: warn")
            gw.rewrite_config("    - name: memory\n      plugin: memory.so\n",
                         "    - name: memory\n      plugin: memory.so\n"
                         "    - name: echo2\n      plugin: echo.so\n")
            old_pid = self.status(gw)["pid"]
            status, doc = self.reload(gw)
            self.assertEqual(status, 200, doc)
            self.assertEqual(doc["applied"], ["logging.level"])
            self.assertEqual(doc["handover"], ["plugins.instances[echo2] (added)"])
            self.assertTrue(doc["reloaded"])
            self.assertEqual(gw.follow_handover(), doc["pid"])
            self.assertNotEqual(doc["pid"], old_pid)
            self.assertEqual(self.status(gw)["instances"], 3)
            status, doc = self.reload(gw)  # the same file again: nothing left to do
            self.assertEqual((status, doc["applied"], doc["handover"]), (200, [], []), doc)
            # The level applied at once: the reload's own info line is gone.
            # Proved by a sentinel: an error logged after it (a refused
            # reload) is there, and no "nothing to apply" before it.
            with open(gw.config_path, "a") as f:
                f.write("router: [\n")
            self.assertEqual(self.reload(gw)[0], 400)
            log = gw.wait_log("refused, nothing changed")
            self.assertNotIn("nothing to apply", log)
            self.assertNotIn("applied logging.level", log)  # at info too: not written

    def test_a_broken_config_changes_nothing(self):
        with self.gateway() as gw:
            gw.rewrite_config("router:\n", "router:\n  contextTurns: 2\n  colour: blue\n")
            status, doc = self.reload(gw)
            self.assertEqual(status, 400, doc)
            self.assertFalse(doc["reloaded"])
            self.assertIn("router.colour", doc["error"])
            self.assertIn("chatgate.yaml:", doc["error"])
            self.assertEqual(self.effective(gw)["router"]["contextTurns"], 10)
            gw.wait_log("error config reload from %s: refused, nothing changed: %s:"
                        % (gw.config_path, gw.config_path))
            # A plugin section is checked against the running plugin's schema.
            gw.rewrite_config("  colour: blue\n", "")
            gw.rewrite_config("      plugin: memory.so\n",
                         "      plugin: memory.so\n      config:\n        maxEntires: 5\n")
            status, doc = self.reload(gw)
            self.assertEqual(status, 400, doc)
            self.assertIn("maxEntires", doc["error"])
            self.assertEqual(self.effective(gw)["router"]["contextTurns"], 10)
            # YAML that does not parse.
            with open(gw.config_path, "a") as f:
                f.write("router: [\n")
            status, doc = self.reload(gw)
            self.assertEqual(status, 400, doc)
            self.assertEqual(chat(gw.api_port, "x", "still here")[0], 200)

    def test_a_new_token_ends_sessions_and_replaces_the_old(self):
        with self.gateway() as gw:
            status, _, headers = request(gw.admin_port, "/admin/api/login", method="POST",
                                         body=json.dumps({"token": TOKEN}))
            self.assertEqual(status, 200)
            cookie = {"Cookie": headers["Set-Cookie"].split(";")[0]}
            self.assertEqual(request(gw.admin_port, "/admin/api/status", cookie)[0], 200)
            gw.rewrite_config("token: ${ADMIN_T}", "token: ${ADMIN_T2}")
            status, doc = self.reload(gw)
            self.assertEqual((status, doc["applied"]), (200, ["admin.token"]))
            self.assertEqual(request(gw.admin_port, "/admin/api/status", cookie)[0], 401)
            self.assertEqual(request(gw.admin_port, "/admin/api/status", BEARER)[0], 401)
            new = {"Authorization": "Bearer " + TOKEN + "-2"}
            self.assertEqual(request(gw.admin_port, "/admin/api/status", new)[0], 200)
            self.assertEqual(gw.stop(), 0)
            self.assertIn("applied admin.token", gw.log())
            self.assertNotIn(TOKEN, gw.log())

    def test_the_token_stays_while_the_admin_listener_is_exposed(self):
        config = gateway_config(0, ECHO_MEMORY, "echo", "memory", top_extra=self.TOP)
        config = config.replace("  admin:\n    address: 127.0.0.1", "  admin:\n    address: 0.0.0.0")
        with Chatgate(config, env={"ADMIN_T": TOKEN}) as gw:
            self.assertIn("admin on http://0.0.0.0:%d" % gw.admin_port, gw.log())
            gw.rewrite_config("admin:\n  token: ${ADMIN_T}\n", "")
            status, doc = self.reload(gw)
            self.assertEqual(status, 400, doc)
            self.assertIn("admin.token", doc["error"])
            self.assertEqual(request(gw.admin_port, "/admin/api/status")[0], 401)
            self.assertEqual(request(gw.admin_port, "/admin/api/status", BEARER)[0], 200)
            # Moved to loopback in the same file: a new process takes both
            # at once, so the open API is never reachable from beyond.
            gw.rewrite_config("address: 0.0.0.0", "address: 127.0.0.1")
            status, doc = self.reload(gw)
            self.assertEqual(status, 200, doc)
            self.assertEqual(doc["handover"], ["listeners.admin"])
            gw.follow_handover()
            self.assertIn("admin on http://127.0.0.1:%d" % gw.admin_port, gw.log())
            self.assertEqual(request(gw.admin_port, "/admin/api/status")[0], 200)

    def test_reload_needs_auth_and_csrf(self):
        with self.gateway() as gw:
            self.assertEqual(self.reload(gw, {})[0], 401)
        with Gateway() as gw:  # no token: the open API still needs the CSRF token
            self.assertEqual(self.reload(gw, {})[0], 403)
            csrf = json.loads(request(gw.admin_port, "/admin/api/session")[1])["csrf"]
            self.assertEqual(self.reload(gw, {"X-CSRF-Token": csrf})[0], 200)


class ReloadConflictTest(unittest.TestCase):
    """POST /admin/api/reload answers 409 without a config file and while
    another reload runs (docs/operator-guide.md)."""

    def test_without_a_config_file_a_reload_is_409(self):
        # make run's setup: the embedded default, its ports moved to 0
        # through the variables it reads.
        env = {"CHATGATE_API_PORT": "0", "CHATGATE_ADMIN_PORT": "0",
               "CHATGATE_PLUGIN_DIR": os.path.abspath(PLUGIN_DIR), "CHATGATE_ADMIN_TOKEN": ""}
        with Chatgate(None, env=env) as gw:
            csrf = {"X-CSRF-Token": json.loads(request(gw.admin_port, "/admin/api/session")[1])["csrf"]}
            status, body, _ = request(gw.admin_port, "/admin/api/reload", csrf, method="POST",
                                      body="{}")
            self.assertEqual(status, 409, body)
            self.assertEqual(json.loads(body), {
                "reloaded": False,
                "error": "chatgate runs on its embedded default config (no --config file)"})
            line = "config reload: chatgate runs on its embedded default config; nothing to reload"
            gw.wait_log("warning " + line)
            gw.proc.send_signal(signal.SIGHUP)  # the same for the signal
            gw.wait_log(line, count=2)
            self.assertEqual(chat(gw.port, "u", "still here")[1]["answer"], "echo: still here (turn 1)")

    def test_a_reload_while_another_runs_is_409(self):
        with Gateway(top_extra="admin:\n  token: ${ADMIN_T}\n", env={"ADMIN_T": TOKEN}) as gw:
            with open(gw.config_path) as f:
                text = f.read().replace("router:\n", "router:\n  contextTurns: 4\n")
            # The file becomes a FIFO: the first reload's read (on the thread
            # pool) waits in it until this test writes the new config.
            os.unlink(gw.config_path)
            os.mkfifo(gw.config_path)
            first = {}
            t = threading.Thread(target=lambda: first.setdefault("r", request(
                gw.admin_port, "/admin/api/reload", BEARER, method="POST", body="{}")))
            t.start()

            def writer():
                # Opens only once a reader has the FIFO open: the reload runs.
                try:
                    return os.open(gw.config_path, os.O_WRONLY | os.O_NONBLOCK)
                except OSError as e:
                    if e.errno != errno.ENXIO:
                        raise
                    return None

            fd = wait_for(writer, "the first reload to open the config file")
            try:
                try:
                    status, body, _ = request(gw.admin_port, "/admin/api/reload", BEARER,
                                              method="POST", body="{}")
                except TimeoutError:
                    self.fail("a second reload was not refused while the first ran: it waited")
                self.assertEqual(status, 409, body)
                self.assertEqual(json.loads(body),
                                 {"reloaded": False, "error": "a reload is already running"})
                self.assertNotIn("r", first)  # the first is still running
            finally:
                os.write(fd, text.encode())
                os.close(fd)
            t.join(30)
            status, body, _ = first["r"]
            self.assertEqual(status, 200, body)
            self.assertEqual(json.loads(body)["applied"], ["router.contextTurns"])
            # Once it finished, the next reload runs (and reads the FIFO again).
            t = threading.Thread(target=lambda: first.update(r=request(
                gw.admin_port, "/admin/api/reload", BEARER, method="POST", body="{}")))
            t.start()
            fd = wait_for(writer, "the next reload to open the config file")
            os.write(fd, text.encode())
            os.close(fd)
            t.join(30)
            self.assertEqual(first["r"][0], 200, first["r"])
            self.assertEqual(json.loads(first["r"][1])["applied"], [])


def probe(name="probe", extra=""):
    return ("    - name: %s\n      plugin: %s/wsprobe.so\n      config:\n"
            "        url: ws://127.0.0.1:9/\n%s" % (name, FIXTURE_DIR, extra))


class SendTest(unittest.TestCase):
    def gateway(self, instances):
        return Gateway(ECHO_MEMORY + instances, top_extra="admin:\n  token: ${ADMIN_T}\n",
                       env={"ADMIN_T": TOKEN})

    def send(self, gw, doc, headers=BEARER):
        status, body, _ = request(gw.admin_port, "/admin/api/send", headers, method="POST",
                                  body=doc if isinstance(doc, str) else json.dumps(doc))
        return status, json.loads(body)

    def sent(self, gw, name="probe"):
        body = request(gw.api_port, "/wsprobe/%s/sent" % name)[1]
        return [json.loads(line) for line in body.splitlines()]

    def test_a_message_goes_out_through_the_channel(self):
        with self.gateway(probe()) as gw:
            status, doc = self.send(gw, {"channel": "probe", "conversationId": "oc_team",
                                         "conversationType": "group", "text": "deploy at 5"})
            self.assertEqual((status, doc), (200, {"sent": True, "channel": "probe"}))
            status, doc = self.send(gw, {"channel": "probe", "conversationId": "u1",
                                         "text": "hi"})
            self.assertEqual(status, 200, doc)
            first, second = self.sent(gw)
            self.assertEqual(first["conversation"], "oc_team")
            self.assertEqual((first["type"], first["format"], first["flags"], first["seq"]),
                             (2, 0, 2, 1))  # group, text, FINAL, 1
            self.assertEqual((first["text"], first["inReplyTo"]), ("deploy at 5", ""))
            self.assertEqual((second["type"], second["conversation"]), (1, "u1"))
            self.assertNotEqual(first["answer"], second["answer"])
            m = scrape(gw.admin_port)
            self.assertEqual(m['chatgate_admin_sends_total{channel="probe",result="ok"}'], 2)

    def test_a_channel_that_fails_gives_502_and_a_log_line(self):
        with self.gateway(probe(extra="        sendStatus: -8\n")) as gw:
            status, doc = self.send(gw, {"channel": "probe", "conversationId": "u1", "text": "x"})
            self.assertEqual(status, 502, doc)
            self.assertEqual(doc["error"], "channel 'probe' could not deliver: i/o error")
            self.assertTrue(wait_until(lambda: "admin send: channel 'probe'" in gw.log()))
            m = scrape(gw.admin_port)
            self.assertEqual(m['chatgate_admin_sends_total{channel="probe",result="failed"}'], 1)

    def test_bad_requests_are_refused_and_nothing_is_sent(self):
        failed = probe("down", "        state: 3\n")
        with self.gateway(probe() + failed) as gw:
            cases = [
                ("not json", 400, "expected"),
                ({"channel": "probe", "text": "x"}, 400, "expected"),
                ({"channel": "probe", "conversationId": "u", "text": ""}, 400, "must not be empty"),
                ({"channel": "probe", "conversationId": "u", "text": "x",
                  "conversationType": "room"}, 400, "direct or group"),
                ({"channel": "probe", "conversationId": "u", "text": "x", "format": "markdown"},
                 400, "does not render markdown"),
                ({"channel": "probe", "conversationId": "u", "text": 5}, 400, "expected"),
                ({"channel": "nope", "conversationId": "u", "text": "x"}, 404, "no channel"),
                ({"channel": "echo", "conversationId": "u", "text": "x"}, 404, "no channel"),
                ({"channel": "web", "conversationId": "u", "text": "x"}, 404, "no channel"),
            ]
            for doc, want, words in cases:
                status, answer = self.send(gw, doc)
                self.assertEqual(status, want, (doc, answer))
                self.assertIn(words, answer["error"])
            wait_for(lambda: request(gw.admin_port, "/readyz")[0] == 503, "'down' to fail")
            status, answer = self.send(gw, {"channel": "down", "conversationId": "u", "text": "x"})
            self.assertEqual(status, 503, answer)
            self.assertIn("channel 'down' is failed", answer["error"])
            self.assertEqual(self.send(gw, {"channel": "probe", "conversationId": "u",
                                            "text": "x"}, {})[0], 401)
            self.assertEqual(self.sent(gw), [])
            self.assertEqual(self.sent(gw, "down"), [])


class HostSendTest(unittest.TestCase):
    """cg_host_api_t.send_message (ABI 1.3): one plugin notifies through a
    channel instance, through wsprobe's /notify."""

    def test_a_plugin_sends_through_another_channel(self):
        with Gateway(ECHO_MEMORY + probe() + probe("probe2")) as gw:
            def notify(body):
                status, text, _ = request(gw.api_port, "/wsprobe/probe/notify", method="POST",
                                          body=body)
                self.assertEqual(status, 200)
                return int(text)
            self.assertEqual(notify("probe2 oc_ops disk almost full"), 0)
            [sent] = [json.loads(line) for line in
                      request(gw.api_port, "/wsprobe/probe2/sent")[1].splitlines()]
            self.assertEqual((sent["conversation"], sent["text"], sent["type"], sent["flags"]),
                             ("oc_ops", "disk almost full", 2, 2))
            self.assertEqual(notify("nowhere oc_x text"), -3)  # CG_ENOENT
            self.assertEqual(notify("echo oc_x text"), -3)     # a model is no channel
            # The log is written by its own thread: wait for the line.
            self.assertTrue(wait_until(
                lambda: "send_message: no channel plugin instance named 'nowhere'" in gw.log()),
                gw.log())


class ChannelDropTest(unittest.TestCase):
    """cg_host_api_t.message_dropped (ABI 1.3), through wsprobe's /drop."""

    def test_a_channel_drop_is_counted_received_and_dropped(self):
        with Gateway(ECHO_MEMORY + probe()) as gw:
            def drop(reason):
                status, body, _ = request(gw.api_port, "/wsprobe/probe/drop", method="POST",
                                          body=reason)
                self.assertEqual(status, 200)
                return int(body)
            self.assertEqual(drop("policy"), 0)
            self.assertEqual(drop("policy"), 0)
            self.assertEqual(drop("unsupported"), 0)
            for bad in ("", "Policy", "no-dash", "x" * 33, "a b"):
                self.assertEqual(drop(bad), -1, bad)  # CG_EINVAL
            m = scrape(gw.admin_port)
            self.assertEqual(m['chatgate_messages_received_total{channel="probe"}'], 3)
            self.assertEqual(
                m['chatgate_messages_dropped_total{channel="probe",reason="policy"}'], 2)
            self.assertEqual(
                m['chatgate_messages_dropped_total{channel="probe",reason="unsupported"}'], 1)


if __name__ == "__main__":
    unittest.main()
