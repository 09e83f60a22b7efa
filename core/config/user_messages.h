// The message catalog: every text an end user reads that chatgate itself
// writes (the router's notices, the command answers, /help, and what channel
// plugins say on their own: the unsupported-message reply, a card action's
// toast, read through cg_host_api_t.user_text), in each locale it ships, by
// key. Operator-facing output (logs, --check-config, admin API errors)
// stays English, as nginx's and systemd's do.
//
// A text may hold placeholders, "{name}": every locale of a key holds the
// same ones (tests/unit/test_user_messages.cc), and user_message_format
// fills them.
//
// THREAD: any (constant tables and pure functions).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cg {

enum class UserMsg : uint8_t {
  kHelp,            // the /help answer
  kReset,           // after /reset
  kUnknownCommand,  // {command}, {help}
  kBusy,            // the model is at capacity, or the backlog waited too long
  kTimeout,         // the model did not answer in router.modelTimeoutMs
  kFailed,          // the model failed
  kRestarting,      // cancelled by shutdown
  kSlowDown,        // over a rate limit
  kUnsupported,     // a channel's answer to a message type it does not read
  kReceived,        // a channel's acknowledgement of a card button press (a toast)
  kCount
};

inline constexpr size_t kUserMsgCount = static_cast<size_t>(UserMsg::kCount);

// The locales with a complete catalog: "en", "zh-CN".
inline constexpr size_t kUserLocaleCount = 2;
std::span<const std::string_view> user_message_locales();
bool user_message_locale_known(std::string_view locale);
// The locale's place in user_message_locales(); 0 (en) for an unknown one.
size_t user_message_locale_index(std::string_view locale);

// The key in config (`messages:`), e.g. "busy".
std::string_view user_message_key(UserMsg msg);
std::optional<UserMsg> user_message_by_key(std::string_view key);

// The shipped text of `msg` in `locale` (a known one).
std::string_view user_message_text(UserMsg msg, std::string_view locale);

// The placeholders a text holds, in order ("command", "help").
std::vector<std::string> user_message_placeholders(std::string_view text);

// `text` with each "{name}" replaced by its value; unknown ones stay.
std::string user_message_format(
    std::string_view text, std::span<const std::pair<std::string_view, std::string_view>> values);

}  // namespace cg
