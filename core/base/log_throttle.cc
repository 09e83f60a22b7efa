#include "base/log_throttle.h"

namespace cg {
namespace {

// Causes are few by design; past this many, the quiet ones are forgotten
// so a key that does carry a per-sender part cannot grow without end.
constexpr size_t kMaxCauses = 4096;

}  // namespace

bool LogThrottle::admit(std::string_view cause, uint64_t now_ms, uint64_t *held) {
  auto it = causes_.find(cause);
  if (it == causes_.end()) {
    if (causes_.size() >= kMaxCauses) {
      std::erase_if(causes_,
                    [&](const auto &e) { return now_ms - e.second.last_ms >= interval_ms_; });
    }
    causes_.emplace(std::string(cause), Cause{now_ms, 0});
    *held = 0;
    return true;
  }
  Cause &c = it->second;
  if (now_ms - c.last_ms < interval_ms_) {
    c.held++;
    return false;
  }
  *held = c.held;
  c.held = 0;
  c.last_ms = now_ms;
  return true;
}

bool LogThrottle::due(std::string_view cause, uint64_t now_ms, std::string *suffix) {
  uint64_t held = 0;
  if (!admit(cause, now_ms, &held)) return false;
  *suffix = log_throttle_suffix(held);
  return true;
}

std::string log_throttle_suffix(uint64_t held) {
  if (held == 0) return {};
  return " (and " + std::to_string(held) + " more like it since the last such line)";
}

}  // namespace cg
