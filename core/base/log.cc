#include "base/log.h"

#include <chatgate/common.h>
#include <spdlog/async.h>
#include <spdlog/async_logger.h>
#include <spdlog/details/null_mutex.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <vector>

#include "base/log_ring.h"

namespace cg {
namespace {

std::array<std::atomic<uint64_t>, 7> g_line_counts{};

// Counts the lines written at each level, for chatgate_log_messages_total:
// an error-rate alert needs them. Runs on the logger's thread only.
class CountingSink final : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg &msg) override {
    const auto i = static_cast<size_t>(msg.level);
    if (i < g_line_counts.size()) g_line_counts[i].fetch_add(1, std::memory_order_relaxed);
  }
  void flush_() override {}
};

// Keeps the last lines for the admin page (log_ring.h).
class RingSink final : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg &msg) override {
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch()).count();
    log_ring_append(static_cast<int>(msg.level), ms,
                    std::string(msg.payload.data(), msg.payload.size()));
  }
  void flush_() override {}
};

constexpr const char *kLoggerName = "chatgate";
constexpr const char *kPattern = "%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v";
constexpr uint64_t kBytesPerMb = uint64_t{1024} * 1024;

// The async logger holds only a weak_ptr to its thread pool, so the pool
// needs an owner; the logger is kept too so that log_shutdown drains the one
// it installed even if someone replaced the default since.
std::shared_ptr<spdlog::details::thread_pool> g_pool;
std::shared_ptr<spdlog::async_logger> g_logger;

}  // namespace

std::string log_setup(const LoggingConfig &config) {
  // Config validation enforces these; a caller that skipped it must not get
  // a wrapped-around rotation size or spdlog's own exception.
  if (config.max_size_mb < 1 || config.max_size_mb > kLogMaxSizeMbLimit) {
    return "logging.maxSizeMb must be in 1.." + std::to_string(kLogMaxSizeMbLimit);
  }
  if (config.max_files < 1 || config.max_files > kLogMaxFilesLimit) {
    return "logging.maxFiles must be in 1.." + std::to_string(kLogMaxFilesLimit);
  }
  const spdlog::level::level_enum level = spdlog::level::from_str(config.level);
  if (level == spdlog::level::off && config.level != "off") {
    return "unknown log level '" + config.level + "'";
  }

  std::vector<spdlog::sink_ptr> sinks;
  sinks.push_back(std::make_shared<CountingSink>());
  sinks.push_back(std::make_shared<RingSink>());
  if (config.file.empty()) {
    sinks.push_back(std::make_shared<spdlog::sinks::stderr_sink_mt>());
  } else {
    try {
      sinks.push_back(std::make_shared<spdlog::sinks::rotating_file_sink_mt>(
          config.file, config.max_size_mb * kBytesPerMb, config.max_files));
    } catch (const spdlog::spdlog_ex &e) {
      return "cannot open log file " + config.file + ": " + e.what();
    }
    // Start-up failures would otherwise be invisible on the console and in
    // journald, where an operator looks first.
    auto errors = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    errors->set_level(spdlog::level::err);
    sinks.push_back(std::move(errors));
  }

  std::shared_ptr<spdlog::details::thread_pool> pool;
  try {
    pool = std::make_shared<spdlog::details::thread_pool>(kLogQueueSize, 1);
  } catch (const std::exception &e) {
    return std::string("cannot start the logging thread: ") + e.what();
  }
  // overrun_oldest: a full queue costs old lines, never a wait on the loop.
  auto logger = std::make_shared<spdlog::async_logger>(
      kLoggerName, sinks.begin(), sinks.end(), pool, spdlog::async_overflow_policy::overrun_oldest);
  logger->set_pattern(kPattern);
  logger->set_level(level);
  // Warnings and errors reach the file once written; info may batch.
  logger->flush_on(spdlog::level::warn);

  log_shutdown();  // the previous logger's lines come out before the new one's
  g_pool = std::move(pool);
  g_logger = logger;
  spdlog::set_default_logger(std::move(logger));
  return {};
}

void log_shutdown() {
  if (!g_pool) return;
  // Installed first, so nothing logs into a pool that is going away.
  auto fallback = std::make_shared<spdlog::logger>(
      kLoggerName, std::make_shared<spdlog::sinks::stderr_sink_mt>());
  fallback->set_pattern(kPattern);
  fallback->set_level(g_logger->level());
  spdlog::set_default_logger(std::move(fallback));

  std::shared_ptr<spdlog::details::thread_pool> pool = std::move(g_pool);
  // Queued behind every line. Blocking is fine at exit, and unlike the
  // logger's own flush it cannot push out the oldest line of a full queue.
  pool->post_flush(std::move(g_logger), spdlog::async_overflow_policy::block);
  // The pool's destructor queues a stop behind the flush and joins the thread.
  pool.reset();
}

uint64_t log_lines_written(int spdlog_level) {
  if (spdlog_level < 0 || static_cast<size_t>(spdlog_level) >= g_line_counts.size()) return 0;
  return g_line_counts[static_cast<size_t>(spdlog_level)].load(std::memory_order_relaxed);
}

int log_level_from_cg(int cg_level) {
  switch (cg_level) {
    case CG_LOG_TRACE:
      return spdlog::level::trace;
    case CG_LOG_DEBUG:
      return spdlog::level::debug;
    case CG_LOG_INFO:
      return spdlog::level::info;
    case CG_LOG_WARN:
      return spdlog::level::warn;
    default:
      return spdlog::level::err;
  }
}

}  // namespace cg
