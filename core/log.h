// Logging setup: spdlog to stderr or a rotating file, at the configured
// level. Everything logs through spdlog's default logger.
//
// THREAD: log_setup before the loop starts; logging itself is thread-safe.
#pragma once

#include <string>

#include "config.h"

namespace cg {

// Installs the default logger. Returns "" or an error for the operator
// (unwritable log file...).
std::string log_setup(const LoggingConfig &config);

// The log level for a plugin's cg_log_level_t.
int log_level_from_cg(int cg_level);

}  // namespace cg
