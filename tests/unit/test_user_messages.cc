// Unit tests for core/config/user_messages.cc (the catalog of what users
// read) and the config keys that choose and override it.
#include <catch2/catch.hpp>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "config/user_messages.h"

namespace {

// The text with its placeholders and command names taken out: what is left
// of a translated text must not be English.
std::string without_markup(std::string text) {
  for (const std::string word : {"/reset", "/help"}) {
    for (size_t at = text.find(word); at != std::string::npos; at = text.find(word)) {
      text.erase(at, word.size());
    }
  }
  for (size_t open = text.find('{'); open != std::string::npos; open = text.find('{')) {
    text.erase(open, text.find('}', open) - open + 1);
  }
  return text;
}

cg::Config load(const std::string &extra, std::string *error = nullptr) {
  const std::string yaml = R"(plugins:
  instances:
    - name: echo
      plugin: echo.so
    - name: memory
      plugin: memory.so
)" + extra;
  cg::Config cfg;
  auto err = cg::config_load_string(yaml, "test.yaml", &cfg);
  if (error != nullptr) *error = err ? err->to_string() : "";
  return cfg;
}

}  // namespace

TEST_CASE("user messages: every key in every locale, with the same placeholders") {
  const auto locales = cg::user_message_locales();
  REQUIRE(locales.size() == 2);
  for (size_t i = 0; i < cg::kUserMsgCount; i++) {
    const auto msg = static_cast<cg::UserMsg>(i);
    INFO(cg::user_message_key(msg));
    CHECK(!cg::user_message_key(msg).empty());
    CHECK(cg::user_message_by_key(cg::user_message_key(msg)) == msg);
    const auto en = cg::user_message_placeholders(cg::user_message_text(msg, "en"));
    for (std::string_view locale : locales) {
      INFO(locale);
      const std::string_view text = cg::user_message_text(msg, locale);
      CHECK(!text.empty());
      CHECK(cg::user_message_placeholders(text) == en);
    }
    // A translation, not a copy: no Latin letter left in the Chinese.
    const std::string zh = without_markup(std::string(cg::user_message_text(msg, "zh-CN")));
    CHECK(zh.find_first_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") ==
          std::string::npos);
  }
  CHECK(!cg::user_message_by_key("nosuch"));
  CHECK(cg::user_message_locale_known("zh-CN"));
  CHECK(!cg::user_message_locale_known("zh"));
}

TEST_CASE("user messages: placeholders are filled, unknown ones kept") {
  const std::pair<std::string_view, std::string_view> values[] = {{"command", "/foo"}};
  CHECK(cg::user_message_format("Unknown command {command}. {help}", values) ==
        "Unknown command /foo. {help}");
  CHECK(cg::user_message_format("no placeholder", values) == "no placeholder");
  CHECK(cg::user_message_format("{command}", values) == "/foo");
  CHECK(cg::user_message_format("open { only", values) == "open { only");
}

TEST_CASE("user messages: router.locale, an instance's locale and overrides from config") {
  std::string error;
  cg::Config cfg = load("router: {model: echo, cache: memory}\n", &error);
  REQUIRE(error.empty());
  CHECK(cfg.router.locale == "en");
  CHECK(cfg.router.messages.empty());

  cfg = load(
      "router: {model: echo, cache: memory, locale: zh-CN}\n"
      "messages:\n  busy: \"请稍等\"\n  unknownCommand: \"{command}? {help}\"\n",
      &error);
  REQUIRE(error.empty());
  CHECK(cfg.router.locale == "zh-CN");
  CHECK(cfg.router.messages.at("busy") == "请稍等");
  CHECK(cfg.router.messages.size() == 2);

  const std::string with_instance_locale = R"(plugins:
  instances:
    - name: echo
      plugin: echo.so
      locale: en
    - name: memory
      plugin: memory.so
router: {model: echo, cache: memory, locale: zh-CN}
)";
  cg::Config inst;
  REQUIRE(!cg::config_load_string(with_instance_locale, "test.yaml", &inst));
  CHECK(inst.router.channel_locales.at("echo") == "en");
}

TEST_CASE("user messages: a wrong locale, key or placeholder is refused with its line") {
  std::string error;
  load("router: {model: echo, cache: memory, locale: fr}\n", &error);
  CHECK(error == "test.yaml:7: router.locale: expected one of en, zh-CN, got 'fr'");
  load("router: {model: echo, cache: memory}\nmessages:\n  bussy: x\n", &error);
  CHECK(error.find("test.yaml:9: messages.bussy: unknown key 'bussy'") == 0);
  load("router: {model: echo, cache: memory}\nmessages:\n  busy: \"{who} busy\"\n", &error);
  CHECK(error == "test.yaml:9: messages.busy: unknown placeholder {who} (this text has none)");
}
