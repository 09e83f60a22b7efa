#include "host/plugin_loader.h"

#include <dlfcn.h>
#include <fmt/format.h>

#include <cstddef>

namespace cg {
namespace {

// The smallest sizes a 1.0 writer can produce: everything up to and
// including the last field that 1.0 defines.
constexpr size_t kMinDescriptorSize = offsetof(cg_plugin_t, ops) + sizeof(void *);
constexpr size_t kMinFieldSize = offsetof(cg_config_field_t, max) + sizeof(int64_t);

// The version fields are checked before the size, because a descriptor of
// another major may be laid out differently and "too small" would hide the
// real cause; but only as far as struct_size says the writer filled them.
constexpr size_t kMajorEnd = offsetof(cg_plugin_t, abi_major) + sizeof(uint32_t);
constexpr size_t kMinorEnd = offsetof(cg_plugin_t, abi_minor) + sizeof(uint32_t);

// A name longer than this is cut in the log line: it is wrong anyway.
constexpr size_t kMaxShownName = 64;

size_t min_ops_size(uint32_t kind) {
  switch (kind) {
    case CG_KIND_CHANNEL:
      return offsetof(cg_channel_ops_t, send) + sizeof(void *);
    case CG_KIND_MODEL:
      return offsetof(cg_model_ops_t, cancel) + sizeof(void *);
    case CG_KIND_CACHE:
      return offsetof(cg_cache_ops_t, del) + sizeof(void *);
    default:
      return 0;
  }
}

// The first 1.0 function the ops table leaves NULL, or nullptr when it has
// them all; the name goes into the log line so the author knows which.
const char *ops_missing(uint32_t kind, const void *ops) {
  switch (kind) {
    case CG_KIND_CHANNEL: {
      const auto *o = static_cast<const cg_channel_ops_t *>(ops);
      return o->send == nullptr ? "send" : nullptr;
    }
    case CG_KIND_MODEL: {
      const auto *o = static_cast<const cg_model_ops_t *>(ops);
      if (o->generate == nullptr) return "generate";
      return o->cancel == nullptr ? "cancel" : nullptr;
    }
    case CG_KIND_CACHE: {
      const auto *o = static_cast<const cg_cache_ops_t *>(ops);
      if (o->get == nullptr) return "get";
      if (o->set == nullptr) return "set";
      if (o->set_nx == nullptr) return "set_nx";
      return o->del == nullptr ? "del" : nullptr;
    }
    default:
      return "every function";
  }
}

const char *hook_missing(const cg_plugin_t *d) {
  if (d->init == nullptr) return "init";
  if (d->start == nullptr) return "start";
  if (d->stop == nullptr) return "stop";
  return d->destroy == nullptr ? "destroy" : nullptr;
}

bool valid_plugin_name(const char *name) {
  if (name == nullptr || *name == '\0') return false;
  for (const char *p = name; *p; p++) {
    const char c = *p;
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  }
  return true;
}

// The name as found, quoted and escaped so that a stray newline cannot split
// the one log line.
std::string shown_name(const char *name) {
  if (name == nullptr) return "NULL";
  std::string_view n(name);
  if (n.size() > kMaxShownName) {
    return fmt::format("{:?}... ({} bytes)", n.substr(0, kMaxShownName), n.size());
  }
  return fmt::format("{:?}", n);
}

// Checks the descriptor; returns an empty string or what is wrong.
std::string check_descriptor(const cg_plugin_t *d) {
  const uint32_t size = d->struct_size;
  if (size >= kMajorEnd && d->abi_major != CG_ABI_MAJOR) {
    if (size < kMinorEnd) {
      return fmt::format(
          "ABI major mismatch: expected {}.x, found {}.x (a {}-byte descriptor, no minor)",
          CG_ABI_MAJOR, d->abi_major, size);
    }
    return fmt::format("ABI major mismatch: expected {}.x, found {}.{}", CG_ABI_MAJOR, d->abi_major,
                       d->abi_minor);
  }
  if (size >= kMinorEnd && d->abi_minor > CG_ABI_MINOR) {
    return fmt::format("built for a newer ABI: expected {}.{} or older, found {}.{}", CG_ABI_MAJOR,
                       CG_ABI_MINOR, d->abi_major, d->abi_minor);
  }
  if (size < kMinDescriptorSize) {
    return fmt::format("descriptor too small: expected at least {} bytes (ABI {}.0), found {}",
                       kMinDescriptorSize, CG_ABI_MAJOR, size);
  }
  if (d->kind != CG_KIND_CHANNEL && d->kind != CG_KIND_MODEL && d->kind != CG_KIND_CACHE) {
    return fmt::format(
        "unknown plugin kind: expected 1 (channel), 2 (model) or 3 (cache), found {}", d->kind);
  }
  if (!valid_plugin_name(d->name)) {
    return fmt::format("bad plugin name: expected [a-z0-9_-]+, found {}", shown_name(d->name));
  }
  if (d->version == nullptr) return "missing version string: expected e.g. \"1.0.0\", found NULL";
  if (const char *hook = hook_missing(d)) {
    return fmt::format(
        "missing lifecycle hook: expected init, start, stop and destroy, found {} = NULL", hook);
  }
  if (d->ops == nullptr) {
    return fmt::format("missing ops table: expected a {} ops table, found NULL",
                       plugin_kind_name(d->kind));
  }
  const uint32_t ops_size = *static_cast<const uint32_t *>(d->ops);
  if (ops_size < min_ops_size(d->kind)) {
    return fmt::format("{} ops table too small: expected at least {} bytes, found {}",
                       plugin_kind_name(d->kind), min_ops_size(d->kind), ops_size);
  }
  if (const char *fn = ops_missing(d->kind, d->ops)) {
    return fmt::format("{} ops table incomplete: expected every 1.0 function, found {} = NULL",
                       plugin_kind_name(d->kind), fn);
  }
  if (d->config_field_count > 0) {
    if (d->config_fields == nullptr) {
      return "config schema: expected config_fields, found NULL with a non-zero count";
    }
    if (d->config_fields[0].struct_size < kMinFieldSize) {
      return fmt::format("config schema entries too small: expected at least {} bytes, found {}",
                         kMinFieldSize, d->config_fields[0].struct_size);
    }
  }
  return {};
}

}  // namespace

void DlCloser::operator()(void *handle) const {
  if (handle != nullptr) dlclose(handle);
}

std::string_view plugin_kind_name(uint32_t kind) {
  switch (kind) {
    case CG_KIND_CHANNEL:
      return "channel";
    case CG_KIND_MODEL:
      return "model";
    case CG_KIND_CACHE:
      return "cache";
    default:
      return "unknown";
  }
}

int plugin_load(const std::string &path, LoadedPlugin *out, std::string *error) {
  dlerror();
  DlHandle handle(dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL));
  if (!handle) {
    const char *why = dlerror();
    *error = fmt::format(
        "plugin {}: cannot load: expected a shared object whose symbols all resolve, found: {}",
        path, why ? why : "unknown dlopen error");
    return CG_EINVAL;
  }
  dlerror();
  void *sym = dlsym(handle.get(), CG_PLUGIN_ENTRY_SYMBOL);
  if (sym == nullptr) {
    *error = fmt::format("plugin {}: not a chatgate plugin: expected the symbol {}, found none",
                         path, CG_PLUGIN_ENTRY_SYMBOL);
    return CG_EINVAL;
  }
  auto entry = reinterpret_cast<cg_plugin_entry_fn>(sym);
  const cg_plugin_t *desc = entry(CG_ABI_MAJOR, CG_ABI_MINOR);
  if (desc == nullptr) {
    *error = fmt::format(
        "plugin {}: declined the host: offered ABI {}.{}, found no descriptor ({} returned NULL)",
        path, CG_ABI_MAJOR, CG_ABI_MINOR, CG_PLUGIN_ENTRY_SYMBOL);
    return CG_EINVAL;
  }
  if (std::string why = check_descriptor(desc); !why.empty()) {
    *error = fmt::format("plugin {}: {}", path, why);
    return CG_EINVAL;
  }
  out->fields.clear();
  const auto *base = reinterpret_cast<const unsigned char *>(desc->config_fields);
  for (uint32_t i = 0; i < desc->config_field_count; i++) {
    const auto *f = reinterpret_cast<const cg_config_field_t *>(
        base + static_cast<size_t>(i) * desc->config_fields[0].struct_size);
    if (f->key == nullptr || f->type < CG_CFG_STRING || f->type > CG_CFG_ENUM) {
      *error =
          fmt::format("plugin {}: config schema entry {}: expected a key and a type 1..6, found {}",
                      path, i, f->key == nullptr ? "no key" : "an unknown type");
      return CG_EINVAL;
    }
    out->fields.push_back(f);
  }
  out->path = path;
  out->desc = desc;
  out->handle = std::move(handle);
  return 0;
}

}  // namespace cg
