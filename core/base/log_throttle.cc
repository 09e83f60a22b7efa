#include "base/log_throttle.h"

#include "base/loop.h"

namespace cg {
namespace {

// Causes are few by design; past this many, the quiet ones are forgotten
// so a key that does carry a per-sender part cannot grow without end.
constexpr size_t kMaxCauses = 4096;

}  // namespace

LogThrottle::~LogThrottle() {
  if (loop_ != nullptr && timer_id_ != 0) loop_->timer_stop(timer_id_);
}

void LogThrottle::attach(Loop &loop, FlushFn flush) {
  loop_ = &loop;
  flush_ = std::move(flush);
}

void LogThrottle::arm() {
  if (loop_ == nullptr || timer_id_ != 0) return;
  if (loop_->timer_start(interval_ms_, 0, &LogThrottle::on_timer, this, &timer_id_) != 0) {
    timer_id_ = 0;  // the loop is closing: the counts stay unwritten
  }
}

void LogThrottle::on_timer(void *self, uint64_t /*timer_id*/) {
  auto *t = static_cast<LogThrottle *>(self);
  t->timer_id_ = 0;
  t->flush_quiet(t->loop_->now_ms());
  for (const auto &[cause, c] : t->causes_) {
    if (c.held != 0) {  // held within the last interval: look again later
      t->arm();
      break;
    }
  }
}

void LogThrottle::flush_quiet(uint64_t now_ms) {
  for (auto &[cause, c] : causes_) {
    if (c.held == 0 || now_ms - c.last_ms < interval_ms_) continue;
    const uint64_t held = c.held;
    c.held = 0;
    c.last_ms = now_ms;
    if (flush_) flush_(cause, held, c.tag, c.line);
  }
}

bool LogThrottle::admit(std::string_view cause, uint64_t now_ms, uint64_t *held, int tag,
                        std::string_view line) {
  auto it = causes_.find(cause);
  if (it == causes_.end()) {
    if (causes_.size() >= kMaxCauses) {
      flush_quiet(now_ms);  // their counts are written before they are forgotten
      std::erase_if(causes_,
                    [&](const auto &e) { return now_ms - e.second.last_ms >= interval_ms_; });
    }
    causes_.emplace(std::string(cause), Cause{now_ms, 0, tag, std::string(line)});
    *held = 0;
    return true;
  }
  Cause &c = it->second;
  if (now_ms - c.last_ms < interval_ms_) {
    c.held++;
    c.tag = tag;
    arm();
    return false;
  }
  *held = c.held;
  c.held = 0;
  c.last_ms = now_ms;
  c.tag = tag;
  c.line.assign(line);
  return true;
}

bool LogThrottle::due(std::string_view cause, uint64_t now_ms, std::string *suffix, int tag,
                      std::string_view line) {
  uint64_t held = 0;
  if (!admit(cause, now_ms, &held, tag, line)) return false;
  *suffix = log_throttle_suffix(held);
  return true;
}

std::string log_throttle_suffix(uint64_t held) {
  if (held == 0) return {};
  return " (and " + std::to_string(held) + " more like it since the last such line)";
}

}  // namespace cg
