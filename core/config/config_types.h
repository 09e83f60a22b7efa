// The config as the process uses it: plain values, no third-party types
// (the net and base option structs it holds are plain values too), so any
// layer can read its settings without compiling against yaml-cpp, libuv,
// OpenSSL or curl. Loading and validation are config.h's.
//
// THREAD: plain values.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/log.h"
#include "net/options.h"

namespace YAML {
class Node;
}

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

struct PluginInstanceConfig {
  std::string name;    // instance name, unique: [a-z0-9_-]+
  std::string plugin;  // as written: "echo.so" or a path
  std::string path;    // resolved file path
  // The instance's `config:` mapping, shared (a YAML::Node is a reference
  // already); null when absent. config_plugin_section() reads it.
  std::shared_ptr<const YAML::Node> section;
  int line = 0;  // line of the instance entry, for errors
  // The locale of the texts the core sends through this channel instance
  // (config/user_messages.h); empty: router.locale.
  std::string locale;
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

// The durable inbound queue's settings (the `queue:` section; used when
// router.queue names a cache instance with a queue). docs/fleet.md.
struct QueueConfig {
  uint32_t partitions = 16;  // fixed for the life of the streams
  uint64_t lease_ms = 10000;  // a dead instance's partitions move after this
  uint32_t max_deliveries = 5;  // then the dead letters
  uint32_t read_batch = 64;  // entries per read
  uint64_t record_ttl_seconds = 86400;  // how long a reply record is kept
  bool operator==(const QueueConfig &) const = default;
};

struct RouterConfig {
  std::string model;  // instance name of the model backend
  std::string cache;  // instance name of the cache
  // The cache instance whose durable queue holds what channels acknowledge;
  // empty: the in-memory queue. Must be `cache` (records and context live
  // beside the queue).
  std::string queue;
  QueueConfig queue_settings;  // the `queue:` section
  uint32_t context_turns = 10;
  uint64_t context_ttl_seconds = 86400;
  uint64_t model_timeout_ms = 30000;
  uint64_t dedupe_ttl_seconds = 86400;
  uint32_t max_queue = 1024;
  // Messages of one conversation accepted and not yet answered; beyond, its
  // new ones are refused (the platform told to retry). 0: no cap.
  uint32_t max_conversation_backlog = 100;
  RouterRateLimits rate_limits;
  uint32_t max_model_calls = 512;      // model calls in flight at once, all channels; 0: no cap
  // The locale of the texts the core sends users (config/user_messages.h).
  std::string locale = "en";
  // `messages:` overrides, by key: they replace the text in every locale.
  std::map<std::string, std::string> messages;
  // plugins.instances[].locale, by instance name (filled by the loader).
  std::map<std::string, std::string, std::less<>> channel_locales;
  // Where model, cache and queue were written, for errors.
  int model_line = 0, cache_line = 0, queue_line = 0;
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
  // shutdown.delayMs: after SIGTERM, /readyz answers 503 and the listeners
  // keep accepting this long before they close, so a load balancer that
  // polls /readyz stops sending here first. 0: close at once.
  uint64_t shutdown_delay_ms = 0;
};

}  // namespace cg
