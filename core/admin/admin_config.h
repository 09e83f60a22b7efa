// The effective config as JSON for the admin page and API, with every
// secret masked: admin.token and each plugin field declared CG_CFG_SECRET
// show "********" when set ("" when not), never their value.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "config/config_types.h"

namespace cg {

class PluginInstance;

std::string admin_config_json(const Config &config,
                              const std::vector<std::unique_ptr<PluginInstance>> &plugins);

}  // namespace cg
