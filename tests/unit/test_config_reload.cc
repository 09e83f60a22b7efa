// Unit tests for core/config/config_reload.cc: which changed keys a reload applies
// and which need a new process (a handover), and the one refusal.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "config/config.h"
#include "config/config_reload.h"

namespace {

constexpr const char *kBase = R"(logging:
  level: info
listeners:
  api: {address: 127.0.0.1, port: 8080}
  admin: {address: 127.0.0.1, port: 18789}
admin:
  token: abc
plugins:
  instances:
    - name: echo
      plugin: echo.so
    - name: memory
      plugin: memory.so
      config:
        maxEntries: 100
router: {model: echo, cache: memory}
)";

cg::Config load(const std::string &yaml) {
  cg::Config cfg;
  auto err = cg::config_load_string(yaml, "test.yaml", &cfg);
  if (err) FAIL(err->to_string());
  return cfg;
}

// kBase with `from` replaced by `to`.
cg::Config changed(const std::string &from, const std::string &to) {
  std::string yaml = kBase;
  const size_t at = yaml.find(from);
  REQUIRE(at != std::string::npos);
  yaml.replace(at, from.size(), to);
  return load(yaml);
}

using List = std::vector<std::string>;

}  // namespace

TEST_CASE("reload: an unchanged config plans nothing") {
  const cg::ConfigReloadPlan plan = cg::config_reload_plan(load(kBase), load(kBase));
  CHECK(plan.applied.empty());
  CHECK(plan.handover.empty());
}

TEST_CASE("reload: live keys are applied") {
  const cg::Config running = load(kBase);
  const cg::Config fresh =
      changed("router: {model: echo, cache: memory}",
              "router: {model: echo, cache: memory, contextTurns: 4, contextTtlSeconds: 60,\n"
              "         modelTimeoutMs: 500, dedupeTtlSeconds: 30}\nshutdown: {deadlineMs: 5}");
  const cg::ConfigReloadPlan plan = cg::config_reload_plan(running, fresh);
  CHECK(plan.applied == List{"router.contextTurns", "router.contextTtlSeconds",
                             "router.modelTimeoutMs", "router.dedupeTtlSeconds",
                             "shutdown.deadlineMs"});
  CHECK(plan.handover.empty());
  cg::Config applied = running;
  cg::config_reload_apply(applied, fresh);
  CHECK(applied.router.context_turns == 4);
  CHECK(applied.router.model_timeout_ms == 500);
  CHECK(applied.shutdown_deadline_ms == 5);
  CHECK(cg::config_reload_plan(applied, fresh).applied.empty());
}

TEST_CASE("reload: admin and logging keys") {
  const cg::Config running = load(kBase);
  const cg::Config fresh =
      changed("admin:\n  token: abc\n",
              "admin:\n  token: def\n  showContent: true\n  maxLoginFailures: 3\n"
              "  lockoutSeconds: 9\n  chartIntervalSeconds: 5\n");
  const cg::ConfigReloadPlan plan = cg::config_reload_plan(running, fresh);
  CHECK(plan.applied ==
        List{"admin.token", "admin.showContent", "admin.maxLoginFailures", "admin.lockoutSeconds"});
  CHECK(plan.handover == List{"admin.chartIntervalSeconds"});
  const cg::ConfigReloadPlan log_plan = cg::config_reload_plan(
      running, changed("  level: info\n", "  level: warn\n  file: /tmp/x.log\n"));
  CHECK(log_plan.applied == List{"logging.level"});
  CHECK(log_plan.handover == List{"logging.file"});
}

TEST_CASE("reload: listeners, router instances and plugins need a handover") {
  const cg::Config running = load(kBase);
  CHECK(cg::config_reload_plan(running, changed("port: 8080", "port: 8081")).handover ==
        List{"listeners.api"});
  CHECK(cg::config_reload_plan(running, changed("port: 18789", "port: 18790")).handover ==
        List{"listeners.admin"});
  CHECK(cg::config_reload_plan(running, changed("maxEntries: 100", "maxEntries: 5")).handover ==
        List{"plugins.instances[memory].config"});
  CHECK(cg::config_reload_plan(running, changed("plugin: echo.so", "plugin: other.so")).handover ==
        List{"plugins.instances[echo].plugin"});
  CHECK(cg::config_reload_plan(running, changed("    - name: echo\n      plugin: echo.so\n",
                                                "    - name: echo\n      plugin: echo.so\n"
                                                "    - name: echo2\n      plugin: echo.so\n"))
            .handover == List{"plugins.instances[echo2] (added)"});
  CHECK(cg::config_reload_plan(running, changed("cache: memory}", "cache: memory, maxQueue: 3}"))
            .handover == List{"router.maxQueue"});
  const auto backlog = cg::config_reload_plan(
      running, changed("cache: memory}", "cache: memory, maxConversationBacklog: 5}"));
  CHECK(backlog.applied == List{"router.maxConversationBacklog"});
  CHECK(backlog.handover.empty());
  // A renamed instance: one removed, one added.
  std::string yaml = kBase;
  yaml.replace(yaml.find("name: memory"), 12, "name: cache2");
  yaml.replace(yaml.find("cache: memory"), 13, "cache: cache2");
  CHECK(cg::config_reload_plan(running, load(yaml)).handover ==
        List{"plugins.instances[memory] (removed)", "plugins.instances[cache2] (added)",
             "router.cache"});
}

TEST_CASE("reload: the token may not go while the admin listener is exposed") {
  const cg::Config exposed = changed("admin: {address: 127.0.0.1", "admin: {address: 0.0.0.0");
  const cg::Config open = changed("admin:\n  token: abc\n", "");
  CHECK(cg::config_reload_refusal(exposed, open).find("admin.token: cannot be removed") == 0);
  CHECK(cg::config_reload_refusal(load(kBase), open).empty());
  CHECK(cg::config_reload_refusal(exposed, exposed).empty());
}
