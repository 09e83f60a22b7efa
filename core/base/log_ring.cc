#include "base/log_ring.h"

#include <deque>
#include <mutex>

namespace cg {
namespace {

struct Ring {
  std::mutex mu;
  std::deque<LogLine> lines;      // guarded by mu
  uint64_t next_seq = 1;          // guarded by mu
  std::function<void()> watcher;  // guarded by mu
  bool notified = false;          // guarded by mu: told, not yet read
};

// Destroyed at exit, after log_shutdown has joined the logger's thread.
Ring &ring() {
  static Ring r;
  return r;
}

}  // namespace

void log_ring_append(int level, int64_t unix_ms, std::string text) {
  Ring &r = ring();
  std::lock_guard lock(r.mu);
  r.lines.push_back({r.next_seq++, unix_ms, level, std::move(text)});
  if (r.lines.size() > kLogRingLines) r.lines.pop_front();
  // Under the lock, so log_ring_watch({}) returns only once no call into the
  // old watcher is running: its owner may then go away.
  if (r.watcher && !r.notified) {
    r.notified = true;
    r.watcher();
  }
}

std::vector<LogLine> log_ring_read(uint64_t after_seq, int min_level, size_t max_lines) {
  Ring &r = ring();
  std::vector<LogLine> out;
  std::lock_guard lock(r.mu);
  r.notified = false;
  for (auto it = r.lines.rbegin(); it != r.lines.rend() && out.size() < max_lines; ++it) {
    if (it->seq <= after_seq) break;
    if (it->level >= min_level) out.push_back(*it);
  }
  return {out.rbegin(), out.rend()};
}

uint64_t log_ring_last_seq() {
  Ring &r = ring();
  std::lock_guard lock(r.mu);
  return r.next_seq - 1;
}

void log_ring_watch(std::function<void()> fn) {
  Ring &r = ring();
  std::lock_guard lock(r.mu);
  r.watcher = std::move(fn);
  r.notified = false;
}

}  // namespace cg
