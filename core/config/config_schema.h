// A plugin instance's config section, validated against the schema the
// plugin declares (cg_config_field_t), and the values the plugin reads back
// through cg_host_api_t.config_*.
//
// THREAD: not thread-safe.
#pragma once

#include <chatgate/plugin.h>
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace cg {

struct PluginConfigValue {
  uint32_t type = 0;              // cg_config_type_t
  bool secret = false;            // CG_CFG_SECRET: never logged or shown
  bool present = false;           // set by the operator or a default
  std::string str;                // STRING, ENUM
  int64_t i = 0;                  // INT
  double d = 0;                   // DOUBLE
  bool b = false;                 // BOOL
  std::vector<std::string> list;  // STRING_LIST
};

class PluginConfig;

// Validates `section` (a YAML mapping, or null/undefined for "no config")
// against `fields`. `file` and `key_prefix` ("plugins.instances[1].config")
// name the place in errors. `instance_line` is the line of the instance entry
// (PluginInstanceConfig::line): errors that have no line of their own use it,
// such as a required key missing when there is no `config:` section, or a
// plugin's broken schema or default; 0 leaves them without a line. Operator
// strings have ${VAR} expanded; the plugin's defaults are taken literally.
// Every schema key gets a value: the operator's, else its default, else
// absent (then CG_CFG_REQUIRED makes it an error). Unknown keys are errors.
std::optional<ConfigError> plugin_config_validate(const YAML::Node &section,
                                                  std::span<const cg_config_field_t *const> fields,
                                                  std::string_view file,
                                                  std::string_view key_prefix, PluginConfig *out,
                                                  int instance_line = 0);

// The validated values of one instance. Its address is what plugins receive
// as `const cg_config_t *`.
class PluginConfig {
 public:
  const PluginConfigValue *find(std::string_view key) const;
  const std::map<std::string, PluginConfigValue, std::less<>> &values() const { return values_; }

 private:
  friend std::optional<ConfigError> plugin_config_validate(
      const YAML::Node &, std::span<const cg_config_field_t *const>, std::string_view,
      std::string_view, PluginConfig *, int);
  std::map<std::string, PluginConfigValue, std::less<>> values_;
};

// The schema as help text, one line a key:
// "  appId (string, required): the app id" / "  timeout (int 1..600000, default 30000): ..."
std::string plugin_config_help(std::span<const cg_config_field_t *const> fields);

}  // namespace cg
