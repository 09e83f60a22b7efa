// Config reload (SIGHUP, POST /admin/api/reload): what changed between the
// running config and a freshly read one, and which of those changes can be
// applied to the running process.
//
// Applied live (they are read on every use):
//   logging.level; admin.token (every session ends), admin.showContent,
//   admin.maxLoginFailures, admin.lockoutSeconds; router.contextTurns,
//   router.contextTtlSeconds, router.modelTimeoutMs, router.dedupeTtlSeconds;
//   shutdown.deadlineMs.
// Everything else needs a new process, started by a handover (handover.h:
// it inherits the listening sockets; this one drains and exits): listeners
// (their sockets are bound; one whose address and port stay is passed on),
// logging's file and rotation, admin.chartIntervalSeconds (the sampler's
// period), httpClient, router.model / router.cache / router.maxQueue /
// router.queue, queue, plugins.dir and every plugin instance (added,
// removed, another .so or another config: swapping a plugin with work in
// flight inside one process is not built).
//
// THREAD: not thread-safe; pure functions of their arguments.
#pragma once

#include <string>
#include <vector>

#include "config/config_types.h"

namespace cg {

struct ConfigReloadPlan {
  std::vector<std::string> applied;   // keys whose new value takes effect now
  std::vector<std::string> handover;  // keys that changed and need a new process
};

// Compares `running` with `fresh` (both validated).
ConfigReloadPlan config_reload_plan(const Config &running, const Config &fresh);

// Why `fresh` must not be applied to this process live, or "": a token
// removed while the running admin listener binds beyond loopback (the open
// API would take effect at once, the new address only in a new process).
// A reload that hands over applies both at once and does not ask.
std::string config_reload_refusal(const Config &running, const Config &fresh);

// Copies the live-applicable values of `fresh` into `running` (the caller
// then tells the parts that cache them: the logger, the router...).
void config_reload_apply(Config &running, const Config &fresh);

}  // namespace cg
