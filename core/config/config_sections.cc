// The other core sections (logging, httpClient, admin, plugins, router,
// shutdown), the document's root, and the checks across sections.
#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "config/config_loader.h"
#include "config/user_messages.h"

namespace cg::config_internal {
namespace {

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

std::string read_locale(const Loader &l, const Entry &e) {
  std::string locale = l.read_string(e);
  if (!user_message_locale_known(locale)) {
    std::string known;
    for (std::string_view k : user_message_locales())
      known += (known.empty() ? "" : ", ") + std::string(k);
    l.fail(e.path, e.line, "expected one of " + known + ", got " + quote(locale));
  }
  return locale;
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
          {"locale", [&](const Entry &v) { inst.locale = read_locale(l, v); }},
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
  int section = 0, model = 0, cache = 0, queue = 0, queue_section = 0;
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
          {"queue",
           [&](const Entry &v) {
             out.queue = l.read_string(v);
             lines.queue = out.queue_line = v.line;
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
          {"locale", [&](const Entry &v) { out.locale = read_locale(l, v); }},
      });
}

// `messages:` maps a catalog key to the text that replaces it in every
// locale. An unknown key is an error with its line, as everywhere; so is a
// placeholder the key's text does not have (it would reach users as is).
void read_messages(const Loader &l, const Entry &e, std::map<std::string, std::string> &out) {
  KeyTable keys;
  for (size_t i = 0; i < kUserMsgCount; i++) {
    const auto msg = static_cast<UserMsg>(i);
    keys.emplace_back(user_message_key(msg), [&l, &out, msg](const Entry &v) {
      std::string text = l.read_string(v);
      const std::vector<std::string> have = user_message_placeholders(user_message_text(msg, "en"));
      for (const std::string &p : user_message_placeholders(text)) {
        if (std::find(have.begin(), have.end(), p) == have.end()) {
          std::string known;
          for (const std::string &h : have) known += (known.empty() ? "" : ", ") + ("{" + h + "}");
          l.fail(v.path, v.line,
                 "unknown placeholder {" + p + "} (this text has " +
                     (known.empty() ? std::string("none") : known) + ")");
        }
      }
      out[std::string(user_message_key(msg))] = std::move(text);
    });
  }
  l.read_mapping(e.value, e.path, e.line, keys);
}

void read_queue(const Loader &l, const Entry &e, QueueConfig &out) {
  l.read_mapping(
      e.value, e.path, e.line,
      {
          {"partitions", [&](const Entry &v) { out.partitions = l.read_int(v, 1, 4096); }},
          {"leaseMs", [&](const Entry &v) { out.lease_ms = l.read_int(v, 300, 3600000); }},
          {"maxDeliveries", [&](const Entry &v) { out.max_deliveries = l.read_int(v, 1, 1000); }},
          {"readBatch", [&](const Entry &v) { out.read_batch = l.read_int(v, 1, 10000); }},
          {"replyRecordTtlSeconds",
           [&](const Entry &v) { out.record_ttl_seconds = l.read_int(v, 1, kInt64Max / 1000); }},
      });
}

void read_shutdown(const Loader &l, const Entry &e, Config &out) {
  l.read_mapping(
      e.value, e.path, e.line,
      {{"deadlineMs",
        [&](const Entry &v) { out.shutdown_deadline_ms = l.read_int(v, 0, kInt64Max); }},
       {"delayMs", [&](const Entry &v) { out.shutdown_delay_ms = l.read_int(v, 0, 600000); }}});
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
  if (lines.queue != 0 && cfg.router.queue != cfg.router.cache) {
    // Reply records and context are read through the cache: they must be
    // where the queue is.
    l.fail("router.queue", lines.queue,
           "must name the same instance as router.cache (" + quote(cfg.router.cache) +
               "): the queue's reply records and the context live beside it");
  }
  if (lines.queue == 0 && lines.queue_section != 0) {
    l.fail("queue", lines.queue_section,
           "the queue section has no effect without router.queue (name the cache instance "
           "whose durable queue to use, e.g. router.queue: redis)");
  }
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

}  // namespace

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
          {"messages", [&](const Entry &v) { read_messages(l, v, cfg.router.messages); }},
          {"queue",
           [&](const Entry &v) {
             router_lines.queue_section = v.line;
             read_queue(l, v, cfg.router.queue_settings);
           }},
      });
  check_router_refs(l, cfg, router_lines);
  for (const PluginInstanceConfig &inst : cfg.plugins) {
    if (!inst.locale.empty()) cfg.router.channel_locales[inst.name] = inst.locale;
  }
  if (cfg.admin_enabled && cfg.admin.token.empty() &&
      !config_is_loopback(cfg.admin_listener.address)) {
    l.fail("listeners.admin.address", cfg.admin_address_line,
           "the admin listener binds " + quote(cfg.admin_listener.address) +
               ", beyond loopback, without admin.token; set admin.token (for example "
               "token: ${CHATGATE_ADMIN_TOKEN}) or bind 127.0.0.1");
  }
  resolve_plugin_paths(cfg);
}

}  // namespace cg::config_internal
