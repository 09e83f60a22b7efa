// Warnings that can repeat per request or per message (a full queue, a
// refused callback, a dead model) are written at most once per interval
// per cause, and each line written says how many like it were held back
// since the last one, so a flood costs one line a second, not one a message.
//
//   uint64_t held;
//   if (throttle.admit("queue_full", loop.now_ms(), &held))
//     spdlog::warn("inbound queue full ...{}", log_throttle_suffix(held));
//
// A cause that goes quiet after a held-back stretch would leave its count
// unwritten: with attach(), a timer hands such counts to a flush function
// one interval after the cause's last line, and stops when nothing is held.
//
// The metrics still count every occurrence; the log is for the operator's
// eyes. A cause is a short stable key (what went wrong and where, not who):
// the number of causes stays small.
//
// THREAD: not thread-safe; one per loop thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace cg {

class Loop;

class LogThrottle {
 public:
  // A quiet cause's held-back count; `tag` is what the last held-back
  // occurrence passed (a log level, say), `line` what the cause's last
  // written line passed (empty if nothing).
  using FlushFn =
      std::function<void(std::string_view cause, uint64_t held, int tag, std::string_view line)>;

  explicit LogThrottle(uint64_t interval_ms = 1000) : interval_ms_(interval_ms) {}
  ~LogThrottle();
  LogThrottle(const LogThrottle &) = delete;
  LogThrottle &operator=(const LogThrottle &) = delete;

  // Writes quiet causes' counts through `flush` from a timer on `loop`.
  // OWNERSHIP: `loop` is borrowed and must outlive this throttle.
  void attach(Loop &loop, FlushFn flush);
  bool attached() const { return loop_ != nullptr; }
  // Hands every cause whose interval has passed with occurrences held back
  // to the flush function, as a line written now. The timer calls it.
  void flush_quiet(uint64_t now_ms);

  // True when a line for `cause` may be written at `now_ms`; then *held is
  // the number of occurrences held back since the last line written for
  // it. False (and the occurrence counted) otherwise.
  // `tag` is kept for the flush of a held-back stretch, and `line`, when
  // the line is written, to name what the flushed count was like.
  bool admit(std::string_view cause, uint64_t now_ms, uint64_t *held, int tag = 0,
             std::string_view line = {});
  // As admit, with the held-back count already written as the line's
  // suffix (log_throttle_suffix): what a caller appends to its line.
  bool due(std::string_view cause, uint64_t now_ms, std::string *suffix, int tag = 0,
           std::string_view line = {});

  size_t causes() const { return causes_.size(); }

 private:
  struct Cause {
    uint64_t last_ms = 0;
    uint64_t held = 0;
    int tag = 0;
    std::string line;  // the last line written for the cause (at most one a second)
  };
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  static void on_timer(void *self, uint64_t timer_id);
  void arm();

  uint64_t interval_ms_;
  std::unordered_map<std::string, Cause, Hash, std::equal_to<>> causes_;
  Loop *loop_ = nullptr;
  FlushFn flush_;
  uint64_t timer_id_ = 0;  // 0: no timer pending
};

// " (and N more like it since the last such line)", or "" for 0.
std::string log_throttle_suffix(uint64_t held);

}  // namespace cg
