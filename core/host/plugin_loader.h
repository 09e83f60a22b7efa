// Loads a plugin shared object and checks its descriptor against the host's
// ABI before anything of it runs but its entry function.
//
// THREAD: not thread-safe.
#pragma once

#include <chatgate/plugin.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace cg {

struct DlCloser {
  void operator()(void *handle) const;
};
using DlHandle = std::unique_ptr<void, DlCloser>;

// A loaded, checked plugin. The descriptor, its schema and its ops live in
// the shared object, so they are valid as long as `handle` is open.
struct LoadedPlugin {
  std::string path;
  DlHandle handle;
  const cg_plugin_t *desc = nullptr;
  std::vector<const cg_config_field_t *> fields;  // the schema, one pointer a key
};

// Loads `path` with dlopen(RTLD_NOW | RTLD_LOCAL), calls its entry with the
// host's ABI version and checks the descriptor. Returns 0, or CG_EINVAL with
// *error set to one line naming the file, what was expected and what was
// found (the caller logs it). Refuses: a file dlopen cannot load (not a
// shared object, unresolved symbols), a missing entry symbol, an entry that
// returns NULL, another ABI major, a newer minor, a descriptor or ops table
// smaller than ABI 1.0's, an unknown kind, missing hooks, a bad name, a NULL
// version, an ops table with a NULL 1.0 function, a malformed schema. The
// version is judged before the size whenever struct_size covers it, so a
// small descriptor of another major is reported as that major.
int plugin_load(const std::string &path, LoadedPlugin *out, std::string *error);

// "channel", "model", "cache" or "unknown".
std::string_view plugin_kind_name(uint32_t kind);

}  // namespace cg
