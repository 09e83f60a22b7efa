// Loading and validation of the core config sections. Plugin `config:`
// sections are kept as YAML nodes and validated later (config_schema.cc).
//
// Rules that hold for every key: ${VAR} expansion happens on the scalar text
// before type conversion; a null value (`key:` or `key: ~`) means "not given";
// unknown and duplicate keys are errors.
#include "config/config.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <utility>

#include "net/ip_filter.h"

#ifndef CHATGATE_INSTALL_PLUGIN_DIR  // set by core/CMakeLists.txt; this keeps ad-hoc builds working
#define CHATGATE_INSTALL_PLUGIN_DIR "/usr/lib/chatgate/plugins"
#endif

namespace cg {
namespace {

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kUint32Max = std::numeric_limits<uint32_t>::max();

// Validation stops at the first error. Throwing it (inside this file only)
// keeps each section reader a flat list of keys instead of a chain of checks.
struct LoadFailure {
  ConfigError error;
};

// One key's value and where it is: the dotted key path and its line.
struct Entry {
  YAML::Node value;
  std::string path;
  int line = 0;
};

using KeyHandler = std::function<void(const Entry &)>;
using KeyTable = std::vector<std::pair<std::string_view, KeyHandler>>;

class Loader {
 public:
  explicit Loader(std::string_view file) : file_(file) {}

  [[noreturn]] void fail(const std::string &path, int line, std::string message) const {
    throw LoadFailure{ConfigError{file_, line, path, std::move(message)}};
  }

  // Calls the handler of every key present in the mapping `node`. A null node
  // is an empty mapping. `path` and `line` name the mapping itself.
  void read_mapping(const YAML::Node &node, const std::string &path, int line,
                    const KeyTable &keys) const;

  std::string read_string(const Entry &e) const;
  int64_t read_int(const Entry &e, int64_t min, int64_t max) const;
  std::string read_enum(const Entry &e, std::initializer_list<std::string_view> choices) const;
  std::vector<std::string> read_string_list(const Entry &e) const;
  bool read_bool(const Entry &e) const;

  const std::string &file() const { return file_; }

 private:
  std::string scalar_text(const Entry &e, const char *expected) const;
  std::string file_;
};

const char *node_kind(const YAML::Node &node) {
  if (node.IsMap()) return "a mapping";
  if (node.IsSequence()) return "a list";
  if (node.IsNull()) return "nothing";
  return "a scalar";
}

// Core values are not secret, so errors may quote them; keep them short and on
// one line for the log.
std::string quote(std::string_view value) {
  constexpr size_t kMax = 40;
  std::string out = "'";
  for (char c : value.substr(0, kMax)) out += (static_cast<unsigned char>(c) < 0x20) ? '?' : c;
  if (value.size() > kMax) out += "...";
  return out + "'";
}

std::string join(const std::vector<std::string> &items) {
  std::string out;
  for (const auto &item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

void Loader::read_mapping(const YAML::Node &node, const std::string &path, int line,
                          const KeyTable &keys) const {
  if (!node.IsDefined() || node.IsNull()) return;
  if (!node.IsMap()) fail(path, line, std::string("expected a mapping, got ") + node_kind(node));
  std::map<std::string, int, std::less<>> seen;
  for (const auto &kv : node) {
    const int key_line = config_line(kv.first);
    if (!kv.first.IsScalar()) fail(path, key_line, "expected a key name");
    const std::string &name = kv.first.Scalar();
    std::string key_path = path;
    if (!key_path.empty()) key_path += '.';
    key_path += name;
    auto [it, inserted] = seen.emplace(name, key_line);
    if (!inserted) {
      fail(key_path, key_line, "duplicate key (first at line " + std::to_string(it->second) + ")");
    }
    const KeyHandler *handler = nullptr;
    for (const auto &[known, h] : keys) {
      if (known == name) handler = &h;
    }
    if (handler == nullptr) {
      std::vector<std::string> names;
      for (const auto &[known, h] : keys) names.emplace_back(known);
      fail(key_path, key_line,
           "unknown key " + quote(name) + " (expected one of: " + join(names) + ")");
    }
    if (kv.second.IsNull()) continue;  // `key:` alone keeps the default
    (*handler)(Entry{kv.second, key_path, key_line});
  }
}

std::string Loader::scalar_text(const Entry &e, const char *expected) const {
  if (!e.value.IsScalar()) {
    fail(e.path, e.line, std::string("expected ") + expected + ", got " + node_kind(e.value));
  }
  std::string error;
  auto expanded = config_expand_env(e.value.Scalar(), &error);
  if (!expanded) fail(e.path, e.line, error);
  return *expanded;
}

std::string Loader::read_string(const Entry &e) const { return scalar_text(e, "a string"); }

bool Loader::read_bool(const Entry &e) const {
  const std::string text = scalar_text(e, "true or false");
  const std::optional<bool> v = config_parse_bool(text);
  if (!v) fail(e.path, e.line, "expected true or false, got " + quote(text));
  return *v;
}

int64_t Loader::read_int(const Entry &e, int64_t min, int64_t max) const {
  const std::string text = scalar_text(e, "an integer");
  const auto value = config_parse_int(text);
  if (value && *value >= min && *value <= max) return *value;
  std::string expected = "expected an integer";
  if (max == kInt64Max) {
    expected += " >= " + std::to_string(min);
  } else {
    expected += " in " + std::to_string(min) + ".." + std::to_string(max);
  }
  // "expected >= 1, got '99999999999999999999'" alone would read as a contradiction.
  const char *note = !value && config_is_decimal(text) ? " (out of the 64-bit range)" : "";
  fail(e.path, e.line, expected + ", got " + quote(text) + note);
}

std::string Loader::read_enum(const Entry &e,
                              std::initializer_list<std::string_view> choices) const {
  std::string text = scalar_text(e, "a string");
  std::vector<std::string> names;
  for (auto choice : choices) {
    if (choice == text) return text;
    names.emplace_back(choice);
  }
  fail(e.path, e.line, "expected one of: " + join(names) + ", got " + quote(text));
}

std::vector<std::string> Loader::read_string_list(const Entry &e) const {
  if (!e.value.IsSequence()) {
    fail(e.path, e.line, std::string("expected a list of strings, got ") + node_kind(e.value));
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < e.value.size(); ++i) {
    const YAML::Node item = e.value[i];
    const int line = config_line(item);
    out.push_back(scalar_text(
        Entry{item, e.path + "[" + std::to_string(i) + "]", line ? line : e.line}, "a string"));
  }
  return out;
}

// ---- sections ------------------------------------------------------------

void read_logging(const Loader &l, const Entry &e, LoggingConfig &out) {
  l.read_mapping(
      e.value, e.path, e.line,
      {
          {"level",
           [&](const Entry &v) {
             out.level = l.read_enum(v, {"trace", "debug", "info", "warn", "error"});
           }},
          {"file", [&](const Entry &v) { out.file = l.read_string(v); }},
          {"maxSizeMb",
           [&](const Entry &v) { out.max_size_mb = l.read_int(v, 1, kLogMaxSizeMbLimit); }},
          {"maxFiles",
           [&](const Entry &v) { out.max_files = l.read_int(v, 1, kLogMaxFilesLimit); }},
      });
}

void read_http_client(const Loader &l, const Entry &e, HttpClientConfig &out) {
  l.read_mapping(
      e.value, e.path, e.line,
      {
          {"caFile", [&](const Entry &v) { out.ca_file = l.read_string(v); }},
          {"timeoutMs", [&](const Entry &v) { out.timeout_ms = l.read_int(v, 1, kInt64Max); }},
          {"connectTimeoutMs",
           [&](const Entry &v) { out.connect_timeout_ms = l.read_int(v, 1, kInt64Max); }},
          {"maxResponseBytes",
           [&](const Entry &v) { out.max_response_bytes = l.read_int(v, 1, kInt64Max); }},
      });
}

void read_address(const Loader &l, const Entry &e, std::string &out) {
  std::string text = l.read_string(e);
  unsigned char buf[sizeof(struct in6_addr)];
  if (inet_pton(AF_INET, text.c_str(), buf) != 1 && inet_pton(AF_INET6, text.c_str(), buf) != 1) {
    l.fail(e.path, e.line, "expected an IPv4 or IPv6 address, got " + quote(text));
  }
  out = std::move(text);
}

void read_cors(const Loader &l, const Entry &e, CorsPolicy &out) {
  l.read_mapping(
      e.value, e.path, e.line,
      {
          {"allowedOrigins", [&](const Entry &v) { out.allowed_origins = l.read_string_list(v); }},
          {"allowedMethods", [&](const Entry &v) { out.allowed_methods = l.read_string_list(v); }},
          {"allowedHeaders", [&](const Entry &v) { out.allowed_headers = l.read_string_list(v); }},
          {"maxAgeSeconds",
           [&](const Entry &v) {
             // In range by the bound just checked.
             out.max_age_seconds =
                 static_cast<int>(l.read_int(v, 0, std::numeric_limits<int>::max()));
           }},
      });
}

std::vector<std::string> read_cidr_list(const Loader &l, const Entry &e) {
  std::vector<std::string> out = l.read_string_list(e);
  for (size_t i = 0; i < out.size(); ++i) {
    std::string error;
    if (!ip_block_parse(out[i], &error)) {
      const YAML::Node item = e.value[i];
      const int line = config_line(item);
      l.fail(e.path + "[" + std::to_string(i) + "]", line ? line : e.line,
             error + ", got " + quote(out[i]));
    }
  }
  return out;
}

void read_rate_limit(const Loader &l, const Entry &e, RateLimit &out) {
  l.read_mapping(
      e.value, e.path, e.line,
      {
          {"perSecond",
           [&](const Entry &v) {
             const std::string text = l.read_string(v);
             const std::optional<double> d = config_parse_double(text);
             if (!d || *d < 0) {
               l.fail(v.path, v.line, "expected a number >= 0 (0: no limit), got " + quote(text));
             }
             out.per_second = *d;
           }},
          {"burst",
           [&](const Entry &v) { out.burst = static_cast<uint32_t>(l.read_int(v, 0, 1000000)); }},
      });
}

void read_route_access(const Loader &l, const Entry &e, std::vector<RouteAccess> &out) {
  if (!e.value.IsSequence()) {
    l.fail(e.path, e.line,
           std::string("expected a list of {path, allowFrom}, got ") + node_kind(e.value));
  }
  for (size_t i = 0; i < e.value.size(); ++i) {
    const YAML::Node item = e.value[i];
    const std::string path = e.path + "[" + std::to_string(i) + "]";
    const int line = config_line(item) ? config_line(item) : e.line;
    RouteAccess rule;
    bool has_allow = false;
    l.read_mapping(item, path, line,
                   {
                       {"path", [&](const Entry &v) { rule.path = l.read_string(v); }},
                       {"allowFrom",
                        [&](const Entry &v) {
                          rule.allow_from = read_cidr_list(l, v);
                          has_allow = true;
                        }},
                   });
    if (!rule.path.starts_with('/')) {
      l.fail(path + ".path", line, "expected a path starting with '/' (a prefix)");
    }
    if (!has_allow) l.fail(path + ".allowFrom", line, "required key missing");
    out.push_back(std::move(rule));
  }
}

void read_tls(const Loader &l, const Entry &e, TlsServerConfig &out) {
  bool cert = false, key = false;
  l.read_mapping(e.value, e.path, e.line,
                 {
                     {"certFile",
                      [&](const Entry &v) {
                        out.cert_file = l.read_string(v);
                        cert = !out.cert_file.empty();
                      }},
                     {"keyFile",
                      [&](const Entry &v) {
                        out.key_file = l.read_string(v);
                        key = !out.key_file.empty();
                      }},
                     {"minVersion",
                      [&](const Entry &v) {
                        out.min_version = l.read_enum(v, {"1.2", "1.3"});
                      }},
                     {"ciphers", [&](const Entry &v) { out.ciphers = l.read_string(v); }},
                     {"reloadCheckMs",
                      [&](const Entry &v) { out.reload_check_ms = l.read_int(v, 0, 86400000); }},
                 });
  // Both or neither: an empty `certFile: ${TLS_CERT:-}` turns TLS off.
  if (cert != key) {
    l.fail(e.path + (cert ? ".keyFile" : ".certFile"), e.line,
           std::string("required with ") + (cert ? "certFile" : "keyFile"));
  }
  if (!cert) out = TlsServerConfig{};
}

// listeners.api and listeners.admin take the same keys; `extra` adds the
// admin's own (enabled).
void read_http_listener(const Loader &l, const Entry &e, HttpListenerConfig &out,
                        KeyTable extra = {}) {
  HttpLimits &lim = out.limits;
  // Binds a handler for a count or duration that must be at least 1.
  auto positive = [&l](auto &field) {
    return [&l, p = &field](const Entry &v) { *p = l.read_int(v, 1, kInt64Max); };
  };
  KeyTable keys = {
      {"address", [&](const Entry &v) { read_address(l, v, out.address); }},
      {"port", [&](const Entry &v) { out.port = static_cast<int>(l.read_int(v, 0, 65535)); }},
      {"maxConnections", positive(lim.max_connections)},
      {"maxHeaderBytes",
       [&](const Entry &v) { lim.max_header_bytes = l.read_int(v, 1024, kInt64Max); }},
      {"maxBodyBytes", positive(lim.max_body_bytes)},
      {"headerTimeoutMs", positive(lim.header_timeout_ms)},
      {"bodyTimeoutMs", positive(lim.body_timeout_ms)},
      {"idleTimeoutMs", positive(lim.idle_timeout_ms)},
      {"maxPipeline", positive(lim.max_pipeline)},
      {"sendTimeoutMs", positive(lim.send_timeout_ms)},
      {"maxBufferedBytes",
       [&](const Entry &v) { lim.max_buffered_bytes = l.read_int(v, 4096, kInt64Max); }},
      {"cors", [&](const Entry &v) { read_cors(l, v, out.cors); }},
      {"tls", [&](const Entry &v) { read_tls(l, v, out.tls); }},
      {"allowFrom", [&](const Entry &v) { out.access.allow_from = read_cidr_list(l, v); }},
      {"trustedProxies",
       [&](const Entry &v) { out.access.trusted_proxies = read_cidr_list(l, v); }},
      {"routes", [&](const Entry &v) { read_route_access(l, v, out.access.routes); }},
      {"maxConnectionsPerIp",
       [&](const Entry &v) { out.access.max_connections_per_ip = l.read_int(v, 0, kInt64Max); }},
      {"requestRatePerIp",
       [&](const Entry &v) { read_rate_limit(l, v, out.access.requests_per_ip); }},
  };
  for (auto &entry : extra) keys.push_back(std::move(entry));
  l.read_mapping(e.value, e.path, e.line, keys);
}

void read_listeners(const Loader &l, const Entry &e, Config &cfg) {
  l.read_mapping(
      e.value, e.path, e.line,
      {
          {"api", [&](const Entry &v) { read_http_listener(l, v, cfg.api); }},
          {"admin",
           [&](const Entry &v) {
             if (const YAML::Node a = v.value.IsMap() ? v.value["address"] : YAML::Node();
                 a.IsDefined()) {
               cfg.admin_address_line = config_line(a);
             }
             read_http_listener(
                 l, v, cfg.admin_listener,
                 {{"enabled", [&](const Entry &x) { cfg.admin_enabled = l.read_bool(x); }}});
           }},
      });
}

void read_admin(const Loader &l, const Entry &e, AdminConfig &out) {
  l.read_mapping(e.value, e.path, e.line,
                 {
                     {"token", [&](const Entry &v) { out.token = l.read_string(v); }},
                     {"showContent", [&](const Entry &v) { out.show_content = l.read_bool(v); }},
                     {"maxLoginFailures",
                      [&](const Entry &v) {
                        out.max_failures = static_cast<uint32_t>(l.read_int(v, 1, 1000));
                      }},
                     {"lockoutSeconds",
                      [&](const Entry &v) { out.lockout_seconds = l.read_int(v, 1, 86400); }},
                     {"chartIntervalSeconds",
                      [&](const Entry &v) { out.chart_interval_seconds = l.read_int(v, 1, 60); }},
                 });
}

bool valid_instance_name(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  }
  return true;
}

// Reads one instance entry; *name_line gets the line of its name.
PluginInstanceConfig read_instance(const Loader &l, const Entry &e, int *name_line_out) {
  PluginInstanceConfig inst;
  inst.line = e.line;
  int name_line = 0, plugin_line = 0;
  l.read_mapping(
      e.value, e.path, e.line,
      {
          {"name",
           [&](const Entry &v) {
             inst.name = l.read_string(v);
             name_line = v.line;
             if (!valid_instance_name(inst.name)) {
               l.fail(v.path, v.line, "expected a name of [a-z0-9_-], got " + quote(inst.name));
             }
           }},
          {"plugin",
           [&](const Entry &v) {
             inst.plugin = l.read_string(v);
             plugin_line = v.line;
             if (inst.plugin.empty()) l.fail(v.path, v.line, "expected a plugin file name");
           }},
          {"config",
           [&](const Entry &v) {
             if (!v.value.IsMap()) {
               l.fail(v.path, v.line, std::string("expected a mapping, got ") + node_kind(v.value));
             }
             inst.section = std::make_shared<const YAML::Node>(v.value);
           }},
      });
  if (name_line == 0) l.fail(e.path + ".name", e.line, "required key missing");
  if (plugin_line == 0) l.fail(e.path + ".plugin", e.line, "required key missing");
  *name_line_out = name_line;
  return inst;
}

void read_instances(const Loader &l, const Entry &e, std::vector<PluginInstanceConfig> &out) {
  if (!e.value.IsSequence()) {
    l.fail(e.path, e.line, std::string("expected a list of instances, got ") + node_kind(e.value));
  }
  std::map<std::string, int, std::less<>> names;  // name -> line, to report duplicates
  for (size_t i = 0; i < e.value.size(); ++i) {
    const YAML::Node item = e.value[i];
    const std::string path = e.path + "[" + std::to_string(i) + "]";
    const int line = config_line(item) ? config_line(item) : e.line;
    if (!item.IsMap()) {
      l.fail(path, line,
             std::string("expected a mapping with name and plugin, got ") + node_kind(item));
    }
    int name_line = 0;
    PluginInstanceConfig inst = read_instance(l, Entry{item, path, line}, &name_line);
    auto [it, inserted] = names.emplace(inst.name, name_line);
    if (!inserted) {
      l.fail(path + ".name", name_line,
             "duplicate instance name " + quote(inst.name) + " (first at line " +
                 std::to_string(it->second) + ")");
    }
    out.push_back(std::move(inst));
  }
}

void read_plugins(const Loader &l, const Entry &e, Config &out) {
  l.read_mapping(e.value, e.path, e.line,
                 {
                     {"dir", [&](const Entry &v) { out.plugin_dir = l.read_string(v); }},
                     {"instances", [&](const Entry &v) { read_instances(l, v, out.plugins); }},
                 });
}

// Where router.model / router.cache were written, for the cross-check.
struct RouterLines {
  int section = 0, model = 0, cache = 0;
  std::vector<std::pair<std::string, int>> rate_limit_channels;  // name, line
};

void read_channel_limits(const Loader &l, const Entry &e, ChannelRateLimits &out) {
  l.read_mapping(
      e.value, e.path, e.line,
      {
          {"perSender", [&](const Entry &v) { read_rate_limit(l, v, out.per_sender); }},
          {"perConversation", [&](const Entry &v) { read_rate_limit(l, v, out.per_conversation); }},
      });
}

void read_rate_limits(const Loader &l, const Entry &e, RouterRateLimits &out,
                      std::vector<std::pair<std::string, int>> &channel_lines) {
  Entry channels;
  l.read_mapping(
      e.value, e.path, e.line,
      {
          {"perSender", [&](const Entry &v) { read_rate_limit(l, v, out.defaults.per_sender); }},
          {"perConversation",
           [&](const Entry &v) { read_rate_limit(l, v, out.defaults.per_conversation); }},
          {"noticeIntervalSeconds",
           [&](const Entry &v) { out.notice_interval_seconds = l.read_int(v, 1, kInt64Max); }},
          {"channels",
           [&](const Entry &v) {
             if (!v.value.IsMap()) {
               l.fail(v.path, v.line,
                      std::string("expected a mapping of channel instance "
                                  "names, got ") +
                          node_kind(v.value));
             }
             channels = v;
           }},
      });
  // After the defaults, whichever order the keys came in: a channel's
  // entry overrides only what it names.
  if (!channels.value.IsDefined()) return;
  for (const auto &kv : channels.value) {
    const std::string name = kv.first.Scalar();
    const int line = config_line(kv.first);
    for (const auto &[seen, seen_line] : channel_lines) {
      if (seen == name) {
        l.fail(channels.path + "." + name, line,
               "duplicate key (first at line " + std::to_string(seen_line) + ")");
      }
    }
    ChannelRateLimits limits = out.defaults;
    read_channel_limits(l, Entry{kv.second, channels.path + "." + name, line}, limits);
    out.channels.emplace_back(name, limits);
    channel_lines.emplace_back(name, line);
  }
}

void read_router(const Loader &l, const Entry &e, RouterConfig &out, RouterLines &lines) {
  l.read_mapping(
      e.value, e.path, e.line,
      {
          {"model",
           [&](const Entry &v) {
             out.model = l.read_string(v);
             lines.model = out.model_line = v.line;
           }},
          {"cache",
           [&](const Entry &v) {
             out.cache = l.read_string(v);
             lines.cache = out.cache_line = v.line;
           }},
          {"contextTurns", [&](const Entry &v) { out.context_turns = l.read_int(v, 0, 1000); }},
          {"contextTtlSeconds",
           [&](const Entry &v) { out.context_ttl_seconds = l.read_int(v, 1, kInt64Max); }},
          {"modelTimeoutMs",
           [&](const Entry &v) { out.model_timeout_ms = l.read_int(v, 1, kInt64Max); }},
          {"dedupeTtlSeconds",
           [&](const Entry &v) { out.dedupe_ttl_seconds = l.read_int(v, 1, kInt64Max); }},
          {"maxQueue", [&](const Entry &v) { out.max_queue = l.read_int(v, 1, kUint32Max); }},
          {"maxConversationBacklog",
           [&](const Entry &v) { out.max_conversation_backlog = l.read_int(v, 0, kUint32Max); }},
          {"maxModelCalls",
           [&](const Entry &v) { out.max_model_calls = l.read_int(v, 0, kUint32Max); }},
          {"rateLimits",
           [&](const Entry &v) {
             read_rate_limits(l, v, out.rate_limits, lines.rate_limit_channels);
           }},
      });
}

void read_shutdown(const Loader &l, const Entry &e, Config &out) {
  l.read_mapping(e.value, e.path, e.line, {{"deadlineMs", [&](const Entry &v) {
                                              out.shutdown_deadline_ms =
                                                  l.read_int(v, 0, kInt64Max);
                                            }}});
}

// router.model and router.cache must each name a configured instance.
void check_router_refs(const Loader &l, const Config &cfg, const RouterLines &lines) {
  std::vector<std::string> names;
  for (const auto &inst : cfg.plugins) names.push_back(inst.name);
  const std::string configured = names.empty() ? "none configured" : "configured: " + join(names);
  auto check = [&](const std::string &value, const char *key, int line) {
    if (line == 0) {
      l.fail(key, lines.section, "required key missing (name a plugins.instances entry)");
    }
    for (const auto &name : names) {
      if (name == value) return;
    }
    l.fail(key, line, "no plugin instance named " + quote(value) + " (" + configured + ")");
  };
  check(cfg.router.model, "router.model", lines.model);
  check(cfg.router.cache, "router.cache", lines.cache);
  // Rate limits name channels: a plugin instance, or the built-in api and web.
  for (const auto &[name, line] : lines.rate_limit_channels) {
    if (name == "api" || name == "web") continue;
    if (std::find(names.begin(), names.end(), name) != names.end()) continue;
    l.fail("router.rateLimits.channels." + name, line,
           "no channel named " + quote(name) + " (api, web or a plugins.instances entry)");
  }
}

void resolve_plugin_paths(Config &cfg) {
  if (cfg.plugin_dir.empty()) cfg.plugin_dir = config_default_plugin_dir();
  for (auto &inst : cfg.plugins) {
    // A name with a slash is a path the operator chose; a bare name lives in the plugin dir.
    inst.path = inst.plugin.find('/') != std::string::npos
                    ? inst.plugin
                    : (std::filesystem::path(cfg.plugin_dir) / inst.plugin).string();
  }
}

// The line of `key` in the mapping `node`, or 0 when it is not there.
int key_line(const YAML::Node &node, std::string_view key) {
  if (!node.IsMap()) return 0;
  for (const auto &kv : node) {
    if (kv.first.IsScalar() && kv.first.Scalar() == key) return config_line(kv.first);
  }
  return 0;
}

void read_root(const Loader &l, const YAML::Node &root, Config &cfg) {
  RouterLines router_lines;
  if (root.IsDefined() && !root.IsNull() && !root.IsMap()) {
    l.fail("", config_line(root),
           std::string("expected a mapping at the top, got ") + node_kind(root));
  }
  // A missing router.model needs a line even when `router:` is empty (its
  // handler never runs) or absent; then the top of the file is the place to
  // add it.
  router_lines.section = key_line(root, "router");
  if (router_lines.section == 0) router_lines.section = std::max(config_line(root), 1);
  l.read_mapping(
      root, "", config_line(root),
      {
          {"logging", [&](const Entry &v) { read_logging(l, v, cfg.logging); }},
          {"listeners", [&](const Entry &v) { read_listeners(l, v, cfg); }},
          {"admin", [&](const Entry &v) { read_admin(l, v, cfg.admin); }},
          {"plugins", [&](const Entry &v) { read_plugins(l, v, cfg); }},
          {"router", [&](const Entry &v) { read_router(l, v, cfg.router, router_lines); }},
          {"httpClient", [&](const Entry &v) { read_http_client(l, v, cfg.http_client); }},
          {"shutdown", [&](const Entry &v) { read_shutdown(l, v, cfg); }},
      });
  check_router_refs(l, cfg, router_lines);
  if (cfg.admin_enabled && cfg.admin.token.empty() &&
      !config_is_loopback(cfg.admin_listener.address)) {
    l.fail("listeners.admin.address", cfg.admin_address_line,
           "the admin listener binds " + quote(cfg.admin_listener.address) +
               ", beyond loopback, without admin.token; set admin.token (for example "
               "token: ${CHATGATE_ADMIN_TOKEN}) or bind 127.0.0.1");
  }
  resolve_plugin_paths(cfg);
}

bool is_var_start(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
bool is_var_char(char c) { return is_var_start(c) || (c >= '0' && c <= '9'); }

}  // namespace

// ---- public --------------------------------------------------------------

bool config_is_loopback(const std::string &address) {
  unsigned char buf[sizeof(struct in6_addr)] = {};
  if (inet_pton(AF_INET, address.c_str(), buf) == 1) return buf[0] == 127;
  return address == "::1";
}

const YAML::Node &config_plugin_section(const PluginInstanceConfig &instance) {
  static const YAML::Node kNone;
  return instance.section ? *instance.section : kNone;
}

std::string ConfigError::to_string() const {
  std::string out = file;
  if (line > 0) out += ":" + std::to_string(line);
  out += ": ";
  if (!key.empty()) out += key + ": ";
  return out + message;
}

std::optional<std::string> config_expand_env(std::string_view text, std::string *error) {
  std::string out;
  size_t i = 0;
  while (i < text.size()) {
    if (text.substr(i, 3) == "$${") {  // escaped: a literal "${"
      out += "${";
      i += 3;
      continue;
    }
    if (text.substr(i, 2) != "${") {
      out += text[i++];
      continue;
    }
    const size_t close = text.find('}', i + 2);
    if (close == std::string_view::npos) {
      if (error) *error = "unterminated '${' (write '$${' for a literal '${')";
      return std::nullopt;
    }
    const std::string_view body = text.substr(i + 2, close - i - 2);
    const size_t sep = body.find(":-");
    const std::string name(body.substr(0, sep));
    if (name.empty() || !is_var_start(name[0]) ||
        !std::all_of(name.begin(), name.end(), is_var_char)) {
      // The reference is file text, not a value from the environment.
      if (error) *error = "invalid variable reference '${" + std::string(body) + "}'";
      return std::nullopt;
    }
    const char *value = std::getenv(name.c_str());
    if (sep != std::string_view::npos) {
      // Like the shell's ${VAR:-default}: the default also replaces an empty value.
      out += (value && *value) ? std::string_view(value) : body.substr(sep + 2);
    } else if (value) {
      out += value;
    } else {
      if (error) *error = "environment variable " + name + " is not set";
      return std::nullopt;
    }
    i = close + 1;
  }
  return out;
}

bool config_is_decimal(std::string_view text) {
  if (!text.empty() && (text[0] == '+' || text[0] == '-')) text.remove_prefix(1);
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::optional<int64_t> config_parse_int(std::string_view text) {
  // from_chars alone would take "-5" after a stripped '+' ("+-5") and has
  // no '+' of its own, so the form is checked first.
  if (!config_is_decimal(text)) return std::nullopt;
  if (text[0] == '+') text.remove_prefix(1);
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::optional<bool> config_parse_bool(std::string_view text) {
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  return std::nullopt;
}

std::optional<double> config_parse_double(std::string_view text) {
  // One sign at most, and a digit or '.' after it: from_chars would also take
  // "-5" after a stripped '+' ("+-5"), and "inf"/"nan".
  const std::string_view body =
      !text.empty() && (text[0] == '+' || text[0] == '-') ? text.substr(1) : text;
  if (body.empty() || !((body[0] >= '0' && body[0] <= '9') || body[0] == '.')) {
    return std::nullopt;
  }
  if (text[0] == '+') text.remove_prefix(1);
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(value)) {
    return std::nullopt;
  }
  return value;
}

int config_line(const YAML::Node &node) {
  if (!node.IsDefined()) return 0;  // Mark() throws on an invalid node
  const YAML::Mark mark = node.Mark();
  return mark.line >= 0 ? mark.line + 1 : 0;
}

std::string config_default_plugin_dir() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n > 0) {
    const std::filesystem::path beside =
        std::filesystem::path(std::string(buf, n)).parent_path() / "plugins";
    struct stat st;
    if (stat(beside.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return beside.string();
  }
  return CHATGATE_INSTALL_PLUGIN_DIR;
}

std::optional<ConfigError> config_load_string(std::string_view yaml, std::string_view file,
                                              Config *out) {
  Loader loader(file);
  Config cfg;
  cfg.file = std::string(file);
  try {
    std::vector<YAML::Node> docs;
    if (auto err = config_yaml_load(yaml, cfg.file, &docs)) return err;
    if (docs.size() > 1) {
      return ConfigError{cfg.file, config_line(docs[1]), "", "expected one YAML document"};
    }
    read_root(loader, docs.empty() ? YAML::Node() : docs[0], cfg);
  } catch (const LoadFailure &f) {
    return f.error;
  } catch (const YAML::Exception &e) {  // syntax errors, too-deep nesting
    return ConfigError{cfg.file, e.mark.line >= 0 ? e.mark.line + 1 : 0, "",
                       "invalid YAML: " + e.msg};
  }
  *out = std::move(cfg);
  return std::nullopt;
}

std::optional<ConfigError> config_load_file(const std::string &path, Config *out) {
  std::FILE *f = std::fopen(path.c_str(), "rb");
  if (f == nullptr)
    return ConfigError{path, 0, "", std::string("cannot open: ") + std::strerror(errno)};
  std::string text;
  char buf[8192];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) text.append(buf, n);
  const int read_errno = std::ferror(f) ? errno : 0;  // e.g. EISDIR for a directory
  std::fclose(f);
  if (read_errno != 0) {
    return ConfigError{path, 0, "", std::string("cannot read: ") + std::strerror(read_errno)};
  }
  return config_load_string(text, path, out);
}

}  // namespace cg
