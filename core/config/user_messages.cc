#include "config/user_messages.h"

#include <algorithm>
#include <array>
#include <vector>

namespace cg {
namespace {

constexpr std::array<std::string_view, kUserLocaleCount> kLocales = {"en", "zh-CN"};

struct Entry {
  std::string_view key;
  std::array<std::string_view, kUserLocaleCount> text;  // by kLocales
};

// In UserMsg's order. The Chinese is what a DingTalk or Feishu user reads
// in a bot's reply: short, polite, no English left in it.
constexpr std::array<Entry, kUserMsgCount> kCatalog = {{
    {"help",
     {"Commands:\n/reset - forget this conversation and start over\n/help - show this help",
      "可用命令：\n/reset - 清除本次对话，重新开始\n/help - 显示本帮助"}},
    {"reset", {"Context cleared. Let's start over.", "已清除对话上下文，我们重新开始吧。"}},
    {"unknownCommand", {"Unknown command {command}. {help}", "未知命令 {command}。{help}"}},
    {"busy",
     {"The model is busy right now, please try again in a moment.", "模型正忙，请稍后再试。"}},
    {"timeout", {"The model took too long to answer, please try again.", "模型响应超时，请重试。"}},
    {"failed",
     {"Sorry, something went wrong while answering. Please try again.",
      "抱歉，回答时出了点问题，请重试。"}},
    {"restarting",
     {"The bot is restarting, please send that again shortly.",
      "机器人正在重启，请稍后重新发送这条消息。"}},
    {"slowDown",
     {"You are sending messages faster than I can answer. Please slow down and try again in a "
      "moment.",
      "消息发送太快了，我来不及回答。请放慢速度，稍后再试。"}},
    {"unsupported",
     {"Sorry, I can't read this kind of message yet. Please send it as text.",
      "抱歉，我暂时还看不懂这类消息，请发送文字。"}},
    {"received", {"Received", "已收到"}},
}};

}  // namespace

std::span<const std::string_view> user_message_locales() { return kLocales; }

bool user_message_locale_known(std::string_view locale) {
  return std::find(kLocales.begin(), kLocales.end(), locale) != kLocales.end();
}

size_t user_message_locale_index(std::string_view locale) {
  const auto it = std::find(kLocales.begin(), kLocales.end(), locale);
  return it == kLocales.end() ? 0 : static_cast<size_t>(it - kLocales.begin());
}

std::string_view user_message_key(UserMsg msg) { return kCatalog[static_cast<size_t>(msg)].key; }

std::optional<UserMsg> user_message_by_key(std::string_view key) {
  for (size_t i = 0; i < kCatalog.size(); i++) {
    if (kCatalog[i].key == key) return static_cast<UserMsg>(i);
  }
  return std::nullopt;
}

std::string_view user_message_text(UserMsg msg, std::string_view locale) {
  return kCatalog[static_cast<size_t>(msg)].text[user_message_locale_index(locale)];
}

std::vector<std::string> user_message_placeholders(std::string_view text) {
  std::vector<std::string> out;
  for (size_t at = text.find('{'); at != std::string_view::npos; at = text.find('{', at + 1)) {
    const size_t end = text.find('}', at);
    if (end == std::string_view::npos) break;
    out.emplace_back(text.substr(at + 1, end - at - 1));
  }
  return out;
}

std::string user_message_format(
    std::string_view text, std::span<const std::pair<std::string_view, std::string_view>> values) {
  std::string out;
  out.reserve(text.size() + 64);
  size_t at = 0;
  while (at < text.size()) {
    const size_t open = text.find('{', at);
    if (open == std::string_view::npos) break;
    const size_t close = text.find('}', open);
    if (close == std::string_view::npos) break;
    out.append(text.substr(at, open - at));
    const std::string_view name = text.substr(open + 1, close - open - 1);
    bool found = false;
    for (const auto &[k, v] : values) {
      if (k == name) {
        out.append(v);
        found = true;
        break;
      }
    }
    if (!found) out.append(text.substr(open, close - open + 1));
    at = close + 1;
  }
  out.append(text.substr(std::min(at, text.size())));
  return out;
}

}  // namespace cg
