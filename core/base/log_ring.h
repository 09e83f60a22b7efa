// The last log lines in memory, for the admin page's log view and its live
// tail. The logger's thread appends (through a spdlog sink, log.cc); the
// loop thread reads. A watcher is told, at most once until it has read, that
// new lines arrived.
//
// THREAD: every function is thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace cg {

struct LogLine {
  uint64_t seq = 0;  // 1, 2, ...: a reader asks for lines after the last it saw
  int64_t unix_ms = 0;
  int level = 0;     // spdlog::level::level_enum
  std::string text;  // the message, without time and level
};

inline constexpr size_t kLogRingLines = 1000;

// Appends a line (the sink does). Calls the watcher if one is set and it
// has read since the last call.
void log_ring_append(int level, int64_t unix_ms, std::string text);

// Lines after `after_seq` at `min_level` or above, at most `max_lines` of
// the newest. Marks the watcher as having read.
std::vector<LogLine> log_ring_read(uint64_t after_seq, int min_level, size_t max_lines);

// The sequence number of the newest line (0 when none).
uint64_t log_ring_last_seq();

// Sets (or, with an empty function, clears) the one watcher. It runs on the
// appending thread under the ring's lock: it must only hand off (Loop::post)
// and never log. Once clearing returned, the old watcher is not running.
void log_ring_watch(std::function<void()> fn);

}  // namespace cg
