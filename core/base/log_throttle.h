// Warnings that can repeat per request or per message (a full queue, a
// refused callback, a dead model) are written at most once per interval
// per cause, and each line written says how many like it were held back
// since the last one, so a flood costs one line a second, not one a message.
//
//   uint64_t held;
//   if (throttle.admit("queue_full", loop.now_ms(), &held))
//     spdlog::warn("inbound queue full ...{}", log_throttle_suffix(held));
//
// The metrics still count every occurrence; the log is for the operator's
// eyes. A cause is a short stable key (what went wrong and where, not who):
// the number of causes stays small.
//
// THREAD: not thread-safe; one per loop thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>

namespace cg {

class LogThrottle {
 public:
  explicit LogThrottle(uint64_t interval_ms = 1000) : interval_ms_(interval_ms) {}

  // True when a line for `cause` may be written at `now_ms`; then *held is
  // the number of occurrences held back since the last line written for
  // it. False (and the occurrence counted) otherwise.
  bool admit(std::string_view cause, uint64_t now_ms, uint64_t *held);
  // As admit, with the held-back count already written as the line's
  // suffix (log_throttle_suffix): what a caller appends to its line.
  bool due(std::string_view cause, uint64_t now_ms, std::string *suffix);

  size_t causes() const { return causes_.size(); }

 private:
  struct Cause {
    uint64_t last_ms = 0;
    uint64_t held = 0;
  };
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  uint64_t interval_ms_;
  std::unordered_map<std::string, Cause, Hash, std::equal_to<>> causes_;
};

// " (and N more like it since the last such line)", or "" for 0.
std::string log_throttle_suffix(uint64_t held);

}  // namespace cg
