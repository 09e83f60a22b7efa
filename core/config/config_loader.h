// The config loader's internals, shared by its files: the Loader that reads
// keys and scalars (config_loader.cc) and the section readers
// (config_listeners.cc, config_sections.cc). Not for use outside core/config.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.h"

namespace cg::config_internal {

inline constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
inline constexpr int64_t kUint32Max = std::numeric_limits<uint32_t>::max();

// Validation stops at the first error. Throwing it (inside the loader only)
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

const char *node_kind(const YAML::Node &node);

// Core values are not secret, so errors may quote them; keep them short and on
// one line for the log.
std::string quote(std::string_view value);

std::string join(const std::vector<std::string> &items);

// ---- section readers -----------------------------------------------------

// config_listeners.cc
void read_rate_limit(const Loader &l, const Entry &e, RateLimit &out);
void read_listeners(const Loader &l, const Entry &e, Config &cfg);

// config_sections.cc: the whole document, then the cross-checks.
void read_root(const Loader &l, const YAML::Node &root, Config &cfg);

}  // namespace cg::config_internal
