// Logging setup: spdlog to stderr or a rotating file, at the configured
// level. Everything logs through spdlog's default logger.
//
// The logger is asynchronous: a log call formats the line and queues it for
// one background thread that does the writing, so the loop thread never
// waits on a disk or a full pipe. The queue holds kLogQueueSize lines; a
// burst beyond that drops the oldest queued lines rather than block.
//
// THREAD: log_setup and log_shutdown on the main thread, while no other
// thread logs (before the loop starts / after it ended); logging itself is
// thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace cg {

inline constexpr size_t kLogQueueSize = 8192;

// Upper bounds of logging.maxSizeMb and logging.maxFiles. 1 TiB per file
// keeps the size in bytes far from overflowing 64 bits while allowing any
// real disk; 200000 is the most rotated files spdlog's sink accepts.
inline constexpr uint64_t kLogMaxSizeMbLimit = 1048576;
inline constexpr uint32_t kLogMaxFilesLimit = 200000;

struct LoggingConfig {
  std::string level = "info";  // trace|debug|info|warn|error
  std::string file;            // empty: stderr
  uint64_t max_size_mb = 10;   // 1..kLogMaxSizeMbLimit
  uint32_t max_files = 3;      // 1..kLogMaxFilesLimit
};

// Installs the default logger: with `file` empty, every line to stderr; else
// every line to the rotating file and lines at error level also to stderr, so
// a failure still reaches the console or journald. Returns "" or an error for
// the operator ("cannot open log file PATH: reason"); on error the previous
// logger stays. Calling it again replaces the logger (the old one is shut
// down as by log_shutdown).
std::string log_setup(const LoggingConfig &config);

// Writes out every line logged so far, flushes the sinks, closes the file and
// joins the background thread. Call once before exit, after the loop has
// stopped. Later log calls still work: they go synchronously to stderr.
// Safe to call without log_setup and more than once.
void log_shutdown();

// Lines written so far at an spdlog level (spdlog::level::err, say), for
// the metrics. Lines below the configured level are never written, so not
// counted. THREAD: any.
uint64_t log_lines_written(int spdlog_level);

// The log level for a plugin's cg_log_level_t.
int log_level_from_cg(int cg_level);

}  // namespace cg
