// The log tail: GET /admin/api/logs (the last lines) and /admin/api/logs/stream
// (server-sent events, fed as the log ring gets new lines).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "admin/admin.h"
#include "admin/admin_internal.h"
#include "base/json.h"
#include "base/log_ring.h"

namespace cg {

namespace {

int level_of(std::string_view query) {
  const std::string_view name = query_value(query, "level");
  if (name.empty()) return spdlog::level::trace;
  const auto level = spdlog::level::from_str(std::string(name));
  return level == spdlog::level::off ? -1 : static_cast<int>(level);
}

std::string line_json(const LogLine &l) {
  const auto name = spdlog::level::to_string_view(static_cast<spdlog::level::level_enum>(l.level));
  return "{\"seq\":" + std::to_string(l.seq) + ",\"t\":" + std::to_string(l.unix_ms) +
         ",\"level\":\"" + std::string(name.data(), name.size()) +
         "\",\"text\":" + json_quote(l.text) + "}";
}

// The ?level= of a log request, or -1 after answering 400 for a bad one.
int requested_level(HttpServer &server, HttpExchange *ex, const HttpRequest &req) {
  const int level = level_of(req.query());
  if (level < 0) {
    respond_json(server, ex, 400, R"({"error":"level must be trace, debug, info, warn or error"})");
  }
  return level;
}

}  // namespace

void AdminApi::logs(HttpServer &server, HttpExchange *ex, const HttpRequest &req) {
  if (!authorize(server, ex, req)) return;
  const int level = requested_level(server, ex, req);
  if (level < 0) return;
  size_t lines = 200;
  if (const std::string_view n = query_value(req.query(), "lines"); !n.empty()) {
    lines = std::min<size_t>(kLogRingLines, std::strtoul(std::string(n).c_str(), nullptr, 10));
  }
  std::string body = "{\"lines\":[";
  bool first = true;
  for (const LogLine &l : log_ring_read(0, level, lines)) {
    if (!first) body += ",";
    first = false;
    body += line_json(l);
  }
  body += "],\"last\":" + std::to_string(log_ring_last_seq()) + "}";
  respond_json(server, ex, 200, body);
}

void AdminApi::logs_stream(HttpServer &server, HttpExchange *ex, const HttpRequest &req) {
  if (!authorize(server, ex, req)) return;
  const int level = requested_level(server, ex, req);
  if (level < 0) return;
  static constexpr std::array<HttpHeader, 3> kSse = {{{"Content-Type", "text/event-stream"},
                                                      {"Cache-Control", "no-store"},
                                                      {"X-Content-Type-Options", "nosniff"}}};
  server.stream_begin(ex, 200, kSse);
  uint64_t last = 0;
  for (const LogLine &l : log_ring_read(0, level, 100)) {
    server.stream_write(ex, "data: " + line_json(l) + "\n\n");
    last = l.seq;
  }
  tails_.push_back({ex, level, std::max(last, log_ring_last_seq())});
  server.set_abort_callback(ex, [this, ex, &server] {
    auto it =
        std::find_if(tails_.begin(), tails_.end(), [ex](const Tail &t) { return t.ex == ex; });
    if (it == tails_.end()) return;
    tails_.erase(it);
    server.stream_end(ex);
  });
}

void AdminApi::push_log_lines() {
  if (tails_.empty() || admin_server_ == nullptr) {
    log_ring_read(log_ring_last_seq(), 0, 0);  // marks the watcher as having read
    return;
  }
  uint64_t oldest = UINT64_MAX;
  for (const Tail &t : tails_) oldest = std::min(oldest, t.after_seq);
  const std::vector<LogLine> fresh = log_ring_read(oldest, spdlog::level::trace, kLogRingLines);
  for (Tail &t : tails_) {
    std::string out;
    for (const LogLine &l : fresh) {
      if (l.seq <= t.after_seq || l.level < t.min_level) continue;
      out += "data: " + line_json(l) + "\n\n";
    }
    if (!fresh.empty()) t.after_seq = std::max(t.after_seq, fresh.back().seq);
    if (!out.empty()) admin_server_->stream_write(t.ex, out);
  }
}

void AdminApi::end_streams() {
  std::vector<Tail> tails;
  tails.swap(tails_);
  for (const Tail &t : tails) admin_server_->stream_end(t.ex);
}

}  // namespace cg
