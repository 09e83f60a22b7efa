#include "config/config_reload.h"

#include <algorithm>

#include "config/config.h"

namespace cg {
namespace {

// Files one changed key under `applied` or `handover`.
class Planner {
 public:
  explicit Planner(ConfigReloadPlan &plan) : plan_(plan) {}
  template <typename T>
  void live(const char *key, const T &was, const T &now) {
    if (!(was == now)) plan_.applied.emplace_back(key);
  }
  template <typename T>
  void handover(const std::string &key, const T &was, const T &now) {
    if (!(was == now)) plan_.handover.push_back(key);
  }

 private:
  ConfigReloadPlan &plan_;
};

// An instance's config section as comparable text. ${VAR}s stay as written:
// the process's environment does not change under it.
std::string section_text(const PluginInstanceConfig &p) {
  const YAML::Node &section = config_plugin_section(p);
  if (!section.IsDefined() || section.IsNull()) return {};
  YAML::Emitter out;
  out << section;
  return out.c_str();
}

void plan_instances(const Config &running, const Config &fresh, ConfigReloadPlan &plan) {
  auto find = [](const Config &c, const std::string &name) -> const PluginInstanceConfig * {
    auto it = std::find_if(c.plugins.begin(), c.plugins.end(),
                           [&](const PluginInstanceConfig &p) { return p.name == name; });
    return it == c.plugins.end() ? nullptr : &*it;
  };
  for (const PluginInstanceConfig &was : running.plugins) {
    const PluginInstanceConfig *now = find(fresh, was.name);
    const std::string key = "plugins.instances[" + was.name + "]";
    if (now == nullptr) {
      plan.handover.push_back(key + " (removed)");
    } else if (now->path != was.path) {
      plan.handover.push_back(key + ".plugin");
    } else if (section_text(*now) != section_text(was)) {
      plan.handover.push_back(key + ".config");
    }
  }
  for (const PluginInstanceConfig &now : fresh.plugins) {
    if (find(running, now.name) == nullptr) {
      plan.handover.push_back("plugins.instances[" + now.name + "] (added)");
    }
  }
}

}  // namespace

ConfigReloadPlan config_reload_plan(const Config &running, const Config &fresh) {
  ConfigReloadPlan plan;
  Planner p(plan);
  p.live("logging.level", running.logging.level, fresh.logging.level);
  p.handover("logging.file", running.logging.file, fresh.logging.file);
  p.handover("logging.maxSizeMb", running.logging.max_size_mb, fresh.logging.max_size_mb);
  p.handover("logging.maxFiles", running.logging.max_files, fresh.logging.max_files);
  p.handover("listeners.api", running.api, fresh.api);
  p.handover("listeners.admin", running.admin_listener, fresh.admin_listener);
  p.handover("listeners.admin.enabled", running.admin_enabled, fresh.admin_enabled);
  p.live("admin.token", running.admin.token, fresh.admin.token);
  p.live("admin.showContent", running.admin.show_content, fresh.admin.show_content);
  p.live("admin.maxLoginFailures", running.admin.max_failures, fresh.admin.max_failures);
  p.live("admin.lockoutSeconds", running.admin.lockout_seconds, fresh.admin.lockout_seconds);
  p.handover("admin.chartIntervalSeconds", running.admin.chart_interval_seconds,
             fresh.admin.chart_interval_seconds);
  p.handover("plugins.dir", running.plugin_dir, fresh.plugin_dir);
  plan_instances(running, fresh, plan);
  const RouterConfig &r = running.router, &f = fresh.router;
  p.handover("router.model", r.model, f.model);
  p.handover("router.cache", r.cache, f.cache);
  p.handover("router.maxQueue", r.max_queue, f.max_queue);
  p.handover("router.queue", r.queue, f.queue);
  p.handover("queue", r.queue_settings, f.queue_settings);
  p.live("router.contextTurns", r.context_turns, f.context_turns);
  p.live("router.contextTtlSeconds", r.context_ttl_seconds, f.context_ttl_seconds);
  p.live("router.modelTimeoutMs", r.model_timeout_ms, f.model_timeout_ms);
  p.live("router.dedupeTtlSeconds", r.dedupe_ttl_seconds, f.dedupe_ttl_seconds);
  p.live("router.rateLimits", r.rate_limits, f.rate_limits);
  p.live("router.maxModelCalls", r.max_model_calls, f.max_model_calls);
  p.live("router.maxConversationBacklog", r.max_conversation_backlog, f.max_conversation_backlog);
  p.live("router.locale", r.locale, f.locale);
  p.live("messages", r.messages, f.messages);
  p.live("plugins.instances[].locale", r.channel_locales, f.channel_locales);
  p.handover("httpClient", running.http_client, fresh.http_client);
  p.live("shutdown.deadlineMs", running.shutdown_deadline_ms, fresh.shutdown_deadline_ms);
  p.live("shutdown.delayMs", running.shutdown_delay_ms, fresh.shutdown_delay_ms);
  return plan;
}

std::string config_reload_refusal(const Config &running, const Config &fresh) {
  if (running.admin_enabled && fresh.admin.token.empty() && !running.admin.token.empty() &&
      !config_is_loopback(running.admin_listener.address)) {
    return "admin.token: cannot be removed while listeners.admin runs on " +
           running.admin_listener.address + ", beyond loopback; restart to change both";
  }
  return {};
}

void config_reload_apply(Config &running, const Config &fresh) {
  running.logging.level = fresh.logging.level;
  running.admin.token = fresh.admin.token;
  running.admin.show_content = fresh.admin.show_content;
  running.admin.max_failures = fresh.admin.max_failures;
  running.admin.lockout_seconds = fresh.admin.lockout_seconds;
  RouterConfig &r = running.router;
  r.context_turns = fresh.router.context_turns;
  r.context_ttl_seconds = fresh.router.context_ttl_seconds;
  r.model_timeout_ms = fresh.router.model_timeout_ms;
  r.dedupe_ttl_seconds = fresh.router.dedupe_ttl_seconds;
  r.rate_limits = fresh.router.rate_limits;
  r.max_model_calls = fresh.router.max_model_calls;
  r.locale = fresh.router.locale;
  r.messages = fresh.router.messages;
  r.channel_locales = fresh.router.channel_locales;
  running.shutdown_deadline_ms = fresh.shutdown_deadline_ms;
  running.shutdown_delay_ms = fresh.shutdown_delay_ms;
}

}  // namespace cg
