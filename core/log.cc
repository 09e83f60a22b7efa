#include "log.h"

#include <chatgate/common.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace cg {

std::string log_setup(const LoggingConfig &config) {
  std::shared_ptr<spdlog::logger> logger;
  try {
    if (config.file.empty()) {
      logger = std::make_shared<spdlog::logger>(
          "chatgate", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    } else {
      logger = std::make_shared<spdlog::logger>(
          "chatgate", std::make_shared<spdlog::sinks::rotating_file_sink_mt>(
                          config.file, config.max_size_mb * 1024 * 1024, config.max_files));
    }
  } catch (const spdlog::spdlog_ex &e) {
    return std::string("cannot open log file ") + config.file + ": " + e.what();
  }
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  logger->set_level(spdlog::level::from_str(config.level));
  // Warnings and errors reach the file at once; info may batch.
  logger->flush_on(spdlog::level::warn);
  spdlog::set_default_logger(logger);
  return {};
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
