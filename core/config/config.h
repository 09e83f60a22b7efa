// The operator's YAML config: loading, ${VAR} expansion, validation of the
// core sections. Plugin sections are validated later against the schema each
// plugin declares (config_schema.h), once the plugin is loaded. The types
// loaded are config_types.h's.
//
// THREAD: not thread-safe; call from one thread.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config_types.h"

namespace cg {

// An instance's `config:` section, or a null node when it has none.
const YAML::Node &config_plugin_section(const PluginInstanceConfig &instance);

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
