// Config reload (SIGHUP, POST /admin/api/reload): what changed between the
// running config and a freshly read one, and which of those changes can be
// applied to the running process.
//
// Applied live (they are read on every use):
//   logging.level; admin.token (every session ends), admin.showContent,
//   admin.maxLoginFailures, admin.lockoutSeconds; router.contextTurns,
//   router.contextTtlSeconds, router.modelTimeoutMs, router.dedupeTtlSeconds;
//   shutdown.deadlineMs.
// Everything else needs a restart: listeners (sockets are bound), logging's
// file and rotation, admin.chartIntervalSeconds (the sampler's period),
// httpClient, router.model / router.cache / router.maxQueue, plugins.dir and
// every plugin instance (added, removed, another .so or another config:
// hot-swapping a plugin with work in flight is not built). Those keys are
// reported and left as they run.
//
// THREAD: not thread-safe; pure functions of their arguments.
#pragma once

#include <string>
#include <vector>

#include "config/config_types.h"

namespace cg {

struct ConfigReloadPlan {
  std::vector<std::string> applied;  // keys whose new value takes effect now
  std::vector<std::string> restart;  // keys that changed and wait for a restart
};

// Compares `running` with `fresh` (both validated).
ConfigReloadPlan config_reload_plan(const Config &running, const Config &fresh);

// Why `fresh` must not be applied to this process at all, or "": a token
// removed while the running admin listener binds beyond loopback (the new
// address would only take effect at a restart, the open API at once).
std::string config_reload_refusal(const Config &running, const Config &fresh);

// Copies the live-applicable values of `fresh` into `running` (the caller
// then tells the parts that cache them: the logger, the router...).
void config_reload_apply(Config &running, const Config &fresh);

}  // namespace cg
