// Loading the core config: the file, the document, the public helpers. The
// loader's machinery is config_loader.cc, the sections config_listeners.cc
// and config_sections.cc. Plugin `config:` sections are kept as YAML nodes
// and validated later (config_schema.cc).
//
// Rules that hold for every key: ${VAR} expansion happens on the scalar text
// before type conversion; a null value (`key:` or `key: ~`) means "not given";
// unknown and duplicate keys are errors.
#include "config/config.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

#include "config/config_loader.h"

#ifndef CHATGATE_INSTALL_PLUGIN_DIR  // set by core/CMakeLists.txt; this keeps ad-hoc builds working
#define CHATGATE_INSTALL_PLUGIN_DIR "/usr/lib/chatgate/plugins"
#endif

namespace cg {

// ---- public --------------------------------------------------------------

bool config_is_loopback(const std::string &address) {
  unsigned char buf[sizeof(struct in6_addr)] = {};
  if (inet_pton(AF_INET, address.c_str(), buf) == 1) return buf[0] == 127;
  return address == "::1";
}

const YAML::Node &config_plugin_section(const PluginInstanceConfig &instance) {
  static const YAML::Node kNone;
  return instance.section ? *instance.section : kNone;
}

std::string ConfigError::to_string() const {
  std::string out = file;
  if (line > 0) out += ":" + std::to_string(line);
  out += ": ";
  if (!key.empty()) out += key + ": ";
  return out + message;
}

std::string config_default_plugin_dir() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n > 0) {
    const std::filesystem::path beside =
        std::filesystem::path(std::string(buf, n)).parent_path() / "plugins";
    struct stat st;
    if (stat(beside.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return beside.string();
  }
  return CHATGATE_INSTALL_PLUGIN_DIR;
}

std::optional<ConfigError> config_load_string(std::string_view yaml, std::string_view file,
                                              Config *out) {
  config_internal::Loader loader(file);
  Config cfg;
  cfg.file = std::string(file);
  try {
    std::vector<YAML::Node> docs;
    if (auto err = config_yaml_load(yaml, cfg.file, &docs)) return err;
    if (docs.size() > 1) {
      return ConfigError{cfg.file, config_line(docs[1]), "", "expected one YAML document"};
    }
    config_internal::read_root(loader, docs.empty() ? YAML::Node() : docs[0], cfg);
  } catch (const config_internal::LoadFailure &f) {
    return f.error;
  } catch (const YAML::Exception &e) {  // syntax errors, too-deep nesting
    return ConfigError{cfg.file, e.mark.line >= 0 ? e.mark.line + 1 : 0, "",
                       "invalid YAML: " + e.msg};
  }
  *out = std::move(cfg);
  return std::nullopt;
}

std::optional<ConfigError> config_load_file(const std::string &path, Config *out) {
  std::FILE *f = std::fopen(path.c_str(), "rb");
  if (f == nullptr)
    return ConfigError{path, 0, "", std::string("cannot open: ") + std::strerror(errno)};
  std::string text;
  char buf[8192];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) text.append(buf, n);
  const int read_errno = std::ferror(f) ? errno : 0;  // e.g. EISDIR for a directory
  std::fclose(f);
  if (read_errno != 0) {
    return ConfigError{path, 0, "", std::string("cannot read: ") + std::strerror(read_errno)};
  }
  return config_load_string(text, path, out);
}

}  // namespace cg
