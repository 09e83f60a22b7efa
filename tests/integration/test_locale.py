"""What users read, in their language (config/user_messages.h): the real
binary's chat API with router.locale zh-CN answers the busy, restarting and
command texts in Chinese, a `messages:` override wins in every locale, and
an unknown key or locale is refused with its line before any port opens;
and a plugin reads the catalog through cg_host_api_t.user_text (ABI 1.8):
the test-only wsprobe channel asks for keys as a third-party plugin would
(its instance's locale, the override, a live reload, an unknown key). The
Feishu and DingTalk channels' own texts are checked through their fakes
(test_feishu.py, test_dingtalk.py)."""
import signal
import threading
import unittest

from harness import FIXTURE_DIR, Chatgate, chat, make_config, wait_for
from test_admin import request
from test_lifecycle import in_flight


def zh_config(echo_config="", extra=""):
    return make_config(echo_config=echo_config, router_extra="  locale: zh-CN\n") + extra


class LocaleTest(unittest.TestCase):
    def test_chinese_busy_and_command_texts(self):
        with Chatgate(zh_config(echo_config="        fail: busy")) as gw:
            status, body, _ = chat(gw.port, "u", "你好")
            self.assertEqual((status, body["answer"]), (503, "模型正忙，请稍后再试。"))
            status, body, _ = chat(gw.port, "u", "/foo")
            self.assertEqual(status, 200)
            self.assertEqual(body["answer"], "未知命令 /foo。可用命令：\n/reset - 清除本次对话，重新开始\n"
                                             "/help - 显示本帮助")
            self.assertEqual(chat(gw.port, "u", "/reset")[1]["answer"],
                             "已清除对话上下文，我们重新开始吧。")

    def test_restarting_text_in_chinese(self):
        cg = Chatgate(zh_config(echo_config="        delayMs: 5000")
                      .replace("deadlineMs: 5000", "deadlineMs: 200")).start()
        self.addCleanup(cg.__exit__, None, None, None)
        answers = []
        t = threading.Thread(target=lambda: answers.append(chat(cg.port, "u", "慢")))
        t.start()
        # The request reaches the model (echo holds it 5 s), then SIGTERM:
        # the 200 ms deadline cancels it with the restarting text.
        wait_for(lambda: in_flight(cg) == 1, "the request to reach the model")
        cg.proc.send_signal(signal.SIGTERM)
        t.join(30)
        self.assertEqual(answers[0][1]["answer"], "机器人正在重启，请稍后重新发送这条消息。")

    def test_an_override_wins_in_every_locale(self):
        extra = "messages:\n  busy: \"排队中，请稍候\"\n"
        for config in (zh_config(echo_config="        fail: busy", extra=extra),
                       make_config(echo_config="        fail: busy") + extra):
            with Chatgate(config) as gw:
                self.assertEqual(chat(gw.port, "u", "hi")[1]["answer"], "排队中，请稍候")

    def test_unknown_key_and_locale_are_refused_with_their_line(self):
        bad = make_config() + "messages:\n  bussy: x\n"
        line = bad.count("\n", 0, bad.index("  bussy")) + 1
        for config, error in ((bad, ":%d: messages.bussy: unknown key 'bussy'" % line),
                              (make_config(router_extra="  locale: fr\n"),
                               "router.locale: expected one of en, zh-CN, got 'fr'")):
            gw = Chatgate(config, expect_exit=1)
            self.addCleanup(gw.__exit__, None, None, None)
            gw.start(wait_ready=False)
            self.assertEqual(gw.wait_exit(), 1)
            self.assertIn(error, gw.log())



def probe(name, locale=None):
    return ("    - name: %s\n      plugin: %s/wsprobe.so\n%s      config:\n"
            "        url: ws://127.0.0.1:9/\n"
            % (name, FIXTURE_DIR, "      locale: %s\n" % locale if locale else ""))


class PluginUserTextTest(unittest.TestCase):
    def user_text(self, gw, instance, key):
        status, body, _ = request(gw.port, "/wsprobe/%s/usertext" % instance, method="POST",
                                  body=key)
        return status, body

    def test_a_plugin_reads_its_instance_locale_and_the_overrides(self):
        config = make_config(extra_instances=probe("zh", "zh-CN") + probe("plain"))
        with Chatgate(config) as gw:
            self.assertEqual(self.user_text(gw, "zh", "unsupported"),
                             (200, "抱歉，我暂时还看不懂这类消息，请发送文字。"))
            self.assertEqual(self.user_text(gw, "zh", "received"), (200, "已收到"))
            self.assertEqual(self.user_text(gw, "plain", "received"), (200, "Received"))
            self.assertEqual(self.user_text(gw, "plain", "busy"),
                             (200, "The model is busy right now, please try again in a moment."))
            self.assertEqual(self.user_text(gw, "plain", "nosuchkey"), (404, "-3"))  # CG_ENOENT
            # A messages: override is live on reload, and a plugin's next
            # call reads it (the view it had before was valid only until
            # its callback returned).
            with open(gw.config_path, "a") as f:
                f.write("messages:\n  received: \"收到，处理中\"\n")
            gw.proc.send_signal(signal.SIGHUP)
            gw.wait_log("config reload from %s: applied messages" % gw.config_path)
            self.assertEqual(self.user_text(gw, "zh", "received"), (200, "收到，处理中"))
            self.assertEqual(self.user_text(gw, "plain", "received"), (200, "收到，处理中"))


if __name__ == "__main__":
    unittest.main()
