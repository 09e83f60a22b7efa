// The operator's YAML config: loading, ${VAR} expansion, validation of the
// core sections. Plugin sections are validated later against the schema each
// plugin declares (config_schema.h), once the plugin is loaded.
//
// THREAD: not thread-safe; call from one thread.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "http_client.h"
#include "http_server.h"

namespace cg {

// A config error: names the file, the line (1-based, 0 when unknown), the
// key path ("listeners.api.port") and what was expected. Never holds a
// secret value.
struct ConfigError {
  std::string file;
  int line = 0;
  std::string key;
  std::string message;
  // "FILE:LINE: KEY: MESSAGE"
  std::string to_string() const;
};

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

struct PluginInstanceConfig {
  std::string name;    // instance name, unique: [a-z0-9_-]+
  std::string plugin;  // as written: "echo.so" or a path
  std::string path;    // resolved file path
  YAML::Node section;  // the instance's `config:` mapping (may be null)
  int line = 0;        // line of the instance entry, for errors
};

// Per-sender and per-conversation message rates (token buckets).
struct ChannelRateLimits {
  RateLimit per_sender;
  RateLimit per_conversation;
  bool operator==(const ChannelRateLimits &) const = default;
};

struct RouterRateLimits {
  ChannelRateLimits defaults;  // for every channel without its own
  // By channel instance name ("api", "web" or a plugin instance).
  std::vector<std::pair<std::string, ChannelRateLimits>> channels;
  uint64_t notice_interval_seconds = 60;  // a "slow down" reply at most this often per key
  bool operator==(const RouterRateLimits &) const = default;
};

struct RouterConfig {
  std::string model;  // instance name of the model backend
  std::string cache;  // instance name of the cache
  uint32_t context_turns = 10;
  uint64_t context_ttl_seconds = 86400;
  uint64_t model_timeout_ms = 30000;
  uint64_t dedupe_ttl_seconds = 86400;
  uint32_t max_queue = 1024;
  RouterRateLimits rate_limits;
  uint32_t max_model_calls = 512;      // model calls in flight at once, all channels; 0: no cap
  int model_line = 0, cache_line = 0;  // where model and cache were written, for errors
};

// The admin listener's access rules (the `admin:` section).
struct AdminConfig {
  std::string token;           // empty: no auth (allowed on loopback only)
  bool show_content = false;   // message text on the admin page and API
  uint32_t max_failures = 10;  // wrong tokens from one address before a lockout
  uint64_t lockout_seconds = 300;
  uint64_t chart_interval_seconds = 10;  // the admin page's chart resolution
};

// Config::file when chatgate runs without --config.
inline constexpr std::string_view kEmbeddedConfigName = "<embedded default config>";

struct Config {
  std::string file;  // kEmbeddedConfigName for the built-in default
  LoggingConfig logging;
  HttpListenerConfig api;  // listeners.api
  // listeners.admin: admin page and API, /metrics, probes.
  HttpListenerConfig admin_listener{"admin", "127.0.0.1", 18789, {}, {}, {}, {}};
  bool admin_enabled = true;   // listeners.admin.enabled
  int admin_address_line = 0;  // where listeners.admin.address was written, for errors
  AdminConfig admin;
  std::string plugin_dir;  // resolved directory for bare plugin file names
  std::vector<PluginInstanceConfig> plugins;
  RouterConfig router;
  HttpClientConfig http_client;  // httpClient: outbound HTTP for plugins
  uint64_t shutdown_deadline_ms = 10000;
};

// Where bare plugin names are looked up when plugins.dir is empty: the
// "plugins" folder beside the running executable if it exists, else
// CHATGATE_INSTALL_PLUGIN_DIR.
std::string config_default_plugin_dir();

// Expands ${VAR} and ${VAR:-default} in `text` from the environment. "$${"
// stands for a literal "${". Returns std::nullopt and sets *error to a message
// for an unset variable without default or an unterminated reference.
std::optional<std::string> config_expand_env(std::string_view text, std::string *error);

// Reads YAML text from outside (the config file, a plugin's declared list
// defaults) into yaml-cpp nodes with their lines, without yaml-cpp's own
// parser, which loops without end on some malformed text (config_yaml.cc
// says how). CRLF reads as LF; a lone CR and U+0085/2028/2029 are errors.
// The error names `file` and the line, no key. May throw YAML::Exception.
std::optional<ConfigError> config_yaml_load(std::string_view yaml, const std::string &file,
                                            std::vector<YAML::Node> *docs);

// Parses and validates the core sections of a YAML document. `file` names it
// in errors. Returns the error, or std::nullopt with *out filled.
std::optional<ConfigError> config_load_string(std::string_view yaml, std::string_view file,
                                              Config *out);
// Reads FILE and calls config_load_string.
std::optional<ConfigError> config_load_file(const std::string &path, Config *out);

// Scalar conversions shared by the core and plugin schema validation, applied
// to the text after ${VAR} expansion. Each returns std::nullopt when `text`
// is not exactly one value of the type (no surrounding spaces).
// Integers: one optional sign, then decimal digits only (no hex, no
// exponent), within int64. Bools: true/false (also True, TRUE...).
// Doubles: one optional sign, then decimal or exponent notation, finite.
std::optional<int64_t> config_parse_int(std::string_view text);
std::optional<bool> config_parse_bool(std::string_view text);
std::optional<double> config_parse_double(std::string_view text);

// True when `text` is written as a decimal integer (as config_parse_int
// takes it) whatever its size, so an error can tell a number too large for
// 64 bits from text that is no number at all.
bool config_is_decimal(std::string_view text);

// True for 127.0.0.0/8 and ::1: the only addresses an admin listener
// without a token may bind.
bool config_is_loopback(const std::string &address);

// The 1-based line of a node, or 0 when it has none (null or invalid node).
int config_line(const YAML::Node &node);

}  // namespace cg
